"""Pure-Python twin of the compiled codec ``rserpool._c.tlv``.

Owns the typed message and parameter classes and the ASAP/ENRP encoder and
decoder.  No I/O.  Read this file to learn the wire format: it is written to
be read, and the compiled module (``_ext/rserpool/_c/tlv.pyx``) follows it
step by step, so that both raise the same exception at the same offset for the
same bytes (checked by ``tests/differential``).

Encoding follows RSPLIB exactly (``shared/spec/RSERPOOL.md`` 1.4): every TLV
is padded to 4 bytes as it is written, nested padding counts in the enclosing
length, and the message length includes the final padding.  Decoding accepts
both padding conventions: a TLV ends at ``start + roundup4(length)`` clipped to
its container, and a message may be followed by the zero padding its length
left out.

Decoding order (both implementations): the message header, then the framing of
every parameter of a container (types, lengths, action bits of unknown types),
then each parameter in order, checked against the message's layout and
decoded (nested containers the same way, recursively).
"""

from __future__ import annotations

import ipaddress
import operator
import struct
from typing import Any, Iterable, Sequence

from ..constants import (
    MAX_MESSAGE_SIZE,
    POLICY_VALUE_NAMES,
    AsapType,
    EnrpType,
    ErrorCause,
    ParamType,
    PolicyType,
    TransportUse,
    UpdateAction,
)
from ..errors import (
    EncodeError,
    LengthError,
    MalformedError,
    OversizeError,
    TrailingBytesError,
    TruncatedError,
    UnknownMessageError,
    UnknownParameterError,
)

__all__ = [
    "IMPLEMENTATION",
    # parameters
    "SctpTransport", "TcpTransport", "UdpTransport", "UdpLiteTransport",
    "DccpTransport", "PoolPolicy", "PoolElement", "ServerInformation", "Cause",
    "UnknownParameter",
    # messages
    "Message", "Registration", "Deregistration", "RegistrationResponse",
    "DeregistrationResponse", "HandleResolution", "HandleResolutionResponse",
    "EndpointKeepAlive", "EndpointKeepAliveAck", "EndpointUnreachable",
    "ServerAnnounce", "Cookie", "CookieEcho", "BusinessCard", "AsapErrorMessage",
    "Presence", "HandleTableRequest", "HandleTableResponse", "HandleUpdate",
    "ListRequest", "ListResponse", "InitTakeover", "InitTakeoverAck",
    "TakeoverServer", "EnrpErrorMessage",
    # functions
    "encode_message", "decode_message", "encode_parameter", "decode_parameter",
    "parse_handle_resolution", "build_handle_resolution_response",
    "format_address",
]

IMPLEMENTATION = "pure"

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_HDR = struct.Struct("!BBH")
_TLV = struct.Struct("!HH")

_PT = ParamType
_TRANSPORT_TYPES = frozenset((_PT.DCCP_TRANSPORT, _PT.SCTP_TRANSPORT, _PT.TCP_TRANSPORT,
                              _PT.UDP_TRANSPORT, _PT.UDP_LITE_TRANSPORT))
_KNOWN_PARAMS = frozenset(int(t) for t in ParamType)
_PARAM_NAMES = {int(t): t.name.replace("_", " ").title().replace("Ipv", "IPv")
                .replace("Pe ", "PE ").replace("Sctp", "SCTP").replace("Tcp", "TCP")
                .replace("Udp", "UDP").replace("Dccp", "DCCP").replace("Lite", "lite")
                for t in ParamType}
_ENUM_POLICY = {int(t): t for t in PolicyType}
_ENUM_CAUSE = {int(t): t for t in ErrorCause}
_ENUM_USE = {int(t): t for t in TransportUse}
_ENUM_ACTION = {int(t): t for t in UpdateAction}


def _pname(ptype: int) -> str:
    name = _PARAM_NAMES.get(ptype)
    return f"{name} (0x{ptype:04x})" if name else f"0x{ptype:04x}"


# --------------------------------------------------------------------------
# value coercion (constructors) and range checks (encoder)

def _as_bytes(value: Any, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


def _as_int(value: Any) -> int:
    return operator.index(value)


def _enum_use(value: Any) -> int:
    use = operator.index(value)
    return _ENUM_USE.get(use, use)


def _as_opt_int(value: Any) -> int | None:
    return None if value is None else operator.index(value)


def _check_uint(value: int, bits: int, what: str) -> int:
    if not 0 <= value < (1 << bits):
        raise EncodeError(f"{what} {value} does not fit in an unsigned {bits}-bit field")
    return value


def _check_int32(value: int, what: str) -> int:
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise EncodeError(f"{what} {value} does not fit in a signed 32-bit field")
    return value


def _causes(value: Any) -> tuple:
    return tuple(value)


def _opt_causes(value: Any) -> tuple | None:
    return None if value is None else tuple(value)


# --------------------------------------------------------------------------
# IP addresses: text form as the API, packed form on the wire.  The text form
# is RFC 5952 for IPv6 (same in both implementations on every Python version).

def _format_ipv4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def _format_ipv6(b: bytes) -> str:
    words = struct.unpack("!8H", b)
    # longest run of at least two zero words; the first one on a tie
    best_start, best_len = -1, 0
    i = 0
    while i < 8:
        if words[i] == 0:
            j = i
            while j < 8 and words[j] == 0:
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    if best_len < 2:
        return ":".join(f"{w:x}" for w in words)
    head = ":".join(f"{w:x}" for w in words[:best_start])
    tail = ":".join(f"{w:x}" for w in words[best_start + best_len:])
    return f"{head}::{tail}"


def format_address(packed: bytes) -> str:
    """Text form of a packed 4- or 16-byte address, as the decoder produces it."""
    if len(packed) == 4:
        return _format_ipv4(packed)
    if len(packed) == 16:
        return _format_ipv6(packed)
    raise ValueError("an address is 4 or 16 bytes")


def _pack_address(text: Any) -> tuple[int, bytes]:
    """(parameter type, packed bytes) of an address in text form."""
    if not isinstance(text, str) or "%" in text or "/" in text:
        raise EncodeError(f"not an IP address: {text!r}")
    try:
        if ":" in text:
            return _PT.IPV6_ADDRESS, ipaddress.IPv6Address(text).packed
        return _PT.IPV4_ADDRESS, ipaddress.IPv4Address(text).packed
    except ValueError:
        raise EncodeError(f"not an IP address: {text!r}") from None


# --------------------------------------------------------------------------
# the record base: immutable, compared and hashed by value

class _Record:
    """Base of every message and parameter class: immutable, equal by value."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        kwargs = {f: getattr(self, f) for f in self._fields}
        for key in changes:
            if key not in kwargs:
                raise TypeError(f"{type(self).__name__} has no field {key!r}")
        kwargs.update(changes)
        return type(self)(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, ints, bytes, str, bool, None): the same in
        both implementations."""
        out: dict[str, Any] = {"kind": type(self).__name__}
        for f in self._fields:
            out[f] = _plain(getattr(self, f))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    return value


def _init(obj: _Record, **values: Any) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)


# --------------------------------------------------------------------------
# parameters

class SctpTransport(_Record):
    """SCTP transport parameter (0x0004): port, transport use, 1..n addresses."""

    __slots__ = ("port", "addresses", "transport_use")
    _fields = __slots__
    PARAM_TYPE = _PT.SCTP_TRANSPORT

    def __init__(self, port: int, addresses: Iterable[str],
                 transport_use: int = TransportUse.DATA_ONLY) -> None:
        _init(self, port=_as_int(port), addresses=tuple(addresses),
              transport_use=_enum_use(transport_use))


