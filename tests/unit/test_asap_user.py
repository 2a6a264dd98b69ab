"""Pool user core (rserpool.protocol.asap_user): the PU cache (lifetime driven
by ``now``, selection by the pool's policy through the cache, removal of
unreachable PEs) and the session failover state machine (every (state,
input) pair of its table either transitions or is a protocol error; the
failover sequence of shared/spec/RSERPOOL.md 6.16)."""

from __future__ import annotations

import itertools
import json

import pytest

from rserpool.constants import ErrorCause, MAX32, PolicyType as PT, TransportUse
from rserpool.errors import LocalProtocolError, OperationError
from rserpool.handlespace import Handlespace
from rserpool.protocol import asap_user as au
from rserpool.protocol.asap_user import (
    SESSION_TRANSITIONS, BusinessCardReceived, CloseChannel, Connect, CookieReceived,
    DataReceived, FailoverCompleted, FailoverStarted, MessageIgnored, PoolElementInfo,
    PoolUserCache, ReportUnreachable, Resolve, RetryScheduled, SendControl, SendData,
    SessionClosed, SessionConnected, SessionCore, SessionFailed, SessionInput as I,
    SessionState as S)
from rserpool.wire import (BusinessCard, Cause, Cookie, CookieEcho, EndpointKeepAlive,
                           HandleResolutionResponse, PoolElement, PoolPolicy,
                           SctpTransport, TcpTransport)

A, B, C, D = 0xA, 0xB, 0xC, 0xD
POOL = b"EchoPool"


def pe(ident, ptype=PT.ROUND_ROBIN, values=(), *, port=7000, kind=TcpTransport,
       use=TransportUse.DATA_PLUS_CONTROL):
    return PoolElement(ident, 0x1234, 30000,
                       kind(port + ident, [f"10.0.0.{ident & 0xFF}"], use),
                       PoolPolicy(ptype, values))


def response(*elements, handle=POOL):
    policy = elements[0].policy if elements else PoolPolicy(PT.ROUND_ROBIN)
    return HandleResolutionResponse(handle, policy, elements)


def ids(infos):
    return [i.identifier for i in infos]


def info(ident, handle=POOL, **kw):
    return PoolElementInfo.from_pool_element(handle, pe(ident, **kw))


# ---------------------------------------------------------------------------
# PoolElementInfo


