"""Message channels over TCP and kernel SCTP for asyncio (does I/O).

A :class:`Channel` is one TCP connection or one SCTP association carrying
whole messages; an :class:`Endpoint` listens (and, for SCTP, is the one-to-many
socket that RSPLIB's registrars and pool elements use, so it can also open
associations from its own port).  The API is in ``docs/design-asap.md``.

Framings:

``"asap"``
    RSerPool messages.  TCP: back to back on the stream, cut at the 16-bit
    length in each 4-byte header (:class:`rserpool.wire.StreamFramer`; what
    Wireshark expects on tcp/3863).  SCTP: one message per SCTP message.
``"session"``
    PU <-> PE data plus ASAP control (digest 6.16).  SCTP: PPID per message
    (11 = ASAP).  TCP has no PPID, so each frame is ``ppid u32 | length u32 |
    payload`` (big-endian, length of the payload only): rserpool's own framing,
    since no RSerPool TCP mapping was ever standardised (digest 7.4).

SCTP uses pysctp (``import sctp``) for what the ``socket`` module lacks:
``bindx`` (several local addresses), receiving with PPID, stream and
association id per message, association notifications and peer address lists.
pysctp's ``sctp_recv`` returns the PPID in network order (``socket.ntohl``),
see ``tests/kernel_sctp``.  Sending uses ``socket.sendmsg`` with an
``SCTP_SNDINFO`` control message (PPID, stream, association id, ABORT/EOF
flags): pysctp's ``sctp_send`` overflows on PPIDs whose network-order value
exceeds a C int, refuses empty ABORT messages, and can only address an
association by peer address.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import socket
import struct
from collections import deque
from typing import Any, Callable, Iterable, Optional

from ..constants import MAX_MESSAGE_SIZE, PPID
from ..errors import WireError
from ..wire import StreamFramer

__all__ = [
    "Channel", "Endpoint", "open_channel", "start_endpoint", "sctp_available",
    "raise_fd_limit", "SESSION_HEADER",
]

log = logging.getLogger("rserpool.transport")

#: TCP session frame header: PPID, payload length.
SESSION_HEADER = struct.Struct("!II")
#: Most bytes queued for sending on one SCTP association before it is aborted
#: (a peer that never reads must not exhaust memory) ...
MAX_SCTP_BACKLOG = 1 << 20
#: ... and on all the associations of one socket together: beyond it, the
#: association whose message does not fit is aborted.
MAX_SCTP_BACKLOG_TOTAL = 64 << 20
#: A TCP peer's messages are handed to the owner only while fewer than this
#: many reply bytes wait to be written to it: a peer that pipelines requests
#: but never reads gets no further (the rest stays in the kernel's buffers).
TCP_WRITE_HIGH_WATER = 256 << 10

# <linux/sctp.h>: struct sctp_sndinfo and its flags, for sendmsg() ancillary data
_SCTP_SNDINFO = 2
_SNDINFO = struct.Struct("@HHIIi")  # sid, flags, ppid, context, assoc_id
_SCTP_ABORT = 0x4
_SCTP_EOF = 0x200

MessageCallback = Callable[["Channel", bytes, int], None]
CloseCallback = Callable[["Channel", Optional[str]], None]

_sctp_module: Any = None
_sctp_checked: Optional[bool] = None


def _load_sctp() -> Any:
    """The pysctp module, or an ImportError that says how to get it."""
    global _sctp_module
    if _sctp_module is None:
        try:
            import sctp  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on the host
            raise ImportError(f"SCTP needs pysctp (pip install pysctp; apt install "
                              f"libsctp-dev): {exc}") from exc
        _sctp_module = sctp
    return _sctp_module


def sctp_available() -> bool:
    """True when this kernel has SCTP and pysctp is importable."""
    global _sctp_checked
    if _sctp_checked is None:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
            s.close()
            _load_sctp()
            _sctp_checked = True
        except (OSError, ImportError):
            _sctp_checked = False
    return _sctp_checked


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - container limits
            pass
    return soft


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def _plain(addr: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4``; other addresses unchanged."""
    if addr.startswith("::ffff:") and "." in addr:
        return addr[7:]
    return addr


