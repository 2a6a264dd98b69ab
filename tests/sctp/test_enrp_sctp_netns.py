"""ENRP over kernel SCTP across network namespaces, inside User-Mode Linux.

The SCTP counterpart of ``tests/netns/test_enrp_netns.py``: every party is
a real process in its own network namespace (:mod:`rserpool.testing.netns`,
one bridge in a switch namespace, a veth per host), and every association
between them is a real kernel SCTP association (PPID 11 for ASAP, 12 for
ENRP) of the UML guest kernel that :mod:`rserpool.testing.pytest_sctp` runs
the ``sctp`` tests in.  The guest loads ``veth`` and ``bridge`` and mounts a
tmpfs of its own on ``/run/netns`` (:mod:`rserpool.testing.uml`), so the
namespaces never leave a trace on the host.

* ``rserpool registrar --transport sctp`` (ASAP and ENRP over SCTP only),
  one per namespace, finding each other by ENRP Presence multicast (UDP) and
  then associating over SCTP;
* PE swarms (``python -m rserpool.testing.swarm --transport sctp``) in
  namespaces of their own, driven over a stdin pipe;
* ``rserpool hsdump --transport sctp --json`` run in each registrar's
  namespace to compare the handlespaces.

Evidence:

1. three registrars (found by multicast) and 500 PEs (100 + 100 + 300):
   every registrar holds the same PEs, homes and per-owner checksums;
   ``kill -9`` of the registrar owning 300: exactly one survivor wins the
   takeover, every PE acknowledges its new home there, none is lost or
   duplicated; the time from the kill to the last re-home is printed;
2. a partition (R1 + R2 | R3) with registrations, deregistrations and PE
   deaths on both sides, then the heal: the three registrars converge on one
   handlespace, with no ghost and no lost PE.

Sizes are kept small (UML runs every guest process on one virtual CPU);
run with ``-s`` (``scripts/uml/run -- python -m pytest -s tests/sctp/test_enrp_sctp_netns.py``)
to see the measured figures.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Iterable

import pytest

from rserpool.testing import netns, scope
from rserpool.testing.scope import elements, log_lines, owner_checksums

pytestmark = pytest.mark.sctp

RSERPOOL = [sys.executable, "-m", "rserpool"]
ASAP_PORT = 3863
ENRP_PORT = 9901
POOL = "EnrpSctpNetnsPool"
R1, R2, R3 = 0x000000A1, 0x000000B2, 0x000000C3
#: ENRP and ASAP timers of the takeover test (the issue's figures).
FAST = ("--peer-heartbeat-interval", "1", "--peer-max-time-last-heard", "2",
        "--peer-max-time-no-response", "1", "--mentor-discovery-timeout", "1",
        "--takeover-expiry-interval", "3", "--keep-alive-interval", "1",
        "--keep-alive-timeout", "3")


@pytest.fixture
def network(tmp_path) -> Iterator[netns.Network]:
    """A :class:`netns.Network` in the UML guest; on a failure the tail of
    every process's output is printed (it lands in the report)."""
    netns.require_netns()
    net = netns.Network(workdir=tmp_path / "net")
    try:
        yield net
    finally:
        try:
            net.close()
        finally:
            for proc in net.processes:  # the swarms' control pipes
                if proc.popen.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.popen.stdin.close()


@contextlib.contextmanager
def explained(net: netns.Network) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(net.describe(60))
        raise


# --- processes and dumps: rserpool.testing.scope, over SCTP ----------------------------------


def start_scope(hosts: dict[int, netns.Host], *extra: str,
                timers: Iterable[str] = FAST) -> dict[int, netns.Process]:
    """A registrar (ASAP and ENRP over SCTP only) on each host, meshed."""
    procs = {rid: scope.start_registrar(h, rid, *extra, "-v", transport="sctp", timers=timers)
             for rid, h in hosts.items()}
    for rid, proc in procs.items():
        scope.wait_listening(proc, hosts[rid], "sctp")
    scope.wait_mesh(procs)
    return procs


class Swarm(scope.Swarm):
    """An SCTP PE swarm in pool :data:`POOL`."""

    def __init__(self, host: netns.Host, registrar: netns.Host, count: int, id_base: int,
                 **kwargs: Any) -> None:
        kwargs.setdefault("timeout", 40.0)
        super().__init__(host, registrar, count, id_base, pool=POOL, transport="sctp",
                         **kwargs)


def hsdump_all(hosts: list[netns.Host]) -> list[dict[str, Any]]:
    return scope.hsdump_all(hosts, "sctp")


def wait_same_handlespace(hosts: list[netns.Host], timeout: float,
                          check: Any = None) -> list[dict[str, Any]]:
    # UML runs every process on one virtual CPU and each poll starts three
    # hsdump processes: poll every 1.5 s, or the polling starves the rest
    return scope.wait_same_handlespace(hosts, timeout, check, "sctp", interval=1.5)


