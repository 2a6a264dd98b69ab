"""Pure-Python twin of the compiled handlespace ``rserpool._c.handlespace``.

Owns a registrar's handlespace: pools of pool elements keyed by pool handle,
the per-pool selection index of each policy (``shared/spec/RSERPOOL.md`` 5.3),
the ownership checksums (6.13), timers, and the indices by identifier, home
registrar and association.  No I/O and no clock: time is the ``now`` argument.

This file is written to be read; ``SPEC.md`` beside it states the API and the
exact semantics both implementations follow, and the differential tests hold
them to it.  Data structures here are ``dict`` and ``sortedcontainers``.

RSPLIB quirks kept on purpose (so a pool behaves the same whichever registrar
serves it):

* Round robin moves its pointer by the increment K (1 by default), not by
  the number of PEs returned: pool [A, B, C, D] asked for 3 gives A, B, C and
  then B, C, D.  Changing it would change what RSPLIB PUs observe.
* The randomized degradation variants (RLUD, RPLUD) never accumulate
  degradation: RSPLIB's update hook only recomputes the weight, so they
  behave like RLU and RPLU.  Kept for identical selection statistics.
"""

from __future__ import annotations

import operator
import sys
from typing import Any, Hashable, Iterable

from sortedcontainers import SortedList

from ..constants import POLICY_VALUE_NAMES, PolicyType
from ..errors import (
    DataControlInconsistentError,
    InvalidPoolHandleError,
    InvalidValueError,
    NonUniqueIdentifierError,
    PolicyInconsistentError,
    ResourceLimitError,
    TransportInconsistentError,
    UnsupportedPolicyError,
)
from ..wire import (
    DccpTransport,
    PoolElement,
    SctpTransport,
    TcpTransport,
    UdpLiteTransport,
    UdpTransport,
    build_handle_resolution_response,
    encode_parameter,
)

__all__ = [
    "IMPLEMENTATION", "Handlespace", "PoolElementEntry", "Random",
    "TIMER_NONE", "TIMER_KEEP_ALIVE_TRANSMISSION", "TIMER_KEEP_ALIVE_TIMEOUT",
    "TIMER_EXPIRY", "pe_checksum_sum", "fold_checksum",
]

IMPLEMENTATION = "pure"

TIMER_NONE = 0
TIMER_KEEP_ALIVE_TRANSMISSION = 1
TIMER_KEEP_ALIVE_TIMEOUT = 2
TIMER_EXPIRY = 3

M64 = 0xFFFFFFFFFFFFFFFF
M32 = 0xFFFFFFFF

_PT = PolicyType
_ENGINE_B = frozenset((_PT.RANDOM, _PT.WEIGHTED_RANDOM, _PT.RANDOMIZED_LEAST_USED,
                       _PT.RANDOMIZED_PRIORITY_LEAST_USED,
                       _PT.RANDOMIZED_LEAST_USED_DEGRADATION,
                       _PT.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
                       _PT.WEIGHTED_RANDOM_DPF))
_NO_INCREMENT = frozenset((_PT.RANDOM, _PT.WEIGHTED_RANDOM, _PT.WEIGHTED_RANDOM_DPF))
_DEGRADING = frozenset((_PT.LEAST_USED_DEGRADATION, _PT.PRIORITY_LEAST_USED_DEGRADATION,
                        _PT.LEAST_USED_DEGRADATION_DPF))
_TRANSPORT_KINDS = (SctpTransport, TcpTransport, UdpTransport, UdpLiteTransport, DccpTransport)


def _sat(x: int) -> int:
    return x if x < M32 else M32


# --------------------------------------------------------------------------
# the shared pseudo-random generator

def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & M64


