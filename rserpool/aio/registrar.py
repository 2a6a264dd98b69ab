"""The registrar as an asyncio service (does I/O).

:class:`Registrar` drives the sans-I/O core
:class:`rserpool.protocol.asap_registrar.AsapRegistrar` over the transports of
:mod:`rserpool.aio.transport` (TCP always, kernel SCTP where available) and
announces itself with :class:`rserpool.aio.multicast.AnnounceSender`.  It is
a small pump (``shared/STYLE.md`` section 2): each message goes to the core,
the direct reply goes back on the same channel, then queued sends, aborts and
events are carried out and one ``loop.call_at`` is armed for the core's next
deadline.

Besides the protocol, it protects itself from peers that hold resources
without speaking ASAP: a periodic sweep aborts a channel that

* holds part of a message and has not completed one for
  ``partial_timeout`` seconds (a message cut in half, a header announcing
  64 KiB followed by silence, a byte trickled now and then), or
* has received nothing for ``config.idle_timeout`` seconds and has no pool
  element registered over it (PEs are watched by keep-alives instead).

Peer-caused noise is logged through :class:`rserpool.log.RateLimitedLogger`;
each PE registered, deregistered, expired or removed gets one INFO line on
the ``rserpool.registrar`` logger (re-registrations are DEBUG).

Usage::

    registrar = Registrar(RegistrarConfig(addresses=("127.0.0.1",), asap_port=0))
    await registrar.start()
    print(registrar.endpoints)        # [("tcp", "127.0.0.1", 40123)]
    ...
    await registrar.stop()
"""

from __future__ import annotations

import asyncio
import logging
import ipaddress
from typing import Any, Optional

from ..config import RegistrarConfig, parse_peer
from ..constants import PPID, policy_name
from ..errors import RSerPoolError
from ..log import RateLimitedLogger, enrp_log, registrar_log
from ..protocol import enrp as _enrp
from ..protocol.asap_registrar import (
    AsapRegistrar,
    DeregistrationRefused,
    PeerMisbehaved,
    PoolElementAdopted,
    PoolElementDeregistered,
    PoolElementExpired,
    PoolElementRegistered,
    PoolElementRemoved,
    PoolElementUpdated,
    RegistrationRefused,
    UnreachableReported,
)
from . import transport as _transport
from .multicast import AnnounceListener, AnnounceSender

__all__ = ["Registrar", "TransportUnavailableError", "PARTIAL_MESSAGE_TIMEOUT",
           "format_pool_handle"]

#: Seconds a channel may hold part of a message without completing one.
PARTIAL_MESSAGE_TIMEOUT = 10.0
#: Seconds to open an association (ENRP peer, or a PE taken over).
CONNECT_TIMEOUT = 3.0
#: Most inbound ENRP associations kept at once (others are aborted at once).
MAX_ENRP_CHANNELS = 256
#: Most ENRP associations from one remote address (one host cannot take all
#: MAX_ENRP_CHANNELS and keep the real peers out).
MAX_ENRP_CHANNELS_PER_ADDRESS = 32
#: Most associations to peers being opened at once (PeerConnectRequested:
#: forged multicast Presences or List Responses name addresses at will).
MAX_PEER_CONNECTS = 16

_HANDLE_RESOLUTION_RESPONSE = 0x06


class TransportUnavailableError(RSerPoolError):
    """A transport the configuration asks for (alone) cannot be used here."""


def format_pool_handle(handle: bytes) -> str:
    """A pool handle for humans: its text when printable ASCII, else hex."""
    try:
        text = handle.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + handle.hex()
    return repr(text) if text.isprintable() else "0x" + handle.hex()


def _policy_name(policy: Any) -> str:
    return policy_name(policy.policy_type)


def _transport_text(t: Any) -> str:
    kind = type(t).__name__.replace("Transport", "").lower()
    return f"{kind} {','.join(t.addresses)}:{t.port}"


def _peer_text(channel: Any) -> str:
    host, port = channel.peer
    return f"{channel.transport} {host}:{port}"


