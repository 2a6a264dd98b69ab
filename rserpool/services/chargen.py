"""Character generator (RFC 864 in spirit): a stream of 74-byte messages, each
72 printable ASCII characters (the RFC's rotating pattern over the 95
characters 0x20-0x7E, starting one character later on each line) plus
``"\\r\\n"``.

Every ``poll`` seconds (default 0.01) up to ``burst`` lines (default 32) are
sent, fewer while ``high_water`` bytes or more wait to be sent, so the stream
runs at most at ``burst / poll`` lines per second (3,200: about 240 KB/s) and a
slow PU slows it down.  Messages from the PU are ignored.

State: the number of the next line.  Every ``cookie_every`` lines (default
100) an ASAP Cookie ``chargen 1 <line>`` is sent; a Cookie Echo in that format
makes the stream continue at that line after a failover.
"""

from __future__ import annotations

from typing import Optional

from ..aio.element import DATA_PPID, Session, SessionHandler
from .cookies import seal, unseal

__all__ = ["ChargenService", "chargen_line"]

_CHARS = bytes(range(0x20, 0x7F))  # 95 printable characters
LINE_WIDTH = 72


def chargen_line(n: int) -> bytes:
    """Line ``n`` (from 0) of the pattern, with CR LF."""
    start = n % len(_CHARS)
    doubled = _CHARS + _CHARS
    return doubled[start:start + LINE_WIDTH] + b"\r\n"


class ChargenService(SessionHandler):
    def __init__(self, *, high_water: int = 64 * 1024, poll: float = 0.01, burst: int = 32,
                 cookie_every: int = 100, secret: Optional[bytes] = None) -> None:
        self.high_water = high_water
        self.burst = burst
        self.poll = poll
        self.cookie_every = cookie_every
        self.secret = secret
        self.line = 0
        self._handle = None

    def connection_made(self, session: Session) -> None:
        super().connection_made(session)
        self._handle = session.loop.call_soon(self._produce)

    def cookie_echo_received(self, cookie: bytes) -> None:
        state = unseal(self.secret, cookie)
        parts = state.split() if state is not None else []
        if len(parts) == 3 and parts[:2] == [b"chargen", b"1"] and parts[2].isdigit():
            self.line = int(parts[2])

    def _produce(self) -> None:
        s = self.session
        self._handle = None
        if s.closed:
            return
        try:
            for _ in range(self.burst):
                if s.write_buffered >= self.high_water:
                    break
                s.send(chargen_line(self.line), ppid=DATA_PPID)
                self.line += 1
                if self.cookie_every > 0 and self.line % self.cookie_every == 0:
                    s.send_cookie(seal(self.secret, b"chargen 1 %d" % self.line))
                if s.closed:
                    return
        except ConnectionError:
            return
        self._handle = s.loop.call_later(self.poll, self._produce)

    def connection_lost(self, reason: Optional[str]) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
