"""Real kernel SCTP, as the registrar's transport will use it (RFC 5352/5353).

Everything here is marked ``sctp``: on a host without kernel SCTP these run
inside User-Mode Linux (``rserpool.testing.pytest_sctp``), where ``lo`` also
has the addresses in ``$RSERPOOL_UML_ADDRESSES`` (10.255.0.1-3) for
multi-homing.

Two client APIs are exercised side by side:

* ``pysctp`` (PyPI ``pysctp``, import name ``sctp``): ``sctpsocket_udp`` is a
  one-to-many (SOCK_SEQPACKET) socket; ``sctp_send(msg, to, ppid=, stream=)``,
  ``sctp_recv(n) -> (fromaddr, flags, msg, notif)``, ``bindx``, ``events``,
  ``peeloff``, ``getpaddrs``.  Quirks pinned below: ``sctp_send`` converts the
  PPID to network order itself (``ppid=11`` is 11 on the wire), but
  ``sctp_recv`` hands it back raw (``socket.ntohl(info.ppid) == 11``), and the
  ``error`` of an ``assoc_change`` is raw too (``socket.ntohs``).
* the standard library alone: ``sendmsg``/``recvmsg`` with ``SCTP_SNDINFO``
  and ``SCTP_RCVINFO`` ancillary data, ``setsockopt`` for events and
  ``bindx``; only ``peeloff`` and per-association address lists need
  ``ctypes`` (their getsockopt takes input, which ``socket.getsockopt``
  cannot pass).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rserpool.testing.uml import kernel_sctp_available

pytestmark = pytest.mark.sctp

ASAP_PPID = 11        # RFC 5352: ASAP messages use PPID 11 (ENRP: 12)
ENRP_PPID = 12
TIMEOUT = 5.0

# --- <linux/sctp.h>, for the standard-library variant ---------------------------

SOL_SCTP = socket.IPPROTO_SCTP
SCTP_EVENT = 127
SCTP_RECVRCVINFO = 32
SCTP_SOCKOPT_BINDX_ADD = 100
SCTP_SOCKOPT_PEELOFF = 102
SCTP_GET_PEER_ADDRS = 108
SCTP_GET_LOCAL_ADDRS = 109
SCTP_SNDINFO = 2            # cmsg types
SCTP_RCVINFO = 3
SCTP_ABORT = 0x4            # snd_flags
SCTP_EOF = 0x200
MSG_NOTIFICATION = 0x8000
SCTP_ASSOC_CHANGE = 0x8001
SCTP_SHUTDOWN_EVENT = 0x8005
SCTP_COMM_UP, SCTP_COMM_LOST, SCTP_RESTART, SCTP_SHUTDOWN_COMP, SCTP_CANT_STR_ASSOC = range(5)
CAUSE_USER_ABORT = 12       # RFC 4960 3.3.10.12

SNDINFO = struct.Struct("@HHIIi")          # sid, flags, ppid, context, assoc_id
RCVINFO = struct.Struct("@HHHIIIIi")       # sid, ssn, flags, ppid, tsn, cumtsn, context, assoc_id
EVENT = struct.Struct("@iHBx")             # assoc_id, type, on
NOTIF_HEADER = struct.Struct("@HHI")       # type, flags, length
ASSOC_CHANGE = struct.Struct("@HHIHHHHi")  # ..., state, error, outbound, inbound, assoc_id


@pytest.fixture(autouse=True)
def _kernel_sctp() -> None:
    if not kernel_sctp_available():
        pytest.fail("this kernel has no SCTP (the sctp plugin should have run this in UML)",
                    pytrace=False)


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    """Close every socket registered with ``closing.callback(sock.close)``."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def pysctp() -> Any:
    """The pysctp module, or a skip if it is not installed.

    Careful: without pysctp, ``import sctp`` under pytest finds *this*
    directory (tests/ is on sys.path, and tests/kernel_sctp/ is a namespace
    package), so check that the module is the real one.
    """
    module = pytest.importorskip("sctp", reason="pysctp is not installed (pip install pysctp)")
    if not hasattr(module, "sctpsocket_udp"):
        pytest.skip("pysctp is not installed (pip install pysctp): "
                    f"'import sctp' found {getattr(module, '__path__', module)}")
    return module