def _sctp_associations() -> int:
    """Established SCTP associations of the namespace this test runs in
    (none: every association is inside the test's namespaces)."""
    try:
        return max(0, len(Path("/proc/net/sctp/assocs").read_text().splitlines()) - 1)
    except OSError:
        return 0


# --- 1. same handlespace, then a takeover after kill -9 ------------------------------------


def test_sctp_registrars_in_namespaces_agree_and_one_survivor_takes_over(network):
    """R1, R2, R3 (found by multicast, ENRP over SCTP) with 100, 100 and 300
    PEs; all three hold the same 500 PEs, homes and checksums.  R3 is killed
    (``kill -9``: the kernel aborts its associations): exactly one survivor
    wins, all 300 PEs re-home there, none lost or duplicated."""
    start = time.monotonic()
    with explained(network):
        regs = {rid: network.add_host(f"r{n}") for n, rid in enumerate((R1, R2, R3), 1)}
        pes = {rid: network.add_host(f"pe{n}") for n, rid in enumerate((R1, R2, R3), 1)}
        procs = start_scope(regs)
        assert not any("--peer" in p.argv for p in procs.values())
        assert any(log_lines(p, r"peer 0x[0-9a-f]{8} appeared \(multicast\)")
                   for p in procs.values())
        mesh = time.monotonic()
        sizes = {R1: 100, R2: 100, R3: 300}
        swarms = {rid: Swarm(pes[rid], regs[rid], sizes[rid], 100_000 * n + 1)
                  for n, rid in enumerate((R1, R2, R3), 1)}
        total = sum(sizes.values())
        everything = set().union(*(s.ids for s in swarms.values()))
        assert len(everything) == total

        # (a) the same PEs, homes and checksums at every registrar
        dumps = wait_same_handlespace(list(regs.values()), 40,
                                      lambda ds: all(len(elements(d)) == total for d in ds))
        agreed = time.monotonic()
        for dump in dumps:
            table = elements(dump)
            assert len(table) == len({(p, i) for p, i, _ in table}) == total
            for rid, swarm in swarms.items():
                assert {i for _, i, h in table if h == rid} == swarm.ids
            sums = owner_checksums(dump)
            assert {k: n for k, (n, _) in sums.items()} == sizes
            assert dump["checksum_match"] is True
            assert sums[dump["registrar_id"]][1] == dump["reported_checksum"]
        assert _sctp_associations() == 0  # nothing in the test's own namespace

        # every swarm knows its home (learned from the first keep-alive)
        def homes_known() -> bool:
            return all(s.stats()["homes"] == {f"0x{rid:08x}": sizes[rid]}
                       for rid, s in swarms.items())
        netns.wait_until(homes_known, 15, 0.3, "every swarm knows its home")

        # (b) kill -9 of R3, owner of 300
        victim, count = R3, sizes[R3]
        survivors = {R1: regs[R1], R2: regs[R2]}
        killed_at = time.time()
        assert procs[victim].kill() == -9
        answer = swarms[victim].command(f"rehome-wait {count} 30", timeout=45)
        assert answer["reached"], answer
        first = answer["first_rehome_wall"] - killed_at
        last = answer["last_rehome_wall"] - killed_at

        won = {rid: log_lines(procs[rid], rf"takeover of 0x{victim:08x} won: (\d+) PEs")
               for rid in survivors}
        winners = [rid for rid, lines in won.items() if lines]
        assert len(winners) == 1 and len(won[winners[0]]) == 1, won
        winner = winners[0]
        loser = R2 if winner == R1 else R1
        assert int(won[winner][0].group(1)) == count
        assert log_lines(procs[loser], rf"takeover of 0x{victim:08x} left to 0x{winner:08x}"), \
            procs[loser].describe()
        procs[winner].wait_output(
            r"PE\(s\) taken over acknowledged their new home \(0 to go\)", timeout=15)
        stats = swarms[victim].stats()
        assert stats["homes"] == {f"0x{winner:08x}": count}, stats
        assert stats["alive"] == count and stats["rehomed"] == count, stats
        assert stats["rehome_events"] == count and stats["homeless"] == 0, stats
        assert stats["inbound_associations"] >= 1, stats  # the winner associated to the PEs
        for rid in (R1, R2):
            assert swarms[rid].stats()["rehomed"] == 0

        # none lost or duplicated: both survivors hold the 500, R3's at the winner
        expected = sorted([(POOL, i, winner) for i in swarms[victim].ids]
                          + [(POOL, i, rid) for rid in (R1, R2) for i in swarms[rid].ids])
        dumps = wait_same_handlespace(list(survivors.values()), 20,
                                      lambda ds: all(sorted(elements(d)) == expected for d in ds))
        for dump in dumps:
            sums = owner_checksums(dump)
            assert set(sums) == {R1, R2}
            assert sums[winner][0] == sizes[winner] + count
        fresh = swarms[victim].command("fresh 3")
        assert fresh["fresh"] == count, fresh
        assert all(procs[rid].alive for rid in survivors)

    print(f"\nSCTP in namespaces (UML): 3 registrars meshed {mesh - start:.1f} s after the "
          f"first host was made; {total} PEs registered and agreed by all three "
          f"{agreed - mesh:.1f} s later; kill -9 of 0x{victim:08x} ({count} PEs): 0x{winner:08x} "
          f"won, first PE re-homed {first:.2f} s, last {last:.2f} s after the kill "
          f"(heartbeat 1 s, max-time-last-heard 2 s, max-time-no-response 1 s); "
          f"test {time.monotonic() - start:.1f} s")
    assert 0 < first <= last < 10, (first, last)


