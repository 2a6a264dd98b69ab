"""Read ASAP/ENRP messages out of packet captures, and write synthetic ones.

Reading
=======

:func:`read_capture` yields one :class:`CapturedMessage` per ASAP or ENRP
message found in a pcap or pcapng file (this is what ``rserpool dump FILE``
prints)::

    for msg in read_capture("trace.pcapng"):
        print(msg.describe())

What is understood:

* files: classic pcap (either byte order; microsecond, nanosecond and the
  "modified" Kuznetsov magic; gzip-compressed too) and pcapng (any number of
  sections, several interfaces with their own link type, ``if_tsresol`` and
  ``if_tsoffset``; Enhanced, Simple and obsolete Packet Blocks);
* link types: BSD null/loopback (0), Ethernet (1, with 802.1Q/QinQ tags and
  LLC/SNAP), raw IP (101, and 12/14 as some old files write it), OpenBSD loop
  (108), Linux cooked SLL (113) and SLL2 (276), raw IPv4 (228), raw IPv6 (229);
* IPv4 and IPv6 (extension headers are skipped).  IP fragments are not
  reassembled: a fragment that visibly carries ASAP/ENRP is reported with a
  ``note`` (and an empty or partial payload), other fragments are skipped;
* SCTP: every DATA chunk (type 0) with PPID 11 (ASAP) or 12 (ENRP), bundled
  chunks included; fragmented user messages are reassembled per association
  (verification tag and ports, so multi-homed paths mix correctly) and stream,
  by TSN.  A retransmitted TSN is skipped: each message comes out once, as an
  SCTP receiver delivers it (tshark does the same with its default
  ``sctp.tsn_analysis``); other chunk types are ignored;
* TCP to or from port 3863 (ASAP) or 9901 (ENRP): each direction is
  reassembled by sequence number (out-of-order segments, overlaps and
  retransmissions are fine; a new SYN with another ISN starts a new stream),
  then cut into messages by the length field of the 4-byte message header.
  A length below 4 breaks the stream: the rest of the reassembled bytes become
  one payload with a note and the direction is not read further.  A gap (lost
  or snaplen-truncated segment) or an unfinished message at the end of the
  capture is reported the same way;
* UDP to port 3863 (ASAP, e.g. Server Announces to 239.0.0.50) or 9901 (ENRP,
  e.g. Presence to 239.0.0.51): one datagram is one message.

A malformed or truncated packet never raises: it is skipped, or reported with
``note`` set.  Problems of the file itself (truncated at the end, a corrupt
block) end the reading and are listed in :attr:`CaptureReader.warnings`.  Only
a file that is not a pcap/pcapng file at all (or whose file header is cut
short) raises :class:`CaptureError`, already when :func:`read_capture` is
called.  The whole file is read before the first message comes out (a TCP
stream whose SYN was not captured needs look-ahead); messages come out in
frame order.

Why not :mod:`dpkt`: it was checked (1.9.8) and is not used here.  Its pcapng
reader honours only the first Interface Description Block (one link type and
one ``if_tsresol`` for all packets) and drops Simple Packet Blocks; its pcap
reader hands back a cut-off last record as if it were whole and gives
:class:`~decimal.Decimal` times for nanosecond files; its SCTP parser steps
over a non-DATA chunk by its unpadded length (a chunk whose length is not a
multiple of 4 derails the rest of the packet) and does not split DATA chunk
headers; its BSD loopback decoder assumes the reading host's byte order; and
it parses every layer into objects, so the exact bytes of a layer cannot be
recovered.  The formats needed here are a few fixed-offset headers, written
below with explicit bounds checks.

Writing (oracle tests)
======================

:func:`sctp_packet`, :func:`tcp_packet` and :func:`udp_packet` return the bytes
of a complete IP packet (IPv4, or IPv6 when the addresses are IPv6) with correct
IP, TCP and UDP checksums and a correct SCTP CRC32c (:func:`crc32c`, table
driven).  :func:`write_pcap` writes them as classic pcap, by default with link
type 101 (raw IP: tshark 4.0 decodes it for IPv4 and IPv6 alike; 228, 229 and
Ethernet work too, see :func:`encapsulate`); :func:`write_pcapng` writes pcapng
with one or more interfaces.

tshark as an oracle
===================

tshark 4.0's dissector tables ("tshark -G decodes") hand to ASAP: SCTP PPID 11,
SCTP port 3863, TCP port 3863, UDP port 3863; to ENRP: SCTP PPID 12, SCTP port
9901, UDP port 9901.  So no ``-d``/``-o`` option is needed
(:data:`TSHARK_OPTIONS` is empty).  ENRP over TCP cannot be decoded at all:
tshark 4.0 rejects ``-d tcp.port==9901,enrp`` (ENRP is not in the ``tcp.port``
Decode-As list), so TCP oracle tests can only cover ASAP.  tshark's ASAP
dissector does not reassemble TCP either: a message is decoded only when it
fills a TCP segment exactly.  SCTP reassembly (``sctp.reassembly``) is on by
default, so a fragmented message shows up once, in the frame with its last
fragment.  Note that tshark also decodes SCTP DATA of *any* PPID as ASAP/ENRP
when a port is 3863/9901; this module goes by the PPID only.  For UDP, tshark
tries the lower of the two ports first, so a datagram from port 3863 to port
9901 is ASAP to tshark but ENRP here (by destination port).

:func:`tshark_decode` returns the ``-V`` text, :func:`tshark_fields` the values
of named fields per frame (via ``-T json -e FIELD``: every occurrence of a field
is kept as a separate list element, which ``-T fields`` would join with
commas).  Values are strings: decimal or ``0x…`` hex for integers (as the
field's base says; ``int(v, 0)`` reads both), plain hex such as ``"616263"``
for byte strings (:func:`tshark_bytes`), dotted quads for addresses, ``1``/``0``
for booleans.

Useful fields (``tshark -G fields``, Wireshark 4.0); each ``asap.X`` listed
has an ``enrp.X`` twin unless noted:

* header: ``asap.message_type``, ``asap.message_flags``,
  ``asap.message_length`` (one occurrence per message in the frame, so
  counting ``asap.message_type`` values counts messages);
  ``asap.h_bit``, ``asap.r_bit`` (ASAP only); ``enrp.r_bit``, ``enrp.w_bit``,
  ``enrp.m_bit``, ``enrp.t_bit`` (ENRP only);
* parameters: ``asap.parameter_type``, ``asap.parameter_length``,
  ``asap.parameter_value``, ``asap.parameter_padding``;
* pool handle / element: ``asap.pool_handle_pool_handle`` (bytes),
  ``asap.pool_element_pe_identifier``,
  ``asap.pool_element_home_enrp_server_identifier``,
  ``asap.pool_element_registration_life``;
  ``asap.pe_identifier``, ``asap.pe_checksum``, ``asap.cookie``;
* policy: ``asap.pool_member_selection_policy_type``, ``..._weight``,
  ``..._priority``, ``..._load``, ``..._degradation``, ``..._load_dpf``,
  ``..._weight_dpf``, ``..._distance``, ``..._value``;
* transports: ``asap.ipv4_address``, ``asap.ipv6_address``,
  ``asap.sctp_transport_port``, ``asap.tcp_transport_port``,
  ``asap.udp_transport_port``, ``asap.udp_lite_transport_port``,
  ``asap.dccp_transport_port``, ``asap.transport_use``;
* errors: ``asap.cause_code``, ``asap.cause_length``, ``asap.cause_info``,
  ``asap.cause_padding``;
* ASAP only: ``asap.server_identifier`` (Server Announce / ENRP server
  parameter), ``asap.hropt_items`` (handle-resolution option);
* ENRP only: ``enrp.sender_servers_id``, ``enrp.receiver_servers_id``,
  ``enrp.target_servers_id``, ``enrp.update_action``, ``enrp.reserved``,
  ``enrp.server_information_server_identifier``, ``enrp.message_value``.
"""