def family_of(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


# --- standard-library helpers -----------------------------------------------------------


def std_socket(closing: contextlib.ExitStack, addr: str, *, port: int = 0,
               events: tuple[int, ...] = (SCTP_ASSOC_CHANGE,)) -> socket.socket:
    """A one-to-many socket bound to (addr, port) with RCVINFO and *events* on."""
    sock = socket.socket(family_of(addr), socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
    closing.callback(sock.close)
    sock.settimeout(TIMEOUT)
    sock.setsockopt(SOL_SCTP, SCTP_RECVRCVINFO, 1)
    for event in events:
        sock.setsockopt(SOL_SCTP, SCTP_EVENT, EVENT.pack(0, event, 1))
    sock.bind((addr, port))
    return sock


def std_send(sock: socket.socket, data: bytes, to: Any, *, ppid: int, stream: int = 0,
             flags: int = 0) -> int:
    """sendmsg with an SCTP_SNDINFO cmsg; the PPID goes out as given (htonl here)."""
    info = SNDINFO.pack(stream, flags, socket.htonl(ppid), 0, 0)
    if to is None:  # one-to-one (connected or peeled-off) socket
        return sock.sendmsg([data], [(SOL_SCTP, SCTP_SNDINFO, info)])
    return sock.sendmsg([data], [(SOL_SCTP, SCTP_SNDINFO, info)], 0, to)


def std_recv(sock: socket.socket) -> dict[str, Any]:
    """One message or notification, with its RCVINFO decoded."""
    data, ancdata, flags, addr = sock.recvmsg(65536, socket.CMSG_SPACE(RCVINFO.size))
    out: dict[str, Any] = {"data": data, "addr": addr, "flags": flags}
    if flags & MSG_NOTIFICATION:
        kind, _, _ = NOTIF_HEADER.unpack_from(data)
        out["notification"] = kind
        if kind == SCTP_ASSOC_CHANGE:
            _, _, _, state, error, outs, ins, assoc_id = ASSOC_CHANGE.unpack_from(data)
            out.update(state=state, error=error, outbound=outs, inbound=ins, assoc_id=assoc_id)
        return out
    for level, kind, payload in ancdata:
        if level == SOL_SCTP and kind == SCTP_RCVINFO:
            sid, ssn, rflags, ppid, _tsn, _cum, _ctx, assoc_id = RCVINFO.unpack(payload[:RCVINFO.size])
            out.update(stream=sid, ssn=ssn, rcv_flags=rflags, ppid=socket.ntohl(ppid),
                       assoc_id=assoc_id)
    return out


def std_recv_data(sock: socket.socket) -> dict[str, Any]:
    """The next data message, skipping notifications."""
    while True:
        msg = std_recv(sock)
        if not msg["flags"] & MSG_NOTIFICATION:
            return msg


def std_recv_assoc_change(sock: socket.socket) -> dict[str, Any]:
    """The next SCTP_ASSOC_CHANGE notification, skipping anything else."""
    while True:
        msg = std_recv(sock)
        if msg.get("notification") == SCTP_ASSOC_CHANGE:
            return msg


def pack_sockaddr(addr: str, port: int) -> bytes:
    if ":" in addr:
        return (struct.pack("@H", socket.AF_INET6) + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, addr) + struct.pack("@I", 0))
    return (struct.pack("@H", socket.AF_INET) + struct.pack("!H", port)
            + socket.inet_aton(addr) + bytes(8))


def unpack_sockaddrs(buf: bytes, count: int) -> list[tuple[str, int]]:
    out, offset = [], 0
    for _ in range(count):
        (family,) = struct.unpack_from("@H", buf, offset)
        (port,) = struct.unpack_from("!H", buf, offset + 2)
        if family == socket.AF_INET:
            out.append((socket.inet_ntoa(buf[offset + 4:offset + 8]), port))
            offset += 16
        else:
            out.append((socket.inet_ntop(socket.AF_INET6, buf[offset + 8:offset + 24]), port))
            offset += 28
    return out


def std_bindx(sock: socket.socket, addrs: list[str], port: int) -> None:
    """sctp_bindx(SCTP_BINDX_ADD_ADDR) with plain setsockopt."""
    sock.setsockopt(SOL_SCTP, SCTP_SOCKOPT_BINDX_ADD, b"".join(pack_sockaddr(a, port) for a in addrs))


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_uint32)]
_libc.getsockopt.restype = ctypes.c_int


