"""ENRP between registrars over real kernel SCTP (PPID 12), inside User-Mode
Linux on hosts without kernel SCTP (see ``rserpool.testing.pytest_sctp``).

The SCTP counterpart of ``tests/integration/test_enrp_tcp.py``: registrars
serve ASAP *and* ENRP over SCTP only (``transports=("sctp",)``), each on its
own address of the guest's ``lo`` (10.255.0.1/.2/.3) with fixed ports, and
find each other through a static ``sctp:`` peer plus the List Response.  PEs
are PE swarms (``python -m rserpool.testing.swarm --transport sctp``, one
process standing for many PEs, each association from its own one-to-many
socket) and real :class:`rserpool.aio.element.PoolElement` objects over
SCTP.  The registrar that is killed in the takeover test is a
``python -m rserpool registrar`` subprocess, so that ``kill -9`` leaves the
kernel to end its associations.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rserpool.aio.element import PoolElement as PoolElementService
from rserpool.aio.registrar import Registrar
from rserpool.testing.enrp import RawEnrpPeer as EnrpPeer, same_handlespace as in_sync
from rserpool.testing.enrp import handlespace_table as table
from rserpool.config import RegistrarConfig
from rserpool.constants import PPID, UpdateAction
from rserpool.handlespace import TIMER_EXPIRY
from rserpool.protocol.asap_element import HomeRegistrarChanged
from rserpool.protocol.enrp import MAX_HT_RESPONSE_BYTES, PeerState
from rserpool.testing import aio as testing_aio
from rserpool.testing.aio import until
from rserpool.wire import (
    EnrpErrorMessage,
    HandleResolutionResponse,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    Presence,
    RegistrationResponse,
    SctpTransport,
)

pytestmark = pytest.mark.sctp


def _helpers() -> Any:
    """The integration tests' helpers (AsapClient, pool_element, ...)."""
    path = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_enrp_sctp_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H = _helpers()


def _guest_addresses() -> list[str]:
    env = os.environ.get("RSERPOOL_UML_ADDRESSES", "10.255.0.1 10.255.0.2 10.255.0.3")
    return env.replace(",", " ").split()


ADDR = _guest_addresses()
A, B, C = 0xA1, 0xB2, 0xC3
IDS = (A, B, C)
HOSTILE = 0x0BAD
POOL = b"EnrpSctpPool"
#: The pool of the real PoolElements (SCTP user transports; the swarms' PEs
#: name TCP ones, and a pool holds one transport type).
PE_POOL = b"EnrpSctpElements"
#: Fast ENRP timers (heartbeat 1 s, max-time-last-heard 2 s, no-response 1 s).
FAST = dict(peer_heartbeat_interval=1.0, peer_max_time_last_heard=2.0,
            peer_max_time_no_response=1.0, mentor_discovery_timeout=1.0,
            takeover_expiry_interval=2.0)
#: The same as command line options of ``rserpool registrar``.
FAST_CLI = ["--peer-heartbeat-interval", "1", "--peer-max-time-last-heard", "2",
            "--peer-max-time-no-response", "1", "--mentor-discovery-timeout", "1",
            "--takeover-expiry-interval", "2"]


@pytest.fixture
def arun():
    loop = asyncio.new_event_loop()

    def run(coro: Any, timeout: float = 60.0) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    try:
        yield run
    finally:
        testing_aio.close_loop(loop)


# ---------------------------------------------------------------------------
# helpers


#: registrars' keep-alive timeout (s): the guest has one CPU, and a swarm
#: starting or a takeover's 205 H-bit keep-alives there must not make a healthy
#: PE late (a swarm never re-registers: a late answer loses a live PE for good)
KEEP_ALIVE_TIMEOUT = 3.0


def make_config(index: int, asap_port: int, enrp_port: int, peers: tuple[str, ...] = (),
                **overrides: Any) -> RegistrarConfig:
    """Registrar ``IDS[index]`` on ``ADDR[index]``, ASAP and ENRP over SCTP only."""
    settings: dict[str, Any] = dict(
        registrar_id=IDS[index], addresses=(ADDR[index],), asap_port=asap_port,
        enrp_port=enrp_port, transports=("sctp",), announce=False,
        presence_multicast=False, peers=peers, keep_alive_interval=1.0,
        keep_alive_timeout=KEEP_ALIVE_TIMEOUT, **FAST)
    settings.update(overrides)
    return RegistrarConfig(**settings)


