"""Stateful differential test: the compiled handlespace against its twin.

Hypothesis drives random sequences of register / update / deregister / select
/ resolve / unreachable / timers / expire / takeover / rehome / association
loss / paging on both implementations (same seed) and compares every result;
after every step both run ``check()`` (indices agree, checksum sums equal a
full recomputation) and their checksums must be equal.
``RSERPOOL_HYPOTHESIS_EXAMPLES`` scales the run.
"""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rserpool.constants import PolicyType as PT
from rserpool.wire import PoolElement, PoolPolicy, SctpTransport, TcpTransport

from conftest import extensions_required, import_compiled

EXAMPLES = int(os.environ.get("RSERPOOL_HYPOTHESIS_EXAMPLES", "400"))

HANDLES = [b"a", b"EchoPool", b"odd", b"zz"]
IDS = [1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, 42, 43, 44]
HOMES = [0x11, 0x22, 0x33]
POLICIES = [
    (PT.ROUND_ROBIN, 0), (PT.WEIGHTED_ROUND_ROBIN, 1), (PT.RANDOM, 0),
    (PT.WEIGHTED_RANDOM, 1), (PT.PRIORITY, 1), (PT.LEAST_USED, 1),
    (PT.LEAST_USED_DEGRADATION, 2), (PT.PRIORITY_LEAST_USED, 2),
    (PT.RANDOMIZED_LEAST_USED, 1), (PT.RANDOMIZED_PRIORITY_LEAST_USED, 2),
    (PT.RANDOMIZED_LEAST_USED_DEGRADATION, 2), (PT.PRIORITY_LEAST_USED_DEGRADATION, 2),
    (PT.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION, 2), (PT.WEIGHTED_RANDOM_DPF, 3),
    (PT.LEAST_USED_DPF, 3), (PT.LEAST_USED_DEGRADATION_DPF, 4),
]
value = st.one_of(st.integers(0, 10), st.integers(0, 0xFFFFFFFF),
                  st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF]))


@st.composite
def elements(draw):
    ptype, n = draw(st.sampled_from(POLICIES[:4] if draw(st.booleans()) else POLICIES))
    values = draw(st.lists(value, min_size=n, max_size=n))
    kind = draw(st.sampled_from([SctpTransport, SctpTransport, TcpTransport]))
    use = draw(st.sampled_from([0, 0, 1]))
    ident = draw(st.sampled_from(IDS))
    transport = kind(draw(st.integers(0, 3)), [f"10.0.0.{ident & 0xFF}"], use)
    asap = draw(st.none() | st.just(SctpTransport(9000, ["10.1.1.1"])))
    return PoolElement(ident, draw(st.sampled_from(HOMES)), draw(st.integers(-1, 5000)),
                       transport, PoolPolicy(ptype, values), asap)


def call(hs, name, *args, **kw):
    try:
        result = getattr(hs, name)(*args, **kw)
    except Exception as exc:  # compared by class
        return ("raised", type(exc).__name__)
    return ("ok", plain(result))


def plain(x):
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return x


class HandlespaceComparison(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        compiled, why = import_compiled("handlespace")
        if compiled is None:
            if extensions_required():
                pytest.fail(why)
            pytest.skip(why)
        twin = importlib.import_module("rserpool.handlespace._handlespace_py")
        self.mods = (compiled, twin)
        self.now = 0.0
        self.hs = None

    @initialize(seed=st.integers(0, 2**64 - 1), inc=st.sampled_from([0, 0, 1, 2, 5]),
                bad=st.integers(1, 3))
    def setup(self, seed, inc, bad):
        self.hs = [m.Handlespace(seed=seed, max_increment=inc, max_bad_pe_reports=bad,
                                 max_elements=6) for m in self.mods]

    def both(self, name, *args, **kw):
        c, py = (call(h, name, *args, **kw) for h in self.hs)
        assert c == py, f"{name}{args}: compiled {c!r} != pure {py!r}"
        return c

    @rule(handle=st.sampled_from(HANDLES), element=elements(),
          home=st.none() | st.sampled_from(HOMES), assoc=st.none() | st.integers(1, 3),
          timer=st.sampled_from([0, 1, 2, 3, 3]), dt=st.floats(0, 3))
    def register(self, handle, element, home, assoc, timer, dt):
        self.now += dt
        self.both("register", handle, element, self.now, home_registrar=home,
                  association=assoc, timer=timer)

    @rule(handle=st.sampled_from(HANDLES), ident=st.sampled_from(IDS))
    def deregister(self, handle, ident):
        self.both("deregister", handle, ident)

    @rule(handle=st.sampled_from(HANDLES), count=st.sampled_from([0, 1, 1, 2, 3, 10, -1]))
    def select(self, handle, count):
        self.both("select", handle, count)

    @rule(handle=st.sampled_from(HANDLES), count=st.integers(1, 4))
    def select_entries(self, handle, count):
        self.both("select_entries", handle, count)

    @rule(handle=st.sampled_from(HANDLES), count=st.integers(1, 4))
    def resolve(self, handle, count):
        self.both("resolve", handle, count)

    @rule(handle=st.sampled_from(HANDLES), ident=st.sampled_from(IDS))
    def unreachable(self, handle, ident):
        self.both("report_unreachable", handle, ident)

    @rule(handle=st.sampled_from(HANDLES), ident=st.sampled_from(IDS),
          kind=st.sampled_from([0, 1, 2, 3]), dt=st.floats(0, 10))
    def set_timer(self, handle, ident, kind, dt):
        self.both("set_timer", handle, ident, kind, self.now + dt)

    @rule(dt=st.floats(0, 6))
    def expire(self, dt):
        self.now += dt
        self.both("expire", self.now)
        self.both("next_deadline")

    @rule(old=st.sampled_from(HOMES), new=st.sampled_from(HOMES))
    def takeover(self, old, new):
        self.both("takeover", old, new)
        self.both("owned_by", new)

    @rule(handle=st.sampled_from(HANDLES), ident=st.sampled_from(IDS),
          new=st.sampled_from(HOMES))
    def rehome(self, handle, ident, new):
        self.both("rehome", handle, ident, new)

    @rule(assoc=st.integers(1, 3))
    def lose_association(self, assoc):
        self.both("by_association", assoc)
        self.both("remove_association", assoc)

    @rule(handle=st.sampled_from(HANDLES), ident=st.sampled_from(IDS),
          limit=st.integers(1, 4), home=st.none() | st.sampled_from(HOMES),
          start=st.booleans())
    def page(self, handle, ident, limit, home, start):
        self.both("page", None if start else (handle, ident), limit, home=home)

    @rule(handle=st.sampled_from(HANDLES), ident=st.sampled_from(IDS))
    def get(self, handle, ident):
        self.both("get", handle, ident)
        self.both("pool_elements", handle)
        self.both("pool_size", handle)
        self.both("pool_policy_type", handle)

    @invariant()
    def consistent(self):
        if self.hs is None:
            return
        for h in self.hs:
            h.check()
        self.both("checksums")
        self.both("pools")
        self.both("__len__")


HandlespaceComparison.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_handlespace_matches_twin = HandlespaceComparison.TestCase
