"""rserpool.aio.transport over TCP on loopback, and rserpool.aio.multicast."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from rserpool.aio.multicast import AnnounceListener, AnnounceSender, RegistrarTable, \
    parse_registrar_address
from rserpool.aio.transport import open_channel, start_endpoint
from rserpool.constants import PPID
from rserpool.testing.aio import MessageCollector, run_with_timeout
from rserpool.testing.aio import echo_endpoint as start_echo_endpoint
from rserpool.wire import (HandleResolution, ServerAnnounce, SctpTransport, TcpTransport,
                           encode_message)


def run(coro):
    return run_with_timeout(coro, 20)


def echo_endpoint(framing="asap"):
    return start_echo_endpoint("tcp", ["127.0.0.1"], framing)


def test_tcp_asap_messages_cross_in_one_piece_and_back():
    async def main():
        ep, server_side, channels = await echo_endpoint()
        assert ep.port and ep.addresses == [("127.0.0.1", ep.port)]
        c = MessageCollector()
        ch = await open_channel("tcp", "127.0.0.1", ep.port, on_message=c.on_message,
                                on_close=c.on_close)
        msgs = [encode_message(HandleResolution(b"pool%d" % i, items=i)) for i in range(50)]
        for m in msgs:
            ch.send(m)
        await c.wait(lambda: len(c.messages) == 50)
        assert [m for m, _ in c.messages] == msgs
        assert {p for _, p in c.messages} == {PPID.ASAP}
        assert channels[0].peer == ch.local and channels[0].peer_addresses == ("127.0.0.1",)
        ch.close()
        await server_side.wait(lambda: server_side.closed)
        await ch.wait_closed()
        assert ch.closed and c.closed == ["closed locally"]
        ep.close()
    run(main())


def test_tcp_asap_framing_across_byte_by_byte_writes():
    async def main():
        ep, server_side, _ = await echo_endpoint()
        r, w = await asyncio.open_connection("127.0.0.1", ep.port)
        msg = encode_message(HandleResolution(b"EchoPool"))
        for b in msg + msg[:5]:
            w.write(bytes([b]))
            await w.drain()
        await server_side.wait(lambda: len(server_side.messages) == 1)
        assert server_side.messages[0][0] == msg
        w.write(msg[5:])
        await server_side.wait(lambda: len(server_side.messages) == 2)
        assert await r.readexactly(2 * len(msg)) == msg + msg
        w.close()
        ep.close()
    run(main())


@pytest.mark.parametrize("header", [b"\x03\x00\x00\x02", b"\x03\x00\xff\xff"])
def test_tcp_framing_error_aborts_the_channel(header):
    async def main():
        ep, server_side, channels = await echo_endpoint()
        # max_message_size: 65535 accepts 0xffff; use a small endpoint limit for that case
        ep.close()
        ep = await start_endpoint("tcp", ["127.0.0.1"], 0, max_message_size=1024,
                                  on_channel=lambda ch: channels.append(ch) or setattr(
                                      ch, "on_close", server_side.on_close))
        r, w = await asyncio.open_connection("127.0.0.1", ep.port)
        w.write(header)
        await server_side.wait(lambda: server_side.closed)
        assert "framing error" in server_side.closed[0]
        assert await r.read() == b""  # connection closed
        w.close()
        ep.close()
    run(main())


def test_tcp_session_framing_carries_ppids():
    async def main():
        ep, server_side, _ = await echo_endpoint("session")
        c = MessageCollector()
        ch = await open_channel("tcp", "127.0.0.1", ep.port, framing="session",
                                on_message=c.on_message)
        ch.send(b"data", ppid=0x28)
        ch.send(b"\x0b\x00\x00\x04", ppid=PPID.ASAP)
        await c.wait(lambda: len(c.messages) == 2)
        assert c.messages == [(b"data", 0x28), (b"\x0b\x00\x00\x04", PPID.ASAP)]
        # raw view of the private framing
        r, w = await asyncio.open_connection("127.0.0.1", ep.port)
        w.write(struct.pack("!II", 7, 3) + b"abc")
        assert await r.readexactly(11) == struct.pack("!II", 7, 3) + b"abc"
        w.close()
        ch.close()
        ep.close()
    run(main())


def test_endpoint_connect_and_abort_reports_reason():
    async def main():
        ep, server_side, channels = await echo_endpoint()
        other = await start_endpoint("tcp", ["127.0.0.1"], 0, on_channel=lambda ch: None)
        c = MessageCollector()
        ch = await other.connect("127.0.0.1", ep.port, on_close=c.on_close)
        assert ch in other.channels
        ch.abort("test says so")
        await c.wait(lambda: c.closed)
        assert c.closed == ["test says so"]
        await server_side.wait(lambda: server_side.closed)
        assert ch not in other.channels
        with pytest.raises(ConnectionError):
            ch.send(b"\x00\x00\x00\x04")
        other.close()
        ep.close()
    run(main())


def test_open_channel_refused_raises():
    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with pytest.raises(OSError):
            await open_channel("tcp", "127.0.0.1", port, timeout=2)
    run(main())


def test_multicast_announce_on_loopback_reaches_listener_and_table():
    async def main():
        got = []
        ev = asyncio.Event()

        def on_dgram(data, addr):
            got.append((data, addr))
            ev.set()
        port = 38000 + (hash(asyncio.get_running_loop()) % 1000)
        lst = await AnnounceListener.start("239.0.0.50", port, on_datagram=on_dgram,
                                           interface="127.0.0.1")
        payload = encode_message(ServerAnnounce(0x1234, (TcpTransport(3863, ("127.0.0.1",)),)))
        snd = await AnnounceSender.start("239.0.0.50", port, source=("127.0.0.1", 0), ttl=1,
                                         interval=0.1, payload=lambda: payload)
        await asyncio.wait_for(ev.wait(), 5)
        snd.stop()
        lst.stop()
        data, src = got[0]
        assert data == payload and src == snd.source
        table = RegistrarTable(["10.0.0.9:4000"], transport="tcp")
        learned = table.learn(data, src, now=100.0)
        assert [e.key for e in learned] == [("tcp", "127.0.0.1", 3863)]
        assert [e.key for e in table.candidates(104.0)] == [("tcp", "10.0.0.9", 4000),
                                                           ("tcp", "127.0.0.1", 3863)]
        assert [e.key for e in table.candidates(105.0)] == [("tcp", "10.0.0.9", 4000)]
    run(main())


def test_registrar_table_rsplib_announce_without_transport_and_garbage():
    table = RegistrarTable(transport="sctp")
    assert table.learn(b"garbage", ("10.1.1.1", 5000), 0.0) == []
    bare = encode_message(ServerAnnounce(9, ()))
    [e] = table.learn(bare, ("10.1.1.1", 5000), 0.0)
    assert (e.transport, e.host, e.port, e.server_id) == ("sctp", "10.1.1.1", 5000, 9)
    multi = encode_message(ServerAnnounce(10, (SctpTransport(3863, ("10.2.2.2", "10.3.3.3")),)))
    [e] = table.learn(multi, ("10.3.3.3", 3863), 0.0)
    assert e.host == "10.3.3.3" and e.addresses == ("10.2.2.2", "10.3.3.3")
    table.forget(9)
    assert [x.server_id for x in table.candidates(1.0)] == [10]


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:3863", ("127.0.0.1", 3863)), ("[::1]:99", ("::1", 99)),
    ("host", ("host", 3863)), ("::1", ("::1", 3863))])
def test_parse_registrar_address(text, expected):
    assert parse_registrar_address(text) == expected


@pytest.mark.parametrize("bad", ["", ":5", "h:0", "h:x", "h:70000"])
def test_parse_registrar_address_refuses(bad):
    with pytest.raises(ValueError):
        parse_registrar_address(bad)


def test_replies_to_a_pipelined_batch_arrive_in_order_even_when_the_handler_closes():
    """Replies written during one read are batched; a close() in the handler
    still flushes them before the FIN."""
    async def main():
        def on_channel(ch):
            def reply(c, data, ppid):
                c.send(data)
                if data[8:9] == b"Q":  # the pool handle starts at offset 8
                    c.close()
            ch.on_message = reply
        ep = await start_endpoint("tcp", ["127.0.0.1"], 0, on_channel=on_channel)
        r, w = await asyncio.open_connection("127.0.0.1", ep.port)
        msgs = [encode_message(HandleResolution(b"P%03d" % i)) for i in range(100)]
        msgs.append(encode_message(HandleResolution(b"Quit")))
        w.write(b"".join(msgs))  # one segment: one data_received batch
        assert await r.read() == b"".join(msgs)  # everything, then EOF
        w.close()
        ep.close()
    run(main())


def test_a_peer_that_pipelines_but_never_reads_cannot_grow_our_buffers():
    """Each 24-byte request gets a 5,000-byte reply (a resolution of many PEs:
    a 200x amplification).  A peer that sends 20,000 requests and reads
    nothing gets only about TCP_WRITE_HIGH_WATER of replies queued; once it
    reads, every request is answered, in order, none lost."""
    from rserpool.aio.transport import TCP_WRITE_HIGH_WATER

    reply = b"R" * 5000
    handled = []
    server_channels = []

    async def main():
        def on_channel(ch):
            server_channels.append(ch)

            def answer(c, data, ppid):
                handled.append(data)
                c.send(reply)
            ch.on_message = answer
        ep = await start_endpoint("tcp", ["127.0.0.1"], 0, on_channel=on_channel)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", ep.port))
        sock.setblocking(False)
        request = encode_message(HandleResolution(b"Pool", items=0xFFFFFFFF))
        total = 20000
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, request * total)
        await asyncio.sleep(0.5)
        [ch] = server_channels
        peak = ch.write_buffered
        assert peak <= TCP_WRITE_HIGH_WATER + len(reply)
        assert len(handled) < total // 10  # throttled, not answered into a buffer
        # now read everything: all requests are answered
        got = 0
        while got < total * len(reply):
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
            assert chunk
            got += len(chunk)
        assert len(handled) == total and got == total * len(reply)
        sock.close()
        ep.close()
    run(main())


def test_registrar_table_is_bounded_against_announce_floods():
    table = RegistrarTable(transport="tcp", max_learned=64)
    # one datagram with 500 transports, port 0 among them: at most 8 looked at
    many = tuple(TcpTransport(0 if i % 2 else 1000 + i, (f"10.9.{i // 250}.{i % 250}",))
                 for i in range(500))
    found = table.learn(encode_message(ServerAnnounce(1, many)), ("10.9.0.1", 3863), 0.0)
    assert len(found) == 4 and all(e.port for e in found)
    # 1,000 fake registrars: the table keeps the 64 most recently announced
    for i in range(1000):
        table.learn(encode_message(ServerAnnounce(i + 2, (TcpTransport(2000 + i, ("10.8.0.1",)),))),
                    ("10.8.0.1", 1), float(i) / 1000)
    ports = sorted(e.port for e in table.candidates(1.0))
    assert ports == list(range(2000 + 1000 - 64, 3000))
