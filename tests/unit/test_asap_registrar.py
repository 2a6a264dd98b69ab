"""The registrar's ASAP core (rserpool.protocol.asap_registrar) driven with
bytes and ``now``: no sockets, no sleeps.  Every test runs on the compiled
handlespace and on its pure twin."""

from __future__ import annotations

import random

import pytest

from conftest import implementations
from rserpool.config import RegistrarConfig
from rserpool.constants import MAX32, AsapType, ErrorCause, PolicyType as PT
from rserpool.handlespace import (TIMER_KEEP_ALIVE_TIMEOUT, TIMER_KEEP_ALIVE_TRANSMISSION)
from rserpool.protocol.asap_registrar import (
    MAX_ERROR_INFO, AsapRegistrar, DeregistrationRefused, PeerMisbehaved,
    PoolElementDeregistered, PoolElementExpired, PoolElementRegistered, PoolElementRemoved,
    PoolElementUpdated, RegistrationRefused, UnreachableReported)
from rserpool.wire import (
    AsapErrorMessage, Cause, Deregistration, DeregistrationResponse, EndpointKeepAlive,
    EndpointKeepAliveAck, EndpointUnreachable, HandleResolution, HandleResolutionResponse,
    PoolElement, PoolPolicy, Registration, RegistrationResponse, SctpTransport,
    ServerAnnounce, TcpTransport, UdpTransport, decode_message, encode_message)

RID = 0x11223344
A, B, C, D = 0xA, 0xB, 0xC, 0xD


@pytest.fixture(params=implementations("handlespace", "rserpool.handlespace._handlespace_py"))
def hsmod(request):
    return request.param


def make_core(hsmod, **config):
    cfg = RegistrarConfig(registrar_id=RID, **config)
    hs = hsmod.Handlespace(own_id=RID, seed=7, max_increment=cfg.max_increment,
                           max_bad_pe_reports=cfg.max_bad_pe_reports,
                           max_handle_length=cfg.max_handle_length)
    return AsapRegistrar(cfg, handlespace=hs)


def up(core, assoc, addresses=("10.0.0.1",), *, transport="tcp", port=40000, now=0.0):
    core.association_up(assoc, transport=transport, peer_addresses=addresses,
                        peer_port=port, now=now)


def element(ident, policy=PT.ROUND_ROBIN, values=(), *, addresses=("10.0.0.1",), port=7000,
            life=30000, kind=TcpTransport, use=0, asap=None):
    if kind in (SctpTransport, TcpTransport):
        user = kind(port, addresses, use)
    else:
        user = kind(port, addresses)
    return PoolElement(ident, 0, life, user, PoolPolicy(policy, values), asap)


def register(core, assoc, ident, handle=b"P", now=0.0, **kw):
    reply = core.receive(assoc, encode_message(Registration(handle, element(ident, **kw))), now)
    return decode_message(reply, "asap")


def resolve(core, handle=b"P", items=None, assoc="pu", now=0.0):
    reply = core.receive(assoc, encode_message(HandleResolution(handle, items)), now)
    return decode_message(reply, "asap")


def ids(response):
    return [pe.identifier for pe in response.pool_elements]


def causes(msg):
    return [int(c.code) for c in (msg.error if hasattr(msg, "error") else msg.causes) or ()]


def events_of(core, cls):
    return [e for e in core.pop_events() if isinstance(e, cls)]


# ---- registration -----------------------------------------------------------------


def test_registration_is_accepted_and_recorded(hsmod):
    core = make_core(hsmod)
    up(core, "pe1", ("10.0.0.1",), port=40001)
    resp = register(core, "pe1", A, addresses=("10.0.0.1",), port=7000)
    assert type(resp) is RegistrationResponse
    assert (resp.pool_handle, resp.identifier, resp.rejected, resp.error) == (b"P", A, False,
                                                                             None)
    entry = core.handlespace.get(b"P", A)
    assert entry.home_registrar == RID and entry.association == "pe1"
    assert entry.user_transport == TcpTransport(7000, ["10.0.0.1"], 0)
    # ASAP transport from the connection (no ASAP transport parameter given)
    assert entry.asap_transport == TcpTransport(40001, ["10.0.0.1"], 0)
    (event,) = core.pop_events()
    assert type(event) is PoolElementRegistered
    assert (event.pool_handle, event.identifier, event.association) == (b"P", A, "pe1")
    core.handlespace.check()


