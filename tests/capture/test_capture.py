"""Tests for rserpool.capture: reading pcap/pcapng, the packet writers, and
tshark as an independent oracle of the wire format.

Tests marked ``tshark`` skip when tshark is missing, unless ``CI`` or
``RSERPOOL_REQUIRE_TSHARK`` is set in the environment: then they fail.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rserpool.capture import (
    ASAP_PORT,
    ENRP_PORT,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    PPID_ASAP,
    PPID_ENRP,
    SCTP_DATA_BEGIN,
    SCTP_DATA_END,
    SCTP_DATA_UNORDERED,
    TCP_ACK,
    TCP_SYN,
    CaptureError,
    CapturedMessage,
    crc32c,
    encapsulate,
    internet_checksum,
    read_capture,
    sctp_data_chunk,
    sctp_packet,
    sctp_packet_from_chunks,
    tcp_packet,
    tshark_available,
    tshark_bytes,
    tshark_decode,
    tshark_fields,
    tshark_message_counts,
    udp_packet,
    write_pcap,
    write_pcapng,
)

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURES = sorted(DATA.glob("*.pcap"))

PE = ("10.255.0.2", 40000)
PR = ("10.255.0.1", ASAP_PORT)
PR_ENRP = ("10.255.0.1", ENRP_PORT)
PEER_ENRP = ("10.255.0.3", ENRP_PORT)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture
def tshark() -> None:
    """Require tshark: fail under CI / RSERPOOL_REQUIRE_TSHARK, else skip."""
    if tshark_available():
        return
    if os.environ.get("CI") or os.environ.get("RSERPOOL_REQUIRE_TSHARK"):
        pytest.fail("tshark is required (CI or RSERPOOL_REQUIRE_TSHARK is set) but not installed")
    pytest.skip("tshark not installed")


def tlv(ptype: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("!HH", ptype, length) + value + b"\x00" * (-length % 4)


def message(mtype: int, flags: int, body: bytes) -> bytes:
    return struct.pack("!BBH", mtype, flags, 4 + len(body)) + body


def pool_handle(name: bytes) -> bytes:
    return tlv(0x0009, name)


# A few realistic ASAP / ENRP messages, encoded by hand (RSPLIB padding rules:
# every TLV padded, header length includes the padding).
ASAP_HANDLE_RESOLUTION = message(0x05, 0, pool_handle(b"EchoPool"))
ASAP_HANDLE_RESOLUTION_ODD = message(0x05, 0, pool_handle(b"abc"))
ASAP_KEEP_ALIVE = message(0x07, 0x01, struct.pack("!I", 0x12345678) + pool_handle(b"echo")
                          + tlv(0x000E, struct.pack("!I", 0xABCDEF01)))
ASAP_KEEP_ALIVE_ACK = message(0x08, 0, pool_handle(b"echo") + tlv(0x000E, struct.pack("!I", 0xABCDEF01)))
ASAP_SERVER_ANNOUNCE = message(0x0A, 0, struct.pack("!I", 0x22222222))
ASAP_COOKIE = message(0x0B, 0, tlv(0x000D, b"cookie"))
ENRP_PRESENCE = message(0x01, 0x01, struct.pack("!II", 0x11111111, 0) + tlv(0x000F, b"\x12\x34")
                        + tlv(0x000B, struct.pack("!I", 0x11111111)
                              + tlv(0x0004, struct.pack("!HH", ENRP_PORT, 0)
                                    + tlv(0x0001, bytes([10, 255, 0, 1])))))
ENRP_LIST_REQUEST = message(0x05, 0, struct.pack("!II", 0x11111111, 0x33333333))
ENRP_HANDLE_TABLE_REQUEST = message(0x02, 0x01, struct.pack("!II", 0x11111111, 0x33333333))
ENRP_INIT_TAKEOVER = message(0x07, 0, struct.pack("!III", 0x11111111, 0, 0x44444444))

ASAP_MESSAGES = [ASAP_HANDLE_RESOLUTION, ASAP_HANDLE_RESOLUTION_ODD, ASAP_KEEP_ALIVE,
                 ASAP_KEEP_ALIVE_ACK, ASAP_SERVER_ANNOUNCE, ASAP_COOKIE]
ENRP_MESSAGES = [ENRP_PRESENCE, ENRP_LIST_REQUEST, ENRP_HANDLE_TABLE_REQUEST, ENRP_INIT_TAKEOVER]


def header_length(payload: bytes) -> int:
    return int.from_bytes(payload[2:4], "big")


def read(path: Path) -> list[CapturedMessage]:
    return list(read_capture(path))


def payloads(path: Path) -> list[bytes]:
    return [m.payload for m in read_capture(path)]


def tcp_stream_packets(data: bytes, cuts: list[int], src=PE, dst=PR, isn: int = 1000,
                       syn: bool = True) -> list[bytes]:
    """Segments of ``data`` cut at ``cuts`` (sorted offsets), in order."""
    bounds = [0, *cuts, len(data)]
    packets = []
    if syn:
        packets.append(tcp_packet(b"", src, dst, isn, flags=TCP_SYN))
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b > a:
            packets.append(tcp_packet(data[a:b], src, dst, (isn + 1 + a) & 0xFFFFFFFF))
    return packets


def raw_pcap(path: Path, records: list[tuple[bytes, int]], linktype: int = LINKTYPE_RAW) -> None:
    """Classic pcap with explicit (captured bytes, original length) records."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for i, (data, orig) in enumerate(records):
            f.write(struct.pack("<IIII", 1000 + i, 0, len(data), orig) + data)


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------

def test_crc32c_known_vector() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283


@given(st.binary(max_size=300))
def test_crc32c_matches_dpkt(data: bytes) -> None:
    dpkt_crc32c = pytest.importorskip("dpkt.crc32c")
    # dpkt returns the CRC byte-swapped (ready to be packed big-endian).
    swapped = int.from_bytes(struct.pack(">I", dpkt_crc32c.cksum(data)), "little")
    assert crc32c(data) == swapped


def test_internet_checksum_known_vector() -> None:
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861
    filled = header[:10] + struct.pack("!H", 0xB861) + header[12:]
    assert internet_checksum(filled) == 0


