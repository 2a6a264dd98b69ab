"""The pool user (PU) side of ASAP: its handle-resolution cache and the
session layer's failover state machine.  Sans-I/O: no sockets, no clock, no
asyncio; time is the ``now`` argument (float seconds, ``loop.time()``).

Two pieces, both driven by :mod:`rserpool.aio.user`:

:class:`PoolUserCache` (``shared/spec/RSERPOOL.md`` 5.6, 6.7, 6.8)
    Handle resolution results kept for a configurable lifetime (RSPLIB's
    "stale-cache value"; 0 = no caching).  The cache is a local
    :class:`~rserpool.handlespace.Handlespace` running the registrar's
    selection engine with ``max_increment = 10**9`` (every selected entry is
    advanced), as RSPLIB's PU does, so selection from the cache follows the
    pool's policy.  A PE reported unreachable is removed from it.

:class:`SessionCore` (digest 6.16)
    One PU session with a PE: resolve, connect, carry the latest Cookie and
    Business Card, fail over on connection loss or on the application's
    request (report the PE unreachable, resolve again for one item, connect,
    Cookie Echo first, notify the application).  The transitions are the
    table :data:`SESSION_TRANSITIONS`: ``(state, input) -> (handler, next
    states)``.  A pair that is not in the table raises
    :class:`~rserpool.errors.LocalProtocolError` (the driver fed an input the
    state does not allow) and changes nothing.  Each input returns an ordered
    list of *outputs*: actions the driver carries out (:class:`Resolve`,
    :class:`Connect`, :class:`SendData`, :class:`SendControl`,
    :class:`ReportUnreachable`, :class:`CloseChannel`) and events for the
    application (past tense: :class:`SessionConnected`,
    :class:`FailoverStarted`, :class:`FailoverCompleted`, ...).  The driver
    executes them in order.  :func:`session_state_diagram` draws the table.

Rules of the session table (the module's contract):

* Only the latest Cookie is kept (6.16); it is sent as the first message
  (ASAP Cookie Echo) to every new PE after a failover, and to the first PE
  when the application seeded the session with one.
* Data the application sends while no PE is connected is queued and sent,
  after the Cookie Echo, to the next PE.
* A Business Card from the PE is kept (the latest); on failover its PEs are
  tried first, before a new handle resolution (RFC 5352's use of the card;
  RSPLIB ignores cards).  A card naming another pool handle than the
  session's is ignored (:class:`MessageIgnored`): a PE must not redirect the
  session's failover to the elements of some other pool.  The application
  may send its own card, which is re-sent after the Cookie Echo to each new
  PE.
* "Nothing found" (an empty or failed resolution) waits ``retry_delay``
  (HandleResolutionRetryDelay, 250 ms) before resolving again; a failed
  connect resolves again at once, or after the delay when the same PE has
  already failed in this round.  A resolution that offers only PEs which
  failed in this round is, alternately, reported again and waited on, or
  tried once more.  After ``max_retries`` such failures in one round the
  session gives up: :class:`SessionFailed`, state ``closed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from ..constants import MAX32, POLICY_VALUE_NAMES, PPID, TransportUse, policy_name
from ..errors import (
    HandlespaceError,
    LocalProtocolError,
    NonUniqueIdentifierError,
    OperationError,
)
from ..handlespace import TIMER_EXPIRY, Handlespace
from ..wire import (
    BusinessCard,
    Cookie,
    CookieEcho,
    DccpTransport,
    HandleResolutionResponse,
    SctpTransport,
    TcpTransport,
    UdpLiteTransport,
    UdpTransport,
)

__all__ = [
    "PoolElementInfo", "PoolUserCache", "transport_name",
    "SessionState", "SessionInput", "SessionCore", "SESSION_TRANSITIONS",
    "session_state_diagram",
    # actions
    "Resolve", "Connect", "SendData", "SendControl", "ReportUnreachable", "CloseChannel",
    # events
    "SessionConnected", "FailoverStarted", "FailoverCompleted", "SessionFailed",
    "CookieReceived", "BusinessCardReceived", "DataReceived", "MessageIgnored",
    "RetryScheduled", "SessionClosed",
    "DEFAULT_RETRY_DELAY", "DEFAULT_MAX_RETRIES", "DATA_PPID",
]

#: HandleResolutionRetryDelay (digest 6.16, 8.2).
DEFAULT_RETRY_DELAY = 0.25
#: Failed resolutions/connects tolerated in one connect or failover round.
DEFAULT_MAX_RETRIES = 20
#: PPID of application data on a session channel unless the caller picks one.
DATA_PPID = 0

#: PU-side cache selection advances every selected entry (digest 5.6).
_CACHE_MAX_INCREMENT = 10**9

_TRANSPORT_NAMES: dict[type, str] = {
    SctpTransport: "sctp", TcpTransport: "tcp", UdpTransport: "udp",
    UdpLiteTransport: "udplite", DccpTransport: "dccp",
}


def transport_name(user_transport: Any) -> str:
    """``"sctp"``, ``"tcp"``, ``"udp"``, ``"udplite"`` or ``"dccp"``."""
    return _TRANSPORT_NAMES.get(type(user_transport), type(user_transport).__name__.lower())


# ---------------------------------------------------------------------------
# a selected pool element, as the PU API shows it

@dataclass(frozen=True)
class PoolElementInfo:
    """One pool element as a handle resolution gave it to the PU.

    ``transport`` is the user transport's protocol (``"tcp"``, ``"sctp"``,
    ...), ``addresses``/``port`` where the PE serves its users;
    ``transport_use`` 1 means data plus ASAP control (session layer).
    ``policy`` is the policy's name (``"ROUND_ROBIN"``...), ``policy_values``
    its raw 32-bit words, and ``load``/``weight``/``priority``/
    ``load_degradation`` the named ones (None when the policy has none).
    ``element`` is the wire :class:`~rserpool.wire.PoolElement`.
    """

    pool_handle: bytes
    identifier: int
    transport: str
    addresses: tuple[str, ...]
    port: int
    transport_use: int
    policy: str
    policy_type: int
    policy_values: tuple[int, ...]
    load: int | None
    weight: int | None
    priority: int | None
    load_degradation: int | None
    home_registrar: int
    registration_life: int
    element: Any = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_pool_element(cls, pool_handle: bytes, pe: Any) -> "PoolElementInfo":
        """Build from a wire ``PoolElement`` of pool ``pool_handle``."""
        ut = pe.user_transport
        pol = pe.policy
        return cls(
            pool_handle=bytes(pool_handle), identifier=pe.identifier,
            transport=transport_name(ut), addresses=tuple(ut.addresses), port=ut.port,
            transport_use=int(getattr(ut, "transport_use", TransportUse.DATA_ONLY)),
            policy=policy_name(pol.policy_type), policy_type=int(pol.policy_type),
            policy_values=tuple(pol.values), load=pol.load, weight=pol.weight,
            priority=pol.priority, load_degradation=pol.load_degradation,
            home_registrar=pe.home_registrar, registration_life=pe.registration_life,
            element=pe)

    @property
    def load_percent(self) -> float | None:
        """The load as a percentage (0xFFFFFFFF = 100 %), or None."""
        return None if self.load is None else 100.0 * self.load / MAX32

    @property
    def has_control_channel(self) -> bool:
        """True when the PE takes ASAP control messages on its data channel."""
        return self.transport_use == TransportUse.DATA_PLUS_CONTROL

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (``pool_handle`` as text when it decodes)."""
        try:
            handle: str = self.pool_handle.decode("utf-8")
        except UnicodeDecodeError:
            handle = self.pool_handle.hex()
        names = POLICY_VALUE_NAMES.get(self.policy_type, ())
        return {
            "pool_handle": handle, "identifier": self.identifier,
            "identifier_hex": f"0x{self.identifier:08x}", "transport": self.transport,
            "addresses": list(self.addresses), "port": self.port,
            "transport_use": self.transport_use, "policy": self.policy,
            "policy_type": self.policy_type,
            "policy_values": dict(zip(names, self.policy_values)) if names
            else list(self.policy_values),
            "load": self.load, "load_percent": self.load_percent, "weight": self.weight,
            "priority": self.priority, "load_degradation": self.load_degradation,
            "home_registrar": self.home_registrar,
            "registration_life_ms": self.registration_life,
        }


