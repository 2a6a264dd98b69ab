"""The pool element's side of ASAP (RFC 5352): one PE's registration state.

Sans-I/O: this module never imports asyncio, socket or time.  The driver
(:mod:`rserpool.aio.element`) feeds it inputs with the current time ``now``
(float seconds, ``loop.time()``) and collects what it wants done:

* inputs: :meth:`PoolElementCore.start`, :meth:`~PoolElementCore.stop`,
  :meth:`~PoolElementCore.registrar_connected` (a link the driver's registrar
  hunt opened), :meth:`~PoolElementCore.link_lost`,
  :meth:`~PoolElementCore.receive` (a decoded ASAP message from a registrar
  link, with ``known_registrar``: whether the driver knows the peer as a
  registrar), :meth:`~PoolElementCore.update_policy` and
  :meth:`~PoolElementCore.handle_timer`;
* outputs: :meth:`~PoolElementCore.pop_outgoing` (``(link, message)`` pairs to
  send, in order), :meth:`~PoolElementCore.pop_closing` (links to close
  gracefully *after* sending), :meth:`~PoolElementCore.pop_events` (the frozen
  dataclasses below) and :meth:`~PoolElementCore.next_deadline`;
* :attr:`~PoolElementCore.needs_registrar` says when the driver should hunt.

A *link* is whatever object the driver uses for one registrar association or
connection (a ``Channel``); the core only compares links and hands them back.

Rules this module follows (h11's ``_state.py`` style):

1. Every state change goes through :data:`TRANSITIONS`, a table from
   ``(state, input)`` to ``(action, next state)``.  An action is a method
   ``_do_<action>``; it may send, emit events and set the deadline, and it may
   feed one further input (a deferred update).
2. A pair that is not in the table is a protocol error.  For a local input
   (start, stop, connected, policy change, timer) that is our misuse and raises
   :class:`~rserpool.errors.LocalProtocolError`.  For a message from a peer it
   emits :class:`ProtocolViolated`, closes that link and, if it was the home
   registrar's link, continues as if that link was lost (hunt again); no
   exception escapes.
3. The PE identifier is chosen once, uniformly in [1, 0xFFFFFFFE] (digest
   6.1), and kept across re-registrations and registrar changes.
4. Registration life = 3 x the re-registration interval, in ms (digest 6.4).
5. Requests to a registrar time out after ``request_timeout`` (3 s, digest
   6.2 item 5 and 8.2); a timeout, an ASAP Error or a lost link makes the PE
   drop that registrar and hunt again.
6. Keep-alives are answered on the link they came on, one ack per PE; a
   keep-alive without a PE identifier (RFC form) is acked too (digest 6.6).
   A keep-alive with the H bit on a link other than the home link makes that
   link the home registrar's (takeover, digest 6.6 and 6.14); H on the home
   link is only acknowledged.
7. A home claim (H bit, not on the home link) is accepted only from a known
   registrar: the driver says so with ``receive(..., known_registrar=True)``
   when one of the peer's addresses belongs to an entry of the PE's
   registrar table (static or learned from announces).  Any other claim is a
   :data:`PeInput.FOREIGN_CLAIM`: it is not acknowledged, its link is closed
   and :class:`HomeClaimRefused` is emitted; the home link and the
   registration are left alone.  ``accept_any_home=True`` (RSPLIB's
   behaviour) accepts every claim: then anyone who reaches the PE's ASAP
   endpoint can take it away from its registrar, which drops the PE when the
   old home link closes.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ..constants import MAX32, POLICY_VALUE_NAMES, PolicyType
from ..errors import ConfigError, LocalProtocolError
from ..wire import (AsapErrorMessage, Deregistration, DeregistrationResponse,
                    EndpointKeepAlive, EndpointKeepAliveAck, Message, PoolElement,
                    PoolPolicy, Registration, RegistrationResponse)

__all__ = [
    "PoolElementCore", "PeState", "PeInput", "TRANSITIONS", "LOCAL_INPUTS",
    "RegistrarHuntStarted", "Registered", "RegistrationRefused", "HomeRegistrarChanged",
    "RegistrarLost", "KeepAliveAnswered", "Deregistered", "ProtocolViolated",
    "MessageIgnored", "HomeClaimRefused", "make_policy", "policy_with", "load_from_fraction",
    "load_from_percent", "load_to_fraction", "random_identifier", "transitions_dot",
    "MAX_IDENTIFIER", "DEFAULT_REGISTRATION_INTERVAL", "DEFAULT_REQUEST_TIMEOUT",
]

#: Largest PE identifier a PE picks (0 and 0xFFFFFFFF are not used).
MAX_IDENTIFIER = 0xFFFFFFFE
#: rspserver's default re-registration interval (digest 8.2), seconds.
DEFAULT_REGISTRATION_INTERVAL = 30.0
#: Registrar request timeout (digest 8.2), seconds.
DEFAULT_REQUEST_TIMEOUT = 3.0
_MAX_LIFE_MS = 0x7FFFFFFF  # the registration life field is a signed 32-bit count of ms


# --------------------------------------------------------------------------
# events (past tense, frozen)

@dataclass(frozen=True)
class RegistrarHuntStarted:
    """The PE has no registrar and wants the driver to find one."""


@dataclass(frozen=True)
class Registered:
    """A registrar accepted the (re-)registration.  ``reregistration`` is
    False for the first acceptance after a hunt or a refusal."""

    identifier: int
    home_registrar: int
    reregistration: bool


@dataclass(frozen=True)
class RegistrationRefused:
    """A registrar refused the registration (R bit) with this cause (an
    :class:`~rserpool.constants.ErrorCause` or a plain int; 0 if none)."""

    cause: int
    info: bytes = b""


@dataclass(frozen=True)
class HomeRegistrarChanged:
    """A registrar claimed the PE with the H bit on a new link; it is now the
    home registrar (server ID ``home_registrar``)."""

    home_registrar: int
    previous: int


@dataclass(frozen=True)
class RegistrarLost:
    """The home registrar's link is gone (closed, timed out, ASAP Error,
    protocol error); the PE hunts again."""

    reason: str


@dataclass(frozen=True)
class KeepAliveAnswered:
    """An Endpoint Keep-Alive was acknowledged."""

    server_id: int
    home: bool


@dataclass(frozen=True)
class Deregistered:
    """The PE left: ``acknowledged`` is True when a registrar confirmed the
    deregistration, False when it could not (no registrar, timeout, link
    lost)."""

    identifier: int
    acknowledged: bool


@dataclass(frozen=True)
class ProtocolViolated:
    """A peer sent something the state machine does not allow here; its link
    was closed."""

    state: str
    input: str
    detail: str


@dataclass(frozen=True)
class MessageIgnored:
    """A message not addressed to this PE (another pool handle or PE ID)."""

    detail: str


@dataclass(frozen=True)
class HomeClaimRefused:
    """A keep-alive with the H bit came on ``link`` (not the home link) from a
    peer that is not a known registrar: it was not acknowledged and ``link``
    was closed (rule 7).  ``link`` is the driver's object for it."""

    server_id: int
    link: Any


