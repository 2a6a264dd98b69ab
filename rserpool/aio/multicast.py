"""UDP multicast for registrar discovery (digest 6.2, 6.9) (does I/O).

* :class:`AnnounceSender` sends a registrar's ASAP Server Announce every
  ``interval`` seconds, randomised uniformly in [0.875, 1.125] x interval,
  from a UDP socket bound to the registrar's ASAP address and port: RSPLIB's
  listeners take the registrar's endpoint from the UDP source address and port.
* :class:`AnnounceListener` joins the group and hands each datagram over.
* :class:`RegistrarTable` (no I/O) is a PE's or PU's list of registrars:
  static entries plus entries learned from announces, which expire
  ``announce_timeout`` (5 s) after the last announce.

Traffic leaves only through the interface of the given address:
``IP_MULTICAST_IF`` is set from the source/interface address when it is not a
wildcard, so a registrar bound to 127.0.0.1 announces on loopback only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from ..errors import WireError

__all__ = ["AnnounceSender", "AnnounceListener", "RegistrarTable", "RegistrarEntry",
           "parse_registrar_address"]

log = logging.getLogger("rserpool.transport")

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux
#: Transport parameters of one announce, and addresses per transport, looked at
#: (a datagram can carry thousands: a hostile sender must not fill the table).
MAX_TRANSPORTS_PER_ANNOUNCE = 8
MAX_ADDRESSES_PER_TRANSPORT = 16


def _is_v6(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).version == 6
    except ValueError:
        return False


def _wildcard(addr: str | None) -> bool:
    return not addr or addr in ("0.0.0.0", "::")


def _shared_udp_socket(v6: bool) -> socket.socket:
    """A UDP socket (IPv6 or IPv4) with SO_REUSEADDR and, where there is one,
    SO_REUSEPORT: several senders and listeners may bind the same port."""
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Optional[Callable[[bytes, tuple[str, int]], None]]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        cb = self.on_datagram
        if cb is None:
            return
        try:
            cb(data, (addr[0], addr[1]))
        except Exception:
            log.exception("multicast datagram handler failed")

    def error_received(self, exc: Exception) -> None:
        log.debug("multicast socket error: %s", exc)


class AnnounceSender:
    """Periodic multicast sender (registrar Server Announce, ENRP Presence)."""

    def __init__(self) -> None:
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._task: Optional[asyncio.Task[None]] = None
        self.sent = 0
        self._errors_seen: set[int | None] = set()
        self.group = ""
        self.port = 0
        self.source: tuple[str, int] = ("", 0)

    @classmethod
    async def start(cls, group: str, port: int, *, source: tuple[str, int], ttl: int = 30,
                    interval: float = 1.0, payload: Callable[[], bytes] | None,
                    interface: str | None = None, rng: random.Random | None = None
                    ) -> "AnnounceSender":
        """Bind a UDP socket to ``source`` and start sending ``payload()``
        every ``interval`` (randomised); ``payload=None``: no periodic sends,
        only :meth:`send_now` (ENRP Presence, timed by the ENRP core).

        :raises OSError: the socket could not be set up (address in use...).
        """
        self = cls()
        self.group, self.port = group, port
        loop = asyncio.get_running_loop()
        v6 = _is_v6(group)
        sock = _shared_udp_socket(v6)
        try:
            src_host = source[0] or ("::" if v6 else "0.0.0.0")
            if_addr = interface if interface is not None else src_host
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                # this socket only sends: do not deliver others' group traffic to it
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
                if not _wildcard(if_addr):
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                    socket.inet_aton(if_addr))
            sock.bind((src_host, source[1]))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.source = sock.getsockname()[:2]
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagram(None), sock=sock)
        self._transport = transport  # type: ignore[assignment]
        if payload is not None:
            rand = rng or random.Random()
            self._task = loop.create_task(self._run(payload, interval, rand))
        return self

    async def _run(self, payload: Callable[[], bytes], interval: float,
                   rand: random.Random) -> None:
        while True:
            self.send_now(payload())
            await asyncio.sleep(interval * rand.uniform(0.875, 1.125))

    def send_now(self, data: bytes) -> None:
        """Send one datagram to the group now."""
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._transport.sendto(data, (self.group, self.port))
            self.sent += 1
        except OSError as exc:  # e.g. no multicast route
            # WARNING once per distinct error, DEBUG on repeats (every interval)
            level = logging.DEBUG if exc.errno in self._errors_seen else logging.WARNING
            self._errors_seen.add(exc.errno)
            log.log(level, "multicast send to %s:%d failed: %s", self.group, self.port, exc)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class AnnounceListener:
    """Receives a multicast group's datagrams on ``port``."""

    def __init__(self) -> None:
        self._transport: Optional[asyncio.DatagramTransport] = None
        self.received = 0

    @classmethod
    async def start(cls, group: str, port: int, *,
                    on_datagram: Callable[[bytes, tuple[str, int]], None],
                    interface: str | None = None) -> "AnnounceListener":
        """Join ``group`` (on ``interface``'s address, default: any) and listen."""
        self = cls()
        loop = asyncio.get_running_loop()
        v6 = _is_v6(group)
        sock = _shared_udp_socket(v6)
        try:
            if v6:
                sock.bind(("::", port))
                mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            else:
                sock.bind((group, port))  # only this group's datagrams
                ifa = "0.0.0.0" if _wildcard(interface) else interface
                mreq = socket.inet_aton(group) + socket.inet_aton(ifa)  # type: ignore[arg-type]
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise

        def counted(data: bytes, addr: tuple[str, int]) -> None:
            self.received += 1
            on_datagram(data, addr)

        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagram(counted),
                                                           sock=sock)
        self._transport = transport  # type: ignore[assignment]
        return self

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


