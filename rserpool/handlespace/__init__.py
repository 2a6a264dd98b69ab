"""The handlespace: a registrar's pools of pool elements, every selection
policy of RFC 5356 and RSPLIB, ownership checksums, timers and takeover.

No I/O and no clock (time is the ``now`` argument).  The classes come from the
compiled ``rserpool._c.handlespace`` or, with ``RSERPOOL_NO_EXTENSIONS=1``,
from the pure-Python twin ``rserpool.handlespace._handlespace_py``; both follow
``SPEC.md`` in this folder bit for bit.

    from rserpool.handlespace import Handlespace
    hs = Handlespace(own_id=0x11111111, seed=1)
    hs.register(b"EchoPool", pool_element, now)        # a wire PoolElement
    response = hs.resolve(b"EchoPool", 3)              # Handle Resolution Response bytes
"""

from __future__ import annotations

from .. import _accel

_impl = _accel.load("handlespace", "rserpool.handlespace._handlespace_py")

IMPLEMENTATION: str = _impl.IMPLEMENTATION
Handlespace = _impl.Handlespace
PoolElementEntry = _impl.PoolElementEntry
Random = _impl.Random
TIMER_NONE: int = _impl.TIMER_NONE
TIMER_KEEP_ALIVE_TRANSMISSION: int = _impl.TIMER_KEEP_ALIVE_TRANSMISSION
TIMER_KEEP_ALIVE_TIMEOUT: int = _impl.TIMER_KEEP_ALIVE_TIMEOUT
TIMER_EXPIRY: int = _impl.TIMER_EXPIRY
pe_checksum_sum = _impl.pe_checksum_sum
fold_checksum = _impl.fold_checksum

__all__ = [
    "IMPLEMENTATION", "Handlespace", "PoolElementEntry", "Random", "TIMER_NONE",
    "TIMER_KEEP_ALIVE_TRANSMISSION", "TIMER_KEEP_ALIVE_TIMEOUT", "TIMER_EXPIRY",
    "pe_checksum_sum", "fold_checksum",
]
