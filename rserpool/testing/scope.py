"""Operation scopes of registrar processes across network namespaces, for
tests (does I/O): start registrars and PE swarms on :mod:`rserpool.testing.netns`
hosts, drive the swarms, and compare what the registrars hold with
``rserpool hsdump --json``.

Used by ``tests/netns/test_enrp_netns.py`` (TCP, on the host) and
``tests/sctp/test_enrp_sctp_netns.py`` (SCTP, inside User-Mode Linux).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Iterable

from . import netns

__all__ = ["RSERPOOL", "ASAP_PORT", "ENRP_PORT", "start_registrar", "wait_listening",
           "wait_mesh", "Swarm", "run_with_pipe", "hsdump_all", "elements",
           "owner_checksums", "same_handlespace", "wait_same_handlespace", "log_lines",
           "agree_after_heal"]

RSERPOOL = [sys.executable, "-m", "rserpool"]
ASAP_PORT = 3863
ENRP_PORT = 9901


def start_registrar(host: netns.Host, rid: int, *extra: str, transport: str = "tcp",
                    timers: Iterable[str] = ()) -> netns.Process:
    """``rserpool registrar`` on ``host``: ASAP and ENRP over ``transport``
    only, on the fixed ports, ENRP Presence multicast on (the discovery), no
    ASAP announces (PEs and PUs are given its address)."""
    return host.run([*RSERPOOL, "registrar", "--registrar-id", hex(rid),
                     "--address", host.address, "--asap-port", str(ASAP_PORT),
                     "--enrp-port", str(ENRP_PORT), "--transport", transport, "--no-announce",
                     *timers, *extra], name="registrar")


def wait_listening(proc: netns.Process, host: netns.Host, transport: str = "tcp") -> None:
    """Until the registrar says its ENRP endpoint is up."""
    proc.wait_output(rf"ENRP over {transport.upper()} on {re.escape(host.address)}:"
                     rf"{ENRP_PORT}\b", timeout=30)


def wait_mesh(procs: dict[int, netns.Process], timeout: float = 30.0) -> None:
    """Every registrar has seen every other one appear, and its start-up is over."""
    for rid, proc in procs.items():
        proc.wait_output(r"start-up over", timeout=timeout)
        for other in procs:
            if other != rid:
                proc.wait_output(rf"peer 0x{other:08x} appeared", timeout=timeout)


class Swarm:
    """``python -m rserpool.testing.swarm`` on a host, driven over its stdin
    (one JSON answer line per command on stdout)."""

    def __init__(self, host: netns.Host, registrar: netns.Host, count: int, id_base: int, *,
                 pool: str, transport: str = "tcp", connections: int = 4,
                 name: str = "swarm", timeout: float = 60.0) -> None:
        self.host = host
        self.count = count
        self.ids = set(range(id_base, id_base + count))
        argv = [sys.executable, "-m", "rserpool.testing.swarm",
                "--registrar", f"{registrar.address}:{ASAP_PORT}", "--pool", pool,
                "--count", str(count), "--connections", str(connections),
                "--id-base", str(id_base), "--transport", transport,
                "--local-address", host.address, "--register-timeout", str(timeout)]
        self.proc = run_with_pipe(host, argv, name)
        self._answered = 0
        self.ready = self._next(timeout + 15)
        assert self.ready.get("ready") is True, f"{self.ready}\n{self.proc.describe()}"
        assert self.ready["count"] == count and self.ready["transport"] == transport

    def _next(self, timeout: float) -> dict[str, Any]:
        def answer() -> str | None:
            lines = [ln for ln in self.proc.stdout().split("\n")[:-1] if ln.startswith("{")]
            if len(lines) > self._answered:
                return lines[self._answered]
            if not self.proc.alive:
                raise netns.NetnsError("the swarm exited\n" + self.proc.describe())
            return None
        line = netns.wait_until(answer, timeout=timeout, interval=0.05,
                                message=lambda: "swarm answer\n" + self.proc.describe())
        self._answered += 1
        return json.loads(line)

    def command(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        """Send one command line; its JSON answer."""
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        stdin.flush()
        return self._next(timeout)

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def alive_ids(self) -> set[int]:
        return set(self.command("ids")["alive"])


def run_with_pipe(host: netns.Host, argv: list[str], name: str) -> netns.Process:
    """:meth:`netns.Host.run`, but stdin is a pipe the test writes to (the
    process joins the host's and the network's process lists, so teardown
    stops it and failure reports show its output)."""
    net = host.network
    seq = sum(1 for p in net.processes if p.name == name and p.host is host)
    label = f"{host.name}-{name}" + (f"-{seq}" if seq else "")
    out, err = net.workdir / f"{label}.out", net.workdir / f"{label}.err"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        popen = subprocess.Popen(host.command(argv), stdin=subprocess.PIPE, stdout=stdout,
                                 stderr=stderr, env=env, start_new_session=True)
    proc = netns.Process(host, name, argv, popen, out, err)
    host.processes.append(proc)
    net.processes.append(proc)
    return proc


def hsdump_all(hosts: list[netns.Host], transport: str = "tcp") -> list[dict[str, Any]]:
    """``rserpool hsdump --json`` of the registrar on each of ``hosts``, run
    in that host's namespace (all at once, one process each)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(h.command([*RSERPOOL, "hsdump", f"{h.address}:{ENRP_PORT}",
                                         "--json", "--transport", transport,
                                         "--timeout", "10"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=env) for h in hosts]
    dumps = []
    for host, proc in zip(hosts, procs):
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise netns.NetnsError(f"hsdump of {host.name} exited with {proc.returncode}:\n"
                                   f"{out.decode(errors='replace')}{err.decode(errors='replace')}")
        dumps.append(json.loads(out))
    return dumps


