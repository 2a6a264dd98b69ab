"""Pool user over loopback TCP against the real registrar
(rserpool.aio.registrar): resolution and its cache (counted at the
registrar), unreachable reports, registrar hunt and re-hunt, sessions with
cookie failover (against small in-test PEs speaking the session framing),
and the ``rserpool resolve`` command's text and JSON output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from functools import partial
from typing import Any

import pytest

from conftest import AsapClient
from rserpool.aio import transport as tr
from rserpool.aio.registrar import Registrar
from rserpool.aio.user import (FailoverCompleted, FailoverStarted, PoolUser,
                               SessionClosedError, SessionConnected, SessionFailedError)
from rserpool.config import RegistrarConfig
from rserpool.constants import PPID, ErrorCause, PolicyType as PT, TransportUse
from rserpool.errors import NoRegistrarError, OperationError
from rserpool.testing import aio as testing_aio
from rserpool.wire import (Cookie, CookieEcho, EndpointKeepAlive, EndpointKeepAliveAck,
                           PoolElement, PoolPolicy, Registration, RegistrationResponse,
                           TcpTransport, decode_message, encode_message)

POOL = b"EchoPool"
LOOP_TIMEOUT = 15.0


#: ``run(coro_fn)``: one test coroutine in a new event loop, within LOOP_TIMEOUT
#: (no pytest-asyncio here).
run = partial(testing_aio.run_with_timeout, timeout=LOOP_TIMEOUT)
#: ``await until(cond, what=...)``: an effect of another task (not a timing
#: assertion); AssertionError if it does not come within 10 s.
until = partial(testing_aio.until, timeout=10.0)


def registrar_config(**kw: Any) -> RegistrarConfig:
    base = dict(addresses=("127.0.0.1",), asap_port=0, transports=("tcp",), announce=False,
                enrp_port=0, presence_multicast=False, mentor_discovery_timeout=1.0,
                keep_alive_interval=0.5, keep_alive_timeout=2.0)
    base.update(kw)
    return RegistrarConfig(**base)


def addr(registrar: Registrar) -> str:
    host, port = registrar.address("tcp")
    return f"{host}:{port}"


class FakePE:
    """A minimal pool element: registers over TCP, answers keep-alives, and
    serves an echo session that counts messages and keeps the count in a
    Cookie (restored from a Cookie Echo)."""

    def __init__(self, identifier: int, policy: PoolPolicy | None = None,
                 pool: bytes = POOL) -> None:
        self.identifier = identifier
        self.policy = policy or PoolPolicy(PT.ROUND_ROBIN)
        self.pool = pool
        self.endpoint: Any = None
        self.links: list[Any] = []
        self.sessions: list[Any] = []
        self.echoes: list[bytes] = []
        self.cookie_echoes: list[bytes] = []

    async def start(self, *registrars: Registrar) -> "FakePE":
        self.endpoint = await tr.start_endpoint("tcp", ["127.0.0.1"], 0, framing="session",
                                                on_channel=self._on_session)
        for registrar in registrars:
            await self.register(registrar)
        return self

    async def register(self, registrar: Registrar) -> None:
        host, port = registrar.address("tcp")
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_message(ch: Any, data: bytes, ppid: int) -> None:
            msg = decode_message(data, "asap")
            if isinstance(msg, RegistrationResponse) and not answered.done():
                answered.set_result(msg)
            elif isinstance(msg, EndpointKeepAlive):
                ch.send(encode_message(EndpointKeepAliveAck(self.pool, self.identifier)))

        link = await tr.open_channel("tcp", host, port, framing="asap", on_message=on_message)
        self.links.append(link)
        pe = PoolElement(self.identifier, 0, 60000,
                         TcpTransport(self.endpoint.port, ["127.0.0.1"],
                                      TransportUse.DATA_PLUS_CONTROL), self.policy)
        link.send(encode_message(Registration(self.pool, pe)))
        response = await asyncio.wait_for(answered, 5)
        assert not response.rejected, response

    def _on_session(self, ch: Any) -> None:
        state = {"n": 0}
        self.sessions.append(ch)

        def on_message(ch: Any, data: bytes, ppid: int) -> None:
            if ppid == PPID.ASAP:
                msg = decode_message(data, "asap")
                if isinstance(msg, CookieEcho):
                    self.cookie_echoes.append(msg.cookie)
                    state["n"] = int(msg.cookie.decode().split("=")[1])
                return
            state["n"] += 1
            self.echoes.append(data)
            ch.send(b"%d:%s" % (state["n"], data), ppid=ppid)
            ch.send(encode_message(Cookie(b"n=%d" % state["n"])), ppid=PPID.ASAP)

        ch.on_message = on_message

    def crash(self) -> None:
        """Die at once: every session, the listener, the registrar links."""
        for ch in self.sessions + self.links:
            ch.abort("crash")
        self.endpoint.close()

    async def stop(self) -> None:
        for ch in self.sessions + self.links:
            if not ch.closed:
                ch.close()
        self.endpoint.close()
        await self.endpoint.wait_closed()


# ---------------------------------------------------------------------------
# resolution


def test_resolve_returns_the_registered_elements_with_their_policy():
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pes = [await FakePE(i, PoolPolicy(PT.LEAST_USED, [i * 1000])).start(reg)
                   for i in (0x11, 0x22, 0x33)]
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                got = await pu.resolve("EchoPool", items=2)
                assert [e.identifier for e in got] == [0x11, 0x22]   # least used first
                first = got[0]
                assert (first.transport, first.addresses, first.port) == (
                    "tcp", ("127.0.0.1",), pes[0].endpoint.port)
                assert (first.policy, first.load) == ("LEAST_USED", 0x11 * 1000)
                assert first.has_control_channel
                assert first.home_registrar == reg.registrar_id
                everyone = await pu.resolve(POOL)          # registrar default: 3
                assert sorted(e.identifier for e in everyone) == [0x11, 0x22, 0x33]
                assert pu.registrar is not None and pu.registrar.port == reg.address()[1]
            for p in pes:
                await p.stop()
    run(main)


def test_round_robin_order_through_the_network():
    """The registrar's RR pointer moves by one per resolution (digest 5.3)."""
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pes = [await FakePE(i).start(reg) for i in (1, 2, 3, 4)]
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                rounds = [[e.identifier for e in await pu.resolve(POOL, 3)] for _ in range(3)]
            assert rounds == [[1, 2, 3], [2, 3, 4], [3, 4, 1]]
            for p in pes:
                await p.stop()
    run(main)