class Random:
    """xoshiro256** seeded through splitmix64; bit for bit the same in both
    implementations, so the same seed gives the same selections.

    >>> r = Random(1); [r.next64() for _ in range(2)] == [r2 for r2 in Random(1).take(2)]
    True
    """

    __slots__ = ("_s",)

    def __init__(self, seed: int = 0) -> None:
        s = seed & M64
        state = []
        for _ in range(4):
            s = (s + 0x9E3779B97F4A7C15) & M64
            z = s
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            state.append(z ^ (z >> 31))
        self._s = state

    def next64(self) -> int:
        """The next 64-bit value."""
        s = self._s
        s0, s1, s2, s3 = s
        result = (_rotl((s1 * 5) & M64, 7) * 9) & M64
        t = (s1 << 17) & M64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        s[0], s[1], s[2], s[3] = s0, s1, s2, s3
        return result

    def take(self, n: int) -> list[int]:
        """The next ``n`` values."""
        return [self.next64() for _ in range(n)]


# --------------------------------------------------------------------------
# checksums (shared/spec 6.13)

def pe_checksum_sum(pool_handle: bytes, identifier: int) -> int:
    """s_PE: the 16-bit big-endian words of the pool handle (padded on its own
    to even length) plus the two words of the PE identifier, as a 32-bit sum."""
    h = pool_handle + b"\0" if len(pool_handle) & 1 else pool_handle
    total = 0
    for i in range(0, len(h), 2):
        total += (h[i] << 8) | h[i + 1]
    total += (identifier >> 16) + (identifier & 0xFFFF)
    return total & M32


def fold_checksum(sum32: int) -> int:
    """Fold carries into 16 bits and complement (0xFFFF for an empty sum)."""
    s = sum32 & M32
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


# --------------------------------------------------------------------------
# snapshots

class PoolElementEntry:
    """An immutable snapshot of one pool element's entry."""

    __slots__ = ("pool_handle", "identifier", "home_registrar", "registration_life",
                 "user_transport", "asap_transport", "policy", "encoded", "association",
                 "seq", "round_counter", "virtual_counter", "degradation",
                 "selection_counter", "unreachability_reports", "last_update", "timer",
                 "deadline")
    _fields = __slots__

    def __init__(self, **values: Any) -> None:
        for f in self._fields:
            object.__setattr__(self, f, values[f])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PoolElementEntry is immutable")

    @property
    def pool_element(self) -> Any:
        """The wire ``PoolElement`` (with the ASAP transport)."""
        return PoolElement(self.identifier, self.home_registrar, self.registration_life,
                           self.user_transport, self.policy, self.asap_transport)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self._fields:
            v = getattr(self, f)
            out[f] = v.to_dict() if hasattr(v, "to_dict") else v
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PoolElementEntry):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash((self.pool_handle, self.identifier, self.seq))

    def __repr__(self) -> str:
        return (f"PoolElementEntry(pool_handle={self.pool_handle!r}, "
                f"identifier=0x{self.identifier:08x}, home=0x{self.home_registrar:08x}, "
                f"seq={self.seq})")


# --------------------------------------------------------------------------
# internal state

class _Entry:
    """The mutable entry behind a snapshot."""

    __slots__ = ("pool", "identifier", "home", "life", "user", "asap", "policy", "encoded",
                 "assoc", "seq", "round", "virtual", "degradation", "selected", "unreachable",
                 "last_update", "timer", "deadline", "values", "key", "weight")


class _Pool:
    __slots__ = ("handle", "order", "policy_type", "kind", "use", "global_seq", "entries",
                 "index", "engine_b")

    def __init__(self, handle: bytes, policy_type: int, kind: type, use: int) -> None:
        self.handle = handle
        self.order = (len(handle), handle)
        self.policy_type = policy_type
        self.kind = kind
        self.use = use
        self.global_seq = 0
        self.entries: dict[int, _Entry] = {}
        self.index = SortedList()  # (key..., seq, identifier)
        self.engine_b = policy_type in _ENGINE_B


def _transport_use(t: Any) -> int:
    return int(getattr(t, "transport_use", 0))