from __future__ import annotations

import gzip
import heapq
import ipaddress
import json
import os
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, Sequence, Union

from .errors import RSerPoolError

__all__ = [
    "CaptureError", "CapturedMessage", "CaptureReader", "read_capture",
    "ASAP_PORT", "ENRP_PORT", "PPID_ASAP", "PPID_ENRP",
    "LINKTYPE_NULL", "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "LINKTYPE_LOOP",
    "LINKTYPE_LINUX_SLL", "LINKTYPE_IPV4", "LINKTYPE_IPV6", "LINKTYPE_LINUX_SLL2",
    "TCP_FIN", "TCP_SYN", "TCP_RST", "TCP_PSH", "TCP_ACK",
    "SCTP_DATA_END", "SCTP_DATA_BEGIN", "SCTP_DATA_UNORDERED",
    "crc32c", "internet_checksum", "sctp_data_chunk", "sctp_packet",
    "sctp_packet_from_chunks", "tcp_packet", "udp_packet", "encapsulate",
    "write_pcap", "write_pcapng",
    "TsharkError", "TSHARK_OPTIONS", "tshark_available", "tshark_decode",
    "tshark_fields", "tshark_bytes", "tshark_message_counts",
]

ASAP_PORT = 3863
ENRP_PORT = 9901
PPID_ASAP = 11
PPID_ENRP = 12

_PORT_PROTOCOL = {ASAP_PORT: "asap", ENRP_PORT: "enrp"}
_PPID_PROTOCOL = {PPID_ASAP: "asap", PPID_ENRP: "enrp"}

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

SCTP_DATA_END = 0x01
SCTP_DATA_BEGIN = 0x02
SCTP_DATA_UNORDERED = 0x04

_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_IPPROTO_SCTP = 132

_U32 = 0xFFFFFFFF


class CaptureError(RSerPoolError, ValueError):
    """The file is not a pcap or pcapng capture (or its file header is cut short)."""


@dataclass(frozen=True)
class CapturedMessage:
    """One ASAP or ENRP message found in a capture.

    :ivar frame: 1-based number of the packet that completed the message
        (the same numbering as tshark's ``frame.number``).
    :ivar time: capture time of that packet, seconds since the epoch
        (0.0 for a pcapng Simple Packet Block, which has no time stamp).
    :ivar src, sport, dst, dport: addresses and ports of that packet.
    :ivar transport: ``"sctp"``, ``"tcp"`` or ``"udp"``.
    :ivar protocol: ``"asap"`` or ``"enrp"``.
    :ivar payload: exactly one message (header included) — unless ``note``
        is set, then whatever bytes could be recovered (possibly none).
    :ivar note: what went wrong while reassembling, or ``None``.
    """

    frame: int
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    transport: str
    protocol: str
    payload: bytes
    note: str | None = None

    def describe(self) -> str:
        """One line: ``frame 5 127.0.0.1:40000 -> 127.0.0.1:3863 sctp asap 24 bytes``."""
        src = f"[{self.src}]" if ":" in self.src else self.src
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        text = (f"frame {self.frame} {src}:{self.sport} -> {dst}:{self.dport} "
                f"{self.transport} {self.protocol} {len(self.payload)} bytes")
        if self.note:
            text += f" ({self.note})"
        return text


# ---------------------------------------------------------------------------
# File formats
# ---------------------------------------------------------------------------