# ======================================================================================
# Registrar table (no I/O)
# ======================================================================================

def parse_registrar_address(text: str, default_port: int = 3863) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` -> (host, port).

    :raises ValueError: not an address.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"{text!r} has no host")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: bad port")
        return host, int(port)
    return host, default_port


@dataclass
class RegistrarEntry:
    """One way to reach a registrar."""

    transport: str                  # "sctp" | "tcp"
    host: str
    port: int
    server_id: int = 0              # 0: unknown (static entry)
    static: bool = False
    expires: float = float("inf")   # learned entries only
    addresses: tuple[str, ...] = field(default=())  # all known addresses (SCTP)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)


class RegistrarTable:
    """Static registrars plus registrars learned from Server Announces.

    >>> t = RegistrarTable(["127.0.0.1:3863"], transport="tcp")
    >>> [e.key for e in t.candidates(now=0.0)]
    [('tcp', '127.0.0.1', 3863)]
    """

    def __init__(self, static: Iterable[str] = (), *, transport: str = "tcp",
                 announce_timeout: float = 5.0, default_port: int = 3863,
                 max_learned: int = 64) -> None:
        self.transport = transport
        #: learned entries kept at most (least recently announced dropped first)
        self.max_learned = max_learned
        self.announce_timeout = announce_timeout
        self._static = [RegistrarEntry(transport, *parse_registrar_address(s, default_port),
                                       static=True) for s in static]
        self._learned: dict[tuple[str, str, int], RegistrarEntry] = {}

    def learn(self, data: bytes, source: tuple[str, int], now: float) -> list[RegistrarEntry]:
        """Feed one announce datagram; return the entries it refreshed.

        Bad datagrams are ignored (they return ``[]``), never raised.
        """
        from ..wire import SctpTransport, ServerAnnounce, TcpTransport, decode_message
        try:
            msg = decode_message(data, "asap")
        except WireError:
            return []
        if not isinstance(msg, ServerAnnounce):
            return []
        found: list[RegistrarEntry] = []
        for t in msg.transports[:MAX_TRANSPORTS_PER_ANNOUNCE]:
            kind = ("sctp" if isinstance(t, SctpTransport) else
                    "tcp" if isinstance(t, TcpTransport) else None)
            if kind is None or not 0 < t.port < 65536:
                continue
            addrs = tuple(a for a in t.addresses[:MAX_ADDRESSES_PER_TRANSPORT]
                          if not _wildcard(a)) or (source[0],)
            # prefer the datagram's source address when the transport lists it
            host = source[0] if source[0] in addrs else addrs[0]
            found.append(RegistrarEntry(kind, host, t.port, msg.server_id, addresses=addrs))
        if not msg.transports and 0 < source[1] < 65536:
            # RSPLIB: no transport parameter -> SCTP at the UDP source (digest 6.2)
            found.append(RegistrarEntry("sctp", source[0], source[1], msg.server_id,
                                        addresses=(source[0],)))
        learned = self._learned
        for e in found:
            e.expires = now + self.announce_timeout
            learned.pop(e.key, None)   # re-insert: the dict stays in announce order
            learned[e.key] = e
        while len(learned) > self.max_learned:   # a flood of fake registrars
            del learned[next(iter(learned))]     # forget the least recently announced
        return found

    def expire(self, now: float) -> list[RegistrarEntry]:
        gone = [e for e in self._learned.values() if e.expires <= now]
        for e in gone:
            del self._learned[e.key]
        return gone

    def forget(self, server_id: int) -> None:
        """Drop learned entries of a registrar (e.g. after it failed)."""
        for key in [k for k, e in self._learned.items() if e.server_id == server_id]:
            del self._learned[key]

    def candidates(self, now: float, transport: str | None = None) -> list[RegistrarEntry]:
        """Usable entries for ``transport`` (default: the table's): static first,
        then learned ones, most recently announced first."""
        want = transport or self.transport
        self.expire(now)
        learned = sorted((e for e in self._learned.values() if e.transport == want),
                         key=lambda e: -e.expires)
        return [e for e in self._static if e.transport == want] + learned

    def __len__(self) -> int:
        return len(self._static) + len(self._learned)
