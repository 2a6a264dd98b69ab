"""Golden vectors and bad input, for both codec implementations.

The vectors are the digest's (shared/spec/RSERPOOL.md section 1.6), derived
from RSPLIB's encoder rules; every bad-input case names the exception class
and the offset both implementations must report.
"""

from __future__ import annotations

import struct

import pytest

from rserpool import errors
from rserpool.constants import ErrorCause, PolicyType, TransportUse

pytestmark = pytest.mark.accel("tlv", "rserpool.wire._codec_py")


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


HR = h("05000010 0009000c 4563686f506f6f6c")
HR3 = h("05000018 0009000c 4563686f506f6f6c 803f0008 00000003")
REG = h("""01000038 0009000c 4563686f506f6f6c
           000a0028 12345678 00000000 00015f90
           00040010 13880001 00010008 0a000001
           00080008 00000001""")
REG_RESP = h("03000018 0009000c 4563686f506f6f6c 000e0008 12345678")
KEEP_ALIVE_H = h("07010014 aabbccdd 0009000c 4563686f506f6f6c")


def test_digest_vectors_decode(accel_impl):
    w = accel_impl
    assert w.decode_message(HR, "asap") == w.HandleResolution(b"EchoPool")
    assert w.decode_message(HR3, "asap") == w.HandleResolution(b"EchoPool", 3)
    reg = w.decode_message(REG, "asap")
    pe = reg.pool_element
    assert reg.pool_handle == b"EchoPool"
    assert (pe.identifier, pe.home_registrar, pe.registration_life) == (0x12345678, 0, 90000)
    assert pe.user_transport == w.SctpTransport(5000, ["10.0.0.1"],
                                                TransportUse.DATA_PLUS_CONTROL)
    assert pe.policy.policy_type is PolicyType.ROUND_ROBIN
    assert pe.user_transport.transport_use is TransportUse.DATA_PLUS_CONTROL
    assert w.TcpTransport(1, ["1.2.3.4"], 0).transport_use is TransportUse.DATA_ONLY
    assert pe.asap_transport is None
    resp = w.decode_message(REG_RESP, "asap")
    assert (resp.identifier, resp.rejected, resp.error) == (0x12345678, False, None)
    ka = w.decode_message(KEEP_ALIVE_H, "asap")
    assert (ka.server_id, ka.home, ka.identifier) == (0xAABBCCDD, True, None)


def test_digest_vectors_encode(accel_impl):
    w = accel_impl
    assert w.encode_message(w.HandleResolution(b"EchoPool")) == HR
    assert w.encode_message(w.HandleResolution(b"EchoPool", items=3)) == HR3
    pe = w.PoolElement(0x12345678, 0, 90000,
                       w.SctpTransport(5000, ["10.0.0.1"], TransportUse.DATA_PLUS_CONTROL),
                       w.PoolPolicy(PolicyType.ROUND_ROBIN))
    assert w.encode_message(w.Registration(b"EchoPool", pe)) == REG
    assert w.encode_message(w.RegistrationResponse(b"EchoPool", 0x12345678)) == REG_RESP
    assert w.encode_message(w.EndpointKeepAlive(0xAABBCCDD, b"EchoPool", home=True)) \
        == KEEP_ALIVE_H


def test_parameter_vectors(accel_impl):
    w = accel_impl
    # Pool handle "abc": padded, padding not counted.
    msg = w.encode_message(w.Deregistration(b"abc", 1))
    assert msg[4:12] == h("00090007 61626300")
    # PE checksum 0x29a5: length 6 + 2 padding bytes.
    pres = w.encode_message(w.Presence(1, 2, 0x29A5))
    assert pres[12:] == h("000f0006 29a50000")
    # Operation error with cause 9 and no info.
    err = w.encode_message(w.AsapErrorMessage([w.Cause(ErrorCause.UNKNOWN_POOL_HANDLE)]))
    assert err == h("0e00000c 000c0008 00090004")
    assert w.decode_parameter(h("000c0008 00090004")) == (w.Cause(9),)


def test_registration_rejected_sets_r_flag(accel_impl):
    w = accel_impl
    m = w.RegistrationResponse(b"P", 7, [w.Cause(ErrorCause.POOLING_POLICY_INCONSISTENT)])
    data = w.encode_message(m)
    assert data[1] == 0x01
    back = w.decode_message(data, "asap")
    assert back.rejected and back.error[0].code is ErrorCause.POOLING_POLICY_INCONSISTENT


