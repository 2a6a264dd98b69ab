"""Framing of ASAP/ENRP messages carried back to back on a byte stream (TCP).

No I/O.  Each message starts with the 4-byte common header whose 16-bit
length (offset 2) counts the whole message, header and padding included, so
the stream is cut at those lengths; Wireshark decodes ASAP on tcp/3863 the
same way.  This is rserpool's own TCP mapping: draft-ietf-rserpool-tcpmapping
(which adds a shim header) expired and RSPLIB has no TCP transport.
"""

from __future__ import annotations

from ..constants import MAX_MESSAGE_SIZE
from ..errors import LengthError, OversizeError

__all__ = ["StreamFramer"]


class StreamFramer:
    """Feed stream bytes, get whole messages.

    >>> f = StreamFramer()
    >>> f.feed(b"\\x05\\x00\\x00\\x08\\x00\\x09")
    []
    >>> f.feed(b"\\x00\\x04\\x05")
    [b'\\x05\\x00\\x00\\x08\\x00\\t\\x00\\x04']
    >>> f.pending
    1

    :param max_size: the largest message accepted (at most 65,535).
    :raises LengthError: a header announces fewer than 4 bytes; the stream
        cannot be resynchronised and should be closed.
    :raises OversizeError: a header announces more than ``max_size`` bytes.
    After an error the framer stays broken: every later :meth:`feed` raises
    the same error.
    """

    __slots__ = ("_buf", "_max", "_error", "_offset")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        if not 4 <= max_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_size must be 4..{MAX_MESSAGE_SIZE}")
        self._buf = bytearray()
        self._max = max_size
        self._error: Exception | None = None
        self._offset = 0  # stream offset of _buf[0], for error messages

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return the whole messages now available, in order."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length < 4:
                self._error = LengthError(
                    f"stream message length {length} is below the 4-byte header",
                    self._offset + pos + 2)
                break
            if length > self._max:
                self._error = OversizeError(
                    f"stream message length {length} exceeds the limit of {self._max}",
                    self._offset + pos + 2)
                break
            if n - pos < length:
                break
            out.append(bytes(buf[pos:pos + length]))
            pos += length
        if pos:
            del buf[:pos]
            self._offset += pos
        if self._error is not None and not out:
            raise self._error
        return out