def full_mesh(regs: list[Any], ids: tuple[int, ...]) -> bool:
    """Every registrar knows every other one of ``ids`` as a live peer."""
    return all(
        set(r.enrp.peers()) == set(ids) - {r.registrar_id}
        and all(s is PeerState.ALIVE for s in r.enrp.peers().values()) for r in regs)


def assert_enrp_over_sctp_only(reg: Any) -> None:
    """ENRP endpoints and every peer association are SCTP."""
    assert [kind for kind, _, _ in reg.enrp_endpoints] == ["sctp"], reg.enrp_endpoints
    assert reg.transports == ["sctp"]
    for pid in reg.enrp.peers():
        keys = reg.enrp.peer_keys(pid)
        assert keys and all(k.transport == "sctp" for k in keys), (pid, keys)


async def scope(count: int, asap_port: int, enrp_port: int, **overrides: Any) -> list[Any]:
    """``count`` in-process registrars on ADDR[0..count-1]; every one after the
    first has ``sctp:ADDR[0]:enrp_port`` as its only static peer."""
    regs: list[Any] = []
    try:
        for i in range(count):
            peers = (f"sctp:{ADDR[0]}:{enrp_port}",) if i else ()
            reg = Registrar(make_config(i, asap_port, enrp_port, peers, **overrides), seed=7)
            await reg.start()
            regs.append(reg)
        await until(lambda: full_mesh(regs, IDS[:count]), 15, "a full mesh of live peers")
    except BaseException:
        await stop_all(regs)
        raise
    for reg in regs:
        assert reg.enrp_endpoints == [("sctp", reg.config.addresses[0], enrp_port)]
        assert_enrp_over_sctp_only(reg)
    return regs


async def stop_all(regs: list[Any]) -> None:
    for reg in regs:
        await reg.stop()