def test_unknown_cause_code_kept_as_int(accel_impl):
    w = accel_impl
    data = w.encode_message(w.AsapErrorMessage([w.Cause(0x7777, b"\x01\x02\x03")]))
    (cause,) = w.decode_message(data, "asap").causes
    assert type(cause.code) is int and cause.code == 0x7777 and cause.info == b"\x01\x02\x03"
    assert w.decode_message(data, "asap") == w.AsapErrorMessage([w.Cause(0x7777, b"\1\2\3")])


def test_both_padding_conventions_accepted(accel_impl):
    w = accel_impl
    # "abc": RSPLIB counts the final padding in the message length (12) ...
    rsplib = w.encode_message(w.HandleResolution(b"abc"))
    assert rsplib == h("0500000c 00090007 61626300")
    # ... SCTP-chunk style leaves it out (11), with or without the pad byte.
    sctp_style = h("0500000b 00090007 616263 00")
    assert w.decode_message(sctp_style, "asap") == w.HandleResolution(b"abc")
    assert w.decode_message(sctp_style[:-1], "asap") == w.HandleResolution(b"abc")


def test_unknown_parameters_by_action_bits(accel_impl):
    w = accel_impl
    def with_param(ptype: int) -> bytes:
        body = h("00090007 61626300") + struct.pack("!HH", ptype, 6) + b"xy\0\0"
        return struct.pack("!BBH", 5, 0, 4 + len(body)) + body

    for ptype, report in ((0x0020, False), (0x4020, True)):
        with pytest.raises(errors.UnknownParameterError) as ei:
            w.decode_message(with_param(ptype), "asap")
        assert (ei.value.offset, ei.value.param_type, ei.value.report) == (12, ptype, report)
        assert ei.value.tlv == struct.pack("!HH", ptype, 6) + b"xy"
    for ptype in (0x8020, 0xC020):
        m = w.decode_message(with_param(ptype), "asap")
        assert m.pool_handle == b"abc" and m.items is None
        assert m.unknown == (w.UnknownParameter(ptype, b"xy"),)
        assert m.unknown[0].report == bool(ptype & 0x4000)
        assert w.encode_message(m) == with_param(ptype)


def pe_bytes(inner: bytes, ident: int = 1) -> bytes:
    body = struct.pack("!IIi", ident, 0, 1000) + inner
    return struct.pack("!HH", 0x000A, 4 + len(body)) + body


SCTP_T = h("00040010 13880000 00010008 0a000001")
RR = h("00080008 00000001")


def reg(pe: bytes) -> bytes:
    body = h("00090007 61626300") + pe
    return struct.pack("!BBH", 1, 0, 4 + len(body)) + body