_PCAP_MAGICS = {
    0xA1B2C3D4: (1_000_000, 16),      # microseconds
    0xA1B23C4D: (1_000_000_000, 16),  # nanoseconds
    0xA1B2CD34: (1_000_000, 24),      # "modified" pcap (Kuznetsov), usec
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_GZIP_MAGIC = b"\x1f\x8b"
#: Larger records are taken for file corruption (tshark's own limit is 256 KiB).
_MAX_RECORD = 1 << 26


@dataclass
class _Record:
    frame: int
    time: float
    linktype: int
    data: bytes
    orig_len: int


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    units_per_second: int = 1_000_000
    offset_seconds: int = 0


class _Truncated(Exception):
    """Internal: the file ends inside a structure."""


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise _Truncated
    return data


def _detect_format(head: bytes) -> str:
    """'pcap' or 'pcapng' from the first bytes, or raise CaptureError."""
    if len(head) >= 4:
        if head[:4] == _PCAPNG_SHB:
            return "pcapng"
        for endian in "<>":
            if struct.unpack(endian + "I", head[:4])[0] in _PCAP_MAGICS:
                return "pcap"
    if not head:
        raise CaptureError("empty file, not a pcap or pcapng capture")
    raise CaptureError(
        f"not a pcap or pcapng capture (starts with {head[:8].hex(' ')})")


def _open_capture(path: str | os.PathLike[str]) -> BinaryIO:
    f: BinaryIO = open(path, "rb")  # noqa: SIM115 - handed to the caller
    try:
        magic = f.read(2)
        f.seek(0)
        if magic == _GZIP_MAGIC:
            f.close()
            f = gzip.open(path, "rb")  # type: ignore[assignment]
        return f
    except BaseException:
        f.close()
        raise


def _check_header(path: str | os.PathLike[str]) -> str:
    """Validate the file header; return the format name."""
    try:
        with _open_capture(path) as f:
            head = f.read(28)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CaptureError(f"unreadable compressed capture: {exc}") from exc
    fmt = _detect_format(head)
    if fmt == "pcap" and len(head) < 24:
        raise CaptureError("pcap file header cut short")
    if fmt == "pcapng":
        if len(head) < 28:
            raise CaptureError("pcapng section header cut short")
        if head[8:12] not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
            raise CaptureError("pcapng section header has no valid byte-order magic")
    return fmt


def _pcap_records(f: BinaryIO, warnings: list[str]) -> Iterator[_Record]:
    head = _read_exact(f, 24)
    for endian in "<>":
        magic = struct.unpack(endian + "I", head[:4])[0]
        if magic in _PCAP_MAGICS:
            break
    units, rec_len = _PCAP_MAGICS[magic]
    linktype = struct.unpack(endian + "I", head[20:24])[0] & 0xFFFF
    frame = 0
    while True:
        hdr = f.read(rec_len)
        if not hdr:
            return
        if len(hdr) < rec_len:
            warnings.append(f"file ends inside the record header of frame {frame + 1} "
                            "(truncated capture)")
            return
        sec, frac, caplen, orig_len = struct.unpack(endian + "IIII", hdr[:16])
        if caplen > _MAX_RECORD:
            warnings.append(f"frame {frame + 1}: impossible record length {caplen} "
                            "(corrupt capture); stopped reading")
            return
        data = f.read(caplen)
        frame += 1
        if len(data) < caplen:
            warnings.append(f"file ends inside frame {frame} (truncated capture)")
            return
        yield _Record(frame, sec + frac / units, linktype, data, orig_len)


def _pcapng_options(body: bytes, endian: str) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, pos)
        if code == 0:  # opt_endofopt
            return
        yield code, body[pos + 4:pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)


def _pcapng_interface(body: bytes, endian: str) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body, 0)
    iface = _Interface(linktype, snaplen)
    for code, value in _pcapng_options(body[8:], endian):
        if code == 9 and len(value) >= 1:  # if_tsresol
            res = value[0]
            iface.units_per_second = 2 ** (res & 0x7F) if res & 0x80 else 10 ** res
        elif code == 14 and len(value) >= 8:  # if_tsoffset
            iface.offset_seconds = struct.unpack(endian + "q", value[:8])[0]
    return iface


def _pcapng_records(f: BinaryIO, warnings: list[str]) -> Iterator[_Record]:
    endian = "<"
    interfaces: list[_Interface] = []
    frame = 0
    while True:
        head = f.read(8)
        if not head:
            return
        try:
            if len(head) < 8:
                raise _Truncated
            if head[:4] == _PCAPNG_SHB:
                bom = _read_exact(f, 4)
                if bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                elif bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                else:
                    warnings.append("pcapng section header with a bad byte-order magic; "
                                    "stopped reading")
                    return
                already = 12
                interfaces = []
            else:
                already = 8
            btype, blen = struct.unpack(endian + "II", head)
            if blen < (28 if already == 12 else 12) or blen % 4 or blen > _MAX_RECORD:
                warnings.append(f"pcapng block of impossible length {blen} "
                                "(corrupt capture); stopped reading")
                return
            rest = _read_exact(f, blen - already)
        except _Truncated:
            warnings.append("file ends inside a pcapng block (truncated capture)")
            return
        trailer = struct.unpack(endian + "I", rest[-4:])[0]
        if trailer != blen:
            warnings.append(f"pcapng block lengths disagree ({blen} vs {trailer}); "
                            "stopped reading (corrupt capture)")
            return
        body = rest[:-4]
        try:
            if btype == 0x0A0D0D0A:
                continue
            if btype == 1:  # Interface Description Block
                interfaces.append(_pcapng_interface(body, endian))
                continue
        except struct.error:
            warnings.append(f"pcapng interface {len(interfaces)}: description block too short")
            interfaces.append(_Interface(-1, 0))
            continue
        try:
            if btype == 6:  # Enhanced Packet Block
                if_id, ts_hi, ts_lo, caplen, orig_len = struct.unpack_from(endian + "IIIII", body)
                data = body[20:20 + caplen]
                has_time = True
            elif btype == 2:  # Packet Block (obsolete)
                if_id, _drops, ts_hi, ts_lo, caplen, orig_len = struct.unpack_from(
                    endian + "HHIIII", body)
                data = body[20:20 + caplen]
                has_time = True
            elif btype == 3:  # Simple Packet Block
                if_id, ts_hi, ts_lo = 0, 0, 0
                orig_len = struct.unpack_from(endian + "I", body)[0]
                caplen = orig_len
                if interfaces and interfaces[0].snaplen:
                    caplen = min(caplen, interfaces[0].snaplen)
                data = body[4:4 + caplen]
                has_time = False
            else:
                continue  # name resolution, statistics, secrets, custom ...
        except struct.error:
            frame += 1
            warnings.append(f"frame {frame}: packet block too short; skipped")
            continue
        frame += 1
        if if_id >= len(interfaces):
            warnings.append(f"frame {frame}: unknown interface {if_id}; skipped")
            continue
        iface = interfaces[if_id]
        if len(data) < caplen:
            warnings.append(f"frame {frame}: packet data overruns its block; truncated")
        time = 0.0
        if has_time:
            time = iface.offset_seconds + ((ts_hi << 32) | ts_lo) / iface.units_per_second
        yield _Record(frame, time, iface.linktype, data, orig_len)


