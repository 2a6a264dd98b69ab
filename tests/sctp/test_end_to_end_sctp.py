"""Evidence 1 of issue 4 over real kernel SCTP (inside User-Mode Linux on
hosts without it): one registrar, three pool elements as processes, a pool
user session; ``kill -9`` and ``kill -STOP`` of the PE in use, and
``rserpool pu`` piped through a failover.  The scenarios are those of
``tests/integration/test_end_to_end.py``, run with transport "sctp"
(registrar links, PE user endpoints and PU sessions all SCTP)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.sctp


def _scenarios():
    path = Path(__file__).resolve().parents[1] / "integration" / "test_end_to_end.py"
    spec = importlib.util.spec_from_file_location("_end_to_end_scenarios", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


E = _scenarios()


def test_kill_9_of_the_pe_in_use_fails_over_with_the_session_state_sctp(tmp_path):
    E.run(lambda: E.kill_9_scenario("sctp", tmp_path))


def test_hung_pe_is_removed_after_the_keep_alive_timeout_sctp(tmp_path):
    E.run(lambda: E.hung_pe_scenario("sctp", tmp_path))


def test_pu_command_survives_a_kill_9_sctp(tmp_path):
    E.run(lambda: E.pu_command_scenario("sctp", tmp_path))