def test_written_packets_verify() -> None:
    pkt = udp_packet(b"hello", PE, ("239.0.0.50", ASAP_PORT))
    assert internet_checksum(pkt[:20]) == 0
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 17, len(pkt) - 20)
    assert internet_checksum(pseudo + pkt[20:]) == 0
    pkt = tcp_packet(b"hello!", PE, PR, 7)
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 6, len(pkt) - 20)
    assert internet_checksum(pseudo + pkt[20:]) == 0
    pkt = sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, PR)
    sctp = pkt[20:]
    zeroed = sctp[:8] + b"\x00" * 4 + sctp[12:]
    assert sctp[8:12] == struct.pack("<I", crc32c(zeroed))


# ---------------------------------------------------------------------------
# the real RSPLIB captures
# ---------------------------------------------------------------------------

def test_reference_captures_present() -> None:
    assert len(CAPTURES) >= 6


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_reference_capture_reads_cleanly(path: Path) -> None:
    reader = read_capture(path)
    msgs = list(reader)
    assert reader.format == "pcap"
    assert reader.warnings == []
    assert msgs
    frames = [m.frame for m in msgs]
    assert frames == sorted(frames)
    for m in msgs:
        assert m.note is None, m.describe()
        assert m.protocol in ("asap", "enrp")
        assert m.transport in ("sctp", "udp")  # RSPLIB uses no TCP
        assert len(m.payload) >= 4
        assert header_length(m.payload) == len(m.payload), m.describe()
        assert m.time > 1e9
        if m.transport == "udp":
            assert m.dport == {"asap": ASAP_PORT, "enrp": ENRP_PORT}[m.protocol]


def test_multicast_announces() -> None:
    msgs = read(DATA / "07-multicast-announce-autoconfig.pcap")
    udp = [m for m in msgs if m.transport == "udp"]
    assert {(m.dst, m.dport, m.protocol) for m in udp} == {
        ("239.0.0.50", ASAP_PORT, "asap"), ("239.0.0.51", ENRP_PORT, "enrp")}
    assert all(m.payload[0] == 0x0A for m in udp if m.protocol == "asap")  # Server Announce
    assert all(m.payload[0] == 0x01 for m in udp if m.protocol == "enrp")  # Presence


@pytest.mark.tshark
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_reference_capture_counts_match_tshark(tshark: None, path: Path) -> None:
    msgs = read(path)
    for proto in ("asap", "enrp"):
        frames = tshark_fields(path, [], display_filter=proto)
        ours = {m.frame for m in msgs if m.protocol == proto}
        assert len(ours) == len(frames)
        assert ours == {int(f["frame.number"][0]) for f in frames}
    counts = tshark_message_counts(path)
    assert Counter(m.protocol for m in msgs) == Counter(
        {k: v for k, v in counts.items() if v})


def tshark_messages(path: Path) -> list[tuple[int, str, int, int]]:
    """(frame, protocol, type, length) of every message tshark decodes."""
    out = []
    fields = ["asap.message_type", "asap.message_length", "enrp.message_type", "enrp.message_length"]
    for frame in tshark_fields(path, fields):
        number = int(frame["frame.number"][0])
        for proto in ("asap", "enrp"):
            types = frame.get(f"{proto}.message_type", [])
            lengths = frame.get(f"{proto}.message_length", [])
            assert len(types) == len(lengths)
            out += [(number, proto, int(t, 0), int(n, 0)) for t, n in zip(types, lengths, strict=True)]
    return out


def our_messages(path: Path) -> list[tuple[int, str, int, int]]:
    return [(m.frame, m.protocol, m.payload[0], header_length(m.payload)) for m in read(path)]


@pytest.mark.tshark
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_reference_capture_messages_match_tshark(tshark: None, path: Path) -> None:
    assert sorted(our_messages(path)) == sorted(tshark_messages(path))


@pytest.mark.tshark
def test_reference_capture_pool_handles_match_tshark(tshark: None) -> None:
    path = DATA / "02-asap-handle-resolution.pcap"
    rows = tshark_fields(path, ["asap.pool_handle_pool_handle"], display_filter="asap")
    theirs = {int(r["frame.number"][0]): [tshark_bytes(v) for v in r.get("asap.pool_handle_pool_handle", [])]
              for r in rows}
    for m in read(path):
        if m.payload[0] in (0x05, 0x06):  # handle resolution (+ response): PH first
            assert m.payload[4:6] == b"\x00\x09"
            ph_len = int.from_bytes(m.payload[6:8], "big")
            assert theirs[m.frame][0] == m.payload[8:4 + ph_len]


# ---------------------------------------------------------------------------
# synthetic captures checked by tshark
# ---------------------------------------------------------------------------

def mixed_packets(ipv6: bool = False) -> list[bytes]:
    if ipv6:
        pe, pr, pr_e, peer = ("fd00::2", 40000), ("fd00::1", ASAP_PORT), ("fd00::1", ENRP_PORT), ("fd00::3", ENRP_PORT)
        group_a, group_e = ("ff05::50", ASAP_PORT), ("ff05::51", ENRP_PORT)
    else:
        pe, pr, pr_e, peer = PE, PR, PR_ENRP, PEER_ENRP
        group_a, group_e = ("239.0.0.50", ASAP_PORT), ("239.0.0.51", ENRP_PORT)
    packets = []
    for i, msg in enumerate(ASAP_MESSAGES):
        packets.append(sctp_packet(msg, PPID_ASAP, pe, pr, tsn=100 + i))
    for i, msg in enumerate(ENRP_MESSAGES):
        packets.append(sctp_packet(msg, PPID_ENRP, peer, pr_e, tsn=200 + i, vtag=7))
    packets.append(udp_packet(ASAP_SERVER_ANNOUNCE, (pr[0], 33333), group_a))
    packets.append(udp_packet(ENRP_PRESENCE, (pr[0], 44444), group_e))
    seq = 5000
    for msg in ASAP_MESSAGES:  # tshark decodes one ASAP message per TCP segment
        packets.append(tcp_packet(msg, (pe[0], 50000), pr, seq))
        seq += len(msg)
    return packets


