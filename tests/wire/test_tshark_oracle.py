"""tshark as an independent oracle of the wire format.

Every message type and every parameter type the encoder can produce is
written into a capture (ASAP on SCTP PPID 11, ENRP on PPID 12, plus ASAP on
TCP and UDP port 3863 and ENRP Presence on UDP 9901), dissected by tshark,
and checked: no malformed or unknown item, and the same message type and key
field values (pool handle, PE ID, policy type, cause code, server IDs) as the
objects we encoded.  Runs against both codec implementations.
"""

from __future__ import annotations

import re

import pytest

from rserpool import capture
from rserpool.constants import ErrorCause, PolicyType, UpdateAction

pytestmark = [pytest.mark.tshark, pytest.mark.accel("tlv", "rserpool.wire._codec_py")]


@pytest.fixture(autouse=True)
def _need_tshark(tshark_required):
    if not capture.tshark_available():
        if tshark_required:
            pytest.fail("tshark is required (CI) but not installed")
        pytest.skip("tshark not installed")


def cause_info(w, code):
    """Cause-specific information as RFC 5354 (and Wireshark) expect it."""
    if code == ErrorCause.UNRECOGNIZED_PARAMETER:  # the unrecognised TLV
        return w.encode_parameter(w.DccpTransport(33, ["10.0.0.1"], 7))
    if code == ErrorCause.UNRECOGNIZED_MESSAGE:  # the message
        return w.encode_message(w.HandleResolution(b"EchoPool"))
    if code == ErrorCause.INVALID_VALUES:  # the offending parameter
        return w.encode_parameter(w.TcpTransport(80, ["10.0.0.1"]))
    if code == ErrorCause.POOLING_POLICY_INCONSISTENT:  # the policy
        return w.encode_parameter(w.PoolPolicy(PolicyType.LEAST_USED, [5]))
    if code == ErrorCause.INCONSISTENT_TRANSPORT_TYPE:  # the transport
        return w.encode_parameter(w.UdpTransport(53, ["10.0.0.1"]))
    return b""


def catalogue(w):
    """(protocol, message) covering every message and parameter type."""
    v4 = ["10.0.0.1", "192.168.7.9"]
    v6 = ["2001:db8::1"]
    transports = [
        w.SctpTransport(5000, v4 + v6, 1),
        w.TcpTransport(5001, ["10.0.0.2"], 0),
        w.UdpTransport(5002, ["10.0.0.3"]),
        w.UdpLiteTransport(5003, ["2001:db8::3"]),
        w.DccpTransport(5004, ["10.0.0.4"], 0x01020304),
    ]
    policies = [w.PoolPolicy(t, range(1, 1 + n)) for t, n in (
        (PolicyType.ROUND_ROBIN, 0), (PolicyType.WEIGHTED_ROUND_ROBIN, 1),
        (PolicyType.RANDOM, 0), (PolicyType.WEIGHTED_RANDOM, 1), (PolicyType.PRIORITY, 1),
        (PolicyType.LEAST_USED, 1), (PolicyType.LEAST_USED_DEGRADATION, 2),
        (PolicyType.PRIORITY_LEAST_USED, 2), (PolicyType.RANDOMIZED_LEAST_USED, 1),
        (PolicyType.RANDOMIZED_PRIORITY_LEAST_USED, 2),
        (PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION, 2),
        (PolicyType.PRIORITY_LEAST_USED_DEGRADATION, 2),
        (PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION, 2),
        (PolicyType.WEIGHTED_RANDOM_DPF, 3), (PolicyType.LEAST_USED_DPF, 3),
        (PolicyType.LEAST_USED_DEGRADATION_DPF, 4))]
    asap_t = w.SctpTransport(3863, ["10.0.0.9"], 0)
    pes = [w.PoolElement(0x1000 + i, 0x11111111, 30000, transports[i % len(transports)],
                         pol, asap_t if i % 2 else None) for i, pol in enumerate(policies)]
    si = w.ServerInformation(0x22222222, w.SctpTransport(9901, ["10.0.0.7", "::1"]))
    causes = [w.Cause(c, cause_info(w, c)) for c in ErrorCause if c <= 0x000A]
    out = [
        ("asap", w.Registration(b"EchoPool", pes[0])),
        ("asap", w.Deregistration(b"EchoPool", 0x1000)),
        ("asap", w.RegistrationResponse(b"EchoPool", 0x1000)),
        ("asap", w.RegistrationResponse(b"EchoPool", 0x1001,
                                        [w.Cause(ErrorCause.POOLING_POLICY_INCONSISTENT,
                                                 cause_info(w, 5))])),
        ("asap", w.DeregistrationResponse(b"EchoPool", 0x1002)),
        ("asap", w.HandleResolution(b"EchoPool")),
        ("asap", w.HandleResolution(b"odd", items=3)),
        ("asap", w.HandleResolutionResponse(b"EchoPool", policies[5], pes[5:8])),
        ("asap", w.HandleResolutionResponse(b"Nope", error=[w.Cause(
            ErrorCause.UNKNOWN_POOL_HANDLE)])),
        ("asap", w.EndpointKeepAlive(0x33333333, b"EchoPool", 0x1003, home=True)),
        ("asap", w.EndpointKeepAliveAck(b"EchoPool", 0x1003)),
        ("asap", w.EndpointUnreachable(b"EchoPool", 0x1004)),
        ("asap", w.ServerAnnounce(0x44444444, transports)),
        ("asap", w.ServerAnnounce(0x44444445)),
        ("asap", w.Cookie(b"session-state-17")),
        ("asap", w.CookieEcho(b"x")),
        ("asap", w.BusinessCard(b"EchoPool", policies[0], pes[:2])),
        ("asap", w.AsapErrorMessage(causes)),
        ("enrp", w.Presence(0x11111111, 0x22222222, 0x29A5, si, reply_required=True)),
        ("enrp", w.HandleTableRequest(0x11111111, 0x22222222, own_children_only=True)),
        ("enrp", w.HandleTableResponse(0x22222222, 0x11111111,
                                       [(b"EchoPool", tuple(p.replace(asap_transport=asap_t)
                                                            for p in pes[:3])),
                                        (b"Other", (pes[3].replace(asap_transport=asap_t),))],
                                       more=True)),
        ("enrp", w.HandleUpdate(0x11111111, 0x22222222, UpdateAction.ADD_PE, b"EchoPool",
                                pes[1], takeover_suggested=True)),
        ("enrp", w.HandleUpdate(0x11111111, 0x22222222, UpdateAction.DEL_PE, b"EchoPool",
                                pes[3])),
        ("enrp", w.ListRequest(0x11111111, 0x22222222)),
        ("enrp", w.ListResponse(0x22222222, 0x11111111, [si, si.replace(server_id=5)])),
        ("enrp", w.InitTakeover(0x11111111, 0x22222222, 0x99999999)),
        ("enrp", w.InitTakeoverAck(0x22222222, 0x11111111, 0x99999999)),
        ("enrp", w.TakeoverServer(0x11111111, 0x22222222, 0x99999999)),
        ("enrp", w.EnrpErrorMessage(0x11111111, 0x22222222, causes[2:6])),
    ]
    # every remaining policy inside a registration, so each one is dissected
    out += [("asap", w.Registration(b"pol-%d" % i, pe)) for i, pe in enumerate(pes)]
    return out