# ---------------------------------------------------------------------------
# Packet decoding
# ---------------------------------------------------------------------------

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_AF_INET6 = (10, 24, 28, 30)  # Linux, OpenBSD/NetBSD, FreeBSD/DragonFly, macOS


def _ethertype_payload(etype: int, data: bytes, off: int) -> tuple[int, bytes] | None:
    """Follow VLAN tags; return (4 | 6, ip bytes) or None."""
    while etype in _ETH_VLAN and len(data) >= off + 4:
        etype = int.from_bytes(data[off + 2:off + 4], "big")
        off += 4
    if etype <= 1500:  # IEEE 802.3 length: only LLC/SNAP carries IP
        if data[off:off + 3] != b"\xaa\xaa\x03" or len(data) < off + 8:
            return None
        etype = int.from_bytes(data[off + 6:off + 8], "big")
        off += 8
    if etype == _ETH_IPV4:
        return 4, data[off:]
    if etype == _ETH_IPV6:
        return 6, data[off:]
    return None


def _link_payload(linktype: int, data: bytes) -> tuple[int, bytes] | None:
    """Strip the link-layer header; return (IP version, IP packet) or None."""
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        return _ethertype_payload(int.from_bytes(data[12:14], "big"), data, 14)
    if linktype in (LINKTYPE_RAW, 12, 14):
        if not data:
            return None
        version = data[0] >> 4
        return (version, data) if version in (4, 6) else None
    if linktype == LINKTYPE_IPV4:
        return 4, data
    if linktype == LINKTYPE_IPV6:
        return 6, data
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        return _ethertype_payload(int.from_bytes(data[14:16], "big"), data, 16)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        return _ethertype_payload(int.from_bytes(data[0:2], "big"), data, 20)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return None
        family = int.from_bytes(data[:4], "big")
        if linktype == LINKTYPE_NULL and family > 0xFFFF:
            family = int.from_bytes(data[:4], "little")  # writer's host order
        if family == 2:
            return 4, data[4:]
        if family in _AF_INET6:
            return 6, data[4:]
        return None
    return None


@dataclass
class _IpInfo:
    proto: int
    src: str
    dst: str
    payload: bytes
    problem: str | None  # why payload is incomplete (truncation, fragment)
    fragment: bool       # a non-first fragment: no transport header at all


_IPV6_EXT = {0, 43, 60, 135, 139, 140, 253, 254}


def _parse_ip(version: int, b: bytes) -> _IpInfo | None:
    if version == 4:
        if len(b) < 20 or b[0] >> 4 != 4:
            return None
        ihl = (b[0] & 0x0F) * 4
        total = int.from_bytes(b[2:4], "big")
        if ihl < 20 or len(b) < ihl:
            return None
        if total == 0:  # TSO: length left to the NIC
            total = len(b)
        if total < ihl:
            return None
        frag = int.from_bytes(b[6:8], "big")
        offset, more = frag & 0x1FFF, bool(frag & 0x2000)
        src = str(ipaddress.IPv4Address(b[12:16]))
        dst = str(ipaddress.IPv4Address(b[16:20]))
        problem = None
        if len(b) < total:
            problem = f"packet truncated by the capture ({len(b)} of {total} IP bytes)"
        if offset or more:
            ident = int.from_bytes(b[4:6], "big")
            problem = f"IPv4 fragment (id 0x{ident:04x}, offset {offset * 8}), not reassembled"
        return _IpInfo(b[9], src, dst, b[ihl:total], problem, offset != 0)
    if version == 6:
        if len(b) < 40 or b[0] >> 4 != 6:
            return None
        plen = int.from_bytes(b[4:6], "big")
        end = 40 + plen if plen else len(b)
        nxt, off = b[6], 40
        problem = None
        if len(b) < end:
            problem = f"packet truncated by the capture ({len(b)} of {end} IP bytes)"
        fragment = False
        while nxt in _IPV6_EXT or nxt in (44, 51):
            if len(b) < off + 8:
                return None
            if nxt == 44:
                frag = int.from_bytes(b[off + 2:off + 4], "big")
                if frag & 0xFFF9:  # offset or M bit
                    ident = int.from_bytes(b[off + 4:off + 8], "big")
                    problem = (f"IPv6 fragment (id 0x{ident:08x}, offset {frag & 0xFFF8}), "
                               "not reassembled")
                    fragment = bool(frag & 0xFFF8)
                hlen = 8
            elif nxt == 51:  # AH counts in 4-byte units, minus 2
                hlen = (b[off + 1] + 2) * 4
            else:
                hlen = (b[off + 1] + 1) * 8
            nxt = b[off]
            off += hlen
        if off > end:
            return None
        src = str(ipaddress.IPv6Address(b[8:24]))
        dst = str(ipaddress.IPv6Address(b[24:40]))
        return _IpInfo(nxt, src, dst, b[off:end], problem, fragment)
    return None


# --- SCTP -------------------------------------------------------------------

@dataclass
class _Fragment:
    flags: int
    protocol: str
    data: bytes
    frame: int
    time: float
    addr: tuple[str, int, str, int]


@dataclass
class _SctpAssociation:
    seen: set[int] = field(default_factory=set)  # TSNs delivered (or reported)
    streams: dict[int, dict[int, _Fragment]] = field(default_factory=dict)


# --- TCP --------------------------------------------------------------------

@dataclass
class _Segment:
    frame: int
    time: float
    seq: int
    payload: bytes
    problem: str | None


@dataclass
class _TcpStream:
    protocol: str
    isn: int | None = None
    segments: list[_Segment] = field(default_factory=list)


def _signed32(value: int) -> int:
    value &= _U32
    return value - (1 << 32) if value & 0x80000000 else value


