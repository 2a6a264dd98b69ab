"""PoolElementCore: the PE registration state machine driven with ``now`` and
messages, no sockets and no sleeping."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.constants import MAX32, ErrorCause, PolicyType, TransportUse
from rserpool.errors import ConfigError, LocalProtocolError
from rserpool.protocol import asap_element as pe_mod
from rserpool.protocol.asap_element import (
    LOCAL_INPUTS, TRANSITIONS, Deregistered, HomeClaimRefused, HomeRegistrarChanged,
    KeepAliveAnswered,
    MessageIgnored, PeInput, PeState, PoolElementCore, ProtocolViolated, Registered,
    RegistrarHuntStarted, RegistrarLost, RegistrationRefused, load_from_fraction,
    load_from_percent, make_policy, policy_type_from_name, policy_with, random_identifier,
    transitions_dot)
from rserpool.wire import (AsapErrorMessage, Cause, Deregistration, DeregistrationResponse,
                           EndpointKeepAlive, EndpointKeepAliveAck, HandleResolutionResponse,
                           PoolPolicy, Registration, RegistrationResponse, SctpTransport,
                           TcpTransport, decode_message, encode_message)

HANDLE = b"EchoPool"
PE_ID = 0x0E0E0E01
USER = TcpTransport(4711, ["127.0.0.1"], TransportUse.DATA_PLUS_CONTROL)
ASAP = SctpTransport(4712, ["127.0.0.1"])
LU30 = make_policy("least_used", load=load_from_percent(30))


def new_core(**kw) -> PoolElementCore:
    kw.setdefault("identifier", PE_ID)
    kw.setdefault("registration_interval", 30.0)
    return PoolElementCore(HANDLE, kw.pop("policy", LU30), USER, **kw)


def accept(core: PoolElementCore, link="pr1", now=0.0) -> None:
    core.receive(link, RegistrationResponse(HANDLE, core.identifier), now)


def sent(core: PoolElementCore) -> list:
    """Outgoing messages, each checked to survive the codec unchanged."""
    out = core.pop_outgoing()
    for _, msg in out:
        assert decode_message(encode_message(msg), "asap") == msg
    return out


def in_state(state: PeState, now: float = 0.0) -> PoolElementCore:
    """A core driven through the public API into ``state``; its home link
    (if any) is "pr1"; outputs are drained."""
    core = new_core()
    path = {
        PeState.IDLE: [],
        PeState.HUNTING: ["start"],
        PeState.REGISTERING: ["start", "connect"],
        PeState.REGISTERED: ["start", "connect", "accept"],
        PeState.UPDATING: ["start", "connect", "accept", "timer"],
        PeState.REFUSED: ["start", "connect", "refuse"],
        PeState.DEREGISTERING: ["start", "connect", "accept", "stop"],
        PeState.CLOSED: ["start", "connect", "accept", "stop", "dereg_ack"],
    }[state]
    for step in path:
        if step == "start":
            core.start(now)
        elif step == "connect":
            core.registrar_connected("pr1", now)
        elif step == "accept":
            accept(core, now=now)
        elif step == "timer":
            core.handle_timer(core.next_deadline())
        elif step == "refuse":
            core.receive("pr1", RegistrationResponse(
                HANDLE, PE_ID, [Cause(ErrorCause.POOLING_POLICY_INCONSISTENT)]), now)
        elif step == "stop":
            core.stop(now)
        elif step == "dereg_ack":
            core.receive("pr1", DeregistrationResponse(HANDLE, PE_ID), now)
    assert core.state is state
    core.pop_outgoing(), core.pop_closing(), core.pop_events()
    return core


# --------------------------------------------------------------- basics

def test_identifier_is_random_in_range_unless_given():
    rng = random.Random(7)
    ids = {PoolElementCore(HANDLE, LU30, USER, rng=rng).identifier for _ in range(200)}
    assert len(ids) == 200 and all(1 <= i <= 0xFFFFFFFE for i in ids)
    assert random_identifier(random.Random(1)) == random_identifier(random.Random(1))
    assert new_core(identifier=99).identifier == 99
    for bad in (0, MAX32 + 1, -1, True, "5"):
        with pytest.raises(ConfigError):
            new_core(identifier=bad)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        new_core(registration_interval=0)
    with pytest.raises(ConfigError):
        new_core(request_timeout=-1)
    with pytest.raises(ConfigError):
        new_core(registration_interval=10 ** 6)  # 3e9 ms overflows int32
    with pytest.raises(ConfigError):
        PoolElementCore(b"", LU30, USER)
    with pytest.raises(ConfigError):
        PoolElementCore(HANDLE, "least_used", USER)


def test_registration_carries_policy_life_transports_and_home():
    core = new_core(registration_interval=3.5, asap_transport=ASAP)
    core.start(10.0)
    assert core.needs_registrar and core.pop_events() == [RegistrarHuntStarted()]
    core.registrar_connected("pr1", 10.0)
    [(link, msg)] = sent(core)
    assert link == "pr1" and isinstance(msg, Registration)
    assert msg.pool_handle == HANDLE
    pe = msg.pool_element
    assert (pe.identifier, pe.home_registrar, pe.registration_life) == (PE_ID, 0, 10500)
    assert pe.user_transport == USER and pe.asap_transport == ASAP
    assert pe.policy.policy_type == PolicyType.LEAST_USED and pe.policy.load == 0x4CCCCCCC
    assert core.next_deadline() == 13.0  # request timeout 3 s
    assert not core.registered


def test_str_pool_handle_is_utf8():
    core = PoolElementCore("Päd", LU30, USER, identifier=1)
    assert core.pool_handle == "Päd".encode()


# ------------------------------------------------------- registration life

def test_accept_then_periodic_reregistration_with_learned_home_id():
    core = in_state(PeState.REGISTERING, now=0.0)
    accept(core, now=1.0)
    assert core.registered and core.state is PeState.REGISTERED
    assert core.pop_events() == [Registered(PE_ID, 0, False)]
    assert core.next_deadline() == 31.0
    # keep-alives teach the server ID
    core.receive("pr1", EndpointKeepAlive(0xABCD, HANDLE, PE_ID), 5.0)
    assert sent(core) == [("pr1", EndpointKeepAliveAck(HANDLE, PE_ID))]
    assert core.pop_events() == [KeepAliveAnswered(0xABCD, True)]
    assert core.home_registrar == 0xABCD
    core.handle_timer(30.9)  # early: nothing
    assert sent(core) == [] and core.state is PeState.REGISTERED
    core.handle_timer(31.0)
    [(link, msg)] = sent(core)
    assert link == "pr1" and msg.pool_element.identifier == PE_ID
    assert msg.pool_element.home_registrar == 0xABCD
    assert core.state is PeState.UPDATING and core.registered
    assert core.next_deadline() == 34.0
    accept(core, now=31.5)
    assert core.pop_events() == [Registered(PE_ID, 0xABCD, True)]
    assert core.next_deadline() == 61.5


def test_keep_alives_over_several_intervals_are_all_acked():
    core = in_state(PeState.REGISTERED)
    now = 0.0
    for i in range(12):
        now += 5.0
        core.handle_timer(now)
        for link, msg in sent(core):
            assert isinstance(msg, Registration)
            accept(core, link, now)
        core.receive("pr1", EndpointKeepAlive(7, HANDLE, PE_ID if i % 2 else None), now)
        assert sent(core) == [("pr1", EndpointKeepAliveAck(HANDLE, PE_ID))]
    assert core.registered


def test_keep_alive_for_someone_else_is_ignored():
    core = in_state(PeState.REGISTERED)
    core.receive("pr1", EndpointKeepAlive(7, HANDLE, PE_ID + 1), 1.0)
    core.receive("pr1", EndpointKeepAlive(7, b"OtherPool", None), 1.0)
    assert sent(core) == [] and core.pop_closing() == []
    events = core.pop_events()
    assert len(events) == 2 and all(isinstance(e, MessageIgnored) for e in events)
    assert core.state is PeState.REGISTERED


def test_update_policy_reregisters_at_once_and_only_on_change():
    core = in_state(PeState.REGISTERED)
    assert core.update_policy(LU30, 2.0) is False
    assert sent(core) == []
    lu50 = policy_with(LU30, load=load_from_percent(50))
    assert core.update_policy(lu50, 2.0) is True
    [(link, msg)] = sent(core)
    assert msg.pool_element.policy.load == load_from_fraction(0.5)
    assert core.state is PeState.UPDATING
    # a further change while the update is in flight waits for its response
    lu70 = policy_with(LU30, load=load_from_percent(70))
    core.update_policy(lu70, 2.1)
    assert sent(core) == []
    accept(core, now=2.2)
    [(link, msg)] = sent(core)
    assert msg.pool_element.policy.load == load_from_percent(70)
    assert core.state is PeState.UPDATING
    accept(core, now=2.3)
    assert sent(core) == [] and core.state is PeState.REGISTERED


def test_policy_change_while_hunting_goes_into_the_next_registration():
    core = in_state(PeState.HUNTING)
    lu10 = policy_with(LU30, load=load_from_percent(10))
    core.update_policy(lu10, 1.0)
    assert sent(core) == []
    core.registrar_connected("pr2", 2.0)
    [(link, msg)] = sent(core)
    assert link == "pr2" and msg.pool_element.policy == lu10


def test_policy_change_while_registering_is_sent_after_the_response():
    core = in_state(PeState.REGISTERING)
    lu10 = policy_with(LU30, load=load_from_percent(10))
    core.update_policy(lu10, 1.0)
    assert sent(core) == []
    accept(core, now=1.1)
    [(_, msg)] = sent(core)
    assert msg.pool_element.policy == lu10 and core.state is PeState.UPDATING


# -------------------------------------------------------- losing a registrar

@pytest.mark.parametrize("state", [PeState.REGISTERING, PeState.UPDATING])
def test_request_timeout_drops_the_registrar_and_hunts(state):
    core = in_state(state)
    due = core.next_deadline()
    core.handle_timer(due - 0.01)
    assert core.state is state
    core.handle_timer(due)
    assert core.state is PeState.HUNTING and core.needs_registrar
    assert core.pop_closing() == ["pr1"]
    events = core.pop_events()
    assert isinstance(events[0], RegistrarLost) and "3 s" in events[0].reason
    assert events[1] == RegistrarHuntStarted()
    assert core.home_link is None and core.next_deadline() is None
    # the next registrar gets the same PE ID
    core.registrar_connected("pr2", 10.0)
    [(link, msg)] = sent(core)
    assert link == "pr2" and msg.pool_element.identifier == PE_ID


def test_lost_link_hunts_but_other_links_do_not_matter():
    core = in_state(PeState.REGISTERED)
    core.link_lost("somebody", 1.0)
    assert core.state is PeState.REGISTERED and core.pop_events() == []
    core.link_lost("pr1", 1.0)
    assert core.state is PeState.HUNTING
    assert [type(e) for e in core.pop_events()] == [RegistrarLost, RegistrarHuntStarted]


def test_asap_error_from_the_registrar_hunts():
    core = in_state(PeState.REGISTERED)
    core.receive("pr1", AsapErrorMessage([Cause(ErrorCause.UNRECOGNIZED_MESSAGE)]), 1.0)
    assert core.state is PeState.HUNTING and core.pop_closing() == ["pr1"]
    lost = core.pop_events()[0]
    assert isinstance(lost, RegistrarLost) and "UNRECOGNIZED_MESSAGE" in lost.reason


def test_unexpected_message_type_is_a_protocol_error_and_hunts():
    core = in_state(PeState.REGISTERED)
    core.receive("pr1", HandleResolutionResponse(HANDLE, LU30), 1.0)
    assert core.state is PeState.HUNTING and core.pop_closing() == ["pr1"]
    events = core.pop_events()
    assert events[0] == ProtocolViolated("registered", "other_message",
                                         "HandleResolutionResponse")
    assert isinstance(events[1], RegistrarLost)


def test_response_on_a_foreign_link_only_closes_that_link():
    core = in_state(PeState.REGISTERED)
    core.receive("stranger", RegistrationResponse(HANDLE, PE_ID), 1.0)
    assert core.state is PeState.REGISTERED and core.home_link == "pr1"
    assert core.pop_closing() == ["stranger"]
    assert core.pop_events() == [ProtocolViolated("registered", "stray_message",
                                                  "RegistrationResponse")]


# ----------------------------------------------------------------- refusal

def test_refusal_then_retry_after_delay_or_on_policy_change():
    core = in_state(PeState.REGISTERING)
    core.receive("pr1", RegistrationResponse(
        HANDLE, PE_ID, [Cause(ErrorCause.POOLING_POLICY_INCONSISTENT)]), 1.0)
    assert core.state is PeState.REFUSED and not core.registered
    assert core.pop_events() == [RegistrationRefused(ErrorCause.POOLING_POLICY_INCONSISTENT)]
    assert core.next_deadline() == 31.0
    core.handle_timer(31.0)
    [(link, msg)] = sent(core)
    assert link == "pr1" and isinstance(msg, Registration)
    core.receive("pr1", RegistrationResponse(HANDLE, PE_ID, rejected=True), 32.0)
    assert core.pop_events() == [RegistrationRefused(0)]
    rr = make_policy("round_robin")
    core.update_policy(rr, 33.0)
    [(link, msg)] = sent(core)
    assert msg.pool_element.policy == rr and core.state is PeState.REGISTERING
    accept(core, now=33.5)
    assert core.pop_events() == [Registered(PE_ID, 0, False)]


# ------------------------------------------------------------- the H bit

def test_h_bit_on_a_new_link_moves_home():
    core = in_state(PeState.REGISTERED)
    core.receive("pr1", EndpointKeepAlive(0x11, HANDLE, PE_ID), 1.0)
    sent(core), core.pop_events()
    deadline = core.next_deadline()
    core.receive("pr2", EndpointKeepAlive(0x22, HANDLE, PE_ID, home=True), 2.0,
                 known_registrar=True)
    assert sent(core) == [("pr2", EndpointKeepAliveAck(HANDLE, PE_ID))]
    assert core.pop_closing() == ["pr1"]
    assert core.pop_events() == [KeepAliveAnswered(0x22, True),
                                 HomeRegistrarChanged(0x22, 0x11)]
    assert core.home_link == "pr2" and core.home_registrar == 0x22
    assert core.state is PeState.REGISTERED and core.next_deadline() == deadline
    # the old link's loss no longer matters; the next re-registration goes to pr2
    core.link_lost("pr1", 3.0)
    assert core.state is PeState.REGISTERED
    core.handle_timer(deadline)
    [(link, msg)] = sent(core)
    assert link == "pr2" and msg.pool_element.home_registrar == 0x22


def test_h_bit_on_the_home_link_is_only_acked():
    core = in_state(PeState.REGISTERED)
    core.receive("pr1", EndpointKeepAlive(0x11, HANDLE, None, home=True), 1.0)
    assert sent(core) == [("pr1", EndpointKeepAliveAck(HANDLE, PE_ID))]
    assert core.pop_closing() == [] and core.home_link == "pr1"
    assert core.pop_events() == [KeepAliveAnswered(0x11, True)]


def test_keep_alive_without_h_on_another_link_is_acked_there_without_moving():
    core = in_state(PeState.REGISTERED)
    core.receive("pr2", EndpointKeepAlive(0x22, HANDLE, PE_ID), 1.0)
    assert sent(core) == [("pr2", EndpointKeepAliveAck(HANDLE, PE_ID))]
    assert core.home_link == "pr1" and core.pop_closing() == []
    assert core.pop_events() == [KeepAliveAnswered(0x22, False)]


def test_h_bit_while_hunting_makes_the_pe_registered():
    core = in_state(PeState.HUNTING)
    core.receive("pr9", EndpointKeepAlive(0x99, HANDLE, PE_ID, home=True), 4.0,
                 known_registrar=True)
    assert core.state is PeState.REGISTERED and core.registered and not core.needs_registrar
    assert core.home_link == "pr9" and core.next_deadline() == 34.0
    assert core.pop_events()[-1] == HomeRegistrarChanged(0x99, 0)
    # a registrar the hunt found meanwhile is not needed any more
    core.registrar_connected("late", 5.0)
    assert core.pop_closing() == ["late"] and core.home_link == "pr9"


def test_h_bit_while_registering_sends_the_registration_to_the_new_home():
    core = in_state(PeState.REGISTERING)
    core.receive("pr2", EndpointKeepAlive(0x22, HANDLE, PE_ID, home=True), 1.0,
                 known_registrar=True)
    out = sent(core)
    assert out[0] == ("pr2", EndpointKeepAliveAck(HANDLE, PE_ID))
    assert out[1][0] == "pr2" and isinstance(out[1][1], Registration)
    assert out[1][1].pool_element.home_registrar == 0x22
    assert core.pop_closing() == ["pr1"] and core.next_deadline() == 4.0
    accept(core, "pr2", 1.5)
    assert core.registered


# ------------------------------------------- home claims from strangers (rule 7)

def test_h_bit_from_an_unknown_peer_is_refused_without_an_ack():
    core = in_state(PeState.REGISTERED)
    core.receive("pr1", EndpointKeepAlive(0x11, HANDLE, PE_ID), 1.0)
    sent(core), core.pop_events()
    deadline = core.next_deadline()
    core.receive("evil", EndpointKeepAlive(0x66, HANDLE, PE_ID, home=True), 2.0)
    assert sent(core) == []                        # no ack: the claimant gets nothing
    assert core.pop_closing() == ["evil"]          # its link is closed, not the home link
    assert core.pop_events() == [HomeClaimRefused(0x66, "evil")]
    assert core.home_link == "pr1" and core.home_registrar == 0x11
    assert core.state is PeState.REGISTERED and core.next_deadline() == deadline
    # the RFC form (no PE ID) is refused the same way
    core.receive("evil2", EndpointKeepAlive(0x66, HANDLE, None, home=True), 2.5)
    assert sent(core) == [] and core.pop_closing() == ["evil2"]
    # the home registrar still works on the home link
    core.receive("pr1", EndpointKeepAlive(0x11, HANDLE, PE_ID, home=True), 3.0)
    assert sent(core) == [("pr1", EndpointKeepAliveAck(HANDLE, PE_ID))]


@pytest.mark.parametrize("state", [PeState.HUNTING, PeState.REGISTERING, PeState.UPDATING,
                                   PeState.REFUSED, PeState.DEREGISTERING],
                         ids=lambda s: s.name)
def test_h_bit_from_an_unknown_peer_changes_nothing_in_any_state(state):
    core = in_state(state)
    home, deadline = core.home_link, core.next_deadline()
    core.receive("evil", EndpointKeepAlive(0x66, HANDLE, PE_ID, home=True), 1.0)
    assert core.state is state and core.home_link == home
    assert core.next_deadline() == deadline and sent(core) == []
    assert core.pop_closing() == ["evil"]
    assert core.pop_events() == [HomeClaimRefused(0x66, "evil")]


def test_a_claim_for_another_pe_is_ignored_before_the_trust_check():
    core = in_state(PeState.REGISTERED)
    core.receive("evil", EndpointKeepAlive(0x66, b"OtherPool", PE_ID, home=True), 1.0)
    [ev] = core.pop_events()
    assert isinstance(ev, MessageIgnored) and core.pop_closing() == []


def test_accept_any_home_follows_any_claim_like_rsplib():
    core = new_core(accept_any_home=True)
    core.start(0.0)
    core.registrar_connected("pr1", 0.0)
    accept(core, now=0.5)
    sent(core), core.pop_events()
    core.receive("anyone", EndpointKeepAlive(0x66, HANDLE, PE_ID, home=True), 1.0)
    assert sent(core) == [("anyone", EndpointKeepAliveAck(HANDLE, PE_ID))]
    assert core.pop_closing() == ["pr1"] and core.home_link == "anyone"
    assert core.pop_events()[-1] == HomeRegistrarChanged(0x66, 0)
    assert new_core().accept_any_home is False


# ------------------------------------------------------------- shutdown

def test_stop_deregisters_and_closes():
    core = in_state(PeState.REGISTERED)
    core.stop(5.0)
    assert sent(core) == [("pr1", Deregistration(HANDLE, PE_ID))]
    assert core.state is PeState.DEREGISTERING and core.next_deadline() == 8.0
    core.stop(5.1)  # a second stop changes nothing
    assert sent(core) == []
    core.receive("pr1", DeregistrationResponse(HANDLE, PE_ID), 5.2)
    assert core.closed and core.pop_closing() == ["pr1"]
    assert core.pop_events() == [Deregistered(PE_ID, True)]
    assert core.next_deadline() is None


def test_deregistration_timeout_or_loss_still_closes():
    core = in_state(PeState.DEREGISTERING)
    core.handle_timer(core.next_deadline())
    assert core.closed and core.pop_events() == [Deregistered(PE_ID, False)]
    core = in_state(PeState.DEREGISTERING)
    core.link_lost("pr1", 1.0)
    assert core.closed and core.pop_events() == [Deregistered(PE_ID, False)]


def test_stop_while_registering_ignores_the_late_registration_response():
    core = in_state(PeState.REGISTERING)
    core.stop(1.0)
    assert [type(m) for _, m in sent(core)] == [Deregistration]
    accept(core, now=1.1)
    assert core.state is PeState.DEREGISTERING and core.pop_events() == []
    core.receive("pr1", DeregistrationResponse(HANDLE, PE_ID), 1.2)
    assert core.closed


def test_stop_without_registrar_sends_nothing():
    core = in_state(PeState.HUNTING)
    core.stop(1.0)
    assert core.closed and sent(core) == []
    assert core.pop_events() == [Deregistered(PE_ID, False)]
    core = in_state(PeState.IDLE)
    core.stop(1.0)
    assert core.closed and core.pop_events() == []


def test_local_misuse_raises():
    core = in_state(PeState.REGISTERED)
    with pytest.raises(LocalProtocolError):
        core.start(1.0)
    core = in_state(PeState.CLOSED)
    with pytest.raises(LocalProtocolError):
        core.stop(1.0)
    with pytest.raises(LocalProtocolError):
        core.update_policy(make_policy("rr"), 1.0)
    with pytest.raises(LocalProtocolError):
        in_state(PeState.REGISTERED).update_policy("lu", 1.0)


# ------------------------------------------------ table completeness

_LINK_NUMBERS = itertools.count()


def _feed(core: PoolElementCore, inp: PeInput, now: float = 1.0) -> PeInput | None:
    """Feed ``inp`` through the public API; returns the input the core saw
    (a message on a non-home link is a stray message), or None when the
    public API cannot produce it in this state (no deadline, no home link)."""
    home = core.home_link
    link = home if home is not None else "pr1"
    if inp is PeInput.START:
        core.start(now)
    elif inp is PeInput.STOP:
        core.stop(now)
    elif inp is PeInput.CONNECTED:
        core.registrar_connected(f"new{next(_LINK_NUMBERS)}", now)
    elif inp is PeInput.POLICY_CHANGED:
        core.update_policy(make_policy("least_used", load=12345), now)
    elif inp is PeInput.TIMER:
        if core.next_deadline() is None:
            return None
        core.handle_timer(core.next_deadline())
    elif inp is PeInput.LINK_LOST:
        if home is None:
            return None
        core.link_lost(home, now)
    elif inp is PeInput.KEEP_ALIVE:
        if home is None:
            return None
        core.receive(home, EndpointKeepAlive(1, HANDLE, PE_ID), now)
    elif inp is PeInput.KEEP_ALIVE_ELSEWHERE:
        core.receive("other", EndpointKeepAlive(2, HANDLE, PE_ID), now)
    elif inp is PeInput.HOME_CLAIMED:
        core.receive("other", EndpointKeepAlive(2, HANDLE, PE_ID, home=True), now,
                     known_registrar=True)
    elif inp is PeInput.FOREIGN_CLAIM:
        core.receive("stranger", EndpointKeepAlive(3, HANDLE, PE_ID, home=True), now)
    elif inp is PeInput.STRAY_MESSAGE:
        core.receive("other", RegistrationResponse(HANDLE, PE_ID), now)
    else:
        msg = {
            PeInput.REGISTRATION_ACCEPTED: RegistrationResponse(HANDLE, PE_ID),
            PeInput.REGISTRATION_REFUSED: RegistrationResponse(HANDLE, PE_ID, rejected=True),
            PeInput.DEREGISTRATION_ACKED: DeregistrationResponse(HANDLE, PE_ID),
            PeInput.ERROR_RECEIVED: AsapErrorMessage([Cause(1)]),
            PeInput.OTHER_MESSAGE: HandleResolutionResponse(HANDLE, LU30),
        }[inp]
        core.receive(link, msg, now)
        if home is None:
            return PeInput.STRAY_MESSAGE
    return inp


@pytest.mark.parametrize("state", list(PeState), ids=lambda s: s.name)
@pytest.mark.parametrize("inp", list(PeInput), ids=lambda i: i.name)
def test_every_state_input_pair_is_a_transition_or_a_protocol_error(state, inp):
    core = in_state(state)
    entry = TRANSITIONS.get((state, inp))
    if entry is None and inp in LOCAL_INPUTS:
        if inp is PeInput.TIMER and core.next_deadline() is None:
            core.handle_timer(1e9)  # no deadline: the timer input cannot occur
            assert core.state is state
            with pytest.raises(LocalProtocolError):
                core._input(inp, 1.0)
            return
        with pytest.raises(LocalProtocolError):
            _feed(core, inp)
        assert core.state is state
        return
    seen = _feed(core, inp)
    if seen is None:  # cannot occur in this state through the API
        assert entry is None and core.state is state
        return
    entry = TRANSITIONS.get((state, seen))
    if entry is not None:
        action, nxt = entry
        assert hasattr(core, "_do_" + action)
        assert core.state is nxt or (nxt is PeState.REGISTERED and core.state is PeState.UPDATING)
        assert not any(isinstance(e, ProtocolViolated) for e in core.pop_events())
    else:
        events = core.pop_events()
        assert isinstance(events[0], ProtocolViolated) and events[0].input == seen.value
        assert events[0].state == state.value
        assert core.pop_closing()  # the offending link is closed


def test_table_only_names_existing_actions_and_reachable_inputs():
    for (state, inp), (action, nxt) in TRANSITIONS.items():
        assert callable(getattr(PoolElementCore, "_do_" + action)), action
    # inputs that are never valid anywhere exist only to be protocol errors
    used = {inp for _, inp in TRANSITIONS}
    assert set(PeInput) - used == {PeInput.OTHER_MESSAGE, PeInput.STRAY_MESSAGE}
    assert "REGISTERED -> UPDATING" in transitions_dot()


_ACTIONS = st.sampled_from(list(PeInput))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ACTIONS, st.floats(0.0, 40.0)), max_size=40))
def test_random_input_sequences_keep_the_invariants(steps):
    core = new_core()
    now = 0.0
    for inp, dt in steps:
        now += dt
        try:
            _feed(core, inp, now)
        except LocalProtocolError:
            assert inp in LOCAL_INPUTS
        state = core.state
        linked = state in (PeState.REGISTERING, PeState.REGISTERED, PeState.UPDATING,
                           PeState.REFUSED, PeState.DEREGISTERING)
        assert (core.home_link is not None) == linked
        assert (core.next_deadline() is not None) == linked
        assert core.needs_registrar == (state is PeState.HUNTING)
        for link, msg in sent(core):
            assert link is not None
            if isinstance(msg, Registration):
                assert msg.pool_element.identifier == PE_ID
        closing = core.pop_closing()
        assert core.home_link not in closing or core.home_link is None
        core.pop_events()


# ------------------------------------------------------------- policies

def test_policy_helpers():
    assert load_from_percent(30) == 0x4CCCCCCC  # digest 12 #10
    assert load_from_fraction(0.0) == 0 and load_from_fraction(1.0) == MAX32
    assert load_from_percent(50) == round(MAX32 / 2)
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ConfigError):
            load_from_fraction(bad)
    with pytest.raises(ConfigError):
        load_from_percent(101)
    assert policy_type_from_name("rr") is PolicyType.ROUND_ROBIN
    assert policy_type_from_name("Least-Used") is PolicyType.LEAST_USED
    assert policy_type_from_name("0x40000002") is PolicyType.LEAST_USED_DEGRADATION
    assert policy_type_from_name(5) is PolicyType.PRIORITY
    with pytest.raises(ConfigError):
        policy_type_from_name("fastest")
    assert make_policy("wrr") == PoolPolicy(PolicyType.WEIGHTED_ROUND_ROBIN, [1])
    assert make_policy("lud", load=5, load_degradation=6).values == (5, 6)
    assert make_policy("priority", priority=3).priority == 3
    with pytest.raises(ConfigError):
        make_policy("rr", weight=3)
    with pytest.raises(ConfigError):
        make_policy("wrr", weight=MAX32 + 1)
    p = policy_with(make_policy("lud", load=5, load_degradation=6), load=9)
    assert p.values == (9, 6)
    assert pe_mod.load_to_fraction(MAX32) == 1.0
