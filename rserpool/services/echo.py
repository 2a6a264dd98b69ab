"""Echo service: every user message comes back unchanged, with its PPID.

State: the number of messages and bytes echoed in this session.  After every
``cookie_every`` messages (default 1) the PE sends an ASAP Cookie holding::

    echo 1 <messages> <bytes>

(ASCII, decimal; ``1`` is the format version; sealed with an HMAC tag when a
``secret`` is given, :mod:`rserpool.services.cookies`).  A Cookie Echo in that
format restores both counters, so after a failover the next cookie continues
the count: a PU can check that the state survived.  Other cookies are ignored.
"""

from __future__ import annotations

from typing import Optional

from ..aio.element import SessionHandler
from ..log import pe_log
from .cookies import seal, unseal

__all__ = ["EchoService", "parse_echo_cookie"]


def parse_echo_cookie(state: bytes) -> tuple[int, int] | None:
    """``b"echo 1 <messages> <bytes>"`` -> (messages, bytes), else None."""
    parts = state.split()
    if len(parts) != 4 or parts[0] != b"echo" or parts[1] != b"1":
        return None
    if not (parts[2].isdigit() and parts[3].isdigit()):
        return None
    return int(parts[2]), int(parts[3])


class EchoService(SessionHandler):
    def __init__(self, *, cookie_every: int = 1, secret: Optional[bytes] = None) -> None:
        self.cookie_every = cookie_every
        self.secret = secret
        self.messages = 0
        self.bytes = 0

    def data_received(self, data: bytes, ppid: int) -> None:
        self.session.send(data, ppid=ppid)
        self.messages += 1
        self.bytes += len(data)
        if self.cookie_every > 0 and self.messages % self.cookie_every == 0:
            self.session.send_cookie(seal(self.secret, self.state()))

    def state(self) -> bytes:
        return b"echo 1 %d %d" % (self.messages, self.bytes)

    def cookie_echo_received(self, cookie: bytes) -> None:
        state = unseal(self.secret, cookie)
        counts = parse_echo_cookie(state) if state is not None else None
        if counts is None:
            pe_log.info("echo: cookie echo from %s not understood; starting afresh",
                        self.session.peer[0])
            return
        self.messages, self.bytes = counts
