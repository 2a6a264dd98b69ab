# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, auto_pickle=False
# cython: embedsignature=True, embedsignature.format=python
"""Compiled ASAP (RFC 5352) / ENRP (RFC 5353) codec: the twin of
``rserpool.wire._codec_py``.

Same classes, same functions, same results, and for bad input the same
exception class at the same offset with the same reason, checked in the same
order (message header, framing of a whole container, then each parameter in
order, recursively).  The pure-Python module is the specification; this one
works on the raw buffer with C pointers and builds objects without calling
their constructors.  Never import this module directly: use
``rserpool.wire``.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF, PyObject
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from cpython.sequence cimport PySequence_Check

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)
    bint PyLong_CheckExact(object o)

cdef extern from *:
    """
    static int rsp_type_has_iter(PyObject *o) { return Py_TYPE(o)->tp_iter != NULL; }
    static const char *rsp_type_name(PyObject *o) { return Py_TYPE(o)->tp_name; }
    """
    bint rsp_type_has_iter(object o)
    const char* rsp_type_name(object o)

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "<sys/socket.h>" nogil:
    int AF_INET
    int AF_INET6

import ipaddress as _ipaddress
import struct as _struct

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

IMPLEMENTATION = "compiled"

ctypedef const unsigned char* cbuf

# --------------------------------------------------------------------------
# parameter type numbers (checked against constants.ParamType at import)

cdef enum:
    PT_IPV4 = 0x0001
    PT_IPV6 = 0x0002
    PT_DCCP = 0x0003
    PT_SCTP = 0x0004
    PT_TCP = 0x0005
    PT_UDP = 0x0006
    PT_UDPLITE = 0x0007
    PT_POLICY = 0x0008
    PT_PH = 0x0009
    PT_PE = 0x000A
    PT_SI = 0x000B
    PT_OPERR = 0x000C
    PT_COOKIE = 0x000D
    PT_PEID = 0x000E
    PT_CHECKSUM = 0x000F
    PT_HRO = 0x803F

if {int(t) for t in ParamType} != {PT_IPV4, PT_IPV6, PT_DCCP, PT_SCTP, PT_TCP, PT_UDP,
                                   PT_UDPLITE, PT_POLICY, PT_PH, PT_PE, PT_SI, PT_OPERR,
                                   PT_COOKIE, PT_PEID, PT_CHECKSUM, PT_HRO}:
    raise ImportError("rserpool._c.tlv is out of date with rserpool.constants.ParamType")
if MAX_MESSAGE_SIZE != 65535:
    raise ImportError("rserpool._c.tlv assumes MAX_MESSAGE_SIZE == 65535")

cdef inline bint _known(unsigned int t) noexcept nogil:
    return (1 <= t <= 15) or t == PT_HRO


cdef inline bint _is_transport(unsigned int t) noexcept nogil:
    return PT_DCCP <= t <= PT_UDPLITE


_PT = ParamType
_PARAM_NAMES = {
    0x0001: "IPv4 Address",
    0x0002: "IPv6 Address",
    0x0003: "DCCP Transport",
    0x0004: "SCTP Transport",
    0x0005: "TCP Transport",
    0x0006: "UDP Transport",
    0x0007: "UDP lite Transport",
    0x0008: "Pool Member Selection Policy",
    0x0009: "Pool Handle",
    0x000A: "Pool Element",
    0x000B: "Server Information",
    0x000C: "Operation Error",
    0x000D: "Cookie",
    0x000E: "PE Identifier",
    0x000F: "PE Checksum",
    0x803F: "Handle Resolution Option",
}

# int -> enum member caches (decoder and constructors)
cdef dict _ENUM_POLICY = {int(t): t for t in PolicyType}
cdef dict _ENUM_CAUSE = {int(t): t for t in ErrorCause}
cdef dict _ENUM_ACTION = {int(t): t for t in UpdateAction}
cdef dict _ENUM_USE = {int(t): t for t in TransportUse}
# policy type -> number of values its layout needs
cdef dict _POLICY_NEEDED = {int(k): len(v) for k, v in POLICY_VALUE_NAMES.items()}

cdef object _EMPTY = ()
cdef object _MISSING = object()


cdef inline object _enum_get(dict d, object key):
    cdef PyObject* r = PyDict_GetItem(d, key)
    if r == NULL:
        return key
    return <object>r


cdef str _pname(unsigned int ptype):
    name = _PARAM_NAMES.get(ptype)
    return f"{name} (0x{ptype:04x})" if name else f"0x{ptype:04x}"


# --------------------------------------------------------------------------
# big-endian access

cdef inline unsigned int _u16(cbuf p, Py_ssize_t i) noexcept nogil:
    return (<unsigned int>p[i] << 8) | p[i + 1]


cdef inline uint32_t _u32(cbuf p, Py_ssize_t i) noexcept nogil:
    return ((<uint32_t>p[i] << 24) | (<uint32_t>p[i + 1] << 16)
            | (<uint32_t>p[i + 2] << 8) | <uint32_t>p[i + 3])


cdef inline void _put16(unsigned char* q, unsigned int v) noexcept nogil:
    q[0] = <unsigned char>((v >> 8) & 0xFF)
    q[1] = <unsigned char>(v & 0xFF)


cdef inline void _put32(unsigned char* q, uint32_t v) noexcept nogil:
    q[0] = <unsigned char>(v >> 24)
    q[1] = <unsigned char>((v >> 16) & 0xFF)
    q[2] = <unsigned char>((v >> 8) & 0xFF)
    q[3] = <unsigned char>(v & 0xFF)


# --------------------------------------------------------------------------
# value coercion (constructors)

cdef inline object _as_bytes(object value, str what):
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


cdef inline object _as_opt_int(object value):
    return None if value is None else PyNumber_Index(value)


cdef inline object _opt_causes(object value):
    return None if value is None else tuple(value)


cdef tuple _unpack2(object e):
    """``a, b = e`` with CPython 3.11's exceptions and messages."""
    if type(e) is tuple and len(<tuple>e) == 2:
        return <tuple>e
    if type(e) is list and len(<list>e) == 2:
        return ((<list>e)[0], (<list>e)[1])
    failed = False
    it = None
    try:
        it = iter(e)
    except TypeError:
        if not rsp_type_has_iter(e) and not PySequence_Check(e):
            failed = True
        else:
            raise
    if failed:
        name = (<bytes>rsp_type_name(e)).decode("utf-8", "replace")
        raise TypeError(f"cannot unpack non-iterable {name[:200]} object")
    a = next(it, _MISSING)
    if a is _MISSING:
        raise ValueError("not enough values to unpack (expected 2, got 0)")
    b = next(it, _MISSING)
    if b is _MISSING:
        raise ValueError("not enough values to unpack (expected 2, got 1)")
    if next(it, _MISSING) is not _MISSING:
        raise ValueError("too many values to unpack (expected 2)")
    return (a, b)


# --------------------------------------------------------------------------
# IP addresses: the twin's own text forms (RFC 5952 for IPv6), not inet_ntop