class Channel:
    """One TCP connection or SCTP association carrying whole messages.

    Set :attr:`on_message` ``(channel, data, ppid)`` and :attr:`on_close`
    ``(channel, reason)`` before the loop runs again after you get the
    channel.  An exception in a callback is logged and aborts this channel only.
    """

    transport: str = ""

    def __init__(self, framing: str, max_message_size: int,
                 on_message: Optional[MessageCallback] = None,
                 on_close: Optional[CloseCallback] = None) -> None:
        if framing not in ("asap", "session"):
            raise ValueError(f"framing must be 'asap' or 'session', not {framing!r}")
        self.framing = framing
        self.max_message_size = max_message_size
        self.on_message = on_message
        self.on_close = on_close
        self.peer: tuple[str, int] = ("", 0)
        self.peer_addresses: tuple[str, ...] = ()
        self.local: tuple[str, int] = ("", 0)
        self.closed = False
        self.close_reason: Optional[str] = None
        self._loop = asyncio.get_running_loop()
        self.last_receive = self._loop.time()
        self._closed_future: asyncio.Future[None] = self._loop.create_future()
        #: free slot for the owner (e.g. a registrar's per-association state)
        self.context: Any = None

    # -- to implement -----------------------------------------------------------------
    def send(self, data: bytes, *, ppid: int = PPID.ASAP, stream: int = 0) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self, reason: Optional[str] = None) -> None:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Bytes of an unfinished incoming message held (0 if none)."""
        return 0

    @property
    def write_buffered(self) -> int:
        return 0

    # -- shared -------------------------------------------------------------------------
    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)

    def _deliver(self, data: bytes, ppid: int) -> None:
        self.last_receive = self._loop.time()
        cb = self.on_message
        if cb is None or self.closed:
            return
        try:
            cb(self, data, ppid)
        except Exception:
            log.exception("%s: message handler failed; aborting the channel", self)
            self.abort("message handler failed")

    def _set_closed(self, reason: Optional[str]) -> None:
        if self.closed and self._closed_future.done():
            return
        self.closed = True
        if self.close_reason is None:
            self.close_reason = reason
        if not self._closed_future.done():
            self._closed_future.set_result(None)
        cb = self.on_close
        self.on_close = None
        if cb is not None:
            try:
                cb(self, self.close_reason)
            except Exception:
                log.exception("%s: close handler failed", self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"<{type(self).__name__} {self.transport} {self.local[0]}:{self.local[1]} <-> "
                f"{self.peer[0]}:{self.peer[1]} {state}>")


# ======================================================================================
# TCP
# ======================================================================================

class _SessionFramer:
    """Cuts ``ppid u32 | length u32 | payload`` frames out of a byte stream."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self._max = max_size

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while len(buf) - pos >= 8:
            ppid, length = SESSION_HEADER.unpack_from(buf, pos)
            if length > self._max:
                raise WireError(f"session frame of {length} bytes exceeds the limit of "
                                f"{self._max}", pos + 4)
            if len(buf) - pos - 8 < length:
                break
            out.append((ppid, bytes(buf[pos + 8:pos + 8 + length])))
            pos += 8 + length
        if pos:
            del buf[:pos]
        return out


