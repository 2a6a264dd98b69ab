"""ASAP (RFC 5352) and ENRP (RFC 5353) messages and their wire format.

No I/O.  The classes and functions here come from the compiled codec
``rserpool._c.tlv`` or, with ``RSERPOOL_NO_EXTENSIONS=1`` (or when it is not
built and not required), from its pure-Python twin
``rserpool.wire._codec_py``.  Both have the same API and behaviour; see
``rserpool.wire._codec_py`` for the format itself.

Typical use::

    from rserpool.wire import decode_message, encode_message, HandleResolution
    data = encode_message(HandleResolution(b"EchoPool", items=3))
    msg = decode_message(data, "asap")

``decode_message`` raises a subclass of :class:`rserpool.errors.WireError`
that names the offset and the reason; ``encode_message`` raises
:class:`rserpool.errors.EncodeError`.
"""

from __future__ import annotations

from .. import _accel
from .stream import StreamFramer

_impl = _accel.load("tlv", "rserpool.wire._codec_py")

IMPLEMENTATION: str = _impl.IMPLEMENTATION

SctpTransport = _impl.SctpTransport
TcpTransport = _impl.TcpTransport
UdpTransport = _impl.UdpTransport
UdpLiteTransport = _impl.UdpLiteTransport
DccpTransport = _impl.DccpTransport
PoolPolicy = _impl.PoolPolicy
PoolElement = _impl.PoolElement
ServerInformation = _impl.ServerInformation
Cause = _impl.Cause
UnknownParameter = _impl.UnknownParameter

Message = _impl.Message
Registration = _impl.Registration
Deregistration = _impl.Deregistration
RegistrationResponse = _impl.RegistrationResponse
DeregistrationResponse = _impl.DeregistrationResponse
HandleResolution = _impl.HandleResolution
HandleResolutionResponse = _impl.HandleResolutionResponse
EndpointKeepAlive = _impl.EndpointKeepAlive
EndpointKeepAliveAck = _impl.EndpointKeepAliveAck
EndpointUnreachable = _impl.EndpointUnreachable
ServerAnnounce = _impl.ServerAnnounce
Cookie = _impl.Cookie
CookieEcho = _impl.CookieEcho
BusinessCard = _impl.BusinessCard
AsapErrorMessage = _impl.AsapErrorMessage
Presence = _impl.Presence
HandleTableRequest = _impl.HandleTableRequest
HandleTableResponse = _impl.HandleTableResponse
HandleUpdate = _impl.HandleUpdate
ListRequest = _impl.ListRequest
ListResponse = _impl.ListResponse
InitTakeover = _impl.InitTakeover
InitTakeoverAck = _impl.InitTakeoverAck
TakeoverServer = _impl.TakeoverServer
EnrpErrorMessage = _impl.EnrpErrorMessage

encode_message = _impl.encode_message
decode_message = _impl.decode_message
encode_parameter = _impl.encode_parameter
decode_parameter = _impl.decode_parameter
parse_handle_resolution = _impl.parse_handle_resolution
build_handle_resolution_response = _impl.build_handle_resolution_response
format_address = _impl.format_address

__all__ = [
    "IMPLEMENTATION", "StreamFramer",
    "SctpTransport", "TcpTransport", "UdpTransport", "UdpLiteTransport",
    "DccpTransport", "PoolPolicy", "PoolElement", "ServerInformation", "Cause",
    "UnknownParameter",
    "Message", "Registration", "Deregistration", "RegistrationResponse",
    "DeregistrationResponse", "HandleResolution", "HandleResolutionResponse",
    "EndpointKeepAlive", "EndpointKeepAliveAck", "EndpointUnreachable",
    "ServerAnnounce", "Cookie", "CookieEcho", "BusinessCard", "AsapErrorMessage",
    "Presence", "HandleTableRequest", "HandleTableResponse", "HandleUpdate",
    "ListRequest", "ListResponse", "InitTakeover", "InitTakeoverAck",
    "TakeoverServer", "EnrpErrorMessage",
    "encode_message", "decode_message", "encode_parameter", "decode_parameter",
    "parse_handle_resolution", "build_handle_resolution_response", "format_address",
]