# --------------------------------------------------------------------------
# the state machine

class PeState(enum.Enum):
    IDLE = "idle"                    # built, not started
    HUNTING = "hunting"              # no registrar link; the driver hunts
    REGISTERING = "registering"      # first Registration sent on the home link
    REGISTERED = "registered"        # accepted; re-registration timer running
    UPDATING = "updating"            # re-registration sent, still registered
    REFUSED = "refused"              # the registrar said no; retry timer running
    DEREGISTERING = "deregistering"  # Deregistration sent
    CLOSED = "closed"                # final


class PeInput(enum.Enum):
    # local
    START = "start"
    STOP = "stop"
    CONNECTED = "connected"                   # the hunt opened a registrar link
    POLICY_CHANGED = "policy_changed"
    TIMER = "timer"                           # the deadline of the state passed
    # from the network
    LINK_LOST = "link_lost"                   # the home link closed
    REGISTRATION_ACCEPTED = "registration_accepted"
    REGISTRATION_REFUSED = "registration_refused"
    DEREGISTRATION_ACKED = "deregistration_acked"
    KEEP_ALIVE = "keep_alive"                 # on the home link (H or not)
    KEEP_ALIVE_ELSEWHERE = "keep_alive_elsewhere"  # H=0 on another link
    HOME_CLAIMED = "home_claimed"             # H=1 on another link, from a known registrar
    FOREIGN_CLAIM = "foreign_claim"           # H=1 on another link, from anyone else
    ERROR_RECEIVED = "error_received"         # ASAP Error on the home link
    OTHER_MESSAGE = "other_message"           # any other type on the home link
    STRAY_MESSAGE = "stray_message"           # a non-keep-alive on another link


#: Inputs that come from the application or the driver, not from a peer: a
#: missing table entry for one of them raises LocalProtocolError.
LOCAL_INPUTS = frozenset({PeInput.START, PeInput.STOP, PeInput.CONNECTED,
                          PeInput.POLICY_CHANGED, PeInput.TIMER})

S, I = PeState, PeInput