class TcpChannel(Channel, asyncio.Protocol):
    """A TCP connection (asyncio protocol) carrying framed messages."""

    transport = "tcp"

    def __init__(self, framing: str, max_message_size: int,
                 on_message: Optional[MessageCallback] = None,
                 on_close: Optional[CloseCallback] = None,
                 on_made: Optional[Callable[["TcpChannel"], None]] = None) -> None:
        super().__init__(framing, max_message_size, on_message, on_close)
        self._transport: Optional[asyncio.Transport] = None
        self._framer: Any = (StreamFramer(max_message_size) if framing == "asap"
                             else _SessionFramer(max_message_size))
        self._on_made = on_made
        self._paused_reading = False
        self._writing_paused = False
        self._drain_scheduled = False
        self._inbox: deque[Any] = deque()
        self._cork: Optional[list[bytes]] = None
        self._cork_bytes = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.peer = (_plain(peer[0]), peer[1])
        self.local = (_plain(local[0]), local[1])
        self.peer_addresses = (self.peer[0],)
        self.last_receive = self._loop.time()
        if self._on_made is not None:
            made, self._on_made = self._on_made, None
            try:
                made(self)
            except Exception:
                log.exception("%s: new-channel handler failed", self)
                self.abort("new-channel handler failed")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self._framer.feed(data)
        except WireError as exc:
            self.abort(f"framing error: {exc}")
            return
        if not frames:
            self.last_receive = self._loop.time()
            return
        self._inbox.extend(frames)
        self._drain()

    def _drain(self) -> None:
        """Hand queued messages to the owner while the peer reads its replies.

        Replies written meanwhile are sent in one write after the batch (one
        system call instead of one per pipelined request).  Once
        TCP_WRITE_HIGH_WATER bytes wait for the peer, delivery stops and
        reading pauses until asyncio says the buffer drained."""
        self._drain_scheduled = False
        inbox = self._inbox
        t = self._transport
        if t is None:
            return
        asap = self.framing == "asap"
        self._cork = []
        self._cork_bytes = 0
        try:
            while inbox and not self.closed:
                if self._cork_bytes + t.get_write_buffer_size() >= TCP_WRITE_HIGH_WATER:
                    break
                item = inbox.popleft()
                if asap:
                    self._deliver(item, PPID.ASAP)
                else:
                    self._deliver(item[1], item[0])
        finally:
            self._uncork()
        if self.closed:
            inbox.clear()
            return
        if inbox:
            self._set_reading(False)
            if not self._writing_paused and not self._drain_scheduled:
                # below asyncio's own high-water mark: no resume_writing will
                # come, so try again on the next loop iteration
                self._drain_scheduled = True
                self._loop.call_soon(self._drain)
        elif not self._writing_paused:
            self._set_reading(True)

    def _set_reading(self, on: bool) -> None:
        t = self._transport
        if t is None or t.is_closing() or self._paused_reading == (not on):
            return
        self._paused_reading = not on
        if on:
            t.resume_reading()
        else:
            t.pause_reading()

    def _uncork(self) -> None:
        cork, self._cork = self._cork, None
        self._cork_bytes = 0
        t = self._transport
        if cork and t is not None and not t.is_closing():
            t.write(cork[0] if len(cork) == 1 else b"".join(cork))

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Optional[Exception]) -> None:
        reason = self.close_reason
        if reason is None:
            reason = f"connection lost: {exc}" if exc else "closed by peer"
        self._set_closed(reason)

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading its requests too.
        self._writing_paused = True
        self._set_reading(False)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._inbox:
            self._drain()
        else:
            self._set_reading(True)

    # Channel
    def send(self, data: bytes, *, ppid: int = PPID.ASAP, stream: int = 0) -> None:
        t = self._transport
        if self.closed or t is None or t.is_closing():
            raise ConnectionError(f"{self!r} is closed")
        if self.framing != "asap":
            data = SESSION_HEADER.pack(ppid, len(data)) + data
        if self._cork is not None:
            self._cork.append(data)
            self._cork_bytes += len(data)
        else:
            t.write(data)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self.close_reason is None:
                self.close_reason = "closed locally"
            self._uncork()
            self._transport.close()
            self.closed = True  # deliver nothing more (on_close follows)
            self._inbox.clear()

    def abort(self, reason: Optional[str] = None) -> None:
        if self.close_reason is None:
            self.close_reason = reason or "aborted locally"
        if self._transport is not None:
            self._transport.abort()
            self.closed = True  # deliver nothing more (on_close follows)
            self._inbox.clear()

    @property
    def pending(self) -> int:
        """Bytes held: an unfinished message, plus whole messages not yet
        handed over because the peer does not read its replies."""
        return self._framer.pending + sum(len(m) if isinstance(m, bytes) else len(m[1])
                                          for m in self._inbox)

    @property
    def write_buffered(self) -> int:
        return self._cork_bytes + (self._transport.get_write_buffer_size()
                                   if self._transport else 0)


# ======================================================================================
# SCTP
# ======================================================================================