# ---------------------------------------------------------------------------
# the PU cache

class PoolUserCache:
    """Handle resolution results, cached for ``lifetime`` seconds, with the
    pool's policy applied to the cached entries (digest 5.6, 6.7).

    Typical use by a driver::

        hit = cache.lookup(handle, count, now)
        if hit is None:
            response = <ask the registrar for cache.request_items(count)>
            hit = cache.store(response, count, now)

    :param lifetime: seconds an entry stays (0: nothing is kept, every
        lookup misses and :meth:`store` returns the registrar's own
        selection).
    :param seed: seed of the selection engine's random generator.
    :param max_handle_length: longest pool handle accepted.
    """

    def __init__(self, lifetime: float = 0.0, *, seed: int = 0,
                 max_handle_length: int = 255) -> None:
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) \
                or lifetime < 0 or lifetime != lifetime:
            raise ValueError(f"cache lifetime must be >= 0 seconds, not {lifetime!r}")
        self._lifetime = float(lifetime)
        self._hs = Handlespace(seed=seed & 0xFFFFFFFFFFFFFFFF,
                               max_increment=_CACHE_MAX_INCREMENT,
                               max_bad_pe_reports=1 << 30,
                               max_handle_length=max_handle_length)
        self._pool_of: dict[int, bytes] = {}
        #: Statistics: lookups answered from the cache / missed.
        self.hits = 0
        self.misses = 0

    @property
    def lifetime(self) -> float:
        return self._lifetime

    # -- queries -----------------------------------------------------------

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return key in self._hs

    def pool_size(self, pool_handle: bytes) -> int:
        return self._hs.pool_size(pool_handle)

    def elements(self, pool_handle: bytes) -> list[PoolElementInfo]:
        """The cached PEs of a pool (identifier order), without selecting."""
        return [self._info(e) for e in self._hs.pool_elements(pool_handle)]

    def next_deadline(self) -> float | None:
        """When the next cached entry expires (None: nothing cached)."""
        return self._hs.next_deadline()

    def request_items(self, count: int | None) -> int | None:
        """The item count to put in a Handle Resolution for ``count`` wanted
        PEs: with caching on, None (the registrar's default, so that the
        cache learns more than one PE), else ``count`` (digest 6.7)."""
        if count is None or self._lifetime > 0:
            return None
        return count

    # -- state changes -----------------------------------------------------

    def expire(self, now: float) -> list[tuple[bytes, int]]:
        """Drop entries whose lifetime ended at or before ``now``."""
        gone = [(handle, ident) for handle, ident, _kind in self._hs.expire(now)]
        for _handle, ident in gone:
            self._pool_of.pop(ident, None)
        return gone

    def lookup(self, pool_handle: bytes, count: int | None, now: float
               ) -> list[PoolElementInfo] | None:
        """Select ``count`` PEs (None: all) of a cached pool by its policy,
        or None on a miss (pool not cached, or its entries expired)."""
        self.expire(now)
        if self._lifetime <= 0 or self._hs.pool_size(pool_handle) == 0:
            self.misses += 1
            return None
        self.hits += 1
        return self._select(pool_handle, count)

    def store(self, response: Any, count: int | None, now: float) -> list[PoolElementInfo]:
        """Take a Handle Resolution Response: raise :class:`OperationError`
        for an error response (an unknown pool is also dropped from the
        cache), else cache its PEs and return ``count`` of them (None: all)
        selected by the pool's policy.  Without caching the registrar's own
        selection is returned as it came."""
        if not isinstance(response, HandleResolutionResponse):
            raise TypeError("store() takes a HandleResolutionResponse")
        handle = response.pool_handle
        if response.error:
            self.invalidate(handle)
            cause = response.error[0]
            raise OperationError(cause.code, cause.info)
        if self._lifetime <= 0:
            infos = [PoolElementInfo.from_pool_element(handle, pe)
                     for pe in response.pool_elements if _usable(pe)]
            return infos if count is None else infos[:max(count, 0)]
        self.expire(now)
        deadline = now + self._lifetime
        for pe in response.pool_elements:
            if not _usable(pe):
                continue
            self._insert(handle, pe, now, deadline)
        return self._select(handle, count)

    def remove(self, pool_handle: bytes, identifier: int) -> bool:
        """Forget one PE (it was reported unreachable, digest 6.8)."""
        gone = self._hs.deregister(pool_handle, identifier) is not None
        if gone:
            self._pool_of.pop(identifier, None)
        return gone

    def invalidate(self, pool_handle: bytes | None = None) -> int:
        """Forget a pool (or everything); returns how many PEs were dropped."""
        handles = self._hs.pools() if pool_handle is None else [pool_handle]
        n = 0
        for handle in handles:
            for entry in self._hs.pool_elements(handle):
                self.remove(handle, entry.identifier)
                n += 1
        return n

    # -- internals ---------------------------------------------------------

    def _insert(self, handle: bytes, pe: Any, now: float, deadline: float) -> None:
        for attempt in range(3):
            try:
                self._hs.register(handle, pe, now, timer=TIMER_EXPIRY, deadline=deadline)
            except NonUniqueIdentifierError:
                # the same PE ID cached under another pool: the newer answer wins
                old = self._pool_of.get(pe.identifier)
                if old is None or attempt:
                    return
                self.remove(old, pe.identifier)
            except HandlespaceError:
                # the pool changed policy or transport at the registrar (it
                # was emptied and created anew): start the pool afresh
                if attempt or self.invalidate(handle) == 0:
                    return
            else:
                self._pool_of[pe.identifier] = handle
                return

    def _select(self, handle: bytes, count: int | None) -> list[PoolElementInfo]:
        n = self._hs.pool_size(handle) if count is None else count
        return [self._info(e) for e in self._hs.select_entries(handle, n)]

    @staticmethod
    def _info(entry: Any) -> PoolElementInfo:
        return PoolElementInfo.from_pool_element(entry.pool_handle, entry.pool_element)