cdef inline int _put_dec(char* out, unsigned int v) noexcept nogil:
    if v >= 100:
        out[0] = <char>(48 + v // 100)
        out[1] = <char>(48 + (v // 10) % 10)
        out[2] = <char>(48 + v % 10)
        return 3
    if v >= 10:
        out[0] = <char>(48 + v // 10)
        out[1] = <char>(48 + v % 10)
        return 2
    out[0] = <char>(48 + v)
    return 1


cdef inline int _put_hex(char* out, unsigned int v) noexcept nogil:
    cdef int k = 0
    cdef int shift = 12
    cdef unsigned int d
    cdef bint started = False
    while shift >= 0:
        d = (v >> shift) & 0xF
        if d or started or shift == 0:
            out[k] = <char>(48 + d if d < 10 else 87 + d)
            k += 1
            started = True
        shift -= 4
    return k


cdef str _fmt4(cbuf b):
    cdef char out[16]
    cdef int k = _put_dec(out, b[0])
    out[k] = 46
    k += 1
    k += _put_dec(out + k, b[1])
    out[k] = 46
    k += 1
    k += _put_dec(out + k, b[2])
    out[k] = 46
    k += 1
    k += _put_dec(out + k, b[3])
    return PyUnicode_DecodeASCII(out, k, NULL)


cdef str _fmt6_words(unsigned int* words):
    cdef char out[48]
    cdef int k = 0, i = 0, j
    cdef int best_start = -1, best_len = 0
    while i < 8:
        if words[i] == 0:
            j = i
            while j < 8 and words[j] == 0:
                j += 1
            if j - i > best_len:
                best_start = i
                best_len = j - i
            i = j
        else:
            i += 1
    if best_len < 2:
        for i in range(8):
            if i:
                out[k] = 58
                k += 1
            k += _put_hex(out + k, words[i])
    else:
        for i in range(best_start):
            if i:
                out[k] = 58
                k += 1
            k += _put_hex(out + k, words[i])
        out[k] = 58
        out[k + 1] = 58
        k += 2
        for i in range(best_start + best_len, 8):
            if i > best_start + best_len:
                out[k] = 58
                k += 1
            k += _put_hex(out + k, words[i])
    return PyUnicode_DecodeASCII(out, k, NULL)


cdef str _fmt6(cbuf b):
    cdef unsigned int words[8]
    cdef int i
    for i in range(8):
        words[i] = _u16(b, 2 * i)
    return _fmt6_words(words)


def format_address(packed):
    """Text form of a packed 4- or 16-byte address, as the decoder produces it."""
    cdef Py_ssize_t n
    cdef cbuf p
    cdef unsigned int words[8]
    cdef int i
    if type(packed) is bytes:
        n = PyBytes_GET_SIZE(packed)
        p = <cbuf>PyBytes_AS_STRING(packed)
    elif type(packed) is bytearray:
        n = PyByteArray_GET_SIZE(packed)
        p = <cbuf>PyByteArray_AS_STRING(packed)
    else:
        # anything else goes the generic (twin's) way
        n = len(packed)
        if n == 4:
            return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"
        if n == 16:
            w = _struct.unpack("!8H", packed)
            for i in range(8):
                words[i] = w[i]
            return _fmt6_words(words)
        raise ValueError("an address is 4 or 16 bytes")
    if n == 4:
        return _fmt4(p)
    if n == 16:
        return _fmt6(p)
    raise ValueError("an address is 4 or 16 bytes")


cdef tuple _pack_address_slow(object text):
    """(parameter type, packed bytes) exactly as the twin computes them."""
    if not isinstance(text, str) or "%" in text or "/" in text:
        raise EncodeError(f"not an IP address: {text!r}")
    failed = False
    try:
        if ":" in text:
            return (PT_IPV6, _ipaddress.IPv6Address(text).packed)
        return (PT_IPV4, _ipaddress.IPv4Address(text).packed)
    except ValueError:
        failed = True
    if failed:
        raise EncodeError(f"not an IP address: {text!r}")


# --------------------------------------------------------------------------
# the record base: immutable, compared and hashed by value

cdef class _Record:
    """Base of every message and parameter class: immutable, equal by value."""

    _fields = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is immutable")

    cdef tuple _vals(self):
        return ()

    def _values(self):
        return tuple([getattr(self, f) for f in self._fields])

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._vals() == (<_Record>other)._vals()

    def __ne__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return not (self._vals() == (<_Record>other)._vals())

    def __hash__(self):
        return hash((type(self).__name__, self._vals()))

    def __repr__(self):
        inner = ", ".join([f"{f}={getattr(self, f)!r}" for f in self._fields])
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes):
        """A copy with some fields changed."""
        kwargs = {f: getattr(self, f) for f in self._fields}
        for key in changes:
            if key not in kwargs:
                raise TypeError(f"{type(self).__name__} has no field {key!r}")
        kwargs.update(changes)
        return type(self)(**kwargs)

    def to_dict(self):
        """Plain data (dicts, lists, ints, bytes, str, bool, None): the same in
        both implementations."""
        out = {"kind": type(self).__name__}
        for f in self._fields:
            out[f] = _plain(getattr(self, f))
        return out


cdef object _plain(object value):
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in <tuple>value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    return value


# --------------------------------------------------------------------------
# parameters

cdef class SctpTransport(_Record):
    """SctpTransport(port, addresses, transport_use=TransportUse.DATA_ONLY)
--

SCTP transport parameter (0x0004): port, transport use, 1..n addresses."""

    cdef readonly object port
    cdef readonly object addresses
    cdef readonly object transport_use

    _fields = ("port", "addresses", "transport_use")
    PARAM_TYPE = ParamType.SCTP_TRANSPORT

    def __init__(self, port, addresses, transport_use=TransportUse.DATA_ONLY):
        self.port = PyNumber_Index(port)
        self.addresses = tuple(addresses)
        self.transport_use = _enum_get(_ENUM_USE, PyNumber_Index(transport_use))

    cdef tuple _vals(self):
        return (self.port, self.addresses, self.transport_use)


cdef class TcpTransport(_Record):
    """TcpTransport(port, addresses, transport_use=TransportUse.DATA_ONLY)
--

TCP transport parameter (0x0005): port, transport use, one address."""

    cdef readonly object port
    cdef readonly object addresses
    cdef readonly object transport_use

    _fields = ("port", "addresses", "transport_use")
    PARAM_TYPE = ParamType.TCP_TRANSPORT

    def __init__(self, port, addresses, transport_use=TransportUse.DATA_ONLY):
        self.port = PyNumber_Index(port)
        self.addresses = tuple(addresses)
        self.transport_use = _enum_get(_ENUM_USE, PyNumber_Index(transport_use))

    cdef tuple _vals(self):
        return (self.port, self.addresses, self.transport_use)


cdef class UdpTransport(_Record):
    """UdpTransport(port, addresses)
--

UDP transport parameter (0x0006): port, one address."""

    cdef readonly object port
    cdef readonly object addresses

    _fields = ("port", "addresses")
    PARAM_TYPE = ParamType.UDP_TRANSPORT

    def __init__(self, port, addresses):
        self.port = PyNumber_Index(port)
        self.addresses = tuple(addresses)

    cdef tuple _vals(self):
        return (self.port, self.addresses)


cdef class UdpLiteTransport(_Record):
    """UdpLiteTransport(port, addresses)
--

UDP-Lite transport parameter (0x0007): port, one address."""

    cdef readonly object port
    cdef readonly object addresses

    _fields = ("port", "addresses")
    PARAM_TYPE = ParamType.UDP_LITE_TRANSPORT

    def __init__(self, port, addresses):
        self.port = PyNumber_Index(port)
        self.addresses = tuple(addresses)

    cdef tuple _vals(self):
        return (self.port, self.addresses)


cdef class DccpTransport(_Record):
    """DccpTransport(port, addresses, service_code=0)
--

DCCP transport parameter (0x0003): port, service code, one address."""

    cdef readonly object port
    cdef readonly object addresses
    cdef readonly object service_code

    _fields = ("port", "addresses", "service_code")
    PARAM_TYPE = ParamType.DCCP_TRANSPORT

    def __init__(self, port, addresses, service_code=0):
        self.port = PyNumber_Index(port)
        self.addresses = tuple(addresses)
        self.service_code = PyNumber_Index(service_code)

    cdef tuple _vals(self):
        return (self.port, self.addresses, self.service_code)


cdef class PoolPolicy(_Record):
    """PoolPolicy(policy_type, values=())
--

Pool member selection policy parameter (0x0008).

    ``policy_type`` is a :class:`~rserpool.constants.PolicyType` when known (a
    plain int otherwise) and ``values`` the 32-bit words that follow it.  Named
    accessors (``weight``, ``load``, ``load_degradation``, ``priority``,
    ``load_dpf``, ``weight_dpf``, ``distance``) read the word the policy's
    layout gives that name (``constants.POLICY_VALUE_NAMES``); a name the
    policy does not have reads as None.
    """

    cdef readonly object policy_type
    cdef readonly object values

    _fields = ("policy_type", "values")
    PARAM_TYPE = ParamType.POOL_MEMBER_SELECTION_POLICY

    def __init__(self, policy_type, values=()):
        pt = PyNumber_Index(policy_type)
        self.policy_type = _enum_get(_ENUM_POLICY, pt)
        self.values = tuple([PyNumber_Index(v) for v in values])

    cdef tuple _vals(self):
        return (self.policy_type, self.values)

    def _named(self, name):
        names = POLICY_VALUE_NAMES.get(self.policy_type, ())
        try:
            return self.values[names.index(name)]
        except (ValueError, IndexError):
            return None

    @property
    def weight(self):
        return self._named("weight")

    @property
    def priority(self):
        return self._named("priority")

    @property
    def load(self):
        return self._named("load")

    @property
    def load_degradation(self):
        return self._named("load_degradation")

    @property
    def load_dpf(self):
        return self._named("load_dpf")

    @property
    def weight_dpf(self):
        return self._named("weight_dpf")

    @property
    def distance(self):
        return self._named("distance")


cdef class PoolElement(_Record):
    """PoolElement(identifier, home_registrar, registration_life, user_transport, policy, \
asap_transport=None)
--

Pool Element parameter (0x000a).

    ``registration_life`` is in milliseconds (signed 32 bits);
    ``asap_transport`` is the PE's ASAP endpoint as its home registrar sees it
    (present in ENRP, absent in ASAP): an SctpTransport (RFC 5354), or a
    TcpTransport for a PE that reaches its registrar over TCP (rserpool).
    """

    cdef readonly object identifier
    cdef readonly object home_registrar
    cdef readonly object registration_life
    cdef readonly object user_transport
    cdef readonly object policy
    cdef readonly object asap_transport

    _fields = ("identifier", "home_registrar", "registration_life",
               "user_transport", "policy", "asap_transport")
    PARAM_TYPE = ParamType.POOL_ELEMENT

    def __init__(self, identifier, home_registrar, registration_life, user_transport,
                 policy, asap_transport=None):
        self.identifier = PyNumber_Index(identifier)
        self.home_registrar = PyNumber_Index(home_registrar)
        self.registration_life = PyNumber_Index(registration_life)
        self.user_transport = user_transport
        self.policy = policy
        self.asap_transport = asap_transport

    cdef tuple _vals(self):
        return (self.identifier, self.home_registrar, self.registration_life,
                self.user_transport, self.policy, self.asap_transport)


cdef class ServerInformation(_Record):
    """ServerInformation(server_id, transport)
--

Server Information parameter (0x000b): a registrar's ID and its ENRP
    endpoint (an SCTP transport parameter)."""

    cdef readonly object server_id
    cdef readonly object transport

    _fields = ("server_id", "transport")
    PARAM_TYPE = ParamType.SERVER_INFORMATION

    def __init__(self, server_id, transport):
        self.server_id = PyNumber_Index(server_id)
        self.transport = transport

    cdef tuple _vals(self):
        return (self.server_id, self.transport)


cdef class Cause(_Record):
    """Cause(code, info=b'')
--

One error cause inside an Operation Error parameter (0x000c).

    ``code`` is an :class:`~rserpool.constants.ErrorCause` when known, else
    a plain int; ``info`` the cause-specific bytes."""

    cdef readonly object code
    cdef readonly object info

    _fields = ("code", "info")

    def __init__(self, code, info=b""):
        c = PyNumber_Index(code)
        self.code = _enum_get(_ENUM_CAUSE, c)
        self.info = _as_bytes(info, "cause info")

    cdef tuple _vals(self):
        return (self.code, self.info)


cdef class UnknownParameter(_Record):
    """UnknownParameter(param_type, value=b'')
--

A parameter of a type this codec does not know whose action bits say
    *skip*.  ``report`` tells whether the sender wants it reported."""

    cdef readonly object param_type
    cdef readonly object value

    _fields = ("param_type", "value")

    def __init__(self, param_type, value=b""):
        self.param_type = PyNumber_Index(param_type)
        self.value = _as_bytes(value, "parameter value")

    cdef tuple _vals(self):
        return (self.param_type, self.value)

    @property
    def report(self):
        return bool(self.param_type & 0x4000)


# --------------------------------------------------------------------------
# messages

cdef class Message(_Record):
    """Message()
--

Base of all ASAP and ENRP messages.

    ``unknown`` holds the top-level parameters of unknown type whose action
    bits said *skip* (in order); the encoder writes them after the known
    parameters.  Unknown parameters nested inside other parameters are dropped.
    """

    PROTOCOL = ""
    TYPE = 0


cdef class Registration(Message):
    """Registration(pool_handle, pool_element, *, unknown=())
--

ASAP Registration (0x01): a PE registers or re-registers."""

    cdef readonly object pool_handle
    cdef readonly object pool_element
    cdef readonly object unknown

    _fields = ("pool_handle", "pool_element", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.REGISTRATION

    def __init__(self, pool_handle, pool_element, *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.pool_element = pool_element
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.pool_element, self.unknown)


cdef class Deregistration(Message):
    """Deregistration(pool_handle, identifier, *, unknown=())
--

ASAP Deregistration (0x02)."""

    cdef readonly object pool_handle
    cdef readonly object identifier
    cdef readonly object unknown

    _fields = ("pool_handle", "identifier", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.DEREGISTRATION

    def __init__(self, pool_handle, identifier, *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.identifier = PyNumber_Index(identifier)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.identifier, self.unknown)


cdef class RegistrationResponse(Message):
    """RegistrationResponse(pool_handle, identifier, error=None, rejected=None, *, unknown=())
--

ASAP Registration Response (0x03).  ``rejected`` is the R flag; it
    defaults to whether ``error`` (a tuple of :class:`Cause`) is given."""

    cdef readonly object pool_handle
    cdef readonly object identifier
    cdef readonly object error
    cdef readonly object rejected
    cdef readonly object unknown

    _fields = ("pool_handle", "identifier", "error", "rejected", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.REGISTRATION_RESPONSE

    def __init__(self, pool_handle, identifier, error=None, rejected=None, *, unknown=()):
        err = _opt_causes(error)
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.identifier = PyNumber_Index(identifier)
        self.error = err
        self.rejected = (err is not None) if rejected is None else bool(rejected)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.identifier, self.error, self.rejected, self.unknown)


cdef class DeregistrationResponse(Message):
    """DeregistrationResponse(pool_handle, identifier, error=None, *, unknown=())
--

ASAP Deregistration Response (0x04)."""

    cdef readonly object pool_handle
    cdef readonly object identifier
    cdef readonly object error
    cdef readonly object unknown

    _fields = ("pool_handle", "identifier", "error", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.DEREGISTRATION_RESPONSE

    def __init__(self, pool_handle, identifier, error=None, *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.identifier = PyNumber_Index(identifier)
        self.error = _opt_causes(error)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.identifier, self.error, self.unknown)


cdef class HandleResolution(Message):
    """HandleResolution(pool_handle, items=None, *, unknown=())
--

ASAP Handle Resolution (0x05).  ``items`` is the handle resolution
    option (0x803f): how many PEs are wanted (None: option absent)."""

    cdef readonly object pool_handle
    cdef readonly object items
    cdef readonly object unknown

    _fields = ("pool_handle", "items", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.HANDLE_RESOLUTION

    def __init__(self, pool_handle, items=None, *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.items = _as_opt_int(items)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.items, self.unknown)


cdef class HandleResolutionResponse(Message):
    """HandleResolutionResponse(pool_handle, policy=None, pool_elements=(), error=None, *, \
unknown=())
--

ASAP Handle Resolution Response (0x06): either ``error`` or the pool's
    ``policy`` followed by 0..n ``pool_elements``."""

    cdef readonly object pool_handle
    cdef readonly object policy
    cdef readonly object pool_elements
    cdef readonly object error
    cdef readonly object unknown

    _fields = ("pool_handle", "policy", "pool_elements", "error", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.HANDLE_RESOLUTION_RESPONSE

    def __init__(self, pool_handle, policy=None, pool_elements=(), error=None, *,
                 unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.policy = policy
        self.pool_elements = tuple(pool_elements)
        self.error = _opt_causes(error)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.policy, self.pool_elements, self.error, self.unknown)


cdef class EndpointKeepAlive(Message):
    """EndpointKeepAlive(server_id, pool_handle, identifier=None, home=False, *, unknown=())
--

ASAP Endpoint Keep-Alive (0x07).  ``home`` is the H flag;
    ``identifier`` is RSPLIB's PE Identifier parameter (None: absent)."""

    cdef readonly object server_id
    cdef readonly object pool_handle
    cdef readonly object identifier
    cdef readonly object home
    cdef readonly object unknown

    _fields = ("server_id", "pool_handle", "identifier", "home", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.ENDPOINT_KEEP_ALIVE

    def __init__(self, server_id, pool_handle, identifier=None, home=False, *, unknown=()):
        self.server_id = PyNumber_Index(server_id)
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.identifier = _as_opt_int(identifier)
        self.home = bool(home)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.server_id, self.pool_handle, self.identifier, self.home, self.unknown)


cdef class EndpointKeepAliveAck(Message):
    """EndpointKeepAliveAck(pool_handle, identifier, *, unknown=())
--

ASAP Endpoint Keep-Alive Ack (0x08)."""

    cdef readonly object pool_handle
    cdef readonly object identifier
    cdef readonly object unknown

    _fields = ("pool_handle", "identifier", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.ENDPOINT_KEEP_ALIVE_ACK

    def __init__(self, pool_handle, identifier, *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.identifier = PyNumber_Index(identifier)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.identifier, self.unknown)


cdef class EndpointUnreachable(Message):
    """EndpointUnreachable(pool_handle, identifier, *, unknown=())
--

ASAP Endpoint Unreachable (0x09)."""

    cdef readonly object pool_handle
    cdef readonly object identifier
    cdef readonly object unknown

    _fields = ("pool_handle", "identifier", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.ENDPOINT_UNREACHABLE

    def __init__(self, pool_handle, identifier, *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.identifier = PyNumber_Index(identifier)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.identifier, self.unknown)


cdef class ServerAnnounce(Message):
    """ServerAnnounce(server_id, transports=(), *, unknown=())
--

ASAP Server Announce (0x0a): a registrar's ID and 0..n transport
    parameters of its ASAP endpoint."""

    cdef readonly object server_id
    cdef readonly object transports
    cdef readonly object unknown

    _fields = ("server_id", "transports", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.SERVER_ANNOUNCE

    def __init__(self, server_id, transports=(), *, unknown=()):
        self.server_id = PyNumber_Index(server_id)
        self.transports = tuple(transports)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.server_id, self.transports, self.unknown)


cdef class Cookie(Message):
    """Cookie(cookie, *, unknown=())
--

ASAP Cookie (0x0b): opaque session state from a PE to its PU."""

    cdef readonly object cookie
    cdef readonly object unknown

    _fields = ("cookie", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.COOKIE

    def __init__(self, cookie, *, unknown=()):
        self.cookie = _as_bytes(cookie, "cookie")
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.cookie, self.unknown)


cdef class CookieEcho(Message):
    """CookieEcho(cookie, *, unknown=())
--

ASAP Cookie Echo (0x0c): the PU hands the cookie to a new PE."""

    cdef readonly object cookie
    cdef readonly object unknown

    _fields = ("cookie", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.COOKIE_ECHO

    def __init__(self, cookie, *, unknown=()):
        self.cookie = _as_bytes(cookie, "cookie")
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.cookie, self.unknown)


cdef class BusinessCard(Message):
    """BusinessCard(pool_handle, policy=None, pool_elements=(), *, unknown=())
--

ASAP Business Card (0x0d): pool handle, optional policy, pool elements."""

    cdef readonly object pool_handle
    cdef readonly object policy
    cdef readonly object pool_elements
    cdef readonly object unknown

    _fields = ("pool_handle", "policy", "pool_elements", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.BUSINESS_CARD

    def __init__(self, pool_handle, policy=None, pool_elements=(), *, unknown=()):
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.policy = policy
        self.pool_elements = tuple(pool_elements)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.pool_handle, self.policy, self.pool_elements, self.unknown)


cdef class AsapErrorMessage(Message):
    """AsapErrorMessage(causes, *, unknown=())
--

ASAP Error (0x0e): an Operation Error parameter."""

    cdef readonly object causes
    cdef readonly object unknown

    _fields = ("causes", "unknown")
    PROTOCOL = "asap"
    TYPE = AsapType.ERROR

    def __init__(self, causes, *, unknown=()):
        self.causes = tuple(causes)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.causes, self.unknown)


cdef class Presence(Message):
    """Presence(sender_id, receiver_id, checksum, server_info=None, reply_required=False, *, \
unknown=())
--

ENRP Presence (0x01).  ``reply_required`` is the R flag; ``checksum``
    the sender's ownership checksum; ``server_info`` its Server Information."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object checksum
    cdef readonly object server_info
    cdef readonly object reply_required
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "checksum", "server_info",
               "reply_required", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.PRESENCE

    def __init__(self, sender_id, receiver_id, checksum, server_info=None,
                 reply_required=False, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.checksum = PyNumber_Index(checksum)
        self.server_info = server_info
        self.reply_required = bool(reply_required)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.checksum, self.server_info,
                self.reply_required, self.unknown)


cdef class HandleTableRequest(Message):
    """HandleTableRequest(sender_id, receiver_id, own_children_only=False, *, unknown=())
--

ENRP Handle Table Request (0x02).  ``own_children_only`` is flag 0x01."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object own_children_only
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "own_children_only", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.HANDLE_TABLE_REQUEST

    def __init__(self, sender_id, receiver_id, own_children_only=False, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.own_children_only = bool(own_children_only)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.own_children_only, self.unknown)


cdef class HandleTableResponse(Message):
    """HandleTableResponse(sender_id, receiver_id, entries=(), more=False, rejected=False, *, \
unknown=())
--

ENRP Handle Table Response (0x03).  ``entries`` is a tuple of
    ``(pool_handle, (PoolElement, ...))`` pairs; ``more`` is the M flag,
    ``rejected`` the R flag."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object entries
    cdef readonly object more
    cdef readonly object rejected
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "entries", "more", "rejected", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.HANDLE_TABLE_RESPONSE

    def __init__(self, sender_id, receiver_id, entries=(), more=False, rejected=False, *,
                 unknown=()):
        ents = []
        for entry in entries:
            pair = _unpack2(entry)
            ents.append((_as_bytes(pair[0], "pool handle"), tuple(pair[1])))
        self.entries = tuple(ents)
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.more = bool(more)
        self.rejected = bool(rejected)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.entries, self.more, self.rejected,
                self.unknown)


cdef class HandleUpdate(Message):
    """HandleUpdate(sender_id, receiver_id, action, pool_handle, pool_element, \
takeover_suggested=False, *, unknown=())
--

ENRP Handle Update (0x04).  ``action`` is an
    :class:`~rserpool.constants.UpdateAction`; ``takeover_suggested`` the T flag."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object action
    cdef readonly object pool_handle
    cdef readonly object pool_element
    cdef readonly object takeover_suggested
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "action", "pool_handle", "pool_element",
               "takeover_suggested", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.HANDLE_UPDATE

    def __init__(self, sender_id, receiver_id, action, pool_handle, pool_element,
                 takeover_suggested=False, *, unknown=()):
        a = PyNumber_Index(action)
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.action = _enum_get(_ENUM_ACTION, a)
        self.pool_handle = _as_bytes(pool_handle, "pool handle")
        self.pool_element = pool_element
        self.takeover_suggested = bool(takeover_suggested)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.action, self.pool_handle,
                self.pool_element, self.takeover_suggested, self.unknown)


cdef class ListRequest(Message):
    """ListRequest(sender_id, receiver_id, *, unknown=())
--

ENRP List Request (0x05)."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.LIST_REQUEST

    def __init__(self, sender_id, receiver_id, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.unknown)


cdef class ListResponse(Message):
    """ListResponse(sender_id, receiver_id, servers=(), rejected=False, *, unknown=())
--

ENRP List Response (0x06): the sender's peers; ``rejected`` is R."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object servers
    cdef readonly object rejected
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "servers", "rejected", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.LIST_RESPONSE

    def __init__(self, sender_id, receiver_id, servers=(), rejected=False, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.servers = tuple(servers)
        self.rejected = bool(rejected)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.servers, self.rejected, self.unknown)


cdef class InitTakeover(Message):
    """InitTakeover(sender_id, receiver_id, target_id, *, unknown=())
--

ENRP Init Takeover (0x07) of the registrar ``target_id``."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object target_id
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "target_id", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.INIT_TAKEOVER

    def __init__(self, sender_id, receiver_id, target_id, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.target_id = PyNumber_Index(target_id)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.target_id, self.unknown)


cdef class InitTakeoverAck(Message):
    """InitTakeoverAck(sender_id, receiver_id, target_id, *, unknown=())
--

ENRP Init Takeover Ack (0x08)."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object target_id
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "target_id", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.INIT_TAKEOVER_ACK

    def __init__(self, sender_id, receiver_id, target_id, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.target_id = PyNumber_Index(target_id)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.target_id, self.unknown)


cdef class TakeoverServer(Message):
    """TakeoverServer(sender_id, receiver_id, target_id, *, unknown=())
--

ENRP Takeover Server (0x09)."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object target_id
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "target_id", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.TAKEOVER_SERVER

    def __init__(self, sender_id, receiver_id, target_id, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.target_id = PyNumber_Index(target_id)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.target_id, self.unknown)


cdef class EnrpErrorMessage(Message):
    """EnrpErrorMessage(sender_id, receiver_id, causes, *, unknown=())
--

ENRP Error (0x0a): an Operation Error parameter."""

    cdef readonly object sender_id
    cdef readonly object receiver_id
    cdef readonly object causes
    cdef readonly object unknown

    _fields = ("sender_id", "receiver_id", "causes", "unknown")
    PROTOCOL = "enrp"
    TYPE = EnrpType.ERROR

    def __init__(self, sender_id, receiver_id, causes, *, unknown=()):
        self.sender_id = PyNumber_Index(sender_id)
        self.receiver_id = PyNumber_Index(receiver_id)
        self.causes = tuple(causes)
        self.unknown = tuple(unknown)

    cdef tuple _vals(self):
        return (self.sender_id, self.receiver_id, self.causes, self.unknown)


# ==========================================================================
# decoding

cdef struct Item:
    Py_ssize_t pos
    Py_ssize_t plen
    unsigned int ptype


cdef Py_ssize_t _frame(bytes data, cbuf p, Py_ssize_t pos, Py_ssize_t end,
                       Py_ssize_t* n_unknown) except -1:
    """Check the framing of ``data[pos:end]``; return the number of known
    parameters (skipped unknown ones are counted in ``n_unknown``).  Unknown
    types whose action bits say stop raise UnknownParameterError."""
    cdef Py_ssize_t left
    cdef Py_ssize_t count = 0, nunk = 0
    cdef unsigned int ptype, plen
    while pos < end:
        left = end - pos
        if left < 4:
            raise LengthError(f"{left} byte(s) left, too short for a parameter header", pos)
        ptype = _u16(p, pos)
        plen = _u16(p, pos + 2)
        if plen < 4:
            raise LengthError(f"parameter length {plen} is below 4", pos + 2)
        if plen > left:
            raise LengthError(
                f"parameter length {plen} overruns its container ({left} bytes left)", pos + 2)
        if _known(ptype):
            count += 1
        elif not (ptype & 0x8000):
            raise UnknownParameterError(
                f"unknown parameter type 0x{ptype:04x} (action: stop"
                f"{', report' if ptype & 0x4000 else ''})",
                pos, ptype, bool(ptype & 0x4000), data[pos:pos + plen])
        else:
            nunk += 1
        pos += (plen + 3) & ~(<Py_ssize_t>3)
        if pos > end:
            pos = end
    if n_unknown != NULL:
        n_unknown[0] = nunk
    return count


cdef inline bint _next_known(cbuf p, Py_ssize_t* pos, Py_ssize_t end, Item* it) noexcept nogil:
    """Step to the next known parameter of an already framed container."""
    cdef unsigned int ptype, plen
    cdef Py_ssize_t at
    while pos[0] < end:
        at = pos[0]
        ptype = _u16(p, at)
        plen = _u16(p, at + 2)
        at += (plen + 3) & ~(<Py_ssize_t>3)
        if at > end:
            at = end
        it.pos = pos[0]
        it.plen = plen
        it.ptype = ptype
        pos[0] = at
        if _known(ptype):
            return True
    return False


cdef tuple _collect_unknown(bytes data, cbuf p, Py_ssize_t pos, Py_ssize_t end,
                            Py_ssize_t count):
    """The skipped unknown parameters of an already framed container."""
    cdef tuple out = PyTuple_New(count)
    cdef Py_ssize_t i = 0
    cdef unsigned int ptype, plen
    cdef UnknownParameter u
    while pos < end and i < count:
        ptype = _u16(p, pos)
        plen = _u16(p, pos + 2)
        if not _known(ptype):
            u = UnknownParameter.__new__(UnknownParameter)
            u.param_type = ptype
            u.value = PyBytes_FromStringAndSize(<const char*>p + pos + 4, plen - 4)
            Py_INCREF(u)
            PyTuple_SET_ITEM(out, i, u)
            i += 1
        pos += (plen + 3) & ~(<Py_ssize_t>3)
        if pos > end:
            pos = end
    return out


cdef inline object _slice(cbuf p, Py_ssize_t start, Py_ssize_t stop):
    return PyBytes_FromStringAndSize(<const char*>p + start, stop - start)


cdef object _unexpected(Item* it, str where):
    return MalformedError(f"unexpected {_pname(it.ptype)} parameter in {where}", it.pos)


cdef str _dec_address(cbuf p, Item* it):
    if it.ptype == PT_IPV4:
        if it.plen != 8:
            raise LengthError(f"IPv4 address parameter length must be 8, not {it.plen}",
                              it.pos + 2)
        return _fmt4(p + it.pos + 4)
    if it.plen != 20:
        raise LengthError(f"IPv6 address parameter length must be 20, not {it.plen}",
                          it.pos + 2)
    return _fmt6(p + it.pos + 4)


cdef object _dec_transport(bytes data, cbuf p, Item* item):
    cdef unsigned int ptype = item.ptype
    cdef Py_ssize_t pos = item.pos, plen = item.plen
    cdef Py_ssize_t head = 12 if ptype == PT_DCCP else 8
    cdef Py_ssize_t end = pos + plen
    cdef Py_ssize_t count, scan, i = 0
    cdef Item sub
    cdef tuple addrs
    cdef str a
    if plen < head:
        raise LengthError(f"{_pname(ptype)} parameter length {plen} is below {head}", pos + 2)
    count = _frame(data, p, pos + head, end, NULL)
    addrs = PyTuple_New(count)
    scan = pos + head
    while _next_known(p, &scan, end, &sub):
        if sub.ptype != PT_IPV4 and sub.ptype != PT_IPV6:
            raise _unexpected(&sub, "a transport parameter")
        a = _dec_address(p, &sub)
        Py_INCREF(a)
        PyTuple_SET_ITEM(addrs, i, a)
        i += 1
    cdef SctpTransport st
    cdef TcpTransport tt
    cdef UdpTransport ut
    cdef UdpLiteTransport lt
    cdef DccpTransport dt
    if ptype == PT_SCTP:
        if count == 0:
            raise MalformedError("SCTP transport parameter without an address", pos)
        st = SctpTransport.__new__(SctpTransport)
        st.port = _u16(p, pos + 4)
        st.addresses = addrs
        st.transport_use = _enum_get(_ENUM_USE, _u16(p, pos + 6))
        return st
    if count != 1:
        raise MalformedError(
            f"{_pname(ptype)} parameter needs exactly one address, not {count}", pos)
    if ptype == PT_TCP:
        tt = TcpTransport.__new__(TcpTransport)
        tt.port = _u16(p, pos + 4)
        tt.addresses = addrs
        tt.transport_use = _enum_get(_ENUM_USE, _u16(p, pos + 6))
        return tt
    if ptype == PT_UDP:
        ut = UdpTransport.__new__(UdpTransport)
        ut.port = _u16(p, pos + 4)
        ut.addresses = addrs
        return ut
    if ptype == PT_UDPLITE:
        lt = UdpLiteTransport.__new__(UdpLiteTransport)
        lt.port = _u16(p, pos + 4)
        lt.addresses = addrs
        return lt
    dt = DccpTransport.__new__(DccpTransport)
    dt.port = _u16(p, pos + 4)
    dt.addresses = addrs
    dt.service_code = _u32(p, pos + 8)
    return dt


cdef PoolPolicy _dec_policy(cbuf p, Item* item):
    cdef Py_ssize_t pos = item.pos, plen = item.plen
    cdef Py_ssize_t count, i
    cdef uint32_t ptype
    cdef tuple values
    cdef PyObject* needed
    cdef PoolPolicy pol
    cdef object key, v
    if plen < 8:
        raise LengthError(f"policy parameter length {plen} is below 8", pos + 2)
    if plen & 3:
        raise LengthError(f"policy parameter length {plen} is not 8 plus a multiple of 4",
                          pos + 2)
    ptype = _u32(p, pos + 4)
    count = (plen - 8) >> 2
    key = ptype
    needed = PyDict_GetItem(_POLICY_NEEDED, key)
    if needed != NULL and count < <Py_ssize_t>(<object>needed):
        raise MalformedError(
            f"policy 0x{ptype:08x} needs {<object>needed} value(s), has {count}", pos)
    values = PyTuple_New(count)
    for i in range(count):
        v = _u32(p, pos + 8 + 4 * i)
        Py_INCREF(v)
        PyTuple_SET_ITEM(values, i, v)
    pol = PoolPolicy.__new__(PoolPolicy)
    pol.policy_type = _enum_get(_ENUM_POLICY, key)
    pol.values = values
    return pol


cdef PoolElement _dec_pool_element(bytes data, cbuf p, Item* item):
    cdef Py_ssize_t pos = item.pos, plen = item.plen
    cdef Py_ssize_t end = pos + plen
    cdef Py_ssize_t scan
    cdef Item s
    cdef PoolElement pe
    if plen < 16:
        raise LengthError(f"pool element parameter length {plen} is below 16", pos + 2)
    _frame(data, p, pos + 16, end, NULL)
    scan = pos + 16
    if not _next_known(p, &scan, end, &s):
        raise MalformedError("pool element parameter needs a user transport parameter", end)
    if not _is_transport(s.ptype):
        raise MalformedError("pool element parameter needs a user transport parameter", s.pos)
    user = _dec_transport(data, p, &s)
    if not _next_known(p, &scan, end, &s):
        raise MalformedError("pool element parameter needs a policy parameter", end)
    if s.ptype != PT_POLICY:
        raise MalformedError("pool element parameter needs a policy parameter", s.pos)
    policy = _dec_policy(p, &s)
    asap = None
    if _next_known(p, &scan, end, &s):
        if s.ptype != PT_SCTP and s.ptype != PT_TCP:
            raise _unexpected(&s, "a pool element parameter")
        asap = _dec_transport(data, p, &s)
        if _next_known(p, &scan, end, &s):
            raise _unexpected(&s, "a pool element parameter")
    pe = PoolElement.__new__(PoolElement)
    pe.identifier = _u32(p, pos + 4)
    pe.home_registrar = _u32(p, pos + 8)
    pe.registration_life = <int32_t>_u32(p, pos + 12)
    pe.user_transport = user
    pe.policy = policy
    pe.asap_transport = asap
    return pe


cdef ServerInformation _dec_server_info(bytes data, cbuf p, Item* item):
    cdef Py_ssize_t pos = item.pos, plen = item.plen
    cdef Py_ssize_t end = pos + plen
    cdef Py_ssize_t scan
    cdef Item s
    cdef ServerInformation si
    if plen < 8:
        raise LengthError(f"server information parameter length {plen} is below 8", pos + 2)
    _frame(data, p, pos + 8, end, NULL)
    scan = pos + 8
    if not _next_known(p, &scan, end, &s):
        raise MalformedError(
            "server information parameter needs an SCTP transport parameter", end)
    if s.ptype != PT_SCTP:
        raise MalformedError(
            "server information parameter needs an SCTP transport parameter", s.pos)
    transport = _dec_transport(data, p, &s)
    if _next_known(p, &scan, end, &s):
        raise _unexpected(&s, "a server information parameter")
    si = ServerInformation.__new__(ServerInformation)
    si.server_id = _u32(p, pos + 4)
    si.transport = transport
    return si


cdef tuple _dec_operation_error(cbuf p, Item* item):
    cdef Py_ssize_t pos = item.pos + 4
    cdef Py_ssize_t end = item.pos + item.plen
    cdef Py_ssize_t left
    cdef unsigned int code, clen
    cdef Cause c
    cdef list causes = []
    while pos < end:
        left = end - pos
        if left < 4:
            raise LengthError(f"{left} byte(s) left, too short for an error cause header", pos)
        code = _u16(p, pos)
        clen = _u16(p, pos + 2)
        if clen < 4:
            raise LengthError(f"error cause length {clen} is below 4", pos + 2)
        if clen > left:
            raise LengthError(
                f"error cause length {clen} overruns its parameter ({left} bytes left)",
                pos + 2)
        c = Cause.__new__(Cause)
        c.code = _enum_get(_ENUM_CAUSE, code)
        c.info = _slice(p, pos + 4, pos + clen)
        causes.append(c)
        pos += (clen + 3) & ~(<Py_ssize_t>3)
        if pos > end:
            pos = end
    return tuple(causes)


cdef object _dec_u32_param(cbuf p, Item* item, str what):
    if item.plen != 8:
        raise LengthError(f"{what} parameter length must be 8, not {item.plen}", item.pos + 2)
    return _u32(p, item.pos + 4)


cdef object _decode_any(bytes data, cbuf p, Item* item):
    """Decode one parameter of any known type."""
    cdef unsigned int t = item.ptype
    if _is_transport(t):
        return _dec_transport(data, p, item)
    if t == PT_IPV4 or t == PT_IPV6:
        return _dec_address(p, item)
    if t == PT_POLICY:
        return _dec_policy(p, item)
    if t == PT_PE:
        return _dec_pool_element(data, p, item)
    if t == PT_SI:
        return _dec_server_info(data, p, item)
    if t == PT_OPERR:
        return _dec_operation_error(p, item)
    if t == PT_PEID:
        return _dec_u32_param(p, item, "PE identifier")
    if t == PT_CHECKSUM:
        if item.plen != 6:
            raise LengthError(f"PE checksum parameter length must be 6, not {item.plen}",
                              item.pos + 2)
        return _u16(p, item.pos + 4)
    if t == PT_HRO:
        return _dec_u32_param(p, item, "handle resolution option")
    return _slice(p, item.pos + 4, item.pos + item.plen)  # pool handle, cookie


# ---- the known top-level parameters of a message, consumed in order

cdef struct Body:
    Py_ssize_t scan     # where the parameter after ``cur`` starts
    Py_ssize_t end      # the message length
    Item cur            # the next parameter (when ``has``)
    bint has


cdef inline void _b_next(cbuf p, Body* b) noexcept nogil:
    b.has = _next_known(p, &b.scan, b.end, &b.cur)


cdef inline int _b_peek(Body* b) noexcept nogil:
    return <int>b.cur.ptype if b.has else -1


cdef object _b_take(bytes data, cbuf p, Body* b, unsigned int ptype, str what, str where):
    cdef Item it
    if not b.has:
        raise MalformedError(f"{where} message lacks its {what} parameter", b.end)
    if b.cur.ptype != ptype:
        raise MalformedError(
            f"{where} message: expected {what} parameter, found {_pname(b.cur.ptype)}",
            b.cur.pos)
    it = b.cur
    _b_next(p, b)
    return _decode_any(data, p, &it)


cdef inline object _b_optional(bytes data, cbuf p, Body* b, unsigned int ptype):
    cdef Item it
    if not b.has or b.cur.ptype != ptype:
        return None
    it = b.cur
    _b_next(p, b)
    return _decode_any(data, p, &it)


cdef inline int _b_done(Body* b, str where) except -1:
    if b.has:
        raise _unexpected(&b.cur, f"a {where} message")
    return 0


cdef bytes _b_ph(bytes data, cbuf p, Body* b, str where):
    """Take the pool handle parameter (the common first parameter)."""
    cdef Item it
    if b.has and b.cur.ptype == PT_PH:
        it = b.cur
        _b_next(p, b)
        return _slice(p, it.pos + 4, it.pos + it.plen)
    return _b_take(data, p, b, PT_PH, "pool handle", where)


cdef object _b_peid(bytes data, cbuf p, Body* b, str where):
    return _b_take(data, p, b, PT_PEID, "PE identifier", where)


cdef tuple _b_pool_elements(bytes data, cbuf p, Body* b, str where):
    cdef list pes = []
    while b.has and b.cur.ptype == PT_PE:
        pes.append(_b_take(data, p, b, PT_PE, "pool element", where))
    return tuple(pes)


# ---- message header

cdef Py_ssize_t _check_frame(cbuf p, Py_ssize_t n) except -1:
    """Check the header against the data; return the message length."""
    cdef Py_ssize_t length, pad_end, i
    if n > 65535:
        raise OversizeError(f"{n} bytes is more than a message can hold (65535)", 65535)
    if n < 4:
        raise TruncatedError(f"a message header needs 4 bytes, got {n}", n)
    length = _u16(p, 2)
    if length < 4:
        raise LengthError(f"message length {length} is below the 4-byte header", 2)
    if length > n:
        raise TruncatedError(f"message length {length} exceeds the {n} bytes received", n)
    if n > length:
        pad_end = (length + 3) & ~(<Py_ssize_t>3)
        if n > pad_end:
            raise TrailingBytesError(f"{n - length} byte(s) after the end of the message",
                                     length)
        for i in range(length, n):
            if p[i]:
                raise TrailingBytesError("non-zero bytes after the end of the message", length)
    return length


cdef tuple _ASAP_NAMES = (
    None, "Registration", "Deregistration", "Registration Response",
    "Deregistration Response", "Handle Resolution", "Handle Resolution Response",
    "Endpoint Keep-Alive", "Endpoint Keep-Alive Ack", "Endpoint Unreachable",
    "Server Announce", "Cookie", "Cookie Echo", "Business Card", "ASAP Error")
cdef int _ASAP_FIXED[15]
_ASAP_FIXED[:] = [-1, 4, 4, 4, 4, 4, 4, 8, 4, 4, 8, 4, 4, 4, 4]
cdef tuple _ENRP_NAMES = (
    None, "Presence", "Handle Table Request", "Handle Table Response", "Handle Update",
    "List Request", "List Response", "Init Takeover", "Init Takeover Ack",
    "Takeover Server", "ENRP Error")
cdef int _ENRP_FIXED[11]
_ENRP_FIXED[:] = [-1, 12, 12, 12, 16, 12, 12, 16, 16, 16, 12]


cdef object _decode(bytes data, bint enrp):
    cdef cbuf p = <cbuf>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t length = _check_frame(p, n)
    cdef unsigned int mtype = p[0]
    cdef unsigned int flags = p[1]
    cdef int fixed
    cdef str name
    cdef Py_ssize_t nunk = 0
    cdef Body b
    if enrp:
        if mtype < 1 or mtype > 10:
            raise UnknownMessageError(f"unknown ENRP message type 0x{mtype:02x}", 0, mtype)
        name = _ENRP_NAMES[mtype]
        fixed = _ENRP_FIXED[mtype]
    else:
        if mtype < 1 or mtype > 14:
            raise UnknownMessageError(f"unknown ASAP message type 0x{mtype:02x}", 0, mtype)
        name = _ASAP_NAMES[mtype]
        fixed = _ASAP_FIXED[mtype]
    if length < fixed:
        raise LengthError(f"{name} message length {length} is below its fixed part of "
                          f"{fixed} bytes", 2)
    _frame(data, p, fixed, length, &nunk)
    unknown = _collect_unknown(data, p, fixed, length, nunk) if nunk else _EMPTY
    b.scan = fixed
    b.end = length
    _b_next(p, &b)
    if enrp:
        return _decode_enrp(data, p, &b, mtype, flags, unknown, name)
    return _decode_asap(data, p, &b, mtype, flags, unknown, name)


cdef object _decode_asap(bytes data, cbuf p, Body* b, unsigned int mtype, unsigned int flags,
                         object unknown, str name):
    cdef Registration reg
    cdef Deregistration dereg
    cdef RegistrationResponse rr
    cdef DeregistrationResponse dr
    cdef HandleResolution hr
    cdef HandleResolutionResponse hrr
    cdef EndpointKeepAlive ka
    cdef EndpointKeepAliveAck kaa
    cdef EndpointUnreachable eu
    cdef ServerAnnounce sa
    cdef Cookie ck
    cdef CookieEcho ce
    cdef BusinessCard bc
    cdef AsapErrorMessage ae
    cdef list transports
    if mtype == 0x01:
        ph = _b_ph(data, p, b, name)
        pe = _b_take(data, p, b, PT_PE, "pool element", name)
        _b_done(b, name)
        reg = Registration.__new__(Registration)
        reg.pool_handle = ph
        reg.pool_element = pe
        reg.unknown = unknown
        return reg
    if mtype == 0x02:
        ph = _b_ph(data, p, b, name)
        ident = _b_peid(data, p, b, name)
        _b_done(b, name)
        dereg = Deregistration.__new__(Deregistration)
        dereg.pool_handle = ph
        dereg.identifier = ident
        dereg.unknown = unknown
        return dereg
    if mtype == 0x03:
        ph = _b_ph(data, p, b, name)
        ident = _b_peid(data, p, b, name)
        err = _b_optional(data, p, b, PT_OPERR)
        _b_done(b, name)
        rr = RegistrationResponse.__new__(RegistrationResponse)
        rr.pool_handle = ph
        rr.identifier = ident
        rr.error = err
        rr.rejected = bool(flags & 0x01)
        rr.unknown = unknown
        return rr
    if mtype == 0x04:
        ph = _b_ph(data, p, b, name)
        ident = _b_peid(data, p, b, name)
        err = _b_optional(data, p, b, PT_OPERR)
        _b_done(b, name)
        dr = DeregistrationResponse.__new__(DeregistrationResponse)
        dr.pool_handle = ph
        dr.identifier = ident
        dr.error = err
        dr.unknown = unknown
        return dr
    if mtype == 0x05:
        ph = _b_ph(data, p, b, name)
        items = _b_optional(data, p, b, PT_HRO)
        _b_done(b, name)
        hr = HandleResolution.__new__(HandleResolution)
        hr.pool_handle = ph
        hr.items = items
        hr.unknown = unknown
        return hr
    if mtype == 0x06:
        ph = _b_ph(data, p, b, name)
        hrr = HandleResolutionResponse.__new__(HandleResolutionResponse)
        hrr.pool_handle = ph
        hrr.unknown = unknown
        if _b_peek(b) == PT_OPERR:
            err = _b_take(data, p, b, PT_OPERR, "operation error", name)
            _b_done(b, name)
            hrr.policy = None
            hrr.pool_elements = _EMPTY
            hrr.error = err
            return hrr
        policy = _b_take(data, p, b, PT_POLICY, "policy", name)
        pes = _b_pool_elements(data, p, b, name)
        _b_done(b, name)
        hrr.policy = policy
        hrr.pool_elements = pes
        hrr.error = None
        return hrr
    if mtype == 0x07:
        ph = _b_ph(data, p, b, name)
        ident = _b_optional(data, p, b, PT_PEID)
        _b_done(b, name)
        ka = EndpointKeepAlive.__new__(EndpointKeepAlive)
        ka.server_id = _u32(p, 4)
        ka.pool_handle = ph
        ka.identifier = ident
        ka.home = bool(flags & 0x01)
        ka.unknown = unknown
        return ka
    if mtype == 0x08:
        ph = _b_ph(data, p, b, name)
        ident = _b_peid(data, p, b, name)
        _b_done(b, name)
        kaa = EndpointKeepAliveAck.__new__(EndpointKeepAliveAck)
        kaa.pool_handle = ph
        kaa.identifier = ident
        kaa.unknown = unknown
        return kaa
    if mtype == 0x09:
        ph = _b_ph(data, p, b, name)
        ident = _b_peid(data, p, b, name)
        _b_done(b, name)
        eu = EndpointUnreachable.__new__(EndpointUnreachable)
        eu.pool_handle = ph
        eu.identifier = ident
        eu.unknown = unknown
        return eu
    if mtype == 0x0A:
        transports = []
        while b.has and _is_transport(b.cur.ptype):
            transports.append(_b_take(data, p, b, b.cur.ptype, "transport", name))
        _b_done(b, name)
        sa = ServerAnnounce.__new__(ServerAnnounce)
        sa.server_id = _u32(p, 4)
        sa.transports = tuple(transports)
        sa.unknown = unknown
        return sa
    if mtype == 0x0B:
        cookie = _b_take(data, p, b, PT_COOKIE, "cookie", name)
        _b_done(b, name)
        ck = Cookie.__new__(Cookie)
        ck.cookie = cookie
        ck.unknown = unknown
        return ck
    if mtype == 0x0C:
        cookie = _b_take(data, p, b, PT_COOKIE, "cookie", name)
        _b_done(b, name)
        ce = CookieEcho.__new__(CookieEcho)
        ce.cookie = cookie
        ce.unknown = unknown
        return ce
    if mtype == 0x0D:
        ph = _b_ph(data, p, b, name)
        policy = _b_optional(data, p, b, PT_POLICY)
        pes = _b_pool_elements(data, p, b, name)
        _b_done(b, name)
        bc = BusinessCard.__new__(BusinessCard)
        bc.pool_handle = ph
        bc.policy = policy
        bc.pool_elements = pes
        bc.unknown = unknown
        return bc
    # 0x0E
    causes = _b_take(data, p, b, PT_OPERR, "operation error", name)
    _b_done(b, name)
    ae = AsapErrorMessage.__new__(AsapErrorMessage)
    ae.causes = causes
    ae.unknown = unknown
    return ae


cdef object _decode_enrp(bytes data, cbuf p, Body* b, unsigned int mtype, unsigned int flags,
                         object unknown, str name):
    cdef Presence pr
    cdef HandleTableRequest htq
    cdef HandleTableResponse hts
    cdef HandleUpdate hu
    cdef ListRequest lq
    cdef ListResponse ls
    cdef InitTakeover it
    cdef InitTakeoverAck ita
    cdef TakeoverServer ts
    cdef EnrpErrorMessage ee
    cdef list entries, pes, servers
    sender = _u32(p, 4)
    receiver = _u32(p, 8)
    if mtype == 0x01:
        checksum = _b_take(data, p, b, PT_CHECKSUM, "PE checksum", name)
        info = _b_optional(data, p, b, PT_SI)
        _b_done(b, name)
        pr = Presence.__new__(Presence)
        pr.sender_id = sender
        pr.receiver_id = receiver
        pr.checksum = checksum
        pr.server_info = info
        pr.reply_required = bool(flags & 0x01)
        pr.unknown = unknown
        return pr
    if mtype == 0x02:
        _b_done(b, name)
        htq = HandleTableRequest.__new__(HandleTableRequest)
        htq.sender_id = sender
        htq.receiver_id = receiver
        htq.own_children_only = bool(flags & 0x01)
        htq.unknown = unknown
        return htq
    if mtype == 0x03:
        entries = []
        while b.has and b.cur.ptype == PT_PH:
            ph = _b_ph(data, p, b, name)
            pes = [_b_take(data, p, b, PT_PE, "pool element", name)]
            while b.has and b.cur.ptype == PT_PE:
                pes.append(_b_take(data, p, b, PT_PE, "pool element", name))
            entries.append((ph, tuple(pes)))
        _b_done(b, name)
        hts = HandleTableResponse.__new__(HandleTableResponse)
        hts.sender_id = sender
        hts.receiver_id = receiver
        hts.entries = tuple(entries)
        hts.more = bool(flags & 0x02)
        hts.rejected = bool(flags & 0x01)
        hts.unknown = unknown
        return hts
    if mtype == 0x04:
        action = _u16(p, 12)
        ph = _b_ph(data, p, b, name)
        pe = _b_take(data, p, b, PT_PE, "pool element", name)
        _b_done(b, name)
        hu = HandleUpdate.__new__(HandleUpdate)
        hu.sender_id = sender
        hu.receiver_id = receiver
        hu.action = _enum_get(_ENUM_ACTION, action)
        hu.pool_handle = ph
        hu.pool_element = pe
        hu.takeover_suggested = bool(flags & 0x01)
        hu.unknown = unknown
        return hu
    if mtype == 0x05:
        _b_done(b, name)
        lq = ListRequest.__new__(ListRequest)
        lq.sender_id = sender
        lq.receiver_id = receiver
        lq.unknown = unknown
        return lq
    if mtype == 0x06:
        servers = []
        while b.has and b.cur.ptype == PT_SI:
            servers.append(_b_take(data, p, b, PT_SI, "server information", name))
        _b_done(b, name)
        ls = ListResponse.__new__(ListResponse)
        ls.sender_id = sender
        ls.receiver_id = receiver
        ls.servers = tuple(servers)
        ls.rejected = bool(flags & 0x01)
        ls.unknown = unknown
        return ls
    if mtype == 0x07:
        _b_done(b, name)
        it = InitTakeover.__new__(InitTakeover)
        it.sender_id = sender
        it.receiver_id = receiver
        it.target_id = _u32(p, 12)
        it.unknown = unknown
        return it
    if mtype == 0x08:
        _b_done(b, name)
        ita = InitTakeoverAck.__new__(InitTakeoverAck)
        ita.sender_id = sender
        ita.receiver_id = receiver
        ita.target_id = _u32(p, 12)
        ita.unknown = unknown
        return ita
    if mtype == 0x09:
        _b_done(b, name)
        ts = TakeoverServer.__new__(TakeoverServer)
        ts.sender_id = sender
        ts.receiver_id = receiver
        ts.target_id = _u32(p, 12)
        ts.unknown = unknown
        return ts
    # 0x0A
    causes = _b_take(data, p, b, PT_OPERR, "operation error", name)
    _b_done(b, name)
    ee = EnrpErrorMessage.__new__(EnrpErrorMessage)
    ee.sender_id = sender
    ee.receiver_id = receiver
    ee.causes = causes
    ee.unknown = unknown
    return ee


def decode_message(data, protocol):
    """Decode one whole ASAP or ENRP message.

    :param data: the message bytes (``bytes``, ``bytearray`` or
        ``memoryview``), exactly one message, optionally followed by the zero
        padding its length left out.
    :param protocol: ``"asap"`` or ``"enrp"`` (they share type numbers).
    :raises WireError: a subclass of it, naming the offset and the reason.
    """
    cdef bint enrp
    if protocol == "asap":
        enrp = False
    elif protocol == "enrp":
        enrp = True
    else:
        raise ValueError(f"protocol must be 'asap' or 'enrp', not {protocol!r}")
    if type(data) is not bytes:
        data = bytes(data)
    return _decode(<bytes>data, enrp)


def decode_parameter(data):
    """Decode exactly one top-level parameter (for tests and tools): addresses
    give ``str``, pool handle and cookie ``bytes``, PE identifier, PE checksum
    and the handle resolution option ``int``, operation error a tuple of
    :class:`Cause`, others their classes.  Offsets in errors count from the
    start of ``data``."""
    cdef Py_ssize_t n, count, nunk = 0, scan = 0
    cdef cbuf p
    cdef Item it
    if type(data) is not bytes:
        data = bytes(data)
    p = <cbuf>PyBytes_AS_STRING(data)
    n = PyBytes_GET_SIZE(data)
    count = _frame(<bytes>data, p, 0, n, &nunk)
    if count + nunk != 1:
        raise MalformedError(f"expected one parameter, found {count + nunk}", 0)
    if nunk:
        return _collect_unknown(<bytes>data, p, 0, n, 1)[0]
    _next_known(p, &scan, n, &it)
    return _decode_any(<bytes>data, p, &it)


# ==========================================================================
# encoding

cdef struct Writer:
    unsigned char* buf
    Py_ssize_t n
    Py_ssize_t cap
    unsigned char* heap


cdef int _w_grow(Writer* w, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = w.n + extra
    cdef Py_ssize_t cap = w.cap * 2
    cdef unsigned char* nb
    if cap < need:
        cap = need
    if w.heap == NULL:
        nb = <unsigned char*>malloc(cap)
        if nb == NULL:
            raise MemoryError()
        memcpy(nb, w.buf, w.n)
    else:
        nb = <unsigned char*>realloc(w.heap, cap)
        if nb == NULL:
            raise MemoryError()
    w.heap = nb
    w.buf = nb
    w.cap = cap
    return 0


cdef inline int _w_need(Writer* w, Py_ssize_t extra) except -1:
    if w.n + extra > w.cap:
        return _w_grow(w, extra)
    return 0


cdef inline int _w_u16(Writer* w, unsigned int v) except -1:
    _w_need(w, 2)
    _put16(w.buf + w.n, v)
    w.n += 2
    return 0


cdef inline int _w_u32(Writer* w, uint32_t v) except -1:
    _w_need(w, 4)
    _put32(w.buf + w.n, v)
    w.n += 4
    return 0


cdef inline int _w_tlv(Writer* w, unsigned int ptype, unsigned int plen) except -1:
    _w_need(w, 4)
    _put16(w.buf + w.n, ptype)
    _put16(w.buf + w.n + 2, plen)
    w.n += 4
    return 0


cdef inline int _w_mem(Writer* w, const void* src, Py_ssize_t k) except -1:
    _w_need(w, k)
    memcpy(w.buf + w.n, src, k)
    w.n += k
    return 0


cdef inline int _w_zeros(Writer* w, Py_ssize_t k) except -1:
    _w_need(w, k)
    memset(w.buf + w.n, 0, k)
    w.n += k
    return 0


cdef inline Py_ssize_t _w_begin(Writer* w, unsigned int ptype) except -1:
    cdef Py_ssize_t start = w.n
    _w_tlv(w, ptype, 0)
    return start


cdef int _w_finish(Writer* w, Py_ssize_t start) except -1:
    cdef Py_ssize_t length = w.n - start
    cdef Py_ssize_t pad
    if length > 0xFFFF:
        raise EncodeError(f"parameter of {length} bytes does not fit a 16-bit length")
    _put16(w.buf + start + 2, <unsigned int>length)
    pad = (-length) & 3
    if pad:
        _w_zeros(w, pad)
    return 0


cdef long long _enc_uint(object value, int bits, str what) except -1:
    """``_check_uint(_as_enc_int(value, what), bits, what)`` of the twin."""
    cdef long long x
    cdef int overflow = 0
    v = value
    if not PyLong_CheckExact(value):
        failed = False
        try:
            v = PyNumber_Index(value)
        except TypeError:
            failed = True
        if failed:
            raise EncodeError(f"{what} must be an integer, not {type(value).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x < 0 or x >= (<long long>1 << bits):
        raise EncodeError(f"{what} {v} does not fit in an unsigned {bits}-bit field")
    return x


cdef int _enc_int32(object value, str what, int32_t* out) except -1:
    cdef long long x
    cdef int overflow = 0
    v = value
    if not PyLong_CheckExact(value):
        failed = False
        try:
            v = PyNumber_Index(value)
        except TypeError:
            failed = True
        if failed:
            raise EncodeError(f"{what} must be an integer, not {type(value).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x < -0x80000000 or x > 0x7FFFFFFF:
        raise EncodeError(f"{what} {v} does not fit in a signed 32-bit field")
    out[0] = <int32_t>x
    return 0


cdef inline bytes _as_enc_bytes(object value, str what):
    if type(value) is bytes:
        return <bytes>value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise EncodeError(f"{what} must be bytes, not {type(value).__name__}")


cdef int _w_bytes_param(Writer* w, unsigned int ptype, bytes value) except -1:
    cdef Py_ssize_t start = _w_begin(w, ptype)
    _w_mem(w, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    return _w_finish(w, start)


cdef int _e_address(Writer* w, object text) except -1:
    cdef char cb[48]
    cdef unsigned char packed[16]
    cdef Py_ssize_t k, i
    cdef const char* s
    cdef char ch
    cdef bint v6 = False, ok = True
    if type(text) is str and PyUnicode_IS_ASCII(text):
        k = PyUnicode_GET_LENGTH(text)
        if 0 < k <= 45:
            s = <const char*>PyUnicode_DATA(text)
            for i in range(k):
                ch = s[i]
                if ch == 58:        # ':'
                    v6 = True
                elif not ((48 <= ch <= 57) or ch == 46 or (97 <= ch <= 102)
                          or (65 <= ch <= 70)):
                    ok = False
                    break
                cb[i] = ch
            if ok:
                cb[k] = 0
                if v6:
                    if inet_pton(AF_INET6, cb, packed) == 1:
                        _w_tlv(w, PT_IPV6, 20)
                        return _w_mem(w, packed, 16)
                elif inet_pton(AF_INET, cb, packed) == 1:
                    _w_tlv(w, PT_IPV4, 8)
                    return _w_mem(w, packed, 4)
    # anything unusual: exactly the twin's code path
    ptype, raw = _pack_address_slow(text)
    _w_tlv(w, ptype, 4 + len(raw))
    return _w_mem(w, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))


cdef int _e_transport(Writer* w, object t) except -1:
    cdef object cls = type(t)
    cdef unsigned int ptype
    cdef object second, addrs, port
    cdef Py_ssize_t start
    if cls is SctpTransport:
        ptype = PT_SCTP
        second = (<SctpTransport>t).transport_use
        addrs = (<SctpTransport>t).addresses
        port = (<SctpTransport>t).port
    elif cls is TcpTransport:
        ptype = PT_TCP
        second = (<TcpTransport>t).transport_use
        addrs = (<TcpTransport>t).addresses
        port = (<TcpTransport>t).port
    elif cls is UdpTransport:
        ptype = PT_UDP
        second = 0
        addrs = (<UdpTransport>t).addresses
        port = (<UdpTransport>t).port
    elif cls is UdpLiteTransport:
        ptype = PT_UDPLITE
        second = 0
        addrs = (<UdpLiteTransport>t).addresses
        port = (<UdpLiteTransport>t).port
    elif cls is DccpTransport:
        ptype = PT_DCCP
        second = 0
        addrs = (<DccpTransport>t).addresses
        port = (<DccpTransport>t).port
    else:
        raise EncodeError(f"not a transport parameter: {cls.__name__}")
    if ptype == PT_SCTP:
        if not addrs:
            raise EncodeError("an SCTP transport parameter needs at least one address")
    elif len(addrs) != 1:
        raise EncodeError(f"a {cls.__name__} needs exactly one address, not {len(addrs)}")
    start = _w_begin(w, ptype)
    _w_u16(w, <unsigned int>_enc_uint(port, 16, "port"))
    _w_u16(w, <unsigned int>_enc_uint(second, 16, "transport use"))
    if ptype == PT_DCCP:
        _w_u32(w, <uint32_t>_enc_uint((<DccpTransport>t).service_code, 32, "service code"))
    for a in addrs:
        _e_address(w, a)
    return _w_finish(w, start)


cdef int _e_policy(Writer* w, object pol) except -1:
    cdef PoolPolicy p
    cdef uint32_t ptype
    cdef PyObject* needed
    cdef Py_ssize_t nvalues, plen
    cdef object key
    if type(pol) is not PoolPolicy:
        raise EncodeError(f"not a policy parameter: {type(pol).__name__}")
    p = <PoolPolicy>pol
    values = p.values
    ptype = <uint32_t>_enc_uint(p.policy_type, 32, "policy type")
    nvalues = len(values)
    key = ptype
    needed = PyDict_GetItem(_POLICY_NEEDED, key)
    if needed != NULL and nvalues < <Py_ssize_t>(<object>needed):
        raise EncodeError(f"policy 0x{ptype:08x} needs {<object>needed} value(s), has "
                          f"{nvalues}")
    plen = 8 + 4 * nvalues
    if plen > 0xFFFF:
        # the twin lets struct.error escape here; an EncodeError is the documented result
        raise EncodeError(f"parameter of {plen} bytes does not fit a 16-bit length")
    _w_tlv(w, PT_POLICY, <unsigned int>plen)
    _w_u32(w, ptype)
    for v in values:
        _w_u32(w, <uint32_t>_enc_uint(v, 32, "policy value"))
    return 0


cdef int _e_pool_element(Writer* w, object obj) except -1:
    cdef PoolElement pe
    cdef Py_ssize_t start
    cdef int32_t life = 0
    if type(obj) is not PoolElement:
        raise EncodeError(f"not a pool element parameter: {type(obj).__name__}")
    pe = <PoolElement>obj
    start = _w_begin(w, PT_PE)
    _w_u32(w, <uint32_t>_enc_uint(pe.identifier, 32, "PE identifier"))
    _w_u32(w, <uint32_t>_enc_uint(pe.home_registrar, 32, "home registrar"))
    _enc_int32(pe.registration_life, "registration life", &life)
    _w_u32(w, <uint32_t>life)
    _e_transport(w, pe.user_transport)
    _e_policy(w, pe.policy)
    if pe.asap_transport is not None:
        if type(pe.asap_transport) is not SctpTransport and \
                type(pe.asap_transport) is not TcpTransport:
            raise EncodeError("the ASAP transport of a pool element must be an SctpTransport "
                              "or a TcpTransport")
        _e_transport(w, pe.asap_transport)
    return _w_finish(w, start)


cdef int _e_server_info(Writer* w, object obj) except -1:
    cdef ServerInformation si
    cdef Py_ssize_t start
    if type(obj) is not ServerInformation:
        raise EncodeError(f"not a server information parameter: {type(obj).__name__}")
    si = <ServerInformation>obj
    if type(si.transport) is not SctpTransport:
        raise EncodeError("server information needs an SctpTransport")
    start = _w_begin(w, PT_SI)
    _w_u32(w, <uint32_t>_enc_uint(si.server_id, 32, "server ID"))
    _e_transport(w, si.transport)
    return _w_finish(w, start)


cdef int _e_operation_error(Writer* w, object causes) except -1:
    cdef Py_ssize_t start = _w_begin(w, PT_OPERR)
    cdef Py_ssize_t ilen, clen
    cdef unsigned int code
    cdef Cause c
    cdef bytes info
    for obj in causes:
        if type(obj) is not Cause:
            raise EncodeError(f"not an error cause: {type(obj).__name__}")
        c = <Cause>obj
        info = _as_enc_bytes(c.info, "cause info")
        code = <unsigned int>_enc_uint(c.code, 16, "cause code")
        ilen = PyBytes_GET_SIZE(info)
        if ilen > 0xFFFB:
            raise EncodeError("error cause info too long")
        clen = 4 + ilen
        _w_tlv(w, code, <unsigned int>clen)
        _w_mem(w, PyBytes_AS_STRING(info), ilen)
        if (-clen) & 3:
            _w_zeros(w, (-clen) & 3)
    return _w_finish(w, start)


cdef int _e_unknown(Writer* w, object unknown) except -1:
    cdef UnknownParameter u
    cdef unsigned int ptype
    for obj in unknown:
        if type(obj) is not UnknownParameter:
            raise EncodeError(f"not an unknown parameter: {type(obj).__name__}")
        u = <UnknownParameter>obj
        ptype = <unsigned int>_enc_uint(u.param_type, 16, "parameter type")
        _w_bytes_param(w, ptype, _as_enc_bytes(u.value, "parameter value"))
    return 0


cdef inline int _e_ph(Writer* w, object ph) except -1:
    return _w_bytes_param(w, PT_PH, _as_enc_bytes(ph, "pool handle"))


cdef inline int _e_peid(Writer* w, object ident) except -1:
    _w_tlv(w, PT_PEID, 8)
    return _w_u32(w, <uint32_t>_enc_uint(ident, 32, "PE identifier"))


cdef inline int _e_ids(Writer* w, object sender, object receiver) except -1:
    _w_u32(w, <uint32_t>_enc_uint(sender, 32, "sender ID"))
    return _w_u32(w, <uint32_t>_enc_uint(receiver, 32, "receiver ID"))


cdef int _encode_body(Writer* w, object m) except -1:
    """Write the body of ``m`` after the 4-byte header; return
    ``type << 8 | flags``."""
    cdef object cls = type(m)
    cdef int flags = 0
    cdef int mtype
    cdef object unknown
    if cls is Registration:
        mtype = 0x01
        _e_ph(w, (<Registration>m).pool_handle)
        _e_pool_element(w, (<Registration>m).pool_element)
        unknown = (<Registration>m).unknown
    elif cls is Deregistration:
        mtype = 0x02
        _e_ph(w, (<Deregistration>m).pool_handle)
        _e_peid(w, (<Deregistration>m).identifier)
        unknown = (<Deregistration>m).unknown
    elif cls is EndpointKeepAliveAck:
        mtype = 0x08
        _e_ph(w, (<EndpointKeepAliveAck>m).pool_handle)
        _e_peid(w, (<EndpointKeepAliveAck>m).identifier)
        unknown = (<EndpointKeepAliveAck>m).unknown
    elif cls is EndpointUnreachable:
        mtype = 0x09
        _e_ph(w, (<EndpointUnreachable>m).pool_handle)
        _e_peid(w, (<EndpointUnreachable>m).identifier)
        unknown = (<EndpointUnreachable>m).unknown
    elif cls is RegistrationResponse:
        mtype = 0x03
        _e_ph(w, (<RegistrationResponse>m).pool_handle)
        _e_peid(w, (<RegistrationResponse>m).identifier)
        if (<RegistrationResponse>m).error is not None:
            _e_operation_error(w, (<RegistrationResponse>m).error)
        if (<RegistrationResponse>m).rejected:
            flags = 0x01
        unknown = (<RegistrationResponse>m).unknown
    elif cls is DeregistrationResponse:
        mtype = 0x04
        _e_ph(w, (<DeregistrationResponse>m).pool_handle)
        _e_peid(w, (<DeregistrationResponse>m).identifier)
        if (<DeregistrationResponse>m).error is not None:
            _e_operation_error(w, (<DeregistrationResponse>m).error)
        unknown = (<DeregistrationResponse>m).unknown
    elif cls is HandleResolution:
        mtype = 0x05
        _e_ph(w, (<HandleResolution>m).pool_handle)
        if (<HandleResolution>m).items is not None:
            _w_tlv(w, PT_HRO, 8)
            _w_u32(w, <uint32_t>_enc_uint((<HandleResolution>m).items, 32, "items"))
        unknown = (<HandleResolution>m).unknown
    elif cls is HandleResolutionResponse:
        mtype = 0x06
        _e_hrr(w, <HandleResolutionResponse>m)
        unknown = (<HandleResolutionResponse>m).unknown
    elif cls is EndpointKeepAlive:
        mtype = 0x07
        _w_u32(w, <uint32_t>_enc_uint((<EndpointKeepAlive>m).server_id, 32, "server ID"))
        _e_ph(w, (<EndpointKeepAlive>m).pool_handle)
        if (<EndpointKeepAlive>m).identifier is not None:
            _e_peid(w, (<EndpointKeepAlive>m).identifier)
        if (<EndpointKeepAlive>m).home:
            flags = 0x01
        unknown = (<EndpointKeepAlive>m).unknown
    elif cls is ServerAnnounce:
        mtype = 0x0A
        _w_u32(w, <uint32_t>_enc_uint((<ServerAnnounce>m).server_id, 32, "server ID"))
        for t in (<ServerAnnounce>m).transports:
            _e_transport(w, t)
        unknown = (<ServerAnnounce>m).unknown
    elif cls is Cookie:
        mtype = 0x0B
        _w_bytes_param(w, PT_COOKIE, _as_enc_bytes((<Cookie>m).cookie, "cookie"))
        unknown = (<Cookie>m).unknown
    elif cls is CookieEcho:
        mtype = 0x0C
        _w_bytes_param(w, PT_COOKIE, _as_enc_bytes((<CookieEcho>m).cookie, "cookie"))
        unknown = (<CookieEcho>m).unknown
    elif cls is BusinessCard:
        mtype = 0x0D
        _e_ph(w, (<BusinessCard>m).pool_handle)
        if (<BusinessCard>m).policy is not None:
            _e_policy(w, (<BusinessCard>m).policy)
        for pe in (<BusinessCard>m).pool_elements:
            _e_pool_element(w, pe)
        unknown = (<BusinessCard>m).unknown
    elif cls is AsapErrorMessage:
        mtype = 0x0E
        _e_operation_error(w, (<AsapErrorMessage>m).causes)
        unknown = (<AsapErrorMessage>m).unknown
    elif cls is Presence:
        mtype = 0x01
        _e_ids(w, (<Presence>m).sender_id, (<Presence>m).receiver_id)
        _w_tlv(w, PT_CHECKSUM, 6)
        _w_u16(w, <unsigned int>_enc_uint((<Presence>m).checksum, 16, "checksum"))
        _w_zeros(w, 2)
        if (<Presence>m).server_info is not None:
            _e_server_info(w, (<Presence>m).server_info)
        if (<Presence>m).reply_required:
            flags = 0x01
        unknown = (<Presence>m).unknown
    elif cls is HandleTableRequest:
        mtype = 0x02
        _e_ids(w, (<HandleTableRequest>m).sender_id, (<HandleTableRequest>m).receiver_id)
        if (<HandleTableRequest>m).own_children_only:
            flags = 0x01
        unknown = (<HandleTableRequest>m).unknown
    elif cls is HandleTableResponse:
        mtype = 0x03
        _e_ids(w, (<HandleTableResponse>m).sender_id, (<HandleTableResponse>m).receiver_id)
        for entry in (<HandleTableResponse>m).entries:
            pair = _unpack2(entry)
            pes = pair[1]
            if not pes:
                raise EncodeError("a handle table entry needs at least one pool element")
            _e_ph(w, pair[0])
            for pe in pes:
                _e_pool_element(w, pe)
        flags = ((0x01 if (<HandleTableResponse>m).rejected else 0)
                 | (0x02 if (<HandleTableResponse>m).more else 0))
        unknown = (<HandleTableResponse>m).unknown
    elif cls is HandleUpdate:
        mtype = 0x04
        _e_ids(w, (<HandleUpdate>m).sender_id, (<HandleUpdate>m).receiver_id)
        _w_u16(w, <unsigned int>_enc_uint((<HandleUpdate>m).action, 16, "update action"))
        _w_zeros(w, 2)
        _e_ph(w, (<HandleUpdate>m).pool_handle)
        _e_pool_element(w, (<HandleUpdate>m).pool_element)
        if (<HandleUpdate>m).takeover_suggested:
            flags = 0x01
        unknown = (<HandleUpdate>m).unknown
    elif cls is ListRequest:
        mtype = 0x05
        _e_ids(w, (<ListRequest>m).sender_id, (<ListRequest>m).receiver_id)
        unknown = (<ListRequest>m).unknown
    elif cls is ListResponse:
        mtype = 0x06
        _e_ids(w, (<ListResponse>m).sender_id, (<ListResponse>m).receiver_id)
        for si in (<ListResponse>m).servers:
            _e_server_info(w, si)
        if (<ListResponse>m).rejected:
            flags = 0x01
        unknown = (<ListResponse>m).unknown
    elif cls is InitTakeover:
        mtype = 0x07
        _e_ids(w, (<InitTakeover>m).sender_id, (<InitTakeover>m).receiver_id)
        _w_u32(w, <uint32_t>_enc_uint((<InitTakeover>m).target_id, 32, "target ID"))
        unknown = (<InitTakeover>m).unknown
    elif cls is InitTakeoverAck:
        mtype = 0x08
        _e_ids(w, (<InitTakeoverAck>m).sender_id, (<InitTakeoverAck>m).receiver_id)
        _w_u32(w, <uint32_t>_enc_uint((<InitTakeoverAck>m).target_id, 32, "target ID"))
        unknown = (<InitTakeoverAck>m).unknown
    elif cls is TakeoverServer:
        mtype = 0x09
        _e_ids(w, (<TakeoverServer>m).sender_id, (<TakeoverServer>m).receiver_id)
        _w_u32(w, <uint32_t>_enc_uint((<TakeoverServer>m).target_id, 32, "target ID"))
        unknown = (<TakeoverServer>m).unknown
    elif cls is EnrpErrorMessage:
        mtype = 0x0A
        _e_ids(w, (<EnrpErrorMessage>m).sender_id, (<EnrpErrorMessage>m).receiver_id)
        _e_operation_error(w, (<EnrpErrorMessage>m).causes)
        unknown = (<EnrpErrorMessage>m).unknown
    else:
        raise EncodeError(f"not a message: {cls.__name__}")
    _e_unknown(w, unknown)
    return (mtype << 8) | flags


cdef int _e_hrr(Writer* w, HandleResolutionResponse m) except -1:
    _e_ph(w, m.pool_handle)
    if m.error is not None:
        if m.policy is not None or m.pool_elements:
            raise EncodeError("a handle resolution response carries either an error or "
                              "a policy and pool elements")
        _e_operation_error(w, m.error)
    else:
        if m.policy is None:
            raise EncodeError("a handle resolution response without an error needs a "
                              "policy")
        _e_policy(w, m.policy)
        for pe in m.pool_elements:
            _e_pool_element(w, pe)
    return 0


cdef enum:
    _STACK_BUF = 1536


def encode_message(message):
    """Encode a message exactly as RSPLIB would (padding included in every
    length).

    :raises EncodeError: a field is out of range or the message would exceed
        65,535 bytes.
    """
    cdef unsigned char stack[_STACK_BUF]
    cdef Writer w
    cdef int tf
    w.buf = stack
    w.n = 4
    w.cap = _STACK_BUF
    w.heap = NULL
    try:
        tf = _encode_body(&w, message)
        if w.n > 65535:
            raise EncodeError(f"message of {w.n} bytes exceeds 65535")
        w.buf[0] = <unsigned char>(tf >> 8)
        w.buf[1] = <unsigned char>(tf & 0xFF)
        _put16(w.buf + 2, <unsigned int>w.n)
        return PyBytes_FromStringAndSize(<const char*>w.buf, w.n)
    finally:
        if w.heap != NULL:
            free(w.heap)


def encode_parameter(param):
    """Encode one parameter object (transport, policy, pool element, server
    information, unknown parameter), padded.  Used to keep each PE's encoded
    Pool Element parameter in the handlespace."""
    cdef unsigned char stack[_STACK_BUF]
    cdef Writer w
    w.buf = stack
    w.n = 0
    w.cap = _STACK_BUF
    w.heap = NULL
    try:
        cls = type(param)
        if cls is PoolElement:
            _e_pool_element(&w, param)
        elif cls is PoolPolicy:
            _e_policy(&w, param)
        elif cls is ServerInformation:
            _e_server_info(&w, param)
        elif cls is UnknownParameter:
            _e_unknown(&w, (param,))
        else:
            _e_transport(&w, param)
        return PyBytes_FromStringAndSize(<const char*>w.buf, w.n)
    finally:
        if w.heap != NULL:
            free(w.heap)


# ==========================================================================
# the registrar's hot path

def parse_handle_resolution(data):
    """Decode an ASAP Handle Resolution and return ``(pool_handle, items)``
    (``items`` is None when the option is absent).  Raises exactly what
    :func:`decode_message` raises; a message of another type raises
    :class:`MalformedError` at offset 0."""
    cdef cbuf p
    cdef Py_ssize_t n, pos, end, plen, ph_start, ph_end
    if type(data) is bytes:
        n = PyBytes_GET_SIZE(data)
        p = <cbuf>PyBytes_AS_STRING(data)
        # fast path: header, pool handle, optional option, nothing else
        if 8 <= n <= 65535 and p[0] == 0x05 and <Py_ssize_t>_u16(p, 2) == n \
                and _u16(p, 4) == PT_PH:
            end = n
            plen = _u16(p, 6)
            if 4 <= plen <= end - 4:
                ph_start = 8
                ph_end = 4 + plen
                pos = 4 + ((plen + 3) & ~(<Py_ssize_t>3))
                if pos >= end:
                    return (_slice(p, ph_start, ph_end), None)
                if end - pos == 8 and _u16(p, pos) == PT_HRO and _u16(p, pos + 2) == 8:
                    return (_slice(p, ph_start, ph_end), _u32(p, pos + 4))
        elif n >= 1 and p[0] != 0x05:
            _check_frame(p, n)
            raise MalformedError(f"not a Handle Resolution message (type 0x{p[0]:02x})", 0)
        m = _decode(<bytes>data, False)
        return ((<HandleResolution>m).pool_handle, (<HandleResolution>m).items)
    # anything but bytes: the twin's steps
    if len(data) >= 1 and data[0] != AsapType.HANDLE_RESOLUTION:
        raw = bytes(data)
        _check_frame(<cbuf>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
        raise MalformedError(f"not a Handle Resolution message (type 0x{data[0]:02x})", 0)
    m = decode_message(data, "asap")
    if type(m) is not HandleResolution:
        raise MalformedError("not a Handle Resolution message", 0)
    return ((<HandleResolution>m).pool_handle, (<HandleResolution>m).items)


def build_handle_resolution_response(pool_handle, policy, pool_elements):
    """A Handle Resolution Response from a pool handle and parameters that are
    already encoded: ``policy`` (a Pool Member Selection Policy parameter) and
    each of ``pool_elements`` (Pool Element parameters, padded)."""
    cdef bytes ph = _as_enc_bytes(pool_handle, "pool handle")
    cdef Py_ssize_t ph_len = 4 + PyBytes_GET_SIZE(ph)
    cdef Py_ssize_t pad = (-ph_len) & 3
    cdef Py_ssize_t total = 0, i, k, npes = 0
    cdef unsigned char* q
    cdef bint fast = type(policy) is bytes
    if fast and (type(pool_elements) is list or type(pool_elements) is tuple):
        npes = len(pool_elements)
        total = 4 + ph_len + pad + PyBytes_GET_SIZE(policy)
        for i in range(npes):
            pe = pool_elements[i]
            if type(pe) is not bytes:
                fast = False
                break
            total += PyBytes_GET_SIZE(pe)
    else:
        fast = False
    if not fast:
        return _build_hrr_generic(ph, ph_len, pad, policy, pool_elements)
    if total > 65535 or ph_len > 0xFFFF:
        raise EncodeError(f"message of {total} bytes exceeds 65535")
    out = PyBytes_FromStringAndSize(NULL, total)
    q = <unsigned char*>PyBytes_AS_STRING(out)
    q[0] = 0x06
    q[1] = 0
    _put16(q + 2, <unsigned int>total)
    _put16(q + 4, PT_PH)
    _put16(q + 6, <unsigned int>ph_len)
    k = 8
    memcpy(q + k, PyBytes_AS_STRING(ph), ph_len - 4)
    k += ph_len - 4
    if pad:
        memset(q + k, 0, pad)
        k += pad
    memcpy(q + k, PyBytes_AS_STRING(policy), PyBytes_GET_SIZE(policy))
    k += PyBytes_GET_SIZE(policy)
    for i in range(npes):
        pe = pool_elements[i]
        memcpy(q + k, PyBytes_AS_STRING(pe), PyBytes_GET_SIZE(pe))
        k += PyBytes_GET_SIZE(pe)
    return out


cdef object _build_hrr_generic(bytes ph, Py_ssize_t ph_len, Py_ssize_t pad, object policy,
                               object pool_elements):
    """The twin's steps for anything but bytes parts: convert, then build."""
    policy = _as_enc_bytes(policy, "policy")
    pes = [_as_enc_bytes(pe, "pool element") for pe in pool_elements]
    return build_handle_resolution_response(ph, policy, pes)