class _SctpBase:
    """A non-blocking pysctp socket served by loop.add_reader/add_writer."""

    def __init__(self, sock: Any, max_message_size: int) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._sctp = _load_sctp()
        self._max = max_message_size
        self._loop = asyncio.get_running_loop()
        sock._sk.setblocking(False)
        self._writer_armed = False
        #: bytes queued on all associations of this socket (MAX_SCTP_BACKLOG_TOTAL)
        self._backlog_total = 0
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        sctp = self._sctp
        for _ in range(64):  # bounded batch, then let others run
            try:
                fromaddr, flags, msg, info = self._sock.sctp_recv(self._max + 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return
                self._on_socket_error(exc)
                return
            if flags & sctp.FLAG_NOTIFICATION:
                self._on_notification(info)
            else:
                self._on_data(fromaddr, flags, msg, info)

    def _arm_writer(self) -> None:
        if not self._writer_armed:
            self._writer_armed = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _disarm_writer(self) -> None:
        if self._writer_armed:
            self._writer_armed = False
            self._loop.remove_writer(self._fd)

    def _sendmsg(self, data: bytes, ppid: int, stream: int, flags: int, assoc_id: int) -> bool:
        """Send one message with an ``SCTP_SNDINFO`` control message: True when
        sent, False when the socket buffer is full (try again when writable).

        The association is named by ``assoc_id`` (0 on a one-to-one socket),
        never by a destination address, so a send can never set up a new
        association by accident (pysctp's sctp_send also overflows on PPIDs
        >= 2**31 after htonl).

        :raises OSError: any other send failure.
        """
        try:
            self._sock._sk.sendmsg([data], [(socket.IPPROTO_SCTP, _SCTP_SNDINFO,
                                             _SNDINFO.pack(stream, flags, socket.htonl(ppid),
                                                           0, assoc_id))])
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return False
            raise

    def _close_socket(self) -> None:
        try:
            self._loop.remove_reader(self._fd)
        except Exception:  # pragma: no cover - loop closed
            pass
        self._disarm_writer()
        try:
            self._sock.close()
        except OSError:  # pragma: no cover
            pass

    # to implement
    def _on_notification(self, info: Any) -> None: ...
    def _on_data(self, fromaddr: Any, flags: int, msg: bytes, info: Any) -> None: ...
    def _on_writable(self) -> None: ...
    def _on_socket_error(self, exc: OSError) -> None: ...


class SctpChannel(Channel):
    """An SCTP association: of an :class:`Endpoint`'s one-to-many socket, or
    of its own one-to-one socket (:func:`open_channel`)."""

    transport = "sctp"

    def __init__(self, owner: Any, assoc_id: int, framing: str, max_message_size: int,
                 on_message: Optional[MessageCallback] = None,
                 on_close: Optional[CloseCallback] = None) -> None:
        super().__init__(framing, max_message_size, on_message, on_close)
        self._owner = owner
        self.assoc_id = assoc_id
        self._partial = bytearray()
        self._backlog: deque[tuple[bytes, int, int, int]] = deque()
        self._backlog_bytes = 0

    @property
    def pending(self) -> int:
        return len(self._partial)

    @property
    def write_buffered(self) -> int:
        return self._backlog_bytes

    def _on_fragment(self, msg: bytes, eor: bool, ppid: int) -> None:
        if not eor or self._partial:
            self._partial += msg
            if len(self._partial) > self.max_message_size:
                self.abort(f"message larger than {self.max_message_size} bytes")
                return
            if not eor:
                self.last_receive = self._loop.time()
                return
            msg = bytes(self._partial)
            self._partial.clear()
        self._deliver(msg, ppid)

    def send(self, data: bytes, *, ppid: int = PPID.ASAP, stream: int = 0) -> None:
        if self.closed:
            raise ConnectionError(f"{self!r} is closed")
        if not data:
            raise ValueError("SCTP cannot send an empty message")
        if self._backlog:
            self._queue(data, ppid, stream, 0)
            return
        self._owner._send(self, data, ppid, stream, 0)

    def _queue(self, data: bytes, ppid: int, stream: int, flags: int) -> None:
        owner = self._owner
        if (self._backlog_bytes + len(data) > MAX_SCTP_BACKLOG
                or owner._backlog_total + len(data) > MAX_SCTP_BACKLOG_TOTAL):
            self.abort("peer does not read (send backlog full)")
            return
        self._backlog.append((data, ppid, stream, flags))
        self._backlog_bytes += len(data)
        owner._backlog_total += len(data)
        owner._arm_writer()

    def _flush(self) -> bool:
        """Send what is queued; True when the backlog is empty."""
        while self._backlog and not self.closed:
            data, ppid, stream, flags = self._backlog[0]
            if not self._owner._try_send(self, data, ppid, stream, flags):
                return False
            self._backlog.popleft()
            self._backlog_bytes -= len(data)
            self._owner._backlog_total -= len(data)
        return True

    def _set_closed(self, reason: Optional[str]) -> None:
        # whatever is still queued is dropped: give its bytes back
        self._owner._backlog_total -= self._backlog_bytes
        self._backlog.clear()
        self._backlog_bytes = 0
        super()._set_closed(reason)

    def close(self) -> None:
        if self.closed:
            return
        if self.close_reason is None:
            self.close_reason = "closed locally"
        self._owner._shutdown(self)

    def abort(self, reason: Optional[str] = None) -> None:
        if self.closed:
            return
        if self.close_reason is None:
            self.close_reason = reason or "aborted locally"
        self._owner._abort(self)


class _OneToOne(_SctpBase):
    """The owner of a client channel on a one-to-one (TCP-style) SCTP socket."""

    def __init__(self, sock: Any, channel_args: dict[str, Any]) -> None:
        super().__init__(sock, channel_args["max_message_size"])
        self.channel = SctpChannel(self, 0, **channel_args)

    def _on_data(self, fromaddr: Any, flags: int, msg: bytes, info: Any) -> None:
        ch = self.channel
        if not msg:  # orderly end of a TCP-style association
            self._finish("closed by peer")
            return
        ch._on_fragment(msg, bool(flags & self._sctp.FLAG_EOR), socket.ntohl(info.ppid & 0xFFFFFFFF))

    def _on_notification(self, info: Any) -> None:
        sctp = self._sctp
        if isinstance(info, sctp.assoc_change):
            st = info.state
            if st in (sctp.assoc_change.state_COMM_LOST, sctp.assoc_change.state_SHUTDOWN_COMP,
                      sctp.assoc_change.state_CANT_START_ASSOCIATION):
                self._finish("association lost" if st != sctp.assoc_change.state_SHUTDOWN_COMP
                             else "association shut down")
        elif isinstance(info, sctp.shutdown_event):
            self._finish("association shut down by peer")

    def _on_socket_error(self, exc: OSError) -> None:
        self._finish(f"socket error: {exc}")

    def _finish(self, reason: str) -> None:
        self._close_socket()
        self.channel._set_closed(reason)

    def _try_send(self, ch: SctpChannel, data: bytes, ppid: int, stream: int,
                  flags: int) -> bool:
        try:
            return self._sendmsg(data, ppid, stream, flags, 0)
        except OSError as exc:
            self._finish(f"send failed: {exc}")
            return True

    def _send(self, ch: SctpChannel, data: bytes, ppid: int, stream: int, flags: int) -> None:
        if not self._try_send(ch, data, ppid, stream, flags):
            ch._queue(data, ppid, stream, flags)

    def _on_writable(self) -> None:
        if self.channel._flush():
            self._disarm_writer()

    def _shutdown(self, ch: SctpChannel) -> None:
        if ch._backlog:
            ch._flush()
        self._finish(ch.close_reason or "closed locally")

    def _abort(self, ch: SctpChannel) -> None:
        try:
            self._sock._sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("@ii", 1, 0))
        except OSError:  # pragma: no cover
            pass
        self._finish(ch.close_reason or "aborted locally")


