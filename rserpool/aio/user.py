"""The pool user's asyncio API (does I/O): handle resolution with a PU-side
cache, endpoint-unreachable reports, and sessions that fail over.

::

    async with PoolUser(registrars=["127.0.0.1:3863"], discovery=False) as pu:
        pes = await pu.resolve("EchoPool", items=3)     # [PoolElementInfo, ...]
        session = await pu.connect_session("EchoPool")
        session.send(b"hello")
        print(await session.recv())
        await session.close()

:class:`PoolUser` keeps one ASAP link to a registrar (TCP or SCTP, framing
``"asap"``), found by the registrar hunt of ``shared/spec/RSERPOOL.md`` 6.2:
static registrars plus those learned from multicast Server Announces
(:class:`~rserpool.aio.multicast.AnnounceListener` feeding a
:class:`~rserpool.aio.multicast.RegistrarTable`), up to three connection
attempts in parallel, the first link up wins.  A lost link is hunted again
(at once in the background, and by the next request); a request that was
in flight when it was lost is sent once more on the new link.  Requests time
out after ``request_timeout`` (3 s); a timeout drops the link (the answers
would no longer match the questions).

Resolution goes through :class:`~rserpool.protocol.asap_user.PoolUserCache`
(``cache_lifetime`` seconds, 0 = no caching, digest 6.7): a hit sends
nothing.  :meth:`PoolUser.report_unreachable` removes the PE from the cache
and sends ASAP Endpoint Unreachable (digest 6.8).

:class:`Session` drives :class:`~rserpool.protocol.asap_user.SessionCore`:
it connects to a PE's user transport (framing ``"session"``: application data
and ASAP control on one channel, PPID 11 for ASAP), keeps the latest Cookie,
and on connection loss (or :meth:`Session.failover`) reports the PE, resolves
the pool again for one PE, connects, sends the Cookie Echo first and tells
the application (``on_event``: :class:`FailoverStarted`,
:class:`FailoverCompleted`, ...).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable, Iterable, Optional, Sequence

from ..constants import ASAP_ANNOUNCE_GROUP, ASAP_PORT, PPID
from ..errors import (
    LocalProtocolError,
    NoRegistrarError,
    OperationError,
    RemoteProtocolError,
    RSerPoolError,
    WireError,
)
from ..log import pu_log
from ..protocol.asap_user import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    BusinessCardReceived,
    CloseChannel,
    Connect,
    CookieReceived,
    DataReceived,
    FailoverCompleted,
    FailoverStarted,
    MessageIgnored,
    PoolElementInfo,
    PoolUserCache,
    ReportUnreachable,
    Resolve,
    RetryScheduled,
    SendControl,
    SendData,
    SessionClosed,
    SessionConnected,
    SessionCore,
    SessionFailed,
    SessionState,
)
from ..wire import (
    AsapErrorMessage,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    decode_message,
    encode_message,
)
from . import transport as _transport
from .multicast import AnnounceListener, RegistrarEntry, RegistrarTable

__all__ = [
    "PoolUser", "Session", "SessionFailedError", "SessionClosedError", "PoolElementInfo",
    # events, re-exported for applications
    "SessionConnected", "FailoverStarted", "FailoverCompleted", "SessionFailed",
    "CookieReceived", "BusinessCardReceived", "DataReceived", "MessageIgnored",
    "RetryScheduled", "SessionClosed",
]

log = pu_log

#: Registrar connect timeout (digest 8.2).
REGISTRAR_CONNECT_TIMEOUT = 7.5
#: Session connect timeout (digest 6.16).
SESSION_CONNECT_TIMEOUT = 5.0
#: Parallel registrar connection attempts (digest 6.2).
PARALLEL_HUNT = 3


def _log_task_failure(task: "asyncio.Task[Any]") -> None:
    """Done-callback of background tasks: an exception is logged (and thereby
    retrieved), not left for the garbage collector to mention or lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %r failed", task, exc_info=exc)


