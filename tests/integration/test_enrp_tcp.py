"""ENRP between registrars over loopback TCP, in one process.

Registrars find each other through static peers (``--peer``) and the List
Response; PEs are raw ASAP clients or real :class:`PoolElement` objects.
The same procedures across network namespaces (Presence multicast, kill -9,
partitions) are in ``tests/netns/test_enrp_netns.py``, over SCTP in
``tests/sctp/test_enrp_sctp.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import AsapClient, make_registrar, pool_element
from rserpool.aio.element import PoolElement as PoolElementService
from rserpool.constants import UpdateAction
from rserpool.handlespace import TIMER_EXPIRY
from rserpool.protocol.enrp import PeerState
from rserpool.testing.aio import until
from rserpool.testing.enrp import RawEnrpPeer as EnrpPeer, same_handlespace as in_sync
from rserpool.testing.enrp import handlespace_table as table
from rserpool.wire import (
    EnrpErrorMessage,
    HandleResolutionResponse,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    Presence,
    RegistrationResponse,
)

#: Fast ENRP timers (heartbeat 1 s, max-time-last-heard 2 s, no-response 1 s).
FAST = dict(peer_heartbeat_interval=1.0, peer_max_time_last_heard=2.0,
            peer_max_time_no_response=1.0, mentor_discovery_timeout=1.0,
            takeover_expiry_interval=2.0)
A, B, C, D = 0xA1, 0xB2, 0xC3, 0xD4
HOSTILE = 0x0BAD


async def scope(*ids: int, **overrides: Any) -> list[Any]:
    """Registrars with IDs ``ids``; every one after the first has the first
    as its static peer (the others are learned from its List Response)."""
    regs = []
    for rid in ids:
        peers = () if not regs else ("%s:%d" % regs[0].enrp_address(),)
        reg = make_registrar(registrar_id=rid, peers=peers, **{**FAST, **overrides})
        await reg.start()
        regs.append(reg)
    await until(lambda: all(len(r.enrp.peers()) == len(ids) - 1 and all(
        s is PeerState.ALIVE for s in r.enrp.peers().values()) for r in regs), 10,
        "a full mesh of live peers")
    return regs


async def stop_all(regs: list[Any]) -> None:
    for reg in regs:
        await reg.stop()


async def register_many(reg: Any, pool: bytes, ids: range) -> AsapClient:
    host, port = reg.address()
    client = await AsapClient.connect(host, port, auto_ack=True)
    for ident in ids:
        resp = await client.register(pool, pool_element(ident))
        assert type(resp) is RegistrationResponse and not resp.rejected, resp
    return client


def test_three_registrars_hold_the_same_handlespace(arun):
    """Registrations at every registrar reach every other one (Handle Update
    ADD), resolutions agree, the ownership checksums agree; deregistrations
    and association losses are propagated (DEL)."""
    async def body() -> None:
        regs = await scope(A, B, C, max_increment=128)  # 3 x 128 items walk 300 PEs
        clients = []
        try:
            for n, reg in enumerate(regs):
                clients.append(await register_many(reg, b"pool", range(100 * n + 1,
                                                                        100 * n + 101)))
            await until(lambda: all(len(r.handlespace) == 300 for r in regs), 10, "300 PEs")
            assert in_sync(*regs)
            checksums = regs[0].handlespace.checksums()
            assert set(checksums) == {A, B, C}
            # every registrar answers a resolution of everything identically
            answers = []
            for reg in regs:
                host, port = reg.address()
                pu = await AsapClient.connect(host, port)
                ids = set()
                for _ in range(3):  # round robin over 300 PEs, 128 at a time
                    resp = await pu.resolve(b"pool", 128)
                    assert type(resp) is HandleResolutionResponse
                    ids |= {pe.identifier for pe in resp.pool_elements}
                answers.append(ids)
                await pu.close()
            assert answers[0] == answers[1] == answers[2] == set(range(1, 301))
            # deregistration at B, association loss at C
            for ident in range(101, 111):
                await clients[1].deregister(b"pool", ident)
            clients[2].abort()
            await until(lambda: all(len(r.handlespace) == 190 for r in regs), 10, "190 PEs")
            assert in_sync(*regs)
            assert all(C not in r.handlespace.checksums() for r in regs)
        finally:
            for c in clients:
                await c.close()
            await stop_all(regs)
    arun(body(), 60)


def test_a_joining_registrar_downloads_the_handle_table_in_pages(arun):
    async def body() -> None:
        regs = await scope(A, B, max_elements_per_ht_request=16)
        client = await register_many(regs[1], b"pool", range(1, 201))
        try:
            await until(lambda: in_sync(*regs) and len(regs[0].handlespace) == 200, 10)
            late = make_registrar(registrar_id=C, peers=("%s:%d" % regs[0].enrp_address(),),
                                  **FAST)
            await late.start()
            regs.append(late)
            await until(lambda: not late.enrp.startup, 10, "start-up over")
            assert late.enrp.mentor == A and late.enrp.mentor_done
            assert in_sync(*regs) and len(late.handlespace) == 200
            # a mentor's 200 PEs in pages of at most 16 (and 1,400 bytes)
            assert regs[0].enrp.counters["ht_requests_served"] >= 200 // 16
            # entries learned over ENRP carry expiry timers, not keep-alives
            entry = late.handlespace.get(b"pool", 5)
            assert entry.home_registrar == B and entry.timer == TIMER_EXPIRY
        finally:
            await client.close()
            await stop_all(regs)
    arun(body(), 60)


def test_takeover_of_a_dead_registrar(arun):
    """A registrar owning PEs dies (its associations are reset): the lower-ID
    survivor wins the takeover (exactly one winner), every PE acknowledges
    its new home, and both survivors agree."""
    async def body() -> None:
        regs = await scope(A, B, C)
        victim = regs[2]
        host, port = victim.address()
        pes = [PoolElementService("svc", registrars=[f"{host}:{port}"], discovery=False,
                                  transport="tcp", addresses=["127.0.0.1"],
                                  accept_any_home=True, identifier=1000 + i)
               for i in range(20)]
        try:
            for pe in pes:
                await pe.start()
            survivors = regs[:2]
            await until(lambda: all(len(r.handlespace) == 20 for r in regs), 10)
            await victim.stop()  # every association reset, as with kill -9
            await until(lambda: all(pe.home_registrar is not None
                                    and pe.home_registrar.server_id == A for pe in pes),
                        10, "every PE homed at A")
            await until(lambda: in_sync(*survivors) and all(
                C not in r.enrp.peers() for r in survivors), 10)
            assert table(regs[0]) == {(b"svc", 1000 + i, A) for i in range(20)}
            won = [r.enrp.counters["takeovers_won"] for r in survivors]
            assert won == [1, 0]
            # a PE is homed at A once it has sent its ack; A counts it once read
            await until(lambda: regs[0].core.counters["adopted"] == 20
                        and regs[0].core.adopting() == 0, 10, "A read every PE's ack")
            # A keeps them alive from now on (keep-alives over its new associations)
            acks = regs[0].core.counters["keep_alive_acks"]
            await until(lambda: regs[0].core.counters["keep_alive_acks"] >= acks + 20, 10)
        finally:
            for pe in pes:
                await pe.stop()
            await stop_all(regs[:2])
    arun(body(), 60)


def test_audit_repairs_a_diverged_handlespace(arun):
    """A PE missing at a peer and a ghost entry there are both repaired by
    the checksum audit (own-children request, mark and sweep)."""
    async def body() -> None:
        regs = await scope(A, B)
        client = await register_many(regs[0], b"pool", range(1, 51))
        try:
            await until(lambda: in_sync(*regs) and len(regs[1].handlespace) == 50, 10)
            hs = regs[1].handlespace
            hs.deregister(b"pool", 7)                      # lost update
            ghost = hs.get(b"pool", 8).pool_element.replace(identifier=999)
            hs.register(b"pool", ghost, 0.0, home_registrar=A, timer=TIMER_EXPIRY,
                        deadline=1e12)                     # ghost
            assert not in_sync(*regs)
            await until(lambda: in_sync(*regs), 10, "audit repair")
            assert (b"pool", 7) in hs and (b"pool", 999) not in hs
            assert regs[1].enrp.counters["audit_mismatches"] >= 1
        finally:
            await client.close()
            await stop_all(regs)
    arun(body(), 60)


def test_hostile_peer_cannot_corrupt_the_handlespace(arun):
    """Forged updates, our own ID, nonsense and a handle table request flood:
    each is refused or answered, the scope keeps serving and stays equal."""
    async def body() -> None:
        regs = await scope(A, B)
        client = await register_many(regs[0], b"pool", range(1, 21))
        bad = None
        try:
            await until(lambda: in_sync(*regs) and len(regs[1].handlespace) == 20, 10)
            before = table(regs[1])
            bad = await EnrpPeer.connect(regs[1])
            await bad.recv(Presence)          # B greets every new association
            # 1. a Presence claiming B's own ID is ignored (and binds nothing)
            bad.send(Presence(B, 0, 0xFFFF, None, False))
            # 2. forged updates before saying who it is: dropped ("unbound")
            victim = regs[1].handlespace.get(b"pool", 3).pool_element
            bad.send(HandleUpdate(A, B, UpdateAction.DEL_PE, b"pool", victim))
            # 3. as a peer of its own: DEL of A's PE and ADD moving it are refused
            bad.send(Presence(HOSTILE, B, 0xFFFF, None, False))
            bad.send(HandleUpdate(HOSTILE, B, UpdateAction.DEL_PE, b"pool", victim))
            bad.send(HandleUpdate(HOSTILE, B, UpdateAction.ADD_PE, b"pool",
                                  victim.replace(home_registrar=HOSTILE)))
            bad.send(HandleUpdate(HOSTILE, B, UpdateAction.ADD_PE, b"pool",
                                  victim.replace(home_registrar=A, identifier=4444)))
            # 4. an unknown message type gets an ENRP Error, the link stays
            bad.send(b"\x7f\x00\x00\x0c" + HOSTILE.to_bytes(4, "big") + B.to_bytes(4, "big"))
            err = await bad.recv(EnrpErrorMessage)
            assert err.causes[0].code == 0x0002
            # 5. a flood of handle table requests: each gets one page
            for _ in range(500):
                bad.send(HandleTableRequest(HOSTILE, B))
            pages = 0
            while pages < 500:
                resp = await bad.recv(HandleTableResponse)
                assert not resp.rejected
                pages += 1
            assert table(regs[1]) == before and in_sync(*regs)
            refused = regs[1].enrp.counters["updates_refused"]
            assert refused >= 3
            # the scope still serves: a new registration reaches B
            resp = await client.register(b"pool", pool_element(77))
            assert not resp.rejected
            await until(lambda: (b"pool", 77) in regs[1].handlespace, 5)
        finally:
            if bad is not None:
                bad.close()
            await client.close()
            await stop_all(regs)
    arun(body(), 60)


@pytest.mark.parametrize("garbage", [b"\x01\x00", b"\x01\x00\x00\x08abcd",
                                     b"\x04\x00\x00\x10" + b"\xff" * 12],
                         ids=["short", "truncated-presence", "bad-update"])
def test_malformed_enrp_input_never_stops_the_registrar(arun, garbage):
    async def body() -> None:
        regs = await scope(A, B)
        try:
            bad = await EnrpPeer.connect(regs[0])
            bad.send(garbage + b"\x01\x00\x00\x04" * 0)
            await asyncio.sleep(0.3)
            client = await register_many(regs[0], b"pool", range(1, 4))
            await until(lambda: in_sync(*regs) and len(regs[1].handlespace) == 3, 10)
            await client.close()
            bad.close()
        finally:
            await stop_all(regs)
    arun(body(), 30)


def test_registrar_without_enrp_serves_alone(arun):
    async def body() -> None:
        reg = make_registrar(enrp=False, announce=False)
        await reg.start()
        try:
            assert reg.enrp is None and reg.enrp_endpoints == []
            with pytest.raises(LookupError):
                reg.enrp_address()
            client = await register_many(reg, b"pool", range(1, 3))
            assert len(reg.handlespace) == 2
            await client.close()
        finally:
            await reg.stop()
    arun(body(), 30)
