"""asyncio helpers shared by the tests (pytest-asyncio is not used).

* :func:`run_with_timeout` -- ``asyncio.run`` with a deadline.
* :func:`until` and :func:`wait_for` -- poll a condition that another task
  or process brings about (not a timing assertion); they differ only in what
  they raise when it does not come: ``AssertionError`` naming what was
  waited for, or ``TimeoutError``.
* :func:`close_loop` -- cancel what is left on an event loop and close it.
* :class:`MessageCollector` and :func:`echo_endpoint` -- the two sides of a
  :mod:`rserpool.aio.transport` test: a collector of a channel's messages and
  close reasons, and an endpoint echoing every message back.

Each test module keeps its own default timeouts (TCP on loopback, kernel
SCTP inside User-Mode Linux and processes started by the test need
different ones) and passes them in.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Sequence

__all__ = ["run_with_timeout", "until", "wait_for", "close_loop", "MessageCollector",
           "echo_endpoint"]


def run_with_timeout(coro: Awaitable[Any] | Callable[[], Awaitable[Any]],
                     timeout: float) -> Any:
    """Run a coroutine (or a function returning one, called inside the new
    event loop) in a new event loop, cancelled after ``timeout`` seconds."""
    async def main() -> Any:
        return await asyncio.wait_for(coro() if callable(coro) else coro, timeout)
    return asyncio.run(main())


async def _reached(cond: Callable[[], Any], timeout: float, step: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(step)
    return True


async def until(cond: Callable[[], Any], timeout: float, what: str = "", *,
                step: float = 0.02) -> None:
    """Wait until ``cond()`` is true, checking every ``step`` seconds.

    :raises AssertionError: not within ``timeout`` ("gave up waiting for
        <what, or the condition>").
    """
    if not await _reached(cond, timeout, step):
        raise AssertionError(f"gave up waiting for {what or cond}")


async def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.02) -> None:
    """Wait until ``predicate()`` is true, checking every ``step`` seconds.

    :raises TimeoutError: not within ``timeout``.
    """
    if not await _reached(predicate, timeout, step):
        raise TimeoutError("condition not reached")


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks left on ``loop`` (waiting for them to finish), shut
    its async generators down, close it."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class MessageCollector:
    """Collects what a channel delivers: ``on_message`` and ``on_close`` are
    its callbacks; ``messages`` holds ``(data, ppid)`` pairs, ``closed`` the
    close reasons.  ``await wait(pred)`` returns once ``pred()`` is true
    after a callback (``asyncio.TimeoutError`` after ``timeout`` seconds,
    by default the one given to the constructor)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.messages: list[tuple[bytes, int]] = []
        self.closed: list[str] = []
        self.event = asyncio.Event()
        self.timeout = timeout

    def on_message(self, ch: Any, data: bytes, ppid: int) -> None:
        self.messages.append((data, ppid))
        self.event.set()

    def on_close(self, ch: Any, reason: str) -> None:
        self.closed.append(reason)
        self.event.set()

    async def wait(self, pred: Callable[[], Any], timeout: float | None = None) -> None:
        async def loop() -> None:
            while not pred():
                self.event.clear()
                await self.event.wait()
        await asyncio.wait_for(loop(), self.timeout if timeout is None else timeout)


async def echo_endpoint(transport: str, addresses: Sequence[str], framing: str = "asap", *,
                        timeout: float = 5.0) -> tuple[Any, MessageCollector, list[Any]]:
    """An endpoint (``start_endpoint(transport, addresses, 0, framing=...)``)
    that sends every message back on its channel with its PPID:
    ``(endpoint, collector of what it received and of its channels' close
    reasons, its channels)``; ``timeout`` is the collector's."""
    from ..aio.transport import start_endpoint

    side = MessageCollector(timeout)
    channels: list[Any] = []

    def on_channel(ch: Any) -> None:
        channels.append(ch)

        def echo(c: Any, data: bytes, ppid: int) -> None:
            side.on_message(c, data, ppid)
            c.send(data, ppid=ppid)
        ch.on_message = echo
        ch.on_close = side.on_close
    ep = await start_endpoint(transport, list(addresses), 0, framing=framing,
                              on_channel=on_channel)
    return ep, side, channels
