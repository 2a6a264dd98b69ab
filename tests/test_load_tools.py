"""Smoke tests of the load generators in ``benches/``, so that they cannot rot.

Each runs a tool end to end with a tiny load against the real registrar
(``python -m rserpool registrar``, started by the tool itself) and checks that
it reports zero errors.  No timing assertions (STYLE.md section 10): the
figures these tools print are only meaningful on a quiet machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHES = Path(__file__).resolve().parent.parent / "benches"


def run_tool(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHES / script), *args],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=BENCHES.parent)


def test_load_resolution_end_to_end():
    proc = run_tool("load_resolution.py", "--processes", "1", "--connections", "2",
                    "--in-flight", "4", "--requests", "300", "--duration", "5",
                    "--rounds", "1", "--warmup", "0", "--pes", "5",
                    "--paced-rate", "200", "--paced-duration", "0.5")
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "OK: no errors" in proc.stdout, report
    for server in ("registrar", "echo"):
        line = next(ln for ln in proc.stdout.splitlines()
                    if ln.startswith(f"round 1 {server} "))
        assert re.search(r"\b300 ok +0 err\b", line), line
        paced = next(ln for ln in proc.stdout.splitlines()
                     if ln.startswith(f"paced {server} "))
        assert re.search(r"\b\d+ ok +0 err\b", paced), paced
    assert "ratio registrar/echo" in proc.stdout


def test_load_registrations_end_to_end():
    proc = run_tool("load_registrations.py", "--pes", "300", "--associations", "6",
                    "--keep-alive-interval", "0.5", "--keep-alive-timeout", "2",
                    "--settle", "1", "--duration", "1.5", "--sample", "0.5",
                    "--resolve-rate", "100")
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "OK: no errors" in proc.stdout, report
    assert "300 of 300 PEs (RR) accepted" in proc.stdout, report
    assert "named 300 distinct PEs of 300" in proc.stdout, report
    assert "keep-alive in the last 2.5 s: 300 of 300" in proc.stdout, report
    keep_alives = re.search(r"keep-alives received and acknowledged: ([\d,]+)", proc.stdout)
    assert keep_alives and int(keep_alives.group(1).replace(",", "")) > 0, report
    assert re.search(r"resolutions during the load: [\d,]+ answered .*\(0 errors", proc.stdout)


def test_load_enrp_download_end_to_end():
    proc = run_tool("load_enrp_download.py", "--pes", "300", "--pools", "10",
                    "--associations", "30", "--page", "128,1024", "--rounds", "1",
                    timeout=120)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "OK: no errors" in proc.stdout, report
    assert "300 of 300 PEs accepted in 10 pools" in proc.stdout, report
    assert "every registrar holds all 300 PEs" in proc.stdout, report
    for page in ("128", "1024"):
        line = next(ln for ln in proc.stdout.splitlines()
                    if re.match(rf"page +{page} round 1: ", ln))
        assert re.search(r"\b300 PEs in \d+ responses", line), line
    assert proc.stdout.count("verified: the joiner holds the mentor's 300 PEs") == 2, report
    assert re.search(r"PEs per response by --max-elements-per-ht-request", proc.stdout)


def test_load_tools_refuse_non_loopback_targets():
    for script in ("load_resolution.py", "load_registrations.py"):
        proc = run_tool(script, "--target", "192.0.2.1:3863", timeout=30)
        assert proc.returncode != 0
        assert "only runs against loopback" in proc.stdout + proc.stderr