def _key(pool: _Pool, e: _Entry) -> tuple:
    """The entry's position in its pool's selection index."""
    pt = pool.policy_type
    v = e.values
    if pool.engine_b or pt == _PT.ROUND_ROBIN:
        return (e.seq, e.identifier)
    if pt == _PT.WEIGHTED_ROUND_ROBIN:
        return (e.round, e.virtual, e.seq, e.identifier)
    if pt == _PT.PRIORITY:
        return (M32 - v["priority"], e.seq, e.identifier)
    if pt == _PT.LEAST_USED:
        k = v["load"]
    elif pt == _PT.LEAST_USED_DEGRADATION:
        k = _sat(v["load"] + e.degradation)
    elif pt == _PT.PRIORITY_LEAST_USED:
        k = _sat(v["load"] + v["load_degradation"])
    elif pt == _PT.PRIORITY_LEAST_USED_DEGRADATION:
        k = _sat(v["load"] + v["load_degradation"] + e.degradation)
    elif pt == _PT.LEAST_USED_DPF:
        k = _sat(v["load"] + v["distance"] * v["load_dpf"])
    else:  # LEAST_USED_DEGRADATION_DPF
        k = _sat(v["load"] + e.degradation + v["distance"] * v["load_dpf"])
    return (k, e.seq, e.identifier)