# ======================================================================================
# Endpoints
# ======================================================================================

class Endpoint:
    """A listening endpoint: TCP server or SCTP one-to-many socket."""

    transport: str = ""

    def __init__(self) -> None:
        self.addresses: list[tuple[str, int]] = []
        self.port = 0
        self.channels: set[Channel] = set()
        self._closed = asyncio.get_running_loop().create_future()

    async def connect(self, host: str, port: int, *, timeout: float = 5.0,
                      on_message: Optional[MessageCallback] = None,
                      on_close: Optional[CloseCallback] = None) -> Channel:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def _track(self, ch: Channel) -> None:
        self.channels.add(ch)
        ch._closed_future.add_done_callback(lambda _f, ch=ch: self.channels.discard(ch))

    def __repr__(self) -> str:
        where = ", ".join(f"{h}:{p}" for h, p in self.addresses)
        return f"<{type(self).__name__} {self.transport} {where}>"


class TcpEndpoint(Endpoint):
    transport = "tcp"

    def __init__(self, framing: str, max_message_size: int,
                 on_channel: Callable[[Channel], None]) -> None:
        super().__init__()
        self.framing = framing
        self.max_message_size = max_message_size
        self._on_channel = on_channel
        self._servers: list[asyncio.AbstractServer] = []

    def _protocol(self) -> TcpChannel:
        return TcpChannel(self.framing, self.max_message_size, on_made=self._made)

    def _made(self, ch: TcpChannel) -> None:
        self._track(ch)
        self._on_channel(ch)

    async def _start(self, addresses: Iterable[str], port: int, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        for host in addresses:
            server = await loop.create_server(self._protocol, host, port, backlog=backlog,
                                              reuse_address=True)
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                self.addresses.append((_plain(name[0]), name[1]))
                if port == 0:
                    port = name[1]  # every address on the same port
        self.port = self.addresses[0][1] if self.addresses else 0

    async def connect(self, host: str, port: int, *, timeout: float = 5.0,
                      on_message: Optional[MessageCallback] = None,
                      on_close: Optional[CloseCallback] = None) -> Channel:
        ch = await open_channel("tcp", host, port, framing=self.framing, timeout=timeout,
                                max_message_size=self.max_message_size,
                                on_message=on_message, on_close=on_close)
        self._track(ch)
        return ch

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for ch in list(self.channels):
            ch.abort("endpoint closed")
        if not self._closed.done():
            self._closed.set_result(None)


class SctpEndpoint(Endpoint, _SctpBase):
    """One one-to-many SCTP socket: each association is a :class:`SctpChannel`."""

    transport = "sctp"

    def __init__(self, sock: Any, framing: str, max_message_size: int,
                 on_channel: Callable[[Channel], None]) -> None:
        Endpoint.__init__(self)
        self.framing = framing
        self.max_message_size = max_message_size
        self._on_channel = on_channel
        self._by_id: dict[int, SctpChannel] = {}
        #: associations we ended (ABORT/SHUTDOWN sent) whose COMM_LOST or
        #: SHUTDOWN_COMP has not come yet: their late data is dropped instead
        #: of being taken for a new association
        self._ended: dict[int, None] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[SctpChannel]] = {}
        self._want_write: set[SctpChannel] = set()
        _SctpBase.__init__(self, sock, max_message_size)

    # -- receiving ----------------------------------------------------------------------
    def _on_notification(self, info: Any) -> None:
        sctp = self._sctp
        if isinstance(info, sctp.assoc_change):
            st = info.state
            if st == sctp.assoc_change.state_COMM_UP:
                if info.assoc_id in self._by_id:
                    return
                self._ended.pop(info.assoc_id, None)
                self._comm_up(info.assoc_id)
            elif st == sctp.assoc_change.state_RESTART:
                # the peer restarted (new incarnation, same association id):
                # the old one is gone with everything registered over it
                old = self._by_id.pop(info.assoc_id, None)
                if old is not None:
                    self._want_write.discard(old)
                    old._set_closed("association restarted by peer")
                self._ended.pop(info.assoc_id, None)
                self._comm_up(info.assoc_id)
            elif st in (sctp.assoc_change.state_COMM_LOST,
                        sctp.assoc_change.state_SHUTDOWN_COMP):
                self._ended.pop(info.assoc_id, None)
                ch = self._by_id.pop(info.assoc_id, None)
                if ch is not None:
                    self._want_write.discard(ch)
                    ch._set_closed("association lost" if st == sctp.assoc_change.state_COMM_LOST
                                   else "association shut down")
            elif st == sctp.assoc_change.state_CANT_START_ASSOCIATION:
                # We cannot tell which pending connect failed: the connect
                # timeout reports it.  Nothing else to do.
                pass
        elif isinstance(info, sctp.shutdown_event):
            ch = self._by_id.pop(info.assoc_id, None)
            if ch is not None:
                self._want_write.discard(ch)
                ch._set_closed("association shut down by peer")

    def _comm_up(self, assoc_id: int) -> SctpChannel:
        ch = SctpChannel(self, assoc_id, self.framing, self.max_message_size)
        try:
            paddrs = self._sock.getpaddrs(assoc_id)
        except OSError:
            paddrs = ()
        addrs = tuple(_plain(a[0]) for a in paddrs)
        ch.peer_addresses = addrs
        ch.peer = (addrs[0], paddrs[0][1]) if paddrs else ("", 0)
        ch.local = self.addresses[0] if self.addresses else ("", 0)
        self._by_id[assoc_id] = ch
        self._track(ch)
        for a in paddrs:
            fut = self._connecting.pop((_plain(a[0]), a[1]), None)
            if fut is not None and not fut.done():
                fut.set_result(ch)
                return ch
        try:
            self._on_channel(ch)
        except Exception:
            log.exception("%s: new-channel handler failed", self)
            ch.abort("new-channel handler failed")
        return ch

    def _on_data(self, fromaddr: Any, flags: int, msg: bytes, info: Any) -> None:
        ch = self._by_id.get(info.assoc_id)
        if ch is None:
            if info.assoc_id in self._ended:
                return  # sent before our ABORT/SHUTDOWN reached the peer
            # data before COMM_UP was seen (should not happen): create the channel now
            ch = self._comm_up(info.assoc_id)
        ch._on_fragment(msg, bool(flags & self._sctp.FLAG_EOR), socket.ntohl(info.ppid & 0xFFFFFFFF))

    def _on_socket_error(self, exc: OSError) -> None:  # pragma: no cover - kernel trouble
        log.error("%s: socket error %s", self, exc)

    # -- sending ------------------------------------------------------------------------
    def _try_send(self, ch: SctpChannel, data: bytes, ppid: int, stream: int,
                  flags: int) -> bool:
        try:
            return self._sendmsg(data, ppid, stream, flags, ch.assoc_id)
        except OSError as exc:
            # end the association for real: the kernel may still have it
            self._end(ch, _SCTP_ABORT, f"send failed: {exc}")
            return True

    def _send(self, ch: SctpChannel, data: bytes, ppid: int, stream: int, flags: int) -> None:
        if not self._try_send(ch, data, ppid, stream, flags):
            ch._queue(data, ppid, stream, flags)
            self._want_write.add(ch)

    def _on_writable(self) -> None:
        for ch in list(self._want_write):
            if ch.closed or ch._flush():
                self._want_write.discard(ch)
        if not self._want_write:
            self._disarm_writer()

    def _shutdown(self, ch: SctpChannel) -> None:
        ch._flush()
        self._end(ch, _SCTP_EOF, ch.close_reason or "closed locally")

    def _abort(self, ch: SctpChannel) -> None:
        self._end(ch, _SCTP_ABORT, ch.close_reason or "aborted locally")

    def _end(self, ch: SctpChannel, flag: int, reason: str) -> None:
        if self._by_id.pop(ch.assoc_id, None) is not None:
            self._ended[ch.assoc_id] = None
            while len(self._ended) > 65536:  # ids whose notification never came
                del self._ended[next(iter(self._ended))]
        self._want_write.discard(ch)
        # an empty message whose SCTP_SNDINFO flags say SCTP_ABORT / SCTP_EOF
        try:
            self._sendmsg(b"", 0, 0, flag, ch.assoc_id)
        except OSError:
            pass
        ch._set_closed(reason)

    # -- public -------------------------------------------------------------------------
    async def connect(self, host: str, port: int, *, timeout: float = 5.0,
                      on_message: Optional[MessageCallback] = None,
                      on_close: Optional[CloseCallback] = None) -> Channel:
        """Open an association from this endpoint's socket and port."""
        key = (_plain(host), port)
        for ch in self._by_id.values():
            if (key[0] in ch.peer_addresses and ch.peer[1] == port and not ch.closed):
                raise ConnectionError(f"an association to {host}:{port} already exists")
        fut: asyncio.Future[SctpChannel] = self._loop.create_future()
        self._connecting[key] = fut
        addr = host
        if self._sock._family == socket.AF_INET6 and _family(host) == socket.AF_INET:
            addr = "::ffff:" + host
        try:
            self._sock._sk.connect((addr, port))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EALREADY):
                self._connecting.pop(key, None)
                raise ConnectionError(f"SCTP connect to {host}:{port}: {exc}") from exc
        try:
            ch = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"SCTP association to {host}:{port} not up within "
                               f"{timeout} s") from None
        finally:
            self._connecting.pop(key, None)
        ch.on_message = on_message
        ch.on_close = on_close
        return ch

    def close(self) -> None:
        for ch in list(self._by_id.values()):
            ch.abort("endpoint closed")
        self._close_socket()
        if not self._closed.done():
            self._closed.set_result(None)