def assert_no_malformed(path: Path) -> None:
    text = tshark_decode(path)
    assert "Malformed" not in text
    assert "[Checksum Status: Bad]" not in text


@pytest.mark.tshark
@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_ETHERNET, LINKTYPE_NULL,
                                      LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2])
def test_written_capture_matches_tshark(tshark: None, tmp_path: Path, linktype: int) -> None:
    path = tmp_path / "mixed.pcap"
    packets = mixed_packets()
    write_pcap(path, packets, linktype=linktype)
    ours = read(path)
    assert [m.payload for m in ours] == (ASAP_MESSAGES + ENRP_MESSAGES
                                         + [ASAP_SERVER_ANNOUNCE, ENRP_PRESENCE] + ASAP_MESSAGES)
    assert all(m.note is None for m in ours)
    assert sorted(our_messages(path)) == sorted(tshark_messages(path))
    assert_no_malformed(path)


@pytest.mark.tshark
@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_IPV6, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2,
                                      LINKTYPE_NULL])
def test_written_ipv6_capture_matches_tshark(tshark: None, tmp_path: Path, linktype: int) -> None:
    path = tmp_path / "mixed6.pcap"
    write_pcap(path, mixed_packets(ipv6=True), linktype=linktype)
    ours = read(path)
    assert len(ours) == 2 * len(ASAP_MESSAGES) + len(ENRP_MESSAGES) + 2
    assert ours[0].src == "fd00::2" and ours[0].dst == "fd00::1"
    assert sorted(our_messages(path)) == sorted(tshark_messages(path))
    assert_no_malformed(path)


@pytest.mark.tshark
def test_tshark_checksums_good(tshark: None, tmp_path: Path) -> None:
    path = tmp_path / "sums.pcap"
    write_pcap(path, mixed_packets() + mixed_packets(ipv6=True))
    proc = subprocess.run(
        [shutil.which("tshark") or "/usr/bin/tshark", "-n", "-r", str(path),
         "-o", "sctp.checksum:CRC-32C", "-o", "tcp.check_checksum:TRUE",
         "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
         "-T", "fields", "-E", "occurrence=a",
         "-e", "ip.checksum.status", "-e", "sctp.checksum.status",
         "-e", "tcp.checksum.status", "-e", "udp.checksum.status"],
        capture_output=True, text=True, check=True)
    statuses = proc.stdout.split()
    # IPv4 packets: IP + transport checksum; IPv6 packets: transport only
    assert len(statuses) == 3 * len(mixed_packets())
    assert set(statuses) == {"1"}  # 1 = good


@pytest.mark.tshark
def test_tshark_field_values(tshark: None, tmp_path: Path) -> None:
    path = tmp_path / "fields.pcap"
    write_pcap(path, [sctp_packet(ASAP_KEEP_ALIVE, PPID_ASAP, PR, PE),
                      sctp_packet(ASAP_HANDLE_RESOLUTION_ODD, PPID_ASAP, PE, PR, tsn=2),
                      udp_packet(ENRP_PRESENCE, PR_ENRP, ("239.0.0.51", ENRP_PORT))])
    rows = tshark_fields(path, ["asap.message_type", "asap.h_bit", "asap.server_identifier",
                                "asap.pool_handle_pool_handle", "asap.pe_identifier",
                                "enrp.message_type", "enrp.r_bit", "enrp.sender_servers_id",
                                "enrp.pe_checksum", "enrp.ipv4_address", "enrp.sctp_transport_port"])
    assert [r["frame.number"] for r in rows] == [["1"], ["2"], ["3"]]
    ka, hr, pres = rows
    assert int(ka["asap.message_type"][0], 0) == 0x07
    assert ka["asap.h_bit"] == ["1"]
    assert int(ka["asap.server_identifier"][0], 0) == 0x12345678
    assert tshark_bytes(ka["asap.pool_handle_pool_handle"][0]) == b"echo"
    assert int(ka["asap.pe_identifier"][0], 0) == 0xABCDEF01
    assert tshark_bytes(hr["asap.pool_handle_pool_handle"][0]) == b"abc"
    assert int(pres["enrp.message_type"][0], 0) == 0x01
    assert pres["enrp.r_bit"] == ["1"]
    assert int(pres["enrp.sender_servers_id"][0], 0) == 0x11111111
    assert int(pres["enrp.pe_checksum"][0], 0) == 0x1234
    assert pres["enrp.ipv4_address"] == ["10.255.0.1"]
    assert int(pres["enrp.sctp_transport_port"][0], 0) == ENRP_PORT
    assert tshark_bytes("61:62:63") == b"abc"


@pytest.mark.tshark
def test_tshark_reassembles_sctp_fragments_like_us(tshark: None, tmp_path: Path) -> None:
    big = message(0x0B, 0, tlv(0x000D, bytes(range(256)) * 12))
    parts = [big[i:i + 1000] for i in range(0, len(big), 1000)]
    packets = []
    for i, part in enumerate(parts):
        flags = (SCTP_DATA_BEGIN if i == 0 else 0) | (SCTP_DATA_END if i == len(parts) - 1 else 0)
        packets.append(sctp_packet(part, PPID_ASAP, PE, ("10.255.0.9", 50000), tsn=10 + i, flags=flags))
    packets.append(sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, ("10.255.0.9", 50000), tsn=10 + len(parts)))
    path = tmp_path / "frag.pcap"
    write_pcap(path, packets)
    ours = read(path)
    assert [m.payload for m in ours] == [big, ASAP_COOKIE]
    assert ours[0].frame == len(parts)
    assert our_messages(path) == tshark_messages(path)


@pytest.mark.tshark
def test_tshark_reads_written_pcapng(tshark: None, tmp_path: Path) -> None:
    path = tmp_path / "multi.pcapng"
    packets = mixed_packets()
    items = [(1_700_000_000 + i / 8, pkt, i % 3) for i, pkt in enumerate(packets)]
    write_pcapng(path, items, interfaces=[(LINKTYPE_RAW, 6), (LINKTYPE_ETHERNET, 9),
                                          (LINKTYPE_LINUX_SLL2, 0x80 | 20)])
    assert sorted(our_messages(path)) == sorted(tshark_messages(path))
    times = [float(r["frame.time_epoch"][0]) for r in tshark_fields(path, ["frame.time_epoch"])]
    assert times == pytest.approx([t for t, _, _ in items], abs=1e-6)


