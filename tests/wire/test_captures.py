"""The RSPLIB reference captures (tests/data/*.pcap, copied from
shared/captures) as golden vectors: every ASAP/ENRP payload decodes and
re-encodes to the identical bytes, in both implementations, and both decode it
to the same objects."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rserpool import cli
from rserpool.capture import read_capture, sctp_packet, write_pcap

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURES = sorted(DATA.glob("*.pcap"))

pytestmark = pytest.mark.accel("tlv", "rserpool.wire._codec_py")


def payloads():
    return [(p.name, m) for p in CAPTURES for m in read_capture(p)]


def test_captures_are_present():
    assert len(CAPTURES) == 6
    assert len(payloads()) > 150


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_every_payload_round_trips(accel_impl, path):
    w = accel_impl
    kinds = Counter()
    for rec in read_capture(path):
        msg = w.decode_message(rec.payload, rec.protocol)
        kinds[type(msg).__name__] += 1
        assert w.encode_message(msg) == rec.payload, f"frame {rec.frame}: {msg!r}"
    assert kinds, "no ASAP/ENRP message found"


def test_capture_contents_match_the_readme(accel_impl):
    """Each capture holds what shared/captures/README.md says it does."""
    w = accel_impl
    seen = {p.name: Counter(type(w.decode_message(m.payload, m.protocol)).__name__
                            for m in read_capture(p)) for p in CAPTURES}
    assert {"Registration", "RegistrationResponse", "EndpointKeepAlive",
            "EndpointKeepAliveAck"} <= set(seen["01-asap-registration-keepalive.pcap"])
    assert seen["02-asap-handle-resolution.pcap"]["HandleResolution"] >= 4
    assert {"Deregistration", "DeregistrationResponse"} <= set(
        seen["03-asap-deregistration.pcap"])
    assert {"Presence", "ListRequest", "ListResponse", "HandleTableRequest",
            "HandleTableResponse", "HandleUpdate"} <= set(
        seen["04-enrp-peering-handle-update.pcap"])
    assert {"Cookie", "CookieEcho"} <= set(seen["06-asap-pingpong-leastused-failover.pcap"])
    assert {"ServerAnnounce", "Presence"} <= set(seen["07-multicast-announce-autoconfig.pcap"])


def test_handle_update_actions_and_least_used_loads(accel_impl):
    w = accel_impl
    actions = {w.decode_message(m.payload, "enrp").action
               for m in read_capture(DATA / "04-enrp-peering-handle-update.pcap")
               if m.payload[0] == 4 and m.protocol == "enrp"}
    assert actions == {0, 1}
    loads = {pe.policy.load
             for m in read_capture(DATA / "06-asap-pingpong-leastused-failover.pcap")
             if m.protocol == "asap" and m.payload[0] == 1
             for pe in [w.decode_message(m.payload, "asap").pool_element]}
    assert loads and all(isinstance(x, int) for x in loads)


def test_dump_command_prints_every_message(capsys):
    assert cli.main(["dump", *map(str, CAPTURES)]) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if line.startswith("==> ")]
    assert headers == [f"==> {p} <==" for p in CAPTURES]
    out = [line for line in out if not line.startswith("==> ")]
    assert len(out) == len(payloads())
    assert any("Registration handle=EchoPool" in line for line in out)
    assert any("SCTP ENRP HandleUpdate" in line and "ADD_PE" in line for line in out)
    assert any("UDP ASAP ServerAnnounce" in line for line in out)


def test_dump_json_has_every_field(capsys):
    assert cli.main(["dump", "--json", str(DATA / "01-asap-registration-keepalive.pcap")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    reg = next(r for r in records if r["message"]["kind"] == "Registration")
    pe = reg["message"]["pool_element"]
    assert reg["protocol"] == "asap" and reg["transport"] == "sctp"
    assert reg["message"]["pool_handle"]["text"] == "EchoPool"
    assert pe["policy"]["kind"] == "PoolPolicy" and pe["user_transport"]["addresses"]


def test_dump_reports_undecodable_payloads_and_goes_on(tmp_path, capsys):
    good = (DATA / "03-asap-deregistration.pcap").read_bytes()
    path = tmp_path / "mixed.pcap"
    write_pcap(path, [sctp_packet(b"\x05\x00\x00\x40garbage", 11),
                      sctp_packet(bytes.fromhex("05000010 0009000c 4563686f506f6f6c"), 11,
                                  tsn=2)])
    assert cli.main(["dump", str(path), str(DATA / "03-asap-deregistration.pcap")]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if not line.startswith("==> ")]
    assert "UNDECODABLE TruncatedError" in lines[0]
    assert "HandleResolution handle=EchoPool" in lines[1]
    assert len(lines) > 2 and good
    assert "1 payload(s) or file(s) could not be decoded" in captured.err


def test_dump_rejects_a_file_that_is_not_a_capture(tmp_path, capsys):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello\n")
    assert cli.main(["dump", str(bogus)]) == 1
    assert "notes.txt" in capsys.readouterr().err