def expected_fields(proto, msg):
    """The fields tshark must show, as sorted lists of strings."""
    exp = {f"{proto}.message_type": [str(int(msg.TYPE))]}
    handles, pe_ids, policy_types, causes = [], [], [], []
    if hasattr(msg, "pool_handle"):
        handles.append(msg.pool_handle.hex())
    for handle, group in getattr(msg, "entries", ()):
        handles.append(handle.hex())
        pe_ids += [pe.identifier for pe in group]
        policy_types += [pe.policy.policy_type for pe in group]
    pes = list(getattr(msg, "pool_elements", ()))
    if getattr(msg, "pool_element", None) is not None:
        pes.append(msg.pool_element)
    pe_ids += [pe.identifier for pe in pes]
    policy_types += [pe.policy.policy_type for pe in pes]
    if getattr(msg, "policy", None) is not None:
        policy_types.append(msg.policy.policy_type)
    for c in (getattr(msg, "error", None) or ()) + (getattr(msg, "causes", None) or ()):
        causes.append(c.code)
    if ErrorCause.UNRECOGNIZED_MESSAGE in causes:  # tshark dissects the quoted message
        exp[f"{proto}.message_type"] = sorted(exp[f"{proto}.message_type"] + ["5"])
        handles.append(b"EchoPool".hex())
    if handles:
        exp[f"{proto}.pool_handle_pool_handle"] = sorted(handles)
    if pe_ids:
        exp[f"{proto}.pool_element_pe_identifier"] = sorted(str(i) for i in pe_ids)
    if policy_types:
        exp[f"{proto}.pool_member_selection_policy_type"] = sorted(
            str(int(p)) for p in policy_types)
    if causes:
        exp[f"{proto}.cause_code"] = sorted(str(int(c)) for c in causes)
    if getattr(msg, "identifier", None) is not None:
        exp[f"{proto}.pe_identifier"] = [str(msg.identifier)]
    if hasattr(msg, "sender_id"):
        exp["enrp.sender_servers_id"] = [str(msg.sender_id)]
        exp["enrp.receiver_servers_id"] = [str(msg.receiver_id)]
    if hasattr(msg, "target_id"):
        exp["enrp.target_servers_id"] = [str(msg.target_id)]
    if hasattr(msg, "server_id"):
        exp["asap.server_identifier"] = [str(msg.server_id)]
    if hasattr(msg, "checksum"):
        exp["enrp.pe_checksum"] = [str(msg.checksum)]
    if getattr(msg, "items", None) is not None:
        exp["asap.hropt_items"] = [str(msg.items)]
    if getattr(msg, "cookie", None) is not None:
        exp["asap.cookie"] = [msg.cookie.hex()]
    return exp