#: (state, input) -> (action, next state).  Pairs not listed are protocol errors.
TRANSITIONS: dict[tuple[PeState, PeInput], tuple[str, PeState]] = {
    (S.IDLE, I.START): ("begin_hunt", S.HUNTING),
    (S.IDLE, I.STOP): ("close_unstarted", S.CLOSED),
    (S.IDLE, I.POLICY_CHANGED): ("keep_policy", S.IDLE),
    (S.IDLE, I.CONNECTED): ("decline_link", S.IDLE),

    (S.HUNTING, I.CONNECTED): ("send_registration", S.REGISTERING),
    (S.HUNTING, I.STOP): ("close_unregistered", S.CLOSED),
    (S.HUNTING, I.POLICY_CHANGED): ("keep_policy", S.HUNTING),
    (S.HUNTING, I.HOME_CLAIMED): ("adopt_home", S.REGISTERED),
    (S.HUNTING, I.KEEP_ALIVE_ELSEWHERE): ("ack_keep_alive", S.HUNTING),
    (S.HUNTING, I.FOREIGN_CLAIM): ("refuse_claim", S.HUNTING),

    (S.REGISTERING, I.REGISTRATION_ACCEPTED): ("registered", S.REGISTERED),
    (S.REGISTERING, I.REGISTRATION_REFUSED): ("refused", S.REFUSED),
    (S.REGISTERING, I.TIMER): ("request_timed_out", S.HUNTING),
    (S.REGISTERING, I.LINK_LOST): ("registrar_lost", S.HUNTING),
    (S.REGISTERING, I.ERROR_RECEIVED): ("registrar_failed", S.HUNTING),
    (S.REGISTERING, I.KEEP_ALIVE): ("ack_keep_alive", S.REGISTERING),
    (S.REGISTERING, I.KEEP_ALIVE_ELSEWHERE): ("ack_keep_alive", S.REGISTERING),
    (S.REGISTERING, I.HOME_CLAIMED): ("move_registration", S.REGISTERING),
    (S.REGISTERING, I.FOREIGN_CLAIM): ("refuse_claim", S.REGISTERING),
    (S.REGISTERING, I.POLICY_CHANGED): ("defer_update", S.REGISTERING),
    (S.REGISTERING, I.STOP): ("send_deregistration", S.DEREGISTERING),
    (S.REGISTERING, I.CONNECTED): ("decline_link", S.REGISTERING),

    (S.REGISTERED, I.TIMER): ("send_update", S.UPDATING),
    (S.REGISTERED, I.POLICY_CHANGED): ("send_update", S.UPDATING),
    (S.REGISTERED, I.KEEP_ALIVE): ("ack_keep_alive", S.REGISTERED),
    (S.REGISTERED, I.KEEP_ALIVE_ELSEWHERE): ("ack_keep_alive", S.REGISTERED),
    (S.REGISTERED, I.HOME_CLAIMED): ("adopt_home", S.REGISTERED),
    (S.REGISTERED, I.FOREIGN_CLAIM): ("refuse_claim", S.REGISTERED),
    (S.REGISTERED, I.LINK_LOST): ("registrar_lost", S.HUNTING),
    (S.REGISTERED, I.ERROR_RECEIVED): ("registrar_failed", S.HUNTING),
    (S.REGISTERED, I.STOP): ("send_deregistration", S.DEREGISTERING),
    (S.REGISTERED, I.CONNECTED): ("decline_link", S.REGISTERED),

    (S.UPDATING, I.REGISTRATION_ACCEPTED): ("reregistered", S.REGISTERED),
    (S.UPDATING, I.REGISTRATION_REFUSED): ("refused", S.REFUSED),
    (S.UPDATING, I.TIMER): ("request_timed_out", S.HUNTING),
    (S.UPDATING, I.LINK_LOST): ("registrar_lost", S.HUNTING),
    (S.UPDATING, I.ERROR_RECEIVED): ("registrar_failed", S.HUNTING),
    (S.UPDATING, I.KEEP_ALIVE): ("ack_keep_alive", S.UPDATING),
    (S.UPDATING, I.KEEP_ALIVE_ELSEWHERE): ("ack_keep_alive", S.UPDATING),
    (S.UPDATING, I.HOME_CLAIMED): ("move_registration", S.UPDATING),
    (S.UPDATING, I.FOREIGN_CLAIM): ("refuse_claim", S.UPDATING),
    (S.UPDATING, I.POLICY_CHANGED): ("defer_update", S.UPDATING),
    (S.UPDATING, I.STOP): ("send_deregistration", S.DEREGISTERING),
    (S.UPDATING, I.CONNECTED): ("decline_link", S.UPDATING),

    (S.REFUSED, I.TIMER): ("send_registration", S.REGISTERING),
    (S.REFUSED, I.POLICY_CHANGED): ("send_registration", S.REGISTERING),
    (S.REFUSED, I.LINK_LOST): ("registrar_lost", S.HUNTING),
    (S.REFUSED, I.ERROR_RECEIVED): ("registrar_failed", S.HUNTING),
    (S.REFUSED, I.KEEP_ALIVE): ("ack_keep_alive", S.REFUSED),
    (S.REFUSED, I.KEEP_ALIVE_ELSEWHERE): ("ack_keep_alive", S.REFUSED),
    (S.REFUSED, I.HOME_CLAIMED): ("adopt_home", S.REGISTERED),
    (S.REFUSED, I.FOREIGN_CLAIM): ("refuse_claim", S.REFUSED),
    (S.REFUSED, I.STOP): ("send_deregistration", S.DEREGISTERING),
    (S.REFUSED, I.CONNECTED): ("decline_link", S.REFUSED),

    (S.DEREGISTERING, I.DEREGISTRATION_ACKED): ("deregistered", S.CLOSED),
    (S.DEREGISTERING, I.TIMER): ("deregistration_unconfirmed", S.CLOSED),
    (S.DEREGISTERING, I.LINK_LOST): ("deregistration_unconfirmed", S.CLOSED),
    (S.DEREGISTERING, I.ERROR_RECEIVED): ("deregistration_unconfirmed", S.CLOSED),
    (S.DEREGISTERING, I.REGISTRATION_ACCEPTED): ("ignore", S.DEREGISTERING),
    (S.DEREGISTERING, I.REGISTRATION_REFUSED): ("ignore", S.DEREGISTERING),
    (S.DEREGISTERING, I.KEEP_ALIVE): ("ack_keep_alive", S.DEREGISTERING),
    (S.DEREGISTERING, I.KEEP_ALIVE_ELSEWHERE): ("ignore", S.DEREGISTERING),
    (S.DEREGISTERING, I.HOME_CLAIMED): ("ignore", S.DEREGISTERING),
    (S.DEREGISTERING, I.FOREIGN_CLAIM): ("refuse_claim", S.DEREGISTERING),
    (S.DEREGISTERING, I.POLICY_CHANGED): ("keep_policy", S.DEREGISTERING),
    (S.DEREGISTERING, I.STOP): ("ignore", S.DEREGISTERING),
    (S.DEREGISTERING, I.CONNECTED): ("decline_link", S.DEREGISTERING),

    (S.CLOSED, I.CONNECTED): ("decline_link", S.CLOSED),
}
del S, I