# ---------------------------------------------------------------------------
# TCP reassembly
# ---------------------------------------------------------------------------

TCP_MESSAGES = [ASAP_HANDLE_RESOLUTION, ASAP_KEEP_ALIVE, ASAP_HANDLE_RESOLUTION_ODD, ASAP_COOKIE]
TCP_STREAM = b"".join(TCP_MESSAGES)


@pytest.mark.parametrize("syn", [True, False])
def test_tcp_split_at_every_position(tmp_path: Path, syn: bool) -> None:
    for cut in range(1, len(TCP_STREAM)):
        for reverse in (False, True):
            packets = tcp_stream_packets(TCP_STREAM, [cut], syn=syn)
            if reverse:
                packets = packets[:1] + packets[:0:-1] if syn else packets[::-1]
            path = tmp_path / f"split-{cut}-{reverse}.pcap"
            write_pcap(path, packets)
            msgs = read(path)
            assert [m.payload for m in msgs] == TCP_MESSAGES, (cut, reverse)
            assert all(m.note is None and m.transport == "tcp" and m.protocol == "asap" for m in msgs)
            # a message comes out with the frame that completed it
            last = len(packets)
            ends = [sum(len(x) for x in TCP_MESSAGES[:i + 1]) for i in range(len(TCP_MESSAGES))]
            expected = [last if reverse or end > cut else last - 1 for end in ends]
            assert [m.frame for m in msgs] == expected, (cut, reverse)


def test_tcp_every_byte_shuffled(tmp_path: Path) -> None:
    rng = random.Random(1)
    for syn in (True, False):
        for trial in range(5):
            packets = tcp_stream_packets(TCP_STREAM, list(range(1, len(TCP_STREAM))), syn=syn)
            head, data = (packets[:1], packets[1:]) if syn else ([], packets)
            rng.shuffle(data)
            path = tmp_path / f"bytes-{syn}-{trial}.pcap"
            write_pcap(path, head + data)
            msgs = read(path)
            assert [m.payload for m in msgs] == TCP_MESSAGES
            assert all(m.note is None for m in msgs)