ALL_POLICIES = [
    (PT.ROUND_ROBIN, ()), (PT.WEIGHTED_ROUND_ROBIN, (3,)), (PT.RANDOM, ()),
    (PT.WEIGHTED_RANDOM, (5,)), (PT.PRIORITY, (4,)), (PT.LEAST_USED, (100,)),
    (PT.LEAST_USED_DEGRADATION, (100, 7)), (PT.PRIORITY_LEAST_USED, (100, 7)),
    (PT.RANDOMIZED_LEAST_USED, (100,)), (PT.RANDOMIZED_PRIORITY_LEAST_USED, (100, 7)),
    (PT.RANDOMIZED_LEAST_USED_DEGRADATION, (100, 7)),
    (PT.PRIORITY_LEAST_USED_DEGRADATION, (100, 7)),
    (PT.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION, (100, 7)),
    (PT.WEIGHTED_RANDOM_DPF, (5, 3, 0)), (PT.LEAST_USED_DPF, (100, 3, 0)),
    (PT.LEAST_USED_DEGRADATION_DPF, (100, 7, 3, 0)),
]


@pytest.mark.parametrize("ptype,base", ALL_POLICIES, ids=[p.name for p, _ in ALL_POLICIES])
def test_every_policy_selects_through_the_network_as_the_handlespace_does(ptype, base):
    """Resolutions by a PU without cache give, for every policy, the order a
    handlespace with the registrar's seed gives for the same elements."""
    from rserpool.handlespace import Handlespace

    async def main() -> None:
        async with Registrar(registrar_config(), seed=99) as reg:
            pes = [await FakePE(i, PoolPolicy(ptype, [v + 5 * n for v in base])).start(reg)
                   for n, i in enumerate((0xA1, 0xA2, 0xA3, 0xA4))]
            reference = Handlespace(seed=99, max_bad_pe_reports=3)
            for entry in sorted(reg.handlespace.pool_elements(POOL), key=lambda e: e.seq):
                reference.register(POOL, entry.pool_element, 0.0)
            counts = (1, 3, 2, 4, 1, 2, 3)
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                got = [[e.identifier for e in await pu.resolve(POOL, n)] for n in counts]
            want = [[e.identifier for e in reference.select_entries(POOL, n)] for n in counts]
            assert got == want
            assert all(len(g) == min(n, 4) for g, n in zip(got, counts))
            for p in pes:
                await p.stop()
    run(main)


