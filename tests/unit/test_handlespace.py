"""Handlespace unit tests: each policy's selection order against hand-worked
examples (shared/spec/RSERPOOL.md 5.3), checksums against the digest's
vectors (6.13), refusals that leave the handlespace unchanged, timers,
takeover and paging.  Every test runs on the compiled module and the twin."""

from __future__ import annotations

from collections import Counter

import pytest

from rserpool import errors
from rserpool.constants import MAX32, PolicyType as PT
from rserpool.wire import (PoolElement, PoolPolicy, SctpTransport, TcpTransport,
                           decode_message)

pytestmark = pytest.mark.accel("handlespace", "rserpool.handlespace._handlespace_py")

A, B, C, D = 0xA, 0xB, 0xC, 0xD


def pe(ident, ptype=PT.ROUND_ROBIN, values=(), *, home=0, life=30000, use=0,
       kind=SctpTransport, port=7000):
    return PoolElement(ident, home, life, kind(port, [f"10.0.0.{ident & 0xFF}"], use),
                       PoolPolicy(ptype, values))


def ids(hs, entries):
    """Identifiers of encoded PEs (select) or snapshots."""
    out = []
    for x in entries:
        out.append(int.from_bytes(x[4:8], "big") if isinstance(x, bytes) else x.identifier)
    return out


def make(hsmod, elements, handle=b"P", **kw):
    hs = hsmod.Handlespace(seed=7, **kw)
    for e in elements:
        hs.register(handle, e, 0.0)
    hs.check()
    return hs


def test_round_robin_moves_by_one_with_three_items(accel_impl):
    hs = make(accel_impl, [pe(i) for i in (A, B, C, D)])
    assert ids(hs, hs.select(b"P", 3)) == [A, B, C]
    assert ids(hs, hs.select(b"P", 3)) == [B, C, D]
    assert ids(hs, hs.select(b"P", 3)) == [C, D, A]
    assert [ids(hs, hs.select(b"P", 1))[0] for _ in range(5)] == [D, A, B, C, D]
    hs.check()


def test_round_robin_with_max_increment(accel_impl):
    hs = make(accel_impl, [pe(i) for i in (A, B, C, D)], max_increment=3)
    assert ids(hs, hs.select(b"P", 3)) == [A, B, C]
    assert ids(hs, hs.select(b"P", 3)) == [D, A, B]


def test_weighted_round_robin(accel_impl):
    hs = make(accel_impl, [pe(A, PT.WEIGHTED_ROUND_ROBIN, [2]),
                           pe(B, PT.WEIGHTED_ROUND_ROBIN, [1])])
    order = [ids(hs, hs.select(b"P", 1))[0] for _ in range(9)]
    assert order == [B, A, A, B, A, A, B, A, A]
    assert Counter(order[:9]) == {A: 6, B: 3}


def test_priority_ties_go_round_robin(accel_impl):
    hs = make(accel_impl, [pe(A, PT.PRIORITY, [5]), pe(B, PT.PRIORITY, [5]),
                           pe(C, PT.PRIORITY, [9])])
    assert ids(hs, hs.select(b"P", 2)) == [C, A]
    assert ids(hs, hs.select(b"P", 2)) == [C, A]  # only C advanced (K = 1)
    hs.deregister(b"P", C)
    assert [ids(hs, hs.select(b"P", 1))[0] for _ in range(4)] == [A, B, A, B]
    hs2 = make(accel_impl, [pe(A, PT.PRIORITY, [5]), pe(B, PT.PRIORITY, [5]),
                            pe(C, PT.PRIORITY, [9])], max_increment=2)
    assert ids(hs2, hs2.select(b"P", 2)) == [C, A]
    assert ids(hs2, hs2.select(b"P", 2)) == [C, B]