def _usable(pe: Any) -> bool:
    """A PE the PU can contact: known transport kind, a port, an address."""
    ut = pe.user_transport
    return (type(ut) in _TRANSPORT_NAMES and ut.port != 0 and bool(ut.addresses)
            and pe.identifier != 0)


# ---------------------------------------------------------------------------
# session outputs: actions for the driver ...

@dataclass(frozen=True)
class Resolve:
    """Resolve ``pool_handle`` for ``items`` PEs (through the PU cache); feed
    :meth:`SessionCore.resolved` or :meth:`SessionCore.not_resolved`."""

    pool_handle: bytes
    items: int = 1


@dataclass(frozen=True)
class Connect:
    """Open a session channel to ``element``; feed
    :meth:`SessionCore.connected` or :meth:`SessionCore.connect_failed`."""

    element: PoolElementInfo


@dataclass(frozen=True)
class SendData:
    """Send application data on the session channel."""

    data: bytes
    ppid: int = DATA_PPID


@dataclass(frozen=True)
class SendControl:
    """Send an ASAP message (Cookie Echo, Business Card) on the session
    channel, PPID 11."""

    message: Any


@dataclass(frozen=True)
class ReportUnreachable:
    """Drop the PE from the PU cache and send ASAP Endpoint Unreachable."""

    pool_handle: bytes
    identifier: int


