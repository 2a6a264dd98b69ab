"""The registrar's ASAP procedures (RFC 5352; ``shared/spec/RSERPOOL.md``
sections 2 and 6.3-6.9) as a sans-I/O core.

No I/O and no clock: this module never imports ``asyncio``, ``socket`` or
``time``.  Its driver (:mod:`rserpool.aio.registrar`) tells it about
associations (a TCP connection or an SCTP association; any hashable object
names one), hands it every whole ASAP message with the current time, and
carries out what comes back:

* :meth:`AsapRegistrar.receive` returns the direct reply (bytes) or None;
* :meth:`AsapRegistrar.pop_sends` -- other messages to send, ``(association,
  bytes)`` (keep-alives);
* :meth:`AsapRegistrar.pop_aborts` -- associations to abort, ``(association,
  reason)``; their pool elements are already removed;
* :meth:`AsapRegistrar.pop_events` -- what happened, as the frozen
  dataclasses below (past tense);
* :meth:`AsapRegistrar.next_deadline` -- when to call
  :meth:`AsapRegistrar.handle_timer` next.

Rules this module follows (decisions marked *ours* go beyond RSPLIB):

* **Handle resolution is the hot path**: request bytes ->
  ``parse_handle_resolution`` -> ``Handlespace.resolve`` -> response bytes.
  No per-PE Python object is made.  Items: option absent or 0 ->
  ``max_hres_items``; otherwise the option's value, capped at 128 (so
  0xFFFFFFFF means "as many as possible").  An unknown pool gets a response
  with Operation Error 0x0009.  A pool whose every PE has selection weight 0
  gets the pool's policy parameter and no PE (ours).
* **Registration** (6.3): PE identifier 0 -> cause 0xF000 (RSPLIB's).  The user
  addresses are filtered to the association's peer addresses; a wildcard
  address (0.0.0.0 / ::) stands for all of them; nothing left -> 0xF008.  The
  ASAP transport comes from the association; over TCP an SCTP transport
  parameter inside the registration's Pool Element may name the port of the
  PE's ASAP listener (its addresses are filtered the same way).  A handlespace
  refusal is answered with the R flag and the exception's ``CAUSE``.
  *Ours*: a PE identifier registered over one live association may be
  re-registered over another only from one of the same peer addresses (a PE
  that reconnects); otherwise cause 0x000A.
* **Deregistration** (6.5): *ours* (RFC 5355 2.4; RSPLIB does not check):
  only over the association that registered the PE; from anywhere else ->
  cause 0x000A and nothing changes.  Unknown PE -> success, as RSPLIB.
* **Keep-alive** (6.6): after each registration and each in-time ACK, a
  TIMER_KEEP_ALIVE_TRANSMISSION at ``now + keep_alive_interval``; when due, an
  Endpoint Keep-Alive (server ID, pool handle, PE identifier, H=0) goes over
  the PE's association and the timer becomes TIMER_KEEP_ALIVE_TIMEOUT at
  ``now + keep_alive_timeout``.  An ACK counts only over the PE's own
  association.  Timeout -> the PE is removed (:class:`PoolElementRemoved`,
  reason ``"keep-alive timeout"``); *ours*: the association is aborted only
  if no other PE remains registered over it (RSPLIB always aborts it, which
  also drops every other PE of that association, even ones that answer).
* **Registration life**: checked when a keep-alive falls due: a PE that has
  not re-registered within its registration life is expired
  (:class:`PoolElementExpired`) instead of being sent a keep-alive.
* **Endpoint unreachable** (6.8): *ours*: reports are counted per distinct
  reporter, a reporter being the set of peer addresses of the reporting
  association: a PU repeating a report, over the same association or after
  reconnecting from the same addresses, adds nothing (RSPLIB counts every
  report), so one PU host alone cannot remove a PE when
  ``max_bad_pe_reports`` > 1 -- the keep-alive, which the PE's own registrar
  controls, decides instead.  (A host with several addresses can report once
  per address set it uses.)  A repeated report costs one decode and two
  dictionary look-ups and is not logged.
* **Association loss or shutdown** removes every PE registered over it.
* **Bad input**: a message of a type this side never receives ->
  ASAP Error cause 0x0002 carrying (the start of) the message; an unknown
  parameter whose action bits say *stop and report* -> ASAP Error cause
  0x0001 carrying the parameter; *stop silently* -> dropped; anything else
  that does not decode -> the association is aborted.  An ASAP Error is
  never answered.  Nothing a peer sends raises out of :meth:`receive` or
  leaves the handlespace half-changed.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

from ..config import RegistrarConfig
from ..constants import MAX32, AsapType, ErrorCause, TransportUse
from ..errors import (
    EncodeError,
    HandlespaceError,
    UnknownMessageError,
    UnknownParameterError,
    WireError,
)
from ..handlespace import (
    TIMER_EXPIRY,
    TIMER_KEEP_ALIVE_TIMEOUT,
    TIMER_KEEP_ALIVE_TRANSMISSION,
    Handlespace,
)
from ..log import asap_log
from ..wire import (
    AsapErrorMessage,
    Cause,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolutionResponse,
    PoolElement,
    Registration,
    RegistrationResponse,
    SctpTransport,
    ServerAnnounce,
    TcpTransport,
    decode_message,
    encode_message,
    parse_handle_resolution,
)

__all__ = [
    "AsapRegistrar", "AssociationInfo",
    "PoolElementRegistered", "PoolElementUpdated", "PoolElementDeregistered",
    "PoolElementExpired", "PoolElementRemoved", "RegistrationRefused",
    "DeregistrationRefused", "UnreachableReported", "PeerMisbehaved", "PoolElementAdopted",
    "MAX_HRES_ITEMS", "MAX_ERROR_INFO",
]

#: RSPLIB's hard cap on the PEs of one handle resolution response.
MAX_HRES_ITEMS = 128
#: At most this many bytes of an unrecognised message are echoed back in the
#: ASAP Error's cause info (bounds what a peer can make us send).
MAX_ERROR_INFO = 1024

_HANDLE_RESOLUTION = AsapType.HANDLE_RESOLUTION
_WILDCARDS = frozenset(("0.0.0.0", "::"))


# ---------------------------------------------------------------------------
# events (past tense, frozen)

@dataclass(frozen=True)
class PoolElementRegistered:
    """A new PE was registered over ``association``."""

    pool_handle: bytes
    identifier: int
    association: Hashable
    user_transport: Any
    policy: Any
    registration_life: int


@dataclass(frozen=True)
class PoolElementUpdated:
    """A registered PE re-registered (its transports, policy or life may
    have changed; ``association`` is the one it came over)."""

    pool_handle: bytes
    identifier: int
    association: Hashable
    user_transport: Any
    policy: Any
    registration_life: int


@dataclass(frozen=True)
class PoolElementDeregistered:
    """A PE deregistered itself.  ``entry``: the removed handlespace entry
    (its ``home_registrar`` says whether a Handle Update DEL is due)."""

    pool_handle: bytes
    identifier: int
    association: Hashable
    entry: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PoolElementExpired:
    """A PE's registration life ran out without a re-registration
    (``association`` is None for an entry this registrar does not own)."""

    pool_handle: bytes
    identifier: int
    association: Hashable | None
    entry: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PoolElementRemoved:
    """A PE was removed without deregistering.  ``reason``: ``"keep-alive
    timeout"``, ``"association lost"``, ``"unreachable"`` (enough distinct
    Endpoint Unreachable reports), ``"association aborted"``."""

    pool_handle: bytes
    identifier: int
    association: Hashable | None
    reason: str
    entry: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PoolElementAdopted:
    """A PE taken over from a dead peer acknowledged our keep-alive with the
    H bit over ``association``: we are its home now (6.14 step 5)."""

    pool_handle: bytes
    identifier: int
    association: Hashable


@dataclass(frozen=True)
class RegistrationRefused:
    """A registration was answered with the R flag and ``cause``."""

    pool_handle: bytes
    identifier: int
    association: Hashable
    cause: int
    detail: str


@dataclass(frozen=True)
class DeregistrationRefused:
    """A deregistration was refused (cause 0x000A: not the owning association)."""

    pool_handle: bytes
    identifier: int
    association: Hashable
    cause: int


@dataclass(frozen=True)
class UnreachableReported:
    """A new (first from this association) Endpoint Unreachable report was
    counted; ``reports`` is the PE's count of distinct reporters now."""

    pool_handle: bytes
    identifier: int
    association: Hashable
    reports: int