# --- 2. a partition, and the heal ----------------------------------------------------------

PARTITION_SECONDS = 12.0
HEARTBEAT = 1.0
#: Each side declares the other dead (max-time-last-heard 3 s + max-time-no-
#: response 1 s) and starts taking its PEs over; the H-bit keep-alives cannot
#: cross the cut.  After the heal the registrars hear each other's multicast
#: Presences again and the checksum audit repairs the handlespaces.
PARTITION_TIMERS = ("--peer-heartbeat-interval", str(HEARTBEAT), "--mentor-discovery-timeout",
                    "1", "--peer-max-time-last-heard", "3", "--peer-max-time-no-response", "1",
                    "--takeover-expiry-interval", "3", "--keep-alive-interval", "1",
                    "--keep-alive-timeout", "3")
#: (A keep-alive timeout of 3 s: on the one-CPU guest a busy moment must not
#: make a live swarm miss a keep-alive; the swarm never re-registers.)


def test_sctp_partition_with_changes_on_both_sides_converges_after_the_heal(network):
    """R1 + R2 with their PE hosts | R3 with its PE host, for 12 s.  During
    the cut, on both sides: new PEs register, PEs deregister, PEs die
    silently (keep-alive timeout) and a whole swarm is killed (associations
    aborted).  After the heal the three registrars hold one handlespace:
    every live PE at its original home, none of the gone ones."""
    start = time.monotonic()
    with explained(network):
        regs = {rid: network.add_host(f"r{n}") for n, rid in enumerate((R1, R2, R3), 1)}
        pes = {rid: network.add_host(f"pe{n}") for n, rid in enumerate((R1, R2, R3), 1)}
        procs = start_scope(regs, timers=PARTITION_TIMERS)
        old = {rid: Swarm(pes[rid], regs[rid], 40, 4_000_001 + 10_000 * n, name="old",
                          connections=2) for n, rid in enumerate((R1, R2, R3))}
        wait_same_handlespace(list(regs.values()), 30,
                              lambda ds: all(len(elements(d)) == 120 for d in ds))
        swarms: list[tuple[int, Swarm]] = list(old.items())

        network.partition([regs[R1], regs[R2], pes[R1], pes[R2]], [regs[R3], pes[R3]])
        cut = time.monotonic()
        try:
            new, gone, doomed = scope.churn_during_cut(Swarm, old, pes, regs, R1, R2, R3,
                                                            new_count=15, new_connections=1)
            swarms += new

            # each registrar sees the changes of its own PEs (the dropped
            # ones time out after 1 + 3 s)
            netns.wait_until(lambda: scope.own_tables_right(regs, swarms, "sctp"), 25, 1.5,
                             "each registrar's own PEs right")
            during = {rid: (d["element_count"], len({i for _, i, _ in elements(d)} & gone))
                      for rid, d in zip(regs, hsdump_all(list(regs.values())))}
            time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut)))
        finally:
            network.heal()
        healed = time.monotonic()
        healed_wall = time.time()

        expected = sorted((POOL, i, home) for home, swarm in swarms for i in swarm.alive_ids())
        assert len(expected) == 120 + 30 - len(gone) + len(doomed.ids)
        assert not {i for _, i, _ in expected} & gone
        # the last agreeing dump's completion (hsdump start-up not counted),
        # then three more heartbeats of the same, every live PE kept alive
        converged = scope.agree_after_heal(regs, swarms, expected, healed_wall, 45,
                                           stable_for=3 * HEARTBEAT, transport="sctp",
                                           interval=1.5)
        assert all(p.alive for p in procs.values())
        logs = {rid: "\n".join(m.group(0) for m in log_lines(
            procs[rid], r"^.*(takeover of|peer 0x[0-9a-f]{8} (appeared|lost|unreachable)|audit).*$"))
            for rid in regs}
        rehomed = {f"{s.host.name}/{s.proc.name}": s.stats()["rehomed"] for _, s in swarms}

    print(f"\nSCTP partition in namespaces (UML): {healed - cut:.1f} s cut (R1+R2 | R3), "
          f"{len(gone)} PEs gone and 30 registered during it, {len(expected)} live PEs; "
          f"the 3 registrars agree {converged:.1f} s after the heal; "
          f"(PEs, gone still listed) during the cut: "
          f"{ {hex(k): v for k, v in during.items()} }; PEs re-homed per swarm: {rehomed}; "
          f"test {time.monotonic() - start:.1f} s")
    for rid, text in logs.items():
        print(f"  0x{rid:08x}:\n    " + text.replace("\n", "\n    "))