def test_unknown_pool_is_an_operation_error():
    async def main() -> None:
        async with Registrar(registrar_config()) as reg:
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                with pytest.raises(OperationError) as exc:
                    await pu.resolve("NoSuchPool")
                assert exc.value.cause == ErrorCause.UNKNOWN_POOL_HANDLE
    run(main)


def test_no_registrar():
    async def main() -> None:
        # a port nobody listens on (bound, then closed)
        ep = await tr.start_endpoint("tcp", ["127.0.0.1"], 0, on_channel=lambda ch: None)
        port = ep.port
        ep.close()
        await ep.wait_closed()
        async with PoolUser(registrars=[f"127.0.0.1:{port}"], discovery=False) as pu:
            with pytest.raises(NoRegistrarError):
                await pu.resolve(POOL)
        async with PoolUser(registrars=[], discovery=False) as pu:
            with pytest.raises(NoRegistrarError, match="no registrar configured"):
                await pu.resolve(POOL)
    run(main)


def test_cache_within_its_lifetime_sends_no_request():
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pes = [await FakePE(i).start(reg) for i in (1, 2, 3)]
            resolutions = lambda: reg.statistics()["resolutions"]  # noqa: E731
            async with PoolUser(registrars=[addr(reg)], discovery=False,
                                cache_lifetime=60) as pu:
                first = await pu.resolve(POOL, 1)
                assert resolutions() == 1
                later = [(await pu.resolve(POOL, 1))[0].identifier for _ in range(5)]
                assert resolutions() == 1 and pu.requests_sent == 1
                # the cache learnt the registrar's default count (3) and goes round robin
                assert [first[0].identifier] + later == [1, 2, 3, 1, 2, 3]
            async with PoolUser(registrars=[addr(reg)], discovery=False,
                                cache_lifetime=0) as pu:
                await pu.resolve(POOL, 1)
                await pu.resolve(POOL, 1)
                assert resolutions() == 3 and pu.requests_sent == 2
            for p in pes:
                await p.stop()
    run(main)


def test_unreachable_reports_reach_the_registrar():
    async def main() -> None:
        async with Registrar(registrar_config(max_bad_pe_reports=2), seed=1) as reg:
            pes = [await FakePE(i).start(reg) for i in (1, 2)]
            users = [PoolUser(registrars=[addr(reg)], discovery=False, cache_lifetime=60)
                     for _ in range(2)]
            for pu in users:
                await pu.start()
                await pu.resolve(POOL)
            await users[0].report_unreachable(POOL, 1)
            assert (POOL, 1) not in users[0].cache          # forgotten locally at once
            await until(lambda: reg.statistics()["unreachable_reports"] == 1)
            assert (POOL, 1) in reg.handlespace                # one reporter: still there
            # a second PU on the same host is the same reporter (the registrar
            # counts reporters by address): it adds nothing
            await users[1].report_unreachable(POOL, 1)
            await until(lambda: reg.statistics()["unreachable_ignored"] == 1)
            assert (POOL, 1) in reg.handlespace
            # a PU on another host (address) is the second reporter
            other = await AsapClient.connect(*reg.address("tcp"), local_address="127.0.0.2")
            other.unreachable(POOL, 1)
            await until(lambda: (POOL, 1) not in reg.handlespace, what="PE 1 removed")
            assert reg.statistics()["unreachable_reports"] == 2
            assert (POOL, 2) in reg.handlespace
            await other.close()
            for pu in users:
                await pu.close()
            for p in pes:
                await p.stop()
    run(main)