#: States in which the core has a home registrar link.
_LINKED = frozenset({PeState.REGISTERING, PeState.REGISTERED, PeState.UPDATING,
                     PeState.REFUSED, PeState.DEREGISTERING})


def transitions_dot() -> str:
    """The transition table as a Graphviz ``dot`` graph (for the docs)."""
    lines = ["digraph pool_element {", "  rankdir=LR;"]
    for (state, inp), (action, nxt) in TRANSITIONS.items():
        lines.append(f'  {state.name} -> {nxt.name} [label="{inp.value}\\n/{action}"];')
    lines.append("}")
    return "\n".join(lines)


def random_identifier(rng: random.Random | None = None) -> int:
    """A PE identifier drawn uniformly from [1, 0xFFFFFFFE] (digest 6.1)."""
    return (rng or random.SystemRandom()).randint(1, MAX_IDENTIFIER)


class PoolElementCore:
    """One PE's registration with its home registrar.

    :param pool_handle: the pool to join (bytes; str is encoded as UTF-8).
    :param policy: its :class:`~rserpool.wire.PoolPolicy` with values.
    :param user_transport: the transport parameter of the PE's user endpoint
        (``SctpTransport``/``TcpTransport``, normally with transport use
        "data plus control").
    :param identifier: the PE ID; None picks a random one.
    :param asap_transport: optional ASAP transport parameter sent inside the
        Pool Element parameter (the TCP mapping uses it to say where the PE's
        ASAP listener is); None omits it, as over SCTP.
    :param registration_interval: seconds between re-registrations;
        registration life is three times this.
    :param request_timeout: seconds to wait for a registrar's response.
    :param retry_delay: seconds to wait after a refusal before registering
        again (default: ``registration_interval``).
    :param rng: random source for the PE ID (tests pass a seeded one).
    :param accept_any_home: accept a home claim (H bit) from any peer, not
        only from a known registrar (RSPLIB's behaviour; see rule 7 of the
        module docstring).
    """

    def __init__(self, pool_handle: bytes | str, policy: PoolPolicy, user_transport: Any, *,
                 identifier: int | None = None, asap_transport: Any = None,
                 registration_interval: float = DEFAULT_REGISTRATION_INTERVAL,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 retry_delay: float | None = None,
                 rng: random.Random | None = None,
                 accept_any_home: bool = False) -> None:
        if isinstance(pool_handle, str):
            pool_handle = pool_handle.encode()
        if not isinstance(pool_handle, (bytes, bytearray)) or not pool_handle:
            raise ConfigError("the pool handle must be non-empty bytes or str")
        if not isinstance(policy, PoolPolicy):
            raise ConfigError(f"policy must be a PoolPolicy, not {policy!r}")
        if identifier is None:
            identifier = random_identifier(rng)
        if isinstance(identifier, bool) or not isinstance(identifier, int) \
                or not 1 <= identifier <= MAX32:
            raise ConfigError(f"PE identifier must be in [1, 0xFFFFFFFF], not {identifier!r}")
        _positive("registration_interval", registration_interval)
        _positive("request_timeout", request_timeout)
        life = round(3 * registration_interval * 1000)
        if life > _MAX_LIFE_MS:
            raise ConfigError(f"registration_interval {registration_interval} s makes the "
                              "registration life overflow its 32-bit field")
        if retry_delay is None:
            retry_delay = registration_interval
        _positive("retry_delay", retry_delay)
        self.pool_handle = bytes(pool_handle)
        self.identifier = identifier
        self.user_transport = user_transport
        self.asap_transport = asap_transport
        self.registration_interval = float(registration_interval)
        self.request_timeout = float(request_timeout)
        self.retry_delay = float(retry_delay)
        self.accept_any_home = bool(accept_any_home)
        self.registration_life_ms = max(1, life)
        self._policy = policy
        self._state = PeState.IDLE
        self._home_link: Hashable | None = None
        self._home_id = 0
        self._deadline: float | None = None
        self._update_pending = False
        self._outgoing: list[tuple[Any, Message]] = []
        self._closing: list[Any] = []
        self._events: list[Any] = []
        # set while an input is processed: the link and message it came with
        self._link: Any = None
        self._message: Any = None
        self._previous_state = PeState.IDLE

    # ---------------------------------------------------------------- state
    @property
    def state(self) -> PeState:
        return self._state

    @property
    def policy(self) -> PoolPolicy:
        """The policy (with values) the next registration carries."""
        return self._policy

    @property
    def registered(self) -> bool:
        """True while a registrar holds this PE's registration as far as the
        PE knows (accepted and not lost, re-registration included)."""
        return self._state in (PeState.REGISTERED, PeState.UPDATING)

    @property
    def needs_registrar(self) -> bool:
        """True while the driver should hunt for a registrar."""
        return self._state is PeState.HUNTING

    @property
    def closed(self) -> bool:
        return self._state is PeState.CLOSED

    @property
    def home_link(self) -> Any:
        """The link to the home registrar (None while hunting)."""
        return self._home_link

    @property
    def home_registrar(self) -> int:
        """The home registrar's server ID, learned from its keep-alives (0
        while unknown)."""
        return self._home_id

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` wants to be called next (None: never)."""
        return self._deadline

    # -------------------------------------------------------------- outputs
    def pop_outgoing(self) -> list[tuple[Any, Message]]:
        """Messages to send, as ``(link, message)``, oldest first."""
        out, self._outgoing = self._outgoing, []
        return out

    def pop_closing(self) -> list[Any]:
        """Links to close (gracefully, after sending what is queued)."""
        out, self._closing = self._closing, []
        return out

    def pop_events(self) -> list[Any]:
        out, self._events = self._events, []
        return out

    def registration_message(self) -> Registration:
        """The Registration this PE sends now."""
        return Registration(self.pool_handle, PoolElement(
            self.identifier, self._home_id, self.registration_life_ms,
            self.user_transport, self._policy, self.asap_transport))

    # --------------------------------------------------------------- inputs
    def start(self, now: float) -> None:
        self._input(PeInput.START, now)

    def stop(self, now: float) -> None:
        """Deregister (if registered) and close.  Outcome: a
        :class:`Deregistered` event once the state is CLOSED."""
        self._input(PeInput.STOP, now)

    def registrar_connected(self, link: Any, now: float, server_id: int = 0) -> None:
        """The driver's hunt opened ``link`` to a registrar (``server_id`` if
        known from its announce).  If the core no longer needs one, the link
        comes back through :meth:`pop_closing`."""
        self._input(PeInput.CONNECTED, now, link, server_id)

    def link_lost(self, link: Any, now: float) -> None:
        """A registrar link closed.  Only the home link matters."""
        if link is not None and link == self._home_link and self._state in _LINKED:
            self._input(PeInput.LINK_LOST, now, link)

    def update_policy(self, policy: PoolPolicy, now: float) -> bool:
        """Use ``policy`` from now on; a registered PE re-registers at once.
        Returns False (and does nothing) if it equals the current policy."""
        if not isinstance(policy, PoolPolicy):
            raise LocalProtocolError(f"not a PoolPolicy: {policy!r}")
        if policy == self._policy:
            return False
        self._input(PeInput.POLICY_CHANGED, now, None, policy)
        return True

    def handle_timer(self, now: float) -> None:
        """Call at or after :meth:`next_deadline`; early calls do nothing."""
        if self._deadline is not None and now >= self._deadline:
            self._input(PeInput.TIMER, now)

    def receive(self, link: Any, message: Message, now: float, *,
                known_registrar: bool = False) -> None:
        """A decoded ASAP message arrived on ``link`` (home or not).

        ``known_registrar``: the peer of ``link`` is a registrar the PE knows
        (an address of an entry in its registrar table, or a link its own hunt
        opened).  Only then is a keep-alive with the H bit on a link other
        than the home link a takeover (unless ``accept_any_home``); otherwise
        it is refused (rule 7)."""
        home = link is not None and link == self._home_link and self._state in _LINKED
        if isinstance(message, EndpointKeepAlive):
            if message.pool_handle != self.pool_handle or (
                    message.identifier is not None and message.identifier != self.identifier):
                self._events.append(MessageIgnored(
                    f"keep-alive for {message.pool_handle!r}/"
                    f"{message.identifier if message.identifier is not None else '-'} "
                    f"from registrar 0x{message.server_id:08x}"))
                return
            if home:
                inp = PeInput.KEEP_ALIVE
            elif message.home:
                inp = PeInput.HOME_CLAIMED if known_registrar or self.accept_any_home \
                    else PeInput.FOREIGN_CLAIM
            else:
                inp = PeInput.KEEP_ALIVE_ELSEWHERE
        elif not home:
            inp = PeInput.STRAY_MESSAGE
        elif isinstance(message, RegistrationResponse):
            inp = PeInput.REGISTRATION_REFUSED if message.rejected \
                else PeInput.REGISTRATION_ACCEPTED
        elif isinstance(message, DeregistrationResponse):
            inp = PeInput.DEREGISTRATION_ACKED
        elif isinstance(message, AsapErrorMessage):
            inp = PeInput.ERROR_RECEIVED
        else:
            inp = PeInput.OTHER_MESSAGE
        self._input(inp, now, link, message)

    # ------------------------------------------------------------ machinery
    def _input(self, inp: PeInput, now: float, link: Any = None, message: Any = None) -> None:
        entry = TRANSITIONS.get((self._state, inp))
        if entry is None:
            self._protocol_error(inp, now, link, message)
            return
        action, nxt = entry
        handler: Callable[[float], None] = getattr(self, "_do_" + action)
        self._link, self._message = link, message
        self._previous_state = self._state
        try:
            self._state = nxt
            handler(now)
        finally:
            self._link = self._message = None
        if self._update_pending and self._state is PeState.REGISTERED:
            self._update_pending = False
            self._input(PeInput.POLICY_CHANGED, now, None, self._policy)

    def _protocol_error(self, inp: PeInput, now: float, link: Any, message: Any) -> None:
        where = f"{inp.value} in state {self._state.value}"
        if inp in LOCAL_INPUTS:
            raise LocalProtocolError(f"PE {self.identifier:#010x}: {where} is not allowed")
        detail = type(message).__name__ if message is not None else ""
        self._events.append(ProtocolViolated(self._state.value, inp.value, detail))
        if link is not None:
            self._close(link)
            if link == self._home_link and self._state in _LINKED:
                self._input(PeInput.LINK_LOST, now, link)

    def _close(self, link: Any) -> None:
        if link is not None and link not in self._closing:
            self._closing.append(link)

    def _send(self, message: Message, link: Any = None) -> None:
        self._outgoing.append((self._home_link if link is None else link, message))

    def _send_registration(self, now: float) -> None:
        self._send(self.registration_message())
        self._deadline = now + self.request_timeout

    def _drop_home(self, reason: str) -> None:
        self._close(self._home_link)
        self._home_link = None
        self._deadline = None
        self._update_pending = False
        self._events.append(RegistrarLost(reason))
        self._events.append(RegistrarHuntStarted())

    # -------------------------------------------------------------- actions
    def _do_begin_hunt(self, now: float) -> None:
        self._events.append(RegistrarHuntStarted())

    def _do_close_unstarted(self, now: float) -> None:
        self._deadline = None

    def _do_close_unregistered(self, now: float) -> None:
        self._deadline = None
        self._events.append(Deregistered(self.identifier, False))

    def _do_keep_policy(self, now: float) -> None:
        self._policy = self._message

    def _do_decline_link(self, now: float) -> None:
        self._close(self._link)

    def _do_send_registration(self, now: float) -> None:
        if self._previous_state is PeState.HUNTING:  # a new link from the hunt
            self._home_link = self._link
            self._home_id = self._message
        elif isinstance(self._message, PoolPolicy):  # a new policy while REFUSED
            self._policy = self._message
        self._send_registration(now)

    def _do_registered(self, now: float) -> None:
        self._deadline = now + self.registration_interval
        self._events.append(Registered(self.identifier, self._home_id, False))

    def _do_reregistered(self, now: float) -> None:
        self._deadline = now + self.registration_interval
        self._events.append(Registered(self.identifier, self._home_id, True))

    def _do_refused(self, now: float) -> None:
        msg = self._message
        cause, info = 0, b""
        if msg.error:
            cause, info = msg.error[0].code, msg.error[0].info
        self._update_pending = False
        self._deadline = now + self.retry_delay
        self._events.append(RegistrationRefused(cause, info))

    def _do_request_timed_out(self, now: float) -> None:
        self._drop_home(f"no response within {self.request_timeout:g} s")

    def _do_registrar_lost(self, now: float) -> None:
        self._drop_home("registrar link lost")

    def _do_registrar_failed(self, now: float) -> None:
        causes = ", ".join(_cause_name(c.code) for c in self._message.causes)
        self._drop_home(f"ASAP Error from the registrar ({causes})")

    def _do_ack_keep_alive(self, now: float) -> None:
        msg: EndpointKeepAlive = self._message
        self._send(EndpointKeepAliveAck(self.pool_handle, self.identifier), self._link)
        is_home = self._link == self._home_link
        if is_home:
            self._home_id = msg.server_id
        self._events.append(KeepAliveAnswered(msg.server_id, is_home))

    def _switch_home(self) -> EndpointKeepAlive:
        msg: EndpointKeepAlive = self._message
        previous = self._home_id
        self._close(self._home_link)
        self._home_link = self._link
        self._home_id = msg.server_id
        self._send(EndpointKeepAliveAck(self.pool_handle, self.identifier))
        self._events.append(KeepAliveAnswered(msg.server_id, True))
        self._events.append(HomeRegistrarChanged(msg.server_id, previous))
        return msg

    def _do_refuse_claim(self, now: float) -> None:
        # not acknowledged: the claimant must not believe it holds the PE
        self._close(self._link)
        self._events.append(HomeClaimRefused(self._message.server_id, self._link))

    def _do_adopt_home(self, now: float) -> None:
        self._switch_home()
        if self._previous_state is not PeState.REGISTERED:
            # the new home registrar holds the PE: re-register there on schedule
            self._deadline = now + self.registration_interval

    def _do_move_registration(self, now: float) -> None:
        # a registration was in flight on the old link: send it again on the new
        self._switch_home()
        self._send_registration(now)

    def _do_defer_update(self, now: float) -> None:
        self._policy = self._message
        self._update_pending = True

    def _do_send_update(self, now: float) -> None:
        if isinstance(self._message, PoolPolicy):
            self._policy = self._message
        self._send_registration(now)

    def _do_send_deregistration(self, now: float) -> None:
        self._update_pending = False
        self._send(Deregistration(self.pool_handle, self.identifier))
        self._deadline = now + self.request_timeout

    def _finish(self, acknowledged: bool) -> None:
        self._close(self._home_link)
        self._home_link = None
        self._deadline = None
        self._events.append(Deregistered(self.identifier, acknowledged))

    def _do_deregistered(self, now: float) -> None:
        self._finish(not self._message.error)

    def _do_deregistration_unconfirmed(self, now: float) -> None:
        self._finish(False)

    def _do_ignore(self, now: float) -> None:
        pass


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")


def _cause_name(code: int) -> str:
    name = getattr(code, "name", None)
    return name if name else f"0x{int(code):04x}"


# --------------------------------------------------------------------------
# policies

_POLICY_ALIASES = {
    "rr": PolicyType.ROUND_ROBIN, "wrr": PolicyType.WEIGHTED_ROUND_ROBIN,
    "rand": PolicyType.RANDOM, "random": PolicyType.RANDOM,
    "wrand": PolicyType.WEIGHTED_RANDOM, "pri": PolicyType.PRIORITY,
    "lu": PolicyType.LEAST_USED, "lud": PolicyType.LEAST_USED_DEGRADATION,
    "plu": PolicyType.PRIORITY_LEAST_USED, "rlu": PolicyType.RANDOMIZED_LEAST_USED,
    "rplu": PolicyType.RANDOMIZED_PRIORITY_LEAST_USED,
    "rlud": PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION,
    "plud": PolicyType.PRIORITY_LEAST_USED_DEGRADATION,
    "rplud": PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
    "wrand-dpf": PolicyType.WEIGHTED_RANDOM_DPF, "lu-dpf": PolicyType.LEAST_USED_DPF,
    "lud-dpf": PolicyType.LEAST_USED_DEGRADATION_DPF,
}


def policy_type_from_name(name: str | int) -> PolicyType:
    """A :class:`PolicyType` from its enum name (any case, ``-`` or ``_``),
    RSPLIB's short name (``rr``, ``lu``, ``wrand-dpf``...) or its number."""
    if isinstance(name, PolicyType):
        return name
    if isinstance(name, int) and not isinstance(name, bool):
        try:
            return PolicyType(name)
        except ValueError:
            raise ConfigError(f"unknown policy type 0x{name:08x}") from None
    if not isinstance(name, str):
        raise ConfigError(f"not a policy: {name!r}")
    key = name.strip().lower()
    if key in _POLICY_ALIASES:
        return _POLICY_ALIASES[key]
    enum_key = key.replace("-", "_").upper()
    try:
        return PolicyType[enum_key]
    except KeyError:
        pass
    try:
        return PolicyType(int(key, 0))
    except ValueError:
        raise ConfigError(f"unknown policy {name!r}; one of: "
                          + ", ".join(p.name.lower() for p in PolicyType)) from None


def make_policy(policy: str | int = PolicyType.ROUND_ROBIN, **values: int) -> PoolPolicy:
    """A :class:`PoolPolicy` with its values given by name, e.g.
    ``make_policy("least_used", load=load_from_percent(30))``.

    Names are those of ``constants.POLICY_VALUE_NAMES`` (``weight``, ``load``,
    ``load_degradation``, ``priority``, ``load_dpf``, ``weight_dpf``,
    ``distance``), raw 32-bit words; missing ones are 0, except ``weight``
    which defaults to 1.  A name the policy does not have is an error; None
    values are ignored.
    """
    ptype = policy_type_from_name(policy)
    names = POLICY_VALUE_NAMES.get(ptype, ())
    given = {k: v for k, v in values.items() if v is not None}
    extra = sorted(set(given) - set(names))
    if extra:
        raise ConfigError(f"policy {ptype.name} has no value(s) {', '.join(extra)} "
                          f"(it has: {', '.join(names) or 'none'})")
    words = []
    for name in names:
        value = given.get(name, 1 if name == "weight" else 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX32:
            raise ConfigError(f"{name} must be an integer in [0, 0xFFFFFFFF], not {value!r}")
        words.append(value)
    return PoolPolicy(ptype, words)


def policy_with(policy: PoolPolicy, **values: int) -> PoolPolicy:
    """``policy`` with some named values replaced (others kept)."""
    names = POLICY_VALUE_NAMES.get(policy.policy_type, ())
    current = dict(zip(names, policy.values))
    current.update({k: v for k, v in values.items() if v is not None})
    return make_policy(policy.policy_type, **current)


def load_from_fraction(fraction: float) -> int:
    """A load (or degradation, DPF) fraction in [0, 1] on the wire scale
    [0, 0xFFFFFFFF], rounded (digest 5.1, 12 #10: 0.3 -> 0x4CCCCCCC)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"a load fraction must be in [0, 1], not {fraction!r}")
    return min(MAX32, max(0, round(float(fraction) * MAX32)))


def load_from_percent(percent: float) -> int:
    """A load in percent (0-100) on the wire scale: ``30`` -> 0x4CCCCCCC."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) \
            or not 0.0 <= percent <= 100.0:
        raise ConfigError(f"a load percentage must be in [0, 100], not {percent!r}")
    return load_from_fraction(percent / 100.0)


def load_to_fraction(value: int) -> float:
    """The inverse of :func:`load_from_fraction`."""
    return value / MAX32