BAD = [
    ("empty", b"", "asap", errors.TruncatedError, 0),
    ("half header", h("0500"), "asap", errors.TruncatedError, 2),
    ("length below header", h("05000003"), "asap", errors.LengthError, 2),
    ("length zero", h("05000000 00000000"), "asap", errors.LengthError, 2),
    ("cut in half", HR[:10], "asap", errors.TruncatedError, 10),
    ("announces 64 KiB", h("0500ffff") + HR[4:], "asap", errors.TruncatedError, 16),
    ("trailing bytes", HR + b"\0\0\0\0", "asap", errors.TrailingBytesError, 16),
    ("non-zero pad", h("0500000b 00090007 616263 01"), "asap", errors.TrailingBytesError, 11),
    ("oversize", h("0b00ffff") + bytes(70000), "asap", errors.OversizeError, 65535),
    ("unknown asap type", h("0f000004"), "asap", errors.UnknownMessageError, 0),
    ("unknown enrp type", h("0b00000c 00000001 00000002"), "enrp",
     errors.UnknownMessageError, 0),
    ("type zero", h("00000004"), "asap", errors.UnknownMessageError, 0),
    ("param length zero", h("05000008 00090000"), "asap", errors.LengthError, 6),
    ("param length 3", h("05000008 00090003"), "asap", errors.LengthError, 6),
    ("param overruns", h("0500000c 00090010 41414141"), "asap", errors.LengthError, 6),
    ("leftover bytes", h("0500000e 00090007 61626300 0000"), "asap", errors.LengthError, 12),
    ("missing pool handle", h("05000004"), "asap", errors.MalformedError, 4),
    ("wrong first param", h("0500000c 000e0008 00000001"), "asap", errors.MalformedError, 4),
    ("extra param", h("05000018") + HR[4:] + h("000e0008 00000001"), "asap",
     errors.MalformedError, 16),
    ("keep-alive too short", h("07000004"), "asap", errors.LengthError, 2),
    ("enrp below prefix", h("01000008 00000001"), "enrp", errors.LengthError, 2),
    ("takeover below fixed part", h("0700000c 00000001 00000002"), "enrp",
     errors.LengthError, 2),
    ("pe id wrong length", h("08000018 00090007 61626300 000e000c 00000001 00000002"),
     "asap", errors.LengthError, 14),
    ("ipv4 wrong length", reg(pe_bytes(h("00040014 13880000 0001000c 0a000001 00000000") + RR)),
     "asap", errors.LengthError, 38),
    ("pe nested in transport", reg(pe_bytes(
        h("00040018 13880000") + pe_bytes(b"")[:4] + h("00000001 00000000 000003e8") + RR)),
     "asap", errors.MalformedError, 36),
    ("pe without transport", reg(pe_bytes(RR)), "asap", errors.MalformedError, 28),
    ("pe without policy", reg(pe_bytes(SCTP_T)), "asap", errors.MalformedError, 44),
    ("pe inside pe", reg(pe_bytes(pe_bytes(SCTP_T + RR))), "asap", errors.MalformedError, 28),
    ("policy too short for LUD", reg(pe_bytes(SCTP_T + h("000c000c 40000002 00000000"))),
     "asap", errors.MalformedError, 44),
    ("policy odd length", reg(pe_bytes(SCTP_T + h("0008000a 00000001 0000 0000"))),
     "asap", errors.LengthError, 46),
    ("sctp transport without address", reg(pe_bytes(h("00040008 13880000") + RR)),
     "asap", errors.MalformedError, 28),
    ("tcp transport with two addresses",
     reg(pe_bytes(h("00050018 13880000 00010008 0a000001 00010008 0a000002") + RR)),
     "asap", errors.MalformedError, 28),
    ("unknown param stop", h("0500000c 00200008 00000000"), "asap",
     errors.UnknownParameterError, 4),
    ("unknown nested stop", reg(pe_bytes(h("00040018 13880000 00010008 0a000001 00300008 "
                                           "00000000") + RR)),
     "asap", errors.UnknownParameterError, 44),
    ("error cause overruns", h("0e00000c 000c0008 0009000c"), "asap", errors.LengthError, 10),
    ("error cause length 2", h("0e00000c 000c0008 00090002"), "asap", errors.LengthError, 10),
    ("handle table entry without pe", h("0300001c 00000001 00000002 00090007 61626300")
     + h("00090007 61626300"), "enrp", errors.MalformedError, 20),
    ("handle table pool handle alone", h("03000014 00000001 00000002 00090007 61626300"),
     "enrp", errors.MalformedError, 20),
    ("checksum wrong length", h("01000014 00000001 00000002 000f0008 00000000"), "enrp",
     errors.LengthError, 14),
    ("resolution response without policy", h("06000014 00090007 61626300 000e0008 00000001"),
     "asap", errors.MalformedError, 12),
]


@pytest.mark.parametrize("name,data,protocol,exc,offset", BAD, ids=[b[0] for b in BAD])
def test_bad_input(accel_impl, name, data, protocol, exc, offset):
    with pytest.raises(exc) as ei:
        accel_impl.decode_message(data, protocol)
    assert type(ei.value) is exc
    assert ei.value.offset == offset, str(ei.value)
    assert isinstance(ei.value, errors.WireError) and isinstance(ei.value, ValueError)
    assert f"offset {offset}" in str(ei.value)


def test_wrong_protocol_name(accel_impl):
    with pytest.raises(ValueError):
        accel_impl.decode_message(HR, "sctp")


def test_encode_errors(accel_impl):
    w = accel_impl
    with pytest.raises(errors.EncodeError):
        w.encode_message(w.Deregistration(b"x", 1 << 32))
    with pytest.raises(errors.EncodeError):
        w.encode_message(w.Cookie(bytes(70000)))
    with pytest.raises(errors.EncodeError):
        w.encode_parameter(w.SctpTransport(70000, ["10.0.0.1"]))
    for bad in ("10.0.0", "fe80::1%eth0", "hello", "1.2.3.4/8"):
        with pytest.raises(errors.EncodeError):
            w.encode_parameter(w.SctpTransport(1, [bad]))
    with pytest.raises(errors.EncodeError):
        w.encode_parameter(w.SctpTransport(1, []))
    with pytest.raises(errors.EncodeError):
        w.encode_parameter(w.TcpTransport(1, ["1.2.3.4", "1.2.3.5"]))
    with pytest.raises(errors.EncodeError):
        w.encode_parameter(w.PoolPolicy(PolicyType.LEAST_USED_DEGRADATION, [1]))
    with pytest.raises(errors.EncodeError):
        w.encode_message(w.HandleResolutionResponse(b"x"))


def test_immutable_and_value_semantics(accel_impl):
    w = accel_impl
    a = w.HandleResolution(b"p", 3)
    with pytest.raises(AttributeError):
        a.items = 4
    assert a == w.HandleResolution(b"p", 3) and hash(a) == hash(w.HandleResolution(b"p", 3))
    assert a != w.HandleResolution(b"p", 4)
    assert a.replace(items=5) == w.HandleResolution(b"p", 5)
    assert "HandleResolution(pool_handle=b'p', items=3" in repr(a)
    with pytest.raises(TypeError):
        w.HandleResolution("not bytes")


