"""What the ``rserpool`` subcommands share.

* For the servers (``registrar``, ``pe``): :func:`parse_int` (an option
  value in any base), :func:`log_to_stderr`, and :class:`StopSignals`, which
  turns SIGINT and SIGTERM into a clean stop.
* For the pool users (``resolve``, ``pu``): the options that say how to
  find a registrar (:func:`add_registrar_options`), the
  :class:`~rserpool.aio.user.PoolUser` arguments they give
  (:func:`pool_user_options`), the check that one can be found at all
  (:func:`registrar_missing`), and :func:`setup_logging`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any, TextIO

from ..constants import ASAP_ANNOUNCE_GROUP, ASAP_PORT

__all__ = ["parse_int", "log_to_stderr", "StopSignals", "add_registrar_options",
           "pool_user_options", "registrar_missing", "setup_logging"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ---------------------------------------------------------------------------
# servers


def parse_int(text: str) -> int:
    """An integer option value, decimal or 0x-hex (``int(text, 0)``)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def log_to_stderr(level: int) -> logging.Logger:
    """Send the ``rserpool`` loggers' records from ``level`` up to stderr
    (one line each, timestamped); that logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root = logging.getLogger("rserpool")
    root.handlers[:] = [handler]
    root.setLevel(level)
    return root


class StopSignals:
    """``with StopSignals() as signals:`` in a coroutine: while in the block,
    SIGINT and SIGTERM (handled by the running event loop) set
    :attr:`stop`; ``await signals.wait()`` until one came.  The handlers
    are removed on leaving the block."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        #: The names of the signals received, in order.
        self.received: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_signal(self, sig: signal.Signals) -> None:
        self.received.append(sig.name)
        self.stop.set()

    def __enter__(self) -> "StopSignals":
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None
        for sig in self.SIGNALS:
            self._loop.remove_signal_handler(sig)

    async def wait(self) -> None:
        await self.stop.wait()

    def suffix(self) -> str:
        """``" on SIGTERM"`` (the first signal received), or ``""``."""
        return f" on {self.received[0]}" if self.received else ""


# ---------------------------------------------------------------------------
# pool users


def add_registrar_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``resolve`` and ``pu``: how to find a registrar."""
    p.add_argument("--registrar", action="append", default=[], metavar="ADDR:PORT",
                   help="a registrar's ASAP address (repeatable; [v6]:port for IPv6)")
    p.add_argument("--no-discovery", dest="discovery", action="store_false",
                   help="do not listen for registrar announces (multicast)")
    p.add_argument("--transport", choices=("tcp", "sctp"), default="tcp",
                   help="transport to the registrar (default: tcp)")
    p.add_argument("--announce", default=f"{ASAP_ANNOUNCE_GROUP}:{ASAP_PORT}",
                   metavar="GROUP:PORT",
                   help="multicast group of registrar announces (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                   help="registrar request timeout (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-v info, -vv debug)")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format=_LOG_FORMAT)


def pool_user_options(ns: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`~rserpool.aio.user.PoolUser` from the options."""
    from ..aio.multicast import parse_registrar_address

    group, port = parse_registrar_address(ns.announce, ASAP_PORT)
    return dict(registrars=ns.registrar, discovery=ns.discovery, transport=ns.transport,
                request_timeout=ns.timeout, announce_group=group, announce_port=port)


def registrar_missing(ns: argparse.Namespace, command: str, err: TextIO) -> bool:
    """True, after saying so on ``err``, when the options leave no way to a
    registrar (``--no-discovery`` and no ``--registrar``)."""
    if ns.registrar or ns.discovery:
        return False
    err.write(f"rserpool {command}: no registrar: give --registrar or allow discovery\n")
    return True
