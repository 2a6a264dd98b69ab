"""A registrar holding many registered pool elements: its CPU use while it
keeps them alive with keep-alives, and its answers to resolutions meanwhile.

Usage (loopback only)::

    .venv/bin/python benches/load_registrations.py               # 100,000 PEs, 300 associations
    .venv/bin/python benches/load_registrations.py --pes 100000 --associations 300 \\
        --duration 60 --out benches/results/load-registrations.txt
    .venv/bin/python benches/load_registrations.py --target 127.0.0.1:3863 --pid 1234

By default it starts ``python -m rserpool registrar`` (TCP only, 127.0.0.1, an
ephemeral port, no announces, the file-descriptor limit raised, keep-alive
interval ``--keep-alive-interval``, MaxIncrement and MaxHResItems 128 so that
128-item resolutions walk a round-robin pool) as a subprocess.  Then:

1. registers ``--pes`` PEs in ``--pool`` over ``--associations`` TCP
   connections (``--window`` registrations outstanding per connection) and
   acknowledges every Endpoint Keep-Alive on them from then on;
2. waits ``--settle`` seconds so that every PE's keep-alive cycle runs;
3. for ``--duration`` seconds (the steady state) reads the registrar's CPU
   time (``/proc/<pid>/stat`` utime + stime) at the start and the end and
   every ``--sample`` seconds, while a separate process resolves the pool at
   ``--resolve-rate`` requests per second (each response decoded and
   checked); it prints cores used (CPU seconds / wall seconds, target < 0.5),
   the keep-alives received, and the resolutions' latency percentiles;
4. checks every PE is still registered: each must have had a keep-alive in
   the last keep-alive interval + timeout, and (when it started the
   registrar) ceil(N/128) + 1 resolutions of 128 items must name all N;
5. closes the associations and times how long the registrar takes to forget
   the pool (``--teardown deregister`` deregisters every PE instead).

The exit status is 0 when nothing failed, 1 otherwise, 2 when ``--max-cores``
is given and the steady-state CPU use is above it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _loadcommon import (BENCH_ERRORS, Output, ServerProcess,  # noqa: E402
                         add_registrar_and_out_options, cpu_seconds, end_report, new_parser,
                         registrar_under_test, rss_bytes, run_bench, start_report,
                         stop_servers)
from load_resolution import (POLICIES, PeFarm, check_response, decode_message,  # noqa: E402
                             enumerate_pool, fmt_latency, resolve_once, run_load)


async def wait_pool_gone(host: str, port: int, pool: bytes, timeout: float) -> float | None:
    """Seconds until a resolution of ``pool`` gets an error answer; None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        data = await resolve_once(host, port, pool, 1)
        if check_response(data, pool, None) is not None:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