def test_rehunt_after_the_registrar_is_lost():
    async def main() -> None:
        async with Registrar(registrar_config()) as r1, Registrar(registrar_config()) as r2:
            pe = await FakePE(7).start(r1, r2)
            async with PoolUser(registrars=[addr(r1), addr(r2)], discovery=False) as pu:
                assert [e.identifier for e in await pu.resolve(POOL)] == [7]
                used = r1 if pu.registrar.port == r1.address()[1] else r2
                other = r2 if used is r1 else r1
                await used.stop()
                await until(lambda: pu.registrar is not None
                            and pu.registrar.port == other.address()[1],
                            what="background re-hunt")
                assert [e.identifier for e in await pu.resolve(POOL)] == [7]
                await other.stop()
                with pytest.raises(NoRegistrarError):
                    await pu.resolve(POOL)
            await pe.stop()
    run(main)


def test_discovery_on_loopback_follows_a_new_registrar():
    """No registrar configured: the PU learns registrars from their Server
    Announces (a private group on loopback), and after losing the first one
    it follows the second."""
    import random

    group = f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    port = random.randrange(20000, 60000)
    announcing = dict(announce=True, announce_group=group, announce_port=port,
                      announce_interval=0.1)

    async def main() -> None:
        async with Registrar(registrar_config(**announcing)) as r1:
            pe = await FakePE(9).start(r1)
            async with PoolUser(discovery=True, announce_group=group, announce_port=port,
                                announce_interface="127.0.0.1", announce_timeout=1.0,
                                hunt_timeout=10.0) as pu:
                assert [e.identifier for e in await pu.resolve(POOL)] == [9]
                assert pu.registrar.server_id == r1.registrar_id
                await r1.stop()
                async with Registrar(registrar_config(**announcing)) as r2:
                    await pe.register(r2)
                    await until(lambda: pu.registrar is not None
                                and pu.registrar.server_id == r2.registrar_id,
                                what="the PU follows the second registrar")
                    assert [e.identifier for e in await pu.resolve(POOL)] == [9]
            await pe.stop()
    run(main)


# ---------------------------------------------------------------------------
# sessions against in-test PEs


def test_session_echo_cookie_and_failover_keep_the_state():
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pes = {i: await FakePE(i).start(reg) for i in (1, 2, 3)}
            events: list[Any] = []
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                session = await pu.connect_session(POOL, on_event=events.append)
                first = session.element.identifier
                assert isinstance(events[0], SessionConnected)
                for word in (b"a", b"b", b"c"):
                    session.send(word)
                    assert (await session.recv()).endswith(b":" + word)
                await until(lambda: session.cookie == b"n=3", what="cookie n=3")
                pes[first].crash()
                await until(lambda: session.failovers == 1, what="failover")
                started = [e for e in events if isinstance(e, FailoverStarted)]
                done = [e for e in events if isinstance(e, FailoverCompleted)]
                assert started[0].element.identifier == first
                assert done[0].cookie_echoed and done[0].element.identifier != first
                new = pes[done[0].element.identifier]
                # sent with the failover; the PE has it once it has read it
                await until(lambda: new.cookie_echoes == [b"n=3"],
                            what="the new PE got the cookie")
                session.send(b"d")
                assert await session.recv() == b"4:d"      # the count went on
                assert pu.unreachable_sent >= 1
                # the crash also dropped its registration, so the registrar may
                # count the report as one about an unknown PE
                await until(lambda: reg.statistics()["unreachable_reports"]
                            + reg.statistics()["unreachable_ignored"] >= 1)
                await session.close()
                with pytest.raises(SessionClosedError):
                    session.send(b"late")
                with pytest.raises(SessionClosedError):
                    await session.recv()
            for i, p in pes.items():
                if i != first:
                    await p.stop()
    run(main)