def test_tcp_frame_of_completion(tmp_path: Path) -> None:
    # segment 1: message 0 + first half of message 1; segment 2: rest of 1 and all of 2
    a = len(TCP_MESSAGES[0]) + 6
    b = len(TCP_MESSAGES[0]) + len(TCP_MESSAGES[1]) + len(TCP_MESSAGES[2])
    packets = tcp_stream_packets(TCP_STREAM, [a, b])  # SYN, s1, s2, s3
    path = tmp_path / "frames.pcap"
    write_pcap(path, [packets[0], packets[2], packets[1], packets[3]])
    msgs = read(path)
    assert [m.payload for m in msgs] == TCP_MESSAGES
    assert [m.frame for m in msgs] == [3, 3, 3, 4]
    assert msgs[0].time == pytest.approx(1_700_000_000.002)
    assert (msgs[0].src, msgs[0].sport, msgs[0].dst, msgs[0].dport) == (PE[0], PE[1], PR[0], PR[1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_tcp_reassembly_property(tmp_path: Path, data: st.DataObject) -> None:
    msgs = data.draw(st.lists(st.sampled_from(ASAP_MESSAGES), min_size=1, max_size=6))
    stream = b"".join(msgs)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
    isn = data.draw(st.sampled_from([0, 1000, 0xFFFFFFF0, 0xFFFFFFFF]))
    syn = data.draw(st.booleans())
    packets = tcp_stream_packets(stream, cuts, isn=isn, syn=syn)
    head, segs = (packets[:1], packets[1:]) if syn else ([], packets)
    # retransmissions and overlapping segments
    extra = []
    for _ in range(data.draw(st.integers(0, 3))):
        a = data.draw(st.integers(0, len(stream) - 1))
        b = data.draw(st.integers(a + 1, len(stream)))
        extra.append(tcp_packet(stream[a:b], PE, PR, (isn + 1 + a) & 0xFFFFFFFF))
    body = data.draw(st.permutations(segs + extra))
    path = tmp_path / "prop.pcap"
    write_pcap(path, head + list(body))
    got = read(path)
    assert [m.payload for m in got] == msgs
    assert all(m.note is None for m in got)


def test_tcp_both_directions_and_ports(tmp_path: Path) -> None:
    client, server = ("10.0.0.1", 33000), ("10.0.0.2", ASAP_PORT)
    eclient, eserver = ("10.0.0.1", 33001), ("10.0.0.3", ENRP_PORT)
    packets = [
        tcp_packet(b"", client, server, 10, flags=TCP_SYN),
        tcp_packet(b"", server, client, 90, flags=TCP_SYN | TCP_ACK),
        tcp_packet(ASAP_HANDLE_RESOLUTION[:3], client, server, 11),
        tcp_packet(ASAP_KEEP_ALIVE, server, client, 91),
        tcp_packet(ASAP_HANDLE_RESOLUTION[3:], client, server, 14),
        tcp_packet(ENRP_LIST_REQUEST + ENRP_PRESENCE[:9], eclient, eserver, 500),
        tcp_packet(ENRP_PRESENCE[9:], eclient, eserver, 500 + len(ENRP_LIST_REQUEST) + 9),
    ]
    path = tmp_path / "dirs.pcap"
    write_pcap(path, packets)
    got = [(m.frame, m.src, m.sport, m.protocol, m.payload) for m in read(path)]
    assert got == [
        (4, server[0], server[1], "asap", ASAP_KEEP_ALIVE),
        (5, client[0], client[1], "asap", ASAP_HANDLE_RESOLUTION),
        (6, eclient[0], eclient[1], "enrp", ENRP_LIST_REQUEST),
        (7, eclient[0], eclient[1], "enrp", ENRP_PRESENCE),
    ]


def test_tcp_new_connection_same_ports(tmp_path: Path) -> None:
    packets = (tcp_stream_packets(ASAP_KEEP_ALIVE + ASAP_COOKIE[:5], [7], isn=100)
               + tcp_stream_packets(ASAP_HANDLE_RESOLUTION, [2], isn=7777))
    path = tmp_path / "reuse.pcap"
    write_pcap(path, packets)
    msgs = read(path)
    assert [m.payload for m in msgs] == [ASAP_KEEP_ALIVE, ASAP_COOKIE[:5], ASAP_HANDLE_RESOLUTION]
    assert msgs[0].note is None and msgs[2].note is None
    assert "ends inside a message" in msgs[1].note
    assert msgs[1].frame == 3


def test_tcp_broken_length(tmp_path: Path) -> None:
    junk = b"\x05\x00\x00\x02" + b"rest of it"
    packets = tcp_stream_packets(ASAP_COOKIE + junk + ASAP_COOKIE, [len(ASAP_COOKIE) + 6])
    packets.append(tcp_packet(ASAP_KEEP_ALIVE, PE, PR, 1001 + len(ASAP_COOKIE) * 2 + len(junk)))
    path = tmp_path / "broken.pcap"
    write_pcap(path, packets)
    msgs = read(path)
    assert len(msgs) == 2
    assert msgs[0].payload == ASAP_COOKIE and msgs[0].note is None
    assert msgs[1].payload == junk[:6]  # what was reassembled when the error showed
    assert "length 2 < 4" in msgs[1].note and f"offset {len(ASAP_COOKIE)}" in msgs[1].note
    assert msgs[1].frame == 2


def test_tcp_gap(tmp_path: Path) -> None:
    stream = b"".join(TCP_MESSAGES)
    cut1, cut2 = len(TCP_MESSAGES[0]) + 3, len(TCP_MESSAGES[0]) + 10
    packets = tcp_stream_packets(stream, [cut1, cut2])
    del packets[2]  # lose the middle segment
    path = tmp_path / "gap.pcap"
    write_pcap(path, packets)
    msgs = read(path)
    assert [m.payload for m in msgs] == [TCP_MESSAGES[0], TCP_MESSAGES[1][:3]]
    assert msgs[1].note is not None and "gap" in msgs[1].note
    assert f"bytes {cut1}..{cut2 - 1} missing" in msgs[1].note


def test_tcp_non_rserpool_port_ignored(tmp_path: Path) -> None:
    path = tmp_path / "other.pcap"
    write_pcap(path, [tcp_packet(ASAP_COOKIE, ("10.0.0.1", 1234), ("10.0.0.2", 80)),
                      udp_packet(ASAP_COOKIE, ("10.0.0.1", ASAP_PORT), ("10.0.0.2", 5555)),
                      sctp_packet(ASAP_COOKIE, 0, PE, PR),        # PPID 0: not ours
                      sctp_packet(ASAP_COOKIE, 46, PE, PR, tsn=2)])
    assert read(path) == []


# ---------------------------------------------------------------------------
# SCTP
# ---------------------------------------------------------------------------

def fragments(msg: bytes, size: int, tsn: int, stream: int = 0, ppid: int = PPID_ASAP,
              dst=PR, unordered: bool = False) -> list[bytes]:
    parts = [msg[i:i + size] for i in range(0, len(msg), size)]
    out = []
    for i, part in enumerate(parts):
        flags = (SCTP_DATA_BEGIN if i == 0 else 0) | (SCTP_DATA_END if i == len(parts) - 1 else 0)
        flags |= SCTP_DATA_UNORDERED if unordered else 0
        out.append(sctp_packet(part, ppid, PE, dst, tsn=tsn + i, stream=stream, flags=flags))
    return out


BIG_ASAP = message(0x0B, 0, tlv(0x000D, os.urandom(997)))
BIG_ENRP = message(0x03, 0, struct.pack("!II", 1, 2) + bytes(1500))


def test_sctp_fragments_in_order(tmp_path: Path) -> None:
    path = tmp_path / "f.pcap"
    packets = fragments(BIG_ASAP, 100, tsn=50)
    write_pcap(path, packets)
    msgs = read(path)
    assert [m.payload for m in msgs] == [BIG_ASAP]
    assert msgs[0].frame == len(packets) and msgs[0].note is None


def test_sctp_fragments_shuffled_interleaved_and_retransmitted(tmp_path: Path) -> None:
    rng = random.Random(7)
    a = fragments(BIG_ASAP, 64, tsn=0xFFFFFFF8, stream=1)  # wraps the TSN space
    b = fragments(BIG_ENRP, 200, tsn=100, stream=2, ppid=PPID_ENRP, dst=PR_ENRP)
    single = sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, PR, tsn=5000, stream=3)
    packets = a + b + [single, a[3], b[0]]  # two retransmitted fragments
    rng.shuffle(packets)
    path = tmp_path / "mix.pcap"
    write_pcap(path, packets)
    msgs = read(path)
    assert sorted(m.payload for m in msgs) == sorted([BIG_ASAP, BIG_ENRP, ASAP_COOKIE])
    assert all(m.note is None for m in msgs)
    by_payload = {m.payload: m for m in msgs}
    assert by_payload[BIG_ENRP].protocol == "enrp"
    assert by_payload[BIG_ASAP].frame == max(packets.index(p) for p in a) + 1


def test_sctp_unordered_fragments(tmp_path: Path) -> None:
    path = tmp_path / "u.pcap"
    write_pcap(path, fragments(ASAP_KEEP_ALIVE, 5, tsn=9, unordered=True))
    assert payloads(path) == [ASAP_KEEP_ALIVE]


def test_sctp_incomplete_fragments_reported(tmp_path: Path) -> None:
    packets = fragments(BIG_ASAP, 100, tsn=1)
    del packets[4]
    path = tmp_path / "inc.pcap"
    write_pcap(path, packets)
    msgs = read(path)
    assert len(msgs) == 2
    assert all(m.note and "incomplete fragmented" in m.note for m in msgs)
    assert b"".join(m.payload for m in msgs) == BIG_ASAP[:400] + BIG_ASAP[500:]


def test_sctp_retransmission_shown_once(tmp_path: Path) -> None:
    pkt = sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, PR, tsn=3)
    other_assoc = sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, PR, tsn=3, vtag=99)
    path = tmp_path / "rtx.pcap"
    write_pcap(path, [pkt, pkt, other_assoc])
    assert [m.frame for m in read(path)] == [1, 3]


