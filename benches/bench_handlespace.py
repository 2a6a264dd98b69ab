"""Handlespace benchmarks: one Python call per operation, as a registrar makes them.

Standalone sweep (the table quoted in the README; results kept in
``benches/results/``)::

    .venv/bin/python benches/bench_handlespace.py                  # compiled, full sweep
    .venv/bin/python benches/bench_handlespace.py --impl py --max-n 100000
    .venv/bin/python benches/bench_handlespace.py --n 1000 --p 1 --policy RR --repeat 3

For every (N pool elements, P pools, policy) cell it measures, each as the
median of ``--repeat`` runs:

* ``reg/s``    register() of N prebuilt wire PoolElements into an empty handlespace;
* ``rereg/s``  register() of the same N again with a new load (LU) or unchanged (RR, RAND);
* ``sel1/s``, ``sel3/s``  select(handle, 1 | 3), cycling over the P pools;
* ``dereg/s``  deregister() of all N;
* ``B/PE``     memory the handlespace holds per PE (tracemalloc, separate pass:
  everything allocated from before the PoolElements were built, after they
  were dropped), with one IPv4 address in the user and in the ASAP transport.

RSPLIB's C handlespace, driven the same way from C on a 2 vCPU EPYC (gcc -O2,
median of 3), is printed beside each cell as the bar.  Under pytest
(``make bench``) a small grid runs through pytest-benchmark instead.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import platform
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable

import pytest

from rserpool.constants import PolicyType
from rserpool.wire import PoolElement, PoolPolicy, SctpTransport

IMPLS = {"c": "rserpool._c.handlespace", "py": "rserpool.handlespace._handlespace_py"}
POLICIES = {"RR": PolicyType.ROUND_ROBIN, "LU": PolicyType.LEAST_USED,
            "RAND": PolicyType.RANDOM}

#: RSPLIB's figures: (N, P, policy) -> (reg, rereg, sel1, sel3, dereg) ops/s.
RSPLIB = {
    (1000, 1, "RR"): (1.54e6, 2.51e6, 6.50e6, 6.76e6, 2.21e6),
    (1000, 1, "LU"): (1.25e6, 1.38e6, 9.58e6, 9.38e6, 1.34e6),
    (1000, 1000, "RR"): (1.09e6, 1.63e6, 5.30e6, 5.33e6, 1.70e6),
    (10000, 10, "RR"): (727e3, 1.21e6, 3.06e6, 2.95e6, 860e3),
    (10000, 10, "LU"): (643e3, 694e3, 6.07e6, 6.02e6, 733e3),
    (100000, 1, "RR"): (318e3, 371e3, 2.08e6, 1.92e6, 282e3),
    (100000, 1, "LU"): (232e3, 184e3, 5.94e6, 5.95e6, 255e3),
    (100000, 1000, "RR"): (231e3, 362e3, 733e3, 614e3, 233e3),
    (100000, 1000, "LU"): (278e3, 214e3, 1.45e6, 1.48e6, 235e3),
    (1000000, 1, "RR"): (200e3, 208e3, 1.35e6, 1.24e6, 130e3),
    (1000000, 1, "LU"): (134e3, 109e3, 4.18e6, 4.64e6, 106e3),
    (1000000, 1000, "RR"): (135e3, 208e3, 357e3, 377e3, 118e3),
    (1000000, 1000, "LU"): (134e3, 101e3, 448e3, 521e3, 125e3),
}
RSPLIB_BYTES_PER_PE = 528
SWEEP_N = (1000, 10000, 100000, 1000000)
SWEEP_P = (1, 10, 1000)
SELECT_CALLS = 300_000


def load(kind: str) -> Any:
    return importlib.import_module(IMPLS[kind])


def workload(n: int, p: int, policy: str, seed: int = 1) -> tuple[list, list, list[bytes]]:
    """N (handle, PoolElement) registrations over P pools, the same PEs with new
    loads for re-registration, and the pool handles."""
    rnd = random.Random(seed)
    ptype = POLICIES[policy]
    handles = [b"pool-%06d" % i for i in range(p)]
    asap = SctpTransport(40000, ["10.1.0.1"])
    first, second = [], []
    for i in range(n):
        user = SctpTransport(20000 + i % 40000, [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}."
                                                 f"{i & 255}"], 1)
        values = [rnd.getrandbits(32)] if ptype == PolicyType.LEAST_USED else []
        pe = PoolElement(i + 1, 0x11111111, 90000, user, PoolPolicy(ptype, values), asap)
        first.append((handles[i % p], pe))
        if ptype == PolicyType.LEAST_USED:
            pe = pe.replace(policy=PoolPolicy(ptype, [rnd.getrandbits(32)]))
        second.append((handles[i % p], pe))
    return first, second, handles


def _rate(count: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t0)


def measure(mod: Any, n: int, p: int, policy: str, select_calls: int = SELECT_CALLS
            ) -> tuple[float, float, float, float, float]:
    """One run of the five rates for a cell."""
    first, second, handles = workload(n, p, policy)
    hs = mod.Handlespace(seed=1)
    reg = hs.register
    sel = hs.select
    dereg = hs.deregister
    now = 1.0
    gc.collect()
    gc.disable()
    try:
        def register_all() -> None:
            for h, pe in first:
                reg(h, pe, now)

        def reregister_all() -> None:
            for h, pe in second:
                reg(h, pe, now)

        picks = [handles[i % p] for i in range(min(select_calls, max(p, 1) * 1000))]
        rounds = max(1, select_calls // len(picks))

        def select_n(k: int) -> Callable[[], None]:
            def run() -> None:
                for _ in range(rounds):
                    for h in picks:
                        sel(h, k)
            return run

        def deregister_all() -> None:
            for h, pe in first:
                dereg(h, pe.identifier)

        r_reg = _rate(n, register_all)
        r_rereg = _rate(n, reregister_all)
        r_sel1 = _rate(rounds * len(picks), select_n(1))
        r_sel3 = _rate(rounds * len(picks), select_n(3))
        r_dereg = _rate(n, deregister_all)
    finally:
        gc.enable()
    assert len(hs) == 0
    return r_reg, r_rereg, r_sel1, r_sel3, r_dereg


def bytes_per_pe(mod: Any, n: int, p: int, policy: str) -> float:
    """Memory the handlespace keeps per PE, inputs included if it keeps them."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        first, _, _ = workload(n, p, policy)
        hs = mod.Handlespace(seed=1)
        for h, pe in first:
            hs.register(h, pe, 1.0)
        del first, h, pe
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(hs) == n
    return used / n