def _new_sctp_socket(addresses: list[str], one_to_many: bool, autoclose: int) -> Any:
    sctp = _load_sctp()
    family = socket.AF_INET6 if any(_family(a) == socket.AF_INET6 for a in addresses) \
        else socket.AF_INET
    sock = (sctp.sctpsocket_udp if one_to_many else sctp.sctpsocket_tcp)(family)
    try:
        sock.events.clear()
        sock.events.data_io = True
        sock.events.association = True
        sock.events.shutdown = True
        try:
            sock.set_nodelay(True)
        except OSError:  # pragma: no cover
            pass
        if one_to_many and autoclose:
            sock.set_autoclose(autoclose)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_sctp(sock: Any, addresses: list[str], port: int) -> int:
    """Bind to every address (first with bind, then bindx); return the port."""
    six = sock._family == socket.AF_INET6

    def norm(a: str) -> str:
        if six and _family(a) == socket.AF_INET and a != "0.0.0.0":
            return "::ffff:" + a
        if six and a == "0.0.0.0":
            return "::"
        return a

    first, rest = addresses[0], addresses[1:]
    sock.bind((norm(first), port))
    port = sock._sk.getsockname()[1]
    if rest:
        sock.bindx([(norm(a), port) for a in rest])
    return port


# ======================================================================================
# Entry points
# ======================================================================================