class Registrar:
    """An RSerPool registrar's ASAP service (handle resolution, registration,
    keep-alive monitoring, announces).

    :param config: settings; ``config.transports`` lists the wanted
        transports (SCTP is skipped with a warning when this host lacks it,
        unless it is the only one wanted: then :meth:`start` raises
        :class:`TransportUnavailableError`).
    :param seed: seed of the handlespace's random selection (tests).
    :param partial_timeout: seconds a channel may hold part of a message.
    :param log_endpoints: log one INFO line per listening endpoint and address
        at start (the CLI prints :meth:`describe` itself instead).
    """

    def __init__(self, config: RegistrarConfig | None = None, *, seed: int | None = None,
                 partial_timeout: float = PARTIAL_MESSAGE_TIMEOUT,
                 log_endpoints: bool = True) -> None:
        self.config = config = config if config is not None else RegistrarConfig()
        self.core = AsapRegistrar(config, seed=seed)
        self.handlespace = self.core.handlespace
        self.partial_timeout = float(partial_timeout)
        #: ``(transport, host, port)`` of every bound endpoint address.
        self.endpoints: list[tuple[str, str, int]] = []
        #: Notes from start-up (e.g. "SCTP not available").
        self.notes: list[str] = []
        self.announcer: Optional[AnnounceSender] = None
        self._log_endpoints = log_endpoints
        self._endpoints: list[Any] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._armed_for: Optional[float] = None
        self._sweeper: Optional[asyncio.Task[None]] = None
        self._pumping = False
        self._repump = False
        self._started = False
        self._stopped = False
        self._noise: Optional[RateLimitedLogger] = None
        self._seed = seed
        #: The ENRP core (None until started, or when ``config.enrp`` is off).
        self.enrp: Optional[_enrp.EnrpServer] = None
        #: ``(transport, host, port)`` of every bound ENRP endpoint address.
        self.enrp_endpoints: list[tuple[str, str, int]] = []
        self.presence_sender: Optional[AnnounceSender] = None
        self._presence_listener: Optional[AnnounceListener] = None
        self._enrp_eps: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connecting: set[int] = set()
        self._static_waiters: dict[Any, asyncio.Future[None]] = {}
        self._adopted_batch = 0

    # ---- public ------------------------------------------------------------

    @property
    def registrar_id(self) -> int:
        return self.core.registrar_id

    def address(self, transport: str = "tcp") -> tuple[str, int]:
        """The first bound (host, port) of ``transport``.

        :raises LookupError: no endpoint of that transport is bound.
        """
        for kind, host, port in self.endpoints:
            if kind == transport:
                return host, port
        raise LookupError(f"no {transport} endpoint is bound")

    def enrp_address(self, transport: str = "tcp") -> tuple[str, int]:
        """The first bound (host, port) of the ENRP endpoint of ``transport``.

        :raises LookupError: ENRP is off or not served over that transport.
        """
        for kind, host, port in self.enrp_endpoints:
            if kind == transport:
                return host, port
        raise LookupError(f"no ENRP {transport} endpoint is bound")

    @property
    def transports(self) -> list[str]:
        """The transports actually served, in binding order."""
        return list(dict.fromkeys(kind for kind, _, _ in self.endpoints))

    def describe(self) -> list[str]:
        """Human-readable lines: one per endpoint address, then notes."""
        rid = f"registrar 0x{self.registrar_id:08x}"
        lines = [f"{rid}: ASAP over {kind.upper()} on {_hostport(host, port)}"
                 for kind, host, port in self.endpoints]
        if self.announcer is not None:
            src = self.announcer.source
            lines.append(f"{rid}: Server Announce to {self.config.announce_group}:"
                         f"{self.config.announce_port} every {self.config.announce_interval:g} s"
                         f" from {_hostport(src[0], src[1])}")
        if self.announcer is None and self.config.announce and self.enrp is not None \
                and self.enrp.startup:
            lines.append(f"{rid}: Server Announce to {self.config.announce_group}:"
                         f"{self.config.announce_port} every "
                         f"{self.config.announce_interval:g} s once the ENRP start-up ends "
                         f"(mentor discovery, {self.config.mentor_discovery_timeout:g} s)")
        lines.extend(f"{rid}: ENRP over {kind.upper()} on {_hostport(host, port)}"
                     for kind, host, port in self.enrp_endpoints)
        if self.presence_sender is not None:
            src = self.presence_sender.source
            lines.append(f"{rid}: ENRP Presence to {self.config.presence_group}:"
                         f"{self.config.presence_port} from {_hostport(src[0], src[1])}")
        if self.enrp is not None and self.config.peers:
            lines.append(f"{rid}: static ENRP peers {', '.join(self.config.peers)}")
        lines.extend(f"{rid}: {note}" for note in self.notes)
        return lines

    def statistics(self) -> dict[str, int]:
        stats = self.core.statistics()
        stats["channels"] = sum(len(ep.channels) for ep in self._endpoints)
        if self.enrp is not None:
            for name, value in self.enrp.counters.items():
                stats["enrp_" + name] = value
            stats["peers"] = len(self.enrp.peers())
            stats["enrp_channels"] = sum(len(ep.channels) for ep in self._enrp_eps)
        return stats

    async def start(self) -> "Registrar":
        """Bind the ASAP endpoints, start announces and the timers.

        :raises TransportUnavailableError: SCTP alone was asked for and this
            host has none.
        :raises OSError: an address could not be bound (nothing stays open).
        """
        if self._started or self._stopped:
            raise RuntimeError("a Registrar can be started once")
        loop = self._loop = asyncio.get_running_loop()
        self._noise = RateLimitedLogger(registrar_log, clock=loop.time)
        _transport.raise_fd_limit()
        cfg = self.config
        wanted = list(dict.fromkeys(cfg.transports))
        if "sctp" in wanted and not _transport.sctp_available():
            if wanted == ["sctp"]:
                raise TransportUnavailableError(
                    "SCTP was asked for but this host has no kernel SCTP (or pysctp is "
                    "missing): use TCP (--transport tcp) or load the sctp module")
            wanted.remove("sctp")
            self.notes.append("SCTP is not available on this host (no kernel SCTP or no "
                              "pysctp): serving TCP only")
        # SCTP first: TCP then takes the same port number when the config says 0.
        wanted.sort(key=lambda t: t != "sctp")
        port = cfg.asap_port
        self._started = True
        try:
            for kind in wanted:
                ep = await self._bind(kind, port)
                self._endpoints.append(ep)
                port = ep.port
                for host, p in ep.addresses:
                    self.endpoints.append((kind, host, p))
            self.core.set_local_endpoints(
                (ep.transport, [h for h, _ in ep.addresses], ep.port) for ep in self._endpoints)
            if cfg.enrp:
                await self._start_enrp(wanted)
            if cfg.announce and self.enrp is None:
                # with ENRP, announces start when the start-up phase ends (6.9)
                await self._start_announces()
        except BaseException:
            self._started, self._stopped = False, True
            await self._close_endpoints()
            raise
        self._sweeper = loop.create_task(self._sweep())
        if self.enrp is not None:
            for peer in cfg.peers:
                self._spawn(self._static_peer(peer))
        if self._log_endpoints:
            for line in self.describe():
                registrar_log.info("%s", line)
        self._pump()
        return self

    async def stop(self) -> None:
        """Stop announces, close every endpoint and channel, cancel timers."""
        if not self._started:
            return
        self._started = False
        self._stopped = True
        if self.announcer is not None:
            self.announcer.stop()
            self.announcer = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled or failed: going away anyway
                pass
        self._tasks.clear()
        self._stop_presence()
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        await self._close_endpoints()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed_for = None

    async def __aenter__(self) -> "Registrar":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ---- start-up helpers --------------------------------------------------

    async def _bind(self, kind: str, port: int) -> Any:
        cfg = self.config
        kwargs: dict[str, Any] = dict(framing="asap", on_channel=self._on_channel,
                                      max_message_size=cfg.max_message_size)
        if kind == "sctp":
            kwargs["autoclose"] = cfg.autoclose_timeout
        try:
            return await _transport.start_endpoint(kind, cfg.addresses, port, **kwargs)
        except OSError:
            if port == 0 or port == cfg.asap_port:
                raise
            # the port another transport got is taken for this one: any port
            return await _transport.start_endpoint(kind, cfg.addresses, cfg.asap_port,
                                                   **kwargs)

    async def _start_announces(self) -> None:
        cfg = self.config
        six = _is_v6(cfg.announce_group)
        source = next((a for a in cfg.addresses if _is_v6(a) == six),
                      "::" if six else "0.0.0.0")
        ep = self._endpoints[0]  # SCTP when active: RSPLIB reads the port as SCTP's
        try:
            self.announcer = await AnnounceSender.start(
                cfg.announce_group, cfg.announce_port, source=(source, ep.port),
                ttl=cfg.announce_ttl, interval=cfg.announce_interval,
                payload=self.core.server_announce)
            if self.enrp is not None:
                registrar_log.info("registrar 0x%08x: Server Announces to %s:%d started",
                                   self.registrar_id, cfg.announce_group, cfg.announce_port)
        except OSError as exc:
            self.notes.append(f"Server Announces are off: cannot send to "
                              f"{cfg.announce_group}:{cfg.announce_port} from "
                              f"{_hostport(source, ep.port)}: {exc}")
            registrar_log.warning("%s", self.notes[-1])

    async def _start_enrp(self, wanted: list[str]) -> None:
        """The ENRP core, its endpoints (SCTP and TCP on ``enrp_port``) and the
        Presence multicast sender and listener."""
        cfg = self.config
        loop = self._loop
        assert loop is not None
        seed = self._seed if self._seed is not None else self.registrar_id
        self.enrp = _enrp.EnrpServer(cfg, self.registrar_id, self.handlespace,
                                     seed=seed ^ 0x5EED, now=loop.time())
        port = cfg.enrp_port
        for kind in wanted:
            kwargs: dict[str, Any] = dict(framing="asap", on_channel=self._on_enrp_channel,
                                          max_message_size=cfg.max_message_size)
            try:
                ep = await _transport.start_endpoint(kind, cfg.addresses, port, **kwargs)
            except OSError:
                if port == 0 or port == cfg.enrp_port:
                    raise
                ep = await _transport.start_endpoint(kind, cfg.addresses, cfg.enrp_port,
                                                     **kwargs)
            self._enrp_eps.append(ep)
            port = ep.port
            for host, p in ep.addresses:
                self.enrp_endpoints.append((kind, host, p))
        self.enrp.set_local_endpoint(cfg.addresses, port)
        if cfg.presence_multicast:
            await self._start_presence(port)

    async def _start_presence(self, enrp_port: int) -> None:
        cfg = self.config
        six = _is_v6(cfg.presence_group)
        source = next((a for a in cfg.addresses if _is_v6(a) == six),
                      "::" if six else "0.0.0.0")
        specific = source not in ("0.0.0.0", "::")
        try:
            try:
                self.presence_sender = await AnnounceSender.start(
                    cfg.presence_group, cfg.presence_port, source=(source, enrp_port),
                    ttl=cfg.announce_ttl, payload=None)
            except OSError:
                self.presence_sender = await AnnounceSender.start(
                    cfg.presence_group, cfg.presence_port, source=(source, 0),
                    ttl=cfg.announce_ttl, payload=None)
            self._presence_listener = await AnnounceListener.start(
                cfg.presence_group, cfg.presence_port, on_datagram=self._on_presence,
                interface=source if specific and not six else None)
        except OSError as exc:
            self._stop_presence()
            self.notes.append(f"ENRP Presence multicast is off: cannot use "
                              f"{cfg.presence_group}:{cfg.presence_port} from "
                              f"{source}: {exc}")
            registrar_log.warning("%s", self.notes[-1])

    def _stop_presence(self) -> None:
        if self.presence_sender is not None:
            self.presence_sender.stop()
            self.presence_sender = None
        if self._presence_listener is not None:
            self._presence_listener.stop()
            self._presence_listener = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            registrar_log.error("registrar task failed", exc_info=task.exception())

    async def _close_endpoints(self) -> None:
        endpoints, self._endpoints = self._endpoints, []
        endpoints += self._enrp_eps
        self._enrp_eps = []
        for ep in endpoints:
            ep.close()
        for ep in endpoints:
            try:
                await asyncio.wait_for(ep.wait_closed(), 5.0)
            except (asyncio.TimeoutError, OSError):  # pragma: no cover
                pass
        # TCP channels report their close from the loop: let them run
        await asyncio.sleep(0)
        self._pump()

    # ---- channels ----------------------------------------------------------

    def _on_channel(self, channel: Any) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        channel.context = now  # time of the last whole message (or of the start)
        channel.on_message = self._on_message
        channel.on_close = self._on_close
        self.core.association_up(channel, transport=channel.transport,
                                 peer_addresses=channel.peer_addresses or (channel.peer[0],),
                                 peer_port=channel.peer[1], now=now)
        registrar_log.debug("%s: association up", _peer_text(channel))

    def _on_message(self, channel: Any, data: bytes, ppid: int) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        channel.context = now
        if ppid != PPID.ASAP:
            self._peer_noise(channel, "ppid", f"message with PPID {ppid} on the ASAP "
                             f"endpoint ignored")
            return
        reply = self.core.receive(channel, data, now)
        if reply is not None:
            try:
                channel.send(reply)
            except ConnectionError:
                pass
            if reply[0] == _HANDLE_RESOLUTION_RESPONSE:
                return  # the hot path changes no timer and queues nothing
        self._pump()

    def _on_close(self, channel: Any, reason: Optional[str]) -> None:
        registrar_log.debug("%s: association down (%s)", _peer_text(channel), reason)
        loop = self._loop
        self.core.association_down(channel, loop.time() if loop is not None else 0.0)
        self._pump()

    # ---- ENRP associations and Presence ------------------------------------

    def _on_enrp_channel(self, channel: Any) -> None:
        """An inbound ENRP association."""
        if sum(len(ep.channels) for ep in self._enrp_eps) > MAX_ENRP_CHANNELS:
            self._peer_noise(channel, "enrp-limit", f"ENRP association refused: "
                             f"{MAX_ENRP_CHANNELS} are open")
            channel.abort("too many ENRP associations")
            return
        host = channel.peer[0]
        if sum(1 for ep in self._enrp_eps for ch in ep.channels
               if ch.peer[0] == host) > MAX_ENRP_CHANNELS_PER_ADDRESS:
            self._peer_noise(channel, "enrp-limit", f"ENRP association refused: "
                             f"{MAX_ENRP_CHANNELS_PER_ADDRESS} are open from {host}")
            channel.abort("too many ENRP associations from this address")
            return
        channel.on_message = self._on_enrp_message
        channel.on_close = self._on_enrp_close
        self._enrp_up(channel, None)

    def _enrp_up(self, channel: Any, server_id: Optional[int]) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        channel.context = now
        registrar_log.debug("%s: ENRP association up", _peer_text(channel))
        if self.enrp is not None:
            self.enrp.peer_connected(channel, now, server_id=server_id,
                                     addresses=channel.peer_addresses or (channel.peer[0],))
        self._pump()

    def _on_enrp_message(self, channel: Any, data: bytes, ppid: int) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        channel.context = now
        if channel.transport == "sctp" and ppid != PPID.ENRP:
            self._peer_noise(channel, "ppid", f"message with PPID {ppid} on the ENRP "
                             f"endpoint ignored")
            return
        if self.enrp is not None:
            self.enrp.receive(channel, data, now)
            self._pump()

    def _on_enrp_close(self, channel: Any, reason: Optional[str]) -> None:
        registrar_log.debug("%s: ENRP association down (%s)", _peer_text(channel), reason)
        waiter = self._static_waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.enrp is not None and self._loop is not None:
            self.enrp.peer_disconnected(channel, self._loop.time())
            self._pump()

    def _on_presence(self, data: bytes, source: tuple[str, int]) -> None:
        if self.enrp is not None and self._loop is not None:
            self.enrp.presence_datagram(data, (source[0], source[1]), self._loop.time())
            self._pump()

    def _enrp_endpoint(self, kind: str) -> Any:
        return next((ep for ep in self._enrp_eps if ep.transport == kind), None)

    async def _enrp_connect(self, host: str, port: int, transport: Optional[str] = None,
                            server_id: Optional[int] = None) -> Any:
        """Open an ENRP association (SCTP first when served, then TCP) from
        our ENRP endpoint; the core is told at once.

        :raises ConnectionError: no transport could connect.
        """
        kinds = [transport] if transport else [ep.transport for ep in self._enrp_eps]
        errors: list[str] = []
        for kind in kinds:
            ep = self._enrp_endpoint(kind)
            if ep is None:
                errors.append(f"{kind}: not served here")
                continue
            try:
                channel = await ep.connect(host, port, timeout=CONNECT_TIMEOUT,
                                           on_message=self._on_enrp_message,
                                           on_close=self._on_enrp_close)
            except (OSError, ConnectionError, TimeoutError) as exc:
                existing = _existing_channel(ep, host, port)
                if existing is None and kind == "sctp":
                    # both sides connected at once: the peer's association
                    # may not have been read from the socket yet
                    await asyncio.sleep(0.2)
                    existing = _existing_channel(ep, host, port)
                if existing is not None:
                    return existing  # the peer's association from that port: use it
                errors.append(f"{kind}: {exc}")
                continue
            self._enrp_up(channel, server_id)
            return channel
        raise ConnectionError(f"ENRP peer {_hostport(host, port)}: " + "; ".join(errors))

    async def _static_peer(self, text: str) -> None:
        """Keep an ENRP association to a statically configured peer."""
        transport, host, port = parse_peer(text)
        loop = self._loop
        assert loop is not None
        delay = 0.5
        while self._started:
            try:
                channel = await self._enrp_connect(host, port, transport)
            except ConnectionError as exc:
                if self._noise is not None:
                    self._noise.warning((host, "peer-connect"), "%s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.peer_max_time_last_heard)
                continue
            delay = 0.5
            if not channel.closed:
                waiter: asyncio.Future[None] = loop.create_future()
                self._static_waiters[channel] = waiter
                await waiter
            await asyncio.sleep(0.5)

    def _connect_peer(self, ev: Any) -> None:
        """The core asks for an association to a peer it heard of."""
        if not self._started or ev.peer_id in self._connecting or not ev.port:
            return
        if len(self._connecting) >= MAX_PEER_CONNECTS:
            return  # the core asks again while it keeps hearing of the peer
        hosts = [a for a in ev.addresses if a not in ("0.0.0.0", "::")]
        if not hosts:
            return
        self._connecting.add(ev.peer_id)
        self._spawn(self._connect_peer_task(ev.peer_id, hosts, ev.port))

    async def _connect_peer_task(self, peer_id: int, hosts: list[str], port: int) -> None:
        try:
            errors = []
            for host in hosts:
                try:
                    await self._enrp_connect(host, port, server_id=peer_id)
                    return
                except ConnectionError as exc:
                    errors.append(str(exc))
            if self._noise is not None:
                self._noise.warning((peer_id, "peer-connect"), "ENRP peer 0x%08x: %s",
                                    peer_id, "; ".join(errors))
        finally:
            self._connecting.discard(peer_id)

    # ---- takeover: adopting a dead peer's PEs ---------------------------------

    def _start_adoption(self, requests: list[Any], now: float) -> None:
        """PEs we just took over: one new ASAP association per distinct ASAP
        transport, then an Endpoint Keep-Alive with the H bit to each PE."""
        groups: dict[tuple[str, tuple[str, ...], int], list[tuple[bytes, int]]] = {}
        if not self._started:
            return  # stopping: no new associations (stop() no longer cancels them)
        for req in requests:
            if not self.core.prepare_adoption(req.pool_handle, req.identifier, now,
                                              grace=CONNECT_TIMEOUT):
                continue
            t = req.asap_transport
            if t is None or not t.addresses:
                continue  # unreachable: removed (and DEL sent) when its timer runs out
            kind = "sctp" if type(t).__name__ == "SctpTransport" else "tcp"
            groups.setdefault((kind, tuple(t.addresses), t.port), []).append(
                (req.pool_handle, req.identifier))
        for (kind, addresses, port), pes in groups.items():
            self._spawn(self._adopt_group(kind, addresses, port, pes))

    async def _adopt_group(self, kind: str, addresses: tuple[str, ...], port: int,
                           pes: list[tuple[bytes, int]]) -> None:
        ep = next((e for e in self._endpoints if e.transport == kind), None)
        if ep is None:
            registrar_log.warning("cannot reach %d PE(s) taken over at %s %s: this "
                                  "registrar does not serve ASAP over %s", len(pes),
                                  kind, _hostport(",".join(addresses), port), kind.upper())
            return
        channel = None
        errors = []
        for host in addresses:
            try:
                channel = await ep.connect(host, port, timeout=CONNECT_TIMEOUT,
                                           on_message=self._on_message,
                                           on_close=self._on_close)
                break
            except (OSError, ConnectionError, TimeoutError) as exc:
                channel = _existing_channel(ep, host, port)
                if channel is not None:
                    break
                errors.append(str(exc))
        if channel is None:
            registrar_log.warning("cannot reach %d PE(s) taken over at %s %s (%s): they "
                                  "are removed when their keep-alive times out", len(pes),
                                  kind, _hostport(",".join(addresses), port),
                                  "; ".join(errors))
            return
        now = self._loop.time()  # type: ignore[union-attr]
        if self.core.association(channel) is None:
            channel.context = now
            self.core.association_up(channel, transport=channel.transport,
                                     peer_addresses=channel.peer_addresses or (channel.peer[0],),
                                     peer_port=channel.peer[1], now=now)
        sent = self.core.adopt(channel, pes, now)
        registrar_log.debug("%s: %d keep-alive(s) with the H bit sent", _peer_text(channel),
                            sent)
        self._pump()

    # ---- the pump ----------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        try:
            while True:
                self._repump = False
                core = self.core
                for channel, data in core.pop_sends():
                    if not channel.closed:
                        try:
                            channel.send(data)
                        except ConnectionError:
                            pass
                for channel, reason in core.pop_aborts():
                    channel.abort(reason)
                events = core.pop_events()
                enrp = self.enrp
                if events and enrp is not None:
                    self._updates_for_peers(events, enrp)
                if events:
                    try:
                        self._log_events(events)
                    except Exception:  # a logging handler failed: keep serving
                        registrar_log.exception("logging registrar events failed")
                if enrp is not None:
                    self._pump_enrp(enrp)
                if not self._repump:
                    break
        finally:
            self._pumping = False
            self._arm()  # always: a lost timer would stop keep-alives and expiry

    def _updates_for_peers(self, events: list[Any], enrp: Any) -> None:
        """Handle Updates for every change of a PE we own (6.12)."""
        now = self._loop.time()  # type: ignore[union-attr]
        rid = self.registrar_id
        hs = self.handlespace
        for ev in events:
            t = type(ev)
            if t is PoolElementRegistered or t is PoolElementUpdated:
                entry = hs.get(ev.pool_handle, ev.identifier)
                if entry is not None and entry.home_registrar == rid:
                    enrp.local_registered(ev.pool_handle, entry, now)
            elif t is PoolElementDeregistered or t is PoolElementRemoved \
                    or t is PoolElementExpired:
                entry = ev.entry
                if entry is not None and entry.home_registrar == rid:
                    enrp.local_deregistered(ev.pool_handle, ev.identifier, entry, now)

    def _pump_enrp(self, enrp: Any) -> None:
        for key, data in enrp.pop_sends():
            if key == _enrp.MULTICAST:
                if self.presence_sender is not None:
                    self.presence_sender.send_now(data)
            elif not key.closed:
                try:
                    key.send(data, ppid=PPID.ENRP)
                except ConnectionError:
                    pass
        for channel, reason in enrp.pop_closes():
            channel.abort(reason)
        events = enrp.pop_events()
        if events:
            for ev in events:
                try:
                    self._on_enrp_event(ev)
                except Exception:  # never let one event stop the pump
                    registrar_log.exception("handling ENRP event %r failed", ev)
        requests = enrp.pop_keepalives_to_send()
        if requests:
            self._start_adoption(requests, self._loop.time())  # type: ignore[union-attr]
            self._repump = True

    def _arm(self) -> None:
        if not self._started:
            return
        due = self.core.next_deadline()
        if self.enrp is not None:
            edue = self.enrp.next_deadline()
            if edue is not None and (due is None or edue < due):
                due = edue
        if due == self._armed_for:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = due
        if due is not None and self._loop is not None:
            self._timer = self._loop.call_at(due, self._on_due)

    def _on_due(self) -> None:
        due = self._armed_for
        self._timer = None
        self._armed_for = None
        now = self._loop.time()  # type: ignore[union-attr]
        # call_at may fire up to one clock tick early: never run before `due`
        now = now if due is None else max(now, due)
        try:
            self.core.handle_timer(now)
        except Exception:  # pragma: no cover - a bug in the core; keep serving
            registrar_log.exception("registrar timer handling failed")
        if self.enrp is not None:
            try:
                self.enrp.handle_timer(now)
            except Exception:  # pragma: no cover - a bug in the core; keep serving
                registrar_log.exception("ENRP timer handling failed")
        self._pump()

    # ---- protection against idle and half-speaking peers -------------------

    async def _sweep(self) -> None:
        interval = min(max(min(self.config.idle_timeout, self.partial_timeout) / 4, 0.05), 1.0)
        loop = self._loop
        assert loop is not None
        while True:
            await asyncio.sleep(interval)
            try:
                self._sweep_once(loop.time())
            except Exception:  # pragma: no cover - never let the sweep die
                registrar_log.exception("idle/partial sweep failed")

    def _sweep_once(self, now: float) -> None:
        """Drop peers holding an unfinished message (or unread replies) too
        long, and idle peers with no PE registered."""
        idle = self.config.idle_timeout
        partial = self.partial_timeout
        # ENRP peers send a Presence every heartbeat: silence means gone
        enrp_idle = max(idle, 3 * self.config.peer_heartbeat_interval)
        for ep in self._endpoints + self._enrp_eps:
            enrp_ep = ep in self._enrp_eps
            for channel in list(ep.channels):
                if channel.closed:
                    continue
                if enrp_ep:
                    if channel.pending and now - channel.last_receive > partial:
                        self._peer_noise(channel, "partial", "ENRP association dropped: "
                                         "unfinished message")
                        channel.abort("unfinished message timeout")
                    elif now - channel.last_receive > enrp_idle:
                        channel.abort("idle timeout")
                    continue
                last_message = channel.context if isinstance(channel.context, float) \
                    else channel.last_receive
                if channel.pending and now - last_message > partial:
                    self._peer_noise(channel, "partial",
                                     f"dropped: {channel.pending} bytes of an unfinished "
                                     f"message for {now - last_message:.1f} s")
                    channel.abort("unfinished message timeout")
                elif (now - channel.last_receive > idle
                      and not self.core.pool_elements_of(channel)):
                    registrar_log.debug("%s: dropped after %.0f s idle",
                                        _peer_text(channel), now - channel.last_receive)
                    channel.abort("idle timeout")

    # ---- logging -----------------------------------------------------------

    def _peer_noise(self, channel: Any, kind: str, text: str) -> None:
        if self._noise is not None:
            self._noise.warning((channel.peer[0], kind), "%s: %s", _peer_text(channel), text)

    def _log_events(self, events: list[Any]) -> None:
        """Log a batch of core events.  The PEs removed because their
        association was lost get one INFO line per association (each PE at
        DEBUG): a PE host with thousands of PEs going away is one line."""
        lost: dict[Any, list[Any]] = {}
        for ev in events:
            if type(ev) is PoolElementRemoved and ev.reason == "association lost":
                lost.setdefault(ev.association, []).append(ev)
            else:
                self._log_event(ev)
        if self._adopted_batch:
            registrar_log.info("%d PE(s) taken over acknowledged their new home (%d to go)",
                               self._adopted_batch, self.core.adopting())
            self._adopted_batch = 0
        for channel, evs in lost.items():
            if len(evs) == 1:
                self._log_event(evs[0])
                continue
            registrar_log.info("%d PEs removed: association %s lost", len(evs),
                               _peer_text(channel))
            if registrar_log.isEnabledFor(logging.DEBUG):
                for ev in evs:
                    registrar_log.debug("PE 0x%08x removed from pool %s: %s", ev.identifier,
                                        format_pool_handle(ev.pool_handle), ev.reason)

    def _log_event(self, ev: Any) -> None:
        t = type(ev)
        if t is PoolElementRegistered or t is PoolElementUpdated:
            channel = ev.association
            level_info = t is PoolElementRegistered
            if not registrar_log.isEnabledFor(logging.INFO if level_info else logging.DEBUG):
                return
            text = ("PE 0x%08x %s in pool %s: %s, %s, life %.1f s, via %s"
                    % (ev.identifier, "registered" if level_info else "re-registered",
                       format_pool_handle(ev.pool_handle), _transport_text(ev.user_transport),
                       _policy_name(ev.policy), ev.registration_life / 1000.0,
                       _peer_text(channel)))
            if level_info:
                registrar_log.info("%s", text)
            else:
                registrar_log.debug("%s", text)
        elif t is PoolElementDeregistered:
            registrar_log.info("PE 0x%08x deregistered from pool %s", ev.identifier,
                               format_pool_handle(ev.pool_handle))
        elif t is PoolElementExpired:
            registrar_log.info("PE 0x%08x of pool %s expired (registration life over)",
                               ev.identifier, format_pool_handle(ev.pool_handle))
        elif t is PoolElementRemoved:
            registrar_log.info("PE 0x%08x removed from pool %s: %s", ev.identifier,
                               format_pool_handle(ev.pool_handle), ev.reason)
        elif t is RegistrationRefused:
            self._peer_noise(ev.association, f"refused-0x{ev.cause:04x}",
                             f"registration of PE 0x{ev.identifier:08x} in pool "
                             f"{format_pool_handle(ev.pool_handle)} refused "
                             f"(cause 0x{ev.cause:04x}: {ev.detail})")
        elif t is DeregistrationRefused:
            self._peer_noise(ev.association, "dereg-refused",
                             f"deregistration of PE 0x{ev.identifier:08x} refused: it was "
                             f"registered over another association")
        elif t is UnreachableReported:
            self._peer_noise(ev.association, "unreachable",
                             f"reports PE 0x{ev.identifier:08x} of pool "
                             f"{format_pool_handle(ev.pool_handle)} unreachable "
                             f"({ev.reports} distinct reporter(s))")
        elif t is PeerMisbehaved:
            self._peer_noise(ev.association, ev.kind,
                             ev.detail + (" (association aborted)" if ev.aborted else ""))
        elif t is PoolElementAdopted:
            self._adopted_batch += 1
            registrar_log.debug("PE 0x%08x of pool %s acknowledged its new home",
                                ev.identifier, format_pool_handle(ev.pool_handle))
        else:  # pragma: no cover - a new event kind
            registrar_log.debug("%r", ev)

    def _on_enrp_event(self, ev: Any) -> None:
        """Act on and log one ENRP core event."""
        t = type(ev)
        E = _enrp
        if t is E.PeerConnectRequested:
            self._connect_peer(ev)
        elif t is E.StartupFinished:
            mentor = "no mentor" if ev.mentor is None else f"mentor 0x{ev.mentor:08x}"
            enrp_log.info("start-up over (%s): serving %d PEs in %d pools", mentor,
                          len(self.handlespace), self.handlespace.pool_count)
            if self.config.announce and self.announcer is None and self._started:
                self._spawn(self._start_announces())
        elif t is E.PeerAppeared:
            enrp_log.info("peer 0x%08x appeared (%s)", ev.peer_id, ev.via)
        elif t is E.PeerAssociationsStale:
            enrp_log.info("peer 0x%08x: its association(s) carried nothing while its Presences "
                          "arrive by multicast: reconnecting", ev.peer_id)
        elif t is E.PeerUnresponsive:
            enrp_log.info("peer 0x%08x unresponsive: probing", ev.peer_id)
        elif t is E.PeerLost:
            taker = "" if ev.taker is None else f", taker 0x{ev.taker:08x}"
            enrp_log.info("peer 0x%08x lost (%s%s)", ev.peer_id, ev.reason, taker)
        elif t is E.MentorChosen:
            enrp_log.info("mentor 0x%08x: downloading its handle table", ev.peer_id)
        elif t is E.HandleTableDownloaded:
            what = "own PEs" if ev.own_children_only else "handle table"
            enrp_log.info("%s of 0x%08x downloaded: %d PEs in %d responses", what,
                          ev.peer_id, ev.count, ev.pages)
        elif t is E.AuditMismatch:
            enrp_log.info("audit: checksum of 0x%08x is 0x%04x, ours 0x%04x: resynchronising",
                          ev.peer_id, ev.reported, ev.computed)
        elif t is E.AuditCompleted:
            enrp_log.info("audit of 0x%08x done: %d PEs received, %d removed", ev.peer_id,
                          ev.received, ev.swept)
        elif t is E.SyncAbandoned:
            enrp_log.warning("handle table download from 0x%08x abandoned: %s", ev.peer_id,
                             ev.reason)
        elif t is E.TakeoverStarted:
            enrp_log.info("takeover of 0x%08x started (acks awaited from %s)", ev.target,
                          ", ".join(f"0x{p:08x}" for p in ev.awaiting) or "nobody")
        elif t is E.TakeoverWon:
            enrp_log.info("takeover of 0x%08x won: %d PEs", ev.target, ev.count)
        elif t is E.TakeoverCompleted:
            enrp_log.info("PEs of 0x%08x now homed at 0x%08x (%d)", ev.old_home, ev.new_home,
                          ev.count)
        elif t is E.TakeoverConceded:
            enrp_log.info("takeover of 0x%08x left to 0x%08x", ev.target, ev.taker)
        elif t is E.TakeoverCancelled:
            enrp_log.info("takeover of 0x%08x cancelled: it is alive", ev.target)
        elif t is E.TakeoverAbandoned:
            enrp_log.warning("takeover of 0x%08x abandoned: no ack from %s", ev.target,
                             ", ".join(f"0x{p:08x}" for p in ev.missing))
        elif t is E.UpdateRefused or t is E.TakeoverRefused or t is E.PeerMisbehaved:
            self._enrp_noise(ev)
        else:
            enrp_log.debug("%r", ev)

    def _enrp_noise(self, ev: Any) -> None:
        if self._noise is None:
            return
        t = type(ev)
        if t is _enrp.PeerMisbehaved:
            key = ev.peer_key
            where = _peer_text(key) if hasattr(key, "peer") else str(key)
            self._noise.warning((where.split(":")[0], "enrp-" + ev.kind),
                                "ENRP %s (0x%08x): %s", where, ev.peer_id, ev.detail)
        elif t is _enrp.UpdateRefused:
            self._noise.warning((ev.peer_id, "update-refused"),
                                "ENRP update from 0x%08x for PE 0x%08x of pool %s refused: %s",
                                ev.peer_id, ev.identifier, format_pool_handle(ev.pool_handle),
                                ev.reason)
        else:
            self._noise.warning((ev.taker, "takeover-refused"),
                                "ENRP takeover of 0x%08x by 0x%08x refused: it is alive",
                                ev.target, ev.taker)


def _existing_channel(ep: Any, host: str, port: int) -> Any:
    """An open channel of ``ep`` to ``host:port`` (SCTP allows one per peer)."""
    for ch in list(ep.channels):
        if not ch.closed and ch.peer[1] == port and (
                host in (ch.peer_addresses or ()) or ch.peer[0] == host):
            return ch
    return None


def _is_v6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