async def bench(ns: argparse.Namespace, out: Output) -> int:
    failures: list[str] = []
    start_report(out)
    pool = ns.pool.encode()
    registrar: ServerProcess | None = None
    farm: PeFarm | None = None
    rc = 0
    try:
        options = ["--keep-alive-interval", f"{ns.keep_alive_interval:g}",
                   "--keep-alive-timeout", f"{ns.keep_alive_timeout:g}",
                   "--max-increment", "128", "--max-hres-items", "128",
                   *ns.registrar_arg]
        registrar, host, port, pid = await registrar_under_test(ns, out, options)
        if not registrar:
            if not pid:
                raise RuntimeError("cannot find the registrar's pid: give --pid")
            out(f"registrar: {host}:{port} (given), pid {pid}; its keep-alive interval is "
                f"assumed to be {ns.keep_alive_interval:g} s")
        rss0 = rss_bytes(pid)
        farm = PeFarm(host, port, pool, ns.pes, ns.associations, policy=ns.policy,
                      life_ms=ns.life, window=ns.window)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        took = await farm.start()
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        registered_at = t1
        out(f"registration: {farm.accepted:,} of {ns.pes:,} PEs ({ns.policy}) accepted over "
            f"{farm.associations} associations ({ns.window} outstanding per association) in "
            f"{took:.2f} s = {farm.accepted / max(took, 1e-9):,.0f} registrations/s; registrar "
            f"CPU {cpu1 - cpu0:.2f} s ({(cpu1 - cpu0) / (t1 - t0):.2f} cores, connects included)")
        if farm.accepted != ns.pes:
            failures.append(f"{ns.pes - farm.accepted} registrations not accepted: "
                            f"{farm.failures}")
            return 1
        out(f"settling {ns.settle:g} s (keep-alive interval {ns.keep_alive_interval:g} s, "
            f"timeout {ns.keep_alive_timeout:g} s)")
        await asyncio.sleep(ns.settle)
        rss1 = rss_bytes(pid)
        out(f"registrar RSS {rss0 / 2**20:.1f} MiB before, {rss1 / 2**20:.1f} MiB with the PEs "
            f"({(rss1 - rss0) / ns.pes:,.0f} bytes per PE)")

        # steady state: CPU samples, keep-alive counts, paced resolutions
        samples: list[tuple[float, float, int]] = []

        async def sampler() -> None:
            while True:
                samples.append((time.monotonic(), cpu_seconds(pid), farm.keep_alives))
                await asyncio.sleep(ns.sample)

        own0 = time.process_time()
        task = asyncio.ensure_future(sampler())
        resolution = await run_load(
            "resolutions", host, port, pid, processes=1, connections=1,
            in_flight=ns.resolve_in_flight, requests=10**9, duration=ns.duration, pool=pool,
            items=ns.items, expect=min(ns.items, ns.pes, 128), rate=ns.resolve_rate)
        task.cancel()
        samples.append((time.monotonic(), cpu_seconds(pid), farm.keep_alives))
        own = time.process_time() - own0
        (s0, c0, k0), (s1, c1, k1) = samples[0], samples[-1]
        window = s1 - s0
        cores = (c1 - c0) / window
        ka = k1 - k0
        steps = [f"{(cb - ca) / (tb - ta):.2f}"
                 for (ta, ca, _), (tb, cb, _) in zip(samples, samples[1:])
                 if tb - ta > ns.sample / 2]
        out(f"steady state, {window:.1f} s: registrar {c1 - c0:.2f} CPU s = {cores:.3f} cores "
            f"(target < 0.5: {'met' if cores < 0.5 else 'NOT met'})"
            + (f"; per {ns.sample:g} s: {' '.join(steps)}" if steps else ""))
        expected_ka = ns.pes / ns.keep_alive_interval
        out(f"keep-alives received and acknowledged: {ka:,} = {ka / window:,.0f}/s "
            f"({ka / window / expected_ka:.2f} of N/interval = {expected_ka:,.0f}/s); "
            f"load generator: PE side {own / window:.2f} cores, resolver "
            f"{resolution.client_cores:.2f} cores")
        out(f"resolutions during the load: {resolution.ok:,} answered of {resolution.sent:,} "
            f"sent at {ns.resolve_rate:g}/s ({resolution.errors} errors, "
            f"{resolution.backlogged} skipped for {ns.resolve_in_flight} outstanding); "
            f"latency {fmt_latency(resolution.pct)}")
        if resolution.errors:
            failures.append(f"resolutions: {resolution.errors} errors, e.g. "
                            f"{resolution.samples}")
        if ns.max_cores is not None and cores > ns.max_cores:
            rc = 2

        # all PEs still there?
        within = ns.keep_alive_interval + ns.keep_alive_timeout
        if time.monotonic() - registered_at < within:
            out(f"keep-alive check skipped: less than {within:g} s (keep-alive interval + "
                f"timeout) since the registrations")
        else:
            fresh = farm.fresh(within)
            out(f"PEs with a keep-alive in the last {within:g} s: {fresh:,} of {ns.pes:,}")
            if fresh != ns.pes:
                failures.append(f"{ns.pes - fresh} PEs had no keep-alive in the last "
                                f"{within:g} s")
        calls = math.ceil(ns.pes / 128) + 1
        seen, problems = await enumerate_pool(host, port, pool, calls)
        mine = sum(1 for i in seen if 0 <= i - farm.base < ns.pes)
        out(f"{calls} resolutions of 128 items named {mine:,} distinct PEs of {ns.pes:,}"
            + ("" if registrar else " (a registrar not started here may not walk the pool)"))
        if problems:
            failures.append(f"enumeration: {problems[:5]}")
        if registrar and mine != ns.pes:
            failures.append(f"only {mine} of {ns.pes} PEs named by the enumeration")
        if farm.lost:
            failures.extend(farm.lost[:10])
        if farm.failure_count:
            failures.append(f"PE side: {farm.failure_count} problems, e.g. {farm.failures}")

        # teardown
        cpu2, t2 = cpu_seconds(pid), time.monotonic()
        if ns.teardown == "deregister":
            await farm.deregister()
            gone = time.monotonic() - t2
            out(f"teardown: {farm.deregistered:,} deregistrations answered in {gone:.2f} s")
            farm.close()
        else:
            farm.close()
            gone = await wait_pool_gone(host, port, pool, 60.0)
            if gone is None:
                failures.append("the pool was still there 60 s after its associations closed")
            else:
                out(f"teardown: closed the {farm.associations} associations; the pool was gone "
                    f"{gone:.2f} s later; registrar CPU {cpu_seconds(pid) - cpu2:.2f} s")
        probe = await resolve_once(host, port, pool, 1)
        if check_response(probe, pool, None) is None:
            left = len(decode_message(probe, "asap").pool_elements)
            failures.append(f"pool still resolvable after teardown ({left} PEs returned)")
    except BENCH_ERRORS as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if farm:
            farm.close()
        stop_servers(failures, registrar)
        if end_report(out, failures):
            rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(__doc__)
    parser.add_argument("--pid", type=int, help="with --target: the registrar's pid "
                        "(default: the process listening on the port, if visible)")
    parser.add_argument("--pes", type=int, default=100_000, help="pool elements to register")
    parser.add_argument("--associations", type=int, default=300,
                        help="TCP connections the PEs register over")
    parser.add_argument("--window", type=int, default=32,
                        help="registrations outstanding per association")
    parser.add_argument("--pool", default="LoadPool", help="pool handle")
    parser.add_argument("--policy", choices=sorted(POLICIES), default="RR")
    parser.add_argument("--life", type=int, default=3_600_000,
                        help="registration life, ms (the PEs do not re-register)")
    parser.add_argument("--keep-alive-interval", type=float, default=5.0,
                        help="seconds (passed to the registrar this starts)")
    parser.add_argument("--keep-alive-timeout", type=float, default=5.0,
                        help="seconds (passed to the registrar this starts)")
    parser.add_argument("--settle", type=float,
                        help="seconds between the registrations and the measurement "
                             "(default: keep-alive interval + 2)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of steady state measured")
    parser.add_argument("--sample", type=float, default=5.0,
                        help="seconds between CPU samples during the steady state")
    parser.add_argument("--resolve-rate", type=float, default=100.0,
                        help="resolutions per second during the steady state")
    parser.add_argument("--resolve-in-flight", type=int, default=64,
                        help="most resolutions outstanding (more are skipped and counted)")
    parser.add_argument("--items", type=int, default=3, help="items per resolution")
    parser.add_argument("--teardown", choices=("close", "deregister"), default="close")
    parser.add_argument("--max-cores", type=float,
                        help="exit 2 if the steady-state CPU use is above this")
    add_registrar_and_out_options(parser)
    ns = parser.parse_args(argv)
    if ns.pes < 1 or ns.associations < 1 or ns.window < 1 or ns.duration <= 0:
        parser.error("--pes, --associations, --window and --duration must be positive")
    if ns.settle is None:
        ns.settle = ns.keep_alive_interval + 2.0
    return run_bench(bench, ns)


if __name__ == "__main__":
    sys.exit(main())