def test_reregistration_updates_policy_and_resets_keep_alive(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0)
    up(core, "pe1")
    register(core, "pe1", A, policy=PT.LEAST_USED, values=[10])
    core.pop_events()
    assert core.next_deadline() == 5.0
    resp = register(core, "pe1", A, now=3.0, policy=PT.LEAST_USED, values=[99])
    assert not resp.rejected
    (event,) = core.pop_events()
    assert type(event) is PoolElementUpdated and event.policy.load == 99
    assert core.handlespace.get(b"P", A).policy.load == 99
    assert core.next_deadline() == 8.0
    assert len(core.handlespace) == 1


def test_pe_identifier_zero_is_refused(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    resp = register(core, "pe1", 0)
    assert resp.rejected and causes(resp) == [ErrorCause.RSPLIB_INVALID_PE_IDENTIFIER]
    assert resp.identifier == 0 and len(core.handlespace) == 0
    (event,) = core.pop_events()
    assert type(event) is RegistrationRefused and event.cause == 0xF000


def test_user_addresses_are_filtered_to_peer_addresses(hsmod):
    core = make_core(hsmod)
    up(core, "sctp", ("10.0.0.1", "10.0.1.1", "fd00::1"), transport="sctp", port=5000)
    resp = register(core, "sctp", A, kind=SctpTransport,
                    addresses=("192.0.2.7", "10.0.1.1", "fd00::1", "10.0.0.1"))
    assert not resp.rejected
    entry = core.handlespace.get(b"P", A)
    assert entry.user_transport.addresses == ("10.0.1.1", "fd00::1", "10.0.0.1")
    # over SCTP the ASAP transport is the association: all peer addresses, its port
    assert entry.asap_transport == SctpTransport(5000, ["10.0.0.1", "10.0.1.1", "fd00::1"])


def test_wildcard_user_address_means_the_peer_addresses(hsmod):
    core = make_core(hsmod)
    up(core, "sctp", ("10.0.0.1", "10.0.1.1"), transport="sctp")
    register(core, "sctp", A, kind=SctpTransport, addresses=("0.0.0.0",))
    assert core.handlespace.get(b"P", A).user_transport.addresses == ("10.0.0.1", "10.0.1.1")
    # single-address kinds keep one
    register(core, "sctp", B, handle=b"Q", kind=TcpTransport, addresses=("::",))
    assert core.handlespace.get(b"Q", B).user_transport.addresses == ("10.0.0.1",)
    register(core, "sctp", C, handle=b"U", kind=UdpTransport, addresses=("10.0.1.1",))
    assert core.handlespace.get(b"U", C).user_transport.addresses == ("10.0.1.1",)


def test_ipv4_mapped_peer_address_matches(hsmod):
    core = make_core(hsmod)
    up(core, "pe1", ("::ffff:127.0.0.1",))
    assert not register(core, "pe1", A, addresses=("127.0.0.1",)).rejected


def test_no_usable_user_address_is_refused(hsmod):
    core = make_core(hsmod)
    up(core, "pe1", ("10.0.0.1",))
    resp = register(core, "pe1", A, addresses=("192.0.2.1",))
    assert resp.rejected and causes(resp) == [ErrorCause.RSPLIB_NO_USABLE_USER_ADDRESSES]
    assert (b"P", A) not in core.handlespace


def test_asap_transport_parameter_over_tcp_gives_the_port(hsmod):
    core = make_core(hsmod)
    up(core, "pe1", ("10.0.0.1",), port=40001)
    register(core, "pe1", A, asap=TcpTransport(3999, ["10.0.0.1"]))
    assert core.handlespace.get(b"P", A).asap_transport == TcpTransport(3999, ["10.0.0.1"])
    # over SCTP it is ignored: the association is the ASAP transport
    up(core, "pe2", ("10.0.0.2",), transport="sctp", port=41000)
    register(core, "pe2", B, addresses=("10.0.0.2",), asap=SctpTransport(3999, ["10.0.0.2"]))
    assert core.handlespace.get(b"P", B).asap_transport == SctpTransport(41000, ["10.0.0.2"])


@pytest.mark.parametrize("first, second, cause", [
    (dict(policy=PT.ROUND_ROBIN), dict(policy=PT.LEAST_USED, values=[1]),
     ErrorCause.POOLING_POLICY_INCONSISTENT),
    (dict(kind=TcpTransport), dict(kind=SctpTransport), ErrorCause.INCONSISTENT_TRANSPORT_TYPE),
    (dict(use=0), dict(use=1), ErrorCause.INCONSISTENT_DATA_CONTROL_CONFIGURATION),
])
def test_handlespace_inconsistencies_give_their_cause(hsmod, first, second, cause):
    core = make_core(hsmod)
    up(core, "pe1")
    assert not register(core, "pe1", A, **first).rejected
    before = core.handlespace.get(b"P", A)
    resp = register(core, "pe1", B, **second)
    assert resp.rejected and causes(resp) == [cause] and resp.identifier == B
    assert core.handlespace.get(b"P", A) == before and (b"P", B) not in core.handlespace
    core.handlespace.check()


def test_other_handlespace_refusals(hsmod):
    core = make_core(hsmod, max_handle_length=8)
    up(core, "pe1")
    resp = register(core, "pe1", A, handle=b"x" * 9)
    assert causes(resp) == [ErrorCause.RSPLIB_INVALID_POOL_HANDLE]
    resp = register(core, "pe1", A, life=-1)
    assert causes(resp) == [ErrorCause.INVALID_VALUES]
    resp = register(core, "pe1", A, policy=0x12345678)
    assert causes(resp) == [ErrorCause.RSPLIB_UNSUPPORTED_POLICY]
    assert not register(core, "pe1", A, handle=b"P").rejected
    resp = register(core, "pe1", A, handle=b"Q")        # same PE ID in another pool
    assert causes(resp) == [ErrorCause.NON_UNIQUE_PE_IDENTIFIER]
    assert len(core.handlespace) == 1
    refused = events_of(core, RegistrationRefused)
    assert [e.cause for e in refused] == [0xF004, 0x0003, 0x100B, 0x0004]


def test_resource_limit(hsmod):
    hs = hsmod.Handlespace(own_id=RID, max_elements=1)
    core = AsapRegistrar(RegistrarConfig(registrar_id=RID), handlespace=hs)
    up(core, "pe1")
    assert not register(core, "pe1", A).rejected
    assert causes(register(core, "pe1", B)) == [ErrorCause.LACK_OF_RESOURCES]


def test_reregistration_from_another_host_is_refused_while_owner_lives(hsmod):
    core = make_core(hsmod)
    up(core, "owner", ("10.0.0.1",))
    up(core, "thief", ("10.0.0.66",))
    register(core, "owner", A, addresses=("10.0.0.1",))
    resp = register(core, "thief", A, addresses=("10.0.0.66",))
    assert resp.rejected and causes(resp) == [
        ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS]
    entry = core.handlespace.get(b"P", A)
    assert entry.association == "owner" and entry.user_transport.addresses == ("10.0.0.1",)
    # the same host reconnecting may take it over
    up(core, "again", ("10.0.0.1",))
    assert not register(core, "again", A, addresses=("10.0.0.1",)).rejected
    assert core.handlespace.get(b"P", A).association == "again"
    assert core.pool_elements_of("owner") == [] and core.pool_elements_of("again") == [(b"P", A)]


def test_reregistration_when_the_recorded_association_is_gone(hsmod):
    core = make_core(hsmod)
    # an entry whose association the core does not know (e.g. learned elsewhere)
    core.handlespace.register(b"P", element(A, addresses=("10.0.0.1",)), 0.0,
                              association="ghost")
    up(core, "new", ("10.0.0.2",))
    assert not register(core, "new", A, addresses=("10.0.0.2",)).rejected
    assert core.handlespace.get(b"P", A).association == "new"


# ---- deregistration --------------------------------------------------------------


def test_deregistration_by_owner(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    register(core, "pe1", A)
    core.pop_events()
    reply = core.receive("pe1", encode_message(Deregistration(b"P", A)), 1.0)
    resp = decode_message(reply, "asap")
    assert type(resp) is DeregistrationResponse and resp.error is None
    assert (resp.pool_handle, resp.identifier) == (b"P", A)
    assert (b"P", A) not in core.handlespace and core.next_deadline() is None
    assert [type(e) for e in core.pop_events()] == [PoolElementDeregistered]


def test_deregistration_from_another_association_is_refused(hsmod):
    core = make_core(hsmod)
    up(core, "owner", ("10.0.0.1",))
    up(core, "other", ("10.0.0.1",))          # even from the same host
    register(core, "owner", A)
    core.pop_events()
    reply = core.receive("other", encode_message(Deregistration(b"P", A)), 1.0)
    resp = decode_message(reply, "asap")
    assert type(resp) is DeregistrationResponse
    assert causes(resp) == [ErrorCause.REJECTION_DUE_TO_SECURITY_CONSIDERATIONS]
    assert core.handlespace.get(b"P", A).association == "owner"
    (event,) = core.pop_events()
    assert type(event) is DeregistrationRefused and event.association == "other"


def test_deregistration_of_unknown_pe_answers_success(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    resp = decode_message(core.receive("pe1", encode_message(Deregistration(b"P", B)), 0.0),
                          "asap")
    assert resp.error is None and resp.identifier == B
    assert core.pop_events() == []


# ---- handle resolution ------------------------------------------------------------


def test_resolution_item_counts(hsmod):
    core = make_core(hsmod, max_hres_items=2)
    up(core, "pe1")
    for i in range(1, 131):
        register(core, "pe1", i)
    assert len(ids(resolve(core))) == 2                 # option absent: MaxHResItems
    assert len(ids(resolve(core, items=0))) == 2        # 0 means the default too
    assert len(ids(resolve(core, items=5))) == 5
    assert len(ids(resolve(core, items=MAX32))) == 128  # "as many as possible", capped
    assert len(ids(resolve(core, items=129))) == 128
    assert core.counters["resolutions"] == 5


def test_resolution_response_layout_and_round_robin_order(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    for i in (A, B, C, D):
        register(core, "pe1", i)
    first = resolve(core, items=3)
    assert type(first) is HandleResolutionResponse and first.error is None
    assert first.pool_handle == b"P" and first.policy == PoolPolicy(PT.ROUND_ROBIN, ())
    assert ids(first) == [A, B, C]
    assert ids(resolve(core, items=3)) == [B, C, D]
    assert first.pool_elements[0].home_registrar == RID
    assert first.pool_elements[0].asap_transport is None


def test_resolution_of_unknown_pool(hsmod):
    core = make_core(hsmod)
    resp = resolve(core, b"nothing")
    assert resp.pool_handle == b"nothing" and causes(resp) == [ErrorCause.UNKNOWN_POOL_HANDLE]
    assert resp.pool_elements == () and resp.policy is None


def test_resolution_of_a_pool_of_zero_weights(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    register(core, "pe1", A, policy=PT.WEIGHTED_RANDOM, values=[0])
    resp = resolve(core)
    assert resp.error is None and resp.pool_elements == ()
    assert resp.policy == PoolPolicy(PT.WEIGHTED_RANDOM, [0])


def test_resolution_needs_no_association_state(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    register(core, "pe1", A)
    assert ids(resolve(core, assoc="never-announced")) == [A]


def test_resolution_bytes_equal_the_handlespace_output(hsmod):
    core = make_core(hsmod)
    twin = hsmod.Handlespace(own_id=RID, seed=7)
    up(core, "pe1")
    for i in (A, B, C):
        register(core, "pe1", i, policy=PT.RANDOM)
        twin.register(b"P", core.handlespace.get(b"P", i).pool_element, 0.0,
                      home_registrar=RID)
    for n in (1, 2, 3, 1, 1):
        request = encode_message(HandleResolution(b"P", n))
        assert core.receive("pu", request, 0.0) == twin.resolve(b"P", n)


def test_oversize_response_is_cut_to_fit(hsmod):
    core = make_core(hsmod)
    addresses = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(64)]
    up(core, "pe1", addresses, transport="sctp")
    for i in range(1, 129):
        register(core, "pe1", i, kind=SctpTransport, addresses=addresses)
    reply = core.receive("pu", encode_message(HandleResolution(b"P", 128)), 0.0)
    assert len(reply) <= 65535
    resp = decode_message(reply, "asap")
    assert 0 < len(resp.pool_elements) < 128


# ---- keep-alive and registration life -----------------------------------------------


def keep_alives(core):
    out = []
    for assoc, data in core.pop_sends():
        msg = decode_message(data, "asap")
        assert type(msg) is EndpointKeepAlive
        out.append((assoc, msg))
    return out


def ack(core, assoc, ident, now, handle=b"P"):
    return core.receive(assoc, encode_message(EndpointKeepAliveAck(handle, ident)), now)


def test_keep_alive_cycle(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0, keep_alive_timeout=2.0)
    up(core, "pe1")
    register(core, "pe1", A)
    assert core.next_deadline() == 5.0
    core.handle_timer(4.999)
    assert core.pop_sends() == []
    core.handle_timer(5.0)
    ((assoc, msg),) = keep_alives(core)
    assert assoc == "pe1"
    assert (msg.server_id, msg.pool_handle, msg.identifier, msg.home) == (RID, b"P", A, False)
    assert core.handlespace.get(b"P", A).timer == TIMER_KEEP_ALIVE_TIMEOUT
    assert core.next_deadline() == 7.0
    assert ack(core, "pe1", A, 6.0) is None
    assert core.handlespace.get(b"P", A).timer == TIMER_KEEP_ALIVE_TRANSMISSION
    assert core.next_deadline() == 11.0
    core.handle_timer(11.0)
    assert len(keep_alives(core)) == 1
    assert core.counters["keep_alives_sent"] == 2 and core.counters["keep_alive_acks"] == 1


def test_keep_alive_timeout_removes_pe_and_aborts_lonely_association(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0, keep_alive_timeout=2.0)
    up(core, "pe1")
    register(core, "pe1", A)
    core.pop_events()
    core.handle_timer(5.0)
    keep_alives(core)
    core.handle_timer(6.9)
    assert (b"P", A) in core.handlespace
    core.handle_timer(7.0)
    assert (b"P", A) not in core.handlespace
    (event,) = core.pop_events()
    assert type(event) is PoolElementRemoved and event.reason == "keep-alive timeout"
    ((assoc, reason),) = core.pop_aborts()
    assert assoc == "pe1" and "keep-alive" in reason
    assert core.association("pe1") is None
    assert core.next_deadline() is None


def test_keep_alive_timeout_keeps_association_with_live_pes(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0, keep_alive_timeout=2.0)
    up(core, "pe1")
    register(core, "pe1", A)
    register(core, "pe1", B)
    core.handle_timer(5.0)
    assert len(keep_alives(core)) == 2
    ack(core, "pe1", B, 5.5)               # only B answers
    core.handle_timer(7.0)
    assert (b"P", A) not in core.handlespace and (b"P", B) in core.handlespace
    assert core.pop_aborts() == []
    assert core.association("pe1") is not None


def test_ack_from_another_association_does_not_count(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0, keep_alive_timeout=2.0)
    up(core, "pe1")
    up(core, "liar")
    register(core, "pe1", A)
    core.handle_timer(5.0)
    ack(core, "liar", A, 5.5)
    assert core.handlespace.get(b"P", A).timer == TIMER_KEEP_ALIVE_TIMEOUT
    core.handle_timer(7.0)
    assert (b"P", A) not in core.handlespace


def test_unsolicited_ack_does_not_postpone_keep_alive(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0)
    up(core, "pe1")
    register(core, "pe1", A)
    ack(core, "pe1", A, 4.0)
    assert core.next_deadline() == 5.0
    ack(core, "pe1", 0x999, 4.0)          # unknown PE: ignored
    assert core.pop_sends() == []


def test_registration_life_expiry_at_keep_alive(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0, keep_alive_timeout=1.0)
    up(core, "pe1")
    register(core, "pe1", A, life=12000)
    core.pop_events()
    for t in (5.0, 10.0):
        core.handle_timer(t)
        assert len(keep_alives(core)) == 1
        ack(core, "pe1", A, t)
    assert core.next_deadline() == 15.0
    core.handle_timer(15.0)                # 15 >= 0 + 12 s: expired, no keep-alive
    assert core.pop_sends() == []
    (event,) = core.pop_events()
    assert type(event) is PoolElementExpired and event.association == "pe1"
    assert (b"P", A) not in core.handlespace
    assert core.pop_aborts() == []         # the PE may re-register over it


def test_reregistration_renews_the_life(hsmod):
    core = make_core(hsmod, keep_alive_interval=5.0, keep_alive_timeout=1.0)
    up(core, "pe1")
    register(core, "pe1", A, life=7000)
    register(core, "pe1", A, life=7000, now=4.0)
    core.handle_timer(9.0)                 # 9 < 4 + 7: alive, keep-alive sent
    assert len(keep_alives(core)) == 1
    ack(core, "pe1", A, 9.5)
    core.handle_timer(14.5)                # 14.5 >= 11: expired
    assert (b"P", A) not in core.handlespace


def test_many_pes_keep_alive_in_deadline_order(hsmod):
    core = make_core(hsmod, keep_alive_interval=1.0, keep_alive_timeout=1.0)
    for n in range(20):
        up(core, f"a{n}", (f"10.0.0.{n + 1}",))
        register(core, f"a{n}", n + 1, addresses=(f"10.0.0.{n + 1}",), now=n * 0.01)
    core.handle_timer(1.5)
    sent = keep_alives(core)
    assert [m.identifier for _, m in sent] == list(range(1, 21))
    assert all(assoc == f"a{m.identifier - 1}" for assoc, m in sent)


# ---- association loss -------------------------------------------------------------------


def test_association_loss_removes_only_its_pes(hsmod):
    core = make_core(hsmod)
    up(core, "pe1", ("10.0.0.1",))
    up(core, "pe2", ("10.0.0.2",))
    register(core, "pe1", A, addresses=("10.0.0.1",))
    register(core, "pe1", B, handle=b"Q", addresses=("10.0.0.1",))
    register(core, "pe2", C, addresses=("10.0.0.2",))
    core.pop_events()
    core.association_down("pe1", 3.0)
    removed = core.pop_events()
    assert {(e.pool_handle, e.identifier) for e in removed} == {(b"P", A), (b"Q", B)}
    assert all(type(e) is PoolElementRemoved and e.reason == "association lost"
               for e in removed)
    assert ids(resolve(core)) == [C]
    core.association_down("pe1", 4.0)      # twice: nothing more
    core.association_down("never", 4.0)
    assert core.pop_events() == [] and core.associations == 1
    core.handlespace.check()


# ---- endpoint unreachable -----------------------------------------------------------------


def unreachable(core, assoc, ident, handle=b"P"):
    return core.receive(assoc, encode_message(EndpointUnreachable(handle, ident)), 1.0)


def test_unreachable_reports_from_distinct_reporters_remove_the_pe(hsmod):
    core = make_core(hsmod, max_bad_pe_reports=3)
    up(core, "pe1")
    register(core, "pe1", A)
    core.pop_events()
    for n, pu in enumerate(("pu1", "pu2"), 1):
        up(core, pu, (f"10.0.1.{n}",))
        assert unreachable(core, pu, A) is None
    assert (b"P", A) in core.handlespace
    up(core, "pu3", ("10.0.1.3",))
    unreachable(core, "pu3", A)
    assert (b"P", A) not in core.handlespace
    evs = core.pop_events()
    assert [e.reports for e in evs if type(e) is UnreachableReported] == [1, 2, 3]
    assert [e.reason for e in evs if type(e) is PoolElementRemoved] == ["unreachable"]


def test_unreachable_flood_from_one_pu_counts_once(hsmod):
    core = make_core(hsmod, max_bad_pe_reports=3)
    up(core, "pe1")
    up(core, "pu")
    register(core, "pe1", A)
    core.pop_events()
    for _ in range(1000):
        unreachable(core, "pu", A)
    assert (b"P", A) in core.handlespace
    assert core.handlespace.get(b"P", A).unreachability_reports == 1
    assert core.counters["unreachable_reports"] == 1
    assert core.counters["unreachable_ignored"] == 999
    assert len(core.pop_events()) == 1


def test_a_pu_reconnecting_from_the_same_host_is_still_one_reporter(hsmod):
    core = make_core(hsmod, max_bad_pe_reports=2)
    up(core, "pe1")
    register(core, "pe1", A)
    for n in range(5):                       # five associations, one host
        up(core, f"pu-{n}", ("10.0.1.9",), port=50000 + n)
        unreachable(core, f"pu-{n}", A)
        core.association_down(f"pu-{n}", 1.0)
    assert (b"P", A) in core.handlespace
    assert core.counters["unreachable_reports"] == 1
    up(core, "other", ("10.0.1.10",))        # a second host: the threshold is met
    unreachable(core, "other", A)
    assert (b"P", A) not in core.handlespace


def test_unreachable_counts_reset_on_reregistration(hsmod):
    core = make_core(hsmod, max_bad_pe_reports=2)
    up(core, "pe1")
    register(core, "pe1", A)
    up(core, "pu1", ("10.0.1.1",))
    up(core, "pu2", ("10.0.1.2",))
    unreachable(core, "pu1", A)
    register(core, "pe1", A, now=1.0)
    unreachable(core, "pu1", A)              # counts again after the update
    assert (b"P", A) in core.handlespace
    unreachable(core, "pu2", A)
    assert (b"P", A) not in core.handlespace


def test_unreachable_for_unknown_pe_is_ignored(hsmod):
    core = make_core(hsmod)
    up(core, "pu")
    assert unreachable(core, "pu", 0x1234) is None
    assert core.pop_events() == [] and core.counters["unreachable_ignored"] == 1


def test_max_bad_pe_reports_one(hsmod):
    core = make_core(hsmod, max_bad_pe_reports=1)
    up(core, "pe1")
    up(core, "pu")
    register(core, "pe1", A)
    unreachable(core, "pu", A)
    assert (b"P", A) not in core.handlespace


# ---- bad input ------------------------------------------------------------------------


def test_garbage_aborts_the_association_and_removes_its_pes(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    register(core, "pe1", A)
    core.pop_events()
    assert core.receive("pe1", b"\x01\x00\x00\x08garbage!", 1.0) is None
    ((assoc, reason),) = core.pop_aborts()
    assert assoc == "pe1" and "malformed" in reason
    evs = core.pop_events()
    assert any(type(e) is PeerMisbehaved and e.kind == "malformed" and e.aborted for e in evs)
    assert any(type(e) is PoolElementRemoved and e.reason == "association aborted"
               for e in evs)
    assert len(core.handlespace) == 0 and core.association("pe1") is None
    # later messages on it are ignored
    assert register_raw(core, "pe1", B) is None


def register_raw(core, assoc, ident):
    return core.receive(assoc, encode_message(Registration(b"P", element(ident))), 2.0)


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x05\x00\x00\x02", b"\x05\x00\x00\x08\x00\x09",
                                  b"\x05\x00\x00\x04\x00\x00", b"\x05\x00\x00\x0c\x00\x09\x00\x09"
                                  b"abcd"])
def test_malformed_resolution_aborts(hsmod, data):
    core = make_core(hsmod)
    up(core, "pu")
    assert core.receive("pu", data, 0.0) is None
    (abort,) = core.pop_aborts()
    assert abort[0] == "pu"


def test_unknown_message_type_gets_asap_error_0x0002(hsmod):
    core = make_core(hsmod)
    up(core, "x")
    data = b"\x42\x00\x00\x08abcd"
    reply = decode_message(core.receive("x", data, 0.0), "asap")
    assert type(reply) is AsapErrorMessage
    assert [(int(c.code), c.info) for c in reply.causes] == [(0x0002, data)]
    assert core.pop_aborts() == []


@pytest.mark.parametrize("msg", [
    RegistrationResponse(b"P", A), DeregistrationResponse(b"P", A),
    HandleResolutionResponse(b"P", PoolPolicy(PT.ROUND_ROBIN), ()),
    EndpointKeepAlive(1, b"P", A), ServerAnnounce(1, ()),
])
def test_messages_a_registrar_never_takes_get_asap_error_0x0002(hsmod, msg):
    core = make_core(hsmod)
    up(core, "x")
    data = encode_message(msg)
    reply = decode_message(core.receive("x", data, 0.0), "asap")
    assert [(int(c.code), c.info) for c in reply.causes] == [(0x0002, data)]
    assert core.association("x") is not None


def test_long_unknown_message_is_echoed_only_in_part(hsmod):
    core = make_core(hsmod)
    up(core, "x")
    data = b"\x42\x00" + (4000).to_bytes(2, "big") + bytes(3996)
    reply = decode_message(core.receive("x", data, 0.0), "asap")
    assert reply.causes[0].info == data[:MAX_ERROR_INFO]


def test_asap_error_is_never_answered(hsmod):
    core = make_core(hsmod)
    up(core, "x")
    data = encode_message(AsapErrorMessage([Cause(ErrorCause.UNKNOWN_POOL_HANDLE)]))
    assert core.receive("x", data, 0.0) is None
    assert core.pop_aborts() == []


def with_param(message: bytes, tlv: bytes) -> bytes:
    data = message + tlv
    return data[:2] + len(data).to_bytes(2, "big") + data[4:]


def test_unknown_parameter_stop_and_report_gets_0x0001(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    tlv = b"\x41\x23\x00\x08\xde\xad\xbe\xef"
    data = with_param(encode_message(Registration(b"P", element(A))), tlv)
    reply = decode_message(core.receive("pe1", data, 0.0), "asap")
    assert type(reply) is AsapErrorMessage
    assert [(int(c.code), c.info) for c in reply.causes] == [(0x0001, tlv)]
    assert len(core.handlespace) == 0 and core.pop_aborts() == []


def test_unknown_parameter_stop_silently_is_dropped(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    data = with_param(encode_message(HandleResolution(b"P")), b"\x01\x23\x00\x04")
    assert core.receive("pe1", data, 0.0) is None
    assert core.pop_aborts() == []


def test_unknown_parameter_skip_is_ignored(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    data = with_param(encode_message(Registration(b"P", element(A))), b"\x81\x23\x00\x04")
    assert not decode_message(core.receive("pe1", data, 0.0), "asap").rejected


def test_random_input_never_raises_nor_corrupts(hsmod):
    """Mutations of valid messages (and pure noise) from many associations:
    receive never raises, the handlespace stays consistent, no internal error."""
    rng = random.Random(4)
    core = make_core(hsmod, keep_alive_interval=1.0, keep_alive_timeout=1.0)
    seeds = [
        encode_message(Registration(b"P", element(A))),
        encode_message(Registration(b"P", element(B, kind=SctpTransport))),
        encode_message(Deregistration(b"P", A)),
        encode_message(HandleResolution(b"P", 3)),
        encode_message(EndpointKeepAliveAck(b"P", A)),
        encode_message(EndpointUnreachable(b"P", B)),
    ]
    now = 0.0
    for step in range(4000):
        assoc = f"a{rng.randrange(8)}"
        if core.association(assoc) is None:
            up(core, assoc, ("10.0.0.1",), now=now)
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(4)):
            kind = rng.randrange(3)
            if kind == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif kind == 1:
                data = data[:rng.randrange(len(data) + 1)]
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
        if rng.random() < 0.05:
            data = bytearray(rng.randbytes(rng.randrange(40)))
        reply = core.receive(assoc, bytes(data), now)
        if reply is not None:
            decode_message(reply, "asap")
        now += 0.01
        core.handle_timer(now)
        for a, _ in core.pop_aborts():
            core.association_down(a, now)
        core.pop_sends()
        core.pop_events()
        if step % 500 == 0:
            core.handlespace.check()
    core.handlespace.check()
    assert core.counters["internal_errors"] == 0


# ---- server announce ---------------------------------------------------------------------


def test_server_announce_payload(hsmod):
    core = make_core(hsmod)
    msg = decode_message(core.server_announce(), "asap")
    assert type(msg) is ServerAnnounce and msg.server_id == RID and msg.transports == ()
    core.set_local_endpoints([("tcp", ["127.0.0.1", "::1"], 3863),
                              ("sctp", ["10.0.0.1", "10.0.0.2"], 3863)])
    msg = decode_message(core.server_announce(), "asap")
    assert msg.transports == (SctpTransport(3863, ["10.0.0.1", "10.0.0.2"]),
                              TcpTransport(3863, ["127.0.0.1"]), TcpTransport(3863, ["::1"]))
    assert msg.TYPE == AsapType.SERVER_ANNOUNCE


def test_random_registrar_id_when_unset():
    core = AsapRegistrar(RegistrarConfig())
    assert 0 < core.registrar_id < MAX32
    assert core.handlespace.own_id == core.registrar_id


def test_statistics(hsmod):
    core = make_core(hsmod)
    up(core, "pe1")
    register(core, "pe1", A)
    resolve(core)
    stats = core.statistics()
    assert stats["pool_elements"] == 1 and stats["pools"] == 1
    assert stats["associations"] == 1 and stats["resolutions"] == 1