class CaptureReader:
    """The iterator :func:`read_capture` returns.

    :ivar path: the file.
    :ivar format: ``"pcap"`` or ``"pcapng"``.
    :ivar warnings: problems of the file itself (truncation, corrupt blocks,
        unsupported link types), filled in while reading.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.format = _check_header(path)
        self.warnings: list[str] = []
        self._messages: Iterator[CapturedMessage] | None = None
        self._out: list[tuple[int, int, CapturedMessage]] = []
        self._sctp: dict[tuple[int, int, int], _SctpAssociation] = {}
        self._tcp: dict[tuple[str, int, str, int], list[_TcpStream]] = {}

    def __iter__(self) -> CaptureReader:
        return self

    def __next__(self) -> CapturedMessage:
        if self._messages is None:
            self._messages = iter(self._read_all())
        return next(self._messages)

    # -- driver ----------------------------------------------------------

    def _read_all(self) -> list[CapturedMessage]:
        unknown_links: set[int] = set()
        try:
            with _open_capture(self.path) as f:
                reader = _pcap_records if self.format == "pcap" else _pcapng_records
                try:
                    for rec in reader(f, self.warnings):
                        if rec.linktype not in _KNOWN_LINKTYPES:
                            if rec.linktype not in unknown_links:
                                unknown_links.add(rec.linktype)
                                self.warnings.append(
                                    f"link type {rec.linktype} not supported "
                                    f"(first seen in frame {rec.frame}); its packets skipped")
                            continue
                        self._packet(rec)
                except _Truncated:
                    self.warnings.append("file ends inside its header (truncated capture)")
                except (EOFError, OSError, zlib.error) as exc:  # damaged gzip stream
                    self.warnings.append(f"reading stopped: {exc}")
        finally:
            self._finish_sctp()
            self._finish_tcp()
        self._out.sort(key=lambda item: (item[0], item[1]))
        messages = [msg for _, _, msg in self._out]
        self._out, self._sctp, self._tcp = [], {}, {}
        return messages

    def _emit(self, frame: int, time: float, addr: tuple[str, int, str, int],
              transport: str, protocol: str, payload: bytes | bytearray,
              note: str | None = None) -> None:
        msg = CapturedMessage(frame, time, addr[0], addr[1], addr[2], addr[3],
                              transport, protocol, bytes(payload), note)
        self._out.append((frame, len(self._out), msg))

    def _packet(self, rec: _Record) -> None:
        try:
            link = _link_payload(rec.linktype, rec.data)
            if link is None:
                return
            ip = _parse_ip(*link)
            if ip is None:
                return
            if ip.fragment:  # no transport header to look at
                return
            if ip.proto == _IPPROTO_UDP:
                self._udp(rec, ip)
            elif ip.proto == _IPPROTO_TCP:
                self._tcp_segment(rec, ip)
            elif ip.proto == _IPPROTO_SCTP:
                self._sctp_packet(rec, ip)
        except (struct.error, IndexError, ValueError) as exc:  # pragma: no cover - defensive
            self.warnings.append(f"frame {rec.frame}: undecodable packet skipped ({exc})")

    # -- UDP -------------------------------------------------------------

    def _udp(self, rec: _Record, ip: _IpInfo) -> None:
        b = ip.payload
        if len(b) < 8:
            return
        sport, dport, ulen = struct.unpack_from("!HHH", b)
        protocol = _PORT_PROTOCOL.get(dport)
        if protocol is None:
            return
        payload = b[8:ulen] if ulen >= 8 else b[8:]
        note = ip.problem
        if note is None and ulen > len(b):
            note = f"UDP datagram truncated ({len(b) - 8} of {ulen - 8} payload bytes)"
        self._emit(rec.frame, rec.time, (ip.src, sport, ip.dst, dport), "udp", protocol,
                   payload, note)

    # -- SCTP ------------------------------------------------------------

    def _sctp_packet(self, rec: _Record, ip: _IpInfo) -> None:
        b = ip.payload
        if len(b) < 12:
            return
        sport, dport, vtag = struct.unpack_from("!HHI", b)
        addr = (ip.src, sport, ip.dst, dport)
        pos = 12
        while pos + 4 <= len(b):
            ctype, cflags, clen = struct.unpack_from("!BBH", b, pos)
            if clen < 4:
                return  # malformed chunk: the rest cannot be delimited
            if ctype == 0 and clen >= 16 and pos + 16 <= len(b):
                tsn, sid, _ssn, ppid = struct.unpack_from("!IHHI", b, pos + 4)
                protocol = _PPID_PROTOCOL.get(ppid)
                if protocol is not None:
                    data = b[pos + 16:pos + clen]
                    if pos + clen > len(b):
                        note = ip.problem or "SCTP chunk overruns the packet"
                        note = (f"{note}; DATA chunk TSN {tsn} has {len(data)} of "
                                f"{clen - 16} bytes")
                        self._emit(rec.frame, rec.time, addr, "sctp", protocol, data, note)
                    else:
                        self._sctp_data(rec, addr, vtag, tsn, sid, cflags, protocol, data)
            pos += (clen + 3) & ~3

    def _sctp_seen(self, vtag: int, sport: int, dport: int) -> _SctpAssociation:
        return self._sctp.setdefault((vtag, sport, dport), _SctpAssociation())

    def _sctp_data(self, rec: _Record, addr: tuple[str, int, str, int], vtag: int,
                   tsn: int, sid: int, flags: int, protocol: str, data: bytes) -> None:
        assoc = self._sctp_seen(vtag, addr[1], addr[3])
        whole = SCTP_DATA_BEGIN | SCTP_DATA_END
        if flags & whole == whole:
            if tsn not in assoc.seen:
                assoc.seen.add(tsn)
                self._emit(rec.frame, rec.time, addr, "sctp", protocol, data)
            return  # else a retransmission: shown once, as an SCTP receiver delivers it
        if tsn in assoc.seen:
            return  # retransmitted fragment of a message already put together
        frags = assoc.streams.setdefault(sid, {})
        frags[tsn] = _Fragment(flags, protocol, data, rec.frame, rec.time, addr)
        first = tsn
        while not frags[first].flags & SCTP_DATA_BEGIN:
            prev = (first - 1) & _U32
            if prev not in frags or frags[prev].flags & SCTP_DATA_END:
                return
            first = prev
        last = tsn
        while not frags[last].flags & SCTP_DATA_END:
            nxt = (last + 1) & _U32
            if nxt not in frags or frags[nxt].flags & SCTP_DATA_BEGIN:
                return
            last = nxt
        count = ((last - first) & _U32) + 1
        tsns = [(first + i) & _U32 for i in range(count)]
        parts = [frags.pop(t) for t in tsns]
        assoc.seen.update(tsns)
        self._emit(rec.frame, rec.time, addr, "sctp", parts[0].protocol,
                   b"".join(p.data for p in parts))

    def _finish_sctp(self) -> None:
        for assoc in self._sctp.values():
            for sid, frags in assoc.streams.items():
                if not frags:
                    continue
                ref = next(iter(frags))  # oldest fragment: sort across a TSN wrap
                tsns = sorted(frags, key=lambda t: _signed32(t - ref))
                runs: list[list[int]] = [[tsns[0]]]
                for t in tsns[1:]:
                    if t == (runs[-1][-1] + 1) & _U32:
                        runs[-1].append(t)
                    else:
                        runs.append([t])
                for run in runs:
                    parts = [frags[t] for t in run]
                    missing = []
                    if not parts[0].flags & SCTP_DATA_BEGIN:
                        missing.append("first")
                    if not parts[-1].flags & SCTP_DATA_END:
                        missing.append("last")
                    last = max(parts, key=lambda p: p.frame)
                    note = (f"incomplete fragmented SCTP message on stream {sid}: "
                            f"TSNs {run[0]}..{run[-1]} only, "
                            f"{' and '.join(missing) or 'some'} fragment(s) missing")
                    self._emit(last.frame, last.time, last.addr, "sctp", parts[0].protocol,
                               b"".join(p.data for p in parts), note)
                frags.clear()

    # -- TCP -------------------------------------------------------------

    def _tcp_segment(self, rec: _Record, ip: _IpInfo) -> None:
        b = ip.payload
        if len(b) < 20:
            return
        sport, dport, seq = struct.unpack_from("!HHI", b)
        protocol = _PORT_PROTOCOL.get(dport) or _PORT_PROTOCOL.get(sport)
        if protocol is None:
            return
        doff = (b[12] >> 4) * 4
        flags = b[13]
        if doff < 20 or doff > len(b):
            return
        payload = b[doff:]
        streams = self._tcp.setdefault((ip.src, sport, ip.dst, dport), [])
        if flags & TCP_SYN:
            cur = streams[-1] if streams else None
            if cur is not None and cur.isn == seq:
                pass  # repeated SYN
            elif cur is not None and cur.isn is None and not cur.segments:
                cur.isn = seq
            else:
                streams.append(_TcpStream(protocol, isn=seq))
            seq = (seq + 1) & _U32  # data in a SYN follows the ISN
        if not streams:
            streams.append(_TcpStream(protocol))
        if payload or ip.problem:
            streams[-1].segments.append(_Segment(rec.frame, rec.time, seq, payload, ip.problem))

    def _finish_tcp(self) -> None:
        for key, streams in self._tcp.items():
            for stream in streams:
                if stream.segments:
                    self._tcp_stream(key, stream)

    def _tcp_stream(self, addr: tuple[str, int, str, int], stream: _TcpStream) -> None:
        segs = stream.segments
        if stream.isn is not None:
            base = (stream.isn + 1) & _U32
        else:  # no SYN seen: start at the lowest sequence number captured
            ref = segs[0].seq
            base = (ref + min(_signed32(s.seq - ref) for s in segs)) & _U32
        pending: list[tuple[int, int, bytes]] = []
        buf = bytearray()
        buf_offset = 0   # stream offset of buf[0]
        next_offset = 0  # stream offset just past buf
        problems: list[str] = []
        last = segs[0]
        for index, seg in enumerate(segs):
            if seg.problem and not problems:
                problems.append(f"frame {seg.frame}: {seg.problem}")
            if not seg.payload:
                continue
            last = seg
            rel = _signed32(seg.seq - base)
            data = seg.payload
            if rel < 0:  # starts before the stream: keep only the new part
                data, rel = data[-rel:], 0
            heapq.heappush(pending, (rel, index, data))
            while pending and pending[0][0] <= next_offset:
                start, _, chunk = heapq.heappop(pending)
                end = start + len(chunk)
                if end > next_offset:
                    buf += chunk[next_offset - start:]
                    next_offset = end
            while len(buf) >= 4:
                length = int.from_bytes(buf[2:4], "big")
                if length < 4:
                    note = (f"TCP stream broken: message length {length} < 4 at stream "
                            f"offset {buf_offset}; rest of the stream ignored")
                    self._emit(seg.frame, seg.time, addr, "tcp", stream.protocol, buf, note)
                    return
                if len(buf) < length:
                    break
                self._emit(seg.frame, seg.time, addr, "tcp", stream.protocol, buf[:length])
                del buf[:length]
                buf_offset += length
        if not buf and not pending:
            return
        reasons = []
        if buf:
            want = int.from_bytes(buf[2:4], "big") if len(buf) >= 4 else None
            reasons.append(f"TCP stream ends inside a message ({len(buf)} of "
                           f"{want if want is not None else '?'} bytes)")
        if pending:
            first = min(start for start, _, _ in pending)
            later = max(start + len(chunk) for start, _, chunk in pending) - first
            reasons.append(f"gap in the TCP stream: bytes {next_offset}..{first - 1} missing, "
                           f"{later} bytes after the gap not decoded")
        if problems:
            reasons.append(problems[0])
        self._emit(last.frame, last.time, addr, "tcp", stream.protocol, buf, "; ".join(reasons))


_KNOWN_LINKTYPES = frozenset({
    LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, 12, 14, LINKTYPE_LOOP,
    LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2,
})


def read_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Iterate over the ASAP and ENRP messages in a pcap or pcapng file.

    Returns a :class:`CaptureReader` (an iterator of :class:`CapturedMessage`
    in frame order, with :attr:`CaptureReader.warnings` for file problems).

    :raises CaptureError: the file is not a pcap/pcapng capture.
    :raises OSError: the file cannot be opened.
    """
    return CaptureReader(path)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, value: int = 0) -> int:
    """CRC-32C (Castagnoli), as SCTP uses it; ``value`` continues an earlier CRC
    (like :func:`zlib.crc32`).  ``crc32c(b"123456789") == 0xE3069283``."""
    table = _CRC32C_TABLE
    c = value ^ _U32
    for byte in data:
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ _U32


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's-complement checksum of IP, TCP and UDP (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


