"""Bad peers (issue 4, evidence 4): garbage bytes, a message cut in half and
never finished, a header announcing 64 KiB then silence, 1,000 idle
connections, a deregistration of a PE ID owned by another connection, an
Endpoint Unreachable flood from one PU.  Throughout, a well-behaved pool user
keeps resolving the pool ``Good`` and every answer is checked."""

from __future__ import annotations

import asyncio
import contextlib
import os
from functools import partial

import pytest

from conftest import AsapClient, ResolutionProber, pool_element
from rserpool.constants import ErrorCause
from rserpool.testing import aio as testing_aio
from rserpool.wire import Deregistration, EndpointUnreachable, Registration, encode_message

GOOD = b"Good"
GOOD_IDS = {0x601, 0x602}

#: ``await wait_for(predicate)``: TimeoutError if it is not true within 15 s.
wait_for = partial(testing_aio.wait_for, timeout=15.0)


@contextlib.asynccontextmanager
async def good_service(registrar):
    """Two PEs in ``Good`` (answering keep-alives) and a prober."""
    host, port = registrar.address("tcp")
    pe = await AsapClient.connect(host, port, auto_ack=True)
    for ident in sorted(GOOD_IDS):
        assert not (await pe.register(GOOD, pool_element(ident))).rejected
    prober = ResolutionProber(await AsapClient.connect(host, port), GOOD, GOOD_IDS)
    await prober.progressed()
    try:
        yield prober
        await prober.progressed()
    finally:
        await prober.stop()
        await pe.close()


async def raw_connection(registrar):
    host, port = registrar.address("tcp")
    return await asyncio.open_connection(host, port)