async def open_channel(transport: str, host: str, port: int, *, framing: str = "asap",
                       local_addresses: Iterable[str] = (), timeout: float = 5.0,
                       max_message_size: int = MAX_MESSAGE_SIZE,
                       on_message: Optional[MessageCallback] = None,
                       on_close: Optional[CloseCallback] = None) -> Channel:
    """Connect to ``host:port``; the channel is open when this returns.

    :raises ConnectionError, TimeoutError, OSError: the connection failed.
    """
    loop = asyncio.get_running_loop()
    local = list(local_addresses)
    if transport == "tcp":
        made: asyncio.Future[TcpChannel] = loop.create_future()
        ch = TcpChannel(framing, max_message_size, on_message, on_close,
                        on_made=lambda c: made.done() or made.set_result(c))
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: ch, host, port,
                                       local_addr=(local[0], 0) if local else None),
                timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"TCP connection to {host}:{port} not up within {timeout} s") \
                from None
        return ch
    if transport == "sctp":
        sock = _new_sctp_socket(local or [host], one_to_many=False, autoclose=0)
        try:
            if local:
                _bind_sctp(sock, local, 0)
            sock._sk.setblocking(False)
            addr = host
            if sock._family == socket.AF_INET6 and _family(host) == socket.AF_INET:
                addr = "::ffff:" + host
            await asyncio.wait_for(loop.sock_connect(sock._sk, (addr, port)), timeout)
        except asyncio.TimeoutError:
            sock.close()
            raise TimeoutError(f"SCTP association to {host}:{port} not up within "
                               f"{timeout} s") from None
        except BaseException:
            sock.close()
            raise
        owner = _OneToOne(sock, dict(framing=framing, max_message_size=max_message_size,
                                     on_message=on_message, on_close=on_close))
        ch = owner.channel
        try:
            paddrs = sock.getpaddrs(0)
            ch.peer_addresses = tuple(_plain(a[0]) for a in paddrs)
        except OSError:  # pragma: no cover
            ch.peer_addresses = (host,)
        ch.peer = (host, port)
        name = sock._sk.getsockname()
        ch.local = (_plain(name[0]), name[1])
        return ch
    raise ValueError(f"transport must be 'tcp' or 'sctp', not {transport!r}")


