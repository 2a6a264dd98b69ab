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

from ..config import RegistrarConfig
from ..constants import PPID, PolicyType
from ..errors import RSerPoolError
from ..log import RateLimitedLogger, registrar_log
from ..protocol.asap_registrar import (
    AsapRegistrar,
    DeregistrationRefused,
    PeerMisbehaved,
    PoolElementDeregistered,
    PoolElementExpired,
    PoolElementRegistered,
    PoolElementRemoved,
    PoolElementUpdated,
    RegistrationRefused,
    UnreachableReported,
)
from . import transport as _transport
from .multicast import AnnounceSender

__all__ = ["Registrar", "TransportUnavailableError", "PARTIAL_MESSAGE_TIMEOUT",
           "format_pool_handle"]

#: Seconds a channel may hold part of a message without completing one.
PARTIAL_MESSAGE_TIMEOUT = 10.0

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
    try:
        return PolicyType(policy.policy_type).name
    except ValueError:
        return f"0x{policy.policy_type:08x}"


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
        lines.extend(f"{rid}: {note}" for note in self.notes)
        return lines

    def statistics(self) -> dict[str, int]:
        stats = self.core.statistics()
        stats["channels"] = sum(len(ep.channels) for ep in self._endpoints)
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
                              "pysctp): serving ASAP over TCP only")
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
            if cfg.announce:
                await self._start_announces()
        except BaseException:
            self._started, self._stopped = False, True
            await self._close_endpoints()
            raise
        self._sweeper = loop.create_task(self._sweep())
        if self._log_endpoints:
            for line in self.describe():
                registrar_log.info("%s", line)
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
        except OSError as exc:
            self.notes.append(f"Server Announces are off: cannot send to "
                              f"{cfg.announce_group}:{cfg.announce_port} from "
                              f"{_hostport(source, ep.port)}: {exc}")
            registrar_log.warning("%s", self.notes[-1])

    async def _close_endpoints(self) -> None:
        endpoints, self._endpoints = self._endpoints, []
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
                if events:
                    try:
                        self._log_events(events)
                    except Exception:  # a logging handler failed: keep serving
                        registrar_log.exception("logging registrar events failed")
                if not self._repump:
                    break
        finally:
            self._pumping = False
            self._arm()  # always: a lost timer would stop keep-alives and expiry

    def _arm(self) -> None:
        if not self._started:
            return
        due = self.core.next_deadline()
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
        try:
            # call_at may fire up to one clock tick early: never run before `due`
            self.core.handle_timer(now if due is None else max(now, due))
        except Exception:  # pragma: no cover - a bug in the core; keep serving
            registrar_log.exception("registrar timer handling failed")
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
        for ep in self._endpoints:
            for channel in list(ep.channels):
                if channel.closed:
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
        else:  # pragma: no cover - a new event kind
            registrar_log.debug("%r", ev)


def _is_v6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