class TcpTransport(_Record):
    """TCP transport parameter (0x0005): port, transport use, one address."""

    __slots__ = ("port", "addresses", "transport_use")
    _fields = __slots__
    PARAM_TYPE = _PT.TCP_TRANSPORT

    def __init__(self, port: int, addresses: Iterable[str],
                 transport_use: int = TransportUse.DATA_ONLY) -> None:
        _init(self, port=_as_int(port), addresses=tuple(addresses),
              transport_use=_enum_use(transport_use))


class UdpTransport(_Record):
    """UDP transport parameter (0x0006): port, one address."""

    __slots__ = ("port", "addresses")
    _fields = __slots__
    PARAM_TYPE = _PT.UDP_TRANSPORT

    def __init__(self, port: int, addresses: Iterable[str]) -> None:
        _init(self, port=_as_int(port), addresses=tuple(addresses))


class UdpLiteTransport(_Record):
    """UDP-Lite transport parameter (0x0007): port, one address."""

    __slots__ = ("port", "addresses")
    _fields = __slots__
    PARAM_TYPE = _PT.UDP_LITE_TRANSPORT

    def __init__(self, port: int, addresses: Iterable[str]) -> None:
        _init(self, port=_as_int(port), addresses=tuple(addresses))


class DccpTransport(_Record):
    """DCCP transport parameter (0x0003): port, service code, one address."""

    __slots__ = ("port", "addresses", "service_code")
    _fields = __slots__
    PARAM_TYPE = _PT.DCCP_TRANSPORT

    def __init__(self, port: int, addresses: Iterable[str], service_code: int = 0) -> None:
        _init(self, port=_as_int(port), addresses=tuple(addresses),
              service_code=_as_int(service_code))


class PoolPolicy(_Record):
    """Pool member selection policy parameter (0x0008).

    ``policy_type`` is a :class:`~rserpool.constants.PolicyType` when known (a
    plain int otherwise) and ``values`` the 32-bit words that follow it.  Named
    accessors (``weight``, ``load``, ``load_degradation``, ``priority``,
    ``load_dpf``, ``weight_dpf``, ``distance``) read the word the policy's
    layout gives that name (``constants.POLICY_VALUE_NAMES``); a name the
    policy does not have reads as None.
    """

    __slots__ = ("policy_type", "values")
    _fields = __slots__
    PARAM_TYPE = _PT.POOL_MEMBER_SELECTION_POLICY

    def __init__(self, policy_type: int, values: Iterable[int] = ()) -> None:
        pt = _as_int(policy_type)
        _init(self, policy_type=_ENUM_POLICY.get(pt, pt),
              values=tuple(_as_int(v) for v in values))

    def _named(self, name: str) -> int | None:
        names = POLICY_VALUE_NAMES.get(self.policy_type, ())
        try:
            return self.values[names.index(name)]
        except (ValueError, IndexError):
            return None

    @property
    def weight(self) -> int | None:
        return self._named("weight")

    @property
    def priority(self) -> int | None:
        return self._named("priority")

    @property
    def load(self) -> int | None:
        return self._named("load")

    @property
    def load_degradation(self) -> int | None:
        return self._named("load_degradation")

    @property
    def load_dpf(self) -> int | None:
        return self._named("load_dpf")

    @property
    def weight_dpf(self) -> int | None:
        return self._named("weight_dpf")

    @property
    def distance(self) -> int | None:
        return self._named("distance")


class PoolElement(_Record):
    """Pool Element parameter (0x000a).

    ``registration_life`` is in milliseconds (signed 32 bits);
    ``asap_transport`` is the PE's ASAP endpoint as its home registrar sees it
    (present in ENRP, absent in ASAP): an SctpTransport (RFC 5354), or a
    TcpTransport for a PE that reaches its registrar over TCP (rserpool).
    """

    __slots__ = ("identifier", "home_registrar", "registration_life",
                 "user_transport", "policy", "asap_transport")
    _fields = __slots__
    PARAM_TYPE = _PT.POOL_ELEMENT

    def __init__(self, identifier: int, home_registrar: int, registration_life: int,
                 user_transport: Any, policy: PoolPolicy,
                 asap_transport: SctpTransport | TcpTransport | None = None) -> None:
        _init(self, identifier=_as_int(identifier), home_registrar=_as_int(home_registrar),
              registration_life=_as_int(registration_life), user_transport=user_transport,
              policy=policy, asap_transport=asap_transport)


class ServerInformation(_Record):
    """Server Information parameter (0x000b): a registrar's ID and its ENRP
    endpoint (an SCTP transport parameter)."""

    __slots__ = ("server_id", "transport")
    _fields = __slots__
    PARAM_TYPE = _PT.SERVER_INFORMATION

    def __init__(self, server_id: int, transport: SctpTransport) -> None:
        _init(self, server_id=_as_int(server_id), transport=transport)


class Cause(_Record):
    """One error cause inside an Operation Error parameter (0x000c).

    ``code`` is an :class:`~rserpool.constants.ErrorCause` when known, else
    a plain int; ``info`` the cause-specific bytes."""

    __slots__ = ("code", "info")
    _fields = __slots__

    def __init__(self, code: int, info: bytes = b"") -> None:
        c = _as_int(code)
        _init(self, code=_ENUM_CAUSE.get(c, c), info=_as_bytes(info, "cause info"))


class UnknownParameter(_Record):
    """A parameter of a type this codec does not know whose action bits say
    *skip*.  ``report`` tells whether the sender wants it reported."""

    __slots__ = ("param_type", "value")
    _fields = __slots__

    def __init__(self, param_type: int, value: bytes = b"") -> None:
        _init(self, param_type=_as_int(param_type), value=_as_bytes(value, "parameter value"))

    @property
    def report(self) -> bool:
        return bool(self.param_type & 0x4000)


# --------------------------------------------------------------------------
# messages

class Message(_Record):
    """Base of all ASAP and ENRP messages.

    ``unknown`` holds the top-level parameters of unknown type whose action
    bits said *skip* (in order); the encoder writes them after the known
    parameters.  Unknown parameters nested inside other parameters are dropped.
    """

    __slots__ = ()
    PROTOCOL: str = ""
    TYPE: int = 0