def test_policy_named_values(accel_impl):
    w = accel_impl
    p = w.PoolPolicy(PolicyType.LEAST_USED_DEGRADATION_DPF, [10, 20, 30, 40])
    assert (p.load, p.load_degradation, p.load_dpf, p.distance) == (10, 20, 30, 40)
    assert p.weight is None and p.priority is None
    assert w.PoolPolicy(PolicyType.PRIORITY, [7]).priority == 7
    assert w.PoolPolicy(PolicyType.WEIGHTED_RANDOM_DPF, [1, 2, 3]).weight_dpf == 2
    unknown = w.decode_parameter(h("0008000c b0002004 00000005"))
    assert unknown.policy_type == 0xB0002004 and unknown.values == (5,)


def test_ipv6_formatting(accel_impl):
    w = accel_impl
    cases = {
        "::": "::", "::1": "::1", "2001:db8::1": "2001:db8::1",
        "2001:db8:0:1:0:0:0:1": "2001:db8:0:1::1", "1:0:0:2:0:0:0:3": "1:0:0:2::3",
        "1:0:2:3:4:5:6:7": "1:0:2:3:4:5:6:7", "::ffff:1.2.3.4": "::ffff:102:304",
        "FE80::ABCD": "fe80::abcd", "1:2:3:4:5:6:7::": "1:2:3:4:5:6:7:0",
    }
    for text, canonical in cases.items():
        data = w.encode_parameter(w.SctpTransport(1, [text]))
        assert w.decode_parameter(data).addresses == (canonical,), text


def test_hot_path(accel_impl):
    w = accel_impl
    assert w.parse_handle_resolution(HR) == (b"EchoPool", None)
    assert w.parse_handle_resolution(HR3) == (b"EchoPool", 3)
    with pytest.raises(errors.MalformedError):
        w.parse_handle_resolution(REG)
    with pytest.raises(errors.TruncatedError):
        w.parse_handle_resolution(HR[:9])
    pes = [w.PoolElement(i, 0x1234, 30000, w.TcpTransport(7, ["127.0.0.1"]),
                         w.PoolPolicy(PolicyType.LEAST_USED, [i])) for i in (1, 2, 3)]
    enc = [w.encode_parameter(pe) for pe in pes]
    pol = w.encode_parameter(pes[0].policy)
    data = w.build_handle_resolution_response(b"EchoPool", pol, enc)
    assert data == w.encode_message(w.HandleResolutionResponse(b"EchoPool", pes[0].policy, pes))
    back = w.decode_message(data, "asap")
    assert back.pool_elements == tuple(pes)
    with pytest.raises(errors.EncodeError):
        w.build_handle_resolution_response(b"x" * 65532, pol, enc)
    with pytest.raises(errors.EncodeError):
        w.build_handle_resolution_response(b"EchoPool", pol, ["not bytes"])
    with pytest.raises(errors.EncodeError):
        w.encode_parameter(w.PoolPolicy(1, [0] * 16382))


def test_pool_element_asap_transport_sctp_or_tcp(accel_impl):
    """The ASAP transport of a PE (ENRP form) is SCTP (RFC 5354) or, for a PE
    that registered over TCP, TCP; other transports are refused both ways."""
    w = accel_impl
    policy = w.PoolPolicy(1, ())
    user = w.TcpTransport(7000, ("10.0.0.1",), 0)
    for asap in (w.SctpTransport(3863, ("10.0.0.1",), 0), w.TcpTransport(40000, ("10.0.0.1",), 0)):
        pe = w.PoolElement(5, 7, 90000, user, policy, asap)
        data = w.encode_parameter(pe)
        assert w.decode_parameter(data) == pe
        assert type(w.decode_parameter(data).asap_transport) is type(asap)
    with pytest.raises(errors.EncodeError):
        w.encode_parameter(w.PoolElement(5, 7, 90000, user, policy,
                                         w.UdpTransport(1, ("10.0.0.1",))))
    udp_pe = bytearray(w.encode_parameter(w.PoolElement(5, 7, 90000, user, policy,
                                                        w.TcpTransport(1, ("10.0.0.1",), 0))))
    tail = udp_pe.rfind(b"\x00\x05\x00")  # the last TLV: the TCP ASAP transport
    udp_pe[tail:tail + 2] = b"\x00\x06"    # make it a UDP transport
    with pytest.raises(errors.WireError):
        w.decode_parameter(bytes(udp_pe))