def fmt(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    return f"{rate / 1e3:.0f}k"


def sweep(kind: str, cells: list[tuple[int, int, str]], repeat: int, out: Any) -> None:
    mod = load(kind)
    out(f"# rserpool handlespace ({kind}: {mod.__name__}), "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}; median of {repeat}, one Python call per operation")
    out("# each cell: ours / RSPLIB (ratio ours÷RSPLIB); B/PE vs RSPLIB's "
        f"{RSPLIB_BYTES_PER_PE}")
    out(f"{'N':>8} {'P':>5} {'pol':<4} | {'reg/s':>20} {'rereg/s':>20} {'sel1/s':>20} "
        f"{'sel3/s':>20} {'dereg/s':>20} | {'B/PE':>6}")
    for n, p, policy in cells:
        runs = [measure(mod, n, p, policy) for _ in range(repeat)]
        med = [statistics.median(r[i] for r in runs) for i in range(5)]
        mem = bytes_per_pe(mod, n, p, policy)
        bar = RSPLIB.get((n, p, policy))
        cols = []
        for i, rate in enumerate(med):
            if bar:
                cols.append(f"{fmt(rate)}/{fmt(bar[i])} ({rate / bar[i]:.2f})")
            else:
                cols.append(fmt(rate))
        out(f"{n:>8} {p:>5} {policy:<4} | " + " ".join(f"{c:>20}" for c in cols)
            + f" | {mem:>6.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=sorted(IMPLS), default="c")
    parser.add_argument("--n", type=int, action="append", help="only these N")
    parser.add_argument("--p", type=int, action="append", help="only these P")
    parser.add_argument("--policy", choices=sorted(POLICIES), action="append")
    parser.add_argument("--max-n", type=int, default=max(SWEEP_N))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the table to this file")
    ns = parser.parse_args(argv)
    cells = [(n, p, pol) for n in (ns.n or SWEEP_N) for p in (ns.p or SWEEP_P)
             for pol in (ns.policy or ["RR", "LU", "RAND"]) if n <= ns.max_n and p <= n]
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    sweep(ns.impl, cells, ns.repeat, out)
    if ns.out:
        with open(ns.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


# ---------------------------------------------------------------------------
# pytest-benchmark (make bench): a small grid, both implementations

@pytest.fixture(params=["c", "py"])
def impl(request: Any) -> Any:
    return load(request.param)


@pytest.mark.parametrize("policy", ["RR", "LU", "RAND"])
def test_select3_1000_pes(benchmark: Any, impl: Any, policy: str) -> None:
    """select(handle, 3) on one pool of 1,000 PEs."""
    first, _, handles = workload(1000, 1, policy)
    hs = impl.Handlespace(seed=1)
    for h, pe in first:
        hs.register(h, pe, 1.0)
    result = benchmark(hs.select, handles[0], 3)
    assert len(result) == 3


@pytest.mark.parametrize("policy", ["RR", "LU"])
def test_register_deregister_1000_pes(benchmark: Any, impl: Any, policy: str) -> None:
    """register() then deregister() of 1,000 PEs over 10 pools (per round)."""
    first, _, _ = workload(1000, 10, policy)

    def run() -> None:
        hs = impl.Handlespace(seed=1)
        for h, pe in first:
            hs.register(h, pe, 1.0)
        for h, pe in first:
            hs.deregister(h, pe.identifier)
    benchmark(run)


if __name__ == "__main__":
    sys.exit(main())
