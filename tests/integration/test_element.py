"""Pool elements (rserpool.aio.element) against the real registrar over
loopback TCP: registration, keep-alives, re-registration on load change,
deregistration, the H bit (only from known registrars), limits on inbound
ASAP links, registrar hunt, and the demo services with their cookies."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Callable

import pytest
from conftest import AsapClient, make_registrar, pool_element

from rserpool.aio.element import PoolElement, SessionHandler
from rserpool.aio.transport import open_channel
from rserpool.constants import PPID, ErrorCause, PolicyType, TransportUse
from rserpool.errors import NoRegistrarError, OperationError
from rserpool.protocol.asap_element import (Deregistered, HomeClaimRefused,
                                            HomeRegistrarChanged, KeepAliveAnswered,
                                            Registered, RegistrarLost, load_from_fraction)
from rserpool.services.chargen import ChargenService, chargen_line
from rserpool.services.daytime import DaytimeService
from rserpool.services.discard import DiscardService
from rserpool.services.echo import EchoService
from rserpool.services.pingpong import PingPongService, make_ping, parse_pong
from rserpool.testing.aio import until
from rserpool.wire import (Cookie, CookieEcho, EndpointKeepAlive, EndpointKeepAliveAck,
                           HandleResolutionResponse, Registration, RegistrationResponse,
                           ServerAnnounce, TcpTransport, decode_message, encode_message)

HANDLE = b"EchoPool"
#: Loopback aliases (all of 127/8 is local on Linux): a second registrar that
#: takes a PE over, and a stranger that is no registrar of the PE's.
TAKEOVER = "127.0.0.2"
STRANGER = "127.0.0.3"


class Events:
    """Records a PE's events; ``await wait(pred)`` for one that matches."""

    def __init__(self, pe: PoolElement) -> None:
        self.seen: list[Any] = []
        self._changed = asyncio.Event()
        pe.add_listener(self._add)

    def _add(self, ev: Any) -> None:
        self.seen.append(ev)
        self._changed.set()

    def count(self, pred: Callable[[Any], bool]) -> int:
        return sum(1 for ev in self.seen if pred(ev))

    async def wait(self, pred: Callable[[Any], bool], n: int = 1, timeout: float = 10.0) -> Any:
        async def waiter() -> Any:
            while True:
                matches = [ev for ev in self.seen if pred(ev)]
                if len(matches) >= n:
                    return matches[n - 1]
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(waiter(), timeout)


def make_pe(registrar: Any, **kw: Any) -> PoolElement:
    host, port = registrar.address("tcp")
    kw.setdefault("registrars", [f"{host}:{port}"])
    kw.setdefault("discovery", False)
    kw.setdefault("transport", "tcp")
    kw.setdefault("addresses", ["127.0.0.1"])
    kw.setdefault("service", EchoService)
    return PoolElement(kw.pop("pool_handle", HANDLE), **kw)


async def resolve(registrar: Any, handle: bytes = HANDLE) -> HandleResolutionResponse:
    client = await AsapClient.connect(*registrar.address("tcp"))
    try:
        resp = await client.resolve(handle, items=0xFFFFFFFF)
    finally:
        await client.close()
    assert isinstance(resp, HandleResolutionResponse)
    return resp