async def closed_by_registrar(reader: asyncio.StreamReader, timeout: float = 15.0) -> bool:
    """True when the registrar closes or resets the connection within
    ``timeout``, False when it does not."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), max(0.0, end - loop.time()))
            if not data:
                return True
    except asyncio.TimeoutError:   # (a subclass of OSError: test it first)
        return False
    except (ConnectionError, OSError):
        return True


def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


@pytest.mark.registrar(partial_timeout=0.5)
@pytest.mark.parametrize("garbage", [
    b"\x01\x00\x00\x02",                                   # length below the header
    b"\x01\x00\x00\x10" + os.urandom(12),                 # a registration of noise
    b"\x05\x00\x00\x0c\x00\x09\x00\x40" + b"abcd",         # parameter overruns
    bytes(range(256)) * 4,   # unknown types answered, then a message never completed
], ids=["short-length", "noise-registration", "overrun", "bytes"])
def test_garbage_bytes_close_only_that_connection(registrar, arun, garbage):
    async def scenario():
        async with good_service(registrar) as prober:
            reader, writer = await raw_connection(registrar)
            writer.write(garbage)
            assert await closed_by_registrar(reader)
            close_writer(writer)
            await prober.progressed()

    arun(scenario())


def test_unknown_message_type_is_answered_not_closed(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            host, port = registrar.address("tcp")
            peer = await AsapClient.connect(host, port)
            resp = await peer.request(b"\x7f\x00\x00\x08\x00\x00\x00\x00")
            assert [int(c.code) for c in resp.causes] == [ErrorCause.UNRECOGNIZED_MESSAGE]
            assert not peer.closed.is_set()
            await prober.progressed()
            await peer.close()

    arun(scenario())


@pytest.mark.registrar(partial_timeout=0.5)
def test_message_cut_in_half_is_dropped(registrar, arun):
    data = encode_message(Registration(b"Evil", pool_element(0x666)))

    async def scenario():
        async with good_service(registrar) as prober:
            reader, writer = await raw_connection(registrar)
            writer.write(data[:len(data) // 2])
            assert await closed_by_registrar(reader)
            close_writer(writer)
            assert (b"Evil", 0x666) not in registrar.handlespace
            await prober.progressed()

    arun(scenario())


@pytest.mark.registrar(partial_timeout=0.5)
def test_header_announcing_64k_then_silence_is_dropped(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            reader, writer = await raw_connection(registrar)
            writer.write(b"\x05\x00\xff\xff" + b"\x00\x09")   # 65,535 bytes announced
            assert await closed_by_registrar(reader)
            close_writer(writer)
            await prober.progressed()

    arun(scenario())


@pytest.mark.registrar(partial_timeout=0.5)
def test_trickle_that_never_completes_is_dropped(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            reader, writer = await raw_connection(registrar)
            writer.write(b"\x05\x00\x04\x00")               # 1,024 bytes announced
            closed = asyncio.get_running_loop().create_task(closed_by_registrar(reader))
            for _ in range(200):                           # a byte every 20 ms, forever
                if closed.done():
                    break
                with contextlib.suppress(ConnectionError, OSError):
                    writer.write(b"\x00")
                await asyncio.sleep(0.02)
            assert await closed
            close_writer(writer)
            await prober.progressed()

    arun(scenario())


def test_a_thousand_idle_connections(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            conns = []
            for _ in range(10):
                conns += await asyncio.gather(*(raw_connection(registrar) for _ in range(100)))
                await prober.progressed(1)
            await wait_for(lambda: registrar.statistics()["channels"] >= 1002)
            await prober.progressed(20)
            # they are served like anyone else
            reader, writer = conns[500]
            writer.write(encode_message(Deregistration(b"Nothing", 1)))
            assert (await reader.read(4))[:1] == b"\x04"
            for _, writer in conns:
                close_writer(writer)
            await wait_for(lambda: registrar.statistics()["channels"] <= 2)

    arun(scenario(), timeout=120)


@pytest.mark.registrar(idle_timeout=1.0, keep_alive_interval=5.0)
def test_idle_connections_are_dropped_but_not_pe_connections(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            host, port = registrar.address("tcp")
            quiet_pe = await AsapClient.connect(host, port, auto_ack=True)
            await quiet_pe.register(b"Quiet", pool_element(0x777))
            idle = [await raw_connection(registrar) for _ in range(20)]
            for reader, writer in idle:
                assert await closed_by_registrar(reader)
                close_writer(writer)
            # the PE said nothing for longer than the idle timeout, yet stays
            assert not quiet_pe.closed.is_set()
            assert (b"Quiet", 0x777) in registrar.handlespace
            await prober.progressed()
            await quiet_pe.close()

    arun(scenario())


def test_deregistration_of_a_pe_owned_by_another_connection_is_refused(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            host, port = registrar.address("tcp")
            thief = await AsapClient.connect(host, port)
            for ident in sorted(GOOD_IDS):
                resp = await thief.request(Deregistration(GOOD, ident))
                assert [int(c.code) for c in resp.error] == [
                    ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS]
            assert all((GOOD, i) in registrar.handlespace for i in GOOD_IDS)
            # nor may it take the PE over by re-registering it from elsewhere
            resp = await thief.register(GOOD, pool_element(0x601, address="127.0.0.2",
                                                           port=6666))
            assert resp.rejected  # 127.0.0.2 is not its address: no usable user address
            entry = registrar.handlespace.get(GOOD, 0x601)
            assert entry.user_transport.port == 7000
            await prober.progressed()
            await thief.close()

    arun(scenario())


@pytest.mark.registrar(max_bad_pe_reports=3)
def test_unreachable_flood_from_one_pu(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            host, port = registrar.address("tcp")
            flooder = await AsapClient.connect(host, port)
            burst = b"".join(encode_message(EndpointUnreachable(GOOD, i))
                             for i in sorted(GOOD_IDS)) * 5000
            for _ in range(4):
                flooder.send(burst)
                await prober.progressed(2)
            # the flood is still answered (it is a PU like any other)
            resp = await flooder.resolve(GOOD, 3)
            assert {pe.identifier for pe in resp.pool_elements} == GOOD_IDS
            stats = registrar.statistics()
            assert stats["unreachable_reports"] == 2           # one per PE, counted once
            assert stats["unreachable_ignored"] >= 39998
            assert all((GOOD, i) in registrar.handlespace for i in GOOD_IDS)
            await flooder.close()

    arun(scenario(), timeout=120)


# keep-alive timeout 5 s: the good PE shares this process's loop with 20,000
# reports and 200 connections; on a slow machine its 1 s answer could be late
@pytest.mark.registrar(partial_timeout=0.5, keep_alive_timeout=5.0)
def test_all_bad_peers_at_once(registrar, arun):
    async def scenario():
        async with good_service(registrar) as prober:
            host, port = registrar.address("tcp")
            bad = []
            for payload in (b"\x01\x00\x00\x02", b"\x05\x00\xff\xff",
                            encode_message(Registration(b"X", pool_element(9)))[:20]):
                reader, writer = await raw_connection(registrar)
                writer.write(payload)
                bad.append((reader, writer))
            flooder = await AsapClient.connect(host, port)
            flooder.send(encode_message(EndpointUnreachable(GOOD, 0x601)) * 20000)
            thief = await AsapClient.connect(host, port)
            thief.send(Deregistration(GOOD, 0x602))
            idle = await asyncio.gather(*(raw_connection(registrar) for _ in range(200)))
            for reader, writer in bad:
                assert await closed_by_registrar(reader)
                close_writer(writer)
            await prober.progressed(20)
            assert all((GOOD, i) in registrar.handlespace for i in GOOD_IDS)
            for _, writer in idle:
                close_writer(writer)
            await flooder.close()
            await thief.close()

    arun(scenario(), timeout=120)