class Swarm:
    """A PE swarm subprocess over SCTP (``python -m rserpool.testing.swarm``)."""

    def __init__(self, proc: Any, ready: dict[str, Any], log: Path) -> None:
        self.proc = proc
        self.ready = ready
        self.log = log

    @classmethod
    async def start(cls, host: str, port: int, count: int, id_base: int, log: Path, *,
                    connections: int = 2, timeout: float = 30.0) -> "Swarm":
        with open(log, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rserpool.testing.swarm", "--registrar",
                f"{host}:{port}", "--pool", POOL.decode(), "--count", str(count),
                "--connections", str(connections), "--transport", "sctp",
                "--id-base", str(id_base),
                "--registration-life", "600",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                limit=1 << 24)
        self = cls(proc, {}, log)
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            self.ready = json.loads(line) if line else {}
        except BaseException:
            await self.kill()
            raise
        assert self.ready.get("ready"), (self.ready, self.stderr())
        assert self.ready["transport"] == "sctp" and self.ready["count"] == count
        return self

    @property
    def ids(self) -> set[int]:
        first, last = self.ready["ids"]
        return set(range(first, last + 1))

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def command(self, line: str, timeout: float = 20.0) -> Any:
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert answer, f"swarm gave no answer to {line!r}: {self.stderr()}"
        return json.loads(answer)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def quit(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (ConnectionError, asyncio.TimeoutError):
                pass
        await self.kill()


def sctp_pool_element(ident: int, address: str, port: int = 7000) -> Any:
    return H.PoolElement(ident, 0, 30000, SctpTransport(port, [address], 1),
                         H.PoolPolicy(1, []))


def real_pe(reg_host: str, reg_port: int, ident: int, address: str) -> PoolElementService:
    """A PoolElement over SCTP (its ASAP and user sockets bound to ``address``)."""
    return PoolElementService(PE_POOL, registrars=[f"{reg_host}:{reg_port}"], discovery=False,
                              transport="sctp", addresses=[address],
                              accept_any_home=True, identifier=ident)


async def resolve_all(reg: Any, rounds: int, pool: bytes = POOL) -> set[int]:
    """PE IDs of ``rounds`` resolutions of ``pool`` (128 items) over SCTP."""
    host, port = reg.address("sctp")
    pu = await H.AsapClient.connect(host, port, transport="sctp")
    ids: set[int] = set()
    try:
        for _ in range(rounds):
            resp = await pu.resolve(pool, 128)
            assert type(resp) is HandleResolutionResponse and resp.error is None, resp
            ids |= {pe.identifier for pe in resp.pool_elements}
    finally:
        await pu.close()
    return ids


# ---------------------------------------------------------------------------
# 1. three registrars hold the same handlespace


def test_three_registrars_hold_the_same_handlespace_over_sctp(arun, tmp_path):
    """PEs registered over SCTP at each of three registrars (a swarm of 100
    and one real PoolElement each) reach every registrar by Handle Update
    over SCTP; tables, resolutions and ownership checksums agree.  A
    deregistration (B), keep-alive timeouts (A), a killed swarm (C:
    association loss) and a PoolElement stopping (A) are propagated."""
    async def body() -> None:
        regs = await scope(3, 4100, 4200, max_increment=128)
        swarms: list[Swarm] = []
        pes: list[PoolElementService] = []
        try:
            started = await asyncio.gather(*(
                Swarm.start(*reg.address("sctp"), 100, 100_000 * (n + 1),
                            tmp_path / f"swarm{n}.log")
                for n, reg in enumerate(regs)), return_exceptions=True)
            swarms = [s for s in started if isinstance(s, Swarm)]
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            for n, reg in enumerate(regs):
                pe = real_pe(*reg.address("sctp"), 0x5000 + n, ADDR[n])
                pes.append(pe)
                await pe.start()
                assert pe.home_registrar.transport == "sctp"
            expected = {(POOL, i, IDS[n]) for n, s in enumerate(swarms) for i in s.ids}
            expected |= {(PE_POOL, 0x5000 + n, IDS[n]) for n in range(3)}
            assert len(expected) == 303
            await until(lambda: all(table(r) == expected for r in regs), 15, "303 PEs each")
            assert in_sync(*regs)
            assert set(regs[0].handlespace.checksums()) == {A, B, C}
            for reg in regs:
                assert reg.enrp.counters["updates_refused"] == 0
                assert_enrp_over_sctp_only(reg)
            # every registrar resolves everything (round robin, 128 at a time)
            for reg in regs:
                assert await resolve_all(reg, 3) == {i for h, i, _ in expected if h == POOL}
                assert await resolve_all(reg, 1, PE_POOL) == {0x5000, 0x5001, 0x5002}
            # deregistrations at B, silent PEs at A, association loss at C
            answer = await swarms[1].command("dereg 10")
            deregistered = set(answer["deregistered"])
            assert len(deregistered) == 10 and "failed" not in answer
            dropped = set((await swarms[0].command("drop 5"))["dropped"])
            assert len(dropped) == 5
            await swarms[2].kill()
            await pes[0].stop()
            gone = deregistered | dropped | swarms[2].ids | {0x5000}
            expected = {e for e in expected if e[1] not in gone}
            assert len(expected) == 303 - 10 - 5 - 100 - 1
            await until(lambda: all(table(r) == expected for r in regs), 15,
                        "deregistration and losses propagated")
            assert in_sync(*regs)
            assert set(regs[0].handlespace.checksums()) == {A, B, C}  # C's PoolElement
            for reg in regs:
                assert reg.enrp.counters["updates_refused"] == 0
        finally:
            for pe in pes:
                await pe.stop()
            for s in swarms:
                await s.quit()
            await stop_all(regs)
    arun(body(), 90)


# ---------------------------------------------------------------------------
# 2. takeover of a killed registrar


async def start_registrar_process(index: int, asap_port: int, enrp_port: int,
                                  peer: str, log: Path) -> Any:
    """``python -m rserpool registrar`` on ADDR[index] over SCTP only."""
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rserpool", "registrar", "--transport", "sctp",
            "--address", ADDR[index], "--asap-port", str(asap_port), "--enrp-port",
            str(enrp_port), "--registrar-id", f"0x{IDS[index]:x}", "--peer", peer,
            "--no-announce", "--no-presence-multicast", "--keep-alive-interval", "1",
            "--keep-alive-timeout", str(KEEP_ALIVE_TIMEOUT), *FAST_CLI,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc


def test_takeover_of_a_killed_registrar_over_sctp(arun, tmp_path):
    """Registrar C (a subprocess) owns 200 swarm PEs and 5 PoolElements; it is
    killed with SIGKILL.  A (lower ID) wins the takeover exactly once, B
    concedes; every PE acknowledges its new home over a new SCTP association
    that A opened from its ASAP port; no PE is lost or duplicated."""
    async def body() -> None:
        asap_port, enrp_port = 4300, 4400
        regs = await scope(2, asap_port, enrp_port)
        log = tmp_path / "registrar-c.log"
        proc = await start_registrar_process(2, asap_port, enrp_port,
                                             f"sctp:{ADDR[0]}:{enrp_port}", log)
        swarm = None
        pes: list[PoolElementService] = []
        moved: dict[int, float] = {}
        try:
            try:
                await until(lambda: full_mesh(regs, IDS), 15, "C joins the scope")
            except BaseException:
                print(log.read_text(errors="replace"))
                raise
            for reg in regs:
                assert_enrp_over_sctp_only(reg)
            swarm = await Swarm.start(ADDR[2], asap_port, 200, 300_000,
                                      tmp_path / "swarm.log", connections=4)
            for i in range(5):
                pe = real_pe(ADDR[2], asap_port, 0x6000 + i, ADDR[1 + i % 2])

                def on_event(ev: Any, ident: int = 0x6000 + i) -> None:
                    if isinstance(ev, HomeRegistrarChanged):
                        moved.setdefault(ident, time.monotonic())
                pe.add_listener(on_event)
                pes.append(pe)
                await pe.start()
                assert pe.home_registrar.server_id in (0, C)
            ids = {(POOL, i) for i in swarm.ids} | {(PE_POOL, 0x6000 + i) for i in range(5)}
            await until(lambda: all(table(r) == {(h, i, C) for h, i in ids} for r in regs),
                        15, "205 PEs of C at A and B")
            assert in_sync(*regs)
            # every PE knows C as its home (the swarm learns it from a keep-alive)
            await until(lambda: all(pe.home_registrar.server_id == C for pe in pes), 10)
            stats = await swarm.command("stats")
            for _ in range(50):
                if stats["homes"].get(f"0x{C:08x}") == 200:
                    break
                await asyncio.sleep(0.1)
                stats = await swarm.command("stats")
            assert stats["homes"] == {f"0x{C:08x}": 200}, stats
            assert stats["inbound_associations"] == 0

            # while the takeover runs, neither survivor ever misses a PE
            sizes: list[tuple[int, int]] = []

            async def watch() -> None:
                while True:
                    sizes.append((len(regs[0].handlespace), len(regs[1].handlespace)))
                    await asyncio.sleep(0.01)
            watcher = asyncio.get_running_loop().create_task(watch())

            killed = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            answer = await swarm.command("rehome-wait 200 20", timeout=30)
            assert answer["reached"], answer
            await until(lambda: len(moved) == 5 and all(
                pe.home_registrar is not None and pe.home_registrar.server_id == A
                for pe in pes), 10, "every PoolElement homed at A")
            watcher.cancel()
            assert len(sizes) > 10 and set(sizes) == {(205, 205)}, set(sizes)
            swarm_last = answer["last_rehome"] - killed
            swarm_first = answer["first_rehome"] - killed
            pe_last = max(moved.values()) - killed
            print(f"\nSCTP takeover (heartbeat 1 s, max-time-last-heard 2 s, max-time-no-"
                  f"response 1 s): kill -9 -> first PE re-homed {swarm_first:.2f} s, "
                  f"last of 200 swarm PEs {swarm_last:.2f} s, last of 5 PoolElements "
                  f"{pe_last:.2f} s")
            assert 0 < swarm_first <= swarm_last < 10 and pe_last < 10

            # each PE moved once, to A, over new associations A opened
            assert answer["rehomed"] == 200 and answer["rehome_events"] == 200, answer
            assert answer["homes"] == {f"0x{A:08x}": 200}, answer
            assert answer["alive"] == 200 and answer["homeless"] == 0, answer
            assert answer["inbound_associations"] == 4, answer
            rehomes = (await swarm.command("rehomes"))["rehomes"]
            assert sorted(r[0] for r in rehomes) == sorted(swarm.ids)
            assert {r[1] for r in rehomes} == {f"0x{A:08x}"}
            for pe in pes:
                home = pe.home_registrar
                assert (home.transport, home.host, home.port) == ("sctp", ADDR[0], asap_port)
            # the survivors agree; nothing lost or duplicated; exactly one winner
            await until(lambda: in_sync(*regs) and all(C not in r.enrp.peers() for r in regs),
                        10, "survivors agree, C forgotten")
            assert table(regs[0]) == {(h, i, A) for h, i in ids}
            assert len(regs[0].handlespace) == len(regs[1].handlespace) == 205
            assert [r.enrp.counters["takeovers_won"] for r in regs] == [1, 0]
            assert regs[0].enrp.counters["pes_taken_over"] == 205
            await until(lambda: regs[0].core.counters["adopted"] == 205
                        and regs[0].core.adopting() == 0, 10, "A read every PE's ack")
            assert regs[1].core.counters["adopted"] == 0
            # A keeps them alive from now on, over its new associations
            acks = regs[0].core.counters["keep_alive_acks"]
            await until(lambda: regs[0].core.counters["keep_alive_acks"] >= acks + 205, 10)
            fresh = await swarm.command("fresh 3")
            assert fresh["fresh"] == 200, fresh
            assert all(pe.registered for pe in pes)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for pe in pes:
                await pe.stop()
            if swarm is not None:
                await swarm.quit()
            await stop_all(regs)
    arun(body(), 90)


# ---------------------------------------------------------------------------
# 3. a joining registrar downloads the handle table


def test_a_joining_registrar_downloads_thousands_of_pes_in_pages_over_sctp(arun, tmp_path):
    """3,000 PEs at A; B joins with A as its static peer and downloads A's
    handle table over SCTP in pages of at most 128 PEs and 1,400 bytes
    (the defaults); a raw SCTP download sees the same paging."""
    count = 3000

    async def body() -> None:
        asap_port, enrp_port = 4500, 4600
        # slow keep-alives: 3,000 PEs, a short test
        slow = dict(keep_alive_interval=30.0, keep_alive_timeout=5.0)
        first = Registrar(make_config(0, asap_port, enrp_port, **slow), seed=7)
        await first.start()
        regs = [first]
        swarm = None
        dump = None
        try:
            assert first.config.max_elements_per_ht_request == 128
            swarm = await Swarm.start(ADDR[0], asap_port, count, 400_000,
                                      tmp_path / "swarm.log", connections=10)
            assert len(first.handlespace) == count
            late = Registrar(make_config(1, asap_port, enrp_port,
                                         (f"sctp:{ADDR[0]}:{enrp_port}",), **slow), seed=7)
            began = time.monotonic()
            await late.start()
            regs.append(late)
            await until(lambda: late.enrp.mentor_done and len(late.handlespace) == count,
                        30, "download of 3,000 PEs")
            took = time.monotonic() - began
            await until(lambda: not late.enrp.startup and full_mesh(regs, (A, B)), 10)
            assert late.enrp.mentor == A
            assert in_sync(*regs)
            assert_enrp_over_sctp_only(late)
            served = first.enrp.counters["ht_requests_served"]
            print(f"\n{count} PEs downloaded over SCTP in {served} pages, {took:.2f} s")
            assert served >= -(-count // 128)
            entry = late.handlespace.get(POOL, 400_005)
            assert entry.home_registrar == A and entry.timer == TIMER_EXPIRY
            # the same download by a raw SCTP client (as rserpool hsdump does)
            dump = await EnrpPeer.connect(first, transport="sctp")
            pages, seen = 0, []
            while True:
                dump.send(HandleTableRequest(HOSTILE, A))
                resp, ppid, size = await dump.recv_full(HandleTableResponse)
                assert ppid == PPID.ENRP and not resp.rejected
                n = sum(len(pes) for _, pes in resp.entries)
                assert 1 <= n <= 128 and size <= MAX_HT_RESPONSE_BYTES, (n, size)
                seen.extend(pe.identifier for _, pes in resp.entries for pe in pes)
                pages += 1
                if not resp.more:
                    break
            assert len(seen) == len(set(seen)) == count and set(seen) == swarm.ids
            assert pages >= -(-count // 128)
            print(f"raw SCTP download: {pages} pages")
        finally:
            if dump is not None:
                dump.channel.close()
            if swarm is not None:
                await swarm.quit()
            await stop_all(regs)
    arun(body(), 90)


# ---------------------------------------------------------------------------
# 4. a hostile ENRP peer


def test_hostile_enrp_peer_over_sctp_cannot_corrupt_the_handlespace(arun):
    """A raw SCTP association to B's ENRP endpoint: messages with a PPID other
    than 12 are ignored; a Presence with B's own ID, forged Handle Updates for
    A's PE (unbound, then as a peer of its own) are refused; an unknown
    message type gets ENRP Error cause 0x0002; a flood of Handle Table
    Requests gets one page each.  The handlespace is unchanged, and the
    scope keeps serving."""
    async def body() -> None:
        regs = await scope(2, 4700, 4800)
        host, port = regs[0].address("sctp")
        client = await H.AsapClient.connect(host, port, transport="sctp", auto_ack=True)
        bad = None
        try:
            for ident in range(1, 21):
                resp = await client.register(POOL, sctp_pool_element(ident, ADDR[0]))
                assert type(resp) is RegistrationResponse and not resp.rejected, resp
            await until(lambda: in_sync(*regs) and len(regs[1].handlespace) == 20, 10)
            before = table(regs[1])
            counters = dict(regs[1].enrp.counters)
            bad = await EnrpPeer.connect(regs[1], transport="sctp")
            greeting, ppid, _ = await bad.recv_full(Presence)   # B greets every association
            assert ppid == PPID.ENRP and greeting.sender_id == B and greeting.reply_required
            victim = regs[1].handlespace.get(POOL, 3).pool_element
            unknown = b"\x7f\x00\x00\x0c" + HOSTILE.to_bytes(4, "big") + B.to_bytes(4, "big")
            # 0. the wrong PPID (ASAP's, or 0): ignored, whatever it carries
            for wrong in (PPID.ASAP, 0):
                bad.send(Presence(HOSTILE, B, 0xFFFF, None, True), ppid=wrong)
                bad.send(HandleUpdate(HOSTILE, B, UpdateAction.DEL_PE, POOL, victim),
                         ppid=wrong)
                bad.send(HandleTableRequest(HOSTILE, B), ppid=wrong)
                bad.send(unknown, ppid=wrong)
            # 1. a Presence claiming B's own ID is ignored (and binds nothing)
            bad.send(Presence(B, 0, 0xFFFF, None, True))
            # 2. forged updates before saying who it is: dropped (unbound)
            bad.send(HandleUpdate(A, B, UpdateAction.DEL_PE, POOL, victim))
            # an unknown message type (right PPID) gets an ENRP Error; it comes
            # after everything above was handled (one ordered stream)
            bad.send(unknown)
            err, ppid, _ = await bad.recv_full(EnrpErrorMessage)
            assert ppid == PPID.ENRP and err.causes[0].code == 0x0002
            await asyncio.sleep(0.2)
            # nothing of steps 0-2 was answered, learned or applied
            assert bad.pending(EnrpErrorMessage) == []
            assert bad.pending(HandleTableResponse) == []
            assert HOSTILE not in regs[1].enrp.peers() and B not in regs[1].enrp.peers()
            assert regs[1].enrp.counters["ht_requests_served"] == counters["ht_requests_served"]
            assert regs[1].enrp.counters["errors_sent"] == counters["errors_sent"] + 1
            assert table(regs[1]) == before
            # 3. as a peer of its own: DEL of A's PE and ADDs moving it are refused
            bad.send(Presence(HOSTILE, B, 0xFFFF, None, False))
            bad.send(HandleUpdate(HOSTILE, B, UpdateAction.DEL_PE, POOL, victim))
            bad.send(HandleUpdate(HOSTILE, B, UpdateAction.ADD_PE, POOL,
                                  victim.replace(home_registrar=HOSTILE)))
            bad.send(HandleUpdate(HOSTILE, B, UpdateAction.ADD_PE, POOL,
                                  victim.replace(home_registrar=A, identifier=4444)))
            bad.send(unknown)
            err, _, _ = await bad.recv_full(EnrpErrorMessage)
            assert err.causes[0].code == 0x0002
            assert HOSTILE in regs[1].enrp.peers()
            assert regs[1].enrp.counters["updates_refused"] >= counters["updates_refused"] + 3
            assert table(regs[1]) == before
            # 4. a flood of handle table requests: each gets one page
            for _ in range(500):
                bad.send(HandleTableRequest(HOSTILE, B))
            for _ in range(500):
                resp, ppid, size = await bad.recv_full(HandleTableResponse, timeout=10)
                assert not resp.rejected and size <= MAX_HT_RESPONSE_BYTES
            assert table(regs[1]) == before and in_sync(*regs)
            assert regs[1].enrp.peers()[A] is PeerState.ALIVE
            # the scope still serves: a new registration at A reaches B ...
            resp = await client.register(POOL, sctp_pool_element(77, ADDR[0]))
            assert not resp.rejected
            await until(lambda: (POOL, 77) in regs[1].handlespace and in_sync(*regs), 5)
            # ... and B resolves over SCTP
            assert await resolve_all(regs[1], 1) == set(range(1, 21)) | {77}
            assert_enrp_over_sctp_only(regs[0])
        finally:
            if bad is not None:
                bad.channel.close()
            await client.close()
            await stop_all(regs)
    arun(body(), 60)