def test_least_used_and_ties(accel_impl):
    hs = make(accel_impl, [pe(A, PT.LEAST_USED, [10]), pe(B, PT.LEAST_USED, [10]),
                           pe(C, PT.LEAST_USED, [5])])
    assert [ids(hs, hs.select(b"P", 1))[0] for _ in range(3)] == [C, C, C]
    assert ids(hs, hs.select(b"P", 3)) == [C, A, B]
    hs.register(b"P", pe(C, PT.LEAST_USED, [20]), 1.0)  # C's load goes up
    assert [ids(hs, hs.select(b"P", 1))[0] for _ in range(4)] == [A, B, A, B]
    hs.check()


def test_least_used_with_degradation(accel_impl):
    hs = make(accel_impl, [pe(A, PT.LEAST_USED_DEGRADATION, [0, 100]),
                           pe(B, PT.LEAST_USED_DEGRADATION, [50, 0])])
    assert ids(hs, hs.select(b"P", 1)) == [A]
    assert hs.get(b"P", A).degradation == 100
    assert [ids(hs, hs.select(b"P", 1))[0] for _ in range(3)] == [B, B, B]
    hs.register(b"P", pe(A, PT.LEAST_USED_DEGRADATION, [0, 100]), 1.0)  # resets
    assert hs.get(b"P", A).degradation == 0
    assert ids(hs, hs.select(b"P", 1)) == [A]
    hs.check()


def test_degradation_saturates(accel_impl):
    hs = make(accel_impl, [pe(A, PT.PRIORITY_LEAST_USED_DEGRADATION, [MAX32 - 5, 3])])
    for _ in range(5):
        hs.select(b"P", 1)
    assert hs.get(b"P", A).degradation == 15
    hs2 = make(accel_impl, [pe(A, PT.LEAST_USED_DEGRADATION, [0, MAX32])])
    hs2.select(b"P", 1)
    hs2.select(b"P", 1)
    assert hs2.get(b"P", A).degradation == MAX32


def test_priority_least_used_is_static(accel_impl):
    hs = make(accel_impl, [pe(A, PT.PRIORITY_LEAST_USED, [10, 50]),
                           pe(B, PT.PRIORITY_LEAST_USED, [40, 0])])
    assert [ids(hs, hs.select(b"P", 1))[0] for _ in range(3)] == [B, B, B]


def test_least_used_dpf(accel_impl):
    hs = make(accel_impl, [pe(A, PT.LEAST_USED_DPF, [100, 10, 50]),   # 100 + 500
                           pe(B, PT.LEAST_USED_DPF, [400, 1, 50])])   # 400 + 50
    assert ids(hs, hs.select(b"P", 2)) == [B, A]


def test_random_is_seeded_and_roughly_uniform(accel_impl):
    def run(seed):
        hs = accel_impl.Handlespace(seed=seed)
        for i in (A, B, C):
            hs.register(b"P", pe(i, PT.RANDOM), 0.0)
        return [ids(hs, hs.select(b"P", 1))[0] for _ in range(3000)]
    first = run(1)
    assert first == run(1) and first != run(2)
    counts = Counter(first)
    assert all(850 < counts[i] < 1150 for i in (A, B, C)), counts
    hs = make(accel_impl, [pe(i, PT.RANDOM) for i in (A, B, C)])
    assert sorted(ids(hs, hs.select(b"P", 5))) == [A, B, C]  # without replacement


def test_weighted_random_follows_weights(accel_impl):
    hs = make(accel_impl, [pe(A, PT.WEIGHTED_RANDOM, [1]), pe(B, PT.WEIGHTED_RANDOM, [3]),
                           pe(C, PT.WEIGHTED_RANDOM, [0])])
    counts = Counter(ids(hs, hs.select(b"P", 1))[0] for _ in range(4000))
    assert C not in counts
    assert 0.70 < counts[B] / 4000 < 0.80, counts
    assert sorted(ids(hs, hs.select(b"P", 3))) == [A, B]  # weight 0 never picked