class Registration(Message):
    """ASAP Registration (0x01): a PE registers or re-registers."""

    __slots__ = ("pool_handle", "pool_element", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.REGISTRATION

    def __init__(self, pool_handle: bytes, pool_element: PoolElement, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              pool_element=pool_element, unknown=tuple(unknown))


class Deregistration(Message):
    """ASAP Deregistration (0x02)."""

    __slots__ = ("pool_handle", "identifier", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.DEREGISTRATION

    def __init__(self, pool_handle: bytes, identifier: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              identifier=_as_int(identifier), unknown=tuple(unknown))


class RegistrationResponse(Message):
    """ASAP Registration Response (0x03).  ``rejected`` is the R flag; it
    defaults to whether ``error`` (a tuple of :class:`Cause`) is given."""

    __slots__ = ("pool_handle", "identifier", "error", "rejected", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.REGISTRATION_RESPONSE

    def __init__(self, pool_handle: bytes, identifier: int,
                 error: Sequence[Cause] | None = None, rejected: bool | None = None, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        err = _opt_causes(error)
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              identifier=_as_int(identifier), error=err,
              rejected=(err is not None) if rejected is None else bool(rejected),
              unknown=tuple(unknown))


class DeregistrationResponse(Message):
    """ASAP Deregistration Response (0x04)."""

    __slots__ = ("pool_handle", "identifier", "error", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.DEREGISTRATION_RESPONSE

    def __init__(self, pool_handle: bytes, identifier: int,
                 error: Sequence[Cause] | None = None, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              identifier=_as_int(identifier), error=_opt_causes(error),
              unknown=tuple(unknown))


class HandleResolution(Message):
    """ASAP Handle Resolution (0x05).  ``items`` is the handle resolution
    option (0x803f): how many PEs are wanted (None: option absent)."""

    __slots__ = ("pool_handle", "items", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.HANDLE_RESOLUTION

    def __init__(self, pool_handle: bytes, items: int | None = None, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              items=_as_opt_int(items), unknown=tuple(unknown))


class HandleResolutionResponse(Message):
    """ASAP Handle Resolution Response (0x06): either ``error`` or the pool's
    ``policy`` followed by 0..n ``pool_elements``."""

    __slots__ = ("pool_handle", "policy", "pool_elements", "error", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.HANDLE_RESOLUTION_RESPONSE

    def __init__(self, pool_handle: bytes, policy: PoolPolicy | None = None,
                 pool_elements: Sequence[PoolElement] = (),
                 error: Sequence[Cause] | None = None, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"), policy=policy,
              pool_elements=tuple(pool_elements), error=_opt_causes(error),
              unknown=tuple(unknown))


class EndpointKeepAlive(Message):
    """ASAP Endpoint Keep-Alive (0x07).  ``home`` is the H flag;
    ``identifier`` is RSPLIB's PE Identifier parameter (None: absent)."""

    __slots__ = ("server_id", "pool_handle", "identifier", "home", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.ENDPOINT_KEEP_ALIVE

    def __init__(self, server_id: int, pool_handle: bytes, identifier: int | None = None,
                 home: bool = False, *, unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, server_id=_as_int(server_id),
              pool_handle=_as_bytes(pool_handle, "pool handle"),
              identifier=_as_opt_int(identifier), home=bool(home), unknown=tuple(unknown))


class EndpointKeepAliveAck(Message):
    """ASAP Endpoint Keep-Alive Ack (0x08)."""

    __slots__ = ("pool_handle", "identifier", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.ENDPOINT_KEEP_ALIVE_ACK

    def __init__(self, pool_handle: bytes, identifier: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              identifier=_as_int(identifier), unknown=tuple(unknown))


class EndpointUnreachable(Message):
    """ASAP Endpoint Unreachable (0x09)."""

    __slots__ = ("pool_handle", "identifier", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.ENDPOINT_UNREACHABLE

    def __init__(self, pool_handle: bytes, identifier: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"),
              identifier=_as_int(identifier), unknown=tuple(unknown))


class ServerAnnounce(Message):
    """ASAP Server Announce (0x0a): a registrar's ID and 0..n transport
    parameters of its ASAP endpoint."""

    __slots__ = ("server_id", "transports", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.SERVER_ANNOUNCE

    def __init__(self, server_id: int, transports: Sequence[Any] = (), *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, server_id=_as_int(server_id), transports=tuple(transports),
              unknown=tuple(unknown))


class Cookie(Message):
    """ASAP Cookie (0x0b): opaque session state from a PE to its PU."""

    __slots__ = ("cookie", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.COOKIE

    def __init__(self, cookie: bytes, *, unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, cookie=_as_bytes(cookie, "cookie"), unknown=tuple(unknown))


class CookieEcho(Message):
    """ASAP Cookie Echo (0x0c): the PU hands the cookie to a new PE."""

    __slots__ = ("cookie", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.COOKIE_ECHO

    def __init__(self, cookie: bytes, *, unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, cookie=_as_bytes(cookie, "cookie"), unknown=tuple(unknown))


class BusinessCard(Message):
    """ASAP Business Card (0x0d): pool handle, optional policy, pool elements."""

    __slots__ = ("pool_handle", "policy", "pool_elements", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.BUSINESS_CARD

    def __init__(self, pool_handle: bytes, policy: PoolPolicy | None = None,
                 pool_elements: Sequence[PoolElement] = (), *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, pool_handle=_as_bytes(pool_handle, "pool handle"), policy=policy,
              pool_elements=tuple(pool_elements), unknown=tuple(unknown))


class AsapErrorMessage(Message):
    """ASAP Error (0x0e): an Operation Error parameter."""

    __slots__ = ("causes", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "asap", AsapType.ERROR

    def __init__(self, causes: Sequence[Cause], *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, causes=_causes(causes), unknown=tuple(unknown))


class Presence(Message):
    """ENRP Presence (0x01).  ``reply_required`` is the R flag; ``checksum``
    the sender's ownership checksum; ``server_info`` its Server Information."""

    __slots__ = ("sender_id", "receiver_id", "checksum", "server_info",
                 "reply_required", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.PRESENCE

    def __init__(self, sender_id: int, receiver_id: int, checksum: int,
                 server_info: ServerInformation | None = None, reply_required: bool = False,
                 *, unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              checksum=_as_int(checksum), server_info=server_info,
              reply_required=bool(reply_required), unknown=tuple(unknown))


class HandleTableRequest(Message):
    """ENRP Handle Table Request (0x02).  ``own_children_only`` is flag 0x01."""

    __slots__ = ("sender_id", "receiver_id", "own_children_only", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.HANDLE_TABLE_REQUEST

    def __init__(self, sender_id: int, receiver_id: int, own_children_only: bool = False,
                 *, unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              own_children_only=bool(own_children_only), unknown=tuple(unknown))


class HandleTableResponse(Message):
    """ENRP Handle Table Response (0x03).  ``entries`` is a tuple of
    ``(pool_handle, (PoolElement, ...))`` pairs; ``more`` is the M flag,
    ``rejected`` the R flag."""

    __slots__ = ("sender_id", "receiver_id", "entries", "more", "rejected", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.HANDLE_TABLE_RESPONSE

    def __init__(self, sender_id: int, receiver_id: int,
                 entries: Sequence[tuple[bytes, Sequence[PoolElement]]] = (),
                 more: bool = False, rejected: bool = False, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        ents = tuple((_as_bytes(ph, "pool handle"), tuple(pes)) for ph, pes in entries)
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              entries=ents, more=bool(more), rejected=bool(rejected), unknown=tuple(unknown))


class HandleUpdate(Message):
    """ENRP Handle Update (0x04).  ``action`` is an
    :class:`~rserpool.constants.UpdateAction`; ``takeover_suggested`` the T flag."""

    __slots__ = ("sender_id", "receiver_id", "action", "pool_handle", "pool_element",
                 "takeover_suggested", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.HANDLE_UPDATE

    def __init__(self, sender_id: int, receiver_id: int, action: int, pool_handle: bytes,
                 pool_element: PoolElement, takeover_suggested: bool = False, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        a = _as_int(action)
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              action=_ENUM_ACTION.get(a, a), pool_handle=_as_bytes(pool_handle, "pool handle"),
              pool_element=pool_element, takeover_suggested=bool(takeover_suggested),
              unknown=tuple(unknown))


class ListRequest(Message):
    """ENRP List Request (0x05)."""

    __slots__ = ("sender_id", "receiver_id", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.LIST_REQUEST

    def __init__(self, sender_id: int, receiver_id: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              unknown=tuple(unknown))


class ListResponse(Message):
    """ENRP List Response (0x06): the sender's peers; ``rejected`` is R."""

    __slots__ = ("sender_id", "receiver_id", "servers", "rejected", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.LIST_RESPONSE

    def __init__(self, sender_id: int, receiver_id: int,
                 servers: Sequence[ServerInformation] = (), rejected: bool = False, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              servers=tuple(servers), rejected=bool(rejected), unknown=tuple(unknown))


class InitTakeover(Message):
    """ENRP Init Takeover (0x07) of the registrar ``target_id``."""

    __slots__ = ("sender_id", "receiver_id", "target_id", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.INIT_TAKEOVER

    def __init__(self, sender_id: int, receiver_id: int, target_id: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              target_id=_as_int(target_id), unknown=tuple(unknown))


class InitTakeoverAck(Message):
    """ENRP Init Takeover Ack (0x08)."""

    __slots__ = ("sender_id", "receiver_id", "target_id", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.INIT_TAKEOVER_ACK

    def __init__(self, sender_id: int, receiver_id: int, target_id: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              target_id=_as_int(target_id), unknown=tuple(unknown))


class TakeoverServer(Message):
    """ENRP Takeover Server (0x09)."""

    __slots__ = ("sender_id", "receiver_id", "target_id", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.TAKEOVER_SERVER

    def __init__(self, sender_id: int, receiver_id: int, target_id: int, *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              target_id=_as_int(target_id), unknown=tuple(unknown))


class EnrpErrorMessage(Message):
    """ENRP Error (0x0a): an Operation Error parameter."""

    __slots__ = ("sender_id", "receiver_id", "causes", "unknown")
    _fields = __slots__
    PROTOCOL, TYPE = "enrp", EnrpType.ERROR

    def __init__(self, sender_id: int, receiver_id: int, causes: Sequence[Cause], *,
                 unknown: Sequence[UnknownParameter] = ()) -> None:
        _init(self, sender_id=_as_int(sender_id), receiver_id=_as_int(receiver_id),
              causes=_causes(causes), unknown=tuple(unknown))


# ==========================================================================
# decoding

class _Item:
    """One framed parameter of a container: type, offset, length."""

    __slots__ = ("ptype", "pos", "plen")

    def __init__(self, ptype: int, pos: int, plen: int) -> None:
        self.ptype = ptype
        self.pos = pos
        self.plen = plen


def _frame(data: bytes, pos: int, end: int, unknown: list | None) -> list[_Item]:
    """Split ``data[pos:end]`` into parameters.  Unknown types: action bits
    ``0x`` raise :class:`UnknownParameterError`; ``1x`` are skipped (and
    appended to ``unknown`` when it is a list)."""
    items: list[_Item] = []
    while pos < end:
        left = end - pos
        if left < 4:
            raise LengthError(f"{left} byte(s) left, too short for a parameter header", pos)
        ptype, plen = _TLV.unpack_from(data, pos)
        if plen < 4:
            raise LengthError(f"parameter length {plen} is below 4", pos + 2)
        if plen > left:
            raise LengthError(
                f"parameter length {plen} overruns its container ({left} bytes left)", pos + 2)
        if ptype in _KNOWN_PARAMS:
            items.append(_Item(ptype, pos, plen))
        elif not ptype & 0x8000:
            raise UnknownParameterError(
                f"unknown parameter type 0x{ptype:04x} (action: stop"
                f"{', report' if ptype & 0x4000 else ''})",
                pos, ptype, bool(ptype & 0x4000), data[pos:pos + plen])
        elif unknown is not None:
            unknown.append(UnknownParameter(ptype, data[pos + 4:pos + plen]))
        pos += (plen + 3) & ~3
        if pos > end:
            pos = end
    return items


def _min_len(item: _Item, minimum: int, what: str) -> None:
    if item.plen < minimum:
        raise LengthError(f"{what} parameter length {item.plen} is below {minimum}",
                          item.pos + 2)


def _exact_len(item: _Item, size: int, what: str) -> None:
    if item.plen != size:
        raise LengthError(f"{what} parameter length must be {size}, not {item.plen}",
                          item.pos + 2)


def _unexpected(item: _Item, where: str) -> MalformedError:
    return MalformedError(f"unexpected {_pname(item.ptype)} parameter in {where}", item.pos)


def _dec_address(data: bytes, item: _Item) -> str:
    if item.ptype == _PT.IPV4_ADDRESS:
        _exact_len(item, 8, "IPv4 address")
        return _format_ipv4(data[item.pos + 4:item.pos + 8])
    _exact_len(item, 20, "IPv6 address")
    return _format_ipv6(data[item.pos + 4:item.pos + 20])


def _dec_transport(data: bytes, item: _Item) -> Any:
    ptype, pos, plen = item.ptype, item.pos, item.plen
    head = 12 if ptype == _PT.DCCP_TRANSPORT else 8
    what = _pname(ptype)
    _min_len(item, head, what)
    port = _U16.unpack_from(data, pos + 4)[0]
    addrs = []
    for sub in _frame(data, pos + head, pos + plen, None):
        if sub.ptype != _PT.IPV4_ADDRESS and sub.ptype != _PT.IPV6_ADDRESS:
            raise _unexpected(sub, "a transport parameter")
        addrs.append(_dec_address(data, sub))
    if ptype == _PT.SCTP_TRANSPORT:
        if not addrs:
            raise MalformedError("SCTP transport parameter without an address", pos)
    elif len(addrs) != 1:
        raise MalformedError(f"{what} parameter needs exactly one address, not {len(addrs)}",
                             pos)
    if ptype == _PT.SCTP_TRANSPORT:
        use = _U16.unpack_from(data, pos + 6)[0]
        return SctpTransport(port, addrs, _ENUM_USE.get(use, use))
    if ptype == _PT.TCP_TRANSPORT:
        use = _U16.unpack_from(data, pos + 6)[0]
        return TcpTransport(port, addrs, _ENUM_USE.get(use, use))
    if ptype == _PT.UDP_TRANSPORT:
        return UdpTransport(port, addrs)
    if ptype == _PT.UDP_LITE_TRANSPORT:
        return UdpLiteTransport(port, addrs)
    return DccpTransport(port, addrs, _U32.unpack_from(data, pos + 8)[0])


def _dec_policy(data: bytes, item: _Item) -> PoolPolicy:
    pos, plen = item.pos, item.plen
    _min_len(item, 8, "policy")
    if plen & 3:
        raise LengthError(f"policy parameter length {plen} is not 8 plus a multiple of 4",
                          pos + 2)
    ptype = _U32.unpack_from(data, pos + 4)[0]
    count = (plen - 8) >> 2
    values = struct.unpack_from(f"!{count}I", data, pos + 8)
    needed = POLICY_VALUE_NAMES.get(ptype)
    if needed is not None and count < len(needed):
        raise MalformedError(
            f"policy 0x{ptype:08x} needs {len(needed)} value(s), has {count}", pos)
    return PoolPolicy(ptype, values)


def _dec_pool_element(data: bytes, item: _Item) -> PoolElement:
    pos, plen = item.pos, item.plen
    _min_len(item, 16, "pool element")
    ident, home = struct.unpack_from("!II", data, pos + 4)
    life = _I32.unpack_from(data, pos + 12)[0]
    end = pos + plen
    subs = _frame(data, pos + 16, end, None)
    where = "a pool element parameter"
    if not subs or subs[0].ptype not in _TRANSPORT_TYPES:
        at = subs[0].pos if subs else end
        raise MalformedError("pool element parameter needs a user transport parameter", at)
    user = _dec_transport(data, subs[0])
    if len(subs) < 2 or subs[1].ptype != _PT.POOL_MEMBER_SELECTION_POLICY:
        at = subs[1].pos if len(subs) > 1 else end
        raise MalformedError("pool element parameter needs a policy parameter", at)
    policy = _dec_policy(data, subs[1])
    asap = None
    if len(subs) > 2:
        if subs[2].ptype not in (_PT.SCTP_TRANSPORT, _PT.TCP_TRANSPORT):
            raise _unexpected(subs[2], where)
        asap = _dec_transport(data, subs[2])
        if len(subs) > 3:
            raise _unexpected(subs[3], where)
    return PoolElement(ident, home, life, user, policy, asap)


def _dec_server_info(data: bytes, item: _Item) -> ServerInformation:
    pos, plen = item.pos, item.plen
    _min_len(item, 8, "server information")
    server_id = _U32.unpack_from(data, pos + 4)[0]
    subs = _frame(data, pos + 8, pos + plen, None)
    if not subs or subs[0].ptype != _PT.SCTP_TRANSPORT:
        at = subs[0].pos if subs else pos + plen
        raise MalformedError("server information parameter needs an SCTP transport parameter",
                             at)
    transport = _dec_transport(data, subs[0])
    if len(subs) > 1:
        raise _unexpected(subs[1], "a server information parameter")
    return ServerInformation(server_id, transport)


def _dec_operation_error(data: bytes, item: _Item) -> tuple:
    pos = item.pos + 4
    end = item.pos + item.plen
    causes = []
    while pos < end:
        left = end - pos
        if left < 4:
            raise LengthError(f"{left} byte(s) left, too short for an error cause header", pos)
        code, clen = _TLV.unpack_from(data, pos)
        if clen < 4:
            raise LengthError(f"error cause length {clen} is below 4", pos + 2)
        if clen > left:
            raise LengthError(
                f"error cause length {clen} overruns its parameter ({left} bytes left)", pos + 2)
        causes.append(Cause(code, data[pos + 4:pos + clen]))
        pos += (clen + 3) & ~3
        if pos > end:
            pos = end
    return tuple(causes)


def _dec_bytes(data: bytes, item: _Item) -> bytes:
    return data[item.pos + 4:item.pos + item.plen]


def _dec_u32_param(data: bytes, item: _Item, what: str) -> int:
    _exact_len(item, 8, what)
    return _U32.unpack_from(data, item.pos + 4)[0]


def _dec_checksum(data: bytes, item: _Item) -> int:
    _exact_len(item, 6, "PE checksum")
    return _U16.unpack_from(data, item.pos + 4)[0]


def _decode_any(data: bytes, item: _Item) -> Any:
    """Decode one top-level parameter of any known type."""
    t = item.ptype
    if t in _TRANSPORT_TYPES:
        return _dec_transport(data, item)
    if t == _PT.IPV4_ADDRESS or t == _PT.IPV6_ADDRESS:
        return _dec_address(data, item)
    if t == _PT.POOL_MEMBER_SELECTION_POLICY:
        return _dec_policy(data, item)
    if t == _PT.POOL_ELEMENT:
        return _dec_pool_element(data, item)
    if t == _PT.SERVER_INFORMATION:
        return _dec_server_info(data, item)
    if t == _PT.OPERATION_ERROR:
        return _dec_operation_error(data, item)
    if t == _PT.PE_IDENTIFIER:
        return _dec_u32_param(data, item, "PE identifier")
    if t == _PT.PE_CHECKSUM:
        return _dec_checksum(data, item)
    if t == _PT.HANDLE_RESOLUTION_OPTION:
        return _dec_u32_param(data, item, "handle resolution option")
    return _dec_bytes(data, item)  # pool handle, cookie


class _Body:
    """The known top-level parameters of a message, consumed in order."""

    __slots__ = ("data", "items", "i", "end", "where")

    def __init__(self, data: bytes, items: list[_Item], end: int, where: str) -> None:
        self.data = data
        self.items = items
        self.i = 0
        self.end = end
        self.where = where

    def peek(self) -> int:
        return self.items[self.i].ptype if self.i < len(self.items) else -1

    def take(self, ptype: int, what: str) -> Any:
        if self.i >= len(self.items):
            raise MalformedError(f"{self.where} message lacks its {what} parameter", self.end)
        item = self.items[self.i]
        if item.ptype != ptype:
            raise MalformedError(
                f"{self.where} message: expected {what} parameter, found {_pname(item.ptype)}",
                item.pos)
        self.i += 1
        return _decode_any(self.data, item)

    def optional(self, ptype: int) -> Any:
        if self.peek() != ptype:
            return None
        item = self.items[self.i]
        self.i += 1
        return _decode_any(self.data, item)

    def done(self) -> None:
        if self.i < len(self.items):
            raise _unexpected(self.items[self.i], f"a {self.where} message")


def _u32(data: bytes, pos: int) -> int:
    return _U32.unpack_from(data, pos)[0]


# ---- ASAP

def _d_registration(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    pe = b.take(_PT.POOL_ELEMENT, "pool element")
    b.done()
    return Registration(ph, pe, unknown=unknown)


def _d_deregistration(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    ident = b.take(_PT.PE_IDENTIFIER, "PE identifier")
    b.done()
    return Deregistration(ph, ident, unknown=unknown)


def _d_registration_response(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    ident = b.take(_PT.PE_IDENTIFIER, "PE identifier")
    err = b.optional(_PT.OPERATION_ERROR)
    b.done()
    return RegistrationResponse(ph, ident, err, bool(flags & 0x01), unknown=unknown)


def _d_deregistration_response(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    ident = b.take(_PT.PE_IDENTIFIER, "PE identifier")
    err = b.optional(_PT.OPERATION_ERROR)
    b.done()
    return DeregistrationResponse(ph, ident, err, unknown=unknown)


def _d_handle_resolution(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    items = b.optional(_PT.HANDLE_RESOLUTION_OPTION)
    b.done()
    return HandleResolution(ph, items, unknown=unknown)


def _d_handle_resolution_response(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    if b.peek() == _PT.OPERATION_ERROR:
        err = b.take(_PT.OPERATION_ERROR, "operation error")
        b.done()
        return HandleResolutionResponse(ph, None, (), err, unknown=unknown)
    policy = b.take(_PT.POOL_MEMBER_SELECTION_POLICY, "policy")
    pes = []
    while b.peek() == _PT.POOL_ELEMENT:
        pes.append(b.take(_PT.POOL_ELEMENT, "pool element"))
    b.done()
    return HandleResolutionResponse(ph, policy, pes, None, unknown=unknown)


def _d_keep_alive(b: _Body, flags: int, unknown: tuple) -> Message:
    server_id = _u32(b.data, 4)
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    ident = b.optional(_PT.PE_IDENTIFIER)
    b.done()
    return EndpointKeepAlive(server_id, ph, ident, bool(flags & 0x01), unknown=unknown)


def _d_keep_alive_ack(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    ident = b.take(_PT.PE_IDENTIFIER, "PE identifier")
    b.done()
    return EndpointKeepAliveAck(ph, ident, unknown=unknown)


def _d_unreachable(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    ident = b.take(_PT.PE_IDENTIFIER, "PE identifier")
    b.done()
    return EndpointUnreachable(ph, ident, unknown=unknown)


def _d_server_announce(b: _Body, flags: int, unknown: tuple) -> Message:
    server_id = _u32(b.data, 4)
    transports = []
    while b.peek() in _TRANSPORT_TYPES:
        transports.append(b.take(b.peek(), "transport"))
    b.done()
    return ServerAnnounce(server_id, transports, unknown=unknown)


def _d_cookie(b: _Body, flags: int, unknown: tuple) -> Message:
    ck = b.take(_PT.COOKIE, "cookie")
    b.done()
    return Cookie(ck, unknown=unknown)


def _d_cookie_echo(b: _Body, flags: int, unknown: tuple) -> Message:
    ck = b.take(_PT.COOKIE, "cookie")
    b.done()
    return CookieEcho(ck, unknown=unknown)


def _d_business_card(b: _Body, flags: int, unknown: tuple) -> Message:
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    policy = b.optional(_PT.POOL_MEMBER_SELECTION_POLICY)
    pes = []
    while b.peek() == _PT.POOL_ELEMENT:
        pes.append(b.take(_PT.POOL_ELEMENT, "pool element"))
    b.done()
    return BusinessCard(ph, policy, pes, unknown=unknown)


def _d_asap_error(b: _Body, flags: int, unknown: tuple) -> Message:
    causes = b.take(_PT.OPERATION_ERROR, "operation error")
    b.done()
    return AsapErrorMessage(causes, unknown=unknown)


# ---- ENRP (sender and receiver IDs at offsets 4 and 8)

def _ids(b: _Body) -> tuple[int, int]:
    return _u32(b.data, 4), _u32(b.data, 8)


def _d_presence(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    checksum = b.take(_PT.PE_CHECKSUM, "PE checksum")
    info = b.optional(_PT.SERVER_INFORMATION)
    b.done()
    return Presence(s, r, checksum, info, bool(flags & 0x01), unknown=unknown)


def _d_table_request(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    b.done()
    return HandleTableRequest(s, r, bool(flags & 0x01), unknown=unknown)


def _d_table_response(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    entries = []
    while b.peek() == _PT.POOL_HANDLE:
        ph = b.take(_PT.POOL_HANDLE, "pool handle")
        pes = [b.take(_PT.POOL_ELEMENT, "pool element")]
        while b.peek() == _PT.POOL_ELEMENT:
            pes.append(b.take(_PT.POOL_ELEMENT, "pool element"))
        entries.append((ph, tuple(pes)))
    b.done()
    return HandleTableResponse(s, r, entries, bool(flags & 0x02), bool(flags & 0x01),
                               unknown=unknown)


def _d_handle_update(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    action = _U16.unpack_from(b.data, 12)[0]
    ph = b.take(_PT.POOL_HANDLE, "pool handle")
    pe = b.take(_PT.POOL_ELEMENT, "pool element")
    b.done()
    return HandleUpdate(s, r, action, ph, pe, bool(flags & 0x01), unknown=unknown)


def _d_list_request(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    b.done()
    return ListRequest(s, r, unknown=unknown)


def _d_list_response(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    servers = []
    while b.peek() == _PT.SERVER_INFORMATION:
        servers.append(b.take(_PT.SERVER_INFORMATION, "server information"))
    b.done()
    return ListResponse(s, r, servers, bool(flags & 0x01), unknown=unknown)


def _d_init_takeover(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    b.done()
    return InitTakeover(s, r, _u32(b.data, 12), unknown=unknown)


def _d_init_takeover_ack(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    b.done()
    return InitTakeoverAck(s, r, _u32(b.data, 12), unknown=unknown)


def _d_takeover_server(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    b.done()
    return TakeoverServer(s, r, _u32(b.data, 12), unknown=unknown)


def _d_enrp_error(b: _Body, flags: int, unknown: tuple) -> Message:
    s, r = _ids(b)
    causes = b.take(_PT.OPERATION_ERROR, "operation error")
    b.done()
    return EnrpErrorMessage(s, r, causes, unknown=unknown)


# type -> (name, size of the fixed part incl. header, decoder)
_ASAP = {
    0x01: ("Registration", 4, _d_registration),
    0x02: ("Deregistration", 4, _d_deregistration),
    0x03: ("Registration Response", 4, _d_registration_response),
    0x04: ("Deregistration Response", 4, _d_deregistration_response),
    0x05: ("Handle Resolution", 4, _d_handle_resolution),
    0x06: ("Handle Resolution Response", 4, _d_handle_resolution_response),
    0x07: ("Endpoint Keep-Alive", 8, _d_keep_alive),
    0x08: ("Endpoint Keep-Alive Ack", 4, _d_keep_alive_ack),
    0x09: ("Endpoint Unreachable", 4, _d_unreachable),
    0x0A: ("Server Announce", 8, _d_server_announce),
    0x0B: ("Cookie", 4, _d_cookie),
    0x0C: ("Cookie Echo", 4, _d_cookie_echo),
    0x0D: ("Business Card", 4, _d_business_card),
    0x0E: ("ASAP Error", 4, _d_asap_error),
}
_ENRP = {
    0x01: ("Presence", 12, _d_presence),
    0x02: ("Handle Table Request", 12, _d_table_request),
    0x03: ("Handle Table Response", 12, _d_table_response),
    0x04: ("Handle Update", 16, _d_handle_update),
    0x05: ("List Request", 12, _d_list_request),
    0x06: ("List Response", 12, _d_list_response),
    0x07: ("Init Takeover", 16, _d_init_takeover),
    0x08: ("Init Takeover Ack", 16, _d_init_takeover_ack),
    0x09: ("Takeover Server", 16, _d_takeover_server),
    0x0A: ("ENRP Error", 12, _d_enrp_error),
}


def _check_frame(data: bytes) -> int:
    """Check the header against the data; return the message length."""
    n = len(data)
    if n > MAX_MESSAGE_SIZE:
        raise OversizeError(f"{n} bytes is more than a message can hold ({MAX_MESSAGE_SIZE})",
                            MAX_MESSAGE_SIZE)
    if n < 4:
        raise TruncatedError(f"a message header needs 4 bytes, got {n}", n)
    length = _U16.unpack_from(data, 2)[0]
    if length < 4:
        raise LengthError(f"message length {length} is below the 4-byte header", 2)
    if length > n:
        raise TruncatedError(f"message length {length} exceeds the {n} bytes received", n)
    if n > length:
        pad_end = (length + 3) & ~3
        if n > pad_end:
            raise TrailingBytesError(f"{n - length} byte(s) after the end of the message",
                                     length)
        if any(data[length:n]):
            raise TrailingBytesError("non-zero bytes after the end of the message", length)
    return length


def decode_message(data: bytes, protocol: str) -> Message:
    """Decode one whole ASAP or ENRP message.

    :param data: the message bytes (``bytes``, ``bytearray`` or
        ``memoryview``), exactly one message, optionally followed by the zero
        padding its length left out.
    :param protocol: ``"asap"`` or ``"enrp"`` (they share type numbers).
    :raises WireError: a subclass of it, naming the offset and the reason.
    """
    if protocol == "asap":
        table = _ASAP
    elif protocol == "enrp":
        table = _ENRP
    else:
        raise ValueError(f"protocol must be 'asap' or 'enrp', not {protocol!r}")
    if type(data) is not bytes:
        data = bytes(data)
    length = _check_frame(data)
    mtype = data[0]
    entry = table.get(mtype)
    if entry is None:
        raise UnknownMessageError(f"unknown {protocol.upper()} message type 0x{mtype:02x}", 0,
                                  mtype)
    name, fixed, decoder = entry
    if length < fixed:
        raise LengthError(f"{name} message length {length} is below its fixed part of "
                          f"{fixed} bytes", 2)
    unknown: list = []
    items = _frame(data, fixed, length, unknown)
    return decoder(_Body(data, items, length, name), data[1], tuple(unknown))


def decode_parameter(data: bytes) -> Any:
    """Decode exactly one top-level parameter (for tests and tools): addresses
    give ``str``, pool handle and cookie ``bytes``, PE identifier, PE checksum
    and the handle resolution option ``int``, operation error a tuple of
    :class:`Cause`, others their classes.  Offsets in errors count from the
    start of ``data``."""
    if type(data) is not bytes:
        data = bytes(data)
    unknown: list = []
    items = _frame(data, 0, len(data), unknown)
    if len(items) + len(unknown) != 1:
        raise MalformedError(f"expected one parameter, found {len(items) + len(unknown)}", 0)
    if unknown:
        return unknown[0]
    return _decode_any(data, items[0])


# ==========================================================================
# encoding

def _begin(buf: bytearray, ptype: int) -> int:
    start = len(buf)
    buf += b"\0\0\0\0"
    _TLV.pack_into(buf, start, ptype, 0)
    return start


def _finish(buf: bytearray, start: int) -> None:
    length = len(buf) - start
    if length > 0xFFFF:
        raise EncodeError(f"parameter of {length} bytes does not fit a 16-bit length")
    _U16.pack_into(buf, start + 2, length)
    pad = (-length) & 3
    if pad:
        buf += b"\0" * pad


def _e_bytes_param(buf: bytearray, ptype: int, value: bytes) -> None:
    start = _begin(buf, ptype)
    buf += value
    _finish(buf, start)


def _e_u32_param(buf: bytearray, ptype: int, value: Any, what: str) -> None:
    buf += _TLV.pack(ptype, 8)
    buf += _U32.pack(_check_uint(_as_enc_int(value, what), 32, what))


def _as_enc_int(value: Any, what: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise EncodeError(f"{what} must be an integer, not {type(value).__name__}") from None


def _as_enc_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise EncodeError(f"{what} must be bytes, not {type(value).__name__}")


def _e_address(buf: bytearray, text: Any) -> None:
    ptype, packed = _pack_address(text)
    buf += _TLV.pack(ptype, 4 + len(packed))
    buf += packed


def _e_transport(buf: bytearray, t: Any) -> None:
    cls = type(t)
    if cls is SctpTransport:
        ptype, second = _PT.SCTP_TRANSPORT, t.transport_use
    elif cls is TcpTransport:
        ptype, second = _PT.TCP_TRANSPORT, t.transport_use
    elif cls is UdpTransport:
        ptype, second = _PT.UDP_TRANSPORT, 0
    elif cls is UdpLiteTransport:
        ptype, second = _PT.UDP_LITE_TRANSPORT, 0
    elif cls is DccpTransport:
        ptype, second = _PT.DCCP_TRANSPORT, 0
    else:
        raise EncodeError(f"not a transport parameter: {cls.__name__}")
    addrs = t.addresses
    if ptype == _PT.SCTP_TRANSPORT:
        if not addrs:
            raise EncodeError("an SCTP transport parameter needs at least one address")
    elif len(addrs) != 1:
        raise EncodeError(f"a {cls.__name__} needs exactly one address, not {len(addrs)}")
    start = _begin(buf, ptype)
    buf += _U16.pack(_check_uint(_as_enc_int(t.port, "port"), 16, "port"))
    buf += _U16.pack(_check_uint(_as_enc_int(second, "transport use"), 16, "transport use"))
    if ptype == _PT.DCCP_TRANSPORT:
        buf += _U32.pack(_check_uint(_as_enc_int(t.service_code, "service code"), 32,
                                     "service code"))
    for a in addrs:
        _e_address(buf, a)
    _finish(buf, start)


def _e_policy(buf: bytearray, p: Any) -> None:
    if type(p) is not PoolPolicy:
        raise EncodeError(f"not a policy parameter: {type(p).__name__}")
    values = p.values
    ptype = _check_uint(_as_enc_int(p.policy_type, "policy type"), 32, "policy type")
    needed = POLICY_VALUE_NAMES.get(ptype)
    if needed is not None and len(values) < len(needed):
        raise EncodeError(f"policy 0x{ptype:08x} needs {len(needed)} value(s), has "
                          f"{len(values)}")
    plen = 8 + 4 * len(values)
    if plen > 0xFFFF:
        raise EncodeError(f"parameter of {plen} bytes does not fit a 16-bit length")
    buf += _TLV.pack(_PT.POOL_MEMBER_SELECTION_POLICY, plen)
    buf += _U32.pack(ptype)
    for v in values:
        buf += _U32.pack(_check_uint(_as_enc_int(v, "policy value"), 32, "policy value"))


def _e_pool_element(buf: bytearray, pe: Any) -> None:
    if type(pe) is not PoolElement:
        raise EncodeError(f"not a pool element parameter: {type(pe).__name__}")
    start = _begin(buf, _PT.POOL_ELEMENT)
    buf += _U32.pack(_check_uint(_as_enc_int(pe.identifier, "PE identifier"), 32,
                                 "PE identifier"))
    buf += _U32.pack(_check_uint(_as_enc_int(pe.home_registrar, "home registrar"), 32,
                                 "home registrar"))
    buf += _I32.pack(_check_int32(_as_enc_int(pe.registration_life, "registration life"),
                                  "registration life"))
    _e_transport(buf, pe.user_transport)
    _e_policy(buf, pe.policy)
    if pe.asap_transport is not None:
        if type(pe.asap_transport) not in (SctpTransport, TcpTransport):
            raise EncodeError("the ASAP transport of a pool element must be an SctpTransport "
                              "or a TcpTransport")
        _e_transport(buf, pe.asap_transport)
    _finish(buf, start)


def _e_server_info(buf: bytearray, si: Any) -> None:
    if type(si) is not ServerInformation:
        raise EncodeError(f"not a server information parameter: {type(si).__name__}")
    if type(si.transport) is not SctpTransport:
        raise EncodeError("server information needs an SctpTransport")
    start = _begin(buf, _PT.SERVER_INFORMATION)
    buf += _U32.pack(_check_uint(_as_enc_int(si.server_id, "server ID"), 32, "server ID"))
    _e_transport(buf, si.transport)
    _finish(buf, start)


def _e_operation_error(buf: bytearray, causes: Any) -> None:
    start = _begin(buf, _PT.OPERATION_ERROR)
    for c in causes:
        if type(c) is not Cause:
            raise EncodeError(f"not an error cause: {type(c).__name__}")
        info = _as_enc_bytes(c.info, "cause info")
        cstart = len(buf)
        buf += _TLV.pack(_check_uint(_as_enc_int(c.code, "cause code"), 16, "cause code"),
                         4 + len(info) if len(info) <= 0xFFFB else 0)
        if len(info) > 0xFFFB:
            raise EncodeError("error cause info too long")
        buf += info
        pad = (-(len(buf) - cstart)) & 3
        if pad:
            buf += b"\0" * pad
    _finish(buf, start)


def _e_unknown(buf: bytearray, unknown: Any) -> None:
    for u in unknown:
        if type(u) is not UnknownParameter:
            raise EncodeError(f"not an unknown parameter: {type(u).__name__}")
        ptype = _check_uint(_as_enc_int(u.param_type, "parameter type"), 16, "parameter type")
        _e_bytes_param(buf, ptype, _as_enc_bytes(u.value, "parameter value"))


def _e_ph(buf: bytearray, ph: Any) -> None:
    _e_bytes_param(buf, _PT.POOL_HANDLE, _as_enc_bytes(ph, "pool handle"))


def _e_peid(buf: bytearray, ident: Any) -> None:
    _e_u32_param(buf, _PT.PE_IDENTIFIER, ident, "PE identifier")


def _e_ids(buf: bytearray, m: Any) -> None:
    buf += _U32.pack(_check_uint(_as_enc_int(m.sender_id, "sender ID"), 32, "sender ID"))
    buf += _U32.pack(_check_uint(_as_enc_int(m.receiver_id, "receiver ID"), 32,
                                 "receiver ID"))


def _encode_body(m: Any, buf: bytearray) -> int:
    """Write the body of ``m`` after the 4-byte header; return the flags."""
    cls = type(m)
    flags = 0
    if cls is Registration:
        _e_ph(buf, m.pool_handle)
        _e_pool_element(buf, m.pool_element)
    elif cls is Deregistration or cls is EndpointKeepAliveAck or cls is EndpointUnreachable:
        _e_ph(buf, m.pool_handle)
        _e_peid(buf, m.identifier)
    elif cls is RegistrationResponse or cls is DeregistrationResponse:
        _e_ph(buf, m.pool_handle)
        _e_peid(buf, m.identifier)
        if m.error is not None:
            _e_operation_error(buf, m.error)
        if cls is RegistrationResponse and m.rejected:
            flags = 0x01
    elif cls is HandleResolution:
        _e_ph(buf, m.pool_handle)
        if m.items is not None:
            _e_u32_param(buf, _PT.HANDLE_RESOLUTION_OPTION, m.items, "items")
    elif cls is HandleResolutionResponse:
        _e_ph(buf, m.pool_handle)
        if m.error is not None:
            if m.policy is not None or m.pool_elements:
                raise EncodeError("a handle resolution response carries either an error or "
                                  "a policy and pool elements")
            _e_operation_error(buf, m.error)
        else:
            if m.policy is None:
                raise EncodeError("a handle resolution response without an error needs a "
                                  "policy")
            _e_policy(buf, m.policy)
            for pe in m.pool_elements:
                _e_pool_element(buf, pe)
    elif cls is EndpointKeepAlive:
        buf += _U32.pack(_check_uint(_as_enc_int(m.server_id, "server ID"), 32, "server ID"))
        _e_ph(buf, m.pool_handle)
        if m.identifier is not None:
            _e_peid(buf, m.identifier)
        if m.home:
            flags = 0x01
    elif cls is ServerAnnounce:
        buf += _U32.pack(_check_uint(_as_enc_int(m.server_id, "server ID"), 32, "server ID"))
        for t in m.transports:
            _e_transport(buf, t)
    elif cls is Cookie or cls is CookieEcho:
        _e_bytes_param(buf, _PT.COOKIE, _as_enc_bytes(m.cookie, "cookie"))
    elif cls is BusinessCard:
        _e_ph(buf, m.pool_handle)
        if m.policy is not None:
            _e_policy(buf, m.policy)
        for pe in m.pool_elements:
            _e_pool_element(buf, pe)
    elif cls is AsapErrorMessage:
        _e_operation_error(buf, m.causes)
    elif cls is Presence:
        _e_ids(buf, m)
        buf += _TLV.pack(_PT.PE_CHECKSUM, 6)
        buf += _U16.pack(_check_uint(_as_enc_int(m.checksum, "checksum"), 16, "checksum"))
        buf += b"\0\0"
        if m.server_info is not None:
            _e_server_info(buf, m.server_info)
        if m.reply_required:
            flags = 0x01
    elif cls is HandleTableRequest:
        _e_ids(buf, m)
        if m.own_children_only:
            flags = 0x01
    elif cls is HandleTableResponse:
        _e_ids(buf, m)
        for ph, pes in m.entries:
            if not pes:
                raise EncodeError("a handle table entry needs at least one pool element")
            _e_ph(buf, ph)
            for pe in pes:
                _e_pool_element(buf, pe)
        flags = (0x01 if m.rejected else 0) | (0x02 if m.more else 0)
    elif cls is HandleUpdate:
        _e_ids(buf, m)
        buf += _U16.pack(_check_uint(_as_enc_int(m.action, "update action"), 16,
                                     "update action"))
        buf += b"\0\0"
        _e_ph(buf, m.pool_handle)
        _e_pool_element(buf, m.pool_element)
        if m.takeover_suggested:
            flags = 0x01
    elif cls is ListRequest:
        _e_ids(buf, m)
    elif cls is ListResponse:
        _e_ids(buf, m)
        for si in m.servers:
            _e_server_info(buf, si)
        if m.rejected:
            flags = 0x01
    elif cls is InitTakeover or cls is InitTakeoverAck or cls is TakeoverServer:
        _e_ids(buf, m)
        buf += _U32.pack(_check_uint(_as_enc_int(m.target_id, "target ID"), 32, "target ID"))
    elif cls is EnrpErrorMessage:
        _e_ids(buf, m)
        _e_operation_error(buf, m.causes)
    else:
        raise EncodeError(f"not a message: {cls.__name__}")
    _e_unknown(buf, m.unknown)
    return flags


def encode_message(message: Message) -> bytes:
    """Encode a message exactly as RSPLIB would (padding included in every
    length).

    :raises EncodeError: a field is out of range or the message would exceed
        65,535 bytes.
    """
    buf = bytearray(4)
    flags = _encode_body(message, buf)
    n = len(buf)
    if n > MAX_MESSAGE_SIZE:
        raise EncodeError(f"message of {n} bytes exceeds {MAX_MESSAGE_SIZE}")
    _HDR.pack_into(buf, 0, int(message.TYPE), flags, n)
    return bytes(buf)


def encode_parameter(param: Any) -> bytes:
    """Encode one parameter object (transport, policy, pool element, server
    information, unknown parameter), padded.  Used to keep each PE's encoded
    Pool Element parameter in the handlespace."""
    buf = bytearray()
    cls = type(param)
    if cls is PoolElement:
        _e_pool_element(buf, param)
    elif cls is PoolPolicy:
        _e_policy(buf, param)
    elif cls is ServerInformation:
        _e_server_info(buf, param)
    elif cls is UnknownParameter:
        _e_unknown(buf, (param,))
    else:
        _e_transport(buf, param)
    return bytes(buf)


# ==========================================================================
# the registrar's hot path

def parse_handle_resolution(data: bytes) -> tuple[bytes, int | None]:
    """Decode an ASAP Handle Resolution and return ``(pool_handle, items)``
    (``items`` is None when the option is absent).  Raises exactly what
    :func:`decode_message` raises; a message of another type raises
    :class:`MalformedError` at offset 0."""
    if len(data) >= 1 and data[0] != AsapType.HANDLE_RESOLUTION:
        # still validate the frame first, like decode_message would
        _check_frame(bytes(data))
        raise MalformedError(f"not a Handle Resolution message (type 0x{data[0]:02x})", 0)
    m = decode_message(data, "asap")
    if type(m) is not HandleResolution:  # pragma: no cover - guarded above
        raise MalformedError("not a Handle Resolution message", 0)
    return m.pool_handle, m.items


def build_handle_resolution_response(pool_handle: bytes, policy: bytes,
                                     pool_elements: Sequence[bytes]) -> bytes:
    """A Handle Resolution Response from a pool handle and parameters that are
    already encoded: ``policy`` (a Pool Member Selection Policy parameter) and
    each of ``pool_elements`` (Pool Element parameters, padded)."""
    ph = _as_enc_bytes(pool_handle, "pool handle")
    ph_len = 4 + len(ph)
    pad = (-ph_len) & 3
    policy = _as_enc_bytes(policy, "policy")
    pes = [_as_enc_bytes(pe, "pool element") for pe in pool_elements]
    total = 4 + ph_len + pad + len(policy) + sum(len(pe) for pe in pes)
    if total > MAX_MESSAGE_SIZE or ph_len > 0xFFFF:
        raise EncodeError(f"message of {total} bytes exceeds {MAX_MESSAGE_SIZE}")
    parts = [_HDR.pack(AsapType.HANDLE_RESOLUTION_RESPONSE, 0, total),
             _TLV.pack(_PT.POOL_HANDLE, ph_len), ph, b"\0" * pad, policy]
    parts.extend(pes)
    return b"".join(parts)
