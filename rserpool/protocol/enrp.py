"""The registrar's ENRP procedures (RFC 5353; ``shared/spec/RSERPOOL.md``
sections 3 and 6.10-6.15) as a sans-I/O core.

No I/O and no clock: this module never imports ``asyncio``, ``socket`` or
``time``.  The driver names each ENRP association to a peer registrar (a TCP
connection or an SCTP association) by any hashable *peer key* except the
reserved ``("multicast",)``, and feeds the core:

* :meth:`EnrpServer.peer_connected` / :meth:`EnrpServer.peer_disconnected`;
* :meth:`EnrpServer.receive` -- one whole ENRP message from an association;
* :meth:`EnrpServer.presence_datagram` -- one UDP multicast datagram;
* :meth:`EnrpServer.local_registered` / :meth:`EnrpServer.local_deregistered`
  -- the home registrar's own ASAP changes (sent as Handle Updates);
* :meth:`EnrpServer.handle_timer` -- when :meth:`EnrpServer.next_deadline`
  has come.

and carries out what comes back: :meth:`EnrpServer.pop_sends` (``(peer key or
("multicast",), bytes)``), :meth:`EnrpServer.pop_events` (frozen dataclasses,
past tense), :meth:`EnrpServer.pop_keepalives_to_send` (PEs just taken over:
the ASAP side sends each an Endpoint Keep-Alive with the H bit).

Rules this module follows (*ours* = beyond or unlike RSPLIB; see also
``docs/design-enrp.md``):

* **Peers** (6.10) are known by registrar ID once they have sent a Presence.
  A key whose first Presence named ID X is bound to X; a later message on it
  that names another sender is dropped (*ours*).  A Presence naming our own ID
  is ignored (event :class:`PeerMisbehaved`, kind ``"own-id"``).  Liveness
  and takeover follow :data:`PEER_TRANSITIONS`.
* **Start-up** (6.11): no periodic Presence for ``mentor_discovery_timeout``;
  *ours*: a Presence with R=1 goes to every association as soon as it comes up
  (also during start-up), so that a registrar that knows its peers only from
  static configuration finds a mentor.  The first peer heard becomes the
  mentor: List Request + Handle Table Request (own-children flag 0), pages are
  requested while M=1.  Start-up ends at the final page or at the timeout,
  whichever is first (a download still running then continues).
* **Handle updates** (6.12) and **handle table entries** are applied by
  :meth:`EnrpServer._accept_entry`:  home 0 or home = us -> ignored; a Handle
  Update whose declared home is not its sender -> refused (*ours*, RFC 5355
  threat "malicious PR"); an entry whose current home is *another live peer*
  (state ALIVE, i.e. heard within max-time-last-heard, and not being taken
  over by the sender) keeps that home: the update is refused (*ours*).  A
  DEL is accepted from the entry's home, or when that home is not a live peer
  (a takeover whose Takeover Server we never got, digest 12 #3).
* **Audit** (6.13): only Presences received over an association are audited,
  and only when no sync with that peer is running and no mentor download is.
* **Takeover** (6.14): lower ID wins the tie; peers that must acknowledge are
  the peers with a known ID in state ALIVE or PROBING other than the target; a
  peer removed meanwhile no longer blocks.  *Ours*: an Init Takeover for a peer
  we heard within max-time-last-heard (state ALIVE) is not acknowledged, and a
  Takeover Server for such a peer (or for us) is refused.  The
  winner re-homes the PEs, sends Takeover Server *and* a Handle Update ADD for
  every PE taken over (*ours*: peers that miss Takeover Server converge too),
  and lists the PEs in :meth:`EnrpServer.pop_keepalives_to_send`.
* **Bad input**: an unknown message type -> ENRP Error cause 0x0002; an
  unknown parameter whose action bits say report -> cause 0x0001; anything
  else that does not decode is dropped.  An ENRP Error is never answered.
  Nothing a peer sends raises out of this core or leaves the handlespace
  half-changed; each case is an event.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum
from typing import Any, Hashable, Iterable

from ..config import RegistrarConfig
from ..constants import ErrorCause, UpdateAction
from ..errors import (
    EncodeError,
    HandlespaceError,
    UnknownMessageError,
    UnknownParameterError,
    WireError,
)
from ..handlespace import TIMER_EXPIRY
from ..log import enrp_log
from ..wire import (
    Cause,
    EnrpErrorMessage,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    PoolElement,
    Presence,
    SctpTransport,
    ServerInformation,
    TakeoverServer,
    decode_message,
    encode_message,
    encode_parameter,
)

__all__ = [
    "EnrpServer", "PeerState", "PeerInput", "PEER_TRANSITIONS", "MULTICAST",
    "MAX_HT_RESPONSE_BYTES", "MAX_PEERS", "KeepAliveRequest",
    "PeerAppeared", "PeerConnectRequested", "PeerUnresponsive", "PeerLost",
    "PeerAssociationsStale",
    "MentorChosen", "HandleTableDownloaded", "StartupFinished", "AuditMismatch",
    "AuditCompleted", "SyncAbandoned", "UpdateRefused", "TakeoverStarted",
    "TakeoverConceded", "TakeoverCancelled", "TakeoverAbandoned", "TakeoverWon",
    "TakeoverCompleted", "TakeoverRefused", "PeerMisbehaved",
]

#: The pseudo peer key of sends that go to the Presence multicast group.
MULTICAST: tuple[str] = ("multicast",)
#: Size cap of one Handle Table Response (digest 6.11 step 5, 12 #12).
MAX_HT_RESPONSE_BYTES = 1400
#: At most this many bytes of an unrecognised message are echoed in an ENRP Error.
MAX_ERROR_INFO = 1024
#: A multicast Presence from an unknown ID is ignored while this many peers
#: are known (forged datagrams with random IDs would grow the peer table and
#: the connect requests without bound; peers over associations are bounded
#: by the driver's association limits).
MAX_PEERS = 256

_ENRP_HEADER = 12
#: Offset of the receiving server ID in the ENRP common header.
_RECEIVER_ID = 8
#: A multicast Presence proves an association stuck when nothing came over it
#: since the previous multicast Presence, minus this (seconds; the two copies
#: of one heartbeat race).
STALE_MARGIN = 0.05
_WILDCARDS = ("0.0.0.0", "::")
#: Handle table entries taken from the handlespace at a time while filling a
#: response: 1,400 bytes hold about 24 typical PEs, so taking
#: ``max_elements_per_ht_request`` (up to 1,024) at once would be mostly waste.
_HT_CHUNK = 32


# ---------------------------------------------------------------------------
# events (past tense, frozen)

@dataclass(frozen=True)
class PeerAppeared:
    """A registrar we did not know sent a Presence (``via``: ``"association"``
    or ``"multicast"``)."""

    peer_id: int
    via: str


@dataclass(frozen=True)
class PeerConnectRequested:
    """We know a peer (from multicast or a List Response) but have no
    association to it: the driver should open one to ``addresses``:``port``
    and call ``peer_connected(key, now, server_id=peer_id)``."""

    peer_id: int
    addresses: tuple[str, ...]
    port: int


@dataclass(frozen=True)
class PeerUnresponsive:
    """Max-time-last-heard ran out: a Presence with R=1 was sent."""

    peer_id: int


@dataclass(frozen=True)
class PeerAssociationsStale:
    """The peer's associations carried nothing for a heartbeat while its
    Presences arrived by multicast: they were dropped (``pop_closes``) and
    a new one is requested."""

    peer_id: int
    count: int


@dataclass(frozen=True)
class PeerLost:
    """A peer was removed from the peer table.  ``reason``: ``"no response"``,
    ``"taken over"`` (by us or, ``taker``, by another), ``"takeover abandoned"``."""

    peer_id: int
    reason: str
    taker: int | None = None


@dataclass(frozen=True)
class MentorChosen:
    peer_id: int


@dataclass(frozen=True)
class HandleTableDownloaded:
    """A (full or own-children) handle table download from ``peer_id``
    finished; ``count`` entries were applied over ``pages`` responses."""

    peer_id: int
    count: int
    pages: int
    own_children_only: bool


@dataclass(frozen=True)
class StartupFinished:
    """The start-up phase is over (``mentor`` None: serving alone or the
    mentor's download is still running; see ``EnrpServer.mentor_done``)."""

    mentor: int | None


@dataclass(frozen=True)
class AuditMismatch:
    """A Presence's ownership checksum differs from ours: resync started."""

    peer_id: int
    reported: int
    computed: int


@dataclass(frozen=True)
class AuditCompleted:
    """The resync with ``peer_id`` ended: ``received`` entries applied,
    ``swept`` PEs that the peer no longer owns were removed."""

    peer_id: int
    received: int
    swept: int


@dataclass(frozen=True)
class SyncAbandoned:
    """A handle table download stopped (peer lost, rejected, silent)."""

    peer_id: int
    reason: str


@dataclass(frozen=True)
class UpdateRefused:
    """A Handle Update or handle table entry was not applied."""

    peer_id: int
    pool_handle: bytes
    identifier: int
    reason: str


@dataclass(frozen=True)
class TakeoverStarted:
    target: int
    awaiting: tuple[int, ...]


@dataclass(frozen=True)
class TakeoverConceded:
    """``taker`` is taking over ``target``; we acknowledged (and dropped our
    own takeover of it, if any)."""

    target: int
    taker: int


@dataclass(frozen=True)
class TakeoverCancelled:
    """The target was heard again (our takeover, or the one we conceded)."""

    target: int


@dataclass(frozen=True)
class TakeoverAbandoned:
    """Takeover expiry came with acknowledgements missing."""

    target: int
    missing: tuple[int, ...]


@dataclass(frozen=True)
class TakeoverWon:
    """Every required peer acknowledged: ``count`` PEs are ours now."""

    target: int
    count: int


@dataclass(frozen=True)
class TakeoverCompleted:
    """The PEs of ``old_home`` now have ``new_home`` (us or a peer)."""

    old_home: int
    new_home: int
    count: int


@dataclass(frozen=True)
class TakeoverRefused:
    """A Takeover Server for a target we consider alive (or for us)."""

    taker: int
    target: int


@dataclass(frozen=True)
class PeerMisbehaved:
    """A peer sent something wrong.  ``kind``: ``"malformed"``,
    ``"unknown-message"``, ``"unknown-parameter"``, ``"unexpected-message"``,
    ``"own-id"``, ``"sender-mismatch"``, ``"unbound"``, ``"enrp-error"``,
    ``"unsolicited"``, ``"internal-error"``."""

    peer_key: Hashable
    peer_id: int
    kind: str
    detail: str


@dataclass(frozen=True)
class KeepAliveRequest:
    """A PE we just took over: send it an Endpoint Keep-Alive with H=1 over a
    new association to ``asap_transport`` (digest 6.14 step 5)."""

    pool_handle: bytes
    identifier: int
    asap_transport: Any


# ---------------------------------------------------------------------------
# the peer state machine

class PeerState(Enum):
    ALIVE = "alive"              # heard within max-time-last-heard
    PROBING = "probing"          # Presence R=1 sent, max-time-no-response running
    TAKING_OVER = "taking-over"  # we sent Init Takeover, collecting acks
    CONCEDED = "conceded"        # another peer takes it over; we acked
    REMOVED = "removed"          # gone from the peer table (terminal)


class PeerInput(Enum):
    HEARD = "heard"                          # a Presence from the peer
    TIMER = "timer"                          # its deadline
    TIMER_OWNS_PES = "timer-owns-pes"        # TIMER in PROBING, it owns PEs, no taker known
    INIT_TAKEOVER = "init-takeover"          # from another peer X, for this peer
    INIT_TAKEOVER_LOWER = "init-lower"       # ... while we take it over, X < us
    INIT_TAKEOVER_HIGHER = "init-higher"     # ... while we take it over, X > us
    ALL_ACKED = "all-acked"                  # our takeover has every ack
    TAKEOVER_SERVER = "takeover-server"      # another peer announces it took over
    LINK_LOST = "link-lost"                  # its last association went down


S, I = PeerState, PeerInput
#: (state, input) -> (action, next state).  Actions are ``EnrpServer._a_<name>``
#: methods.  A pair that is not listed is ignored (and counted); it can only
#: come from peer input (a Takeover Server for a live peer is listed, refused).
PEER_TRANSITIONS: dict[tuple[PeerState, PeerInput], tuple[str, PeerState]] = {
    (S.ALIVE, I.HEARD): ("refresh", S.ALIVE),
    (S.ALIVE, I.TIMER): ("probe", S.PROBING),
    (S.ALIVE, I.INIT_TAKEOVER): ("refuse_init", S.ALIVE),
    (S.ALIVE, I.TAKEOVER_SERVER): ("refuse_takeover", S.ALIVE),
    (S.ALIVE, I.LINK_LOST): ("probe_lost", S.PROBING),
    (S.PROBING, I.HEARD): ("refresh", S.ALIVE),
    (S.PROBING, I.TIMER): ("remove_dead", S.REMOVED),
    (S.PROBING, I.TIMER_OWNS_PES): ("start_takeover", S.TAKING_OVER),
    (S.PROBING, I.INIT_TAKEOVER): ("concede", S.CONCEDED),
    (S.PROBING, I.TAKEOVER_SERVER): ("apply_takeover", S.REMOVED),
    (S.TAKING_OVER, I.HEARD): ("cancel_takeover", S.ALIVE),
    (S.TAKING_OVER, I.INIT_TAKEOVER_LOWER): ("concede_ours", S.CONCEDED),
    (S.TAKING_OVER, I.INIT_TAKEOVER_HIGHER): ("ignore", S.TAKING_OVER),
    (S.TAKING_OVER, I.ALL_ACKED): ("win", S.REMOVED),
    (S.TAKING_OVER, I.TIMER): ("abandon", S.REMOVED),
    (S.TAKING_OVER, I.TAKEOVER_SERVER): ("apply_takeover", S.REMOVED),
    (S.CONCEDED, I.HEARD): ("cancel_conceded", S.ALIVE),
    (S.CONCEDED, I.INIT_TAKEOVER): ("concede", S.CONCEDED),
    (S.CONCEDED, I.TAKEOVER_SERVER): ("apply_takeover", S.REMOVED),
    (S.CONCEDED, I.TIMER): ("remove_conceded", S.REMOVED),
}
del S, I


class _Peer:
    """One peer registrar with a known ID."""

    __slots__ = ("peer_id", "keys", "key", "state", "deadline", "last_heard", "server_info",
                 "addresses", "list_fetched", "taker", "awaiting", "via_multicast",
                 "key_heard", "multicast_heard")

    def __init__(self, peer_id: int, now: float) -> None:
        self.peer_id = peer_id
        self.keys: list[Hashable] = []      # associations bound to this peer
        self.key: Hashable | None = None    # the one we send on (last heard)
        self.state = PeerState.ALIVE
        self.deadline: float = now
        self.last_heard: float = now
        self.server_info: Any = None
        self.addresses: tuple[str, ...] = ()  # where its last bound association came from
        self.list_fetched = False
        self.taker: int | None = None       # CONCEDED: who takes it over
        self.awaiting: set[int] = set()     # TAKING_OVER: acks still missing
        self.via_multicast = False
        self.key_heard: float = now          # last message over any of its associations
        self.multicast_heard: float | None = None  # last Presence by multicast


class _Sync:
    """A handle table download from one peer (mentor or audit)."""

    __slots__ = ("own_children_only", "marked", "count", "pages", "deadline", "mentor", "last")

    def __init__(self, own_children_only: bool, marked: set | None, deadline: float,
                 mentor: bool) -> None:
        self.own_children_only = own_children_only
        self.marked = marked
        self.count = 0
        self.pages = 0
        self.deadline = deadline
        self.mentor = mentor
        self.last: Any = None       # last (handle, id) of the previous page


# ---------------------------------------------------------------------------
# the core

class EnrpServer:
    """The ENRP side of a registrar, without I/O (see the module docstring).

    :param config: timers and limits (``peer_*``, ``mentor_discovery_timeout``,
        ``takeover_expiry_interval``, ``max_elements_per_ht_request``,
        ``presence_multicast``, ``addresses``, ``enrp_port``).
    :param registrar_id: our ID (non-zero).
    :param handlespace: the handlespace shared with the ASAP core.
    :param seed: seed of the heartbeat jitter.
    :param now: the start time (start-up phase begins; default 0.0).
    """

    def __init__(self, config: RegistrarConfig, registrar_id: int, handlespace: Any, *,
                 seed: int, now: float = 0.0) -> None:
        if not 0 < registrar_id <= 0xFFFFFFFF:
            raise ValueError("registrar_id must be in [1, 0xFFFFFFFF]")
        self.config = config
        self.registrar_id = registrar_id
        self.handlespace = handlespace
        self._rng = random.Random(seed)
        self._peers: dict[int, _Peer] = {}
        self._key_peer: dict[Hashable, int] = {}      # bound keys
        self._unbound: dict[Hashable, float] = {}     # keys up, ID not yet known
        self._syncs: dict[int, _Sync] = {}
        self._ht_cursors: dict[tuple[Hashable, bool], tuple[tuple[bytes, int], float]] = {}
        self._connect_requested: dict[int, float] = {}
        self._key_addrs: dict[Hashable, frozenset[str]] = {}  # remote addresses (driver)
        self._list_pending: set[int] = set()           # List Request sent, no response yet
        self._sends: list[tuple[Hashable, bytes]] = []
        self._events: list[Any] = []
        self._keepalives: list[KeepAliveRequest] = []
        self._closes: list[tuple[Hashable, str]] = []
        self.startup = True
        self.mentor: int | None = None
        self.mentor_done = False
        self._startup_deadline = now + config.mentor_discovery_timeout
        self._heartbeat_deadline = self._startup_deadline
        self._takeover_deadlines: dict[int, float] = {}
        self.set_local_endpoint(config.addresses, config.enrp_port)
        self.counters: dict[str, int] = dict.fromkeys((
            "presences_sent", "presences_received", "updates_sent", "updates_applied",
            "updates_refused", "ht_requests_served", "ht_requests_rejected",
            "ht_entries_applied", "errors_sent", "dropped", "unroutable", "ignored_inputs",
            "internal_errors", "takeovers_started", "takeovers_won", "takeovers_conceded",
            "takeovers_abandoned", "pes_taken_over", "audit_mismatches",
            "stale_associations"), 0)
        self._handlers = {
            Presence: self._on_presence,
            HandleTableRequest: self._on_ht_request,
            HandleTableResponse: self._on_ht_response,
            HandleUpdate: self._on_handle_update,
            ListRequest: self._on_list_request,
            ListResponse: self._on_list_response,
            InitTakeover: self._on_init_takeover,
            InitTakeoverAck: self._on_init_takeover_ack,
            TakeoverServer: self._on_takeover_server,
            EnrpErrorMessage: self._on_error,
        }

    # ---- configuration -----------------------------------------------------

    def set_local_endpoint(self, addresses: Iterable[str], port: int) -> None:
        """The ENRP endpoint our Presences name in their Server Information."""
        addrs = tuple(addresses) or ("0.0.0.0",)
        self._server_info = ServerInformation(self.registrar_id,
                                              SctpTransport(port or 1, addrs, 0))

    # ---- queries -----------------------------------------------------------

    def peers(self) -> dict[int, PeerState]:
        """Known peers and their states."""
        return {pid: p.state for pid, p in self._peers.items()}

    def peer_keys(self, peer_id: int) -> tuple[Hashable, ...]:
        peer = self._peers.get(peer_id)
        return tuple(peer.keys) if peer is not None else ()

    def taker_of(self, peer_id: int) -> int | None:
        peer = self._peers.get(peer_id)
        return peer.taker if peer is not None else None

    def syncing(self) -> tuple[int, ...]:
        """Peers a handle table download from which is running."""
        return tuple(self._syncs)

    # ---- outputs -----------------------------------------------------------

    def pop_sends(self) -> list[tuple[Hashable, bytes]]:
        out, self._sends = self._sends, []
        return out

    def pop_events(self) -> list[Any]:
        out, self._events = self._events, []
        return out

    def pop_closes(self) -> list[tuple[Hashable, str]]:
        """Associations to abort, with the reason (already forgotten here)."""
        out, self._closes = self._closes, []
        return out

    def pop_keepalives_to_send(self) -> list[KeepAliveRequest]:
        out, self._keepalives = self._keepalives, []
        return out

    def next_deadline(self) -> float | None:
        due = [self._heartbeat_deadline]
        if self.startup:
            due.append(self._startup_deadline)
        due.extend(p.deadline for p in self._peers.values())
        due.extend(s.deadline for s in self._syncs.values())
        return min(due)

    # ---- associations ------------------------------------------------------

    def peer_connected(self, peer_key: Hashable, now: float, *,
                       server_id: int | None = None, addresses: Iterable[str] = ()) -> None:
        """An ENRP association came up (inbound, static peer, or one opened
        after :class:`PeerConnectRequested`).  A Presence with R=1 goes out
        on it at once (also during start-up: *ours*).  ``addresses``: the
        remote addresses of the association, when known: a second
        association claiming the ID of a peer already connected from other
        addresses is not bound to it (``"impersonation"``)."""
        if peer_key == MULTICAST:
            raise ValueError("('multicast',) is reserved")
        addrs = frozenset(addresses)
        if addrs:
            self._key_addrs[peer_key] = addrs  # also when a message came first
        if peer_key in self._key_peer or peer_key in self._unbound:
            return
        self._unbound[peer_key] = now
        receiver = server_id if server_id and server_id != self.registrar_id else 0
        if receiver:
            self._connect_requested.pop(receiver, None)
        self._send_presence(peer_key, receiver, reply_required=True)

    def peer_disconnected(self, peer_key: Hashable, now: float) -> None:
        """The association is gone.  The peer stays in the table: only its
        timers decide that it is dead (RSPLIB)."""
        self._unbound.pop(peer_key, None)
        self._key_addrs.pop(peer_key, None)
        for k in [k for k in self._ht_cursors if k[0] == peer_key]:
            del self._ht_cursors[k]
        pid = self._key_peer.pop(peer_key, None)
        if pid is None:
            return
        peer = self._peers.get(pid)
        if peer is None:
            return
        if peer_key in peer.keys:
            peer.keys.remove(peer_key)
        if peer.key == peer_key:
            peer.key = peer.keys[-1] if peer.keys else None
        if not peer.keys:
            # Ours: a lost association is a strong hint (a killed registrar's
            # kernel resets it): probe now instead of waiting for
            # max-time-last-heard; a reconnect is requested at once.
            self._step(peer, PeerInput.LINK_LOST, now)

    # ---- local ASAP changes ------------------------------------------------

    def local_registered(self, pool_handle: bytes, element: Any, now: float) -> None:
        """A PE registered or re-registered with us (its home): Handle Update
        ADD to every peer.  ``element``: a handlespace entry or a wire
        PoolElement (with its ASAP transport)."""
        if not self._peers:
            return  # a lone registrar: nothing to build
        pe = self._pool_element(element)
        self._broadcast_update(UpdateAction.ADD_PE, pool_handle, pe)

    def local_deregistered(self, pool_handle: bytes, identifier: int, element: Any,
                           now: float) -> None:
        """A PE we own was removed (deregistration, keep-alive timeout,
        association loss, expiry): Handle Update DEL to every peer.
        ``element``: the removed entry (``Handlespace.deregister`` returns it)
        or a wire PoolElement; the wire format needs a complete one."""
        if element is None:
            raise ValueError("local_deregistered needs the removed PE (entry or PoolElement)")
        if not self._peers:
            return
        pe = self._pool_element(element)
        if pe.identifier != identifier:
            pe = pe.replace(identifier=identifier)
        self._broadcast_update(UpdateAction.DEL_PE, pool_handle, pe)

    def _pool_element(self, element: Any) -> Any:
        pe = element if type(element) is PoolElement else element.pool_element
        if pe.home_registrar != self.registrar_id:
            pe = pe.replace(home_registrar=self.registrar_id)
        return pe

    def _broadcast_update(self, action: int, handle: bytes, pe: Any,
                          exclude: int = 0) -> None:
        targets = [p for p in self._peers.values()
                   if p.key is not None and p.peer_id != exclude]
        if not targets:
            return
        try:
            data = encode_message(HandleUpdate(self.registrar_id, 0, action, handle, pe))
        except (EncodeError, ValueError, TypeError) as exc:
            enrp_log.warning("cannot encode Handle Update for %r/0x%08x: %s", handle,
                             pe.identifier, exc)
            return
        # One encoding; only the receiving server ID (bytes 8-11 of the
        # common header) differs per peer.
        head, tail = data[:_RECEIVER_ID], data[_RECEIVER_ID + 4:]
        for peer in targets:
            self._sends.append((peer.key, head + peer.peer_id.to_bytes(4, "big") + tail))
        self.counters["updates_sent"] += len(targets)

    # ---- input -------------------------------------------------------------

    def receive(self, peer_key: Hashable, data: bytes, now: float) -> None:
        """One whole ENRP message from an association.  Never raises for
        anything in ``data``."""
        if peer_key not in self._key_peer and peer_key not in self._unbound:
            self._unbound[peer_key] = now  # the driver forgot peer_connected
        try:
            msg = decode_message(data, "enrp")
        except WireError as exc:
            self._wire_error(peer_key, data, exc)
            return
        bound = self._key_peer.get(peer_key)
        sender = msg.sender_id
        if sender == self.registrar_id:
            self._misbehaved(peer_key, sender, "own-id",
                             f"{type(msg).__name__} claims our own ID")
            return
        if bound is not None and sender != bound:
            self._misbehaved(peer_key, sender, "sender-mismatch",
                             f"association of 0x{bound:08x} sent as 0x{sender:08x}")
            return
        if bound is None and type(msg) not in (Presence, HandleTableRequest, ListRequest,
                                               EnrpErrorMessage):
            self._misbehaved(peer_key, sender, "unbound",
                             f"{type(msg).__name__} before any Presence")
            return
        if sender == 0:
            self._misbehaved(peer_key, 0, "malformed", "sending server ID 0")
            return
        try:
            self._handlers[type(msg)](peer_key, msg, now)
        except Exception as exc:  # a bug of ours: never let a peer crash the registrar
            self.counters["internal_errors"] += 1
            enrp_log.exception("internal error handling %s", type(msg).__name__)
            self._misbehaved(peer_key, sender, "internal-error",
                             f"{type(exc).__name__}: {exc}")
        pid = self._key_peer.get(peer_key)
        if pid is not None:
            heard = self._peers.get(pid)
            if heard is not None:
                heard.key_heard = now

    def presence_datagram(self, data: bytes, source_addr: tuple[str, int], now: float) -> None:
        """One datagram from the Presence multicast group."""
        try:
            msg = decode_message(data, "enrp")
        except WireError as exc:
            self._misbehaved(source_addr, 0, "malformed", f"multicast: {exc}")
            return
        if type(msg) is not Presence:
            self._misbehaved(source_addr, msg.sender_id, "unexpected-message",
                             f"multicast {type(msg).__name__}")
            return
        if msg.sender_id == self.registrar_id:
            if msg.server_info is not None and msg.server_info == self._server_info:
                return  # our own datagram looped back
            self._misbehaved(source_addr, msg.sender_id, "own-id",
                             "multicast Presence claims our own ID")
            return
        if msg.sender_id == 0:
            self._misbehaved(source_addr, 0, "malformed", "sending server ID 0")
            return
        pid = msg.sender_id
        peer = self._peers.get(pid)
        self.counters["presences_received"] += 1
        if peer is None:
            if len(self._peers) >= MAX_PEERS:
                self._misbehaved(source_addr, pid, "peer-limit",
                                 f"multicast Presence ignored: {MAX_PEERS} peers known")
                return
            peer = self._add_peer(pid, now, "multicast")
            peer.via_multicast = True
        if msg.server_info is not None:
            peer.server_info = msg.server_info
        previous, peer.multicast_heard = peer.multicast_heard, now
        if (peer.keys and previous is not None
                and peer.key_heard < previous - STALE_MARGIN):
            # Ours: its Presences arrive by multicast but none came over its
            # associations for a whole heartbeat of its own: they are stuck
            # (e.g. TCP retransmission back-off after a partition).  Drop
            # them (no LINK_LOST: the peer is alive) and connect anew, so that
            # the audit runs within a heartbeat or two of the heal.
            self._drop_stale_keys(peer, now)
        if peer.key is None:
            self._request_connect(peer, source_addr, now)
        self._heard(peer, now)

    # ---- timers ------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``."""
        if self.startup and now >= self._startup_deadline:
            self._end_startup()
        if now >= self._heartbeat_deadline and not self.startup:
            self._heartbeat(now)
        for pid in [pid for pid, p in self._peers.items() if p.deadline <= now]:
            peer = self._peers.get(pid)
            if peer is None or peer.deadline > now:
                continue
            inp = PeerInput.TIMER
            if (peer.state is PeerState.PROBING and peer.taker is None
                    and self.handlespace.owned_by(pid)):
                inp = PeerInput.TIMER_OWNS_PES
            self._step(peer, inp, now)
            if peer.state is not PeerState.REMOVED and peer.deadline <= now:
                peer.deadline = now + self.config.peer_max_time_last_heard  # never stall
        for pid in [pid for pid, s in self._syncs.items() if s.deadline <= now]:
            self._drop_sync(pid, "no response")

    def _heartbeat(self, now: float) -> None:
        for peer in self._peers.values():
            if peer.key is not None:
                self._send_presence(peer.key, peer.peer_id)
        for key in self._unbound:
            self._send_presence(key, 0)
        if self.config.presence_multicast:
            self._send_presence(MULTICAST, 0)
        # the throttle of connect requests only matters for max-time-last-heard
        stale = now - self.config.peer_max_time_last_heard
        for pid in [p for p, t in self._connect_requested.items() if t <= stale]:
            del self._connect_requested[pid]
        interval = self.config.peer_heartbeat_interval
        self._heartbeat_deadline = now + interval * self._rng.uniform(0.875, 1.125)

    def _end_startup(self) -> None:
        if not self.startup:
            return
        self.startup = False
        self._events.append(StartupFinished(self.mentor if self.mentor_done else None))

    # ---- the state machine -------------------------------------------------

    def _step(self, peer: _Peer, inp: PeerInput, now: float, arg: Any = None) -> None:
        entry = PEER_TRANSITIONS.get((peer.state, inp))
        if entry is None:
            self.counters["ignored_inputs"] += 1
            return
        action, nxt = entry
        prev = peer.state
        peer.state = nxt
        getattr(self, "_a_" + action)(peer, now, arg, prev)
        if nxt is PeerState.REMOVED:
            self._remove_peer(peer, now)

    def _a_refresh(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        peer.last_heard = now
        peer.deadline = now + self.config.peer_max_time_last_heard

    def _a_probe(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        if peer.key is not None:
            self._send_presence(peer.key, peer.peer_id, reply_required=True)
        peer.deadline = now + self.config.peer_max_time_no_response
        self._events.append(PeerUnresponsive(peer.peer_id))

    def _a_probe_lost(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        peer.deadline = now + self.config.peer_max_time_no_response
        self._events.append(PeerUnresponsive(peer.peer_id))
        self._connect_requested.pop(peer.peer_id, None)
        self._request_connect(peer, None, now)

    def _a_remove_dead(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        self._events.append(PeerLost(peer.peer_id, "no response"))

    def _a_start_takeover(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        target = peer.peer_id
        awaiting = {p.peer_id for p in self._peers.values()
                    if p.peer_id != target and p.state in (PeerState.ALIVE, PeerState.PROBING)}
        peer.awaiting = awaiting
        peer.deadline = now + self.config.takeover_expiry_interval
        self.counters["takeovers_started"] += 1
        self._events.append(TakeoverStarted(target, tuple(sorted(awaiting))))
        for p in self._peers.values():
            if p.key is not None:
                self._send(p.key, InitTakeover(self.registrar_id, p.peer_id, target))
        if not awaiting:
            self._step(peer, PeerInput.ALL_ACKED, now)

    def _a_concede(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        taker, key = arg
        if peer.taker is None or taker < peer.taker:
            peer.taker = taker
        peer.deadline = now + self.config.peer_max_time_no_response
        self.counters["takeovers_conceded"] += 1
        self._send(key, InitTakeoverAck(self.registrar_id, taker, peer.peer_id))
        self._events.append(TakeoverConceded(peer.peer_id, taker))

    def _a_concede_ours(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        peer.awaiting = set()
        peer.taker = None
        self._a_concede(peer, now, arg, prev)

    def _a_refuse_init(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        # Ours: a peer heard within max-time-last-heard is not dead; no ack.
        self._events.append(TakeoverRefused(arg[0], peer.peer_id))

    def _a_ignore(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        pass

    def _a_cancel_takeover(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        peer.awaiting = set()
        self._events.append(TakeoverCancelled(peer.peer_id))
        self._a_refresh(peer, now, arg, prev)

    def _a_cancel_conceded(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        peer.taker = None
        self._events.append(TakeoverCancelled(peer.peer_id))
        self._a_refresh(peer, now, arg, prev)

    def _a_remove_conceded(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        # The taker's Takeover Server never came (digest 12 #3): the PEs keep
        # their expiry timers and move when the taker's Handle Updates arrive.
        self._events.append(PeerLost(peer.peer_id, "taken over", peer.taker))

    def _a_win(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        target = peer.peer_id
        hs = self.handlespace
        moved = []
        for handle, ident in hs.owned_by(target):
            entry = hs.get(handle, ident)
            if entry is not None:
                moved.append(entry)
        count = hs.takeover(target, self.registrar_id)
        self.counters["takeovers_won"] += 1
        self.counters["pes_taken_over"] += count
        self._events.append(TakeoverWon(target, count))
        for p in self._peers.values():
            if p.key is not None and p.peer_id != target:
                self._send(p.key, TakeoverServer(self.registrar_id, p.peer_id, target))
        for entry in moved:
            new = hs.get(entry.pool_handle, entry.identifier)
            if new is None or new.home_registrar != self.registrar_id:
                continue
            self._keepalives.append(KeepAliveRequest(entry.pool_handle, entry.identifier,
                                                     entry.asap_transport))
            self._broadcast_update(UpdateAction.ADD_PE, entry.pool_handle, new.pool_element,
                                   exclude=target)
        self._events.append(TakeoverCompleted(target, self.registrar_id, count))
        self._events.append(PeerLost(target, "taken over", self.registrar_id))

    def _a_abandon(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        self.counters["takeovers_abandoned"] += 1
        self._events.append(TakeoverAbandoned(peer.peer_id, tuple(sorted(peer.awaiting))))
        self._events.append(PeerLost(peer.peer_id, "takeover abandoned"))

    def _a_apply_takeover(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        taker = arg
        count = self.handlespace.takeover(peer.peer_id, taker)
        self._events.append(TakeoverCompleted(peer.peer_id, taker, count))
        self._events.append(PeerLost(peer.peer_id, "taken over", taker))

    def _a_refuse_takeover(self, peer: _Peer, now: float, arg: Any, prev: PeerState) -> None:
        self._events.append(TakeoverRefused(arg, peer.peer_id))

    # ---- peers -------------------------------------------------------------

    def _add_peer(self, pid: int, now: float, via: str) -> _Peer:
        peer = self._peers[pid] = _Peer(pid, now)
        peer.deadline = now + self.config.peer_max_time_last_heard
        self._events.append(PeerAppeared(pid, via))
        return peer

    def _remove_peer(self, peer: _Peer, now: float) -> None:
        pid = peer.peer_id
        if self._peers.get(pid) is not peer:
            return
        del self._peers[pid]
        self._connect_requested.pop(pid, None)
        self._list_pending.discard(pid)
        for key in peer.keys:
            self._key_peer.pop(key, None)
            self._unbound[key] = peer.last_heard  # the association may still be up
        if pid in self._syncs:
            self._drop_sync(pid, "peer lost")
        if self.mentor == pid and not self.mentor_done:
            self.mentor_done = True
            self._end_startup()
        # A peer gone no longer blocks our takeovers.
        for other in list(self._peers.values()):
            if other.state is PeerState.TAKING_OVER and pid in other.awaiting:
                other.awaiting.discard(pid)
                if not other.awaiting:
                    self._step(other, PeerInput.ALL_ACKED, now)

    def _bind(self, key: Hashable, peer: _Peer) -> None:
        self._unbound.pop(key, None)
        self._key_peer[key] = peer.peer_id
        addrs = self._key_addrs.get(key)
        if addrs:
            peer.addresses = tuple(sorted(addrs))
        if key not in peer.keys:
            peer.keys.append(key)
        peer.key = key

    def _heard(self, peer: _Peer, now: float) -> None:
        self._step(peer, PeerInput.HEARD, now)

    def _drop_stale_keys(self, peer: _Peer, now: float) -> None:
        keys = list(peer.keys)
        for key in keys:
            self._key_peer.pop(key, None)
            self._key_addrs.pop(key, None)
            for k in [k for k in self._ht_cursors if k[0] == key]:
                del self._ht_cursors[k]
            self._closes.append((key, "no message for a heartbeat while its Presences "
                                      "arrive by multicast"))
        peer.keys = []
        peer.key = None
        self.counters["stale_associations"] += len(keys)
        self._events.append(PeerAssociationsStale(peer.peer_id, len(keys)))
        self._connect_requested.pop(peer.peer_id, None)

    def _connect_throttle(self) -> float:
        """At most one connect request per peer this often."""
        cfg = self.config
        return min(cfg.peer_max_time_last_heard, max(1.0, 2 * cfg.peer_heartbeat_interval))

    def _request_connect(self, peer: _Peer, source: Any, now: float) -> None:
        last = self._connect_requested.get(peer.peer_id)
        if last is not None and now - last < self._connect_throttle():
            return
        self._connect_requested[peer.peer_id] = now
        info = peer.server_info
        addresses: tuple[str, ...] = ()
        port = 0
        if info is not None:
            addresses = tuple(a for a in info.transport.addresses if a not in _WILDCARDS)
            port = info.transport.port
        # a peer bound to the wildcard advertises 0.0.0.0: use where its
        # association came from (digest 6.10: the association's addresses)
        addresses += tuple(a for a in peer.addresses if a not in addresses)
        if isinstance(source, tuple) and len(source) == 2:
            # digest 12 #5: multicast peers are recorded under the UDP source address
            addresses = (str(source[0]),) + tuple(a for a in addresses if a != source[0])
        self._events.append(PeerConnectRequested(peer.peer_id, addresses, port))

    # ---- message handlers --------------------------------------------------

    def _on_presence(self, key: Hashable, msg: Any, now: float) -> None:
        pid = msg.sender_id
        self.counters["presences_received"] += 1
        peer = self._peers.get(pid)
        if (peer is not None and peer.state is PeerState.ALIVE and key not in self._key_peer
                and self._impersonates(key, peer)):
            self._misbehaved(key, pid, "impersonation",
                             f"Presence as 0x{pid:08x}, which is connected from other "
                             f"addresses")
            return
        new = peer is None
        if new:
            peer = self._add_peer(pid, now, "association")
        if msg.server_info is not None:
            peer.server_info = msg.server_info
        self._bind(key, peer)
        self._heard(peer, now)
        if msg.reply_required:
            self._send_presence(key, pid)
        elif new:
            self._send_presence(key, pid, reply_required=True)
        if self.startup and self.mentor is None:
            self.mentor = pid
            self._events.append(MentorChosen(pid))
            self._start_sync(peer, own_children_only=False, now=now, mentor=True)
        if not peer.list_fetched:
            peer.list_fetched = True
            self._list_pending.add(pid)
            self._send(key, ListRequest(self.registrar_id, pid))
        self._audit(peer, msg.checksum, now)

    def _impersonates(self, key: Hashable, peer: _Peer) -> bool:
        """True when ``key`` comes from addresses none of which the peer's
        live associations come from (both known): another host claiming
        the ID of a connected peer (*ours*).  Only asked while the peer is
        ALIVE: a peer that moved while its old association hangs half-open
        is taken on its new one once the old one went silent (PROBING)."""
        addrs = self._key_addrs.get(key)
        if not addrs or not peer.keys:
            return False
        known: set[str] = set()
        for k in peer.keys:
            known.update(self._key_addrs.get(k, ()))
        return bool(known) and not (addrs & known)

    def _audit(self, peer: _Peer, reported: int, now: float) -> None:
        pid = peer.peer_id
        if pid in self._syncs or (self.mentor is not None and not self.mentor_done):
            return
        computed = self.handlespace.checksum(pid)
        if computed == reported:
            return
        self.counters["audit_mismatches"] += 1
        self._events.append(AuditMismatch(pid, reported, computed))
        self._start_sync(peer, own_children_only=True, now=now, mentor=False)

    def _start_sync(self, peer: _Peer, *, own_children_only: bool, now: float,
                    mentor: bool) -> None:
        marked = set(self.handlespace.owned_by(peer.peer_id)) if own_children_only else None
        self._syncs[peer.peer_id] = _Sync(own_children_only, marked, self._sync_deadline(now),
                                          mentor)
        self._send(peer.key, HandleTableRequest(self.registrar_id, peer.peer_id,
                                                own_children_only))

    def _sync_deadline(self, now: float) -> float:
        return now + self.config.peer_max_time_last_heard + self.config.peer_max_time_no_response

    def _drop_sync(self, pid: int, reason: str) -> None:
        sync = self._syncs.pop(pid, None)
        if sync is None:
            return
        self._events.append(SyncAbandoned(pid, reason))
        if sync.mentor:
            self.mentor_done = True
            if self.startup:
                self._end_startup()

    def _on_ht_request(self, key: Hashable, msg: Any, now: float) -> None:
        pid = self._key_peer.get(key)
        if pid is None or pid not in self._peers:
            # Not a peer (yet): a tool such as ``rserpool hsdump``.  Served
            # like a peer (the handlespace is no secret: ASAP resolves it
            # too), paged the same way; a cursor per association.
            pid = msg.sender_id
        self.counters["ht_requests_served"] += 1
        own = msg.own_children_only
        saved = self._ht_cursors.pop((key, own), None)
        # A request with the other flag starts over (one download per flag);
        # a cursor older than max-time-last-heard is stale: the requester gave
        # that download up, this request starts a new one.
        self._ht_cursors.pop((key, not own), None)
        cursor = None
        if saved is not None and now - saved[1] <= self.config.peer_max_time_last_heard:
            cursor = saved[0]
        entries, more, last = self._page(cursor, own)
        if more and last is not None:
            self._ht_cursors[(key, own)] = (last, now)
        self._send(key, HandleTableResponse(self.registrar_id, pid, entries, more))

    def _page(self, cursor: tuple[bytes, int] | None,
              own: bool) -> tuple[list[tuple[bytes, list[Any]]], bool, tuple[bytes, int] | None]:
        """One response's worth of entries after ``cursor``: at most
        ``max_elements_per_ht_request`` PEs and 1,400 bytes (at least one PE,
        however large, so that a download always progresses)."""
        limit = self.config.max_elements_per_ht_request
        home = self.registrar_id if own else None
        groups: list[tuple[bytes, list[Any]]] = []
        size = _ENRP_HEADER
        last: tuple[bytes, int] | None = None
        taken = 0
        full = False
        after = cursor
        while True:
            page, nxt = self.handlespace.page(after, min(limit - taken, _HT_CHUNK), home=home)
            for entry in page:
                pe = entry.pool_element
                pe_size = len(encode_parameter(pe))
                handle = entry.pool_handle
                extra = pe_size
                if not groups or groups[-1][0] != handle:
                    extra += 4 + len(handle) + (-len(handle) % 4)
                if taken and size + extra > MAX_HT_RESPONSE_BYTES:
                    full = True
                    break
                if not groups or groups[-1][0] != handle:
                    groups.append((handle, []))
                groups[-1][1].append(pe)
                size += extra
                taken += 1
                last = (handle, entry.identifier)
            if full or nxt is None or taken >= limit:
                break
            after = nxt
        more = full or nxt is not None
        return groups, more, last

    def _on_ht_response(self, key: Hashable, msg: Any, now: float) -> None:
        pid = msg.sender_id
        sync = self._syncs.get(pid)
        peer = self._peers.get(pid)
        if sync is None or peer is None:
            self._misbehaved(key, pid, "unsolicited", "Handle Table Response without request")
            return
        if msg.rejected:
            self._drop_sync(pid, "rejected")
            return
        sync.pages += 1
        sync.deadline = self._sync_deadline(now)
        for handle, pes in msg.entries:
            for pe in pes:
                if sync.own_children_only and pe.home_registrar != pid:
                    self._refuse(pid, handle, pe.identifier,
                                 "own-children response names another home")
                    continue
                if self._accept_entry(pid, handle, pe, now, update=False):
                    sync.count += 1
                    if sync.marked is not None:
                        sync.marked.discard((handle, pe.identifier))
        if msg.more:
            # A page with M=1 must move on: at least one entry, not ending
            # where the previous one did, and not more pages than PEs we could
            # hold (each page carries a PE of its own).
            last = None
            if msg.entries:
                handle, pes = msg.entries[-1]
                last = (handle, pes[-1].identifier)
            cap = getattr(self.handlespace, "max_elements", 10_000_000)
            if last is None or last == sync.last or sync.pages > cap:
                self._drop_sync(pid, "no progress")
                return
            sync.last = last
            self._send(key, HandleTableRequest(self.registrar_id, pid, sync.own_children_only))
            return
        del self._syncs[pid]
        self._events.append(HandleTableDownloaded(pid, sync.count, sync.pages,
                                                  sync.own_children_only))
        if sync.marked is not None:
            swept = 0
            hs = self.handlespace
            for handle, ident in sorted(sync.marked):
                entry = hs.get(handle, ident)
                if entry is not None and entry.home_registrar == pid:
                    hs.deregister(handle, ident)
                    swept += 1
            self._events.append(AuditCompleted(pid, sync.count, swept))
        if sync.mentor:
            self.mentor_done = True
            self._end_startup()

    def _live_owner(self, home: int, sender: int) -> bool:
        """True when ``home`` is a peer we consider alive and not being taken
        over by ``sender``: its PEs are not for ``sender`` to change."""
        if home == sender:
            return False
        peer = self._peers.get(home)
        if peer is None:
            return False
        if peer.state is PeerState.CONCEDED and peer.taker == sender:
            return False
        return peer.state is PeerState.ALIVE

    def _accept_entry(self, sender: int, handle: bytes, pe: Any, now: float, *,
                      update: bool) -> bool:
        """Apply one ADD (Handle Update or handle table entry); False if refused."""
        home = pe.home_registrar
        ident = pe.identifier
        if home == self.registrar_id:
            return False  # ours: our ASAP side knows better (6.12)
        if home == 0:
            self._refuse(sender, handle, ident, "home registrar 0")
            return False
        if update and home != sender:
            self._refuse(sender, handle, ident, "update for a PE homed elsewhere")
            return False
        if pe.asap_transport is None:
            # a takeover could not reach it (digest 3.3: RSPLIB rejects it too)
            self._refuse(sender, handle, ident, "no ASAP transport")
            return False
        hs = self.handlespace
        try:
            old = hs.get(handle, ident)
        except (TypeError, ValueError):
            old = None
        if old is not None and old.home_registrar != home:
            if old.home_registrar == self.registrar_id:
                self._refuse(sender, handle, ident, "PE owned by us")
                return False
            if self._live_owner(old.home_registrar, sender):
                self._refuse(sender, handle, ident,
                             f"PE owned by live peer 0x{old.home_registrar:08x}")
                return False
        try:
            hs.register(handle, pe, now, home_registrar=home, timer=TIMER_EXPIRY)
        except (HandlespaceError, ValueError, TypeError, EncodeError) as exc:
            self._refuse(sender, handle, ident, f"handlespace: {exc}")
            return False
        self.counters["ht_entries_applied" if not update else "updates_applied"] += 1
        return True

    def _refuse(self, sender: int, handle: bytes, ident: int, reason: str) -> None:
        self.counters["updates_refused"] += 1
        self._events.append(UpdateRefused(sender, handle, ident, reason))

    def _on_handle_update(self, key: Hashable, msg: Any, now: float) -> None:
        pid = msg.sender_id
        handle, pe = msg.pool_handle, msg.pool_element
        sync = self._syncs.get(pid)
        if msg.action == UpdateAction.ADD_PE:
            if self._accept_entry(pid, handle, pe, now, update=True) and sync is not None \
                    and sync.marked is not None:
                sync.marked.discard((handle, pe.identifier))
            return
        if msg.action != UpdateAction.DEL_PE:
            self._refuse(pid, handle, pe.identifier, f"unknown action {int(msg.action)}")
            return
        hs = self.handlespace
        try:
            entry = hs.get(handle, pe.identifier)
        except (TypeError, ValueError):
            entry = None
        if entry is None:
            return
        owner = entry.home_registrar
        if owner == self.registrar_id:
            self._refuse(pid, handle, pe.identifier, "PE owned by us")
            return
        if self._live_owner(owner, pid):
            self._refuse(pid, handle, pe.identifier, f"PE owned by live peer 0x{owner:08x}")
            return
        hs.deregister(handle, pe.identifier)
        self.counters["updates_applied"] += 1

    def _on_list_request(self, key: Hashable, msg: Any, now: float) -> None:
        pid = self._key_peer.get(key)
        if pid is None:
            self._send(key, ListResponse(self.registrar_id, msg.sender_id, (), True))
            return
        servers = [self._listed(p) for p in self._peers.values()
                   if p.server_info is not None and p.peer_id != pid]
        servers.append(self._server_info)
        self._send(key, ListResponse(self.registrar_id, pid, servers))

    def _listed(self, peer: _Peer) -> Any:
        """A peer's Server Information for a List Response: a wildcard-only
        address list is replaced by the addresses its association comes from
        (the receiver could not connect to 0.0.0.0)."""
        info = peer.server_info
        if peer.addresses and all(a in _WILDCARDS for a in info.transport.addresses):
            info = info.replace(transport=info.transport.replace(addresses=peer.addresses))
        return info

    def _on_list_response(self, key: Hashable, msg: Any, now: float) -> None:
        if msg.sender_id not in self._list_pending:
            self._misbehaved(key, msg.sender_id, "unsolicited", "List Response without request")
            return
        self._list_pending.discard(msg.sender_id)
        if msg.rejected:
            return
        for info in msg.servers:
            sid = info.server_id
            if sid == 0 or sid == self.registrar_id:
                continue
            peer = self._peers.get(sid)
            if peer is not None and peer.key is not None:
                continue
            last = self._connect_requested.get(sid)
            if last is not None and now - last < self._connect_throttle():
                continue
            self._connect_requested[sid] = now
            self._events.append(PeerConnectRequested(sid, tuple(info.transport.addresses),
                                                     info.transport.port))

    def _on_init_takeover(self, key: Hashable, msg: Any, now: float) -> None:
        taker, target = msg.sender_id, msg.target_id
        if target == self.registrar_id:
            # We are alive: say so to everybody (6.14 step 4).
            for p in self._peers.values():
                if p.key is not None:
                    self._send_presence(p.key, p.peer_id)
            if self.config.presence_multicast:
                self._send_presence(MULTICAST, 0)
            return
        peer = self._peers.get(target)
        if peer is None or target == taker:
            self._send(key, InitTakeoverAck(self.registrar_id, taker, target))
            return
        if peer.state is PeerState.TAKING_OVER:
            inp = (PeerInput.INIT_TAKEOVER_LOWER if taker < self.registrar_id
                   else PeerInput.INIT_TAKEOVER_HIGHER)
        else:
            inp = PeerInput.INIT_TAKEOVER
        self._step(peer, inp, now, (taker, key))

    def _on_init_takeover_ack(self, key: Hashable, msg: Any, now: float) -> None:
        peer = self._peers.get(msg.target_id)
        if peer is None or peer.state is not PeerState.TAKING_OVER:
            return
        peer.awaiting.discard(msg.sender_id)
        if not peer.awaiting:
            self._step(peer, PeerInput.ALL_ACKED, now)

    def _on_takeover_server(self, key: Hashable, msg: Any, now: float) -> None:
        taker, target = msg.sender_id, msg.target_id
        if target == self.registrar_id or target == taker:
            self._events.append(TakeoverRefused(taker, target))
            return
        peer = self._peers.get(target)
        if peer is None:
            # Already removed (or never known): its PEs are nobody's now.
            count = self.handlespace.takeover(target, taker)
            if count:
                self._events.append(TakeoverCompleted(target, taker, count))
            return
        self._step(peer, PeerInput.TAKEOVER_SERVER, now, taker)

    def _on_error(self, key: Hashable, msg: Any, now: float) -> None:
        causes = ", ".join(f"0x{int(c.code):04x}" for c in msg.causes)
        self._misbehaved(key, msg.sender_id, "enrp-error", f"peer sent ENRP Error ({causes})")

    # ---- sending -------------------------------------------------------------

    def _send(self, key: Hashable | None, msg: Any) -> None:
        if key is None:
            self.counters["unroutable"] += 1
            return
        self._sends.append((key, encode_message(msg)))

    def _send_presence(self, key: Hashable, receiver: int, *,
                       reply_required: bool = False) -> None:
        self.counters["presences_sent"] += 1
        self._send(key, Presence(self.registrar_id, receiver,
                                 self.handlespace.checksum(self.registrar_id),
                                 self._server_info, reply_required))

    # ---- bad input -------------------------------------------------------------

    def _wire_error(self, key: Hashable, data: bytes, exc: WireError) -> None:
        receiver = self._key_peer.get(key, 0)
        if isinstance(exc, UnknownMessageError):
            self._error_reply(key, receiver, ErrorCause.UNRECOGNIZED_MESSAGE,
                              bytes(data[:MAX_ERROR_INFO]), "unknown-message", str(exc))
        elif isinstance(exc, UnknownParameterError) and exc.report:
            self._error_reply(key, receiver, ErrorCause.UNRECOGNIZED_PARAMETER,
                              bytes(exc.tlv[:MAX_ERROR_INFO]), "unknown-parameter", str(exc))
        else:
            self.counters["dropped"] += 1
            self._misbehaved(key, receiver, "malformed", f"dropped: {exc}")

    def _error_reply(self, key: Hashable, receiver: int, cause: int, info: bytes, kind: str,
                     detail: str) -> None:
        self.counters["errors_sent"] += 1
        self._misbehaved(key, receiver, kind, detail)
        self._send(key, EnrpErrorMessage(self.registrar_id, receiver, (Cause(cause, info),)))

    def _misbehaved(self, key: Hashable, peer_id: int, kind: str, detail: str) -> None:
        self._events.append(PeerMisbehaved(key, peer_id, kind, detail))


def transitions_as_dot(table: dict[tuple[PeerState, PeerInput], tuple[str, PeerState]]
                       = PEER_TRANSITIONS) -> str:
    """The transition table as a Graphviz digraph (for the design doc)."""
    lines = ["digraph enrp_peer {"]
    for (state, inp), (action, nxt) in table.items():
        lines.append(f'  "{state.value}" -> "{nxt.value}" [label="{inp.value} / {action}"];')
    lines.append("}")
    return "\n".join(lines)