Address = tuple[str, int]


def _ip_packet(src: str, dst: str, proto: int, l4: bytes, checksum_at: int | None) -> bytes:
    """Wrap a transport segment in IPv4 or IPv6 (by the address family),
    filling the transport checksum at byte ``checksum_at`` if given."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError(f"address families differ: {src} and {dst}")
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, proto, len(l4))
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", len(l4), proto)
    if checksum_at is not None:
        csum = internet_checksum(pseudo + l4)
        if proto == _IPPROTO_UDP and csum == 0:
            csum = 0xFFFF
        l4 = l4[:checksum_at] + struct.pack("!H", csum) + l4[checksum_at + 2:]
    if s.version == 4:
        if len(l4) + 20 > 0xFFFF:
            raise ValueError("IPv4 packet too large")
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                             s.packed, d.packed)
        return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + l4
    if len(l4) > 0xFFFF:
        raise ValueError("IPv6 payload too large")
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s.packed, d.packed) + l4


def sctp_data_chunk(payload: bytes, ppid: int, tsn: int = 1, stream: int = 0, *,
                    ssn: int = 0, flags: int = SCTP_DATA_BEGIN | SCTP_DATA_END) -> bytes:
    """An SCTP DATA chunk (padded to 4 bytes; the length field excludes padding).
    ``flags``: :data:`SCTP_DATA_BEGIN` | :data:`SCTP_DATA_END` for an unfragmented
    message, one or none of them for fragments, plus :data:`SCTP_DATA_UNORDERED`."""
    length = 16 + len(payload)
    chunk = struct.pack("!BBHIHHI", 0, flags, length, tsn & _U32, stream, ssn, ppid) + payload
    return chunk + b"\x00" * (-length % 4)


def sctp_packet_from_chunks(chunks: Iterable[bytes], src: Address = ("127.0.0.1", 40000),
                            dst: Address = ("127.0.0.1", ASAP_PORT), *, vtag: int = 1) -> bytes:
    """An IP packet with an SCTP common header (correct CRC32c) and the given
    already-encoded chunks (each padded to 4 bytes by the caller)."""
    body = struct.pack("!HHII", src[1], dst[1], vtag, 0) + b"".join(chunks)
    body = body[:8] + struct.pack("<I", crc32c(body)) + body[12:]
    return _ip_packet(src[0], dst[0], _IPPROTO_SCTP, body, None)


def sctp_packet(payload: bytes, ppid: int, src: Address = ("127.0.0.1", 40000),
                dst: Address = ("127.0.0.1", ASAP_PORT), tsn: int = 1, stream: int = 0, *,
                ssn: int = 0, flags: int = SCTP_DATA_BEGIN | SCTP_DATA_END,
                vtag: int = 1) -> bytes:
    """An IP packet carrying one SCTP DATA chunk (PPID 11 = ASAP, 12 = ENRP)."""
    chunk = sctp_data_chunk(payload, ppid, tsn, stream, ssn=ssn, flags=flags)
    return sctp_packet_from_chunks([chunk], src, dst, vtag=vtag)


def tcp_packet(payload: bytes, src: Address, dst: Address, seq: int = 1, *,
               ack: int = 0, flags: int = TCP_PSH | TCP_ACK, window: int = 65535) -> bytes:
    """An IP packet with a TCP segment (no options, correct checksum)."""
    if ack == 0 and flags & TCP_ACK:
        ack = 1
    seg = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & _U32, ack & _U32, 5 << 4, flags,
                      window, 0, 0) + payload
    return _ip_packet(src[0], dst[0], _IPPROTO_TCP, seg, 16)


def udp_packet(payload: bytes, src: Address, dst: Address) -> bytes:
    """An IP packet with a UDP datagram (correct checksum)."""
    dgram = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    return _ip_packet(src[0], dst[0], _IPPROTO_UDP, dgram, 6)


def encapsulate(ip_packet: bytes, linktype: int) -> bytes:
    """Put a link-layer header for ``linktype`` in front of an IP packet
    (0, 1, 101, 108, 113, 228, 229, 276)."""
    version = ip_packet[0] >> 4 if ip_packet else 0
    if version not in (4, 6):
        raise ValueError("not an IP packet")
    etype = struct.pack("!H", _ETH_IPV4 if version == 4 else _ETH_IPV6)
    if linktype == LINKTYPE_RAW:
        return ip_packet
    if linktype == LINKTYPE_IPV4 or linktype == LINKTYPE_IPV6:
        if version != (4 if linktype == LINKTYPE_IPV4 else 6):
            raise ValueError(f"IPv{version} packet for link type {linktype}")
        return ip_packet
    if linktype == LINKTYPE_ETHERNET:
        return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + etype + ip_packet
    if linktype == LINKTYPE_NULL:  # family in the writer's (here: little-endian) order
        return struct.pack("<I", 2 if version == 4 else 24) + ip_packet
    if linktype == LINKTYPE_LOOP:
        return struct.pack("!I", 2 if version == 4 else 24) + ip_packet
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack("!HHH8s", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01") + etype + ip_packet
    if linktype == LINKTYPE_LINUX_SLL2:
        return (etype + struct.pack("!HiHBB8s", 0, 1, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01")
                + ip_packet)
    raise ValueError(f"link type {linktype} not supported for writing")


PacketSpec = Union[bytes, tuple[float, bytes]]


def _timed(packets: Iterable[PacketSpec], start: float, step: float) -> Iterator[tuple[float, bytes]]:
    for index, item in enumerate(packets):
        if isinstance(item, (bytes, bytearray, memoryview)):
            yield start + index * step, bytes(item)
        else:
            yield float(item[0]), bytes(item[1])


def write_pcap(path: str | os.PathLike[str], packets: Iterable[PacketSpec], *,
               linktype: int = LINKTYPE_RAW, nanosecond: bool = False,
               big_endian: bool = False, start: float = 1_700_000_000.0,
               step: float = 0.001) -> None:
    """Write IP packets (from the ``*_packet`` helpers) as a classic pcap file.

    ``packets`` holds IP packets, or ``(time, packet)`` pairs; plain packets are
    stamped ``start``, ``start + step``, ... .  Each packet gets the link-layer
    header of ``linktype`` (:func:`encapsulate`).
    """
    endian = ">" if big_endian else "<"
    units = 1_000_000_000 if nanosecond else 1_000_000
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
        for time, pkt in _timed(packets, start, step):
            frame = encapsulate(pkt, linktype)
            ticks = round(time * units)
            f.write(struct.pack(endian + "IIII", ticks // units, ticks % units,
                                len(frame), len(frame)))
            f.write(frame)


def write_pcapng(path: str | os.PathLike[str],
                 packets: Iterable[bytes | tuple[float | None, bytes] | tuple[float | None, bytes, int]],
                 interfaces: Sequence[tuple[int, int]] = ((LINKTYPE_RAW, 6),), *,
                 big_endian: bool = False, start: float = 1_700_000_000.0,
                 step: float = 0.001) -> None:
    """Write IP packets as pcapng.

    ``interfaces``: ``(linktype, if_tsresol)`` per interface (tsresol as in
    pcapng: 6 = microseconds, 9 = nanoseconds, 0x80 | n = 2**-n seconds).
    ``packets``: IP packets (interface 0, times ``start + i * step``), or
    ``(time, packet)`` / ``(time, packet, interface)`` tuples; a time of
    ``None`` writes a Simple Packet Block (always interface 0, no time stamp).
    """
    e = ">" if big_endian else "<"

    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)

    def option(code: int, value: bytes) -> bytes:
        return struct.pack(e + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)

    with open(path, "wb") as f:
        f.write(block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for linktype, tsresol in interfaces:
            opts = option(9, bytes([tsresol])) + option(0, b"")
            f.write(block(1, struct.pack(e + "HHI", linktype, 0, 0) + opts))
        units = [2 ** (r & 0x7F) if r & 0x80 else 10 ** r for _, r in interfaces]
        for index, item in enumerate(packets):
            if isinstance(item, (bytes, bytearray, memoryview)):
                time: float | None = start + index * step
                pkt, iface = bytes(item), 0
            else:
                time, pkt = item[0], bytes(item[1])
                iface = item[2] if len(item) > 2 else 0
            frame = encapsulate(pkt, interfaces[iface][0])
            if time is None:
                if iface != 0:
                    raise ValueError("a Simple Packet Block belongs to interface 0")
                f.write(block(3, struct.pack(e + "I", len(frame)) + frame))
                continue
            ticks = round(time * units[iface])
            f.write(block(6, struct.pack(e + "IIIII", iface, ticks >> 32, ticks & _U32,
                                         len(frame), len(frame)) + frame))


# ---------------------------------------------------------------------------
# tshark
# ---------------------------------------------------------------------------

#: Extra options for every tshark run.  Empty: tshark 4.0's defaults already
#: decode ASAP (SCTP PPID 11, SCTP/TCP/UDP port 3863) and ENRP (SCTP PPID 12,
#: SCTP/UDP port 9901); ENRP over TCP cannot be enabled (not offered for
#: ``-d tcp.port==9901,...``).
TSHARK_OPTIONS: tuple[str, ...] = ()


class TsharkError(RuntimeError):
    """tshark is not installed, or it failed."""


def _tshark() -> str:
    exe = shutil.which("tshark") or ("/usr/bin/tshark" if os.path.exists("/usr/bin/tshark") else None)
    if exe is None:
        raise TsharkError("tshark not found (Debian: apt-get install -y tshark)")
    return exe


def tshark_available() -> bool:
    """True if a tshark binary can be found."""
    try:
        _tshark()
    except TsharkError:
        return False
    return True


def _run_tshark(args: Sequence[str]) -> str:
    cmd = [_tshark(), "-n", *TSHARK_OPTIONS, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TsharkError(f"running {' '.join(cmd)} failed: {exc}") from exc
    if proc.returncode != 0:
        raise TsharkError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def tshark_decode(path: str | os.PathLike[str], display_filter: str | None = None) -> str:
    """``tshark -r PATH -V`` (with :data:`TSHARK_OPTIONS`): the full text decode."""
    args = ["-r", os.fspath(path), "-V"]
    if display_filter:
        args += ["-Y", display_filter]
    return _run_tshark(args)


def tshark_fields(path: str | os.PathLike[str], fields: Sequence[str],
                  display_filter: str | None = None) -> list[dict[str, list[str]]]:
    """Values of ``fields`` per frame: one dict per frame (that passes
    ``display_filter``), mapping each field present in the frame to the list of
    its values in order of occurrence (a field absent from the frame is absent
    from the dict); ``"frame.number"`` is always included."""
    wanted = ["frame.number", *[f for f in fields if f != "frame.number"]]
    args = ["-r", os.fspath(path), "-T", "json"]
    for name in wanted:
        args += ["-e", name]
    if display_filter:
        args += ["-Y", display_filter]
    out = _run_tshark(args)
    if not out.strip():
        return []
    frames = json.loads(out)
    result = []
    for frame in frames:
        layers = frame.get("_source", {}).get("layers", {})
        result.append({k: [str(v) for v in (vals if isinstance(vals, list) else [vals])]
                       for k, vals in layers.items()})
    return result


def tshark_bytes(value: str) -> bytes:
    """Bytes from tshark's hex rendering of a byte field (``616263`` as
    ``-T json -e`` gives it, or ``61:62:63`` as ``-T fields`` does)."""
    return bytes.fromhex(value.replace(":", ""))


def tshark_message_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """How many ASAP and ENRP messages tshark decodes in the file (each
    message has one ``*.message_type``; a frame may hold several)."""
    counts = {"asap": 0, "enrp": 0}
    for frame in tshark_fields(path, ["asap.message_type", "enrp.message_type"]):
        counts["asap"] += len(frame.get("asap.message_type", []))
        counts["enrp"] += len(frame.get("enrp.message_type", []))
    return counts