def _abort_late_channel(opening: "asyncio.Task[Any]") -> None:
    """Done-callback of a session connect whose session went away meanwhile:
    a channel that came up anyway is aborted, not left open."""
    if opening.cancelled() or opening.exception() is not None:
        return
    ch = opening.result()
    ch.on_message = None
    ch.on_close = None
    if not ch.closed:
        ch.abort("session closed while connecting")


class SessionFailedError(RSerPoolError, ConnectionError):
    """The session could not reach any pool element (it is closed)."""


class SessionClosedError(RSerPoolError, ConnectionError):
    """The session is closed (by the application, or after it failed)."""


def _handle(pool_handle: bytes | str) -> bytes:
    if isinstance(pool_handle, str):
        pool_handle = pool_handle.encode("utf-8")
    if not isinstance(pool_handle, (bytes, bytearray)) or not pool_handle:
        raise ValueError("a pool handle is non-empty bytes or text")
    return bytes(pool_handle)


class _RegistrarLost(ConnectionError):
    """The registrar link went away while a request was waiting."""


class PoolUser:
    """A pool user: handle resolution, unreachable reports, sessions.

    :param registrars: static registrars, ``"host:port"`` (``[v6]:port``).
    :param discovery: also learn registrars from ASAP Server Announces on
        ``announce_group``:``announce_port`` (digest 6.2).
    :param transport: ``"tcp"`` or ``"sctp"`` for the registrar link.
    :param cache_lifetime: seconds a resolution is cached (0: not at all).
    :param request_timeout: seconds to wait for a registrar's answer.
    :param connect_timeout: seconds for one registrar connection attempt.
    :param hunt_timeout: seconds a hunt may wait for announces when no
        registrar is known yet (discovery only).
    :param seed: seed of the cache's selection engine (default: random).
    """

    def __init__(self, *, registrars: Iterable[str] = (), discovery: bool = True,
                 transport: str = "tcp", cache_lifetime: float = 0.0,
                 request_timeout: float = 3.0,
                 connect_timeout: float = REGISTRAR_CONNECT_TIMEOUT,
                 hunt_timeout: float = REGISTRAR_CONNECT_TIMEOUT,
                 announce_group: str = ASAP_ANNOUNCE_GROUP, announce_port: int = ASAP_PORT,
                 announce_interface: str | None = None, announce_timeout: float = 5.0,
                 seed: int | None = None) -> None:
        if transport not in ("tcp", "sctp"):
            raise ValueError(f"transport must be 'tcp' or 'sctp', not {transport!r}")
        self.transport = transport
        self.discovery = bool(discovery)
        self.request_timeout = float(request_timeout)
        self.connect_timeout = float(connect_timeout)
        self.hunt_timeout = float(hunt_timeout)
        self.announce_group = announce_group
        self.announce_port = announce_port
        self.announce_interface = announce_interface
        self.table = RegistrarTable(list(registrars), transport=transport,
                                    announce_timeout=announce_timeout)
        self.cache = PoolUserCache(cache_lifetime, seed=random.getrandbits(63)
                                   if seed is None else seed)
        #: Handle Resolutions / Endpoint Unreachables sent (statistics).
        self.requests_sent = 0
        self.unreachable_sent = 0
        #: The registrar in use (None: none yet / lost).
        self.registrar: RegistrarEntry | None = None
        self._link: _transport.Channel | None = None
        self._pending: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._hunt_lock: asyncio.Lock | None = None
        self._announced: asyncio.Event | None = None
        self._listener: AnnounceListener | None = None
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sessions: set[Session] = set()

    # -- life cycle ----------------------------------------------------------

    async def start(self) -> "PoolUser":
        """Start listening for announces (when discovery is on).  Called by
        the first request when not called before."""
        if self._closed:
            raise RuntimeError("this PoolUser is closed")
        if self._started:
            return self
        self._started = True
        self._hunt_lock = asyncio.Lock()
        self._announced = asyncio.Event()
        if self.discovery:
            try:
                self._listener = await AnnounceListener.start(
                    self.announce_group, self.announce_port, on_datagram=self._on_announce,
                    interface=self.announce_interface)
            except OSError as exc:
                log.warning("cannot listen for registrar announces on %s:%d: %s",
                            self.announce_group, self.announce_port, exc)
        return self

    async def __aenter__(self) -> "PoolUser":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every session, the registrar link and the announce listener."""
        if self._closed:
            return
        self._closed = True
        for session in list(self._sessions):
            await session.close()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        link, self._link = self._link, None
        self._fail_pending(_RegistrarLost("pool user closed"))
        if link is not None:
            link.close()
            try:
                await asyncio.wait_for(link.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                link.abort("close timed out")

    @property
    def closed(self) -> bool:
        return self._closed

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_task_failure)
        return task

    # -- public API --------------------------------------------------------------

    async def resolve(self, pool_handle: bytes | str, items: int | None = None
                      ) -> list[PoolElementInfo]:
        """Select ``items`` PEs of a pool (None: as many as the registrar
        gives by default), from the cache when it holds the pool, else by a
        handle resolution.

        :raises OperationError: the registrar refused (e.g. cause 0x0009,
            unknown pool handle).
        :raises NoRegistrarError: no registrar could be reached or it did not answer.
        """
        handle = _handle(pool_handle)
        if items is not None and items < 1:
            raise ValueError("items must be >= 1 (or None)")
        await self.start()
        loop = asyncio.get_running_loop()
        hit = self.cache.lookup(handle, items, loop.time())
        if hit is not None:
            log.debug("resolved %r from the cache: %s", handle,
                      [f"0x{e.identifier:08x}" for e in hit])
            return hit
        response = await self._request(handle, self.cache.request_items(items))
        result = self.cache.store(response, items, loop.time())
        log.debug("resolved %r: %s", handle, [f"0x{e.identifier:08x}" for e in result])
        return result

    async def report_unreachable(self, pool_handle: bytes | str, identifier: int) -> None:
        """Forget a PE in the cache and tell the registrar it is unreachable
        (no answer is expected).

        :raises NoRegistrarError: no registrar could be reached.
        """
        handle = _handle(pool_handle)
        self.cache.remove(handle, identifier)
        await self.start()
        link = await self._registrar_link()
        try:
            link.send(encode_message(EndpointUnreachable(handle, identifier)))
        except ConnectionError as exc:
            raise NoRegistrarError(f"registrar link lost: {exc}") from exc
        self.unreachable_sent += 1
        log.info("reported PE 0x%08x of %r unreachable", identifier, handle)

    async def connect_session(self, pool_handle: bytes | str, *,
                              cookie: bytes | None = None,
                              on_data: Callable[[bytes, int], None] | None = None,
                              on_event: Callable[[Any], None] | None = None,
                              retry_delay: float = DEFAULT_RETRY_DELAY,
                              max_retries: int = DEFAULT_MAX_RETRIES,
                              connect_timeout: float = SESSION_CONNECT_TIMEOUT) -> "Session":
        """Open a session to a PE of the pool; returns once it is connected.

        :param cookie: a Cookie to hand to the first PE (Cookie Echo).
        :param on_data: ``(data, ppid)`` for each message from the PE; without
            it, read them with :meth:`Session.recv`.
        :param on_event: called with each session event (connected, cookie,
            failover started/completed, failed, closed).
        :raises SessionFailedError: no PE could be reached.
        """
        await self.start()
        session = Session(self, _handle(pool_handle), cookie=cookie, on_data=on_data,
                          on_event=on_event, retry_delay=retry_delay,
                          max_retries=max_retries, connect_timeout=connect_timeout)
        self._sessions.add(session)
        await session._open()
        return session

    # -- registrar link ----------------------------------------------------------

    def _on_announce(self, data: bytes, source: tuple[str, int]) -> None:
        found = self.table.learn(data, source, asyncio.get_running_loop().time())
        if found and self._announced is not None:
            self._announced.set()

    async def _registrar_link(self) -> _transport.Channel:
        link = self._link
        if link is not None and not link.closed:
            return link
        assert self._hunt_lock is not None
        async with self._hunt_lock:
            link = self._link
            if link is not None and not link.closed:
                return link
            return await self._hunt()

    async def _hunt(self) -> _transport.Channel:
        """Registrar hunt (digest 6.2): up to three candidates in parallel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hunt_timeout
        tried_all = False
        errors: list[str] = []
        while not self._closed:
            candidates = self.table.candidates(loop.time())
            if candidates:
                start = random.randrange(len(candidates))
                ordered = candidates[start:] + candidates[:start]
                for i in range(0, len(ordered), PARALLEL_HUNT):
                    link = await self._connect_any(ordered[i:i + PARALLEL_HUNT], errors)
                    if link is not None:
                        return link
                tried_all = True
            if not self.discovery or self._listener is None:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # wait for an announce (or the deadline) and try again
            assert self._announced is not None
            self._announced.clear()
            try:
                await asyncio.wait_for(self._announced.wait(),
                                       min(remaining, 0.5 if tried_all else remaining))
            except asyncio.TimeoutError:
                pass
        if self._closed:
            raise NoRegistrarError("pool user closed")
        where = "; ".join(errors) if errors else (
            "no registrar configured" if not self.discovery
            else f"no registrar announced itself on {self.announce_group}:"
                 f"{self.announce_port} within {self.hunt_timeout:g} s")
        raise NoRegistrarError(f"no registrar reachable over {self.transport}: {where}")

    async def _connect_any(self, entries: Sequence[RegistrarEntry],
                           errors: list[str]) -> _transport.Channel | None:
        tasks = {asyncio.ensure_future(self._open_link(e)): e for e in entries}
        winner: _transport.Channel | None = None
        try:
            pending = set(tasks)
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    entry = tasks[task]
                    exc = task.exception()
                    if exc is not None:
                        errors.append(f"{entry.host}:{entry.port}: {str(exc) or type(exc).__name__}")
                        continue
                    ch = task.result()
                    if winner is None:
                        winner = ch
                        self._adopt(ch, entry)
                    else:
                        ch.close()
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            rest = [t for t in tasks if not t.done() or t.cancelled()]
            if rest:
                await asyncio.gather(*rest, return_exceptions=True)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is None:
                    ch = task.result()
                    if ch is not winner:
                        ch.close()
        return winner

    async def _open_link(self, entry: RegistrarEntry) -> _transport.Channel:
        return await _transport.open_channel(
            entry.transport, entry.host, entry.port, framing="asap",
            timeout=self.connect_timeout, on_message=self._on_registrar_message,
            on_close=self._on_registrar_close)

    def _adopt(self, link: _transport.Channel, entry: RegistrarEntry) -> None:
        self._link = link
        self.registrar = entry
        log.info("using registrar %s:%d over %s", entry.host, entry.port, entry.transport)

    def _on_registrar_message(self, link: _transport.Channel, data: bytes, ppid: int) -> None:
        if link is not self._link:
            return
        try:
            msg = decode_message(data, "asap")
        except WireError as exc:
            log.warning("undecodable message from registrar %s: %s", link.peer, exc)
            self._drop_link(link, f"undecodable message: {exc}")
            return
        if isinstance(msg, HandleResolutionResponse):
            for i, (handle, fut) in enumerate(self._pending):
                if handle == msg.pool_handle:
                    del self._pending[i]
                    if not fut.done():
                        fut.set_result(msg)
                    return
            log.warning("registrar %s answered a resolution of %r nobody asked for",
                        link.peer, msg.pool_handle)
            return
        if isinstance(msg, AsapErrorMessage):
            # digest 6.2 item 5: an ASAP Error makes the PU drop the registrar
            cause = msg.causes[0] if msg.causes else None
            log.warning("registrar %s sent ASAP Error %s", link.peer, cause)
            err: Exception = (OperationError(cause.code, cause.info) if cause is not None
                              else RemoteProtocolError("ASAP Error without a cause"))
            self._fail_pending(err)
            self._drop_link(link, "ASAP Error")
            return
        log.warning("unexpected %s from registrar %s", type(msg).__name__, link.peer)
        self._drop_link(link, f"unexpected {type(msg).__name__}")

    def _drop_link(self, link: _transport.Channel, reason: str) -> None:
        if link is self._link:
            self._link = None
            self.registrar = None
            self._fail_pending(_RegistrarLost(reason))
        link.abort(reason)

    def _on_registrar_close(self, link: _transport.Channel, reason: str | None) -> None:
        if link is not self._link:
            return
        log.warning("registrar link %s:%d lost (%s); hunting again",
                    link.peer[0], link.peer[1], reason)
        self._link = None
        self.registrar = None
        self._fail_pending(_RegistrarLost(reason or "registrar link lost"))
        if not self._closed:
            self._spawn(self._rehunt())

    async def _rehunt(self) -> None:
        try:
            await self._registrar_link()
        except NoRegistrarError as exc:
            log.info("registrar hunt after a lost link failed: %s", exc)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, []
        for _handle_, fut in pending:
            if not fut.done():
                fut.set_exception(exc)

    async def _request(self, handle: bytes, items: int | None) -> HandleResolutionResponse:
        loop = asyncio.get_running_loop()
        data = encode_message(HandleResolution(handle, items))
        last: Exception | None = None
        for _attempt in range(2):   # once more after a lost link, on a new one
            link = await self._registrar_link()
            fut: asyncio.Future[Any] = loop.create_future()
            self._pending.append((handle, fut))
            try:
                link.send(data)
            except ConnectionError as exc:
                self._pending = [p for p in self._pending if p[1] is not fut]
                last = exc
                continue
            self.requests_sent += 1
            try:
                return await asyncio.wait_for(fut, self.request_timeout)
            except asyncio.TimeoutError:
                self._pending = [p for p in self._pending if p[1] is not fut]
                self._drop_link(link, "request timed out")
                raise NoRegistrarError(
                    f"registrar {link.peer[0]}:{link.peer[1]} did not answer within "
                    f"{self.request_timeout:g} s") from None
            except _RegistrarLost as exc:
                last = exc
                continue
        raise NoRegistrarError(f"registrar link lost during the request: {last}")

    # -- used by sessions --------------------------------------------------------

    def _report_soon(self, pool_handle: bytes, identifier: int) -> None:
        self.cache.remove(pool_handle, identifier)
        if not self._closed:
            self._spawn(self._report_quietly(pool_handle, identifier))

    async def _report_quietly(self, pool_handle: bytes, identifier: int) -> None:
        try:
            await self.report_unreachable(pool_handle, identifier)
        except (NoRegistrarError, ConnectionError, OSError) as exc:
            log.info("could not report PE 0x%08x unreachable: %s", identifier, exc)