class SessionClient:
    """A PU's session channel to a PE, without the PU library."""

    def __init__(self) -> None:
        self.data: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.cookies: list[bytes] = []
        self.cookie_seen = asyncio.Event()
        self.channel: Any = None

    @classmethod
    async def connect(cls, pe: PoolElement) -> "SessionClient":
        self = cls()
        host, port = pe.user_addresses[0]
        self.channel = await open_channel(pe.transport, host, port, framing="session",
                                          on_message=self._on_message)
        return self

    def _on_message(self, ch: Any, data: bytes, ppid: int) -> None:
        if ppid == PPID.ASAP:
            msg = decode_message(data, "asap")
            assert isinstance(msg, Cookie)
            self.cookies.append(msg.cookie)
            self.cookie_seen.set()
        else:
            self.data.put_nowait((ppid, data))

    def send(self, data: bytes, ppid: int = 0) -> None:
        self.channel.send(data, ppid=ppid)

    def cookie_echo(self, cookie: bytes) -> None:
        self.channel.send(encode_message(CookieEcho(cookie)), ppid=PPID.ASAP)

    async def recv(self, timeout: float = 5.0) -> tuple[int, bytes]:
        return await asyncio.wait_for(self.data.get(), timeout)

    async def wait_cookie(self, pred: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
        async def waiter() -> bytes:
            while True:
                for c in reversed(self.cookies):
                    if pred(c):
                        return c
                self.cookie_seen.clear()
                await self.cookie_seen.wait()
        return await asyncio.wait_for(waiter(), timeout)

    def close(self) -> None:
        self.channel.close()


# --------------------------------------------------------------- registration

def test_register_keep_alives_reregistration_and_deregistration(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, policy="round_robin", registration_interval=1.0,
                     identifier=0x0E0E0E01)
        events = Events(pe)
        await pe.start()
        assert pe.registered and pe.identifier == 0x0E0E0E01
        home = pe.home_registrar
        assert (home.transport, home.host, home.port) == ("tcp",) + registrar.address("tcp")
        # keep-alives (1 s interval) over several intervals, and re-registrations
        await events.wait(lambda e: isinstance(e, KeepAliveAnswered), n=3)
        await events.wait(lambda e: isinstance(e, Registered) and e.reregistration, n=2)
        assert pe.home_registrar.server_id == registrar.registrar_id
        assert not any(isinstance(e, RegistrarLost) for e in events.seen)
        resp = await resolve(registrar)
        [entry] = resp.pool_elements
        assert entry.identifier == pe.identifier
        assert entry.user_transport.port == pe.user_addresses[0][1]
        assert entry.user_transport.transport_use == TransportUse.DATA_PLUS_CONTROL
        assert entry.registration_life == 3000
        await pe.stop()
        assert events.seen[-1] == Deregistered(pe.identifier, True)
        assert not pe.registered
        resp = await resolve(registrar)
        assert resp.pool_elements == () and resp.error is not None
        assert resp.error[0].code == ErrorCause.UNKNOWN_POOL_HANDLE
        await pe.stop()  # idempotent
    arun(main())


def test_load_change_reregisters_and_the_registrar_sees_it(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, policy="least_used", load=0.1)
        events = Events(pe)
        await pe.start()
        [entry] = (await resolve(registrar)).pool_elements
        assert entry.policy.policy_type == PolicyType.LEAST_USED
        assert entry.policy.load == load_from_fraction(0.1)
        assert pe.update_load(0.6) is True
        await events.wait(lambda e: isinstance(e, Registered) and e.reregistration)
        [entry] = (await resolve(registrar)).pool_elements
        assert entry.policy.load == load_from_fraction(0.6)
        assert pe.update_load(0.6) is False  # no change, no re-registration
        pe.update_policy(load=0.25)
        await events.wait(lambda e: isinstance(e, Registered) and e.reregistration, n=2)
        [entry] = (await resolve(registrar)).pool_elements
        assert entry.policy.load == load_from_fraction(0.25)
        await pe.stop()
    arun(main())


def test_refused_registration_raises_operation_error(registrar, arun):
    async def main() -> None:
        other = await AsapClient.connect(*registrar.address("tcp"), auto_ack=True)
        resp = await other.register(HANDLE, pool_element(77, policy=PolicyType.ROUND_ROBIN))
        assert isinstance(resp, RegistrationResponse) and not resp.rejected
        pe = make_pe(registrar, policy="least_used", load=0.5)
        with pytest.raises(OperationError) as info:
            await pe.start()
        assert info.value.cause == ErrorCause.POOLING_POLICY_INCONSISTENT
        assert pe.state == "closed"
        await other.close()
    arun(main())


def test_no_registrar_gives_no_registrar_error(arun):
    async def main() -> None:
        # a port nothing listens on: bind one, note it, close it
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pe = PoolElement(HANDLE, registrars=[f"127.0.0.1:{port}"], discovery=False,
                         transport="tcp", addresses=["127.0.0.1"])
        with pytest.raises(NoRegistrarError):
            await pe.start(timeout=1.0)
        assert pe.state == "closed"
    arun(main())


def test_registrar_loss_makes_the_pe_hunt_for_the_next_one(registrar_factory, arun):
    first, second = registrar_factory(), registrar_factory()

    async def main() -> None:
        addrs = [f"{h}:{p}" for h, p in (first.address("tcp"), second.address("tcp"))]
        pe = make_pe(first, registrars=addrs, registration_interval=30.0)
        events = Events(pe)
        await pe.start()
        assert pe.home_registrar.port == first.address("tcp")[1]
        await first.stop()
        await events.wait(lambda e: isinstance(e, RegistrarLost))
        await events.wait(lambda e: isinstance(e, Registered), n=2)
        assert pe.home_registrar.port == second.address("tcp")[1]
        [entry] = (await resolve(second)).pool_elements
        assert entry.identifier == pe.identifier
        await pe.stop()
        assert events.seen[-1] == Deregistered(pe.identifier, True)
    arun(main())


def test_a_silent_registrar_times_out_and_the_next_one_is_used(registrar, arun):
    async def main() -> None:
        got: list[bytes] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read(65536))  # a Registration, never answered
            await reader.read()  # until the PE gives up and closes
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        mute = server.sockets[0].getsockname()[1]
        host, port = registrar.address("tcp")
        pe = make_pe(registrar, registrars=[f"127.0.0.1:{mute}", f"{host}:{port}"],
                     request_timeout=0.5)
        events = Events(pe)
        try:
            await pe.start()
            lost = next(e for e in events.seen if isinstance(e, RegistrarLost))
            assert "0.5 s" in lost.reason
            assert isinstance(decode_message(got[0], "asap"), Registration)
            assert pe.home_registrar.port == port
            [entry] = (await resolve(registrar)).pool_elements
            assert entry.identifier == pe.identifier
            await pe.stop()
        finally:
            server.close()
            await server.wait_closed()
    arun(main())