def test_element_info_fields_and_json():
    e = PoolElement(0x01020304, 0xAABBCCDD, 90000,
                    SctpTransport(5000, ["10.0.0.1", "10.0.1.1"],
                                  TransportUse.DATA_PLUS_CONTROL),
                    PoolPolicy(PT.LEAST_USED_DEGRADATION, [MAX32 // 2, 0x100]))
    i = PoolElementInfo.from_pool_element(POOL, e)
    assert (i.identifier, i.transport, i.addresses, i.port) == (
        0x01020304, "sctp", ("10.0.0.1", "10.0.1.1"), 5000)
    assert (i.policy, i.load, i.load_degradation, i.weight, i.priority) == (
        "LEAST_USED_DEGRADATION", MAX32 // 2, 0x100, None, None)
    assert i.has_control_channel and i.element == e
    assert 49.99 < i.load_percent < 50.01
    d = json.loads(json.dumps(i.to_dict()))
    assert d["identifier_hex"] == "0x01020304"
    assert d["policy_values"] == {"load": MAX32 // 2, "load_degradation": 0x100}
    assert d["pool_handle"] == "EchoPool" and d["home_registrar"] == 0xAABBCCDD
    wrr = PoolElementInfo.from_pool_element(b"\xff", pe(A, PT.WEIGHTED_ROUND_ROBIN, [7]))
    assert wrr.weight == 7 and wrr.load is None and wrr.load_percent is None
    assert wrr.to_dict()["pool_handle"] == "ff"
    assert not info(A, use=TransportUse.DATA_ONLY).has_control_channel


# ---------------------------------------------------------------------------
# PoolUserCache: lifetime


def test_cache_lifetime_follows_now():
    cache = PoolUserCache(5.0)
    assert cache.lookup(POOL, 1, 0.0) is None
    assert ids(cache.store(response(pe(A), pe(B)), 1, 0.0)) == [A]
    assert cache.next_deadline() == 5.0
    assert ids(cache.lookup(POOL, 1, 4.999)) == [B]
    assert cache.lookup(POOL, 1, 5.0) is None          # expired at the deadline
    assert cache.pool_size(POOL) == 0 and (POOL, A) not in cache
    assert (cache.hits, cache.misses) == (1, 2)


def test_a_later_store_refreshes_the_lifetime():
    cache = PoolUserCache(2.0)
    cache.store(response(pe(A)), 1, 0.0)
    cache.store(response(pe(A), pe(B)), 1, 1.5)
    assert sorted(ids(cache.lookup(POOL, None, 3.0))) == [A, B]
    assert cache.lookup(POOL, None, 3.5) is None


def test_without_caching_every_lookup_misses_and_the_registrar_order_is_kept():
    cache = PoolUserCache(0)
    got = cache.store(response(pe(C), pe(A), pe(B)), None, 0.0)
    assert ids(got) == [C, A, B]
    assert ids(cache.store(response(pe(C), pe(A), pe(B)), 2, 0.0)) == [C, A]
    assert cache.lookup(POOL, 1, 0.0) is None
    assert cache.pool_size(POOL) == 0


def test_request_items_follows_the_cache_setting():
    assert PoolUserCache(0).request_items(2) == 2
    assert PoolUserCache(0).request_items(None) is None
    assert PoolUserCache(10).request_items(2) is None  # learn the registrar's default count


@pytest.mark.parametrize("bad", [-1, float("nan"), True, "5"])
def test_bad_lifetime(bad):
    with pytest.raises(ValueError):
        PoolUserCache(bad)


# ---------------------------------------------------------------------------
# PoolUserCache: selection by the pool's policy


def test_round_robin_through_the_cache_advances_every_selected_entry():
    cache = PoolUserCache(60)
    assert ids(cache.store(response(pe(A), pe(B), pe(C), pe(D)), 2, 0.0)) == [A, B]
    # a registrar moves by one (B, C); the PU cache advances both (digest 5.6)
    assert ids(cache.lookup(POOL, 2, 1.0)) == [C, D]
    assert [ids(cache.lookup(POOL, 1, 1.0))[0] for _ in range(5)] == [A, B, C, D, A]


def test_least_used_through_the_cache():
    loads = {A: 30, B: 10, C: 20}
    cache = PoolUserCache(60)
    got = cache.store(response(*(pe(i, PT.LEAST_USED, [l]) for i, l in loads.items())),
                      None, 0.0)
    assert ids(got) == [B, C, A]
    assert [ids(cache.lookup(POOL, 1, 0.0))[0] for _ in range(3)] == [B, B, B]
    cache.remove(POOL, B)
    assert ids(cache.lookup(POOL, 1, 0.0)) == [C]


def test_priority_and_weighted_round_robin_through_the_cache():
    cache = PoolUserCache(60)
    cache.store(response(pe(A, PT.PRIORITY, [1]), pe(B, PT.PRIORITY, [9]),
                         pe(C, PT.PRIORITY, [9])), 1, 0.0)
    assert [ids(cache.lookup(POOL, 1, 0.0))[0] for _ in range(4)] == [C, B, C, B]
    wrr = PoolUserCache(60)
    wrr.store(response(pe(A, PT.WEIGHTED_ROUND_ROBIN, [2]),
                       pe(B, PT.WEIGHTED_ROUND_ROBIN, [1]), handle=b"W"), 0, 0.0)
    order = [ids(wrr.lookup(b"W", 1, 0.0))[0] for _ in range(6)]
    assert order.count(A) == 4 and order.count(B) == 2


ALL_POLICIES = [
    (PT.ROUND_ROBIN, ()), (PT.WEIGHTED_ROUND_ROBIN, (3,)), (PT.RANDOM, ()),
    (PT.WEIGHTED_RANDOM, (5,)), (PT.PRIORITY, (4,)), (PT.LEAST_USED, (100,)),
    (PT.LEAST_USED_DEGRADATION, (100, 7)), (PT.PRIORITY_LEAST_USED, (100, 7)),
    (PT.RANDOMIZED_LEAST_USED, (100,)), (PT.RANDOMIZED_PRIORITY_LEAST_USED, (100, 7)),
    (PT.RANDOMIZED_LEAST_USED_DEGRADATION, (100, 7)),
    (PT.PRIORITY_LEAST_USED_DEGRADATION, (100, 7)),
    (PT.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION, (100, 7)),
    (PT.WEIGHTED_RANDOM_DPF, (5, 3, 0)), (PT.LEAST_USED_DPF, (100, 3, 0)),
    (PT.LEAST_USED_DEGRADATION_DPF, (100, 7, 3, 0)),
]


@pytest.mark.parametrize("ptype,base", ALL_POLICIES, ids=[p.name for p, _ in ALL_POLICIES])
def test_every_policy_selects_like_a_handlespace_with_max_increment_1e9(ptype, base):
    """The cache runs the handlespace engine with every selected entry advanced
    (RSPLIB's PU), for all 16 policies; values differ per PE."""
    elements = [pe(i, ptype, [v + 3 * n for v in base]) for n, i in enumerate((A, B, C, D))]
    cache = PoolUserCache(60, seed=11)
    reference = Handlespace(seed=11, max_increment=10**9, max_bad_pe_reports=1 << 30,
                            max_handle_length=255)
    for e in elements:
        reference.register(POOL, e, 0.0)
    got = [ids(cache.store(response(*elements), 2, 0.0))]
    got += [ids(cache.lookup(POOL, n, 0.0)) for n in (1, 3, 2, 4, 1)]
    want = [[x.identifier for x in reference.select_entries(POOL, n)] for n in (2, 1, 3, 2, 4, 1)]
    assert got == want
    assert all(len(set(g)) == len(g) for g in got)   # no duplicates within a selection


# ---------------------------------------------------------------------------
# PoolUserCache: unreachable, errors, odd responses


def test_unreachable_removal():
    cache = PoolUserCache(60)
    cache.store(response(pe(A), pe(B)), 1, 0.0)
    assert cache.remove(POOL, A) is True
    assert cache.remove(POOL, A) is False
    assert [ids(cache.lookup(POOL, 1, 1.0)) for _ in range(3)] == [[B], [B], [B]]
    cache.remove(POOL, B)
    assert cache.lookup(POOL, 1, 1.0) is None      # all gone: a miss, ask the registrar


def test_error_response_raises_and_forgets_the_pool():
    cache = PoolUserCache(60)
    cache.store(response(pe(A)), 1, 0.0)
    err = HandleResolutionResponse(POOL, error=[Cause(ErrorCause.UNKNOWN_POOL_HANDLE)])
    with pytest.raises(OperationError) as exc:
        cache.store(err, 1, 1.0)
    assert exc.value.cause == ErrorCause.UNKNOWN_POOL_HANDLE
    assert cache.pool_size(POOL) == 0
    with pytest.raises(TypeError):
        cache.store(Cookie(b"x"), 1, 0.0)


def test_a_pool_that_changed_policy_replaces_the_cached_one():
    cache = PoolUserCache(60)
    cache.store(response(pe(A), pe(B)), 1, 0.0)
    got = cache.store(response(pe(C, PT.LEAST_USED, [5]), pe(A, PT.LEAST_USED, [1])), None, 1.0)
    assert ids(got) == [A, C]
    assert sorted(e.identifier for e in cache.elements(POOL)) == [A, C]
    assert all(e.policy == "LEAST_USED" for e in cache.elements(POOL))


def test_unusable_elements_are_skipped_and_ids_move_between_pools():
    cache = PoolUserCache(60)
    bad = PoolElement(B, 0, 1000, TcpTransport(0, ["10.0.0.2"]), PoolPolicy(PT.ROUND_ROBIN))
    assert ids(cache.store(response(pe(A), bad), None, 0.0)) == [A]
    assert ids(cache.store(response(pe(A), handle=b"Other"), None, 0.0)) == [A]
    assert (b"Other", A) in cache and (POOL, A) not in cache
    assert cache.invalidate() == 1 and cache.lookup(b"Other", 1, 0.0) is None


def test_empty_policy_response_gives_nothing():
    cache = PoolUserCache(60)
    assert cache.store(response(), 3, 0.0) == []
    assert cache.lookup(POOL, 1, 0.0) is None


# ---------------------------------------------------------------------------
# Session state machine: the table


def _args(inp):
    """Arguments of each input for SessionCore.feed."""
    return {
        I.OPEN: (), I.RESOLVED: ([info(B)],), I.NOT_RESOLVED: ("none",),
        I.RETRY_DUE: (), I.CONNECTED: (), I.CONNECT_FAILED: ("refused",),
        I.CONNECTION_LOST: ("reset",), I.COOKIE_RECEIVED: (b"c",),
        I.BUSINESS_CARD_RECEIVED: (BusinessCard(POOL, None, [pe(C)]),),
        I.DATA_RECEIVED: (b"d", 0), I.UNEXPECTED_MESSAGE: (CookieEcho(b"x"),),
        I.APP_SEND: (SendData(b"x"),), I.APP_FAILOVER: (True, "forced"),
        I.APP_CLOSE: (),
    }[inp]


def core_in(state):
    """A fresh core brought to ``state`` through allowed inputs only."""
    core = SessionCore(POOL, retry_delay=0.25, max_retries=5)
    path = {
        S.IDLE: [],
        S.RESOLVING: [core.open],
        S.WAITING: [core.open, lambda n: core.not_resolved("x", n)],
        S.CONNECTING: [core.open, lambda n: core.resolved([info(A)], n)],
        S.ESTABLISHED: [core.open, lambda n: core.resolved([info(A)], n), core.connected],
        S.CLOSED: [core.close],
    }
    est = path[S.ESTABLISHED]
    path[S.FAILOVER_RESOLVING] = est + [lambda n: core.connection_lost("x", n)]
    path[S.FAILOVER_WAITING] = path[S.FAILOVER_RESOLVING] + [lambda n: core.not_resolved("x", n)]
    path[S.FAILOVER_CONNECTING] = path[S.FAILOVER_RESOLVING] + [
        lambda n: core.resolved([info(B)], n)]
    for step in path[state]:
        step(0.0)
    assert core.state is state
    return core


@pytest.mark.parametrize("state,inp", list(itertools.product(S, I)),
                         ids=lambda x: x.value)
def test_every_state_input_pair_transitions_or_is_a_protocol_error(state, inp):
    core = core_in(state)
    entry = SESSION_TRANSITIONS.get((state, inp))
    if entry is None:
        before = (core.state, core.cookie, core.element, core.queued, core.next_deadline())
        with pytest.raises(LocalProtocolError):
            core.feed(inp, 1.0, *_args(inp))
        assert (core.state, core.cookie, core.element, core.queued,
                core.next_deadline()) == before
    else:
        out = core.feed(inp, 1.0, *_args(inp))
        assert core.state in entry[1]
        assert all(isinstance(o, (Resolve, Connect, SendData, SendControl, ReportUnreachable,
                                  CloseChannel, SessionConnected, FailoverStarted,
                                  FailoverCompleted, SessionFailed, CookieReceived,
                                  BusinessCardReceived, DataReceived, MessageIgnored,
                                  RetryScheduled, SessionClosed)) for o in out)


def test_table_covers_the_states_and_the_diagram_draws_it():
    reachable = {t for _h, targets in SESSION_TRANSITIONS.values() for t in targets}
    assert reachable | {S.IDLE} == set(S)
    for handler, _targets in SESSION_TRANSITIONS.values():
        assert callable(getattr(SessionCore, handler))
    dot = au.session_state_diagram()
    assert dot.startswith("digraph")
    for state in S:
        assert f'"{state.value}"' in dot
    assert '"established" -> "failover-resolving"' in dot


# ---------------------------------------------------------------------------
# Session scenarios


def established(cookie=None):
    core = SessionCore(POOL, cookie=cookie)
    assert core.open(0.0) == [Resolve(POOL, 1)]
    assert core.resolved([info(A)], 0.0) == [Connect(info(A))]
    return core, core.connected(0.0)


def test_connect_and_exchange_data():
    core, out = established()
    assert out == [SessionConnected(info(A), False)]
    assert core.send(b"hello", 0.1) == [SendData(b"hello", 0)]
    assert core.send(b"x", 0.1, ppid=42) == [SendData(b"x", 42)]
    assert core.data_received(b"hello", 0, 0.2) == [DataReceived(b"hello", 0)]
    with pytest.raises(ValueError):
        core.send(b"asap?", 0.2, ppid=11)


def test_failover_echoes_the_latest_cookie_first():
    core, _ = established()
    assert core.message_received(Cookie(b"n=1"), 1.0) == [CookieReceived(b"n=1")]
    core.message_received(Cookie(b"n=2"), 1.1)
    assert core.cookie == b"n=2"                       # the latest only
    out = core.connection_lost("connection reset", 2.0)
    assert out == [ReportUnreachable(POOL, A), FailoverStarted(info(A), "connection reset"),
                   Resolve(POOL, 1)]
    assert core.state is S.FAILOVER_RESOLVING
    assert core.send(b"during", 2.1) == [] and core.queued == 1
    # the registrar still offers the dead PE first: skipped for a fresh one
    assert core.resolved([info(A), info(B)], 2.2) == [Connect(info(B))]
    out = core.connected(2.3)
    assert out == [SendControl(CookieEcho(b"n=2")), SendData(b"during"),
                   FailoverCompleted(info(B), info(A), True)]
    assert core.state is S.ESTABLISHED and core.failovers == 1 and core.queued == 0


def test_nothing_found_waits_the_retry_delay():
    core, _ = established()
    core.connection_lost("eof", 1.0)
    out = core.not_resolved("unknown pool handle", 1.0)
    assert out == [RetryScheduled(1.25, "unknown pool handle", 1)]
    assert core.state is S.FAILOVER_WAITING and core.next_deadline() == 1.25
    assert core.handle_timer(1.2) == []
    assert core.handle_timer(1.25) == [Resolve(POOL, 1)]
    assert core.next_deadline() is None
    assert core.resolved([], 1.3) == [RetryScheduled(1.55, "no pool element found", 2)]


def test_retries_are_bounded():
    core = SessionCore(POOL, max_retries=2, retry_delay=0.25)
    core.open(0.0)
    now = 0.0
    for _ in range(2):
        assert isinstance(core.not_resolved("none", now)[0], RetryScheduled)
        now = core.next_deadline()
        core.handle_timer(now)
    out = core.not_resolved("none", now)
    assert len(out) == 1 and isinstance(out[0], SessionFailed)
    assert core.state is S.CLOSED
    with pytest.raises(LocalProtocolError):
        core.send(b"late", now)


def test_connect_failure_reports_and_resolves_again_then_waits_on_repeats():
    core, _ = established()
    core.connection_lost("reset", 1.0)
    assert core.resolved([info(B)], 1.0) == [Connect(info(B))]
    assert core.connect_failed("refused", 1.1) == [ReportUnreachable(POOL, B), Resolve(POOL, 1)]
    # B offered again: reported again and skipped (wait) ...
    out = core.resolved([info(B)], 1.2)
    assert out[0] == ReportUnreachable(POOL, B) and isinstance(out[1], RetryScheduled)
    core.handle_timer(core.next_deadline())
    # ... then tried once more; a second failure of the same PE waits
    assert core.resolved([info(B)], 2.0) == [Connect(info(B))]
    out = core.connect_failed("refused", 2.1)
    assert out[0] == ReportUnreachable(POOL, B) and isinstance(out[1], RetryScheduled)
    core.handle_timer(core.next_deadline())
    assert core.resolved([info(C)], 3.0) == [Connect(info(C))]
    assert core.connected(3.1)[-1] == FailoverCompleted(info(C), info(A), False)


def test_the_lost_pe_is_not_reconnected_at_once():
    """A hung PE (app failover) offered again by the registrar is skipped first."""
    core, _ = established()
    core.failover(1.0)
    out = core.resolved([info(A)], 1.1)
    assert out[0] == ReportUnreachable(POOL, A) and isinstance(out[1], RetryScheduled)
    core.handle_timer(core.next_deadline())
    assert core.resolved([info(A), info(B)], 1.5) == [Connect(info(B))]


def test_application_failover_aborts_first_and_may_skip_the_report():
    core, _ = established()
    out = core.failover(1.0)
    assert out == [CloseChannel(abort=True), ReportUnreachable(POOL, A),
                   FailoverStarted(info(A), "failover requested"), Resolve(POOL, 1)]
    assert core.failover(1.1) == []                      # one already under way
    core.resolved([info(B)], 1.2)
    core.connected(1.3)
    out = core.failover(2.0, report=False, reason="too slow")
    assert out == [CloseChannel(abort=True), FailoverStarted(info(B), "too slow"),
                   Resolve(POOL, 1)]


def test_business_card_peers_are_tried_before_a_new_resolution():
    core, _ = established()
    card = BusinessCard(POOL, PoolPolicy(PT.ROUND_ROBIN), [pe(A), pe(C), pe(D)])
    assert core.message_received(card, 0.5) == [BusinessCardReceived(card)]
    out = core.connection_lost("reset", 1.0)
    assert out[-1] == Connect(info(C))                   # A (the lost one) skipped
    assert core.connect_failed("refused", 1.1) == [ReportUnreachable(POOL, C),
                                                   Connect(info(D))]
    assert core.connect_failed("refused", 1.2) == [ReportUnreachable(POOL, D),
                                                   Resolve(POOL, 1)]
    assert core.resolved([info(B)], 1.3) == [Connect(info(B))]


def test_business_card_of_another_pool_is_ignored():
    core, _ = established()
    foreign = BusinessCard(b"OtherPool", PoolPolicy(PT.ROUND_ROBIN), [pe(C), pe(D)])
    [ev] = core.message_received(foreign, 0.5)
    assert isinstance(ev, MessageIgnored) and ev.message == foreign
    assert "OtherPool" in ev.reason and core.business_card is None
    assert core.state is S.ESTABLISHED
    # the failover does not go to the other pool's elements: it resolves
    out = core.connection_lost("reset", 1.0)
    assert out[-1] == Resolve(POOL, 1) and Connect(info(C, b"OtherPool")) not in out


def test_a_foreign_card_does_not_replace_the_pools_own_card():
    core, _ = established()
    own = BusinessCard(POOL, PoolPolicy(PT.ROUND_ROBIN), [pe(A), pe(D)])
    assert core.message_received(own, 0.5) == [BusinessCardReceived(own)]
    foreign = BusinessCard(b"OtherPool", PoolPolicy(PT.ROUND_ROBIN), [pe(C)])
    assert isinstance(core.message_received(foreign, 0.6)[0], MessageIgnored)
    assert core.business_card == own
    assert core.connection_lost("reset", 1.0)[-1] == Connect(info(D))
    # and a card of another pool that got in some other way is not used either
    core2, _ = established()
    core2.business_card = foreign
    assert core2.connection_lost("reset", 1.0)[-1] == Resolve(POOL, 1)


def test_own_business_card_is_sent_and_resent_after_failover():
    core, _ = established()
    mine = BusinessCard(b"PUPool", PoolPolicy(PT.ROUND_ROBIN), [pe(D)])
    assert core.send_business_card(mine, 0.5) == [SendControl(mine)]
    with pytest.raises(TypeError):
        core.send_business_card(Cookie(b"x"), 0.5)
    core.message_received(Cookie(b"k"), 0.6)
    core.connection_lost("reset", 1.0)
    core.resolved([info(B)], 1.0)
    assert core.connected(1.1)[:2] == [SendControl(CookieEcho(b"k")), SendControl(mine)]
    # a card given while no PE is connected goes once, after the Cookie Echo
    core.connection_lost("reset", 2.0)
    other = BusinessCard(b"PUPool", PoolPolicy(PT.ROUND_ROBIN), [pe(C)])
    assert core.send_business_card(other, 2.1) == []
    core.resolved([info(C)], 2.2)
    out = core.connected(2.3)
    assert out[:2] == [SendControl(CookieEcho(b"k")), SendControl(other)]
    assert out.count(SendControl(other)) == 1


def test_seeded_cookie_is_echoed_to_the_first_pe():
    core, out = established(cookie=b"from an earlier session")
    assert out == [SendControl(CookieEcho(b"from an earlier session")),
                   SessionConnected(info(A), True)]


def test_unexpected_asap_messages_are_ignored():
    core, _ = established()
    out = core.message_received(EndpointKeepAlive(1, POOL, A), 1.0)
    assert len(out) == 1 and isinstance(out[0], MessageIgnored)
    assert core.state is S.ESTABLISHED


def test_close_is_idempotent():
    core, _ = established()
    assert core.close(1.0) == [CloseChannel(abort=False), SessionClosed()]
    assert core.close(1.1) == []
    idle = SessionCore(POOL)
    assert idle.close(0.0) == [SessionClosed()]
    waiting = core_in(S.WAITING)
    assert waiting.close(0.0) == [CloseChannel(abort=False), SessionClosed()]
    assert waiting.next_deadline() is None


def test_bad_arguments():
    with pytest.raises(ValueError):
        SessionCore(b"")
    with pytest.raises(ValueError):
        SessionCore(POOL, retry_delay=-1)