class Session:
    """A PU session with one PE at a time; it fails over by itself.

    Made by :meth:`PoolUser.connect_session`.  Attributes: :attr:`element`
    (the PE in use, a :class:`PoolElementInfo`), :attr:`cookie` (the latest
    Cookie), :attr:`business_card`, :attr:`failovers`, :attr:`state`.
    """

    def __init__(self, pu: PoolUser, pool_handle: bytes, *, cookie: bytes | None,
                 on_data: Callable[[bytes, int], None] | None,
                 on_event: Callable[[Any], None] | None, retry_delay: float,
                 max_retries: int, connect_timeout: float) -> None:
        self._pu = pu
        self.pool_handle = pool_handle
        self._core = SessionCore(pool_handle, cookie=cookie, retry_delay=retry_delay,
                                 max_retries=max_retries)
        self.on_data = on_data
        self.on_event = on_event
        self.connect_timeout = connect_timeout
        self._loop = asyncio.get_running_loop()
        self._channel: _transport.Channel | None = None
        self._early: list[tuple[bytes, int]] = []
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._inbox: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.failure: str | None = None

    # -- state ------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._core.state

    @property
    def element(self) -> PoolElementInfo | None:
        """The PE in use (while established), or the one being tried."""
        return self._core.element

    @property
    def cookie(self) -> bytes | None:
        """The latest Cookie from a PE (handed to the next one on failover)."""
        return self._core.cookie

    @property
    def business_card(self) -> Any:
        return self._core.business_card

    @property
    def failovers(self) -> int:
        return self._core.failovers

    @property
    def closed(self) -> bool:
        return self._core.state is SessionState.CLOSED

    @property
    def channel(self) -> _transport.Channel | None:
        """The channel to the current PE (None during a failover)."""
        return self._channel

    # -- application calls -------------------------------------------------------

    def send(self, data: bytes, *, ppid: int = 0) -> None:
        """Send application data (queued while a failover is under way).

        :raises SessionClosedError: the session is closed.
        """
        self._feed(lambda now: self._core.send(data, now, ppid=ppid))

    def send_business_card(self, card: Any) -> None:
        """Send this application's own ASAP Business Card (again after each failover)."""
        self._feed(lambda now: self._core.send_business_card(card, now))

    def failover(self, *, report: bool = True, reason: str = "failover requested") -> None:
        """Leave the current PE for another one now (``report``: tell the
        registrar the PE is unreachable)."""
        self._feed(lambda now: self._core.failover(now, report=report, reason=reason))

    async def recv(self) -> bytes:
        """The next application message from a PE (without ``on_data``).

        :raises SessionClosedError: the session is closed (or failed) and
            nothing is left to read.
        """
        return (await self.recv_message())[0]

    async def recv_message(self) -> tuple[bytes, int]:
        """Like :meth:`recv`, as ``(data, ppid)``."""
        if self._inbox.empty() and self.closed:
            raise SessionClosedError(self.failure or "session closed")
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # wake any other reader too
            raise SessionClosedError(self.failure or "session closed")
        return item

    async def close(self) -> None:
        """Close the session (idempotent): a graceful close of the channel."""
        channel = self._channel
        if not self.closed:
            self._feed(lambda now: self._core.close(now))
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pu._sessions.discard(self)
        if channel is not None:
            try:
                await asyncio.wait_for(channel.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                channel.abort("close timed out")

    async def wait_closed(self) -> None:
        """Until the session is closed or has failed."""
        await asyncio.shield(self._done)

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        pe = self.element
        where = f" PE 0x{pe.identifier:08x}" if pe is not None else ""
        return f"<Session {self.pool_handle!r} {self.state.value}{where}>"

    # -- the pump ------------------------------------------------------------------

    async def _open(self) -> None:
        self._feed(lambda now: self._core.open(now))
        try:
            await asyncio.shield(self._opened)
        except asyncio.CancelledError:
            await self.close()
            raise

    def _feed(self, step: Callable[[float], list[Any]]) -> None:
        try:
            outputs = step(self._loop.time())
        except LocalProtocolError as exc:
            if self.closed:
                raise SessionClosedError(self.failure or "session closed") from None
            raise exc
        self._apply(outputs)

    def _apply(self, outputs: list[Any]) -> None:
        lost: str | None = None
        unsent: list[SendData] = []
        for out in outputs:
            if isinstance(out, (SendData, SendControl)):
                if lost is None:
                    lost = self._send(out)
                if lost is not None and isinstance(out, SendData):
                    unsent.append(out)   # the Cookie Echo / card are re-sent anyway
            elif isinstance(out, Resolve):
                self._start_task(self._resolve(out))
            elif isinstance(out, Connect):
                self._start_task(self._connect(out.element))
            elif isinstance(out, ReportUnreachable):
                self._pu._report_soon(out.pool_handle, out.identifier)
            elif isinstance(out, CloseChannel):
                self._close_channel(out.abort)
            else:
                self._dispatch(out)
        self._arm_timer()
        if lost is not None:
            # the channel went away before its close callback ran: fail over
            # now and give the unsent data to the next PE
            ch, self._channel = self._channel, None
            if ch is not None:
                ch.on_close = None
                ch.on_message = None
            if self._core.state is SessionState.ESTABLISHED:
                self._feed(lambda now: self._core.connection_lost(lost or "", now))
            for item in unsent:
                if not self.closed:
                    self._feed(lambda now, item=item: self._core.send(item.data, now,
                                                                      ppid=item.ppid))

    def _send(self, out: SendData | SendControl) -> str | None:
        """Send on the current channel; the reason it is gone, or None."""
        ch = self._channel
        if ch is None:
            return None     # closing down: nothing to send on
        if isinstance(out, SendData):
            data, ppid = out.data, out.ppid
        else:
            data, ppid = encode_message(out.message), PPID.ASAP
        try:
            ch.send(data, ppid=ppid)
        except ConnectionError as exc:
            return ch.close_reason or str(exc) or "connection lost"
        return None

    def _cancel_task(self) -> None:
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _start_task(self, coro: Awaitable[Any]) -> None:
        self._cancel_task()
        self._task = asyncio.ensure_future(coro)
        self._task.add_done_callback(_log_task_failure)

    def _close_channel(self, abort: bool) -> None:
        self._cancel_task()
        ch, self._channel = self._channel, None
        self._early.clear()
        if ch is None:
            return
        ch.on_close = None
        ch.on_message = None
        if abort:
            ch.abort("session failover" if not self.closed else "session closed")
        else:
            ch.close()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._core.next_deadline()
        if due is not None:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._feed(lambda now: self._core.handle_timer(now))

    def _call_app(self, callback: Callable[..., None], *args: Any) -> None:
        """An application callback; its exceptions are logged, not raised
        (they must not look like a broken channel and cause a failover)."""
        try:
            callback(*args)
        except Exception:
            log.exception("session %r: application callback %r failed", self.pool_handle,
                          callback)

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, DataReceived):
            if self.on_data is not None:
                self._call_app(self.on_data, event.data, event.ppid)
            else:
                self._inbox.put_nowait((event.data, event.ppid))
            return
        if isinstance(event, FailoverStarted):
            log.warning("session %r: PE 0x%08x lost (%s); failing over", self.pool_handle,
                        event.element.identifier, event.reason)
        elif isinstance(event, FailoverCompleted):
            log.warning("session %r: failed over to PE 0x%08x%s", self.pool_handle,
                        event.element.identifier,
                        " (cookie echoed)" if event.cookie_echoed else "")
        elif isinstance(event, MessageIgnored):
            log.info("session %r: %s", self.pool_handle, event.reason)
        elif isinstance(event, RetryScheduled):
            log.info("session %r: %s; retrying", self.pool_handle, event.reason)
        if isinstance(event, SessionConnected):
            if not self._opened.done():
                self._opened.set_result(None)
        elif isinstance(event, (SessionFailed, SessionClosed)):
            if isinstance(event, SessionFailed):
                self.failure = event.reason
                log.warning("session %r failed: %s", self.pool_handle, event.reason)
                self._close_channel(abort=True)
            if not self._opened.done():
                self._opened.set_exception(SessionFailedError(
                    self.failure or "session closed before it was connected"))
                self._opened.exception()  # retrieved: no "never retrieved" warning
            if not self._done.done():
                self._done.set_result(None)
            self._inbox.put_nowait(None)
            self._pu._sessions.discard(self)
        if self.on_event is not None:
            self._call_app(self.on_event, event)

    # -- tasks the actions start ----------------------------------------------------

    async def _resolve(self, action: Resolve) -> None:
        try:
            found = await self._pu.resolve(action.pool_handle, action.items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # OperationError, NoRegistrarError, OSError, closed PU
            if not isinstance(exc, (OperationError, NoRegistrarError, OSError)):
                log.warning("session %r: resolution failed: %r", self.pool_handle, exc)
            if self._core.state in (SessionState.RESOLVING, SessionState.FAILOVER_RESOLVING):
                reason = str(exc) or type(exc).__name__  # exc is unbound after the block
                self._feed(lambda now: self._core.not_resolved(reason, now))
            return
        if self._core.state in (SessionState.RESOLVING, SessionState.FAILOVER_RESOLVING):
            self._feed(lambda now: self._core.resolved(found, now))

    async def _connect(self, element: PoolElementInfo) -> None:
        errors = []
        if element.transport not in ("tcp", "sctp"):
            errors.append(f"user transport {element.transport} is not supported")
        else:
            for host in element.addresses:
                # in a task of its own: a channel that comes up after this
                # session was closed (this task cancelled) is still reachable,
                # and aborted
                opening = asyncio.ensure_future(_transport.open_channel(
                    element.transport, host, element.port, framing="session",
                    timeout=self.connect_timeout, on_message=self._on_message,
                    on_close=self._on_close))
                try:
                    ch = await asyncio.shield(opening)
                except asyncio.CancelledError:
                    opening.cancel()
                    opening.add_done_callback(_abort_late_channel)
                    raise
                except (OSError, ConnectionError, TimeoutError) as exc:
                    errors.append(f"{host}:{element.port}: {str(exc) or type(exc).__name__}")
                    continue
                if ch.closed:
                    errors.append(f"{host}:{element.port}: closed at once "
                                  f"({ch.close_reason})")
                    continue
                if not self._still_connecting(element):
                    # closed (or moved on) while the channel was being opened
                    ch.on_message = None
                    ch.on_close = None
                    ch.abort("session closed while connecting")
                    return
                self._channel = ch
                early, self._early = self._early, []
                self._feed(lambda now: self._core.connected(now))
                for data, ppid in early:
                    if self._channel is not ch:
                        break
                    self._on_message(ch, data, ppid)
                return
        reason = "; ".join(errors) or "no address"
        self._feed(lambda now: self._core.connect_failed(reason, now))

    def _still_connecting(self, element: PoolElementInfo) -> bool:
        """True while the core still waits for the channel to ``element``
        that the current task opens."""
        return (self._core.state in (SessionState.CONNECTING, SessionState.FAILOVER_CONNECTING)
                and self._core.element is element and self._task is asyncio.current_task())

    # -- channel callbacks ------------------------------------------------------------

    def _on_message(self, ch: _transport.Channel, data: bytes, ppid: int) -> None:
        if ch is not self._channel:
            if self._channel is None and not self.closed:
                self._early.append((data, ppid))   # before we took the channel
            return
        if ppid == PPID.ASAP:
            try:
                msg = decode_message(data, "asap")
            except WireError as exc:
                log.warning("session %r: undecodable ASAP message from %s: %s",
                            self.pool_handle, ch.peer, exc)
                return
            self._feed(lambda now: self._core.message_received(msg, now))
        else:
            self._feed(lambda now: self._core.data_received(data, ppid, now))

    def _on_close(self, ch: _transport.Channel, reason: Optional[str]) -> None:
        if ch is not self._channel:
            return
        self._channel = None
        if self._core.state is SessionState.ESTABLISHED:
            self._feed(lambda now: self._core.connection_lost(reason or "connection lost",
                                                              now))
