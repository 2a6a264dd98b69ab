"""rserpool.aio.transport over real kernel SCTP (inside UML on hosts without it)."""

from __future__ import annotations

import os

import pytest

from rserpool.aio.transport import open_channel, sctp_available, start_endpoint
from rserpool.constants import PPID
from rserpool.testing.aio import MessageCollector, run_with_timeout
from rserpool.testing.aio import echo_endpoint as start_echo_endpoint

pytestmark = pytest.mark.sctp

#: How long a MessageCollector waits.
WAIT = 10.0


def run(coro):
    return run_with_timeout(coro, 30)


def extra_addresses():
    env = os.environ.get("RSERPOOL_UML_ADDRESSES", "10.255.0.1 10.255.0.2 10.255.0.3")
    return env.replace(",", " ").split()


def echo_endpoint(addresses, framing="asap"):
    return start_echo_endpoint("sctp", addresses, framing, timeout=WAIT)


def test_sctp_available():
    assert sctp_available()


def test_one_to_one_client_to_one_to_many_endpoint_ppid_per_message():
    async def main():
        ep, side, channels = await echo_endpoint(["127.0.0.1"], framing="session")
        c = MessageCollector(WAIT)
        ch = await open_channel("sctp", "127.0.0.1", ep.port, framing="session",
                                on_message=c.on_message, on_close=c.on_close)
        ch.send(b"\x0b\x00\x00\x04", ppid=PPID.ASAP)
        ch.send(b"application data", ppid=0x29, stream=0)
        big = bytes(range(256)) * 200  # 51,200 bytes: fragmented by SCTP
        ch.send(big, ppid=0x29)
        ch.send(b"high ppids", ppid=4242)
        ch.send(b"top", ppid=0xFFFFFFFE)
        await c.wait(lambda: len(c.messages) == 5)
        assert c.messages == [(b"\x0b\x00\x00\x04", PPID.ASAP), (b"application data", 0x29),
                              (big, 0x29), (b"high ppids", 4242), (b"top", 0xFFFFFFFE)]
        # an unbound client advertises all its addresses (SCTP multi-homing)
        assert "127.0.0.1" in channels[0].peer_addresses
        ch.close()
        await side.wait(lambda: side.closed)
        assert ch.closed
        ep.close()
    run(main())


def test_multihomed_endpoint_and_association_from_endpoint_socket():
    async def main():
        addrs = extra_addresses()[:2]
        ep, side, channels = await echo_endpoint(addrs)
        assert [a for a, _ in ep.addresses] == addrs
        # an association opened from another endpoint's one-to-many socket and port
        client_side = MessageCollector(WAIT)
        other = await start_endpoint("sctp", [extra_addresses()[2]], 0, on_channel=lambda c: None)
        ch = await other.connect(addrs[0], ep.port, on_message=client_side.on_message,
                                 on_close=client_side.on_close)
        assert sorted(ch.peer_addresses) == sorted(addrs)
        ch.send(b"\x0b\x00\x00\x04")
        await client_side.wait(lambda: client_side.messages)
        assert client_side.messages == [(b"\x0b\x00\x00\x04", PPID.ASAP)]
        # the server sees the client's endpoint port, as RSPLIB's registrar does
        assert channels[0].peer == (extra_addresses()[2], other.port)
        channels[0].abort("registrar aborts")
        await client_side.wait(lambda: client_side.closed)
        assert client_side.closed == ["association lost"]
        other.close()
        ep.close()
    run(main())


def test_ipv4_and_ipv6_on_one_endpoint():
    async def main():
        ep, side, channels = await echo_endpoint(["127.0.0.1", "::1"])
        for host in ("127.0.0.1", "::1"):
            c = MessageCollector(WAIT)
            ch = await open_channel("sctp", host, ep.port, on_message=c.on_message)
            ch.send(b"\x0b\x00\x00\x04")
            await c.wait(lambda: c.messages)
            ch.close()
        assert len(channels) == 2
        assert channels[0].peer[0] == "127.0.0.1" and channels[1].peer[0] == "::1"
        ep.close()
    run(main())


def test_peer_going_away_closes_channel():
    async def main():
        ep, side, channels = await echo_endpoint(["127.0.0.1"])
        ch = await open_channel("sctp", "127.0.0.1", ep.port)
        ch.send(b"\x0b\x00\x00\x04")
        await side.wait(lambda: side.messages)
        ch.abort("client dies")
        await side.wait(lambda: side.closed)
        assert side.closed == ["association lost"]
        assert not ep.channels
        ep.close()
    run(main())


def test_a_peer_that_never_reads_is_aborted_not_buffered_without_limit():
    """Replies to an association whose peer stops reading queue in our
    backlog only up to MAX_SCTP_BACKLOG; then that association is aborted
    and the others are served as before."""
    from rserpool.aio.transport import MAX_SCTP_BACKLOG

    async def main():
        ep, side, channels = await echo_endpoint(["127.0.0.1"])
        sink = await open_channel("sctp", "127.0.0.1", ep.port)   # never reads
        sink._owner._loop.remove_reader(sink._owner._fd)
        sink.send(b"\x0b\x00\x00\x04")
        await side.wait(lambda: side.messages)
        [server_ch] = channels
        blob = b"x" * 5000
        for _ in range(2 * MAX_SCTP_BACKLOG // len(blob)):
            if server_ch.closed:
                break
            server_ch.send(blob)
            assert server_ch.write_buffered <= MAX_SCTP_BACKLOG
        await side.wait(lambda: side.closed)
        assert server_ch.close_reason == "peer does not read (send backlog full)"
        assert server_ch._owner._backlog_total == 0
        # everyone else is still served
        c = MessageCollector(WAIT)
        other = await open_channel("sctp", "127.0.0.1", ep.port, on_message=c.on_message)
        other.send(b"\x0b\x00\x00\x04")
        await c.wait(lambda: c.messages)
        other.close()
        sink.abort()
        ep.close()
    run(main())