def test_sctp_bundled_chunks_with_odd_control_chunk(tmp_path: Path) -> None:
    # an ERROR chunk (type 9) of length 10: padded to 12, must not derail parsing
    error_chunk = struct.pack("!BBH", 9, 0, 10) + struct.pack("!HH", 1, 6) + b"\x00\x07" + b"\x00\x00"
    chunks = [
        sctp_data_chunk(ASAP_HANDLE_RESOLUTION_ODD, PPID_ASAP, tsn=1),
        error_chunk,
        sctp_data_chunk(b"not rserpool", 0, tsn=2),
        sctp_data_chunk(ENRP_LIST_REQUEST, PPID_ENRP, tsn=3, stream=1),
        struct.pack("!BBHIIHH", 3, 0, 16, 1, 1000, 0, 0),  # SACK
        sctp_data_chunk(ASAP_COOKIE, PPID_ASAP, tsn=4),
    ]
    path = tmp_path / "bundle.pcap"
    write_pcap(path, [sctp_packet_from_chunks(chunks, PE, PR)])
    msgs = read(path)
    assert [(m.protocol, m.payload) for m in msgs] == [
        ("asap", ASAP_HANDLE_RESOLUTION_ODD), ("enrp", ENRP_LIST_REQUEST), ("asap", ASAP_COOKIE)]
    assert {m.frame for m in msgs} == {1}


@pytest.mark.tshark
def test_sctp_bundle_matches_tshark(tshark: None, tmp_path: Path) -> None:
    chunks = [sctp_data_chunk(msg, PPID_ASAP, tsn=i + 1) for i, msg in enumerate(ASAP_MESSAGES)]
    path = tmp_path / "bundle.pcap"
    write_pcap(path, [sctp_packet_from_chunks(chunks, PE, PR)])
    assert len(read(path)) == len(ASAP_MESSAGES)
    assert our_messages(path) == tshark_messages(path)


def test_sctp_truncated_chunk(tmp_path: Path) -> None:
    pkt = encapsulate(sctp_packet(ASAP_KEEP_ALIVE, PPID_ASAP, PE, PR), LINKTYPE_RAW)
    path = tmp_path / "snap.pcap"
    raw_pcap(path, [(pkt[:-6], len(pkt))])
    (msg,) = read(path)
    assert msg.payload == ASAP_KEEP_ALIVE[:-6]
    assert "truncated" in msg.note


# ---------------------------------------------------------------------------
# UDP, IP details
# ---------------------------------------------------------------------------

def test_udp_announces(tmp_path: Path) -> None:
    path = tmp_path / "udp.pcap"
    write_pcap(path, [udp_packet(ASAP_SERVER_ANNOUNCE, ("10.0.0.1", 3863), ("239.0.0.50", ASAP_PORT)),
                      udp_packet(ENRP_PRESENCE, ("10.0.0.1", 12345), ("239.0.0.51", ENRP_PORT)),
                      udp_packet(b"", ("10.0.0.1", 12345), ("239.0.0.51", ENRP_PORT))])
    msgs = read(path)
    assert [(m.transport, m.protocol, m.dst, m.payload) for m in msgs] == [
        ("udp", "asap", "239.0.0.50", ASAP_SERVER_ANNOUNCE),
        ("udp", "enrp", "239.0.0.51", ENRP_PRESENCE),
        ("udp", "enrp", "239.0.0.51", b""),
    ]