def with_takeover(registrar: Any) -> list[str]:
    """The registrar plus a second one at TAKEOVER (nothing listens there: it
    only reaches the PE, from TAKEOVER)."""
    host, port = registrar.address("tcp")
    return [f"{host}:{port}", f"{TAKEOVER}:{port}"]


def test_h_bit_from_another_registrar_moves_the_home(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, registration_interval=1.0, registrars=with_takeover(registrar))
        events = Events(pe)
        await pe.start()
        first = pe.home_registrar
        # a second registrar of the PE's (taking over) reaches its ASAP listener
        fake = await AsapClient.connect(*pe.asap_addresses[0], local_address=TAKEOVER)
        fake.send(EndpointKeepAlive(0xBEEF0001, HANDLE, pe.identifier, home=True))
        ack = await fake.recv()
        assert ack == EndpointKeepAliveAck(HANDLE, pe.identifier)
        changed = await events.wait(lambda e: isinstance(e, HomeRegistrarChanged))
        assert changed == HomeRegistrarChanged(0xBEEF0001, first.server_id)
        home = pe.home_registrar
        assert home.server_id == 0xBEEF0001 and home.port == fake.local[1]
        # the next re-registration goes to the new home, naming it
        msg = await fake.recv(timeout=5.0)
        assert isinstance(msg, Registration) and msg.pool_element.identifier == pe.identifier
        assert msg.pool_element.home_registrar == 0xBEEF0001
        fake.send(RegistrationResponse(HANDLE, pe.identifier))
        await events.wait(lambda e: isinstance(e, Registered) and e.home_registrar == 0xBEEF0001)
        assert pe.registered
        # a keep-alive without H on the new home is answered as well
        fake.send(EndpointKeepAlive(0xBEEF0001, HANDLE, None))
        assert await fake.recv() == EndpointKeepAliveAck(HANDLE, pe.identifier)
        stop = asyncio.ensure_future(pe.stop())
        dereg = await fake.recv()
        assert dereg.identifier == pe.identifier and type(dereg).__name__ == "Deregistration"
        from rserpool.wire import DeregistrationResponse
        fake.send(DeregistrationResponse(HANDLE, pe.identifier))
        await stop
        assert events.seen[-1] == Deregistered(pe.identifier, True)
        await fake.close()
    arun(main())