@dataclass(frozen=True)
class CloseChannel:
    """Close the current session channel (or cancel the connect in
    progress); ``abort``: at once (TCP RST / SCTP ABORT)."""

    abort: bool = False


# ... and events for the application (past tense)

@dataclass(frozen=True)
class SessionConnected:
    """The session reached its first PE."""

    element: PoolElementInfo
    cookie_echoed: bool = False


@dataclass(frozen=True)
class FailoverStarted:
    """The session lost ``element`` (``reason``) and looks for another PE."""

    element: PoolElementInfo
    reason: str


@dataclass(frozen=True)
class FailoverCompleted:
    """The session continues with ``element``; ``cookie_echoed`` tells
    whether the latest Cookie was handed to it."""

    element: PoolElementInfo
    previous: PoolElementInfo | None
    cookie_echoed: bool


@dataclass(frozen=True)
class SessionFailed:
    """No PE could be reached after the allowed retries; the session is closed."""

    reason: str


@dataclass(frozen=True)
class CookieReceived:
    """The PE sent a Cookie (it replaces any earlier one)."""

    cookie: bytes


@dataclass(frozen=True)
class BusinessCardReceived:
    """The PE sent a Business Card (kept; its PEs are failover candidates)."""

    card: Any


@dataclass(frozen=True)
class DataReceived:
    """Application data from the PE."""

    data: bytes
    ppid: int


@dataclass(frozen=True)
class MessageIgnored:
    """An ASAP message a PU does not expect on a session (logged, dropped)."""

    message: Any
    reason: str


@dataclass(frozen=True)
class RetryScheduled:
    """Nothing usable was found; the next resolution is due at ``at``."""

    at: float
    reason: str
    attempt: int


@dataclass(frozen=True)
class SessionClosed:
    """The application closed the session."""


Action = Union[Resolve, Connect, SendData, SendControl, ReportUnreachable, CloseChannel]
Event = Union[SessionConnected, FailoverStarted, FailoverCompleted, SessionFailed,
              CookieReceived, BusinessCardReceived, DataReceived, MessageIgnored,
              RetryScheduled, SessionClosed]
Output = Union[Action, Event]


# ---------------------------------------------------------------------------
# the session state machine

class SessionState(enum.Enum):
    IDLE = "idle"
    RESOLVING = "resolving"
    WAITING = "waiting"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    FAILOVER_RESOLVING = "failover-resolving"
    FAILOVER_WAITING = "failover-waiting"
    FAILOVER_CONNECTING = "failover-connecting"
    CLOSED = "closed"


class SessionInput(enum.Enum):
    OPEN = "open"                                  # application: start the session
    RESOLVED = "resolved"                          # resolution gave PEs
    NOT_RESOLVED = "not-resolved"                  # resolution failed / gave none
    RETRY_DUE = "retry-due"                        # the retry delay passed
    CONNECTED = "connected"                        # channel to the PE is up
    CONNECT_FAILED = "connect-failed"              # channel could not be opened
    CONNECTION_LOST = "connection-lost"            # established channel lost
    COOKIE_RECEIVED = "cookie-received"            # ASAP Cookie from the PE
    BUSINESS_CARD_RECEIVED = "business-card-received"
    DATA_RECEIVED = "data-received"
    UNEXPECTED_MESSAGE = "unexpected-message"      # another ASAP message from the PE
    APP_SEND = "app-send"                          # application data / own business card
    APP_FAILOVER = "app-failover"                  # application forces a failover
    APP_CLOSE = "app-close"