def test_randomized_least_used_prefers_free_capacity(accel_impl):
    hs = make(accel_impl, [pe(A, PT.RANDOMIZED_LEAST_USED, [MAX32 // 4 * 3]),
                           pe(B, PT.RANDOMIZED_LEAST_USED, [0])])
    counts = Counter(ids(hs, hs.select(b"P", 1))[0] for _ in range(4000))
    assert 0.75 < counts[B] / 4000 < 0.85, counts


def test_randomized_degradation_never_accumulates(accel_impl):
    hs = make(accel_impl, [pe(A, PT.RANDOMIZED_LEAST_USED_DEGRADATION, [0, 1000])])
    for _ in range(10):
        hs.select(b"P", 1)
    entry = hs.get(b"P", A)
    assert entry.degradation == 0 and entry.selection_counter == 10


def test_mixed_policies_refused_and_nothing_changes(accel_impl):
    hs = make(accel_impl, [pe(A), pe(B)])
    before = [e.to_dict() for e in hs.pool_elements(b"P")]
    with pytest.raises(errors.PolicyInconsistentError) as ei:
        hs.register(b"P", pe(C, PT.LEAST_USED, [0]), 1.0)
    assert ei.value.cause == 0x0005
    with pytest.raises(errors.TransportInconsistentError):
        hs.register(b"P", pe(C, kind=TcpTransport), 1.0)
    with pytest.raises(errors.DataControlInconsistentError):
        hs.register(b"P", pe(C, use=1), 1.0)
    with pytest.raises(errors.PolicyInconsistentError):  # an update too
        hs.register(b"P", pe(A, PT.LEAST_USED, [0]), 1.0)
    assert [e.to_dict() for e in hs.pool_elements(b"P")] == before
    hs.check()
    hs.deregister(b"P", A)
    hs.deregister(b"P", B)
    assert hs.pool_count == 0
    assert hs.register(b"P", pe(C, PT.LEAST_USED, [0]), 1.0)  # empty pool: new policy


@pytest.mark.parametrize("handle,element,exc", [
    (b"", pe(A), errors.InvalidPoolHandleError),
    (b"x" * 33, pe(A), errors.InvalidPoolHandleError),
    (b"P", pe(0), errors.InvalidValueError),
    (b"P", pe(A, life=-1), errors.InvalidValueError),
    (b"P", pe(A, port=0), errors.InvalidValueError),
    (b"P", pe(A, 0xB0002004, [1, 2, 3]), errors.UnsupportedPolicyError),
    (b"P", pe(A, PT.LEAST_USED_DEGRADATION, [1]), errors.UnsupportedPolicyError),
    (b"Q", pe(B), errors.NonUniqueIdentifierError),
])
def test_bad_calls_leave_the_handlespace_unchanged(accel_impl, handle, element, exc):
    hs = make(accel_impl, [pe(B)])
    before = (hs.checksums(), [e.to_dict() for e in hs.pool_elements(b"P")], len(hs))
    with pytest.raises(exc):
        hs.register(handle, element, 1.0)
    assert (hs.checksums(), [e.to_dict() for e in hs.pool_elements(b"P")], len(hs)) == before
    hs.check()


def test_type_errors_and_capacity(accel_impl):
    hs = accel_impl.Handlespace(max_pools=2, max_elements=3)
    with pytest.raises(TypeError):
        hs.register("P", pe(A), 0.0)
    with pytest.raises(TypeError):
        hs.register(b"P", "not a pool element", 0.0)
    hs.register(b"P", pe(A), 0.0)
    hs.register(b"Q", pe(B), 0.0)
    with pytest.raises(errors.ResourceLimitError):
        hs.register(b"R", pe(C), 0.0)
    hs.register(b"P", pe(C), 0.0)
    with pytest.raises(errors.ResourceLimitError) as ei:
        hs.register(b"P", pe(D), 0.0)
    assert ei.value.cause == 0x0006
    assert not hs.register(b"P", pe(A, life=5), 0.0)  # an update needs no room
    hs.check()


def test_checksums_match_the_digest_vectors(accel_impl):
    hs = accel_impl.Handlespace()
    assert hs.checksum(0x11) == 0xFFFF
    hs.register(b"EchoPool", pe(0x12345678, home=0x11), 0.0)
    assert hs.checksum(0x11) == 0x29A5
    hs.register(b"abc", pe(0xDEADBEEF, home=0x11), 0.0)
    assert hs.checksum(0x11) == 0xC7A4
    hs2 = accel_impl.Handlespace()
    hs2.register(b"abc", pe(1, home=0x22), 0.0)
    assert hs2.checksums() == {0x22: 0x3B9C}
    assert accel_impl.fold_checksum(accel_impl.pe_checksum_sum(b"abc", 1)) == 0x3B9C
    hs.deregister(b"abc", 0xDEADBEEF)
    assert hs.checksum(0x11) == 0x29A5
    hs.check()


def test_unreachable_reports_remove_after_threshold(accel_impl):
    hs = make(accel_impl, [pe(A), pe(B)], max_bad_pe_reports=3)
    assert hs.report_unreachable(b"P", A) is None
    assert hs.report_unreachable(b"P", A) is None
    removed = hs.report_unreachable(b"P", A)
    assert removed.identifier == A and removed.unreachability_reports == 3
    assert (b"P", A) not in hs and len(hs) == 1
    assert hs.report_unreachable(b"P", A) is None
    hs.check()


def test_timers_and_expiry(accel_impl):
    hs = accel_impl.Handlespace()
    hs.register(b"P", pe(A, life=10_000), 100.0)                   # expiry at 110
    hs.register(b"P", pe(B), 100.0, timer=accel_impl.TIMER_KEEP_ALIVE_TRANSMISSION,
                deadline=105.0)
    hs.register(b"Q", pe(C, life=1000), 100.0, timer=accel_impl.TIMER_NONE)
    assert hs.next_deadline() == 105.0
    assert hs.expire(104.9) == []
    assert hs.expire(105.0) == [(b"P", B, accel_impl.TIMER_KEEP_ALIVE_TRANSMISSION)]
    assert (b"P", B) in hs and hs.get(b"P", B).timer == accel_impl.TIMER_NONE
    assert hs.set_timer(b"P", B, accel_impl.TIMER_KEEP_ALIVE_TIMEOUT, 108.0)
    assert hs.expire(200.0) == [(b"P", B, accel_impl.TIMER_KEEP_ALIVE_TIMEOUT),
                                (b"P", A, accel_impl.TIMER_EXPIRY)]
    assert (b"P", A) not in hs and (b"P", B) in hs and (b"Q", C) in hs
    assert hs.next_deadline() is None
    assert not hs.set_timer(b"P", A, accel_impl.TIMER_EXPIRY, 1.0)
    hs.check()


def test_takeover_moves_ownership_checksums_and_encoding(accel_impl):
    hs = accel_impl.Handlespace()
    for i, handle in ((A, b"P"), (B, b"P"), (C, b"Q")):
        hs.register(handle, pe(i, home=0x11), 0.0)
    hs.register(b"Q", pe(D, home=0x22), 0.0)
    assert hs.owned_by(0x11) == [(b"P", A), (b"P", B), (b"Q", C)]
    old = hs.checksum(0x11)
    assert hs.takeover(0x11, 0x22) == 3
    assert hs.owned_by(0x11) == [] and hs.checksum(0x11) == 0xFFFF
    assert len(hs.owned_by(0x22)) == 4 and hs.checksum(0x22) != old
    entry = hs.get(b"P", A)
    assert entry.home_registrar == 0x22 and entry.encoded[8:12] == bytes.fromhex("00000022")
    assert hs.rehome(b"Q", D, 0x33) and not hs.rehome(b"Q", A, 0x33)
    assert hs.checksums() == {0x22: hs.checksum(0x22), 0x33: hs.checksum(0x33)}
    hs.check()


def test_associations(accel_impl):
    hs = accel_impl.Handlespace()
    hs.register(b"P", pe(A), 0.0, association=1)
    hs.register(b"Q", pe(B), 0.0, association=1)
    hs.register(b"P", pe(C), 0.0, association=2)
    assert hs.by_association(1) == [(b"P", A), (b"Q", B)]
    removed = hs.remove_association(1)
    assert [(e.pool_handle, e.identifier) for e in removed] == [(b"P", A), (b"Q", B)]
    assert len(hs) == 1 and hs.by_association(1) == []
    hs.register(b"P", pe(C), 1.0, association=3)  # moved to another association
    assert hs.by_association(2) == [] and hs.by_association(3) == [(b"P", C)]
    hs.check()


def test_paging_resumes_in_pool_order(accel_impl):
    hs = accel_impl.Handlespace()
    handles = [b"bb", b"a", b"ccc", b"ab"]
    n = 0
    for h in handles:
        for i in range(5):
            n += 1
            hs.register(h, pe(n * 16 + i, home=0x11 if i % 2 else 0x22), 0.0)
    assert hs.pools() == [b"a", b"ab", b"bb", b"ccc"]
    full = [(e.pool_handle, e.identifier) for h in hs.pools() for e in hs.pool_elements(h)]
    got, cursor = [], None
    while True:
        page, cursor = hs.page(cursor, 3)
        got += [(e.pool_handle, e.identifier) for e in page]
        if cursor is None:
            break
    assert got == full and len(got) == 20
    owned, cursor = [], None
    while True:
        page, cursor = hs.page(cursor, 4, home=0x11)
        owned += [(e.pool_handle, e.identifier) for e in page]
        if cursor is None:
            break
    assert owned == hs.owned_by(0x11)


def test_resolve_builds_a_response(accel_impl):
    hs = make(accel_impl, [pe(i, PT.LEAST_USED, [i]) for i in (A, B, C)])
    data = hs.resolve(b"P", 2)
    msg = decode_message(data, "asap")
    assert msg.pool_handle == b"P" and msg.policy.load == A
    assert [p.identifier for p in msg.pool_elements] == [A, B]
    assert hs.resolve(b"nope", 3) is None and hs.select(b"nope", 3) == []
    assert hs.select(b"P", 0) == []


def test_snapshots(accel_impl):
    hs = accel_impl.Handlespace()
    element = pe(A, PT.LEAST_USED, [7], home=0x11)
    asap = SctpTransport(9000, ["10.0.0.99"])
    hs.register(b"P", element.replace(asap_transport=asap), 3.0, association="x")
    e = hs.get(b"P", A)
    assert e.pool_element == element.replace(asap_transport=asap)
    assert (e.last_update, e.association, e.seq, e.deadline) == (3.0, "x", 0, 33.0)
    with pytest.raises(AttributeError):
        e.identifier = 5
    assert hs.deregister(b"P", A) == e and hs.deregister(b"P", A) is None


def test_statistics(accel_impl):
    hs = accel_impl.Handlespace()
    empty = hs.statistics()
    for i in range(1, 101):
        hs.register(b"P%d" % (i % 3), pe(i, home=0x11), 0.0, association=i % 2)
    stats = hs.statistics()
    assert (stats["pools"], stats["elements"], stats["homes"], stats["associations"],
            stats["timers"]) == (3, 100, 1, 2, 100)
    assert stats["memory_bytes"] > empty["memory_bytes"] + 100 * 64


def test_odd_arguments_change_nothing(accel_impl):
    hs = make(accel_impl, [pe(A)])
    before = [e.to_dict() for e in hs.pool_elements(b"P")]
    with pytest.raises(TypeError):
        hs.register(b"P", pe(B), 1.0, association=[1, 2])      # unhashable
    with pytest.raises((TypeError, ValueError)):
        hs.register(b"P", pe(B), 1.0, deadline="soon")
    with pytest.raises((TypeError, ValueError)):
        hs.set_timer(b"P", A, accel_impl.TIMER_EXPIRY, "soon")
    with pytest.raises(TypeError):
        hs.rehome(b"P", A, 5.5)
    with pytest.raises(TypeError):
        hs.takeover(0, 5.5)
    assert [e.to_dict() for e in hs.pool_elements(b"P")] == before and len(hs) == 1
    hs.check()
