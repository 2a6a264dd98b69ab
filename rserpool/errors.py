"""The exception tree of rserpool.  No I/O.

::

    RSerPoolError
     +-- WireError (ValueError)        bytes from a peer that do not decode
     |    +-- TruncatedError           the data ends before the message does
     |    +-- LengthError              a length field is impossible (too small,
     |    |                            overruns or underruns its container,
     |    |                            wrong for the parameter type)
     |    +-- TrailingBytesError       bytes after the end of the message
     |    +-- OversizeError            more than 65,535 bytes
     |    +-- UnknownMessageError      a message type the protocol does not define
     |    +-- UnknownParameterError    an unknown parameter whose action bits say stop
     |    +-- MalformedError           a missing, misplaced or invalid parameter or value
     +-- EncodeError (ValueError)      a message object that cannot be encoded (our fault)
     +-- ProtocolError
     |    +-- LocalProtocolError       we misused the protocol
     |    +-- RemoteProtocolError      the peer misbehaved
     +-- OperationError                the registrar said no (carries an ErrorCause)
     |    +-- HandlespaceError         a handlespace call was refused (CAUSE per subclass)
     +-- NoRegistrarError              no registrar could be reached
     +-- ConfigError (ValueError)      an invalid configuration value

Every ``WireError`` names the byte ``offset`` (from the start of the message)
where decoding failed and a human-readable ``reason``; ``str(err)`` shows both.
Both codec implementations (compiled and pure Python) raise the same class at
the same offset for the same input.
"""

from __future__ import annotations

__all__ = [
    "RSerPoolError", "WireError", "TruncatedError", "LengthError",
    "TrailingBytesError", "OversizeError", "UnknownMessageError",
    "UnknownParameterError", "MalformedError", "EncodeError", "ProtocolError",
    "LocalProtocolError", "RemoteProtocolError", "OperationError",
    "NoRegistrarError", "ConfigError", "HandlespaceError", "InvalidPoolHandleError",
    "InvalidValueError", "UnsupportedPolicyError", "NonUniqueIdentifierError",
    "PolicyInconsistentError", "TransportInconsistentError",
    "DataControlInconsistentError", "ResourceLimitError",
]


class RSerPoolError(Exception):
    """Root of every exception rserpool raises on purpose."""


class WireError(RSerPoolError, ValueError):
    """Bytes that are not a valid ASAP/ENRP message.

    :ivar offset: byte offset from the start of the message where decoding failed.
    :ivar reason: what is wrong, in words.
    """

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason, offset)
        self.reason = reason
        self.offset = offset

    def __str__(self) -> str:
        return f"{self.reason} (at offset {self.offset})"


class TruncatedError(WireError):
    """The data ends before the message (or its header) does."""


class LengthError(WireError):
    """A length field is impossible: below its minimum, overrunning or
    underrunning its container, or wrong for the parameter type."""


class TrailingBytesError(WireError):
    """The data goes on after the end of the message (beyond its padding)."""


class OversizeError(WireError):
    """The data is larger than any message can be (65,535 bytes)."""


class UnknownMessageError(WireError):
    """The message type is not defined in the protocol.

    :ivar message_type: the type byte.
    """

    def __init__(self, reason: str, offset: int, message_type: int = 0) -> None:
        super().__init__(reason, offset)
        self.message_type = message_type


class UnknownParameterError(WireError):
    """An unrecognised parameter whose action bits say *stop processing*.

    :ivar param_type: the full 16-bit parameter type.
    :ivar report: True when the action bits ask for a report
        (Operation Error cause 0x0001 carrying :attr:`tlv`).
    :ivar tlv: the parameter as received (header and value, no padding).
    """

    def __init__(self, reason: str, offset: int, param_type: int = 0,
                 report: bool = False, tlv: bytes = b"") -> None:
        super().__init__(reason, offset)
        self.param_type = param_type
        self.report = report
        self.tlv = tlv


class MalformedError(WireError):
    """A mandatory parameter is missing, a parameter stands where the format
    does not allow it, or a value is invalid."""


class EncodeError(RSerPoolError, ValueError):
    """A message or parameter object holds a value that cannot be encoded
    (out of range, not an IP address, too large a message)."""


class ProtocolError(RSerPoolError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """This side broke a protocol rule (a programming error)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke a protocol rule."""


class OperationError(RSerPoolError):
    """A registrar refused an operation.

    :ivar cause: the :class:`~rserpool.constants.ErrorCause` (or plain int for an
        unknown code).
    :ivar info: the cause-specific information bytes.
    """

    def __init__(self, cause: int, info: bytes = b"", message: str | None = None) -> None:
        from .constants import ErrorCause

        try:
            cause = ErrorCause(cause)
            name = cause.name
        except ValueError:
            name = f"cause 0x{cause:04x}"
        super().__init__(message or name)
        self.cause = cause
        self.info = info


class NoRegistrarError(RSerPoolError):
    """No registrar could be found or reached."""


class ConfigError(RSerPoolError, ValueError):
    """An invalid configuration value."""


class HandlespaceError(OperationError):
    """A handlespace call was refused; nothing was changed.  ``CAUSE`` is the
    ASAP error cause a registrar answers with."""

    CAUSE = 0x0003

    def __init__(self, message: str) -> None:
        super().__init__(self.CAUSE, b"", message)


class InvalidPoolHandleError(HandlespaceError):
    """Empty or over-long pool handle (RSPLIB cause 0xF004)."""

    CAUSE = 0xF004


class InvalidValueError(HandlespaceError):
    """A value out of range: PE identifier 0, negative registration life, port 0."""

    CAUSE = 0x0003


class UnsupportedPolicyError(HandlespaceError):
    """A policy type without a selection procedure, or too few policy values
    (RSPLIB cause 0x100B)."""

    CAUSE = 0x100B


class NonUniqueIdentifierError(HandlespaceError):
    """The PE identifier is registered in another pool."""

    CAUSE = 0x0004


class PolicyInconsistentError(HandlespaceError):
    """The policy type differs from the pool's."""

    CAUSE = 0x0005


class TransportInconsistentError(HandlespaceError):
    """The user transport protocol differs from the pool's."""

    CAUSE = 0x0007


class DataControlInconsistentError(HandlespaceError):
    """The transport use (data only / data plus control) differs from the pool's."""

    CAUSE = 0x0008


class ResourceLimitError(HandlespaceError):
    """A configured capacity limit (pools or elements) is reached."""

    CAUSE = 0x0006