S = SessionState
I = SessionInput  # noqa: E741

_LOOKING = (S.RESOLVING, S.WAITING, S.CONNECTING,
            S.FAILOVER_RESOLVING, S.FAILOVER_WAITING, S.FAILOVER_CONNECTING)
_RESOLVING_NEXT = (S.CONNECTING, S.WAITING, S.CLOSED)
_FAILOVER_RESOLVING_NEXT = (S.FAILOVER_CONNECTING, S.FAILOVER_WAITING, S.CLOSED)
_FAILOVER_NEXT = (S.FAILOVER_RESOLVING, S.FAILOVER_CONNECTING)


def _build_table() -> dict[tuple[SessionState, SessionInput], tuple[str, tuple[SessionState, ...]]]:
    t: dict[tuple[SessionState, SessionInput], tuple[str, tuple[SessionState, ...]]] = {
        (S.IDLE, I.OPEN): ("_on_open", (S.RESOLVING,)),
        (S.RESOLVING, I.RESOLVED): ("_on_resolved", _RESOLVING_NEXT),
        (S.RESOLVING, I.NOT_RESOLVED): ("_on_not_resolved", (S.WAITING, S.CLOSED)),
        (S.WAITING, I.RETRY_DUE): ("_on_retry_due", (S.RESOLVING,)),
        (S.CONNECTING, I.CONNECTED): ("_on_connected", (S.ESTABLISHED,)),
        (S.CONNECTING, I.CONNECT_FAILED): ("_on_connect_failed",
                                           (S.RESOLVING, S.WAITING, S.CLOSED)),
        (S.FAILOVER_RESOLVING, I.RESOLVED): ("_on_resolved", _FAILOVER_RESOLVING_NEXT),
        (S.FAILOVER_RESOLVING, I.NOT_RESOLVED): ("_on_not_resolved",
                                                 (S.FAILOVER_WAITING, S.CLOSED)),
        (S.FAILOVER_WAITING, I.RETRY_DUE): ("_on_retry_due", (S.FAILOVER_RESOLVING,)),
        (S.FAILOVER_CONNECTING, I.CONNECTED): ("_on_connected", (S.ESTABLISHED,)),
        (S.FAILOVER_CONNECTING, I.CONNECT_FAILED): (
            "_on_connect_failed",
            (S.FAILOVER_RESOLVING, S.FAILOVER_CONNECTING, S.FAILOVER_WAITING, S.CLOSED)),
        (S.ESTABLISHED, I.DATA_RECEIVED): ("_on_data", (S.ESTABLISHED,)),
        (S.ESTABLISHED, I.COOKIE_RECEIVED): ("_on_cookie", (S.ESTABLISHED,)),
        (S.ESTABLISHED, I.BUSINESS_CARD_RECEIVED): ("_on_business_card", (S.ESTABLISHED,)),
        (S.ESTABLISHED, I.UNEXPECTED_MESSAGE): ("_on_unexpected", (S.ESTABLISHED,)),
        (S.ESTABLISHED, I.APP_SEND): ("_on_send", (S.ESTABLISHED,)),
        (S.ESTABLISHED, I.CONNECTION_LOST): ("_on_lost", _FAILOVER_NEXT),
        (S.ESTABLISHED, I.APP_FAILOVER): ("_on_app_failover", _FAILOVER_NEXT),
        (S.ESTABLISHED, I.APP_CLOSE): ("_on_close", (S.CLOSED,)),
        (S.IDLE, I.APP_CLOSE): ("_on_close", (S.CLOSED,)),
        (S.CLOSED, I.APP_CLOSE): ("_on_nothing", (S.CLOSED,)),
    }
    for state in _LOOKING:
        # while looking for a PE: data is queued, a forced failover changes
        # nothing (one is under way), closing stops the search
        t[(state, I.APP_SEND)] = ("_on_queue", (state,))
        t[(state, I.APP_FAILOVER)] = ("_on_nothing", (state,))
        t[(state, I.APP_CLOSE)] = ("_on_close", (S.CLOSED,))
    return t


#: ``(state, input) -> (handler name, states it may lead to)``.  Pairs not in
#: the table are protocol errors (:class:`LocalProtocolError`).
SESSION_TRANSITIONS = _build_table()