def test_garbage_from_the_registrar_link_makes_the_pe_hunt(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, registrars=with_takeover(registrar))
        events = Events(pe)
        await pe.start()
        fake = await AsapClient.connect(*pe.asap_addresses[0], local_address=TAKEOVER)
        fake.send(EndpointKeepAlive(0x77, HANDLE, pe.identifier, home=True))
        await events.wait(lambda e: isinstance(e, HomeRegistrarChanged))
        fake.send(b"\x07\x01\x00\x05garbage")  # bad length
        await events.wait(lambda e: isinstance(e, RegistrarLost))
        await fake.wait_closed()
        await fake.close()
        # back at the real registrar
        await events.wait(lambda e: isinstance(e, Registered), n=2)
        assert pe.home_registrar.port == registrar.address("tcp")[1]
        await pe.stop()
    arun(main())


def test_h_bit_from_a_stranger_is_refused_and_the_pe_stays_registered(registrar, arun,
                                                                     caplog):
    async def main() -> None:
        pe = make_pe(registrar, registration_interval=1.0)
        events = Events(pe)
        await pe.start()
        first = pe.home_registrar
        assert (HANDLE, pe.identifier) in registrar.handlespace
        # anyone who reaches the ASAP port claims the PE with the H bit
        evil = await AsapClient.connect(*pe.asap_addresses[0], local_address=STRANGER)
        evil.send(EndpointKeepAlive(0x6666, HANDLE, pe.identifier, home=True))
        refused = await events.wait(lambda e: isinstance(e, HomeClaimRefused))
        assert refused.server_id == 0x6666 and refused.link.peer[0] == STRANGER
        with pytest.raises(ConnectionError):  # no ack: the PE closed that link
            await evil.recv(timeout=5.0)
        assert not any(isinstance(e, (HomeRegistrarChanged, RegistrarLost))
                       for e in events.seen)
        assert pe.home_registrar == first and pe.registered
        # the registrar keeps the PE (its link was not closed) across
        # keep-alives and re-registrations
        await events.wait(lambda e: isinstance(e, Registered) and e.reregistration, n=2)
        assert (HANDLE, pe.identifier) in registrar.handlespace
        [entry] = (await resolve(registrar)).pool_elements
        assert entry.identifier == pe.identifier
        # the same from an address that is only a port away from the registrar's
        # host is still no registrar: a second claim, also refused
        evil2 = await AsapClient.connect(*pe.asap_addresses[0], local_address=STRANGER)
        evil2.send(EndpointKeepAlive(0x6667, HANDLE, None, home=True))
        await events.wait(lambda e: isinstance(e, HomeClaimRefused), n=2)
        with pytest.raises(ConnectionError):
            await evil2.recv(timeout=5.0)
        assert (HANDLE, pe.identifier) in registrar.handlespace
        await evil.close()
        await evil2.close()
        await pe.stop()
        assert events.seen[-1] == Deregistered(pe.identifier, True)

    with caplog.at_level(logging.WARNING, logger="rserpool.pe"):
        arun(main())
    warnings = [r for r in caplog.records if "refused a home claim" in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and STRANGER in warnings[0].getMessage()  # rate-limited


def test_h_bit_from_a_registrar_learned_from_an_announce_is_accepted(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar)
        events = Events(pe)
        await pe.start()
        # a Server Announce of a second registrar at TAKEOVER (fed as the
        # multicast listener would)
        announce = ServerAnnounce(0xBEEF0003, [TcpTransport(3863, [TAKEOVER])])
        pe._on_announce(encode_message(announce), (TAKEOVER, 3863))
        fake = await AsapClient.connect(*pe.asap_addresses[0], local_address=TAKEOVER)
        fake.send(EndpointKeepAlive(0xBEEF0003, HANDLE, pe.identifier, home=True))
        assert await fake.recv() == EndpointKeepAliveAck(HANDLE, pe.identifier)
        await events.wait(lambda e: isinstance(e, HomeRegistrarChanged))
        assert pe.home_registrar.server_id == 0xBEEF0003
        await fake.close()
        await events.wait(lambda e: isinstance(e, Registered), n=2)  # back at the real one
        await pe.stop()
    arun(main())


def test_accept_any_home_follows_a_stranger_like_rsplib(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, accept_any_home=True)
        events = Events(pe)
        await pe.start()
        other = await AsapClient.connect(*pe.asap_addresses[0], local_address=STRANGER)
        other.send(EndpointKeepAlive(0x6666, HANDLE, pe.identifier, home=True))
        assert await other.recv() == EndpointKeepAliveAck(HANDLE, pe.identifier)
        await events.wait(lambda e: isinstance(e, HomeRegistrarChanged))
        assert pe.home_registrar.host == STRANGER
        # the real registrar lost the PE with its link
        await until(lambda: (HANDLE, pe.identifier) not in registrar.handlespace, 5.0)
        await other.close()
        await events.wait(lambda e: isinstance(e, Registered), n=2)
        await pe.stop()
    arun(main())


async def _served(pe: PoolElement, local: str = "127.0.0.1") -> AsapClient | None:
    """An inbound ASAP link to ``pe`` that the PE serves (a keep-alive without
    the H bit is acknowledged), or None if the PE closed it."""
    client = await AsapClient.connect(*pe.asap_addresses[0], local_address=local)
    client.send(EndpointKeepAlive(0x51, HANDLE, pe.identifier))
    try:
        ack = await client.recv(timeout=5.0)
    except ConnectionError:
        await client.close()
        return None
    assert ack == EndpointKeepAliveAck(HANDLE, pe.identifier)
    return client


def test_inbound_asap_links_are_capped(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, max_inbound_links=3)
        await pe.start()
        kept = [await _served(pe, STRANGER) for _ in range(3)]
        assert all(c is not None for c in kept)
        assert await _served(pe, STRANGER) is None        # the fourth is closed at once
        assert await _served(pe, TAKEOVER) is None        # whoever it is
        await kept[0].close()                             # a slot frees up
        for _ in range(100):
            again = await _served(pe, STRANGER)
            if again is not None:
                break
            await asyncio.sleep(0.02)
        assert again is not None
        assert all(not c.closed.is_set() for c in kept[1:])
        # the home link is not an inbound link: the PE is still registered
        assert pe.registered and (HANDLE, pe.identifier) in registrar.handlespace
        for c in kept[1:] + [again]:
            await c.close()
        await pe.stop()
    arun(main())


def test_default_inbound_cap_is_16(registrar):
    pe = make_pe(registrar)
    assert pe.max_inbound_links == 16 and pe.inbound_idle_timeout == 30.0
    assert make_pe(registrar, request_timeout=0.5).inbound_idle_timeout == 5.0


def test_silent_inbound_links_are_closed_but_the_home_link_is_not(registrar, arun):
    async def main() -> None:
        pe = make_pe(registrar, inbound_idle_timeout=1.0, registration_interval=30.0,
                     registrars=with_takeover(registrar))
        events = Events(pe)
        await pe.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        silent = await AsapClient.connect(*pe.asap_addresses[0], local_address=STRANGER)
        chatty = await AsapClient.connect(*pe.asap_addresses[0], local_address=STRANGER)
        # a link that keeps talking (every 0.1 s) stays; the silent one goes
        while loop.time() - t0 < 2.5:
            last_sent = loop.time()
            chatty.send(EndpointKeepAlive(0x51, HANDLE, pe.identifier))
            assert await chatty.recv() == EndpointKeepAliveAck(HANDLE, pe.identifier)
            await asyncio.sleep(0.1)
        assert silent.closed.is_set() and not chatty.closed.is_set()
        with pytest.raises(ConnectionError):
            await silent.recv(timeout=0.1)
        await asyncio.wait_for(chatty.closed.wait(), 5.0)  # once it falls silent
        # not before the idle timeout (1 s) counted from its last message
        # (the PE received it after last_sent; 0.05 s for float rounding)
        assert loop.time() - last_sent >= 0.95
        await silent.close()
        await chatty.close()
        # a takeover's inbound link becomes the home link: never idle-closed
        fake = await AsapClient.connect(*pe.asap_addresses[0], local_address=TAKEOVER)
        fake.send(EndpointKeepAlive(0xBEEF0004, HANDLE, pe.identifier, home=True))
        assert await fake.recv() == EndpointKeepAliveAck(HANDLE, pe.identifier)
        await events.wait(lambda e: isinstance(e, HomeRegistrarChanged))
        await asyncio.sleep(2.5)  # > the idle timeout
        assert not fake.closed.is_set() and pe.home_registrar.server_id == 0xBEEF0004
        await fake.close()
        await events.wait(lambda e: isinstance(e, Registered), n=2)
        await pe.stop()
    arun(main())


@pytest.mark.skipif(not hasattr(asyncio.Task, "cancelling"),
                    reason="Python 3.10 cannot tell a swallowed cancellation")
def test_a_cancelled_hunt_ends_even_when_the_connect_swallows_the_cancel(arun):
    """Before Python 3.12, asyncio.wait_for (inside the connect) raises the
    connect's error instead of CancelledError when both coincide; the hunt
    must end anyway (it used to retry forever: a loop torn down without
    stop() never finished)."""
    async def main() -> None:
        pe = PoolElement(HANDLE, registrars=["127.0.0.1:9"], discovery=False,
                         transport="tcp", addresses=["127.0.0.1"])
        await pe.start(wait=False)
        connecting = asyncio.Event()

        async def connect(*args: Any, **kw: Any) -> Any:
            connecting.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise ConnectionRefusedError("refused, as the cancel came") from None

        pe.asap_endpoint.connect = connect  # type: ignore[method-assign]
        hunt = pe._hunt_task
        hunt.cancel()  # the first attempt may be under way: let it fail, then retry
        await asyncio.gather(hunt, return_exceptions=True)
        pe._pump()     # a new hunt, through the fake connect
        hunt = pe._hunt_task
        await asyncio.wait_for(connecting.wait(), 5.0)
        hunt.cancel()
        done, _ = await asyncio.wait([hunt], timeout=2.0)
        assert done and hunt.cancelled()
        await pe.stop()
    arun(main())


def test_discovery_by_announces_and_following_a_new_registrar(registrar_factory, arun):
    import random

    rnd = random.Random()
    group = f"239.255.{rnd.randint(1, 254)}.{rnd.randint(1, 254)}"
    port = rnd.randint(20000, 60000)
    announce = dict(announce=True, announce_group=group, announce_port=port,
                    announce_interval=0.2)
    first = registrar_factory(**announce)

    async def main() -> None:
        second = make_registrar(**announce)
        pe = PoolElement(b"FoundPool", discovery=True, announce_group=group,
                         announce_port=port, announce_interface="127.0.0.1",
                         transport="tcp", addresses=["127.0.0.1"], service=EchoService)
        events = Events(pe)
        await pe.start(timeout=10.0)  # no registrar address given
        assert pe.home_registrar.server_id in (0, first.registrar_id)
        assert pe.home_registrar.port == first.address("tcp")[1]
        [entry] = (await resolve(first, b"FoundPool")).pool_elements
        assert entry.identifier == pe.identifier
        await first.stop()
        await events.wait(lambda e: isinstance(e, RegistrarLost))
        await second.start()  # appears later, announcing
        try:
            await events.wait(lambda e: isinstance(e, Registered) and not e.reregistration,
                              n=2)
            assert pe.home_registrar.port == second.address("tcp")[1]
            [entry] = (await resolve(second, b"FoundPool")).pool_elements
            assert entry.identifier == pe.identifier
            await pe.stop()
        finally:
            await second.stop()
    arun(main())


# ------------------------------------------------------------------ services

def test_echo_service_and_its_cookie_survive_a_failover(registrar, arun):
    async def main() -> None:
        pe1 = make_pe(registrar, service=EchoService)
        pe2 = make_pe(registrar, service=EchoService)
        await pe1.start()
        await pe2.start()
        pu = await SessionClient.connect(pe1)
        for i, text in enumerate([b"hello", b"rserpool", b"x" * 1000]):
            pu.send(text, ppid=1234)
            assert await pu.recv() == (1234, text)
            cookie = await pu.wait_cookie(lambda c, n=i + 1: c.startswith(b"echo 1 %d " % n))
        assert cookie == b"echo 1 3 1013"
        await pe1.stop()  # the PE goes away; the PU fails over with its cookie
        pu.close()
        pu2 = await SessionClient.connect(pe2)
        pu2.cookie_echo(cookie)
        pu2.send(b"again")
        assert await pu2.recv() == (0, b"again")
        assert await pu2.wait_cookie(lambda c: True) == b"echo 1 4 1018"
        [session] = pe2.sessions
        assert session.cookie_echo == cookie
        pu2.close()
        await pe2.stop()
    arun(main())


def test_echo_with_a_secret_ignores_forged_cookies(registrar, arun):
    import functools

    async def main() -> None:
        pe = make_pe(registrar, service=functools.partial(EchoService, secret=b"k1"))
        await pe.start()
        pu = await SessionClient.connect(pe)
        pu.send(b"abc")
        await pu.recv()
        sealed = await pu.wait_cookie(lambda c: True)
        assert sealed.startswith(b"echo 1 1 3 ") and len(sealed) == len(b"echo 1 1 3 ") + 64
        pu.cookie_echo(b"echo 1 500 500")  # forged: no tag
        pu.send(b"d")
        await pu.recv()
        assert (await pu.wait_cookie(lambda c: c.startswith(b"echo 1 2 ")))
        pu.close()
        await pe.stop()
    arun(main())


def test_pingpong_counts_across_a_failover(registrar, arun):
    async def main() -> None:
        pe1 = make_pe(registrar, service=PingPongService)
        pe2 = make_pe(registrar, service=PingPongService)
        await pe1.start()
        await pe2.start()
        pu = await SessionClient.connect(pe1)
        for seq in range(1, 6):
            pu.send(make_ping(seq, b"data%d" % seq))
            _, pong = await pu.recv()
            assert parse_pong(pong) == (seq, seq, b"data%d" % seq)
        cookie = await pu.wait_cookie(lambda c: c == b"pingpong 1 5")
        pu.send(b"hello?")
        assert await pu.recv() == (0, b"ERROR not a ping")
        pu.close()
        await pe1.stop()
        pu2 = await SessionClient.connect(pe2)
        pu2.cookie_echo(cookie)
        pu2.send(make_ping(6))
        _, pong = await pu2.recv()
        assert parse_pong(pong) == (6, 6, b"")
        pu2.close()
        await pe2.stop()
    arun(main())


def test_daytime_chargen_and_discard(registrar, arun):
    async def main() -> None:
        day = make_pe(registrar, pool_handle=b"DaytimePool", service=DaytimeService)
        gen = make_pe(registrar, pool_handle=b"ChargenPool", service=ChargenService)
        sink = make_pe(registrar, pool_handle=b"DiscardPool", service=DiscardService)
        for pe in (day, gen, sink):
            await pe.start()
        pu = await SessionClient.connect(day)
        _, text = await pu.recv()
        assert re.fullmatch(rb"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n", text)
        pu.send(b"again?", ppid=7)
        ppid, text2 = await pu.recv()
        assert ppid == 7 and text2.endswith(b"\r\n")
        pu.close()
        pu = await SessionClient.connect(gen)
        lines = [(await pu.recv())[1] for _ in range(200)]
        assert lines == [chargen_line(n) for n in range(200)]
        await pu.wait_cookie(lambda c: c == b"chargen 1 100")
        pu.close()
        pu = await SessionClient.connect(sink)
        for _ in range(3):
            pu.send(b"into the void")
        [session] = sink.sessions
        for _ in range(200):  # until the three messages are in
            if session.handler.messages == 3:
                break
            await asyncio.sleep(0.01)
        assert (session.handler.messages, session.handler.bytes) == (3, 39)
        assert pu.data.empty() and pu.cookies == []
        pu.close()
        for pe in (day, gen, sink):
            await pe.stop()
    arun(main())


def test_chargen_continues_from_the_echoed_line(registrar, arun):
    async def main() -> None:
        gen = make_pe(registrar, pool_handle=b"ChargenPool", service=ChargenService)
        await gen.start()
        pu = await SessionClient.connect(gen)
        pu.cookie_echo(b"chargen 1 1000")
        # the pattern repeats every 95 lines: the line counter shows in the cookies,
        # which continue from the echoed line (1100, not 100, 200, ...)
        await pu.wait_cookie(lambda c: c == b"chargen 1 1100")
        assert b"chargen 1 1000" not in pu.cookies
        assert all(int(c.split()[2]) < 1000 or int(c.split()[2]) % 100 == 0
                   for c in pu.cookies)
        pu.close()
        await gen.stop()
    arun(main())


class _Recorder(SessionHandler):
    instances: list["_Recorder"] = []

    def __init__(self) -> None:
        self.got: list[Any] = []
        _Recorder.instances.append(self)

    def data_received(self, data: bytes, ppid: int) -> None:
        self.got.append(("data", ppid, data))

    def cookie_echo_received(self, cookie: bytes) -> None:
        self.got.append(("echo", cookie))

    def connection_lost(self, reason: Any) -> None:
        self.got.append(("lost",))


def test_session_api_delivers_data_cookie_echo_and_close(registrar, arun):
    async def main() -> None:
        _Recorder.instances.clear()
        pe = make_pe(registrar, service=_Recorder)
        await pe.start()
        pu = await SessionClient.connect(pe)
        pu.cookie_echo(b"state-from-before")
        pu.send(b"one", ppid=42)
        pu.channel.send(b"\x0b\x00\x00\x03", ppid=PPID.ASAP)  # undecodable: ignored
        pu.send(b"two")
        [session] = [s for s in pe.sessions]
        session.send_cookie(b"new-state")
        await pu.wait_cookie(lambda c: c == b"new-state")
        with pytest.raises(ValueError):
            session.send(b"x", ppid=PPID.ASAP)
        pu.close()
        rec = _Recorder.instances[0]
        for _ in range(200):
            if rec.got and rec.got[-1] == ("lost",):
                break
            await asyncio.sleep(0.01)
        assert rec.got == [("echo", b"state-from-before"), ("data", 42, b"one"),
                           ("data", 0, b"two"), ("lost",)]
        assert pe.sessions == frozenset()
        await pe.stop()
    arun(main())


# ---------------------------------------------------------------------- CLI

def test_cli_registers_prints_and_deregisters_on_sigint(registrar, arun):
    import signal
    import sys

    from rserpool.protocol.asap_element import load_from_percent

    async def main() -> None:
        host, port = registrar.address("tcp")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rserpool", "pe", "--pool", "CliPool", "--service", "echo",
            "--policy", "least_used", "--load", "30", "--registrar", f"{host}:{port}",
            "--no-discovery", "--transport", "tcp", "--address", "127.0.0.1",
            "--identifier", "0x1234", "--reregistration-interval", "5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            lines = []
            while not any(b"registered at" in ln for ln in lines):
                line = await asyncio.wait_for(proc.stdout.readline(), 15)
                assert line, (lines, await proc.stderr.read())
                lines.append(line)
            assert lines[0].startswith(b"PE 0x00001234: pool 'CliPool', service echo, "
                                       b"TCP endpoint 127.0.0.1:")
            assert f"registered at registrar {host}:{port}".encode() in lines[1]
            [entry] = (await resolve(registrar, b"CliPool")).pool_elements
            assert entry.identifier == 0x1234
            assert entry.policy.load == load_from_percent(30) == 0x4CCCCCCC
            assert entry.registration_life == 15000
            user_port = int(lines[0].rsplit(b":", 1)[1])
            assert entry.user_transport.port == user_port
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 15)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err
        assert b"PE 0x00001234: deregistered\n" in out and b"stopped on SIGINT" in out
        resp = await resolve(registrar, b"CliPool")
        assert resp.pool_elements == ()
    arun(main())


def test_cli_accept_any_home_option():
    import argparse

    from rserpool.commands import pe as pe_cmd

    parser = argparse.ArgumentParser()
    pe_cmd.add_parser(parser.add_subparsers())
    base = ["pe", "--pool", "P", "--registrar", "127.0.0.1:3863", "--transport", "tcp"]
    assert pe_cmd.build_element(parser.parse_args(base)).accept_any_home is False
    ns = parser.parse_args(base + ["--accept-any-home"])
    assert pe_cmd.build_element(ns).accept_any_home is True


@pytest.mark.parametrize("args, message", [
    (["--policy", "rr", "--weight", "3"], b"has no value"),
    (["--policy", "fastest"], b"unknown policy"),
    (["--no-discovery"], b"needs at least one --registrar"),
    (["--registrar", "127.0.0.1:99999"], b"bad port"),
])
def test_cli_refuses_bad_options(args, message):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rserpool", "pe", "--pool", "P",
                           "--transport", "tcp", "--address", "127.0.0.1", *args],
                          capture_output=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