def fragment_ipv4(pkt: bytes, cut: int) -> list[bytes]:
    """Split an IPv4 packet (20-byte header) into two fragments at payload offset ``cut`` (multiple of 8)."""
    header, payload = bytearray(pkt[:20]), pkt[20:]
    out = []
    for offset, part, more in ((0, payload[:cut], True), (cut, payload[cut:], False)):
        h = bytearray(header)
        h[2:4] = struct.pack("!H", 20 + len(part))
        h[4:6] = b"\x12\x34"
        h[6:8] = struct.pack("!H", (0x2000 if more else 0) | offset // 8)
        h[10:12] = b"\x00\x00"
        h[10:12] = struct.pack("!H", internet_checksum(bytes(h)))
        out.append(bytes(h) + part)
    return out


def test_ipv4_fragments_noted_not_crashing(tmp_path: Path) -> None:
    udp = udp_packet(ENRP_PRESENCE, ("10.0.0.1", 5000), ("239.0.0.51", ENRP_PORT))
    sctp = sctp_packet(BIG_ASAP, PPID_ASAP, PE, PR, tsn=1)
    path = tmp_path / "frag.pcap"
    write_pcap(path, fragment_ipv4(udp, 16) + fragment_ipv4(sctp, 512)
               + [udp_packet(ASAP_SERVER_ANNOUNCE, ("10.0.0.1", 5000), ("239.0.0.50", ASAP_PORT))])
    msgs = read(path)
    assert msgs[-1].payload == ASAP_SERVER_ANNOUNCE and msgs[-1].note is None
    noted = msgs[:-1]
    assert noted and all("fragment" in m.note for m in noted)
    assert noted[0].frame == 1 and noted[0].payload == ENRP_PRESENCE[:8]


def test_ipv6_extension_headers(tmp_path: Path) -> None:
    pkt = udp_packet(ASAP_SERVER_ANNOUNCE, ("fd00::1", 5000), ("ff05::50", ASAP_PORT))
    hop_by_hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"          # next: destination options
    dest_opts = bytes([17, 1]) + b"\x01\x0c" + bytes(12)                 # 16 bytes, next: UDP
    ext = hop_by_hop + dest_opts
    plen = int.from_bytes(pkt[4:6], "big") + len(ext)
    pkt6 = pkt[:4] + struct.pack("!HB", plen, 0) + pkt[7:40] + ext + pkt[40:]
    path = tmp_path / "ext.pcap"
    write_pcap(path, [pkt6])
    (msg,) = read(path)
    assert msg.payload == ASAP_SERVER_ANNOUNCE and msg.note is None
    assert (msg.src, msg.dst) == ("fd00::1", "ff05::50")


def test_snaplen_truncated_udp(tmp_path: Path) -> None:
    pkt = udp_packet(ENRP_PRESENCE, ("10.0.0.1", 5000), ("239.0.0.51", ENRP_PORT))
    path = tmp_path / "snap.pcap"
    raw_pcap(path, [(pkt[:40], len(pkt))])
    (msg,) = read(path)
    assert msg.payload == ENRP_PRESENCE[:12]
    assert "truncated" in msg.note


def test_link_types_round_trip(tmp_path: Path) -> None:
    packets = mixed_packets()
    expected = payloads_of(packets, tmp_path)
    for linktype in (LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP,
                     LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL2):
        path = tmp_path / f"lt{linktype}.pcap"
        write_pcap(path, packets, linktype=linktype)
        assert payloads(path) == expected, linktype


def payloads_of(packets: list[bytes], tmp_path: Path) -> list[bytes]:
    path = tmp_path / "ref.pcap"
    write_pcap(path, packets)
    return payloads(path)


def test_null_link_type_big_endian_family(tmp_path: Path) -> None:
    pkt = udp_packet(ASAP_SERVER_ANNOUNCE, ("10.0.0.1", 5000), ("239.0.0.50", ASAP_PORT))
    path = tmp_path / "null-be.pcap"
    raw_pcap(path, [(struct.pack(">I", 2) + pkt, 4 + len(pkt))], linktype=LINKTYPE_NULL)
    assert payloads(path) == [ASAP_SERVER_ANNOUNCE]


def test_ethernet_vlan(tmp_path: Path) -> None:
    pkt = udp_packet(ASAP_SERVER_ANNOUNCE, ("10.0.0.1", 5000), ("239.0.0.50", ASAP_PORT))
    frame = bytes(6) + bytes(6) + b"\x88\xa8\x00\x05\x81\x00\x00\x07\x08\x00" + pkt + bytes(10)
    path = tmp_path / "vlan.pcap"
    raw_pcap(path, [(frame, len(frame))], linktype=LINKTYPE_ETHERNET)
    assert payloads(path) == [ASAP_SERVER_ANNOUNCE]


# ---------------------------------------------------------------------------
# file formats
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcap_variants(tmp_path: Path, nanosecond: bool, big_endian: bool) -> None:
    t0 = 1_700_000_123.123456789
    packets = [(t0, sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, PR)),
               (t0 + 1, udp_packet(ENRP_PRESENCE, PR, ("239.0.0.51", ENRP_PORT)))]
    path = tmp_path / "v.pcap"
    write_pcap(path, packets, nanosecond=nanosecond, big_endian=big_endian)
    msgs = read(path)
    assert [m.payload for m in msgs] == [ASAP_COOKIE, ENRP_PRESENCE]
    assert msgs[0].time == pytest.approx(t0, abs=1e-9 if nanosecond else 1e-6)
    assert msgs[1].time == pytest.approx(t0 + 1, abs=1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_several_interfaces(tmp_path: Path, big_endian: bool) -> None:
    t0 = 1_700_000_000.0
    interfaces = [(LINKTYPE_ETHERNET, 6), (LINKTYPE_LINUX_SLL2, 9), (LINKTYPE_RAW, 0x80 | 10),
                  (LINKTYPE_NULL, 3), (LINKTYPE_LINUX_SLL, 6)]
    packets = [
        (t0 + 0.5, sctp_packet(ASAP_COOKIE, PPID_ASAP, PE, PR, tsn=1), 0),
        (t0 + 0.25, sctp_packet(ASAP_KEEP_ALIVE, PPID_ASAP, PR, PE, tsn=1, vtag=2), 1),
        (t0 + 0.75, udp_packet(ENRP_PRESENCE, PR, ("239.0.0.51", ENRP_PORT)), 2),
        (t0 + 2.0, udp_packet(ASAP_SERVER_ANNOUNCE, PR, ("239.0.0.50", ASAP_PORT)), 3),
        (None, udp_packet(ASAP_SERVER_ANNOUNCE, PR, ("239.0.0.50", ASAP_PORT))),  # SPB, no time
        (t0 + 3.0, tcp_packet(ASAP_HANDLE_RESOLUTION, PE, PR, 1), 4),
    ]
    path = tmp_path / "ng.pcapng"
    write_pcapng(path, packets, interfaces=interfaces, big_endian=big_endian)
    reader = read_capture(path)
    msgs = list(reader)
    assert reader.format == "pcapng" and reader.warnings == []
    assert [m.payload for m in msgs] == [ASAP_COOKIE, ASAP_KEEP_ALIVE, ENRP_PRESENCE,
                                         ASAP_SERVER_ANNOUNCE, ASAP_SERVER_ANNOUNCE,
                                         ASAP_HANDLE_RESOLUTION]
    assert [m.frame for m in msgs] == [1, 2, 3, 4, 5, 6]
    assert [m.time for m in msgs] == pytest.approx([t0 + 0.5, t0 + 0.25, t0 + 0.75, t0 + 2.0, 0.0, t0 + 3.0],
                                                   abs=1e-3)
    assert msgs[1].time == pytest.approx(t0 + 0.25, abs=1e-6)


def test_pcapng_two_sections_and_skipped_blocks(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    write_pcapng(a, [udp_packet(ASAP_SERVER_ANNOUNCE, PR, ("239.0.0.50", ASAP_PORT))],
                 interfaces=[(LINKTYPE_ETHERNET, 6)])
    write_pcapng(b, [udp_packet(ENRP_PRESENCE, PR, ("239.0.0.51", ENRP_PORT))],
                 interfaces=[(LINKTYPE_RAW, 9)], big_endian=True)
    # an Interface Statistics Block (type 5) and a custom block between the sections
    isb = struct.pack("<II", 5, 24) + struct.pack("<IIII", 0, 0, 0, 24)[:12] + struct.pack("<I", 24)
    custom = struct.pack("<II", 0x00000BAD, 16) + b"abcd" + struct.pack("<I", 16)
    path = tmp_path / "both.pcapng"
    path.write_bytes(a.read_bytes() + isb + custom + b.read_bytes())
    reader = read_capture(path)
    assert [m.payload for m in reader] == [ASAP_SERVER_ANNOUNCE, ENRP_PRESENCE]
    assert reader.warnings == []


@pytest.mark.parametrize("path", CAPTURES[:3] + CAPTURES[-1:], ids=lambda p: p.name)
def test_pcapng_converted_by_editcap(tmp_path: Path, path: Path) -> None:
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.skip("editcap not installed")
    out = tmp_path / "conv.pcapng"
    subprocess.run([editcap, "-F", "pcapng", str(path), str(out)], check=True,
                   capture_output=True)
    reader = read_capture(out)
    got = list(reader)
    assert reader.format == "pcapng"
    want = read(path)
    assert [(m.frame, m.src, m.dst, m.payload) for m in got] == [(m.frame, m.src, m.dst, m.payload) for m in want]
    assert [m.time for m in got] == pytest.approx([m.time for m in want], abs=1e-6)


def test_gzip_capture(tmp_path: Path) -> None:
    src = CAPTURES[0]
    path = tmp_path / "c.pcap.gz"
    path.write_bytes(gzip.compress(src.read_bytes()))
    assert payloads(path) == payloads(src)


# ---------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b"",
    b"hello, this is a text file\n" * 5,
    b"\xa1\xb2",                      # too short
    b"\xd4\xc3\xb2\xa1\x02\x00",      # pcap header cut short
    b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00" + bytes(16),  # SHB with a bad BOM
    gzip.compress(b"not a capture"),
    b"\x1f\x8b\x08\x00broken gzip",
])
def test_not_a_capture(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureError):
        read_capture(path)
    assert issubclass(CaptureError, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_capture(tmp_path / "nope.pcap")


def read_or_capture_error(path: Path) -> list[CapturedMessage] | None:
    """Read a possibly damaged file: CaptureError is the only exception allowed."""
    try:
        reader = read_capture(path)
    except CaptureError:
        return None
    return list(reader)


def pcap_boundaries(data: bytes) -> set[int]:
    pos, out = 24, {24}
    while pos + 16 <= len(data):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        out.add(pos)
    return out


def pcapng_boundaries(data: bytes) -> set[int]:  # little-endian files only
    pos, out = 0, set()
    while pos + 8 <= len(data):
        pos += struct.unpack_from("<I", data, pos + 4)[0]
        out.add(pos)
    return out


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_truncated_files(tmp_path: Path, kind: str) -> None:
    if kind == "pcap":
        original, header = DATA / "04-enrp-peering-handle-update.pcap", 24
    else:
        original, header = tmp_path / "src.pcapng", 28
        write_pcapng(original, mixed_packets(), interfaces=[(LINKTYPE_ETHERNET, 9), (LINKTYPE_RAW, 6)])
    data = original.read_bytes()
    boundaries = pcap_boundaries(data) if kind == "pcap" else pcapng_boundaries(data)
    full = read(original)
    cuts = sorted(set(range(0, 80)) | set(range(80, len(data), 97)) | {len(data) - 1})
    started = time.monotonic()
    for cut in cuts:
        path = tmp_path / "cut"
        path.write_bytes(data[:cut])
        try:
            reader = read_capture(path)
        except CaptureError:
            assert cut < header  # only a cut inside the file header is fatal
            continue
        assert cut >= header
        got = list(reader)
        # a cut between records reads cleanly, any other cut is reported
        assert bool(reader.warnings) == (cut not in boundaries), (cut, reader.warnings)
        # nothing invented: every clean message is one of the full file's
        assert all(m in full for m in got if m.note is None)
    assert time.monotonic() - started < 60


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8),
       st.sampled_from([LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL,
                        LINKTYPE_LINUX_SLL2, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LOOP, 147]))
