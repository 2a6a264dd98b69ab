"""Tests of real kernel SCTP (marked ``sctp``): run inside User-Mode Linux
when this kernel has no SCTP.  See :mod:`rserpool.testing.pytest_sctp`.

The plugin belongs in the top-level ``tests/conftest.py``
(``pytest_plugins = ["rserpool.testing.pytest_sctp"]``) so that ``sctp``
tests anywhere are handled; until it is there, this file registers it when
``tests/kernel_sctp`` is collected.
"""

from __future__ import annotations

import pytest

PLUGIN = "rserpool.testing.pytest_sctp"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