@dataclass(frozen=True)
class PeerMisbehaved:
    """A peer sent something wrong.  ``kind`` is a short stable word
    (``"malformed"``, ``"unknown-message"``, ``"unexpected-message"``,
    ``"unknown-parameter"``, ``"asap-error"``, ``"internal-error"``) usable as
    a rate-limiting key; ``detail`` says what."""

    association: Hashable
    kind: str
    detail: str
    aborted: bool


# ---------------------------------------------------------------------------
# associations

class AssociationInfo:
    """What the core knows of one association."""

    __slots__ = ("association", "transport", "peer_addresses", "peer_port", "since",
                 "_peer_set")

    def __init__(self, association: Hashable, transport: str,
                 peer_addresses: Sequence[str], peer_port: int, since: float) -> None:
        self.association = association
        self.transport = transport
        self.peer_addresses = tuple(dict.fromkeys(_normalize(a) for a in peer_addresses))
        self.peer_port = peer_port
        self.since = since
        self._peer_set = frozenset(self.peer_addresses)

    def __repr__(self) -> str:
        return (f"AssociationInfo({self.transport} "
                f"{','.join(self.peer_addresses)}:{self.peer_port})")


@functools.lru_cache(maxsize=4096)
def _normalize(address: str) -> str:
    """Canonical text of an address: no scope ID, IPv4-mapped IPv6 as IPv4.
    Text that is not an address is returned unchanged (it then matches no
    peer address)."""
    text = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _filter_addresses(advertised: Iterable[str], info: AssociationInfo) -> list[str]:
    """The user-address filter of 6.3 step 2: keep advertised addresses that
    are peer addresses of the association; a wildcard stands for all of
    them; the order of first appearance is kept."""
    out: dict[str, None] = {}
    for address in advertised:
        norm = _normalize(address)
        if norm in _WILDCARDS:
            for peer in info.peer_addresses:
                out[peer] = None
        elif norm in info._peer_set:
            out[norm] = None
    return list(out)