class SessionCore:
    """One PU session's state machine (see the module docstring).

    :param pool_handle: the pool the session uses.
    :param cookie: a Cookie to echo to the first PE (e.g. from an earlier
        session), or None.
    :param retry_delay: seconds to wait after a resolution found nothing.
    :param max_retries: failures tolerated in one connect/failover round.
    """

    def __init__(self, pool_handle: bytes, *, cookie: bytes | None = None,
                 retry_delay: float = DEFAULT_RETRY_DELAY,
                 max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        if not isinstance(pool_handle, (bytes, bytearray)) or not pool_handle:
            raise ValueError("pool_handle must be non-empty bytes")
        if retry_delay < 0 or max_retries < 0:
            raise ValueError("retry_delay and max_retries must be >= 0")
        self.pool_handle = bytes(pool_handle)
        self.retry_delay = float(retry_delay)
        self.max_retries = int(max_retries)
        self.state = SessionState.IDLE
        #: The latest Cookie from a PE (or the seed), None if none yet.
        self.cookie: bytes | None = None if cookie is None else bytes(cookie)
        #: The latest Business Card from a PE.
        self.business_card: Any = None
        #: The application's own Business Card, re-sent to each new PE.
        self.own_business_card: Any = None
        #: The PE in use (ESTABLISHED), being connected to, or last used.
        self.element: PoolElementInfo | None = None
        #: Number of completed failovers.
        self.failovers = 0
        self._previous: PoolElementInfo | None = None
        self._queue: list[SendData | SendControl] = []
        self._failed: dict[int, int] = {}        # PE id -> failures this round
        self._failures = 0                        # failures this round
        self._card_tried: set[int] = set()
        self._skipped: dict[int, int] = {}       # PE id -> offered again and skipped
        self._deadline: float | None = None
        self._out: list[Output] = []

    # -- public inputs ------------------------------------------------------

    def feed(self, inp: SessionInput, now: float, *args: Any) -> list[Output]:
        """The generic entry point: one input with its arguments (those of
        the handler the table names).  The named methods below are the
        friendlier way in."""
        return self._fire(inp, now, *args)

    def open(self, now: float) -> list[Output]:
        """Start: resolve the pool."""
        return self._fire(I.OPEN, now)

    def resolved(self, elements: Sequence[PoolElementInfo], now: float) -> list[Output]:
        """The answer to :class:`Resolve` (may be empty: nothing found)."""
        if not elements:
            return self.not_resolved("no pool element found", now)
        return self._fire(I.RESOLVED, now, list(elements))

    def not_resolved(self, reason: str, now: float) -> list[Output]:
        """The resolution failed (unknown pool, no registrar, timeout)."""
        return self._fire(I.NOT_RESOLVED, now, reason)

    def handle_timer(self, now: float) -> list[Output]:
        """Call at :meth:`next_deadline` (earlier calls do nothing)."""
        if self._deadline is None or now < self._deadline:
            return []
        return self._fire(I.RETRY_DUE, now)

    def connected(self, now: float) -> list[Output]:
        """The channel asked for by :class:`Connect` is up."""
        return self._fire(I.CONNECTED, now)

    def connect_failed(self, reason: str, now: float) -> list[Output]:
        """The channel asked for by :class:`Connect` could not be opened."""
        return self._fire(I.CONNECT_FAILED, now, reason)

    def connection_lost(self, reason: str, now: float) -> list[Output]:
        """The established channel went away (peer closed, reset, abort)."""
        return self._fire(I.CONNECTION_LOST, now, reason)

    def message_received(self, message: Any, now: float) -> list[Output]:
        """A decoded ASAP message (PPID 11) from the PE."""
        if isinstance(message, Cookie):
            return self._fire(I.COOKIE_RECEIVED, now, message.cookie)
        if isinstance(message, BusinessCard):
            return self._fire(I.BUSINESS_CARD_RECEIVED, now, message)
        return self._fire(I.UNEXPECTED_MESSAGE, now, message)

    def data_received(self, data: bytes, ppid: int, now: float) -> list[Output]:
        """Application data (any PPID but ASAP's) from the PE."""
        return self._fire(I.DATA_RECEIVED, now, bytes(data), ppid)

    def send(self, data: bytes, now: float, *, ppid: int = DATA_PPID) -> list[Output]:
        """Application data to the PE (queued while no PE is connected)."""
        if ppid == PPID.ASAP:
            raise ValueError("PPID 11 is ASAP's; application data needs another PPID")
        return self._fire(I.APP_SEND, now, SendData(bytes(data), ppid))

    def send_business_card(self, card: Any, now: float) -> list[Output]:
        """Send the application's own Business Card (kept for later PEs too)."""
        if not isinstance(card, BusinessCard):
            raise TypeError("send_business_card() takes a wire BusinessCard")
        if self.state in _LOOKING:
            self.own_business_card = card     # sent after the Cookie Echo on connect
            return []
        out = self._fire(I.APP_SEND, now, SendControl(card))
        self.own_business_card = card
        return out

    def failover(self, now: float, *, report: bool = True,
                 reason: str = "failover requested") -> list[Output]:
        """The application forces a failover (``report``: tell the registrar
        the PE is unreachable)."""
        return self._fire(I.APP_FAILOVER, now, report, reason)

    def close(self, now: float) -> list[Output]:
        """End the session (idempotent)."""
        return self._fire(I.APP_CLOSE, now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` is due (None: no timer)."""
        return self._deadline

    @property
    def queued(self) -> int:
        """Messages waiting for the next PE."""
        return len(self._queue)

    # -- the engine --------------------------------------------------------

    def _fire(self, inp: SessionInput, now: float, *args: Any) -> list[Output]:
        entry = SESSION_TRANSITIONS.get((self.state, inp))
        if entry is None:
            raise LocalProtocolError(
                f"session input {inp.value!r} is not allowed in state {self.state.value!r}")
        name, allowed = entry
        handler: Callable[..., SessionState] = getattr(self, name)
        self._out = []
        nxt = handler(now, *args)
        assert nxt in allowed, (self.state, inp, nxt)
        self.state = nxt
        out, self._out = self._out, []
        return out

    def _emit(self, *items: Output) -> None:
        self._out.extend(items)

    def _start_round(self) -> None:
        self._failed.clear()
        self._failures = 0
        self._card_tried.clear()
        self._skipped.clear()
        self._deadline = None

    def _resolve(self, failover: bool) -> SessionState:
        self._deadline = None
        self._emit(Resolve(self.pool_handle, 1))
        return S.FAILOVER_RESOLVING if failover else S.RESOLVING

    def _connect(self, element: PoolElementInfo, failover: bool) -> SessionState:
        self._deadline = None
        self.element = element
        self._emit(Connect(element))
        return S.FAILOVER_CONNECTING if failover else S.CONNECTING

    def _retry_later(self, now: float, reason: str, failover: bool) -> SessionState:
        """One more failure: wait and resolve again, or give up."""
        self._failures += 1
        if self._failures > self.max_retries:
            return self._give_up(reason)
        return self._wait(now, reason, failover)

    def _wait(self, now: float, reason: str, failover: bool) -> SessionState:
        self._deadline = now + self.retry_delay
        self._emit(RetryScheduled(self._deadline, reason, self._failures))
        return S.FAILOVER_WAITING if failover else S.WAITING

    def _give_up(self, reason: str) -> SessionState:
        self._deadline = None
        self._queue.clear()
        self._emit(SessionFailed(f"no pool element of {self.pool_handle!r} reachable "
                                 f"after {self._failures} attempts: {reason}"))
        return S.CLOSED

    def _card_candidate(self) -> PoolElementInfo | None:
        card = self.business_card
        if card is None or card.pool_handle != self.pool_handle:
            return None
        for pe in card.pool_elements:
            info = PoolElementInfo.from_pool_element(card.pool_handle, pe)
            if (info.identifier in self._card_tried or info.identifier in self._failed
                    or not _usable(pe)):
                continue
            return info
        return None

    def _failover_step(self) -> SessionState:
        candidate = self._card_candidate()
        if candidate is not None:
            self._card_tried.add(candidate.identifier)
            return self._connect(candidate, True)
        return self._resolve(True)

    # -- handlers: each returns the next state --------------------------------

    def _on_open(self, now: float) -> SessionState:
        self._start_round()
        return self._resolve(False)

    def _on_resolved(self, now: float, elements: list[PoolElementInfo]) -> SessionState:
        failover = self.state is S.FAILOVER_RESOLVING
        fresh = [e for e in elements if e.identifier not in self._failed]
        if fresh:
            return self._connect(fresh[0], failover)
        # Only PEs that failed in this round.  Alternately: report them again
        # (the registrar removes a PE after MaxBadPEReports) and wait for it
        # to offer another one; then try the same PE once more (it may have
        # been a transient failure, and a one-PE pool has nothing else).
        element = elements[0]
        if not self._skipped.get(element.identifier):
            self._skipped[element.identifier] = 1
            for e in elements:
                self._emit(ReportUnreachable(e.pool_handle, e.identifier))
            return self._retry_later(now, f"only PE 0x{element.identifier:08x} found, "
                                     "which failed already", failover)
        self._skipped[element.identifier] = 0
        return self._connect(element, failover)

    def _on_not_resolved(self, now: float, reason: str) -> SessionState:
        return self._retry_later(now, reason, self.state is S.FAILOVER_RESOLVING)

    def _on_retry_due(self, now: float) -> SessionState:
        return self._resolve(self.state is S.FAILOVER_WAITING)

    def _on_connected(self, now: float) -> SessionState:
        failover = self.state is S.FAILOVER_CONNECTING
        assert self.element is not None
        echoed = False
        if self.cookie is not None:
            self._emit(SendControl(CookieEcho(self.cookie)))
            echoed = True
        if self.own_business_card is not None:
            self._emit(SendControl(self.own_business_card))
        queued, self._queue = self._queue, []
        self._emit(*queued)
        if failover:
            self.failovers += 1
            self._emit(FailoverCompleted(self.element, self._previous, echoed))
        else:
            self._emit(SessionConnected(self.element, echoed))
        self._start_round()
        return S.ESTABLISHED

    def _on_connect_failed(self, now: float, reason: str) -> SessionState:
        failover = self.state is S.FAILOVER_CONNECTING
        element = self.element
        assert element is not None
        self._emit(ReportUnreachable(element.pool_handle, element.identifier))
        seen = self._failed.get(element.identifier, 0)
        self._failed[element.identifier] = seen + 1
        reason = f"PE 0x{element.identifier:08x}: {reason}"
        self._failures += 1
        if self._failures > self.max_retries:
            return self._give_up(reason)
        if failover:
            candidate = self._card_candidate()
            if candidate is not None:
                self._card_tried.add(candidate.identifier)
                return self._connect(candidate, True)
        if seen:
            return self._wait(now, reason, failover)
        return self._resolve(failover)

    def _begin_failover(self, now: float, reason: str, report: bool,
                        close: bool) -> SessionState:
        element = self.element
        assert element is not None
        self._previous = element
        if close:
            self._emit(CloseChannel(abort=True))
        if report:
            self._emit(ReportUnreachable(element.pool_handle, element.identifier))
        self._emit(FailoverStarted(element, reason))
        self._start_round()
        self._failed[element.identifier] = 1
        return self._failover_step()

    def _on_lost(self, now: float, reason: str) -> SessionState:
        return self._begin_failover(now, reason, report=True, close=False)

    def _on_app_failover(self, now: float, report: bool, reason: str) -> SessionState:
        return self._begin_failover(now, reason, report=report, close=True)

    def _on_data(self, now: float, data: bytes, ppid: int) -> SessionState:
        self._emit(DataReceived(data, ppid))
        return S.ESTABLISHED

    def _on_cookie(self, now: float, cookie: bytes) -> SessionState:
        self.cookie = cookie
        self._emit(CookieReceived(cookie))
        return S.ESTABLISHED

    def _on_business_card(self, now: float, card: Any) -> SessionState:
        if card.pool_handle != self.pool_handle:
            self._emit(MessageIgnored(card, f"Business Card for pool {card.pool_handle!r}, "
                                            f"not the session's {self.pool_handle!r}"))
            return S.ESTABLISHED
        self.business_card = card
        self._emit(BusinessCardReceived(card))
        return S.ESTABLISHED

    def _on_unexpected(self, now: float, message: Any) -> SessionState:
        self._emit(MessageIgnored(message, f"a pool user does not take "
                                           f"{type(message).__name__} on a session"))
        return S.ESTABLISHED

    def _on_send(self, now: float, item: SendData | SendControl) -> SessionState:
        self._emit(item)
        return S.ESTABLISHED

    def _on_queue(self, now: float, item: SendData | SendControl) -> SessionState:
        self._queue.append(item)
        return self.state

    def _on_close(self, now: float) -> SessionState:
        if self.state is not S.IDLE:
            self._emit(CloseChannel(abort=False))
        self._deadline = None
        self._queue.clear()
        self._emit(SessionClosed())
        return S.CLOSED

    def _on_nothing(self, now: float, *args: Any) -> SessionState:
        return self.state


def session_state_diagram(table: dict[tuple[SessionState, SessionInput],
                                      tuple[str, tuple[SessionState, ...]]]
                          | None = None) -> str:
    """The session table as Graphviz DOT text (``dot -Tsvg``)."""
    table = SESSION_TRANSITIONS if table is None else table
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, inp), (_handler, targets) in table.items():
        for target in targets:
            edges.setdefault((state.value, target.value), []).append(inp.value)
    lines = ["digraph pu_session {", "  rankdir=LR;", "  node [shape=box];"]
    for (src, dst), labels in sorted(edges.items()):
        lines.append(f'  "{src}" -> "{dst}" [label="{", ".join(sorted(set(labels)))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"

