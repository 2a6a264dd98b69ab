"""``rserpool pu --pool NAME``: an interactive pool user for the demo services
(like RSPLIB's ``rspterminal``).

Each line read from standard input goes to the pool element as one message
(without its line end; with ``--service pingpong`` as ``PING <n> <line>``),
and each message from the PE is printed on standard output, one per line.
Status lines go to standard error, prefixed ``rserpool pu:``: the PE
connected to, and a failover when that PE is lost (``failover: PE ... lost``
then ``failover: now PE ...``).  The session's latest Cookie is echoed to the
new PE, so a service's state (the echo and ping-pong counters) carries on.

Works with standard input from a pipe: at its end the command waits until
every message sent has had its answer (echo, pingpong, daytime), or until no
answer came for ``--linger`` seconds, then closes the session.  Exit status
0, or 1 when no PE could be reached (unknown pool, no registrar, all PEs
gone).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
from typing import Any, TextIO

from ._common import add_registrar_options, pool_user_options, registrar_missing, setup_logging

__all__ = ["add_parser", "run", "SERVICE_NAMES"]

#: Services this client knows how to talk to (rserpool.services).
SERVICE_NAMES = ("echo", "discard", "daytime", "chargen", "pingpong")
#: Services that answer each message with exactly one message.
_ANSWERING = {"echo", "pingpong", "daytime"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pu", help="interactive pool user (like rspterminal)",
        description="Connect to a pool element of pool NAME, send each standard-input "
        "line to it and print what it sends back; fail over to another PE when it is "
        "lost, handing the session's cookie to the new one.")
    p.add_argument("--pool", required=True, metavar="NAME", help="the pool handle")
    p.add_argument("--service", choices=SERVICE_NAMES, default="echo",
                   help="the pool's service, for how lines are sent (default: echo)")
    p.add_argument("--ppid", type=int, default=0,
                   help="SCTP PPID of the data messages (default: 0; never 11)")
    p.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                   help="pingpong: send a ping every SECONDS instead of reading stdin")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="with --interval: stop after N pings")
    p.add_argument("--max-messages", type=int, default=None, metavar="N",
                   help="exit after N messages from the PE (e.g. for chargen)")
    p.add_argument("--linger", type=float, default=2.0, metavar="SECONDS",
                   help="after the end of input, wait at most this long without an "
                   "answer (default: %(default)s)")
    p.add_argument("--show-cookies", action="store_true",
                   help="print a status line for each ASAP Cookie from the PE")
    p.add_argument("--cache-lifetime", type=float, default=0.0, metavar="SECONDS",
                   help="keep handle resolutions this long (default: 0, no cache)")
    p.add_argument("--retries", type=int, default=40, metavar="N",
                   help="failed resolutions/connects tolerated per failover (default: "
                   "%(default)s, 250 ms apart when nothing is found)")
    add_registrar_options(p)
    p.set_defaults(run=run)


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None],
                  stream: Any) -> threading.Thread:
    """Read lines in a daemon thread (works for pipes, files and terminals)."""
    def read() -> None:
        try:
            for line in iter(stream.readline, b""):
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError):
            pass
        finally:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:  # the loop is closed already
                pass
    thread = threading.Thread(target=read, name="rserpool-pu-stdin", daemon=True)
    thread.start()
    return thread


class _Terminal:
    def __init__(self, ns: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.ns = ns
        self.out = out
        self.err = err
        self.sent = 0
        self.received = 0
        self.seq = 0
        self.activity: asyncio.Event = asyncio.Event()
        self.finished: asyncio.Event = asyncio.Event()
        self.session: Any = None

    def status(self, text: str) -> None:
        self.err.write(f"rserpool pu: {text}\n")
        self.err.flush()

    def on_data(self, data: bytes, ppid: int) -> None:
        self.received += 1
        text = data.decode("utf-8", errors="replace")
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.finished.set()
        self.activity.set()
        if self.ns.max_messages is not None and self.received >= self.ns.max_messages:
            self.finished.set()

    def on_event(self, event: Any) -> None:
        from ..aio.user import (CookieReceived, FailoverCompleted, FailoverStarted,
                                RetryScheduled, SessionConnected, SessionFailed)

        if isinstance(event, SessionConnected):
            self.status(f"connected to PE {_pe_text(event.element)}"
                        + (" (cookie echoed)" if event.cookie_echoed else ""))
        elif isinstance(event, FailoverStarted):
            self.status(f"failover: PE 0x{event.element.identifier:08x} lost "
                        f"({event.reason})")
        elif isinstance(event, FailoverCompleted):
            self.status(f"failover: now PE {_pe_text(event.element)}"
                        + (" (cookie echoed)" if event.cookie_echoed else ""))
            self.activity.set()
        elif isinstance(event, RetryScheduled) and event.attempt == 1:
            self.status(f"no pool element yet ({event.reason}); retrying")
        elif isinstance(event, CookieReceived) and self.ns.show_cookies:
            self.status("cookie: " + event.cookie.decode("utf-8", errors="replace"))
        elif isinstance(event, SessionFailed):
            self.status(f"session failed: {event.reason}")
            self.finished.set()

    def send(self, line: bytes) -> None:
        line = line.rstrip(b"\r\n")
        if self.ns.service == "pingpong":
            self.seq += 1
            line = b"PING %d" % self.seq + (b" " + line if line else b"")
        self.session.send(line, ppid=self.ns.ppid)
        self.sent += 1

    def answered(self) -> bool:
        expected = self.sent + (1 if self.ns.service == "daytime" else 0)
        return self.ns.service in _ANSWERING and self.received >= expected

    async def linger(self) -> None:
        """After the input ended: until every answer is in, or quiet for --linger."""
        from ..protocol.asap_user import SessionState

        while not self.finished.is_set() and not self.answered():
            self.activity.clear()
            try:
                await asyncio.wait_for(self.activity.wait(), self.ns.linger)
            except asyncio.TimeoutError:
                if self.session.state is SessionState.ESTABLISHED:
                    return  # quiet while connected: nothing more is coming


def _pe_text(e: Any) -> str:
    addrs = ",".join(e.addresses)
    return f"0x{e.identifier:08x} ({e.transport} {addrs}:{e.port})"


async def _main(ns: argparse.Namespace, out: TextIO, err: TextIO, stdin: Any) -> int:
    from ..aio.user import PoolUser, SessionClosedError, SessionFailedError
    from ..errors import NoRegistrarError, OperationError

    term = _Terminal(ns, out, err)
    loop = asyncio.get_running_loop()
    async with PoolUser(cache_lifetime=ns.cache_lifetime, **pool_user_options(ns)) as pu:
        try:
            session = await pu.connect_session(ns.pool, on_data=term.on_data,
                                               on_event=term.on_event,
                                               max_retries=ns.retries)
        except (SessionFailedError, OperationError, NoRegistrarError) as exc:
            err.write(f"rserpool pu: cannot reach pool {ns.pool!r}: {exc}\n")
            return 1
        term.session = session
        try:
            if ns.interval is not None:
                n = 0
                while not term.finished.is_set() and (ns.count is None or n < ns.count):
                    term.send(b"")
                    n += 1
                    try:
                        await asyncio.wait_for(term.finished.wait(), ns.interval)
                    except asyncio.TimeoutError:
                        pass
            else:
                lines: asyncio.Queue[bytes | None] = asyncio.Queue()
                _stdin_reader(loop, lines, stdin)
                finished = asyncio.ensure_future(term.finished.wait())
                try:
                    while True:
                        getter = asyncio.ensure_future(lines.get())
                        done, _ = await asyncio.wait({getter, finished},
                                                     return_when=asyncio.FIRST_COMPLETED)
                        if getter not in done:
                            getter.cancel()
                            break
                        line = getter.result()
                        if line is None:
                            break
                        term.send(line)
                finally:
                    finished.cancel()
            await term.linger()
        except SessionClosedError:
            pass
        failed = session.failure is not None
        await session.close()
    if failed:
        return 1
    return 0


def run(ns: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None,
        stdin: Any = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    stdin = stdin if stdin is not None else sys.stdin.buffer
    setup_logging(ns.verbose)
    if ns.verbose <= 0:
        # the status lines above say it already (the library logs failovers as warnings)
        logging.getLogger("rserpool.pu").setLevel(logging.ERROR)
    if ns.ppid == 11 or not 0 <= ns.ppid <= 0xFFFFFFFF:
        err.write("rserpool pu: --ppid must be a 32-bit number other than 11 (ASAP)\n")
        return 2
    if ns.interval is not None and ns.service != "pingpong":
        err.write("rserpool pu: --interval is for --service pingpong\n")
        return 2
    if registrar_missing(ns, "pu", err):
        return 1
    try:
        return asyncio.run(_main(ns, out, err, stdin))
    except KeyboardInterrupt:
        return 130