def test_application_failover_and_data_sent_meanwhile():
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pes = {i: await FakePE(i).start(reg) for i in (1, 2)}
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                session = await pu.connect_session(POOL)
                first = session.element.identifier
                session.send(b"x")
                assert await session.recv() == b"1:x"
                await until(lambda: session.cookie == b"n=1")
                session.failover(report=False)
                session.send(b"y")                         # queued until the next PE
                assert await session.recv() == b"2:y"
                assert session.element.identifier != first
                assert reg.statistics()["unreachable_reports"] == 0
                await session.close()
            for p in pes.values():
                await p.stop()
    run(main)


def test_session_fails_when_no_element_is_left():
    async def main() -> None:
        async with Registrar(registrar_config()) as reg:
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                with pytest.raises(SessionFailedError, match="unknown|UNKNOWN"):
                    await pu.connect_session(POOL, max_retries=2, retry_delay=0.05)
    run(main)


def test_real_pool_elements_pingpong_count_survives_a_failover():
    """rserpool.aio.element.PoolElement with the ping-pong service: the pong
    count continues on the next PE (its cookie went there)."""
    from rserpool.aio.element import PoolElement
    from rserpool.services.pingpong import PingPongService, make_ping, parse_pong

    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            elements = [PoolElement(POOL, policy="round_robin", registrars=[addr(reg)],
                                    discovery=False, transport="tcp",
                                    addresses=["127.0.0.1"], identifier=i,
                                    service=PingPongService) for i in (0x101, 0x102)]
            for e in elements:
                await e.start()
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                session = await pu.connect_session(POOL)
                counts = []
                for seq in (1, 2, 3):
                    session.send(make_ping(seq, b"x"))
                    pong = parse_pong(await session.recv())
                    assert pong is not None and pong[0] == seq and pong[2] == b"x"
                    counts.append(pong[1])
                assert counts == [1, 2, 3]
                await until(lambda: session.cookie == b"pingpong 1 3")
                used = next(e for e in elements if e.identifier == session.element.identifier)
                await used.stop()                     # closes its sessions, deregisters
                await until(lambda: session.failovers == 1, what="failover")
                session.send(make_ping(4))
                pong = parse_pong(await session.recv())
                assert pong is not None and pong[:2] == (4, 4)
                assert session.failovers == 1 and session.element.identifier != used.identifier
                await session.close()
            for e in elements:
                await e.stop()
    run(main)


@pytest.mark.parametrize("how", ["close", "cancel", "core-closed"])
def test_a_session_closed_while_connecting_leaves_no_channel_open(how, monkeypatch):
    """The session's channel comes up only after the session was closed (or
    connect_session cancelled): it is aborted, and the PE sees it close."""
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            fake = await FakePE(1).start(reg)
            real_open = tr.open_channel
            opened = asyncio.Event()
            release = asyncio.Event()

            async def slow_open(transport: str, host: str, port: int, **kw: Any) -> Any:
                ch = await real_open(transport, host, port, **kw)
                if kw.get("framing") != "session":
                    return ch                  # the registrar link
                opened.set()
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    # as asyncio.wait_for before 3.12 does when the cancel and
                    # the connection coincide: the channel is up, return it
                    pass
                return ch

            monkeypatch.setattr(tr, "open_channel", slow_open)
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                connecting = asyncio.ensure_future(pu.connect_session(POOL))
                await asyncio.wait_for(opened.wait(), 5)
                await until(lambda: len(fake.sessions) == 1, what="the PE's channel")
                [session] = pu._sessions
                if how == "close":
                    await session.close()
                    with pytest.raises(SessionFailedError):
                        await connecting
                elif how == "cancel":                 # the application gave up
                    connecting.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await connecting
                else:
                    # closed without the connect task being cancelled: the
                    # channel still arrives, to a session that is gone
                    session._core.close(asyncio.get_running_loop().time())
                    release.set()
                    await until(lambda: session._task.done(), what="the connect task")
                    assert session._task.exception() is None
                await until(lambda: fake.sessions[0].closed, what="the PE sees the close")
                assert session.closed and session.channel is None
            await fake.stop()
    run(main)