def _weight(pt: int, e: _Entry) -> int:
    """Engine B weight v."""
    v = e.values
    if pt == _PT.RANDOM:
        return 1
    if pt == _PT.WEIGHTED_RANDOM:
        return v["weight"]
    if pt == _PT.RANDOMIZED_LEAST_USED:
        return max(1, M32 - v["load"])
    if pt == _PT.RANDOMIZED_PRIORITY_LEAST_USED:
        return max(1, M32 - v["load"] - v["load_degradation"])
    if pt == _PT.RANDOMIZED_LEAST_USED_DEGRADATION:
        return max(1, M32 - v["load"] - e.degradation)
    if pt == _PT.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION:
        return max(1, M32 - v["load"] - v["load_degradation"] - e.degradation)
    # WEIGHTED_RANDOM_DPF
    w = v["weight"]
    w -= (w * v["distance"] * v["weight_dpf"] + M32 // 2) // M32
    return 1 if w < 0 else w


# --------------------------------------------------------------------------
# the handlespace

class Handlespace:
    """A registrar's handlespace.  See ``SPEC.md`` for every rule.

    :param own_id: this registrar's ID (informational).
    :param seed: seed of the shared :class:`Random`.
    :param max_increment: RSPLIB's MaxIncrement (0: each policy's default).
    :param max_bad_pe_reports: unreachability reports that remove a PE.
    :param max_handle_length: longest pool handle accepted (RSPLIB: 32).
    :param max_pools: capacity limit on pools.
    :param max_elements: capacity limit on pool elements.
    """

    def __init__(self, *, own_id: int = 0, seed: int = 0, max_increment: int = 0,
                 max_bad_pe_reports: int = 3, max_handle_length: int = 32,
                 max_pools: int = 1_000_000, max_elements: int = 10_000_000) -> None:
        for name, value in (("max_increment", max_increment),
                            ("max_bad_pe_reports", max_bad_pe_reports),
                            ("max_handle_length", max_handle_length),
                            ("max_pools", max_pools), ("max_elements", max_elements)):
            if not isinstance(value, int) or value < (0 if name == "max_increment" else 1):
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.own_id = own_id
        self.max_increment = max_increment
        self.max_bad_pe_reports = max_bad_pe_reports
        self.max_handle_length = max_handle_length
        self.max_pools = max_pools
        self.max_elements = max_elements
        self._rng = Random(seed)
        self._pools: dict[bytes, _Pool] = {}
        self._pool_order = SortedList()  # (len, handle)
        self._ids: dict[int, _Entry] = {}  # identifier -> entry (unique across pools)
        self._homes: dict[int, set[_Entry]] = {}
        self._sums: dict[int, int] = {}
        self._assoc: dict[Any, set[_Entry]] = {}
        self._timers = SortedList()  # (deadline, (len, handle), identifier)

    # ---- snapshots -------------------------------------------------------

    @staticmethod
    def _snapshot(e: _Entry) -> PoolElementEntry:
        return PoolElementEntry(
            pool_handle=e.pool.handle, identifier=e.identifier, home_registrar=e.home,
            registration_life=e.life, user_transport=e.user, asap_transport=e.asap,
            policy=e.policy, encoded=e.encoded, association=e.assoc, seq=e.seq,
            round_counter=e.round, virtual_counter=e.virtual, degradation=e.degradation,
            selection_counter=e.selected, unreachability_reports=e.unreachable,
            last_update=e.last_update, timer=e.timer, deadline=e.deadline)

    # ---- index maintenance ------------------------------------------------

    def _home_add(self, e: _Entry) -> None:
        self._homes.setdefault(e.home, set()).add(e)
        self._sums[e.home] = (self._sums.get(e.home, 0)
                              + pe_checksum_sum(e.pool.handle, e.identifier)) & M32

    def _home_remove(self, e: _Entry) -> None:
        members = self._homes[e.home]
        members.discard(e)
        if members:
            self._sums[e.home] = (self._sums[e.home]
                                  - pe_checksum_sum(e.pool.handle, e.identifier)) & M32
        else:
            del self._homes[e.home]
            del self._sums[e.home]

    def _assoc_add(self, e: _Entry) -> None:
        if e.assoc is not None:
            self._assoc.setdefault(e.assoc, set()).add(e)

    def _assoc_remove(self, e: _Entry) -> None:
        if e.assoc is not None:
            members = self._assoc[e.assoc]
            members.discard(e)
            if not members:
                del self._assoc[e.assoc]

    def _timer_clear(self, e: _Entry) -> None:
        if e.timer != TIMER_NONE:
            self._timers.remove((e.deadline, e.pool.order, e.identifier))
        e.timer = TIMER_NONE
        e.deadline = None

    def _timer_set(self, e: _Entry, kind: int, deadline: float | None) -> None:
        when = None if kind == TIMER_NONE else float(deadline)  # type: ignore[arg-type]
        self._timer_clear(e)
        if kind != TIMER_NONE:
            e.timer = kind
            e.deadline = when
            self._timers.add((when, e.pool.order, e.identifier))

    def _index_add(self, pool: _Pool, e: _Entry) -> None:
        e.key = _key(pool, e)
        pool.index.add(e.key)

    def _index_remove(self, pool: _Pool, e: _Entry) -> None:
        pool.index.remove(e.key)

    def _remove(self, e: _Entry) -> PoolElementEntry:
        pool = e.pool
        snap = self._snapshot(e)  # keeps the timer as it was
        self._timer_clear(e)
        self._index_remove(pool, e)
        del pool.entries[e.identifier]
        del self._ids[e.identifier]
        self._home_remove(e)
        self._assoc_remove(e)
        if not pool.entries:
            del self._pools[pool.handle]
            self._pool_order.remove(pool.order)
        return snap

    # ---- registration -----------------------------------------------------

    def register(self, pool_handle: bytes, pool_element: Any, now: float, *,
                 home_registrar: int | None = None, association: Hashable | None = None,
                 timer: int = TIMER_EXPIRY, deadline: float | None = None) -> bool:
        """Add a pool element or update an existing one (same handle and
        identifier).  Returns True for a new element."""
        if type(pool_handle) is not bytes:
            raise TypeError("pool_handle must be bytes")
        if type(pool_element) is not PoolElement:
            raise TypeError("pool_element must be a rserpool.wire.PoolElement")
        if not 0 < len(pool_handle) <= self.max_handle_length:
            raise InvalidPoolHandleError(
                f"pool handle of {len(pool_handle)} bytes (1..{self.max_handle_length})")
        pe = pool_element
        ident = pe.identifier
        user = pe.user_transport
        if ident == 0:
            raise InvalidValueError("PE identifier 0 is invalid")
        if pe.registration_life < 0:
            raise InvalidValueError("negative registration life")
        if type(user) not in _TRANSPORT_KINDS:
            raise InvalidValueError("the user transport is not a transport parameter")
        if user.port == 0:
            raise InvalidValueError("user transport port 0 is invalid")
        home = operator.index(pe.home_registrar if home_registrar is None else home_registrar)
        if association is not None:
            hash(association)  # unhashable: TypeError before anything changes
        if not 0 <= home <= M32:
            raise InvalidValueError("home registrar ID out of range")
        pt = pe.policy.policy_type
        names = POLICY_VALUE_NAMES.get(pt)
        if names is None:
            raise UnsupportedPolicyError(f"policy 0x{int(pt):08x} is not supported")
        if len(pe.policy.values) < len(names):
            raise UnsupportedPolicyError(f"policy 0x{int(pt):08x} needs {len(names)} values")
        if timer not in (TIMER_NONE, TIMER_KEEP_ALIVE_TRANSMISSION, TIMER_KEEP_ALIVE_TIMEOUT,
                         TIMER_EXPIRY):
            raise ValueError(f"unknown timer kind {timer!r}")
        existing = self._ids.get(ident)
        if existing is not None and existing.pool.handle != pool_handle:
            raise NonUniqueIdentifierError(
                f"PE 0x{ident:08x} is registered in pool {existing.pool.handle!r}")
        pool = self._pools.get(pool_handle)
        kind = type(user)
        use = _transport_use(user)
        if pool is not None:
            if pool.policy_type != pt:
                raise PolicyInconsistentError(
                    f"pool uses policy 0x{int(pool.policy_type):08x}, not 0x{int(pt):08x}")
            if pool.kind is not kind:
                raise TransportInconsistentError(
                    f"pool uses {pool.kind.__name__}, not {kind.__name__}")
            if pool.use != use:
                raise DataControlInconsistentError(
                    f"pool uses transport use {pool.use}, not {use}")
        if pool is None and len(self._pools) >= self.max_pools:
            raise ResourceLimitError(f"pool limit of {self.max_pools} reached")
        if existing is None and len(self._ids) >= self.max_elements:
            raise ResourceLimitError(f"element limit of {self.max_elements} reached")

        values = dict(zip(names, pe.policy.values))
        encoded = encode_parameter(PoolElement(ident, home, pe.registration_life, user,
                                               pe.policy, None))
        if timer == TIMER_NONE:
            deadline = None
        else:
            deadline = float(now + pe.registration_life / 1000.0 if deadline is None
                             else deadline)
        if pool is None:
            pool = _Pool(pool_handle, pt, kind, use)
            self._pools[pool_handle] = pool
            self._pool_order.add(pool.order)
        if existing is None:
            e = _Entry()
            e.pool = pool
            e.identifier = ident
            e.seq = pool.global_seq
            pool.global_seq += 1
            e.selected = 0
            if pt == _PT.WEIGHTED_ROUND_ROBIN:
                e.round = pool.index[0][0] if pool.index else 0
                e.virtual = values["weight"]
            else:
                e.round = 0
                e.virtual = 0
            e.timer = TIMER_NONE
            e.deadline = None
            e.assoc = association
            new = True
        else:
            e = existing
            self._index_remove(pool, e)
            self._home_remove(e)
            if association is not None and association != e.assoc:
                self._assoc_remove(e)
                e.assoc = association
                self._assoc_add(e)
            if pt == _PT.WEIGHTED_ROUND_ROBIN:
                e.virtual = min(e.virtual, values["weight"])
            new = False
        e.home = home
        e.life = pe.registration_life
        e.user = user
        e.asap = pe.asap_transport
        e.policy = pe.policy
        e.values = values
        e.encoded = encoded
        e.degradation = 0
        e.unreachable = 0
        e.last_update = now
        if new:
            pool.entries[ident] = e
            self._ids[ident] = e
            self._assoc_add(e)
        self._index_add(pool, e)
        self._home_add(e)
        self._timer_set(e, timer, deadline)
        return new

    def deregister(self, pool_handle: bytes, identifier: int) -> PoolElementEntry | None:
        """Remove a pool element; its snapshot, or None if it was not there."""
        e = self._find(pool_handle, identifier)
        return None if e is None else self._remove(e)

    def _find(self, pool_handle: bytes, identifier: int) -> _Entry | None:
        e = self._ids.get(identifier)
        if e is None or e.pool.handle != pool_handle:
            return None
        return e

    def get(self, pool_handle: bytes, identifier: int) -> PoolElementEntry | None:
        e = self._find(pool_handle, identifier)
        return None if e is None else self._snapshot(e)

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return self._find(key[0], key[1]) is not None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def pool_count(self) -> int:
        return len(self._pools)

    def pool_size(self, pool_handle: bytes) -> int:
        pool = self._pools.get(pool_handle)
        return 0 if pool is None else len(pool.entries)

    def pool_policy_type(self, pool_handle: bytes) -> int | None:
        pool = self._pools.get(pool_handle)
        return None if pool is None else pool.policy_type

    # ---- selection ----------------------------------------------------------

    def _increment(self, pool: _Pool) -> int:
        if self.max_increment:
            return self.max_increment
        return 0 if pool.policy_type in _NO_INCREMENT else 1

    def _advance(self, pool: _Pool, e: _Entry, hook: bool) -> None:
        self._index_remove(pool, e)
        e.seq = pool.global_seq
        pool.global_seq += 1
        e.selected += 1
        if hook:
            pt = pool.policy_type
            if pt == _PT.WEIGHTED_ROUND_ROBIN:
                if e.virtual > 1:
                    e.virtual -= 1
                else:
                    e.round += 1
                    e.virtual = e.values["weight"]
            elif pt in _DEGRADING:
                e.degradation = _sat(e.degradation + e.values["load_degradation"])
        self._index_add(pool, e)

    def _select(self, pool_handle: bytes, count: int) -> list[_Entry]:
        pool = self._pools.get(pool_handle)
        if pool is None or count <= 0:
            return []
        k = self._increment(pool)
        if not pool.engine_b:
            chosen = [pool.entries[key[-1]] for key in pool.index[:count]]
            for i in range(min(len(chosen), k)):
                self._advance(pool, chosen[i], True)
            return chosen
        pt = pool.policy_type
        candidates = []
        for key in pool.index:
            e = pool.entries[key[-1]]
            w = _weight(pt, e)
            if w > 0:
                candidates.append((e, w))
        chosen = []
        total = sum(w for _, w in candidates)
        for _ in range(min(count, len(candidates))):
            r = self._rng.next64() % total
            acc = 0
            for i, (e, w) in enumerate(candidates):
                acc += w
                if acc > r:
                    chosen.append(e)
                    total -= w
                    del candidates[i]
                    break
        for i, e in enumerate(chosen):
            self._advance(pool, e, i < k)
        return chosen

    def select(self, pool_handle: bytes, count: int) -> list[bytes]:
        """Select up to ``count`` PEs by the pool's policy (state advanced);
        their encoded Pool Element parameters in selection order."""
        return [e.encoded for e in self._select(pool_handle, count)]

    def select_entries(self, pool_handle: bytes, count: int) -> list[PoolElementEntry]:
        """Like :meth:`select`, returning snapshots taken after the update."""
        return [self._snapshot(e) for e in self._select(pool_handle, count)]

    def resolve(self, pool_handle: bytes, count: int) -> bytes | None:
        """Select and build the whole Handle Resolution Response (the policy
        parameter of the first selected PE, then the PEs); None if nothing."""
        chosen = self._select(pool_handle, count)
        if not chosen:
            return None
        return build_handle_resolution_response(
            pool_handle, encode_parameter(chosen[0].policy), [e.encoded for e in chosen])

    # ---- unreachability, timers ---------------------------------------------

    def report_unreachable(self, pool_handle: bytes,
                           identifier: int) -> PoolElementEntry | None:
        """Count one Endpoint Unreachable report; remove the PE (and return its
        snapshot) when the count reaches ``max_bad_pe_reports``."""
        e = self._find(pool_handle, identifier)
        if e is None:
            return None
        e.unreachable += 1
        if e.unreachable >= self.max_bad_pe_reports:
            return self._remove(e)
        return None

    def set_timer(self, pool_handle: bytes, identifier: int, kind: int,
                  deadline: float | None = None) -> bool:
        """(Re)arm or, with TIMER_NONE, clear a PE's timer."""
        if kind not in (TIMER_NONE, TIMER_KEEP_ALIVE_TRANSMISSION, TIMER_KEEP_ALIVE_TIMEOUT,
                        TIMER_EXPIRY):
            raise ValueError(f"unknown timer kind {kind!r}")
        if kind != TIMER_NONE and deadline is None:
            raise ValueError("a timer needs a deadline")
        e = self._find(pool_handle, identifier)
        if e is None:
            return False
        self._timer_set(e, kind, deadline)
        return True

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def expire(self, now: float) -> list[tuple[bytes, int, int]]:
        """Fire every timer due at ``now``: ``(pool_handle, identifier, kind)``
        in deadline order; TIMER_EXPIRY entries are removed."""
        out = []
        while self._timers and self._timers[0][0] <= now:
            _, order, ident = self._timers[0]
            e = self._ids[ident]
            kind = e.timer
            out.append((e.pool.handle, ident, kind))
            if kind == TIMER_EXPIRY:
                self._remove(e)
            else:
                self._timer_clear(e)
        return out

    # ---- ownership and checksums --------------------------------------------

    @staticmethod
    def _sorted_keys(entries: Iterable[_Entry]) -> list[tuple[bytes, int]]:
        return [(e.pool.handle, e.identifier)
                for e in sorted(entries, key=lambda e: (e.pool.order, e.identifier))]

    def owned_by(self, registrar_id: int) -> list[tuple[bytes, int]]:
        return self._sorted_keys(self._homes.get(registrar_id, ()))

    def _rehome(self, e: _Entry, new_home: int) -> None:
        self._home_remove(e)
        e.home = new_home
        e.encoded = encode_parameter(PoolElement(e.identifier, new_home, e.life, e.user,
                                                 e.policy, None))
        self._home_add(e)

    def rehome(self, pool_handle: bytes, identifier: int, new_home: int) -> bool:
        new_home = operator.index(new_home)
        if not 0 <= new_home <= M32:
            raise InvalidValueError("home registrar ID out of range")
        e = self._find(pool_handle, identifier)
        if e is None:
            return False
        self._rehome(e, new_home)
        return True

    def takeover(self, old_home: int, new_home: int) -> int:
        """Re-home every PE of ``old_home`` to ``new_home``; the count."""
        new_home = operator.index(new_home)
        if not 0 <= new_home <= M32:
            raise InvalidValueError("home registrar ID out of range")
        if old_home == new_home:
            return len(self._homes.get(old_home, ()))
        members = list(self._homes.get(old_home, ()))
        for e in members:
            self._rehome(e, new_home)
        return len(members)

    def checksum(self, registrar_id: int) -> int:
        return fold_checksum(self._sums.get(registrar_id, 0))

    def checksums(self) -> dict[int, int]:
        return {home: fold_checksum(s) for home, s in sorted(self._sums.items())}

    # ---- associations ---------------------------------------------------------

    def by_association(self, association: Hashable) -> list[tuple[bytes, int]]:
        return self._sorted_keys(self._assoc.get(association, ()))

    def remove_association(self, association: Hashable) -> list[PoolElementEntry]:
        members = sorted(self._assoc.get(association, ()),
                         key=lambda e: (e.pool.order, e.identifier))
        return [self._remove(e) for e in members]

    # ---- iteration --------------------------------------------------------------

    def pools(self) -> list[bytes]:
        return [handle for _, handle in self._pool_order]

    def pool_elements(self, pool_handle: bytes) -> list[PoolElementEntry]:
        pool = self._pools.get(pool_handle)
        if pool is None:
            return []
        return [self._snapshot(pool.entries[i]) for i in sorted(pool.entries)]

    def page(self, after: tuple[bytes, int] | None = None, limit: int = 128, *,
             home: int | None = None
             ) -> tuple[list[PoolElementEntry], tuple[bytes, int] | None]:
        """Entries strictly after ``after`` in pool order (only those with
        ``home_registrar == home`` when given), at most ``limit``; the cursor
        for the next page, or None when nothing remains."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        out: list[PoolElementEntry] = []
        if after is None:
            start = 0
            after_order, after_id = None, -1
        else:
            after_order = (len(after[0]), after[0])
            after_id = after[1]
            start = self._pool_order.bisect_left(after_order)
        more = False
        for order in self._pool_order.islice(start):
            pool = self._pools[order[1]]
            for ident in sorted(pool.entries):
                if order == after_order and ident <= after_id:
                    continue
                e = pool.entries[ident]
                if home is not None and e.home != home:
                    continue
                if len(out) == limit:
                    more = True
                    break
                out.append(self._snapshot(e))
            if more:
                break
        cursor = (out[-1].pool_handle, out[-1].identifier) if more else None
        return out, cursor

    # ---- statistics and self-check ---------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Counts, and ``memory_bytes``: an estimate (``sys.getsizeof``) of the
        entries, their selection keys, values and encoded parameters, and the
        per-pool dicts.  O(n)."""
        mem = 0
        for pool in self._pools.values():
            mem += sys.getsizeof(pool.entries)
            for e in pool.entries.values():
                mem += (sys.getsizeof(e) + sys.getsizeof(e.key) + sys.getsizeof(e.values)
                        + sys.getsizeof(e.encoded))
        mem += sys.getsizeof(self._ids) + sys.getsizeof(self._pools)
        return {"pools": len(self._pools), "elements": len(self._ids),
                "homes": len(self._homes), "associations": len(self._assoc),
                "timers": len(self._timers), "memory_bytes": mem}

    def check(self) -> None:
        """Verify every index against the entries; raise AssertionError."""
        count = 0
        sums: dict[int, int] = {}
        homes: dict[int, set[_Entry]] = {}
        assoc: dict[Any, set[_Entry]] = {}
        timers = []
        assert list(self._pool_order) == sorted((len(h), h) for h in self._pools)
        for handle, pool in self._pools.items():
            assert pool.handle == handle and pool.entries, "empty or misfiled pool"
            assert len(pool.index) == len(pool.entries)
            keys = []
            for ident, e in pool.entries.items():
                count += 1
                assert e.pool is pool and e.identifier == ident
                assert self._ids[ident] is e
                assert e.key == _key(pool, e), "stale selection key"
                assert e.seq < pool.global_seq
                keys.append(e.key)
                sums[e.home] = (sums.get(e.home, 0) + pe_checksum_sum(handle, ident)) & M32
                homes.setdefault(e.home, set()).add(e)
                if e.assoc is not None:
                    assoc.setdefault(e.assoc, set()).add(e)
                if e.timer != TIMER_NONE:
                    timers.append((e.deadline, pool.order, ident))
                assert e.encoded == encode_parameter(PoolElement(
                    ident, e.home, e.life, e.user, e.policy, None)), "stale encoding"
            assert sorted(keys) == list(pool.index), "selection index out of step"
            assert len({e.seq for e in pool.entries.values()}) == len(pool.entries)
        assert count == len(self._ids)
        assert sums == self._sums, "checksum sums differ from a recomputation"
        assert homes == self._homes and assoc == self._assoc
        assert sorted(timers) == list(self._timers)