BAD_MARKERS = re.compile(r"Malformed|Unknown|\[Expert Info \(Error|Dissector bug|"
                         r"not decoded|Invalid", re.IGNORECASE)
# Lines that match BAD_MARKERS without being a problem of ours: cause names
# ("Unknown pool handle", "Invalid values"), TCP's window scaling of a
# capture without the handshake, and the four RSPLIB extension policies that
# tshark 4.0 has no name for (it still dissects their values).
BENIGN = re.compile(r"(Cause Code: )?(Unknown pool handle|Invalid values)( \(0x000[39]\))?$|"
                    r"\[Window size scaling factor: -1 \(unknown\)\]|"
                    r"Policy Type: Unknown \(0xb000(100[124]|2003)\)")


def _check(tmp_path, w, packets_and_msgs):
    path = tmp_path / "oracle.pcap"
    capture.write_pcap(path, [p for p, _, _ in packets_and_msgs])
    text = capture.tshark_decode(path)
    bad = [line for line in text.splitlines()
           if BAD_MARKERS.search(line) and not BENIGN.search(line.strip())]
    assert not bad, "tshark reports problems:\n" + "\n".join(bad[:20])
    wanted = sorted({name for _, proto, msg in packets_and_msgs
                     for name in expected_fields(proto, msg)})
    frames = capture.tshark_fields(path, wanted)
    assert len(frames) == len(packets_and_msgs)
    for frame, (_, proto, msg) in zip(frames, packets_and_msgs):
        exp = expected_fields(proto, msg)
        got = {}
        for name in exp:
            values = frame.get(name, [])
            if name.endswith(("pool_handle_pool_handle", "cookie")):
                values = [capture.tshark_bytes(v).hex() for v in values]
            else:  # tshark shows some integers in hex ("0x00000007")
                values = [str(int(v, 0)) for v in values]
            got[name] = sorted(values)
        assert got == exp, f"frame {frame['frame.number']}: {type(msg).__name__}"


def test_every_message_over_sctp(tmp_path, accel_impl):
    w = accel_impl
    rows = []
    for i, (proto, msg) in enumerate(catalogue(w)):
        data = w.encode_message(msg)
        ppid = 11 if proto == "asap" else 12
        port = 3863 if proto == "asap" else 9901
        rows.append((capture.sctp_packet(data, ppid, src=("10.1.0.1", 40000 + i),
                                         dst=("10.1.0.2", port)), proto, msg))
    _check(tmp_path, w, rows)


def test_asap_over_tcp_and_udp(tmp_path, accel_impl):
    w = accel_impl
    rows = []
    for i, (proto, msg) in enumerate(m for m in catalogue(w) if m[0] == "asap"):
        data = w.encode_message(msg)
        if i % 2:
            pkt = capture.tcp_packet(data, ("10.1.0.1", 41000 + i), ("10.1.0.2", 3863))
        else:
            pkt = capture.udp_packet(data, ("10.1.0.1", 41000 + i), ("239.0.0.50", 3863))
        rows.append((pkt, proto, msg))
    _check(tmp_path, w, rows)


def test_enrp_presence_over_udp_multicast(tmp_path, accel_impl):
    w = accel_impl
    si = w.ServerInformation(7, w.SctpTransport(9901, ["10.1.0.1"]))
    msg = w.Presence(7, 0, 0xFFFF, si)
    pkt = capture.udp_packet(w.encode_message(msg), ("10.1.0.1", 9901), ("239.0.0.51", 9901))
    _check(tmp_path, w, [(pkt, "enrp", msg)])


def test_oracle_catches_a_broken_message(tmp_path, accel_impl):
    """The checks above must be able to fail: a corrupted length is reported."""
    w = accel_impl
    data = bytearray(w.encode_message(w.Registration(b"EchoPool", catalogue(w)[0][1]
                                                     .pool_element)))
    data[18] = 0xFF  # pool element length far beyond the message
    path = tmp_path / "broken.pcap"
    capture.write_pcap(path, [capture.sctp_packet(bytes(data), 11)])
    assert BAD_MARKERS.search(capture.tshark_decode(path))
