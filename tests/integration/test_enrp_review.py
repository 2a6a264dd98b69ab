"""Review of the registrar's ENRP driver: hostile and unlucky cases over
loopback TCP, in one process (each test failed before its fix).

Hostile hosts use 127.0.0.2 as their source address (Linux routes all of
127/8 to loopback), the registrars 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from conftest import AsapClient, make_registrar, pool_element
from rserpool.aio import registrar as registrar_mod
from rserpool.aio.transport import open_channel
from rserpool.constants import UpdateAction
from rserpool.handlespace import TIMER_KEEP_ALIVE_TRANSMISSION
from rserpool.protocol import enrp as E
from rserpool.protocol.enrp import PeerState
from rserpool.testing.aio import until
from rserpool.testing.enrp import RawEnrpPeer
from rserpool.testing.enrp import handlespace_table as table
from rserpool.wire import (
    HandleTableResponse,
    HandleUpdate,
    Presence,
    RegistrationResponse,
    SctpTransport,
    ServerInformation,
    TcpTransport,
    encode_message,
)

FAST = dict(peer_heartbeat_interval=1.0, peer_max_time_last_heard=2.0,
            peer_max_time_no_response=1.0, mentor_discovery_timeout=1.0,
            takeover_expiry_interval=2.0)
A, B = 0xA1, 0xB2
HOSTILE = 0x0BAD
EVIL_HOST = "127.0.0.2"


async def pair(**overrides: Any) -> list[Any]:
    """Registrars A and B, B with A as its static peer, peered."""
    a = make_registrar(registrar_id=A, **{**FAST, **overrides})
    await a.start()
    b = make_registrar(registrar_id=B, peers=("%s:%d" % a.enrp_address(),),
                       **{**FAST, **overrides})
    await b.start()
    regs = [a, b]
    await until(lambda: all(list(r.enrp.peers().values()) == [PeerState.ALIVE] for r in regs),
                10, "A and B peered")
    return regs


def test_another_host_cannot_impersonate_a_connected_peer(arun):
    """A host claiming A's ID on a new association to B must not be bound to
    A: its Presence with a wrong checksum would make B audit "A" over the
    hostile association, and its empty final page would sweep all of A's
    PEs from B."""
    async def body() -> None:
        regs = await pair()
        client = await AsapClient.connect(*regs[0].address(), auto_ack=True)
        evil = None
        try:
            for ident in range(1, 11):
                resp = await client.register(b"pool", pool_element(ident))
                assert type(resp) is RegistrationResponse and not resp.rejected
            await until(lambda: len(regs[1].handlespace) == 10, 10)
            evil = await RawEnrpPeer.connect(regs[1], local=EVIL_HOST)
            evil.send(Presence(A, B, 0x1234, None, False))
            for _ in range(3):
                evil.send(HandleTableResponse(A, B, [], False))
            await asyncio.sleep(0.3)
            assert len(regs[1].handlespace) == 10
            assert table(regs[1]) == table(regs[0])
        finally:
            if evil is not None:
                evil.close()
            await client.close()
            for reg in regs:
                await reg.stop()
    arun(body(), 60)


def test_forged_multicast_presences_open_few_connections(arun):
    """Multicast Presences with random IDs (UDP: the source is forged too)
    each ask for an ENRP association: the driver keeps a few connects
    running at a time instead of one per forged ID."""
    async def body() -> None:
        reg = make_registrar(registrar_id=A, **FAST)
        await reg.start()
        try:
            rng = random.Random(3)
            for i in range(600):
                pid = rng.randrange(1, 1 << 32)
                info = ServerInformation(pid, SctpTransport(9, [f"10.255.{i // 250}.{i % 250}"],
                                                            0))
                reg._on_presence(encode_message(Presence(pid, 0, 0xFFFF, info)),
                                 ("192.0.2.1", 9901))
            assert len(reg._connecting) <= registrar_mod.MAX_PEER_CONNECTS
            assert len(reg.enrp.peers()) <= E.MAX_PEERS
        finally:
            await reg.stop()
    arun(body(), 60)


def test_one_host_cannot_fill_the_enrp_association_limit(arun):
    """A host holding MAX_ENRP_CHANNELS associations kept every real peer
    out; now each remote address gets a share."""
    async def body() -> None:
        a = make_registrar(registrar_id=A, **FAST)
        await a.start()
        hogs: list[Any] = []
        b = None
        try:
            host, port = a.enrp_address()
            for _ in range(registrar_mod.MAX_ENRP_CHANNELS + 4):
                try:
                    hogs.append(await open_channel("tcp", host, port,
                                                   local_addresses=[EVIL_HOST]))
                except OSError:
                    break
            await asyncio.sleep(0.2)
            b = make_registrar(registrar_id=B, peers=(f"{host}:{port}",), **FAST)
            await b.start()
            await until(lambda: B in a.enrp.peers() and A in b.enrp.peers(), 10,
                        "A and B peered despite the hog")
        finally:
            for ch in hogs:
                ch.close()
            if b is not None:
                await b.stop()
            await a.stop()
    arun(body(), 60)


def test_takeover_of_a_pe_without_asap_transport(arun, caplog):
    """A (hostile) peer's PE without an ASAP transport, then the peer dies:
    the takeover must not trip the pump (before: AttributeError out of the
    pump, the remaining PEs taken over were never prepared, stayed ours
    without keep-alives, and expired without a Handle Update DEL)."""
    async def body() -> None:
        reg = make_registrar(registrar_id=B, **FAST)
        await reg.start()
        evil = None
        try:
            await asyncio.sleep(1.2)  # start-up over: the hostile peer is no mentor
            evil = await RawEnrpPeer.connect(reg)
            evil.send(Presence(HOSTILE, B, 0xFFFF, None, False))
            asap = TcpTransport(9, ["127.0.0.1"], 0)   # nothing listens: unreachable
            for ident in (1, 2, 3):
                p = pool_element(ident).replace(
                    home_registrar=HOSTILE, asap_transport=None if ident == 2 else asap)
                evil.send(HandleUpdate(HOSTILE, B, UpdateAction.ADD_PE, b"pool", p))
            await until(lambda: len(reg.handlespace) >= 2, 5)
            evil.close()                    # dies: B takes over
            await until(lambda: reg.enrp.counters["takeovers_won"] == 1, 10)
            # 1 and 3 cannot be reached: removed after grace + keep-alive timeout
            await until(lambda: len(reg.handlespace) == 0, 10, "every PE removed")
        finally:
            if evil is not None:
                evil.close()
            await reg.stop()
    with caplog.at_level(logging.ERROR):
        arun(body(), 60)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_adoption_without_asap_transport_does_not_break_the_pump(arun):
    """Defensive: a PE to adopt that has no ASAP transport (a handlespace
    filled some other way) is skipped; it times out like an unreachable PE."""
    async def body() -> None:
        reg = make_registrar(registrar_id=B, **FAST)
        await reg.start()
        try:
            hs = reg.handlespace
            loop = asyncio.get_running_loop()
            hs.register(b"pool", pool_element(5).replace(home_registrar=B), loop.time(),
                        home_registrar=B, timer=TIMER_KEEP_ALIVE_TRANSMISSION,
                        deadline=loop.time() + 100)
            reg.enrp._keepalives.append(E.KeepAliveRequest(b"pool", 5, None))
            reg._pump()
            assert reg.core.adopting() == 1
            await until(lambda: (b"pool", 5) not in hs, 10, "the PE timed out")
        finally:
            await reg.stop()
    arun(body(), 30)


def test_no_adoption_starts_once_the_registrar_stops(arun):
    """A takeover completing while stop() awaits its tasks (an Init Takeover
    Ack, a timer) spawned adoption tasks nobody cancelled: they opened new
    connections after the endpoints were closed."""
    async def body() -> None:
        reg = make_registrar(registrar_id=B, **FAST)
        await reg.start()
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            loop = asyncio.get_running_loop()
            hs = reg.handlespace
            p = pool_element(5).replace(home_registrar=B,
                                        asap_transport=TcpTransport(port, ["127.0.0.1"], 0))
            hs.register(b"pool", p, loop.time(), home_registrar=B,
                        timer=TIMER_KEEP_ALIVE_TRANSMISSION, deadline=loop.time() + 100)
            await reg.stop()
            reg.enrp._keepalives.append(E.KeepAliveRequest(b"pool", 5, p.asap_transport))
            reg._pump()
            assert not reg._tasks
            await asyncio.sleep(0.2)
            assert not reg._tasks
        finally:
            server.close()
            await reg.stop()
    arun(body(), 30)


def test_peers_learned_from_a_list_response_connect_when_bound_to_the_wildcard(arun):
    """Registrars bound to 0.0.0.0 (the default) advertise 0.0.0.0 in their
    Server Information; without Presence multicast, A and C, which only know
    B statically, learned each other from B's List Response but had no
    address to connect to: never peers, and C's PEs never reached A."""
    async def body() -> None:
        wild = dict(FAST, addresses=("0.0.0.0",))
        b = make_registrar(registrar_id=B, **wild)
        await b.start()
        peer = f"127.0.0.1:{b.enrp_address()[1]}"
        a = make_registrar(registrar_id=A, peers=(peer,), **wild)
        c = make_registrar(registrar_id=0xC3, peers=(peer,), **wild)
        regs = [b, a, c]
        client = None
        try:
            await a.start()
            await c.start()
            await until(lambda: all(len(r.enrp.peers()) == 2 for r in regs), 10,
                        "a full mesh")
            client = await AsapClient.connect("127.0.0.1", c.address()[1], auto_ack=True)
            resp = await client.register(b"pool", pool_element(1))
            assert not resp.rejected
            await until(lambda: (b"pool", 1) in a.handlespace, 5, "C's PE at A")
        finally:
            if client is not None:
                await client.close()
            for reg in regs:
                await reg.stop()
    arun(body(), 60)
