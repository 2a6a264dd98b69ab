"""Daytime service (RFC 867 in spirit): one message with the PE's local date
and time, ``"Thu Nov 26 19:46:00 2025\\r\\n"`` (ASCII), when the session opens
and again in reply to every message the PU sends.  The session stays open (a
PU failing over must not take a close for a failure).  No cookies."""

from __future__ import annotations

import time
from typing import Callable

from ..aio.element import DATA_PPID, Session, SessionHandler

__all__ = ["DaytimeService"]


class DaytimeService(SessionHandler):
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def connection_made(self, session: Session) -> None:
        super().connection_made(session)
        self._tell(DATA_PPID)

    def data_received(self, data: bytes, ppid: int) -> None:
        self._tell(ppid)

    def _tell(self, ppid: int) -> None:
        text = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(self.clock()))
        self.session.send(text.encode("ascii") + b"\r\n", ppid=ppid)