def elements(dump: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(pool, PE ID, home) of every PE in a dump, duplicates kept."""
    return [(pool["pool_handle"], pe["identifier"], pe["home_registrar"])
            for pool in dump["pools"] for pe in pool["elements"]]


def owner_checksums(dump: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """{home registrar: (PEs, checksum)} computed from a dump (owners of at
    least one PE: the dump also lists the registrar itself when it owns none)."""
    return {c["home_registrar"]: (c["elements"], c["checksum"]) for c in dump["checksums"]
            if c["elements"]}


def same_handlespace(hosts: list[netns.Host], transport: str = "tcp"
                     ) -> tuple[bool, list[dict[str, Any]]]:
    """(do the registrars on ``hosts`` hold the same PEs with the same homes
    and checksums, and report matching own checksums?, the dumps)."""
    dumps = hsdump_all(hosts, transport)
    tables = [sorted(elements(d)) for d in dumps]
    sums = [owner_checksums(d) for d in dumps]
    ok = all(t == tables[0] for t in tables) and all(s == sums[0] for s in sums) and all(
        d["checksum_match"] in (True, None) for d in dumps)
    return ok, dumps


def wait_same_handlespace(hosts: list[netns.Host], timeout: float,
                          check: Callable[[list[dict[str, Any]]], bool] | None = None,
                          transport: str = "tcp", interval: float = 0.5
                          ) -> list[dict[str, Any]]:
    """Poll every ``interval`` seconds until :func:`same_handlespace` (and
    ``check(dumps)``) hold; the dumps.  (Each poll starts one ``hsdump``
    process per host: on a one-CPU guest poll less often.)"""
    last: list[Any] = []

    def done() -> list[dict[str, Any]] | None:
        ok, dumps = same_handlespace(hosts, transport)
        last[:] = dumps
        return dumps if ok and (check is None or check(dumps)) else None

    return netns.wait_until(done, timeout=timeout, interval=interval, message=lambda: (
        "registrars agree: " + "; ".join(
            f"0x{d['registrar_id']:08x}: {d['element_count']} PEs, checksums "
            f"{ {hex(k): v for k, v in owner_checksums(d).items()} }" for d in last)))


def log_lines(proc: netns.Process, pattern: str) -> list[re.Match[str]]:
    """Matches of ``pattern`` (multi-line) in a process's stdout and stderr."""
    return list(re.finditer(pattern, proc.output(), re.MULTILINE))


def churn_during_cut(make_swarm: Callable[..., Swarm], old: dict[int, Swarm],
                     pes: dict[int, netns.Host], regs: dict[int, netns.Host],
                     r1: int, r2: int, r3: int, *, new_count: int, new_connections: int
                     ) -> tuple[list[tuple[int, Swarm]], set[int], Swarm]:
    """Changes on both sides of a cut ``r1 + r2 | r3``: a new swarm of
    ``new_count`` PEs at ``r1`` and at ``r3``, deregistrations (5 at r1, 5 and
    3 at r3), silent deaths (5 at r2, 4 and 2 at r3 and r1) and a swarm of 10
    at r3 killed.  Returns (the new swarms with their homes, every PE ID gone,
    the killed swarm)."""
    new_a = make_swarm(pes[r1], regs[r1], new_count, 4_100_001,
                       connections=new_connections, name="new")
    new_b = make_swarm(pes[r3], regs[r3], new_count, 4_200_001,
                       connections=new_connections, name="new")
    doomed = make_swarm(pes[r3], regs[r3], 10, 4_300_001, connections=1, name="doomed")
    gone: set[int] = set()
    gone |= set(old[r1].command("dereg 5")["deregistered"])
    gone |= set(old[r3].command("dereg 5")["deregistered"])
    gone |= set(new_b.command("dereg 3")["deregistered"])
    gone |= set(old[r2].command("drop 5")["dropped"])
    gone |= set(old[r3].command("drop 4")["dropped"])
    gone |= set(new_a.command("drop 2")["dropped"])
    assert doomed.proc.kill() == -9
    gone |= doomed.ids
    assert len(gone) == 5 + 5 + 3 + 5 + 4 + 2 + 10
    return [(r1, new_a), (r3, new_b)], gone, doomed


def own_tables_right(regs: dict[int, netns.Host], swarms: list[tuple[int, Swarm]],
                     transport: str = "tcp") -> bool:
    """Does every registrar own exactly the live PEs of the swarms homed at it?"""
    for rid, dump in zip(regs, hsdump_all(list(regs.values()), transport)):
        alive = {i for home, s in swarms if home == rid for i in s.alive_ids()}
        if {i for _, i, h in elements(dump) if h == rid} != alive:
            return False
    return True


def agree_after_heal(regs: dict[int, netns.Host], swarms: list[tuple[int, Swarm]],
                     expected: list[tuple[str, int, int]], healed_wall: float,
                     timeout: float, *, stable_for: float, transport: str = "tcp",
                     interval: float = 0.5, none_rehomed: bool = False) -> float:
    """After a partition's heal: wait until every registrar holds exactly
    ``expected`` (sorted ``elements``) with equal checksums of every
    registrar, check it still does ``stable_for`` seconds later and that every
    live PE of the swarms is kept alive by its home (and, with
    ``none_rehomed``, was never moved).  Returns the seconds from
    ``healed_wall`` (``time.time()``) to the completion of the last agreeing
    dump (its ``completed_at``: the ``hsdump`` processes' start-up is not
    counted; at most one ``interval`` late)."""
    hosts = list(regs.values())
    dumps = wait_same_handlespace(hosts, timeout,
                                  lambda ds: all(sorted(elements(d)) == expected for d in ds),
                                  transport, interval)
    converged = max(d["completed_at"] for d in dumps) - healed_wall
    assert set(owner_checksums(dumps[0])) == set(regs)
    # it stays so (late deliveries of what was queued across the cut are
    # stale: they must not change anything)
    time.sleep(stable_for)
    ok, later = same_handlespace(hosts, transport)
    assert ok and all(sorted(elements(d)) == expected for d in later), [
        (hex(d["registrar_id"]), d["element_count"]) for d in later]
    for _home, swarm in swarms:
        stats = swarm.stats()
        assert stats["homeless"] == 0, stats
        if none_rehomed:
            assert stats["rehomed"] == 0, stats
        fresh = swarm.command("fresh 3")
        assert fresh["fresh"] == stats["alive"], fresh
    return converged
