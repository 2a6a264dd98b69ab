"""Ping-pong service (like RSPLIB's): the PU sends numbered pings, the PE
answers each with a pong; the reply count survives a failover.

Messages (ASCII, fields separated by one space, numbers in decimal):

* ping (PU -> PE): ``PING <seq>`` optionally followed by `` <data>``
* pong (PE -> PU): ``PONG <seq> <count>`` plus `` <data>`` when the ping had
  it; ``<seq>`` is the ping's, ``<count>`` the number of pings this session
  has answered, this one included, across failovers.
* anything else gets ``ERROR not a ping``.

Replies use the ping's PPID.  After every ``cookie_every`` pongs (default 1)
the PE sends an ASAP Cookie ``pingpong 1 <count>`` (sealed when a ``secret``
is given, :mod:`rserpool.services.cookies`); a Cookie Echo in that format
sets the count, so the new PE's first pong after a failover continues it.
"""

from __future__ import annotations

from typing import Optional

from ..aio.element import SessionHandler
from ..log import pe_log
from .cookies import seal, unseal

__all__ = ["PingPongService", "parse_pong", "make_ping"]


def make_ping(seq: int, data: bytes = b"") -> bytes:
    return b"PING %d" % seq + (b" " + data if data else b"")


def parse_pong(message: bytes) -> tuple[int, int, bytes] | None:
    """``PONG <seq> <count> [data]`` -> (seq, count, data), else None."""
    parts = message.split(b" ", 3)
    if len(parts) < 3 or parts[0] != b"PONG" or not parts[1].isdigit() \
            or not parts[2].isdigit():
        return None
    return int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else b""


class PingPongService(SessionHandler):
    def __init__(self, *, cookie_every: int = 1, secret: Optional[bytes] = None) -> None:
        self.cookie_every = cookie_every
        self.secret = secret
        self.count = 0

    def data_received(self, data: bytes, ppid: int) -> None:
        parts = data.split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"PING" or not parts[1].isdigit():
            self.session.send(b"ERROR not a ping", ppid=ppid)
            return
        self.count += 1
        reply = b"PONG %s %d" % (parts[1], self.count)
        if len(parts) > 2:
            reply += b" " + parts[2]
        self.session.send(reply, ppid=ppid)
        if self.cookie_every > 0 and self.count % self.cookie_every == 0:
            self.session.send_cookie(seal(self.secret, b"pingpong 1 %d" % self.count))

    def cookie_echo_received(self, cookie: bytes) -> None:
        state = unseal(self.secret, cookie)
        parts = state.split() if state is not None else []
        if len(parts) == 3 and parts[:2] == [b"pingpong", b"1"] and parts[2].isdigit():
            self.count = int(parts[2])
        else:
            pe_log.info("pingpong: cookie echo from %s not understood; starting afresh",
                        self.session.peer[0])
