"""The host side of the sctp tests: UML itself, and one boot that runs them all.

On a host without kernel SCTP every selected ``sctp`` test is a proxy for
its run inside UML (see :mod:`rserpool.testing.pytest_sctp`);
``test_sctp_suite_in_uml`` comes first, boots UML, and passes iff the inner
pytest run passed.  It is skipped where the ``sctp`` tests run directly.

The other tests check :mod:`rserpool.testing.uml` (one extra boot).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rserpool.testing import pytest_sctp, uml

ROOT = Path(__file__).resolve().parents[2]


def test_sctp_suite_in_uml(request):
    pytest_sctp.check_suite(request.config)


@pytest.fixture
def need_uml():
    problem = uml.uml_problem()
    if problem:
        if pytest_sctp.sctp_required() and not uml.in_uml() and not uml.kernel_sctp_available():
            pytest.fail(f"UML unavailable: {problem}", pytrace=False)
        pytest.skip(f"UML unavailable: {problem}")


def test_run_in_uml_status_output_env_and_addresses(need_uml, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    token = f"rserpool-uml-private-{os.getpid()}-{tmp_path.name}"
    lines: list[str] = []
    script = (
        "echo out; echo err >&2; "
        "echo \"$RSERPOOL_IN_UML $RSERPOOL_UML_ADDRESSES $UMLTEST_VAR\"; "
        "ip -o addr show dev lo | awk '{print $4}'; "
        "cat /proc/net/sctp/snmp >/dev/null && echo sctp-ok; "
        "pwd; echo private > \"/tmp/$TOKEN\"; echo written > \"$SHARED/from-guest\"; "
        "exit 7"
    )
    status = uml.run_in_uml(
        ["sh", "-c", script],
        env={"UMLTEST_VAR": "v a l", "SHARED": str(shared), "TOKEN": token},
        cwd=ROOT,
        extra_addresses=["10.255.0.1/24", "10.255.0.2/24"],
        share=[shared],
        output=lines.append,
        timeout=120,
    )
    assert status == 7
    assert lines.index("out") < lines.index("err")  # one console, in order
    assert "1 10.255.0.1 10.255.0.2 v a l" in lines
    assert {"127.0.0.1/8", "10.255.0.1/24", "10.255.0.2/24", "::1/128"} <= set(lines)
    assert "sctp-ok" in lines
    assert str(ROOT) in lines
    assert (shared / "from-guest").read_text() == "written\n"
    assert not Path("/tmp", token).exists()  # the guest's /tmp is its own


def test_run_in_uml_timeout(need_uml):
    with pytest.raises(uml.UMLTimeout, match="timed out"):
        uml.run_in_uml(["sleep", "60"], timeout=1.0, output=lambda line: None)


def test_init_script_is_valid_sh(tmp_path):
    script = uml._init_script(
        run_dir="/tmp/rserpool-uml-x y", token="t0", cwd=str(ROOT), argv=["echo", "a b", "$HOME"],
        modules=uml.DEFAULT_MODULES, mods_dir="/usr/lib/uml/modules/6.1.0",
        addresses=[*uml.DEFAULT_EXTRA_ADDRESSES, "fd00::1/64"], shares=["/tmp/a b"],
    )
    path = tmp_path / "init"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0
    assert "echo 'a b' '$HOME' </dev/null 2>&1" in script
    assert "ip addr add fd00::1/64 dev lo nodad" in script


def test_hidden_roots_are_shared():
    assert uml._hidden_root("/tmp/clone/sub/dir") == "/tmp/clone"
    assert uml._hidden_root("/dev/shm/x") == "/dev/shm/x"
    assert uml._hidden_root("/work/main") is None
    assert uml._hidden_root("/tmp") == "/tmp"


def test_cli_check_runs():
    proc = subprocess.run([str(ROOT / "scripts" / "uml" / "run"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert "kernel:" in proc.stdout and "usable:" in proc.stdout
    assert proc.returncode == (0 if uml.uml_available() else 1)