def test_background_task_failures_are_logged(caplog):
    async def main() -> None:
        async def boom() -> None:
            raise RuntimeError("boom in the background")

        async with Registrar(registrar_config(), seed=1) as reg:
            fake = await FakePE(1).start(reg)
            async with PoolUser(registrars=[addr(reg)], discovery=False) as pu:
                session = await pu.connect_session(POOL)
                with caplog.at_level(logging.ERROR, logger="rserpool.pu"):
                    session._start_task(boom())
                    await until(lambda: "boom in the background" in caplog.text)
                    caplog.clear()
                    pu._spawn(boom())
                    await until(lambda: "boom in the background" in caplog.text)
                await session.close()
            await fake.stop()
    run(main)


# ---------------------------------------------------------------------------
# rserpool resolve


async def _cli(*args: str) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONWARNINGS="error")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rserpool", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


def test_resolve_command_text_and_json():
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pes = [await FakePE(i, PoolPolicy(PT.WEIGHTED_RANDOM, [i])).start(reg)
                   for i in (0x51, 0x52)]
            code, out, err = await _cli("resolve", "EchoPool", "--registrar", addr(reg),
                                        "--no-discovery", "--items", "2")
            assert code == 0, err
            lines = out.splitlines()
            assert len(lines) == 2
            assert sorted(line.split()[0] for line in lines) == ["0x00000051", "0x00000052"]
            for line in lines:
                ident = int(line.split()[0], 16)
                port = next(p.endpoint.port for p in pes if p.identifier == ident)
                assert f"tcp  127.0.0.1:{port}  WEIGHTED_RANDOM  weight={ident}" in line
            code, out, err = await _cli("resolve", "EchoPool", "--registrar", addr(reg),
                                        "--no-discovery", "--json", "--items", "1")
            assert code == 0, err
            doc = json.loads(out)
            assert doc["pool_handle"] == "EchoPool"
            assert doc["registrar"]["port"] == reg.address()[1]
            [element] = doc["elements"]
            assert element["identifier"] in (0x51, 0x52)
            assert element["policy"] == "WEIGHTED_RANDOM"
            assert element["policy_values"] == {"weight": element["identifier"]}
            assert element["addresses"] == ["127.0.0.1"] and element["transport"] == "tcp"
            code, out, err = await _cli("resolve", "Nope", "--registrar", addr(reg),
                                        "--no-discovery")
            assert code == 1 and "unknown pool handle 'Nope'" in err and out == ""
            for p in pes:
                await p.stop()
        code, out, err = await _cli("resolve", "EchoPool", "--registrar", addr(reg),
                                    "--no-discovery")
        assert code == 1 and "no registrar reachable" in err
    run(main)


# ---------------------------------------------------------------------------
# rserpool pu


async def _pu_cli(reg: Registrar, stdin: bytes, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rserpool", "pu", "--pool", "EchoPool", "--registrar", addr(reg),
        "--no-discovery", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONWARNINGS="error"))
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    return proc.returncode, out.decode(), err.decode()


def test_pu_command_with_piped_input():
    async def main() -> None:
        async with Registrar(registrar_config(), seed=1) as reg:
            pe = await FakePE(0x77).start(reg)
            code, out, err = await _pu_cli(reg, b"hello\nworld\n")
            assert code == 0, err
            assert out == "1:hello\n2:world\n"
            assert "connected to PE 0x00000077" in err
            await pe.stop()
            code, out, err = await _pu_cli(reg, b"x\n", "--retries", "1")
            assert code == 1 and "cannot reach pool 'EchoPool'" in err
    run(main)
