"""Named loggers and rate-limited logging of peer-caused noise.

No I/O of its own: only the CLI configures handlers.  Loggers:
``rserpool.registrar``, ``rserpool.asap``, ``rserpool.enrp``, ``rserpool.wire``,
``rserpool.pe``, ``rserpool.pu``, ``rserpool.transport``.

A hostile peer must not be able to flood the log: :class:`RateLimitedLogger`
logs the first occurrence of a (peer, kind) pair at WARNING, later ones at
DEBUG, and at most ``burst`` WARNING lines per ``period`` seconds overall
(a summary line says how many were demoted).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable, Hashable

__all__ = [
    "registrar_log", "asap_log", "enrp_log", "wire_log", "pe_log", "pu_log",
    "transport_log", "RateLimitedLogger",
]

registrar_log = logging.getLogger("rserpool.registrar")
asap_log = logging.getLogger("rserpool.asap")
enrp_log = logging.getLogger("rserpool.enrp")
wire_log = logging.getLogger("rserpool.wire")
pe_log = logging.getLogger("rserpool.pe")
pu_log = logging.getLogger("rserpool.pu")
transport_log = logging.getLogger("rserpool.transport")


class RateLimitedLogger:
    """WARNING once per (peer, kind), DEBUG on repeats; at most ``burst``
    WARNINGs per ``period`` seconds in total.

    >>> import logging
    >>> t = [0.0]
    >>> rl = RateLimitedLogger(logging.getLogger("x"), clock=lambda: t[0], burst=2)
    >>> rl.warning(("10.0.0.1", "garbage"), "garbage from %s", "10.0.0.1")
    True
    >>> rl.warning(("10.0.0.1", "garbage"), "garbage from %s", "10.0.0.1")
    False
    >>> rl.suppressed
    1
    """

    def __init__(self, logger: logging.Logger, *, clock: Callable[[], float],
                 burst: int = 20, period: float = 60.0, remember: int = 4096) -> None:
        self.logger = logger
        self._clock = clock
        self._burst = burst
        self._period = period
        self._remember = remember
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._window_start = -1e300
        self._in_window = 0
        self.suppressed = 0

    def warning(self, key: Hashable, msg: str, *args: Any) -> bool:
        """Log at WARNING unless rate-limited (then DEBUG); True if WARNING."""
        now = self._clock()
        if now - self._window_start >= self._period:
            if self.suppressed and self._in_window >= self._burst:
                self.logger.warning("%d more peer warnings were logged at DEBUG level",
                                    self.suppressed)
                self.suppressed = 0
            self._window_start = now
            self._in_window = 0
        first = key not in self._seen
        if first:
            self._seen[key] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        if first and self._in_window < self._burst:
            self._in_window += 1
            self.logger.warning(msg, *args)
            return True
        self.suppressed += 1
        self.logger.debug(msg, *args)
        return False