def getsockopt_inout(sock: socket.socket, optname: int, buf: bytes) -> bytes:
    """getsockopt whose buffer carries input too (socket.getsockopt cannot)."""
    raw = ctypes.create_string_buffer(buf, len(buf))
    size = ctypes.c_uint32(len(buf))
    # >= 0 is success: SCTP_SOCKOPT_PEELOFF returns the new descriptor.
    if _libc.getsockopt(sock.fileno(), SOL_SCTP, optname, raw, ctypes.byref(size)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return raw.raw[:size.value]


def std_peeloff(sock: socket.socket, assoc_id: int) -> socket.socket:
    out = getsockopt_inout(sock, SCTP_SOCKOPT_PEELOFF, struct.pack("@ii", assoc_id, 0))
    _, fd = struct.unpack("@ii", out[:8])
    return socket.socket(fileno=fd)  # takes ownership of fd


def std_peer_addrs(sock: socket.socket, assoc_id: int) -> list[tuple[str, int]]:
    out = getsockopt_inout(sock, SCTP_GET_PEER_ADDRS, struct.pack("@iI", assoc_id, 0) + bytes(28 * 16))
    _, count = struct.unpack_from("@iI", out)
    return unpack_sockaddrs(out[8:], count)


# --- pysctp helpers ----------------------------------------------------------------


def py_socket(pysctp: Any, closing: contextlib.ExitStack, addr: str | None, *, port: int = 0,
              shutdown: bool = False) -> Any:
    sock = pysctp.sctpsocket_udp(family_of(addr or "0.0.0.0"))
    closing.callback(sock.close)
    sock.events.clear()
    sock.events.data_io = True
    sock.events.association = True
    sock.events.shutdown = shutdown
    if addr is not None:
        sock.bind((addr, port))
    return sock


def readable(sock: Any, timeout: float = TIMEOUT) -> bool:
    return bool(select.select([sock.fileno()], [], [], timeout)[0])


def py_recv(pysctp: Any, sock: Any, *, want_notification: bool = False) -> tuple[Any, bytes, Any]:
    """(fromaddr, msg, info): the next data message, or notification if asked.

    pysctp's C code calls recvmsg() on the descriptor itself, ignoring the
    Python socket's timeout (settimeout() would just make it non-blocking and
    raise EAGAIN): wait with select() instead.
    """
    while True:
        if not readable(sock):
            raise TimeoutError(f"nothing to receive within {TIMEOUT} s")
        fromaddr, flags, msg, info = sock.sctp_recv(65536)
        if bool(flags & pysctp.FLAG_NOTIFICATION) == want_notification:
            return fromaddr, msg, info


def py_recv_assoc_change(pysctp: Any, sock: Any) -> Any:
    while True:
        _fromaddr, _msg, info = py_recv(pysctp, sock, want_notification=True)
        if isinstance(info, pysctp.assoc_change):
            return info


# --- raw capture of DATA chunks --------------------------------------------------------


@contextlib.contextmanager
def data_chunks(port: int) -> Iterator[list[dict[str, int]]]:
    """Collect DATA chunks of IPv4 SCTP packets to *port* (read on exit)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_SCTP)
    chunks: list[dict[str, int]] = []
    try:
        raw.settimeout(0.2)
        yield chunks
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                packet = raw.recv(65536)
            except TimeoutError:
                break
            ihl = (packet[0] & 0x0F) * 4
            sctp = packet[ihl:]
            _src, dst = struct.unpack_from("!HH", sctp)
            if dst != port:
                continue
            offset = 12
            while offset + 4 <= len(sctp):
                ctype, _cflags, clen = struct.unpack_from("!BBH", sctp, offset)
                if clen < 4:
                    break
                if ctype == 0:  # DATA
                    _tsn, sid, _ssn, ppid = struct.unpack_from("!IHHI", sctp, offset + 4)
                    chunks.append({"stream": sid, "ppid": ppid, "payload": sctp[offset + 16:offset + clen]})
                offset += (clen + 3) & ~3
    finally:
        raw.close()


# --- tests -----------------------------------------------------------------------------------

LOOPBACKS = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


def test_kernel_has_sctp() -> None:
    assert os.path.isdir("/proc/net/sctp")
    with socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP) as sock:
        assert sock.type == socket.SOCK_SEQPACKET
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_SCTP) as sock:
        assert sock.proto == socket.IPPROTO_SCTP


@pytest.mark.parametrize("addr", LOOPBACKS)
def test_pysctp_one_to_many_exchange(pysctp, closing, addr):
    server = py_socket(pysctp, closing, addr)
    server.listen(8)
    port = server.getsockname()[1]
    client = py_socket(pysctp, closing, None if ":" not in addr else addr)

    assert client.sctp_send(b"hello", to=(addr, port), ppid=ASAP_PPID, stream=0) == 5
    up = py_recv_assoc_change(pysctp, server)
    assert up.state == pysctp.assoc_change.state_COMM_UP
    assert up.outbound_streams >= 1 and up.inbound_streams >= 1
    fromaddr, msg, info = py_recv(pysctp, server)
    assert msg == b"hello"
    assert info.stream == 0
    assert socket.ntohl(info.ppid) == ASAP_PPID  # raw network order from pysctp
    assert info.assoc_id == up.assoc_id
    assert fromaddr[0] == addr

    server.sctp_send(b"world", to=fromaddr, ppid=ASAP_PPID, stream=0)
    assert py_recv_assoc_change(pysctp, client).state == pysctp.assoc_change.state_COMM_UP
    _, msg, info = py_recv(pysctp, client)
    assert (msg, info.stream, socket.ntohl(info.ppid)) == (b"world", 0, ASAP_PPID)


@pytest.mark.parametrize("addr", LOOPBACKS)
def test_stdlib_one_to_many_exchange(closing, addr):
    server = std_socket(closing, addr)
    server.listen(8)
    port = server.getsockname()[1]
    client = std_socket(closing, addr)

    assert std_send(client, b"hello", (addr, port), ppid=ASAP_PPID) == 5
    up = std_recv_assoc_change(server)
    assert up["state"] == SCTP_COMM_UP
    msg = std_recv_data(server)
    assert msg["data"] == b"hello"
    assert (msg["ppid"], msg["stream"], msg["assoc_id"]) == (ASAP_PPID, 0, up["assoc_id"])
    assert msg["addr"][:2] == client.getsockname()[:2]

    std_send(server, b"world", msg["addr"], ppid=ASAP_PPID)
    reply = std_recv_data(client)
    assert (reply["data"], reply["ppid"], reply["stream"]) == (b"world", ASAP_PPID, 0)


def _check_ppids(server: socket.socket, port: int, send: Any, sent: list[tuple[int, int, bytes]]) -> None:
    with data_chunks(port) as chunks:
        for ppid, stream, data in sent:
            send(data, ("127.0.0.1", port), ppid, stream)
        got = [std_recv_data(server) for _ in sent]
    # Order holds within a stream only: compare sorted.
    assert sorted((m["ppid"], m["stream"], m["data"]) for m in got) == sorted(sent)
    # The DATA chunks on the wire carry the PPIDs (network order) and streams.
    assert sorted((c["ppid"], c["stream"], c["payload"]) for c in chunks) == sorted(sent)


def test_stdlib_ppid_and_stream_per_message(closing):
    server = std_socket(closing, "127.0.0.1")
    server.listen(8)
    client = std_socket(closing, "127.0.0.1")
    sent = [(ASAP_PPID, 0, b"asap"), (ENRP_PPID, 1, b"enrp"), (0xFFFFFFFE, 2, b"big"),
            (0x80, 3, b"80"), (0, 0, b"zero")]
    _check_ppids(server, server.getsockname()[1],
                 lambda data, to, ppid, stream: std_send(client, data, to, ppid=ppid, stream=stream),
                 sent)


def test_pysctp_ppid_and_stream_per_message(pysctp, closing):
    server = std_socket(closing, "127.0.0.1")
    server.listen(8)
    client = py_socket(pysctp, closing, "127.0.0.1")
    sent = [(ASAP_PPID, 0, b"asap"), (ENRP_PPID, 1, b"enrp"), (0x7F, 2, b"7f"), (0, 0, b"zero")]
    _check_ppids(server, server.getsockname()[1],
                 lambda data, to, ppid, stream: client.sctp_send(data, to=to, ppid=ppid, stream=stream),
                 sent)


def test_pysctp_ppid_limit(pysctp, closing):
    """pysctp byte-swaps the PPID into a C int: a PPID whose low byte is >= 0x80
    overflows.  ASAP (11) and ENRP (12) are fine; use the stdlib path beyond."""
    client = py_socket(pysctp, closing, "127.0.0.1")
    with pytest.raises(OverflowError):
        client.sctp_send(b"x", to=("127.0.0.1", 9), ppid=0x80)


def test_pysctp_multihomed_server(pysctp, closing, sctp_extra_addresses):
    first, second = sctp_extra_addresses[:2]
    server = py_socket(pysctp, closing, None)
    server.bindx([(first, 0)])
    port = server.getsockname()[1]
    server.bindx([(second, port)])
    server.listen(8)
    assert sorted(a for a, _ in server.getladdrs(0)) == sorted([first, second])

    client = py_socket(pysctp, closing, None)
    client.sctp_send(b"via first", to=(first, port), ppid=ASAP_PPID)
    up = py_recv_assoc_change(pysctp, server)
    assert py_recv(pysctp, server)[1] == b"via first"
    client_up = py_recv_assoc_change(pysctp, client)
    peer = sorted(client.getpaddrs(client_up.assoc_id))
    assert peer == sorted([(first, port), (second, port)])
    # The second address reaches the same association.
    client.sctp_send(b"via second", to=(second, port), ppid=ASAP_PPID)
    _, msg, info = py_recv(pysctp, server)
    assert (msg, info.assoc_id) == (b"via second", up.assoc_id)


def test_stdlib_multihomed_both_ends(closing, sctp_extra_addresses):
    first, second, third = sctp_extra_addresses[:3]
    server = std_socket(closing, first)
    port = server.getsockname()[1]
    std_bindx(server, [second], port)
    server.listen(8)
    client = std_socket(closing, third)
    client_port = client.getsockname()[1]
    std_bindx(client, ["127.0.0.1"], client_port)  # another scope: not advertised

    std_send(client, b"hi", (second, port), ppid=ASAP_PPID)
    up = std_recv_assoc_change(server)
    assert std_recv_data(server)["data"] == b"hi"
    assert std_peer_addrs(server, up["assoc_id"]) == [(third, client_port)]
    client_up = std_recv_assoc_change(client)
    assert sorted(std_peer_addrs(client, client_up["assoc_id"])) == sorted([(first, port), (second, port)])


def test_pysctp_comm_lost_when_peer_aborts(pysctp, closing):
    server = py_socket(pysctp, closing, "127.0.0.1")
    server.listen(8)
    port = server.getsockname()[1]
    client = py_socket(pysctp, closing, "127.0.0.1")
    client.sctp_send(b"x", to=("127.0.0.1", port), ppid=ASAP_PPID)
    up = py_recv_assoc_change(pysctp, server)
    py_recv(pysctp, server)

    # close() with SO_LINGER 0 aborts every association of the socket.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("@ii", 1, 0))
    client.close()
    lost = py_recv_assoc_change(pysctp, server)
    assert lost.state == pysctp.assoc_change.state_COMM_LOST
    assert lost.assoc_id == up.assoc_id
    assert socket.ntohs(lost.error) == CAUSE_USER_ABORT  # raw network order from pysctp


def test_stdlib_comm_lost_on_abort_and_shutdown_comp_on_close(closing):
    server = std_socket(closing, "127.0.0.1", events=(SCTP_ASSOC_CHANGE, SCTP_SHUTDOWN_EVENT))
    server.listen(8)
    port = server.getsockname()[1]

    aborter = std_socket(closing, "127.0.0.1")
    std_send(aborter, b"a", ("127.0.0.1", port), ppid=ASAP_PPID)
    up = std_recv_assoc_change(server)
    std_recv_data(server)
    std_send(aborter, b"", ("127.0.0.1", port), ppid=0, flags=SCTP_ABORT)  # sctp_sendmsg(SCTP_ABORT)
    lost = std_recv_assoc_change(server)
    assert (lost["state"], lost["assoc_id"]) == (SCTP_COMM_LOST, up["assoc_id"])
    assert lost["error"] == socket.htons(CAUSE_USER_ABORT)  # the cause code, as on the wire

    closer = std_socket(closing, "127.0.0.1")
    std_send(closer, b"c", ("127.0.0.1", port), ppid=ASAP_PPID)
    up = std_recv_assoc_change(server)
    std_recv_data(server)
    closer.close()  # graceful: SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE
    shutdown = std_recv(server)
    assert shutdown.get("notification") == SCTP_SHUTDOWN_EVENT
    comp = std_recv_assoc_change(server)
    assert (comp["state"], comp["assoc_id"]) == (SCTP_SHUTDOWN_COMP, up["assoc_id"])


def test_pysctp_peeloff(pysctp, closing):
    server = py_socket(pysctp, closing, "127.0.0.1")
    server.listen(8)
    port = server.getsockname()[1]
    client = py_socket(pysctp, closing, "127.0.0.1")
    client.sctp_send(b"before", to=("127.0.0.1", port), ppid=ASAP_PPID)
    up = py_recv_assoc_change(pysctp, server)
    py_recv(pysctp, server)

    peeled = server.peeloff(up.assoc_id)
    closing.callback(peeled.close)
    assert peeled.type == socket.SOCK_STREAM
    client.sctp_send(b"after", to=("127.0.0.1", port), ppid=ENRP_PPID, stream=1)
    _, msg, info = py_recv(pysctp, peeled)
    assert (msg, info.stream, socket.ntohl(info.ppid)) == (b"after", 1, ENRP_PPID)
    peeled.sctp_send(b"reply", ppid=ASAP_PPID)  # one-to-one: no destination
    assert py_recv(pysctp, client)[1] == b"reply"
    # The one-to-many socket no longer sees that association.
    assert not readable(server, 0.3)


def test_stdlib_peeloff_via_ctypes(closing):
    server = std_socket(closing, "127.0.0.1")
    server.listen(8)
    port = server.getsockname()[1]
    client = std_socket(closing, "127.0.0.1")
    std_send(client, b"before", ("127.0.0.1", port), ppid=ASAP_PPID)
    up = std_recv_assoc_change(server)
    std_recv_data(server)

    peeled = std_peeloff(server, up["assoc_id"])
    closing.callback(peeled.close)
    # One-to-one now (it has a peer), though SO_TYPE still says SOCK_SEQPACKET.
    assert peeled.type == socket.SOCK_SEQPACKET
    assert peeled.getpeername()[:2] == client.getsockname()[:2]
    peeled.settimeout(TIMEOUT)
    std_send(client, b"after", ("127.0.0.1", port), ppid=ASAP_PPID, stream=2)
    msg = std_recv_data(peeled)  # RCVINFO is inherited by the peeled socket
    assert (msg["data"], msg["ppid"], msg["stream"]) == (b"after", ASAP_PPID, 2)
    std_send(peeled, b"reply", None, ppid=ASAP_PPID)
    assert std_recv_data(client)["data"] == b"reply"


def test_dual_stack_ipv6_socket_accepts_ipv4(closing):
    server = std_socket(closing, "::")
    server.listen(8)
    port = server.getsockname()[1]
    client = std_socket(closing, "127.0.0.1")
    std_send(client, b"v4", ("127.0.0.1", port), ppid=ASAP_PPID)
    msg = std_recv_data(server)
    assert msg["data"] == b"v4"
    assert msg["addr"][0] == "::ffff:127.0.0.1"  # v4-mapped by default