# ---------------------------------------------------------------------------
# the core

class AsapRegistrar:
    """The ASAP side of a registrar, without I/O (see the module docstring).

    :param config: the registrar's settings (timers, limits, ID).
    :param registrar_id: overrides ``config.registrar_id``; when both are 0
        a random non-zero ID is chosen.
    :param seed: seed of the handlespace's random selection (reproducible
        random policies in tests).
    :param handlespace: an existing handlespace to serve (else a new one).
    """

    def __init__(self, config: RegistrarConfig | None = None, *,
                 registrar_id: int | None = None, seed: int | None = None,
                 handlespace: Any = None) -> None:
        self.config = config = config if config is not None else RegistrarConfig()
        rid = config.registrar_id if registrar_id is None else registrar_id
        if not rid:
            rid = random.SystemRandom().randrange(1, MAX32)
        self.registrar_id: int = rid
        if seed is None:
            seed = random.SystemRandom().getrandbits(63)
        if handlespace is None:
            handlespace = Handlespace(own_id=rid, seed=seed,
                                      max_increment=config.max_increment,
                                      max_bad_pe_reports=config.max_bad_pe_reports,
                                      max_handle_length=config.max_handle_length)
        self.handlespace = handlespace
        self._interval = float(config.keep_alive_interval)
        self._timeout = float(config.keep_alive_timeout)
        self._default_items = config.max_hres_items
        self._assocs: dict[Hashable, AssociationInfo] = {}
        self._reporters: dict[int, set[frozenset[str]]] = {}
        self._sends: list[tuple[Hashable, bytes]] = []
        self._aborts: list[tuple[Hashable, str]] = []
        self._events: list[Any] = []
        self._adopting: set[tuple[bytes, int]] = set()
        self._announce: bytes = encode_message(ServerAnnounce(rid, ()))
        #: Counters for statistics and tests.
        self.counters: dict[str, int] = dict.fromkeys((
            "resolutions", "registrations", "deregistrations", "keep_alives_sent",
            "keep_alive_acks", "unreachable_reports", "unreachable_ignored",
            "errors_sent", "aborts", "internal_errors", "adopted"), 0)
        self._handlers: dict[type, Callable[[AssociationInfo, Any, float], bytes | None]] = {
            Registration: self._on_registration,
            Deregistration: self._on_deregistration,
            EndpointKeepAliveAck: self._on_keep_alive_ack,
            EndpointUnreachable: self._on_unreachable,
        }

    # ---- associations ------------------------------------------------------

    def association_up(self, association: Hashable, *, transport: str,
                       peer_addresses: Sequence[str], peer_port: int, now: float) -> None:
        """A TCP connection or SCTP association came up (or its addresses
        changed).  ``peer_addresses``: every address of the peer (SCTP
        multi-homing) or the one TCP peer address."""
        if transport not in ("tcp", "sctp"):
            raise ValueError(f"transport must be 'tcp' or 'sctp', not {transport!r}")
        self._assocs[association] = AssociationInfo(association, transport, peer_addresses,
                                                    peer_port, now)

    def association_down(self, association: Hashable, now: float) -> None:
        """The association is gone (lost, shut down or closed by us): every PE
        registered over it is removed.  Unknown associations are ignored."""
        if self._assocs.pop(association, None) is None:
            return
        self._drop_association_pes(association, "association lost")

    def association(self, association: Hashable) -> AssociationInfo | None:
        """What is known of an association (None: not up)."""
        return self._assocs.get(association)

    @property
    def associations(self) -> int:
        """Number of associations up."""
        return len(self._assocs)

    def pool_elements_of(self, association: Hashable) -> list[tuple[bytes, int]]:
        """(pool handle, PE identifier) of every PE registered over it."""
        return self.handlespace.by_association(association)

    # ---- input -------------------------------------------------------------

    def receive(self, association: Hashable, data: bytes, now: float) -> bytes | None:
        """Handle one whole ASAP message from ``association``; return the
        direct reply, if any.  Never raises for anything in ``data``."""
        if data and data[0] == _HANDLE_RESOLUTION:
            # The hot path: bytes in, bytes out, no per-PE objects.
            try:
                handle, items = parse_handle_resolution(data)
            except WireError as exc:
                return self._wire_error(association, data, exc)
            if not items:
                count = self._default_items
            elif items > MAX_HRES_ITEMS:
                count = MAX_HRES_ITEMS
            else:
                count = items
            self.counters["resolutions"] += 1
            try:
                response = self.handlespace.resolve(handle, count)
            except EncodeError:
                response = self._resolve_smaller(handle, count)
            if response is not None:
                return response
            return self._resolution_failed(handle)
        info = self._assocs.get(association)
        if info is None:
            return None  # aborted by us or never announced: ignore
        try:
            msg = decode_message(data, "asap")
        except WireError as exc:
            return self._wire_error(association, data, exc)
        handler = self._handlers.get(type(msg))
        if handler is None:
            return self._unexpected(association, data, msg)
        try:
            return handler(info, msg, now)
        except Exception as exc:  # a bug of ours: never let a peer crash the registrar
            self.counters["internal_errors"] += 1
            asap_log.exception("internal error handling %s from %r", type(msg).__name__, info)
            self._abort(association, f"internal error: {type(exc).__name__}: {exc}",
                        "internal-error")
            return None

    # ---- timers ------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: nothing pending)."""
        return self.handlespace.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``: send keep-alives, remove PEs that
        missed one, expire registrations."""
        hs = self.handlespace
        for handle, ident, kind in hs.expire(now):
            if kind == TIMER_KEEP_ALIVE_TRANSMISSION:
                self._keep_alive_due(handle, ident, now)
            elif kind == TIMER_KEEP_ALIVE_TIMEOUT:
                entry = hs.deregister(handle, ident)
                if entry is None:
                    continue
                self._reporters.pop(ident, None)
                assoc = entry.association
                self._adopting.discard((handle, ident))
                self._events.append(PoolElementRemoved(handle, ident, assoc,
                                                       "keep-alive timeout", entry))
                if assoc is not None and assoc in self._assocs and not hs.by_association(assoc):
                    self._abort(assoc, f"PE 0x{ident:08x} did not answer a keep-alive", None)
            elif kind == TIMER_EXPIRY:  # already removed by expire()
                self._reporters.pop(ident, None)
                self._adopting.discard((handle, ident))
                self._events.append(PoolElementExpired(handle, ident, None))

    def _keep_alive_due(self, handle: bytes, ident: int, now: float) -> None:
        hs = self.handlespace
        entry = hs.get(handle, ident)
        if entry is None:
            return
        assoc = entry.association
        if now >= entry.last_update + entry.registration_life / 1000.0:
            hs.deregister(handle, ident)
            self._reporters.pop(ident, None)
            self._events.append(PoolElementExpired(handle, ident, assoc, entry))
            return
        if assoc is None or assoc not in self._assocs:
            hs.deregister(handle, ident)
            self._reporters.pop(ident, None)
            self._events.append(PoolElementRemoved(handle, ident, assoc, "association lost",
                                                   entry))
            return
        self._sends.append((assoc, encode_message(
            EndpointKeepAlive(self.registrar_id, handle, ident, False))))
        self.counters["keep_alives_sent"] += 1
        hs.set_timer(handle, ident, TIMER_KEEP_ALIVE_TIMEOUT, now + self._timeout)

    # ---- takeover (adoption of a dead peer's PEs) -----------------------------

    def prepare_adoption(self, pool_handle: bytes, identifier: int, now: float,
                         grace: float) -> bool:
        """A PE the ENRP core just took over (it is homed here now): until
        :meth:`adopt` binds it to an association, it is removed (keep-alive
        timeout, Handle Update DEL due) if ``grace`` + keep-alive timeout
        seconds pass.  False: the PE is gone or not ours."""
        hs = self.handlespace
        entry = hs.get(pool_handle, identifier)
        if entry is None or entry.home_registrar != self.registrar_id:
            return False
        self._adopting.add((pool_handle, identifier))
        hs.set_timer(pool_handle, identifier, TIMER_KEEP_ALIVE_TIMEOUT,
                     now + grace + self._timeout)
        return True

    def adopt(self, association: Hashable, pool_elements: Iterable[tuple[bytes, int]],
              now: float) -> int:
        """Send each PE an Endpoint Keep-Alive with the H bit over
        ``association`` (a new one to the PE's ASAP transport, already
        announced with :meth:`association_up`) and bind the PE to it.  The
        PE's ACK makes us its home (:class:`PoolElementAdopted`); no ACK within
        the keep-alive timeout removes it.  Returns how many were sent."""
        if association not in self._assocs:
            raise ValueError("adopt() needs an association announced with association_up")
        hs = self.handlespace
        sent = 0
        for handle, ident in pool_elements:
            entry = hs.get(handle, ident)
            if (entry is None or entry.home_registrar != self.registrar_id
                    or (handle, ident) not in self._adopting):
                continue
            try:
                hs.register(handle, entry.pool_element, now, home_registrar=self.registrar_id,
                            association=association, timer=TIMER_KEEP_ALIVE_TIMEOUT,
                            deadline=now + self._timeout)
            except (HandlespaceError, EncodeError, ValueError, TypeError):  # pragma: no cover
                continue
            self._sends.append((association, encode_message(
                EndpointKeepAlive(self.registrar_id, handle, ident, True))))
            self.counters["keep_alives_sent"] += 1
            sent += 1
        return sent

    def adopting(self) -> int:
        """PEs taken over that have not acknowledged their new home yet."""
        return len(self._adopting)

    # ---- output ------------------------------------------------------------

    def pop_sends(self) -> list[tuple[Hashable, bytes]]:
        """Messages to send other than direct replies: ``(association, bytes)``."""
        out, self._sends = self._sends, []
        return out

    def pop_aborts(self) -> list[tuple[Hashable, str]]:
        """Associations to abort, with the reason; their PEs are already gone."""
        out, self._aborts = self._aborts, []
        return out

    def pop_events(self) -> list[Any]:
        """Events since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    # ---- server announce ---------------------------------------------------

    def set_local_endpoints(self, endpoints: Iterable[tuple[str, Sequence[str], int]]) -> None:
        """Tell the core where its ASAP endpoints listen: ``(transport,
        addresses, port)``; the Server Announce then carries them (SCTP
        first, then one TCP transport parameter per TCP address).  A wildcard
        address is kept: receivers read it as "the announce's source
        address"."""
        transports: list[Any] = []
        tcp: list[Any] = []
        for transport, addresses, port in endpoints:
            addrs = [_normalize(a) for a in addresses]
            if not addrs or not 0 < port < 65536:
                continue
            if transport == "sctp":
                transports.append(SctpTransport(port, addrs, TransportUse.DATA_ONLY))
            elif transport == "tcp":
                tcp.extend(TcpTransport(port, [a], TransportUse.DATA_ONLY) for a in addrs)
            else:
                raise ValueError(f"unknown transport {transport!r}")
        self._announce = encode_message(ServerAnnounce(self.registrar_id,
                                                       transports + tcp))

    def server_announce(self) -> bytes:
        """The ASAP Server Announce payload (server ID and the transport
        parameters given to :meth:`set_local_endpoints`)."""
        return self._announce

    # ---- statistics --------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Counters plus the handlespace's sizes and the association count."""
        stats = dict(self.counters)
        stats["associations"] = len(self._assocs)
        stats["pools"] = self.handlespace.pool_count
        stats["pool_elements"] = len(self.handlespace)
        return stats

    # ---- procedures --------------------------------------------------------

    def _on_registration(self, info: AssociationInfo, msg: Any, now: float) -> bytes:
        handle: bytes = msg.pool_handle
        pe = msg.pool_element
        ident: int = pe.identifier
        assoc = info.association
        self.counters["registrations"] += 1
        if ident == 0:
            return self._refuse_registration(info, handle, ident,
                                             ErrorCause.RSPLIB_INVALID_PE_IDENTIFIER,
                                             "PE identifier 0")
        user = pe.user_transport
        kept = _filter_addresses(user.addresses, info)
        if not kept:
            return self._refuse_registration(info, handle, ident,
                                             ErrorCause.RSPLIB_NO_USABLE_USER_ADDRESSES,
                                             "no user address is a peer address of the "
                                             "association")
        if type(user) is not SctpTransport:
            kept = kept[:1]  # TCP, UDP, UDP-Lite, DCCP carry exactly one address
        user = user.replace(addresses=tuple(kept))
        asap = self._asap_transport(info, pe.asap_transport)
        hs = self.handlespace
        old = hs.get(handle, ident)
        if old is not None and old.association is not None and old.association != assoc:
            old_info = self._assocs.get(old.association)
            if old_info is not None and not (old_info._peer_set & info._peer_set):
                return self._refuse_registration(
                    info, handle, ident,
                    ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS,
                    "PE identifier registered over another live association from other "
                    "addresses")
        element = PoolElement(ident, self.registrar_id, pe.registration_life, user,
                              pe.policy, asap)
        try:
            new = hs.register(handle, element, now, home_registrar=self.registrar_id,
                              association=assoc, timer=TIMER_KEEP_ALIVE_TRANSMISSION,
                              deadline=now + self._interval)
        except HandlespaceError as exc:
            return self._refuse_registration(info, handle, ident, exc.CAUSE, str(exc))
        except (EncodeError, ValueError, TypeError) as exc:
            return self._refuse_registration(info, handle, ident, ErrorCause.INVALID_VALUES,
                                             str(exc))
        self._reporters.pop(ident, None)
        event = PoolElementRegistered if new else PoolElementUpdated
        self._events.append(event(handle, ident, assoc, user, pe.policy,
                                  pe.registration_life))
        if self._adopting and (handle, ident) in self._adopting:
            # a PE we took over registered with us itself: it is ours
            self._adopting.discard((handle, ident))
            self.counters["adopted"] += 1
            self._events.append(PoolElementAdopted(handle, ident, assoc))
        return encode_message(RegistrationResponse(handle, ident))

    def _asap_transport(self, info: AssociationInfo, given: Any) -> Any:
        """The PE's ASAP endpoint: an SctpTransport with the association's peer
        addresses and port (RFC 5354, RSPLIB).  Over TCP, a TcpTransport: the
        port (and filtered addresses) of the ASAP transport parameter in the
        registration when present (the PE's ASAP listener, which another
        registrar can reach), else the connection's own address and port."""
        port = info.peer_port
        addresses: list[str] = list(info.peer_addresses)
        if info.transport != "tcp":
            return SctpTransport(port, addresses, TransportUse.DATA_ONLY)
        if type(given) in (TcpTransport, SctpTransport) and 0 < given.port < 65536:
            port = given.port
            addresses = _filter_addresses(given.addresses, info) or addresses
        return TcpTransport(port, addresses[:1], TransportUse.DATA_ONLY)

    def _refuse_registration(self, info: AssociationInfo, handle: bytes, ident: int,
                             cause: int, detail: str) -> bytes:
        self._events.append(RegistrationRefused(handle, ident, info.association, int(cause),
                                                detail))
        return encode_message(RegistrationResponse(handle, ident, (Cause(cause),), True))

    def _on_deregistration(self, info: AssociationInfo, msg: Any, now: float) -> bytes:
        handle, ident = msg.pool_handle, msg.identifier
        self.counters["deregistrations"] += 1
        hs = self.handlespace
        entry = hs.get(handle, ident)
        if entry is None:
            return encode_message(DeregistrationResponse(handle, ident))
        if entry.association != info.association:
            cause = ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS
            self._events.append(DeregistrationRefused(handle, ident, info.association,
                                                      int(cause)))
            return encode_message(DeregistrationResponse(handle, ident, (Cause(cause),)))
        removed = hs.deregister(handle, ident)
        self._reporters.pop(ident, None)
        self._adopting.discard((handle, ident))
        self._events.append(PoolElementDeregistered(handle, ident, info.association, removed))
        return encode_message(DeregistrationResponse(handle, ident))

    def _on_keep_alive_ack(self, info: AssociationInfo, msg: Any, now: float) -> None:
        handle, ident = msg.pool_handle, msg.identifier
        hs = self.handlespace
        entry = hs.get(handle, ident)
        if (entry is not None and entry.association == info.association
                and entry.timer == TIMER_KEEP_ALIVE_TIMEOUT):
            self.counters["keep_alive_acks"] += 1
            hs.set_timer(handle, ident, TIMER_KEEP_ALIVE_TRANSMISSION, now + self._interval)
            if self._adopting and (handle, ident) in self._adopting:
                self._adopting.discard((handle, ident))
                self.counters["adopted"] += 1
                self._events.append(PoolElementAdopted(handle, ident, info.association))
        return None

    def _on_unreachable(self, info: AssociationInfo, msg: Any, now: float) -> None:
        handle, ident = msg.pool_handle, msg.identifier
        assoc = info.association
        # a reporter is its set of peer addresses, not its association: a PU
        # that reconnects is still the same reporter (and no closed channel
        # is kept alive by this table)
        who = info._peer_set
        reporters = self._reporters.get(ident)
        if reporters is not None and who in reporters:
            self.counters["unreachable_ignored"] += 1
            return None
        hs = self.handlespace
        if (handle, ident) not in hs:
            self.counters["unreachable_ignored"] += 1
            return None
        self.counters["unreachable_reports"] += 1
        if reporters is None:
            reporters = self._reporters[ident] = set()
        reporters.add(who)
        removed = hs.report_unreachable(handle, ident)
        self._events.append(UnreachableReported(handle, ident, assoc, len(reporters)))
        if removed is not None:
            self._reporters.pop(ident, None)
            self._adopting.discard((handle, ident))
            self._events.append(PoolElementRemoved(handle, ident, removed.association,
                                                   "unreachable", removed))
        return None

    # ---- handle resolution helpers ---------------------------------------------

    def _resolve_smaller(self, handle: bytes, count: int) -> bytes | None:
        """The response for ``count`` PEs did not fit in 65,535 bytes: ask
        for fewer until it does."""
        while count > 1:
            count //= 2
            try:
                return self.handlespace.resolve(handle, count)
            except EncodeError:
                continue
        return None

    def _resolution_failed(self, handle: bytes) -> bytes:
        hs = self.handlespace
        if hs.pool_size(handle) > 0:
            elements = hs.pool_elements(handle)
            try:
                return encode_message(HandleResolutionResponse(handle, elements[0].policy, ()))
            except EncodeError:
                pass
        try:
            return encode_message(HandleResolutionResponse(
                handle, None, (), (Cause(ErrorCause.UNKNOWN_POOL_HANDLE),)))
        except EncodeError:  # pragma: no cover - a handle too long to echo
            return encode_message(HandleResolutionResponse(
                b"", None, (), (Cause(ErrorCause.UNKNOWN_POOL_HANDLE),)))

    # ---- bad input ---------------------------------------------------------

    def _wire_error(self, association: Hashable, data: bytes, exc: WireError) -> bytes | None:
        if isinstance(exc, UnknownMessageError):
            return self._error_reply(association, ErrorCause.UNRECOGNIZED_MESSAGE,
                                     bytes(data[:MAX_ERROR_INFO]), "unknown-message", str(exc))
        if isinstance(exc, UnknownParameterError):
            if exc.report:
                return self._error_reply(association, ErrorCause.UNRECOGNIZED_PARAMETER,
                                         bytes(exc.tlv[:MAX_ERROR_INFO]),
                                         "unknown-parameter", str(exc))
            self._events.append(PeerMisbehaved(association, "unknown-parameter",
                                               f"message dropped: {exc}", False))
            return None
        self._abort(association, f"malformed message: {type(exc).__name__}: {exc}",
                    "malformed")
        return None

    def _unexpected(self, association: Hashable, data: bytes, msg: Any) -> bytes | None:
        name = type(msg).__name__
        if type(msg) is AsapErrorMessage:
            causes = ", ".join(f"0x{int(c.code):04x}" for c in msg.causes)
            self._events.append(PeerMisbehaved(association, "asap-error",
                                               f"peer sent ASAP Error ({causes})", False))
            return None
        return self._error_reply(association, ErrorCause.UNRECOGNIZED_MESSAGE,
                                 bytes(data[:MAX_ERROR_INFO]), "unexpected-message",
                                 f"a registrar does not take {name} messages")

    def _error_reply(self, association: Hashable, cause: int, info: bytes, kind: str,
                     detail: str) -> bytes:
        self.counters["errors_sent"] += 1
        self._events.append(PeerMisbehaved(association, kind, detail, False))
        return encode_message(AsapErrorMessage((Cause(cause, info),)))

    def _abort(self, association: Hashable, reason: str, kind: str | None) -> None:
        """Abort an association now: forget it, remove its PEs, queue the
        abort for the driver."""
        if kind is not None:
            self._events.append(PeerMisbehaved(association, kind, reason, True))
        if self._assocs.pop(association, None) is None and kind is None:
            return
        self.counters["aborts"] += 1
        self._aborts.append((association, reason))
        self._drop_association_pes(association, "association aborted")

    def _drop_association_pes(self, association: Hashable, reason: str) -> None:
        for entry in self.handlespace.remove_association(association):
            self._reporters.pop(entry.identifier, None)
            self._adopting.discard((entry.pool_handle, entry.identifier))
            self._events.append(PoolElementRemoved(entry.pool_handle, entry.identifier,
                                                   association, reason, entry))
