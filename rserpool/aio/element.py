"""Run a service as a pool element (PE) of an RSerPool pool (does I/O).

Drives the sans-I/O :class:`~rserpool.protocol.asap_element.PoolElementCore`
over :mod:`rserpool.aio.transport` and finds registrars with
:mod:`rserpool.aio.multicast` (static list and/or Server Announces, digest 6.2).

Example::

    from rserpool.aio.element import PoolElement
    from rserpool.services.echo import EchoService

    pe = PoolElement("EchoPool", policy="least_used", load=0.1,
                     registrars=["127.0.0.1:3863"], discovery=False,
                     transport="tcp", addresses=["127.0.0.1"], service=EchoService)
    await pe.start()          # binds, finds a registrar, registers
    print(pe.identifier, pe.user_addresses, pe.home_registrar)
    pe.update_load(0.5)       # re-registers at once
    await pe.stop()           # deregisters, closes

Two endpoints are bound, both on ``addresses``:

* the **user endpoint** (``framing="session"``): pool users connect here; each
  inbound channel is a :class:`Session` handed to a handler made by
  ``service()`` (a :class:`SessionHandler`).  Data has any PPID but 11; PPID
  11 carries ASAP control messages (Cookie to the PU, Cookie Echo from it,
  digest 6.16).  The Registration's user transport parameter names it with
  transport use "data plus control".
* the **ASAP endpoint** (``framing="asap"``): over SCTP the one-to-many socket
  from which the PE opens its association to the registrar
  (``Endpoint.connect``) and on which another registrar can reach it (a
  takeover's keep-alive with the H bit, digest 6.6 and 6.14); over TCP a
  listener for the same purpose, whose port the Registration names in an SCTP
  transport parameter inside the Pool Element parameter (the registrar's
  reading of it is in ``rserpool.protocol.asap_registrar``).

Who may take the PE over: a keep-alive with the H bit on an inbound link
(one a peer opened to the ASAP endpoint) moves the PE's home there only when
one of the peer's addresses is an address of a registrar the PE knows: an
entry of its registrar table (a static registrar, its host name resolved at
start, or a registrar learned from Server Announces, with every address the
announce lists) or a registrar its own hunt connected to.  A claim from any
other peer is refused: no Endpoint Keep-Alive Ack, the inbound link is
closed, a (rate-limited) warning is logged and the event
:class:`~rserpool.protocol.asap_element.HomeClaimRefused` is emitted; the
registration at the home registrar is untouched.  ``accept_any_home=True``
(CLI ``--accept-any-home``) accepts every claim, as RSPLIB does.

Inbound ASAP links are limited: at most ``max_inbound_links`` (16) at a time
besides the home link (further ones are closed at once), and an inbound
link that is not the home link and sends nothing for
``inbound_idle_timeout`` seconds (10 x ``request_timeout``) is closed.

Registrar hunt: candidates are the static registrars first, then the ones
learned from announces (newest first); registrars that failed recently go last.
They are tried one after another (connect timeout each); when all fail the
hunt waits with exponential backoff (0.25 s doubling to 5 s) or until a new
registrar is announced.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ..constants import ASAP_ANNOUNCE_GROUP, ASAP_PORT, PPID, TransportUse
from ..errors import ConfigError, NoRegistrarError, OperationError, WireError
from ..log import RateLimitedLogger, pe_log
from ..protocol.asap_element import (
    DEFAULT_REGISTRATION_INTERVAL, DEFAULT_REQUEST_TIMEOUT, Deregistered,
    HomeClaimRefused, HomeRegistrarChanged, KeepAliveAnswered, MessageIgnored, PoolElementCore,
    ProtocolViolated, Registered, RegistrarHuntStarted, RegistrarLost, RegistrationRefused,
    load_from_fraction, make_policy, policy_with)
from ..wire import (BusinessCard, Cookie, CookieEcho, EndpointKeepAlive, PoolPolicy,
                    SctpTransport, TcpTransport, decode_message, encode_message)
from .multicast import AnnounceListener, RegistrarEntry, RegistrarTable
from .transport import Channel, Endpoint, sctp_available, start_endpoint

__all__ = ["PoolElement", "Session", "SessionHandler", "RegistrarInfo", "DATA_PPID",
           "MAX_INBOUND_LINKS"]

#: PPID used for data a service sends on its own (replies reuse the request's).
DATA_PPID = 0
#: Inbound ASAP links (besides the home link) a PE keeps open at a time.
MAX_INBOUND_LINKS = 16
_WILDCARDS = ("0.0.0.0", "::")


class SessionHandler:
    """Base class of a PE service's per-session handler (override what you
    need; the defaults discard data and ignore control messages).

    A service is any callable returning a handler, e.g. the class itself:
    ``PoolElement(..., service=EchoService)``.
    """

    session: "Session"

    def connection_made(self, session: "Session") -> None:
        """A PU connected; keep ``session`` to send on it."""
        self.session = session

    def data_received(self, data: bytes, ppid: int) -> None:
        """One user message (``ppid`` is never 11)."""

    def cookie_echo_received(self, cookie: bytes) -> None:
        """The PU echoed a cookie (after a failover: the state a previous PE
        sent it with :meth:`Session.send_cookie`).  Restore state from it."""

    def control_received(self, message: Any) -> None:
        """Another ASAP message on the session (e.g. a Business Card)."""

    def connection_lost(self, reason: Optional[str]) -> None:
        """The session is over."""


class Session:
    """One pool user's channel on the PE's user endpoint."""

    def __init__(self, element: "PoolElement", channel: Channel) -> None:
        self.element = element
        self.channel = channel
        self.handler: SessionHandler = SessionHandler()
        #: the last cookie the PU echoed (None: none yet)
        self.cookie_echo: Optional[bytes] = None
        self.messages_received = 0

    @property
    def transport(self) -> str:
        return self.channel.transport

    @property
    def peer(self) -> tuple[str, int]:
        return self.channel.peer

    @property
    def closed(self) -> bool:
        return self.channel.closed

    @property
    def write_buffered(self) -> int:
        """Bytes queued for sending (for flow control, e.g. chargen)."""
        return self.channel.write_buffered

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.element.loop

    def send(self, data: bytes, *, ppid: int = DATA_PPID) -> None:
        """Send one user message.  :raises ConnectionError: closed."""
        if ppid == PPID.ASAP:
            raise ValueError("PPID 11 is ASAP's; use send_cookie() for control messages")
        self.channel.send(bytes(data), ppid=ppid)

    def send_cookie(self, cookie: bytes) -> None:
        """Send an ASAP Cookie (PPID 11) holding ``cookie``: the PU keeps the
        latest one and echoes it to the next PE after a failover."""
        if not cookie:
            raise ValueError("a cookie holds at least one byte")
        self.channel.send(encode_message(Cookie(bytes(cookie))), ppid=PPID.ASAP)

    def close(self) -> None:
        self.channel.close()

    def abort(self, reason: Optional[str] = None) -> None:
        self.channel.abort(reason)

    # -- channel callbacks -------------------------------------------------------
    def _on_message(self, channel: Channel, data: bytes, ppid: int) -> None:
        if ppid != PPID.ASAP:
            self.messages_received += 1
            self.handler.data_received(data, ppid)
            return
        try:
            msg = decode_message(data, "asap")
        except WireError as exc:
            self.element._peer_log.warning((channel.peer[0], "session-garbage"),
                                           "PE %#010x: undecodable ASAP message on the "
                                           "session from %s: %s", self.element.identifier,
                                           channel.peer[0], exc)
            return
        if isinstance(msg, CookieEcho):
            self.cookie_echo = msg.cookie
            self.handler.cookie_echo_received(msg.cookie)
        else:
            if not isinstance(msg, BusinessCard):
                pe_log.debug("PE %#010x: %s on a session from %s ignored",
                             self.element.identifier, type(msg).__name__, channel.peer[0])
            self.handler.control_received(msg)

    def _on_close(self, channel: Channel, reason: Optional[str]) -> None:
        self.element._sessions.discard(self)
        try:
            self.handler.connection_lost(reason)
        except Exception:
            pe_log.exception("PE %#010x: session handler failed on close",
                             self.element.identifier)

    def __repr__(self) -> str:
        return f"<Session {self.transport} {self.peer[0]}:{self.peer[1]}>"


@dataclass(frozen=True)
class RegistrarInfo:
    """The home registrar as the PE sees it."""

    server_id: int      # 0 until its first keep-alive tells
    transport: str
    host: str
    port: int


class PoolElement:
    """A pool element: registers ``service`` under ``pool_handle``.

    :param pool_handle: the pool (str or bytes).
    :param policy: a :class:`~rserpool.wire.PoolPolicy`, or a policy name
        (``"round_robin"``, ``"lu"``, ... see
        :func:`~rserpool.protocol.asap_element.policy_type_from_name`) completed
        by the value arguments below.
    :param weight: weight (policies with one), a 32-bit integer.
    :param priority: priority, a 32-bit integer.
    :param load: load as a fraction in [0, 1] (scaled to 0..0xFFFFFFFF).
    :param load_degradation: load degradation as a fraction in [0, 1].
    :param registrars: static registrars, ``"host:port"`` strings.
    :param discovery: also learn registrars from ASAP Server Announces on
        ``announce_group``:``announce_port`` (``announce_interface``: the local
        address of the interface to join on).
    :param transport: ``"sctp"``, ``"tcp"`` or ``"auto"`` (SCTP when the
        kernel has it).
    :param addresses: local addresses of both endpoints.
    :param port: user endpoint port (0: any).
    :param asap_port: ASAP endpoint port (0: any).
    :param identifier: PE ID (None: random).
    :param registration_interval: seconds between re-registrations
        (registration life is 3 x this).
    :param request_timeout: seconds to wait for a registrar's response.
    :param connect_timeout: seconds for each connection attempt to a registrar.
    :param service: callable returning a :class:`SessionHandler` per session.
    :param on_event: called with every event of
        :mod:`rserpool.protocol.asap_element` (more with :meth:`add_listener`).
    :param accept_any_home: follow a home claim (keep-alive with the H bit)
        from any peer that reaches the ASAP endpoint, as RSPLIB does.  By
        default only a peer with an address of a known registrar (registrar
        table: static, resolved static host names, learned from announces;
        or a registrar the hunt connected to) may claim the PE; other claims
        are not acknowledged and their link is closed.
    :param max_inbound_links: inbound ASAP links kept at a time besides the
        home link; further ones are closed at once.
    :param inbound_idle_timeout: seconds after which an inbound link (not the
        home link) that sent nothing is closed (None: 10 x
        ``request_timeout``).
    """

    def __init__(self, pool_handle: str | bytes, *,
                 policy: PoolPolicy | str | int = "round_robin",
                 weight: int | None = None, priority: int | None = None,
                 load: float | None = None, load_degradation: float | None = None,
                 registrars: Iterable[str] = (), discovery: bool = True,
                 announce_group: str = ASAP_ANNOUNCE_GROUP, announce_port: int = ASAP_PORT,
                 announce_interface: str | None = None, transport: str = "auto",
                 addresses: Iterable[str] = ("0.0.0.0",), port: int = 0, asap_port: int = 0,
                 identifier: int | None = None,
                 registration_interval: float = DEFAULT_REGISTRATION_INTERVAL,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 connect_timeout: float = 5.0,
                 service: Callable[[], SessionHandler] | None = None,
                 on_event: Callable[[Any], None] | None = None,
                 accept_any_home: bool = False,
                 max_inbound_links: int = MAX_INBOUND_LINKS,
                 inbound_idle_timeout: float | None = None) -> None:
        self.pool_handle = pool_handle.encode() if isinstance(pool_handle, str) \
            else bytes(pool_handle)
        if isinstance(policy, PoolPolicy):
            if any(v is not None for v in (weight, priority, load, load_degradation)):
                policy = policy_with(policy, weight=weight, priority=priority,
                                     load=_opt_load(load),
                                     load_degradation=_opt_load(load_degradation))
            self._initial_policy = policy
        else:
            self._initial_policy = make_policy(
                policy, weight=weight, priority=priority, load=_opt_load(load),
                load_degradation=_opt_load(load_degradation))
        if transport not in ("auto", "sctp", "tcp"):
            raise ConfigError(f"transport must be sctp, tcp or auto, not {transport!r}")
        self._transport_choice = transport
        self.addresses = tuple(addresses) or ("0.0.0.0",)
        self.port = port
        self.asap_port = asap_port
        self.registrars = tuple(registrars)
        self.discovery = discovery
        self.announce_group = announce_group
        self.announce_port = announce_port
        self.announce_interface = announce_interface
        self.registration_interval = registration_interval
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.service = service
        self._identifier = identifier
        if not self.registrars and not discovery:
            raise ConfigError("no registrar: give registrars or enable discovery")
        self.accept_any_home = bool(accept_any_home)
        if isinstance(max_inbound_links, bool) or not isinstance(max_inbound_links, int) \
                or max_inbound_links < 0:
            raise ConfigError(f"max_inbound_links must be an integer >= 0, "
                              f"not {max_inbound_links!r}")
        self.max_inbound_links = max_inbound_links
        if inbound_idle_timeout is None:
            inbound_idle_timeout = 10.0 * request_timeout
        if isinstance(inbound_idle_timeout, bool) \
                or not isinstance(inbound_idle_timeout, (int, float)) \
                or not inbound_idle_timeout > 0:
            raise ConfigError(f"inbound_idle_timeout must be a positive number of seconds, "
                              f"not {inbound_idle_timeout!r}")
        self.inbound_idle_timeout = float(inbound_idle_timeout)
        # check the numbers early (the core checks them again)
        PoolElementCore(self.pool_handle, self._initial_policy, None,
                        identifier=identifier or 1,
                        registration_interval=registration_interval,
                        request_timeout=request_timeout)
        self._listeners: list[Callable[[Any], None]] = [on_event] if on_event else []
        self._waiters: list[tuple[Callable[[Any], bool], asyncio.Future[Any]]] = []
        self._core: PoolElementCore | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.transport = ""
        self.user_endpoint: Endpoint | None = None
        self.asap_endpoint: Endpoint | None = None
        self._table: RegistrarTable | None = None
        self._announce: AnnounceListener | None = None
        self._table_changed: asyncio.Event | None = None
        self._hunt_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._links: dict[Channel, RegistrarEntry | None] = {}
        # inbound links (opened by a peer) and the timers that close them when
        # idle (Channel.last_receive says when each one last sent something)
        self._inbound: set[Channel] = set()
        self._idle_timers: dict[Channel, asyncio.TimerHandle] = {}
        # registrar addresses not in the table itself: resolved static host
        # names, peers of links the hunt opened
        self._resolved_registrars: set[str] = set()
        self._resolve_task: asyncio.Task[None] | None = None
        self._failed: dict[tuple[str, str, int], float] = {}
        self._home: Channel | None = None
        self._home_key: tuple[str, str, int] = ("", "", 0)
        self._sessions: set[Session] = set()
        self._closed_future: asyncio.Future[None] | None = None
        self._pumping = False
        self._pump_again = False
        self._stopping = False
        self._stopped = False
        self._peer_log: RateLimitedLogger = None  # type: ignore[assignment]

    # ------------------------------------------------------------ properties
    @property
    def identifier(self) -> int | None:
        """The PE ID (known after :meth:`start` when chosen randomly)."""
        return self._core.identifier if self._core else self._identifier

    @property
    def registered(self) -> bool:
        return bool(self._core and self._core.registered)

    @property
    def state(self) -> str:
        return self._core.state.value if self._core else "idle"

    @property
    def policy(self) -> PoolPolicy:
        return self._core.policy if self._core else self._initial_policy

    @property
    def home_registrar(self) -> RegistrarInfo | None:
        core = self._core
        if core is None or core.home_link is None:
            return None
        ch: Channel = core.home_link
        return RegistrarInfo(core.home_registrar, ch.transport, ch.peer[0], ch.peer[1])

    @property
    def user_addresses(self) -> list[tuple[str, int]]:
        """Where pool users connect: the user endpoint's bound (host, port)s."""
        return list(self.user_endpoint.addresses) if self.user_endpoint else []

    @property
    def asap_addresses(self) -> list[tuple[str, int]]:
        return list(self.asap_endpoint.addresses) if self.asap_endpoint else []

    @property
    def sessions(self) -> frozenset[Session]:
        return frozenset(self._sessions)

    @property
    def registrar_table(self) -> RegistrarTable | None:
        return self._table

    # ---------------------------------------------------------------- events
    def add_listener(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(event)`` for every later event."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[Any], None]) -> None:
        self._listeners.remove(callback)

    async def wait_for(self, predicate: Callable[[Any], bool] | type,
                       timeout: float | None = None) -> Any:
        """The next event matching ``predicate`` (a callable or an event
        class).  :raises asyncio.TimeoutError: none within ``timeout``."""
        if isinstance(predicate, type):
            cls = predicate
            predicate = lambda ev: isinstance(ev, cls)  # noqa: E731
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # ------------------------------------------------------------- lifecycle
    async def start(self, *, wait: bool = True, timeout: float | None = 15.0) -> None:
        """Bind the user and ASAP endpoints and start registering.

        With ``wait`` (default) return once registered.  :raises
        OperationError: the registrar refused the registration (the PE is
        stopped); :raises NoRegistrarError: not registered within ``timeout``
        (the PE is stopped); :raises OSError: an address could not be bound.
        """
        if self._core is not None:
            raise RuntimeError("PoolElement.start() called twice")
        self.loop = asyncio.get_running_loop()
        self._peer_log = RateLimitedLogger(pe_log, clock=self.loop.time)
        self._closed_future = self.loop.create_future()
        transport = self._transport_choice
        if transport == "auto":
            transport = "sctp" if sctp_available() else "tcp"
        self.transport = transport
        self.user_endpoint = await start_endpoint(transport, self.addresses, self.port,
                                                  framing="session",
                                                  on_channel=self._on_user_channel)
        try:
            self.asap_endpoint = await start_endpoint(transport, self.addresses,
                                                      self.asap_port, framing="asap",
                                                      on_channel=self._on_asap_channel)
        except BaseException:
            self.user_endpoint.close()
            raise
        use = TransportUse.DATA_PLUS_CONTROL
        uport = self.user_endpoint.port
        if transport == "tcp":
            user_transport: Any = TcpTransport(uport, [self.addresses[0]], use)
            asap_transport: Any = TcpTransport(self.asap_endpoint.port, [self.addresses[0]])
        else:
            user_transport = SctpTransport(uport, list(self.addresses), use)
            asap_transport = None
        self._core = PoolElementCore(self.pool_handle, self._initial_policy, user_transport,
                                     identifier=self._identifier, asap_transport=asap_transport,
                                     registration_interval=self.registration_interval,
                                     request_timeout=self.request_timeout,
                                     accept_any_home=self.accept_any_home)
        self._table = RegistrarTable(self.registrars, transport=transport)
        self._table_changed = asyncio.Event()
        names = sorted({e.host for e in self._table.candidates(self.loop.time())
                        if not _is_ip(e.host)})
        if names and not self.accept_any_home:
            self._resolve_task = self.loop.create_task(self._resolve_registrars(names))
            self._resolve_task.add_done_callback(_log_task_failure)
        if self.discovery:
            try:
                self._announce = await AnnounceListener.start(
                    self.announce_group, self.announce_port, on_datagram=self._on_announce,
                    interface=self.announce_interface)
            except OSError as exc:
                pe_log.warning("PE %#010x: cannot listen for registrar announces on %s:%d: "
                               "%s", self._core.identifier, self.announce_group,
                               self.announce_port, exc)
        pe_log.info("PE %#010x of pool %r: %s user endpoint %s, ASAP endpoint %s",
                    self._core.identifier, self.pool_handle.decode(errors="replace"),
                    transport, _fmt(self.user_endpoint.addresses),
                    _fmt(self.asap_endpoint.addresses))
        self._core.start(self.loop.time())
        self._pump()
        if not wait:
            return
        try:
            ev = await self.wait_for(
                lambda e: isinstance(e, (Registered, HomeRegistrarChanged,
                                         RegistrationRefused)) or self.registered,
                timeout) if not self.registered else None
        except asyncio.TimeoutError:
            await self.stop()
            raise NoRegistrarError(f"PE {self.identifier:#010x}: not registered within "
                                   f"{timeout} s") from None
        if isinstance(ev, RegistrationRefused):
            await self.stop()
            raise OperationError(ev.cause, ev.info)

    async def stop(self) -> None:
        """Deregister (waiting at most the request timeout for the answer),
        close every session and both endpoints.  Safe to call twice."""
        if self._core is None or self._stopped:
            return
        if self._stopping:
            assert self._closed_future is not None
            await asyncio.shield(self._closed_future)
            return
        self._stopping = True
        try:
            if self._hunt_task is not None:
                self._hunt_task.cancel()
                try:
                    await self._hunt_task
                except asyncio.CancelledError:
                    pass
                self._hunt_task = None
            if self._announce is not None:
                self._announce.stop()
                self._announce = None
            if self._resolve_task is not None:
                self._resolve_task.cancel()
                self._resolve_task = None
            if not self._core.closed:
                done = self.loop.create_future()

                def closed(ev: Any) -> None:
                    if isinstance(ev, Deregistered) and not done.done():
                        done.set_result(ev)

                self.add_listener(closed)
                self._core.stop(self.loop.time())
                self._pump()
                if not self._core.closed:
                    try:
                        await asyncio.wait_for(asyncio.shield(done),
                                               self.request_timeout + 1.0)
                    except asyncio.TimeoutError:  # pragma: no cover - core's timer failed
                        pe_log.error("PE %#010x: deregistration did not finish",
                                     self._core.identifier)
                self.remove_listener(closed)
            for session in list(self._sessions):
                session.close()
            await asyncio.sleep(0)  # let graceful closes flush
        finally:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for handle in self._idle_timers.values():
                handle.cancel()
            self._idle_timers.clear()
            for ch in list(self._links):
                ch.close()
            for ep in (self.user_endpoint, self.asap_endpoint):
                if ep is not None:
                    ep.close()
            for ep in (self.user_endpoint, self.asap_endpoint):
                if ep is not None:
                    await ep.wait_closed()
            assert self._closed_future is not None
            if not self._closed_future.done():
                self._closed_future.set_result(None)

    async def __aenter__(self) -> "PoolElement":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------ policy
    def update_policy(self, policy: PoolPolicy | str | int | None = None, *,
                      weight: int | None = None, priority: int | None = None,
                      load: float | None = None,
                      load_degradation: float | None = None) -> bool:
        """Change the policy or some of its values (``load`` and
        ``load_degradation`` as fractions in [0, 1]); a registered PE
        re-registers at once.  Returns False if nothing changed."""
        values = dict(weight=weight, priority=priority, load=_opt_load(load),
                      load_degradation=_opt_load(load_degradation))
        if policy is None:
            new = policy_with(self.policy, **values)
        elif isinstance(policy, PoolPolicy):
            new = policy_with(policy, **values)
        else:
            new = make_policy(policy, **values)
        if self._core is None:
            changed = new != self._initial_policy
            self._initial_policy = new
            return changed
        if self._stopped or self._core.closed:
            raise RuntimeError("the pool element is stopped")
        changed = self._core.update_policy(new, self.loop.time())
        self._pump()
        return changed

    def update_load(self, load: float) -> bool:
        """Set the load (fraction in [0, 1]) of a least-used-style policy."""
        if self.policy.load is None:
            raise ConfigError(f"policy {self.policy.policy_type.name} has no load value")
        return self.update_policy(load=load)

    # ------------------------------------------------------------ the pump
    def _pump(self) -> None:
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        core = self._core
        assert core is not None
        for link, msg in core.pop_outgoing():
            if link.closed:
                continue
            try:
                link.send(encode_message(msg), ppid=PPID.ASAP)
            except ConnectionError:
                pass  # its close callback tells the core
        closing = core.pop_closing()
        events = core.pop_events()
        for ev in events:
            if isinstance(ev, RegistrarLost) and self._home is not None:
                # this registrar goes last in the next hunts
                self._failed[self._home_key] = self.loop.time()
        self._home = core.home_link
        if self._home is not None:
            entry = self._links.get(self._home)
            self._home_key = entry.key if entry is not None else \
                (self._home.transport, self._home.peer[0], self._home.peer[1])
        for link in closing:
            self._links.pop(link, None)
            if not link.closed:
                link.close()
        for ev in events:
            self._dispatch(ev)
        due = core.next_deadline()
        if self._stopped:
            due = None
        if due != self._armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if due is None else self.loop.call_at(due, self._on_timer)
            self._armed_for = due
        if core.needs_registrar and not self._stopping and (
                self._hunt_task is None or self._hunt_task.done()):
            self._hunt_task = self.loop.create_task(self._hunt())

    def _on_timer(self) -> None:
        due, self._armed_for, self._timer = self._armed_for, None, None
        if self._core is None or due is None:
            return
        # asyncio may run a timer up to one clock resolution early
        self._core.handle_timer(max(self.loop.time(), due))
        self._pump()

    def _dispatch(self, ev: Any) -> None:
        ident = self._core.identifier if self._core else 0
        if isinstance(ev, Registered):
            home = self.home_registrar
            where = f"{home.host}:{home.port} ({home.transport})" if home else "?"
            (pe_log.debug if ev.reregistration else pe_log.info)(
                "PE %#010x %sregistered at registrar %s", ident,
                "re-" if ev.reregistration else "", where)
        elif isinstance(ev, RegistrationRefused):
            pe_log.warning("PE %#010x: registration refused: %s", ident,
                           OperationError(ev.cause))
        elif isinstance(ev, RegistrarLost):
            pe_log.warning("PE %#010x: registrar lost: %s", ident, ev.reason)
        elif isinstance(ev, HomeRegistrarChanged):
            pe_log.info("PE %#010x: home registrar is now %#010x (was %#010x)", ident,
                        ev.home_registrar, ev.previous)
        elif isinstance(ev, Deregistered):
            pe_log.info("PE %#010x deregistered%s", ident,
                        "" if ev.acknowledged else " (not confirmed by a registrar)")
        elif isinstance(ev, ProtocolViolated):
            self._peer_log.warning(("violation", ev.state, ev.input),
                                   "PE %#010x: protocol error from a registrar: %s in state "
                                   "%s (%s)", ident, ev.input, ev.state, ev.detail)
        elif isinstance(ev, MessageIgnored):
            self._peer_log.warning(("ignored", ev.detail), "PE %#010x: ignored %s", ident,
                                   ev.detail)
        elif isinstance(ev, HomeClaimRefused):
            peer = getattr(ev.link, "peer", ("?", 0))
            self._peer_log.warning((peer[0], "home-claim"),
                                   "PE %#010x: refused a home claim (H bit) by %#010x from "
                                   "%s:%d, not a known registrar; link closed", ident,
                                   ev.server_id, peer[0], peer[1])
        elif isinstance(ev, KeepAliveAnswered):
            pe_log.debug("PE %#010x: keep-alive from %#010x answered", ident, ev.server_id)
        elif isinstance(ev, RegistrarHuntStarted):
            pe_log.debug("PE %#010x: looking for a registrar", ident)
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                pe_log.exception("PE event listener failed")
        for predicate, fut in list(self._waiters):
            if not fut.done():
                try:
                    if predicate(ev):
                        fut.set_result(ev)
                except Exception as exc:  # pragma: no cover - a broken predicate
                    fut.set_exception(exc)

    # ------------------------------------------------------ registrar links
    def _attach(self, ch: Channel) -> None:
        ch.on_message = self._on_asap_message
        ch.on_close = self._on_asap_close

    def _on_asap_channel(self, ch: Channel) -> None:
        """A registrar opened a link to our ASAP endpoint (e.g. a takeover)."""
        if self._stopped or self._stopping:
            ch.abort("pool element stopped")
            return
        home = self._core.home_link if self._core is not None else None
        open_now = sum(1 for c in self._inbound if c is not home and not c.closed)
        if open_now >= self.max_inbound_links:
            self._peer_log.warning((ch.peer[0], "inbound-limit"),
                                   "PE %#010x: %d inbound ASAP links open already; closing "
                                   "the one from %s:%d", self.identifier or 0, open_now,
                                   ch.peer[0], ch.peer[1])
            ch.abort("too many inbound ASAP links")
            return
        self._links[ch] = None
        self._inbound.add(ch)
        self._attach(ch)
        self._arm_idle(ch, self.loop.time() + self.inbound_idle_timeout)

    def _arm_idle(self, ch: Channel, when: float) -> None:
        self._idle_timers[ch] = self.loop.call_at(when, self._check_idle, ch)

    def _check_idle(self, ch: Channel) -> None:
        self._idle_timers.pop(ch, None)
        if ch not in self._inbound or ch.closed or self._stopped:
            return
        now = self.loop.time()
        core = self._core
        if core is not None and ch is core.home_link:
            # the home link is policed by the core (request timeouts); look
            # again later in case it stops being the home link
            self._arm_idle(ch, now + self.inbound_idle_timeout)
            return
        due = ch.last_receive + self.inbound_idle_timeout
        if now < due:
            self._arm_idle(ch, due)
            return
        pe_log.debug("PE %#010x: inbound ASAP link from %s:%d idle for %g s; closing",
                     self.identifier or 0, ch.peer[0], ch.peer[1], self.inbound_idle_timeout)
        ch.abort(f"idle for {self.inbound_idle_timeout:g} s")

    def _registrar_addresses(self) -> set[str]:
        """Addresses of the registrars this PE knows (rule for home claims)."""
        known = set(self._resolved_registrars)
        if self._table is not None:
            now = self.loop.time()
            for transport in ("sctp", "tcp"):
                for entry in self._table.candidates(now, transport):
                    known.add(_norm_address(entry.host))
                    known.update(_norm_address(a) for a in entry.addresses)
        return known

    def _known_registrar(self, ch: Channel) -> bool:
        """True when ``ch``'s peer is a registrar the PE knows."""
        if self._links.get(ch) is not None:
            return True  # the hunt opened it to a table entry
        peers = {_norm_address(a) for a in (ch.peer_addresses or (ch.peer[0],)) if a}
        return not peers.isdisjoint(self._registrar_addresses())

    async def _resolve_registrars(self, names: list[str]) -> None:
        """Resolve static registrars given by name, for the home-claim rule."""
        for name in names:
            try:
                infos = await self.loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError as exc:
                pe_log.debug("PE %#010x: cannot resolve registrar %s: %s",
                             self.identifier or 0, name, exc)
                continue
            self._resolved_registrars.update(_norm_address(str(i[4][0])) for i in infos)

    def _on_asap_message(self, ch: Channel, data: bytes, ppid: int) -> None:
        core = self._core
        if core is None or self._stopped:
            return
        if ppid != PPID.ASAP:
            self._peer_log.warning((ch.peer[0], "ppid"), "PE %#010x: PPID %d from registrar "
                                   "link %s ignored", core.identifier, ppid, ch.peer[0])
            return
        try:
            msg = decode_message(data, "asap")
        except WireError as exc:
            self._peer_log.warning((ch.peer[0], "garbage"), "PE %#010x: undecodable message "
                                   "from %s:%d: %s; dropping the link", core.identifier,
                                   ch.peer[0], ch.peer[1], exc)
            ch.abort(f"undecodable message: {exc}")
            return
        known = isinstance(msg, EndpointKeepAlive) and msg.home and self._known_registrar(ch)
        core.receive(ch, msg, self.loop.time(), known_registrar=known)
        self._pump()

    def _on_asap_close(self, ch: Channel, reason: Optional[str]) -> None:
        self._links.pop(ch, None)
        self._inbound.discard(ch)
        handle = self._idle_timers.pop(ch, None)
        if handle is not None:
            handle.cancel()
        core = self._core
        if core is None or core.closed:
            return
        if ch is core.home_link:
            pe_log.debug("PE %#010x: registrar link %s closed: %s", core.identifier, ch,
                         reason)
        core.link_lost(ch, self.loop.time())
        self._pump()

    def _on_announce(self, data: bytes, source: tuple[str, int]) -> None:
        if self._table is None:
            return
        now = self.loop.time()
        before = {e.key for e in self._table.candidates(now)}
        learned = self._table.learn(data, source, now)
        if any(e.key not in before for e in learned):
            assert self._table_changed is not None
            self._table_changed.set()

    def _candidates(self) -> list[RegistrarEntry]:
        assert self._table is not None
        now = self.loop.time()
        cands = self._table.candidates(now)
        # registrars that failed recently go last (stable order otherwise)
        return sorted(cands, key=lambda e: self._failed.get(e.key, -1e300))

    async def _hunt(self) -> None:
        core = self._core
        assert core is not None and self.asap_endpoint is not None
        assert self._table_changed is not None
        backoff = 0.25
        while core.needs_registrar and not self._stopping:
            self._table_changed.clear()
            for entry in self._candidates():
                if not core.needs_registrar or self._stopping:
                    return
                try:
                    ch = await self.asap_endpoint.connect(
                        entry.host, entry.port, timeout=self.connect_timeout,
                        on_message=self._on_asap_message, on_close=self._on_asap_close)
                except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
                    _reraise_swallowed_cancel()
                    self._failed[entry.key] = self.loop.time()
                    self._peer_log.warning((entry.key, "connect"),
                                           "PE %#010x: registrar %s:%d (%s) unreachable: %s",
                                           core.identifier, entry.host, entry.port,
                                           entry.transport, exc)
                    continue
                if ch.closed:
                    continue
                self._links[ch] = entry
                self._resolved_registrars.update(
                    _norm_address(a) for a in (ch.peer_addresses or (ch.peer[0],)) if a)
                core.registrar_connected(ch, self.loop.time(), entry.server_id)
                self._pump()
                return
            try:
                await asyncio.wait_for(self._table_changed.wait(),
                                       backoff * random.uniform(0.75, 1.25))
            except asyncio.TimeoutError:
                pass
            _reraise_swallowed_cancel()
            backoff = min(backoff * 2, 5.0)

    # ----------------------------------------------------------- sessions
    def _on_user_channel(self, ch: Channel) -> None:
        if self._stopping:
            ch.abort("pool element stopping")
            return
        session = Session(self, ch)
        ch.on_message = session._on_message
        ch.on_close = session._on_close
        self._sessions.add(session)
        if self.service is not None:
            session.handler = self.service()
        session.handler.connection_made(session)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _norm_address(text: str) -> str:
    """An address in one spelling: no zone, IPv4-mapped IPv6 as IPv4, IPv6
    compressed, names lower case."""
    plain = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(plain)
    except ValueError:
        return plain.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _reraise_swallowed_cancel() -> None:
    """Raise CancelledError if the current task was cancelled but an await
    did not raise it: before Python 3.12, ``asyncio.wait_for`` returns the
    inner result (or raises its exception, e.g. ConnectionRefusedError) when
    the cancellation and the inner completion coincide, and a hunt that
    went on would never end (Python 3.10 cannot tell: no check there)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError()


def _log_task_failure(task: "asyncio.Task[Any]") -> None:
    if not task.cancelled() and task.exception() is not None:
        pe_log.error("PE background task %r failed", task, exc_info=task.exception())


def _opt_load(value: float | None) -> int | None:
    return None if value is None else load_from_fraction(value)


def _fmt(addresses: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)
