"""Discard service: every user message is dropped (RFC 863 in spirit).  No
replies, no cookies."""

from __future__ import annotations

from ..aio.element import SessionHandler

__all__ = ["DiscardService"]


class DiscardService(SessionHandler):
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def data_received(self, data: bytes, ppid: int) -> None:
        self.messages += 1
        self.bytes += len(data)
