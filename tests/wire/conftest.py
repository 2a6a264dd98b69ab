"""Fixtures for the wire tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def tshark_required() -> bool:
    """True when a missing tshark must fail tests rather than skip them (CI)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("CI", "RSERPOOL_REQUIRE_TSHARK"))
