"""Helpers for tests of registrar scopes (ENRP): compare what registrars hold,
and speak raw ENRP to one (a hostile peer, a handle table dump).

Used by ``tests/integration/test_enrp_*.py`` and ``tests/sctp/test_enrp_sctp.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..constants import PPID
from ..wire import decode_message, encode_message

__all__ = ["handlespace_table", "same_handlespace", "RawEnrpPeer"]


def handlespace_table(reg: Any) -> set[tuple[bytes, int, int]]:
    """(pool handle, PE id, home) of every PE a registrar holds."""
    hs = reg.handlespace
    return {(h, e.identifier, e.home_registrar) for h in hs.pools() for e in hs.pool_elements(h)}


def same_handlespace(*regs: Any) -> bool:
    """Every registrar holds the same PEs with the same homes and checksums."""
    first = handlespace_table(regs[0])
    return all(handlespace_table(r) == first for r in regs[1:]) and all(
        r.handlespace.checksums() == regs[0].handlespace.checksums() for r in regs[1:])


class RawEnrpPeer:
    """One association to a registrar's ENRP endpoint, speaking raw ENRP
    messages (encoded by :mod:`rserpool.wire`, or raw bytes)."""

    def __init__(self) -> None:
        #: (message, PPID, size) of every message received, oldest first.
        self.messages: asyncio.Queue[tuple[Any, int, int]] = asyncio.Queue()
        self.channel: Any = None

    @classmethod
    async def connect(cls, reg: Any, *, transport: str = "tcp",
                      local: str | None = None) -> "RawEnrpPeer":
        """Connect to ``reg.enrp_address(transport)`` (from ``local`` when given)."""
        from ..aio.transport import open_channel

        self = cls()
        host, port = reg.enrp_address(transport)
        self.channel = await open_channel(transport, host, port,
                                          local_addresses=[local] if local else (),
                                          on_message=self._on_message)
        return self

    def _on_message(self, ch: Any, data: bytes, ppid: int) -> None:
        self.messages.put_nowait((decode_message(data, "enrp"), ppid, len(data)))

    def send(self, msg: Any, ppid: int = PPID.ENRP) -> None:
        self.channel.send(msg if isinstance(msg, (bytes, bytearray)) else encode_message(msg),
                          ppid=ppid)

    async def recv_full(self, kind: type, timeout: float = 5.0) -> tuple[Any, int, int]:
        """(message, PPID, size) of the next message of type ``kind`` (others
        are skipped).

        :raises asyncio.TimeoutError: none within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            item = await asyncio.wait_for(self.messages.get(), max(0.01, end - loop.time()))
            if type(item[0]) is kind:
                return item

    async def recv(self, kind: type, timeout: float = 5.0) -> Any:
        """The next message of type ``kind`` (others are skipped)."""
        return (await self.recv_full(kind, timeout))[0]

    def pending(self, kind: type) -> list[Any]:
        """Messages of type ``kind`` already received (the queue is emptied)."""
        out = []
        while not self.messages.empty():
            item = self.messages.get_nowait()
            if type(item[0]) is kind:
                out.append(item[0])
        return out

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