async def start_endpoint(transport: str, addresses: Iterable[str], port: int, *,
                         framing: str = "asap", on_channel: Callable[[Channel], None],
                         max_message_size: int = MAX_MESSAGE_SIZE, backlog: int = 1024,
                         autoclose: float = 0) -> Endpoint:
    """Listen on ``addresses`` (all on one port; 0 picks one).

    SCTP: one one-to-many socket bound to every address (multi-homing);
    ``autoclose`` seconds (0: off) closes idle associations.
    :raises OSError: an address could not be bound.
    """
    addrs = list(addresses) or ["0.0.0.0"]
    if transport == "tcp":
        ep = TcpEndpoint(framing, max_message_size, on_channel)
        try:
            await ep._start(addrs, port, backlog)
        except BaseException:
            ep.close()
            raise
        return ep
    if transport == "sctp":
        sock = _new_sctp_socket(addrs, one_to_many=True, autoclose=int(autoclose))
        try:
            bound_port = _bind_sctp(sock, addrs, port)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        sep = SctpEndpoint(sock, framing, max_message_size, on_channel)
        sep.addresses = [(a, bound_port) for a in addrs]
        sep.port = bound_port
        return sep
    raise ValueError(f"transport must be 'tcp' or 'sctp', not {transport!r}")