def test_random_packets_never_raise(tmp_path_factory: pytest.TempPathFactory, packets: list[bytes],
                                    linktype: int) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "r.pcap"
    raw_pcap(path, [(p, len(p)) for p in packets], linktype=linktype)
    list(read_capture(path))


def _mutations() -> st.SearchStrategy[list[tuple[int, int]]]:
    return st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=20)


@settings(max_examples=100, deadline=None)
@given(_mutations(), st.sampled_from(CAPTURES))
def test_mutated_reference_captures_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                                edits: list[tuple[int, int]], src: Path) -> None:
    data = bytearray(src.read_bytes())
    for pos, value in edits:
        data[pos % len(data)] = value
    path = tmp_path_factory.mktemp("mut") / "m.pcap"
    path.write_bytes(bytes(data))
    read_or_capture_error(path)


@settings(max_examples=60, deadline=None)
@given(_mutations())
def test_mutated_pcapng_never_raises(tmp_path_factory: pytest.TempPathFactory,
                                     edits: list[tuple[int, int]]) -> None:
    tmp = tmp_path_factory.mktemp("ng")
    src = tmp / "src.pcapng"
    write_pcapng(src, mixed_packets()[:6], interfaces=[(LINKTYPE_ETHERNET, 6), (LINKTYPE_RAW, 9)])
    data = bytearray(src.read_bytes())
    for pos, value in edits:
        data[pos % len(data)] = value
    path = tmp / "m.pcapng"
    path.write_bytes(bytes(data))
    read_or_capture_error(path)


def test_describe() -> None:
    m = CapturedMessage(3, 1.0, "10.0.0.1", 1, "fd00::1", 3863, "sctp", "asap", b"\x01\x00\x00\x04")
    assert m.describe() == "frame 3 10.0.0.1:1 -> [fd00::1]:3863 sctp asap 4 bytes"
    n = CapturedMessage(3, 1.0, "a", 1, "b", 2, "tcp", "enrp", b"", "oops")
    assert n.describe().endswith("(oops)")
    with pytest.raises(AttributeError):
        m.frame = 4  # type: ignore[misc]
