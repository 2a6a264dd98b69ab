"""Handle resolutions per second against a registrar over TCP, beside a
minimal asyncio echo server answering the same message sizes under the same load.

Usage (loopback only)::

    .venv/bin/python benches/load_resolution.py                  # starts both servers itself
    .venv/bin/python benches/load_resolution.py --processes 1 --connections 8 \\
        --in-flight 32 --duration 10 --rounds 3 --out benches/results/load-resolution.txt
    .venv/bin/python benches/load_resolution.py --target 127.0.0.1:3863 --pes 0

By default the tool starts ``python -m rserpool registrar`` (TCP only, on
127.0.0.1, an ephemeral port, no announces) as a subprocess, registers
``--pes`` pool elements in ``--pool`` over ``--pe-associations`` TCP
connections (and answers the registrar's keep-alives on them for the whole
run), asks for one Handle Resolution to learn the response, then starts the
echo server of this file (``--serve-echo``) as a second subprocess that
answers every framed message with exactly those response bytes.  With
``--target HOST:PORT`` it uses a registrar already running instead (the echo
server is still started; ``--no-echo`` skips it).

Each measured phase spawns ``--processes`` worker processes; each opens
``--connections`` TCP connections and keeps ``--in-flight`` Handle Resolution
requests pipelined on each (a new request is written as each response
arrives), until ``--requests`` (over all workers) or ``--duration`` seconds,
whichever comes first.  Every response is decoded and checked (a Handle
Resolution Response for the pool, no error, the expected number of pool
elements); any error makes the run fail.  Phases run registrar, echo, then
echo, registrar, ... for ``--rounds`` rounds after a short warm-up of each, so
that the noise of a shared machine hits both alike; the ratio registrar/echo
is quoted per round and as the median.  Server CPU (``/proc/<pid>/stat``) per
request is printed beside each rate: it is less sensitive to other load on
the machine than the rate is.

The exit status is 0 when everything was answered correctly, 1 when anything
failed (errors, a server that died or did not stop on SIGTERM), 2 when
``--min-ratio`` is given and the median ratio is below it.

``PeFarm``, ``run_load`` and the helpers here are also used by
``benches/load_registrations.py``; what else the two share is in
``benches/_loadcommon.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import signal
import statistics
import sys
import time
from array import array
from collections import deque
from itertools import repeat
from typing import Any

from rserpool.constants import AsapType, PolicyType, TransportUse
from rserpool.errors import WireError
from rserpool.wire import (Deregistration, EndpointKeepAliveAck, HandleResolution,
                           HandleResolutionResponse, PoolElement, PoolPolicy, Registration,
                           StreamFramer, TcpTransport, decode_message, encode_message)

from _loadcommon import (BENCH_ERRORS, Output, ServerProcess, add_registrar_and_out_options,
                         cpu_seconds, end_report, loopback_target, new_parser,
                         registrar_under_test, run_bench, start_report, stop_servers)

POLICIES = {"RR": (PolicyType.ROUND_ROBIN, ()), "RAND": (PolicyType.RANDOM, ()),
            "LU": (PolicyType.LEAST_USED, (0,)), "WRR": (PolicyType.WEIGHTED_ROUND_ROBIN, (1,))}
#: How long a phase may take, past its duration, to collect its last answers.
DRAIN_TIMEOUT = 10.0
_KEEP_ALIVE = AsapType.ENDPOINT_KEEP_ALIVE
_REGISTRATION_RESPONSE = AsapType.REGISTRATION_RESPONSE
_DEREGISTRATION_RESPONSE = AsapType.DEREGISTRATION_RESPONSE


# ---------------------------------------------------------------------------
# latencies

class Latencies:
    """A histogram of latencies in 1 µs buckets up to ``LIMIT`` µs (the rest
    kept as they are): percentiles to the microsecond in fixed memory,
    merged across processes and rounds by adding counts."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * self.LIMIT))
        self.over: list[float] = []
        self.n = 0

    def add(self, seconds: float) -> None:
        us = int(seconds * 1e6)
        if us < self.LIMIT:
            self.counts[us] += 1
        else:
            self.over.append(seconds)
        self.n += 1

    def to_state(self) -> tuple[bytes, list[float], int]:
        return self.counts.tobytes(), self.over, self.n

    def merge(self, other: "Latencies | tuple[bytes, list[float], int]") -> None:
        counts, over, n = other.to_state() if isinstance(other, Latencies) else other
        add = array("Q")
        add.frombytes(counts)
        mine = self.counts
        for i, c in enumerate(add):
            if c:
                mine[i] += c
        self.over.extend(over)
        self.n += n

    def percentiles(self) -> dict[str, float]:
        """Nearest-rank p50/p90/p99 and the maximum, in seconds (the upper
        edge of the 1 µs bucket)."""
        if not self.n:
            nan = float("nan")
            return {"p50": nan, "p90": nan, "p99": nan, "max": nan}
        ranks = {name: max(1, math.ceil(p * self.n))
                 for name, p in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))}
        out: dict[str, float] = {}
        seen = 0
        top = 0
        for us, c in enumerate(self.counts):
            if c:
                seen += c
                top = us
                for name, rank in ranks.items():
                    if name not in out and seen >= rank:
                        out[name] = (us + 1) / 1e6
        over = sorted(self.over)
        for name, rank in ranks.items():
            if name not in out:
                out[name] = over[rank - seen - 1]
        out["max"] = over[-1] if over else (top + 1) / 1e6
        return out


def fmt_latency(p: dict[str, float]) -> str:
    return (f"p50 {p['p50'] * 1e3:.3f} ms  p90 {p['p90'] * 1e3:.3f}  p99 {p['p99'] * 1e3:.3f}  "
            f"max {p['max'] * 1e3:.3f}")


# ---------------------------------------------------------------------------
# the echo server (runs as ``load_resolution.py --serve-echo``)

class _EchoProtocol(asyncio.Protocol):
    """Reads ASAP messages framed by their header length; answers each with
    ``reply``, all the replies to one read in one write (as the registrar's
    transport does, so both make the same number of system calls)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.framer = StreamFramer()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except WireError:
            self.transport.abort()
            return
        if messages:
            self.transport.write(self.reply * len(messages))


async def serve_echo(address: str, port: int, reply: bytes) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _EchoProtocol(reply), address, port,
                                      backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"echo server: tcp port {bound[1]} on {bound[0]}, {len(reply)}-byte replies",
          flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


async def start_echo(reply: bytes, host: str = "127.0.0.1") -> ServerProcess:
    server = ServerProcess("echo", [sys.executable, os.path.abspath(__file__), "--serve-echo",
                                    "--address", host, "--reply", reply.hex()],
                           r"\btcp port (\d+)")
    try:
        await server.wait_ready(host)
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------
# pool elements: register, answer keep-alives

class _PeChannel(asyncio.Protocol):
    """One association of a :class:`PeFarm`: registers its PEs (``window``
    outstanding at a time) and acknowledges every keep-alive."""

    def __init__(self, farm: "PeFarm", first: int, count: int) -> None:
        self.farm = farm
        self.first = first
        self.count = count
        self.framer = StreamFramer()
        self.transport: Any = None
        self.next = first
        self.outstanding = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closing = False
        self.local = ""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # the user address must be a peer address of this connection (6.3 step 2)
        self.local = transport.get_extra_info("sockname")[0].split("%")[0]

    def register(self) -> None:
        self._send_registrations(self.farm.window)
        if self.count == 0:
            self.done.set_result(None)

    def _send_registrations(self, k: int) -> None:
        farm = self.farm
        end = min(self.next + k, self.first + self.count)
        if end > self.next:
            self.transport.write(b"".join(farm.registration(i, self.local)
                                          for i in range(self.next, end)))
            self.outstanding += end - self.next
            self.next = end

    def data_received(self, data: bytes) -> None:
        farm = self.farm
        try:
            messages = self.framer.feed(data)
        except WireError as exc:
            farm.fail(f"association {self.first}: bad framing from the registrar: {exc}")
            self.transport.abort()
            return
        now = time.monotonic()
        acks = []
        answered = 0
        for m in messages:
            try:
                msg = decode_message(m, "asap")
            except WireError as exc:
                farm.fail(f"undecodable message from the registrar: {exc}: {m[:32].hex()}")
                continue
            kind = m[0]
            if kind == _KEEP_ALIVE:
                farm.keep_alives += 1
                if msg.home:
                    farm.home_keep_alives += 1
                if msg.identifier is None:   # RFC form: acknowledge for all our PEs
                    idents = [farm.base + i for i in range(self.first, self.next)]
                else:
                    idents = [msg.identifier]
                for ident in idents:
                    i = ident - farm.base
                    if 0 <= i < farm.count:
                        farm.last_keep_alive[i] = now
                    else:
                        farm.fail(f"keep-alive for PE ID {ident:#x}, not one of ours")
                    acks.append(encode_message(EndpointKeepAliveAck(msg.pool_handle, ident)))
            elif kind == _REGISTRATION_RESPONSE:
                answered += 1
                i = msg.identifier - farm.base
                if msg.rejected or msg.error:
                    farm.fail(f"registration of PE {msg.identifier:#x} rejected: "
                              f"{[(hex(c.code), c.info.hex()) for c in msg.error or ()]}")
                elif 0 <= i < farm.count:
                    farm.accepted += 1
                else:
                    farm.fail(f"registration response for PE ID {msg.identifier:#x}, "
                              f"not one of ours")
            elif kind == _DEREGISTRATION_RESPONSE:
                answered += 1
                if msg.error:
                    farm.fail(f"deregistration of PE {msg.identifier:#x}: {msg.error}")
                else:
                    farm.deregistered += 1
            else:
                farm.fail(f"unexpected {type(msg).__name__} from the registrar: {msg}")
        if acks:
            self.transport.write(b"".join(acks))
            farm.acks += len(acks)
        if answered:
            self.outstanding -= answered
            if not farm.deregistering:
                self._send_registrations(answered)
            if self.outstanding <= 0 and not self.done.done() and (
                    farm.deregistering or self.next >= self.first + self.count):
                self.done.set_result(None)

    def deregister(self) -> None:
        farm = self.farm
        self.done = asyncio.get_running_loop().create_future()
        idents = range(self.first, self.next)
        if not idents:
            self.done.set_result(None)
            return
        self.transport.write(b"".join(
            encode_message(Deregistration(farm.pool, farm.base + i)) for i in idents))
        self.outstanding += len(idents)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.farm.lost.append(f"association {self.first}..{self.first + self.count - 1} "
                                  f"closed by the registrar ({exc or 'EOF'})")
        if not self.done.done():
            self.done.set_result(None)


class PeFarm:
    """``count`` pool elements of one pool over ``associations`` TCP
    connections to a registrar: registers them, acknowledges keep-alives,
    remembers when each PE last had one, and closes (or deregisters) them."""

    def __init__(self, host: str, port: int, pool: bytes, count: int, associations: int, *,
                 policy: str = "RR", life_ms: int = 3_600_000, window: int = 32,
                 user_port_base: int = 20000) -> None:
        self.host, self.port, self.pool, self.count = host, port, pool, count
        self.associations = max(1, min(associations, count)) if count else 0
        self.window = window
        self.base = random.randrange(1, 0xFFFFFFFF - count - 1)
        ptype, values = POLICIES[policy]
        self.policy = PoolPolicy(ptype, values)
        self.life_ms = life_ms
        self.user_port_base = user_port_base
        self.channels: list[_PeChannel] = []
        self.last_keep_alive = array("d", bytes(8 * count))
        self.accepted = 0
        self.deregistered = 0
        self.keep_alives = 0
        self.home_keep_alives = 0
        self.acks = 0
        self.deregistering = False
        self.failures: list[str] = []
        self.failure_count = 0
        self.lost: list[str] = []

    def fail(self, text: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 10:
            self.failures.append(text)

    def registration(self, i: int, address: str) -> bytes:
        pe = PoolElement(self.base + i, 0, self.life_ms,
                         TcpTransport(self.user_port_base + i % 40000, (address,),
                                      TransportUse.DATA_PLUS_CONTROL),
                         self.policy)
        return encode_message(Registration(self.pool, pe))

    async def start(self, connect_concurrency: int = 50) -> float:
        """Connect and register everything; the seconds the registrations took
        (from the first registration sent to the last response)."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(connect_concurrency)
        share, extra = divmod(self.count, self.associations) if self.associations else (0, 0)

        async def connect(index: int, first: int, n: int) -> _PeChannel:
            async with gate:
                _, channel = await loop.create_connection(
                    lambda: _PeChannel(self, first, n), self.host, self.port)
            return channel

        jobs = []
        first = 0
        for a in range(self.associations):
            n = share + (a < extra)
            jobs.append(connect(a, first, n))
            first += n
        self.channels = list(await asyncio.gather(*jobs))
        t0 = time.monotonic()
        for ch in self.channels:
            ch.register()
        await asyncio.gather(*(ch.done for ch in self.channels))
        return time.monotonic() - t0

    def fresh(self, within: float, now: float | None = None) -> int:
        """PEs whose last keep-alive came less than ``within`` seconds ago."""
        limit = (time.monotonic() if now is None else now) - within
        return sum(1 for t in self.last_keep_alive if t >= limit)

    async def deregister(self, timeout: float = 60.0) -> None:
        self.deregistering = True
        for ch in self.channels:
            if not ch.transport.is_closing():
                ch.deregister()
        await asyncio.wait_for(asyncio.gather(*(ch.done for ch in self.channels)), timeout)

    def close(self) -> None:
        for ch in self.channels:
            ch.closing = True
            if ch.transport is not None:
                ch.transport.close()


# ---------------------------------------------------------------------------
# one resolution

def check_response(data: bytes, pool: bytes, expect: int | None) -> str | None:
    """None if ``data`` is a good Handle Resolution Response, else what is wrong."""
    try:
        msg = decode_message(data, "asap")
    except WireError as exc:
        return f"undecodable response: {type(exc).__name__}: {exc}"
    if type(msg) is not HandleResolutionResponse:
        return f"{type(msg).__name__} instead of a Handle Resolution Response"
    if msg.error is not None:
        return "error response: " + ", ".join(f"cause {c.code:#06x}" for c in msg.error)
    if msg.pool_handle != pool:
        return f"response for pool {msg.pool_handle!r}"
    if msg.policy is None:
        return "response without a policy parameter"
    if expect is not None and len(msg.pool_elements) != expect:
        return f"{len(msg.pool_elements)} pool elements instead of {expect}"
    return None


async def resolve_once(host: str, port: int, pool: bytes, items: int | None,
                       timeout: float = 10.0) -> bytes:
    """One Handle Resolution on a new connection; the raw response."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(encode_message(HandleResolution(pool, items)))
        header = await asyncio.wait_for(reader.readexactly(4), timeout)
        length = int.from_bytes(header[2:4], "big")
        return header + await asyncio.wait_for(reader.readexactly(length - 4), timeout)
    finally:
        writer.close()


async def enumerate_pool(host: str, port: int, pool: bytes, calls: int,
                         items: int = 128) -> tuple[set[int], list[str]]:
    """PE IDs seen over ``calls`` resolutions of ``items`` (one connection)."""
    seen: set[int] = set()
    problems: list[str] = []
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = encode_message(HandleResolution(pool, items))
        framer = StreamFramer()
        for _ in range(calls):
            writer.write(request)
            messages: list[bytes] = []
            while not messages:
                data = await asyncio.wait_for(reader.read(65536), 10.0)
                if not data:
                    raise ConnectionError("registrar closed the connection")
                messages = framer.feed(data)
            for m in messages:
                problem = check_response(m, pool, None)
                if problem:
                    problems.append(problem)
                    continue
                seen.update(pe.identifier for pe in decode_message(m, "asap").pool_elements)
    finally:
        writer.close()
    return seen, problems


# ---------------------------------------------------------------------------
# load worker processes

class _Run:
    """The state of one worker process's load."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.pool: bytes = spec["pool"]
        self.expect: int | None = spec["expect"]
        self.request = encode_message(HandleResolution(self.pool, spec["items"]))
        self.in_flight: int = spec["in_flight"]
        self.rate: float = spec.get("rate", 0.0)
        self.latencies = Latencies()
        self.ok = 0
        self.errors = 0
        self.samples: list[str] = []
        self.sent = 0
        self.backlogged = 0
        self.deadline = 0.0
        self.last = 0.0
        self.active = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def error(self, text: str, count: int = 1) -> None:
        self.errors += count
        if len(self.samples) < 10:
            self.samples.append(text)

    def finished_one(self) -> None:
        self.active -= 1
        if self.active == 0 and not self.done.done():
            self.done.set_result(None)


class _Resolver(asyncio.Protocol):
    """One connection of a worker: pipelined (or paced) Handle Resolutions."""

    def __init__(self, run: _Run, quota: int) -> None:
        self.run = run
        self.quota = quota
        self.sent: deque[float] = deque()
        self.framer = StreamFramer()
        self.transport: Any = None
        self.stopped = False
        self.finished = False
        self.next_tick = 0.0
        self.interval = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def begin(self, start: float, interval: float) -> None:
        if interval > 0:
            self.interval = interval
            self.next_tick = start
            self._tick()
        else:
            self._send(min(self.run.in_flight, self.quota), time.monotonic())

    def _send(self, k: int, now: float) -> None:
        if k > 0:
            self.quota -= k
            self.run.sent += k
            self.sent.extend(repeat(now, k))
            self.transport.write(self.run.request * k)

    def _tick(self) -> None:
        run = self.run
        now = time.monotonic()
        if self.finished:
            return
        if now >= run.deadline or self.quota <= 0 or self.transport.is_closing():
            self.stopped = True
            if not self.sent:
                self._finish()
            return
        if len(self.sent) < run.in_flight:
            self._send(1, now)
        else:
            run.backlogged += 1
        self.next_tick += self.interval
        asyncio.get_running_loop().call_at(self.next_tick, self._tick)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        run = self.run
        try:
            messages = self.framer.feed(data)
        except WireError as exc:
            run.error(f"bad framing: {exc}")
            self.transport.abort()
            return
        sent = self.sent
        add_latency = run.latencies.add
        pool, expect = run.pool, run.expect
        n = 0
        for m in messages:
            if not sent:
                run.error(f"unsolicited message {m[:16].hex()}")
                continue
            n += 1
            t0 = sent.popleft()
            problem = check_response(m, pool, expect)
            if problem is None:
                run.ok += 1
                add_latency(now - t0)
            else:
                run.error(problem)
        if n:
            run.last = now
        if self.interval == 0 and not self.stopped:
            if now < run.deadline and self.quota > 0:
                self._send(min(n, self.quota), now)
            else:
                self.stopped = True
        if self.stopped and not sent:
            self._finish()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.transport.close()
            self.run.finished_one()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sent:
            self.run.error(f"connection lost with {len(self.sent)} requests unanswered "
                           f"({exc or 'EOF'})", len(self.sent))
            self.sent.clear()
        self.stopped = True
        if not self.finished:
            self.finished = True
            self.run.finished_one()


async def _worker(conn: Any, spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    run = _Run(spec)
    n = spec["connections"]
    share, extra = divmod(spec["requests"], n)
    protocols = []
    for i in range(n):
        _, proto = await loop.create_connection(
            lambda i=i: _Resolver(run, share + (i < extra)), spec["host"], spec["port"])
        protocols.append(proto)
    run.active = n
    conn.send(("ready",))
    command = await loop.run_in_executor(None, conn.recv)
    start = command[1]
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu0 = time.process_time()
    run.deadline = start + spec["duration"]
    interval = n / run.rate if run.rate > 0 else 0.0
    for i, proto in enumerate(protocols):
        proto.begin(start + (interval * i / n), interval)
    try:
        await asyncio.wait_for(asyncio.shield(run.done),
                               run.deadline - time.monotonic() + spec["drain_timeout"])
    except asyncio.TimeoutError:
        unanswered = sum(len(p.sent) for p in protocols)
        run.error(f"{unanswered} requests unanswered {spec['drain_timeout']:.0f} s after "
                  f"the end of the phase", unanswered)
    cpu = time.process_time() - cpu0
    for p in protocols:
        p.transport.abort()
    return {"ok": run.ok, "errors": run.errors, "samples": run.samples, "sent": run.sent,
            "latencies": run.latencies.to_state(), "start": start, "end": run.last or start,
            "cpu": cpu, "backlogged": run.backlogged}


def worker_main(conn: Any, spec: dict[str, Any]) -> None:
    """Entry point of a load worker process (multiprocessing, spawn)."""
    try:
        result = asyncio.run(_worker(conn, spec))
    except BaseException as exc:  # report anything to the parent, then exit
        result = {"fatal": f"{type(exc).__name__}: {exc}"}
    try:
        conn.send(result)
    finally:
        conn.close()


class LoadResult:
    """What a phase measured, over all its workers."""

    def __init__(self, name: str, results: list[dict[str, Any]],
                 server_cpu: float | None) -> None:
        self.name = name
        self.ok = sum(r["ok"] for r in results)
        self.errors = sum(r["errors"] for r in results)
        self.samples = [s for r in results for s in r["samples"]][:10]
        self.sent = sum(r["sent"] for r in results)
        self.backlogged = sum(r["backlogged"] for r in results)
        start = min(r["start"] for r in results)
        end = max(r["end"] for r in results)
        self.seconds = max(end - start, 1e-9)
        self.rate = self.ok / self.seconds
        self.latencies = Latencies()
        for r in results:
            self.latencies.merge(r["latencies"])
        self.pct = self.latencies.percentiles()
        self.client_cores = sum(r["cpu"] for r in results) / self.seconds
        self.server_cores = None if server_cpu is None else server_cpu / self.seconds
        self.server_us = None if server_cpu is None or not self.ok else server_cpu / self.ok * 1e6

    def line(self, label: str) -> str:
        server = ("" if self.server_cores is None else
                  f"  server {self.server_cores:.2f} cores, {self.server_us:.1f} µs/req")
        return (f"{label:<22} {self.ok:>9} ok {self.errors:>3} err {self.rate:>9,.0f} req/s  "
                f"{fmt_latency(self.pct)}{server}  clients {self.client_cores:.2f} cores")


async def run_load(name: str, host: str, port: int, server_pid: int | None, *, processes: int,
                   connections: int, in_flight: int, requests: int, duration: float,
                   pool: bytes, items: int | None, expect: int | None, rate: float = 0.0,
                   drain_timeout: float = DRAIN_TIMEOUT) -> LoadResult:
    """Spawn the workers, start them together, collect and merge their results."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    base = {"host": host, "port": port, "pool": pool, "items": items, "expect": expect,
            "connections": connections, "in_flight": in_flight, "duration": duration,
            "drain_timeout": drain_timeout}
    share, extra = divmod(requests, processes)
    workers = []
    try:
        for i in range(processes):
            parent_end, child_end = ctx.Pipe()
            spec = dict(base, requests=share + (i < extra),
                        rate=rate / processes if rate else 0.0)
            proc = ctx.Process(target=worker_main, args=(child_end, spec), daemon=True,
                               name=f"load-{name}-{i}")
            proc.start()
            child_end.close()
            workers.append((proc, parent_end))
        for proc, pipe in workers:
            first = await asyncio.wait_for(loop.run_in_executor(None, pipe.recv), 60)
            if "fatal" in first:
                raise RuntimeError(f"load worker failed to start: {first['fatal']}")
        start = time.monotonic() + 0.05
        cpu0 = cpu_seconds(server_pid) if server_pid else None
        for _, pipe in workers:
            pipe.send(("go", start))
        results = []
        for _, pipe in workers:
            r = await asyncio.wait_for(loop.run_in_executor(None, pipe.recv),
                                       duration + drain_timeout + 60)
            if "fatal" in r:
                raise RuntimeError(f"load worker failed: {r['fatal']}")
            results.append(r)
        server_cpu = cpu_seconds(server_pid) - cpu0 if server_pid and cpu0 is not None else None
    finally:
        for proc, pipe in workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
            pipe.close()
    return LoadResult(name, results, server_cpu)


# ---------------------------------------------------------------------------
# the benchmark

async def bench(ns: argparse.Namespace, out: Output) -> int:
    failures: list[str] = []
    start_report(out)
    pool = ns.pool.encode()
    registrar: ServerProcess | None = None
    echo: ServerProcess | None = None
    farm: PeFarm | None = None
    rc = 0
    try:
        registrar, host, port, pid = await registrar_under_test(ns, out, ns.registrar_arg)
        if not registrar:
            out(f"registrar: {host}:{port} (given), pid {pid or 'unknown: no CPU figures'}")
        if ns.pes:
            farm = PeFarm(host, port, pool, ns.pes, ns.pe_associations, policy=ns.policy)
            took = await farm.start()
            out(f"pool {ns.pool!r}: {farm.accepted} of {ns.pes} PEs ({ns.policy}) registered "
                f"over {farm.associations} associations in {took:.2f} s")
            if farm.accepted != ns.pes:
                failures.append(f"only {farm.accepted} of {ns.pes} registrations accepted: "
                                f"{farm.failures}")
                return 1
        probe = await resolve_once(host, port, pool, ns.items)
        problem = check_response(probe, pool, None)
        if problem:
            failures.append(f"probe resolution: {problem}")
            return 1
        expect = len(decode_message(probe, "asap").pool_elements)
        if ns.pes and expect != min(ns.items, ns.pes, 128):
            failures.append(f"the registrar returned {expect} PEs for items={ns.items} with "
                            f"{ns.pes} registered (expected {min(ns.items, ns.pes, 128)})")
            return 1
        request_size = len(encode_message(HandleResolution(pool, ns.items)))
        out(f"request {request_size} bytes (Handle Resolution, items={ns.items}), response "
            f"{len(probe)} bytes ({expect} PEs); every response decoded and checked")
        servers: list[tuple[str, int, int | None]] = [("registrar", port, pid)]
        if not ns.no_echo:
            echo = await start_echo(probe, host)
            servers.append(("echo", echo.port, echo.pid))
            out(f"echo server: started, pid {echo.pid}, tcp {host}:{echo.port}, answers each "
                f"framed message with those {len(probe)} bytes (the replies to one read in one write)")
        out(f"load: {ns.processes} processes x {ns.connections} connections x "
            f"{ns.in_flight} in flight; each phase up to {ns.requests:,} requests or "
            f"{ns.duration:g} s; {ns.rounds} rounds, order alternating")

        where = {name: (p, q) for name, p, q in servers}

        def load(name: str, seconds: float) -> Any:
            return run_load(name, host, *where[name], processes=ns.processes,
                            connections=ns.connections, in_flight=ns.in_flight,
                            requests=ns.requests, duration=seconds, pool=pool, items=ns.items,
                            expect=expect)
        results: dict[str, list[LoadResult]] = {name: [] for name, _, _ in servers}

        def note(result: LoadResult) -> None:
            if result.errors:
                failures.append(f"{result.name}: {result.errors} errors, e.g. {result.samples}")

        if ns.warmup > 0:
            for name, _, _ in servers:
                r = await load(name, ns.warmup)
                note(r)
                out(r.line(f"warm-up {name}"))
        for rnd in range(ns.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for name, _, _ in order:
                r = await load(name, ns.duration)
                note(r)
                results[name].append(r)
                out(r.line(f"round {rnd + 1} {name}"))
            if farm and farm.lost:
                failures.extend(farm.lost)
                break
        out()
        for name, _, _ in servers:
            rs = results[name]
            if not rs:
                continue
            pooled = Latencies()
            for r in rs:
                pooled.merge(r.latencies)
            us = [r.server_us for r in rs if r.server_us is not None]
            out(f"{name:<10} median {statistics.median(r.rate for r in rs):>9,.0f} req/s over "
                f"{len(rs)} rounds ({sum(r.ok for r in rs):,} requests, "
                f"{sum(r.errors for r in rs)} errors); latency {fmt_latency(pooled.percentiles())}"
                + (f"; server CPU {statistics.median(us):.1f} µs/req" if us else ""))
        if "echo" in results and results["echo"] and results["registrar"]:
            ratios = [r.rate / e.rate for r, e in zip(results["registrar"], results["echo"])]
            median = statistics.median(ratios)
            verdict = "met" if median >= 0.5 else "NOT met"
            out(f"ratio registrar/echo req/s: {' '.join(f'{x:.2f}' for x in ratios)}; "
                f"median {median:.2f} (target >= 0.5: {verdict})")
            cpu_r = [r.server_us for r in results["registrar"] if r.server_us]
            cpu_e = [e.server_us for e in results["echo"] if e.server_us]
            if cpu_r and cpu_e:
                out(f"server CPU per request, echo/registrar: "
                    f"{statistics.median(cpu_e) / statistics.median(cpu_r):.2f} "
                    f"({statistics.median(cpu_r):.1f} µs registrar, "
                    f"{statistics.median(cpu_e):.1f} µs echo)")
            if ns.min_ratio is not None and median < ns.min_ratio:
                rc = 2
        if ns.paced_rate > 0:
            out()
            out(f"paced: {ns.paced_rate:,.0f} requests/s offered to each server for "
                f"{ns.paced_duration:g} s ({ns.processes} processes x {ns.connections} "
                f"connections, one request per tick, at most {ns.in_flight} outstanding per "
                f"connection): latency at equal load")
            for name, p, q in servers:
                r = await run_load(name, host, p, q, processes=ns.processes,
                                   connections=ns.connections, in_flight=ns.in_flight,
                                   requests=ns.requests, duration=ns.paced_duration, pool=pool,
                                   items=ns.items, expect=expect, rate=ns.paced_rate)
                note(r)
                out(r.line(f"paced {name}") + (f"  ({r.backlogged} ticks skipped)"
                                               if r.backlogged else ""))
        if farm:
            out(f"PE associations: {farm.keep_alives} keep-alives answered during the run, "
                f"{len(farm.lost)} associations lost, {farm.failure_count} problems")
            if farm.failure_count:
                failures.append(f"PE associations: {farm.failures}")
            if farm.lost:
                failures.extend(farm.lost)
    except BENCH_ERRORS as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if farm:
            farm.close()
        stop_servers(failures, echo, registrar)
        if end_report(out, failures):
            rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = new_parser(__doc__)
    parser.add_argument("--pid", type=int,
                        help="with --target: the registrar's pid, for its CPU use "
                             "(default: the process listening on the port, if visible)")
    parser.add_argument("--processes", "--clients", type=int,
                        default=max(1, len(os.sched_getaffinity(0)) - 1),
                        help="load worker processes (default: usable cores - 1, at least 1, "
                             "so that the server has a core of its own)")
    parser.add_argument("--connections", type=int, default=8, help="connections per process")
    parser.add_argument("--in-flight", type=int, default=32,
                        help="requests pipelined per connection")
    parser.add_argument("--requests", type=int, default=10_000_000,
                        help="requests per phase (all processes)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3,
                        help="registrar and echo phases, alternating order")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unreported load on each server first")
    parser.add_argument("--paced-rate", type=float, default=10000.0,
                        help="then offer each server this many requests/s (open loop) "
                             "for the latency at equal load; 0: skip")
    parser.add_argument("--paced-duration", type=float, default=5.0,
                        help="seconds of the paced phase per server")
    parser.add_argument("--pool", default="LoadPool", help="pool handle")
    parser.add_argument("--items", type=int, default=3,
                        help="items asked for in each resolution")
    parser.add_argument("--pes", type=int, default=10,
                        help="PEs to register first (0: use the pool as it is)")
    parser.add_argument("--pe-associations", type=int, default=2,
                        help="connections the PEs register over")
    parser.add_argument("--policy", choices=sorted(POLICIES), default="RR",
                        help="the PEs' policy")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo baseline")
    parser.add_argument("--min-ratio", type=float,
                        help="exit 2 if the median registrar/echo ratio is below this")
    add_registrar_and_out_options(parser, ", e.g. --registrar-arg=--verbose")
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reply", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.serve_echo:
        reply = bytes.fromhex(ns.reply or "")
        if len(reply) < 4:
            parser.error("--serve-echo needs --reply HEX (a whole message)")
        loopback_target(f"{ns.address}:{ns.port or 1}")
        asyncio.run(serve_echo(ns.address, ns.port, reply))
        return 0
    for name in ("processes", "connections", "in_flight", "requests", "rounds", "items"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if ns.duration <= 0 or ns.pes < 0 or ns.pe_associations < 1:
        parser.error("--duration must be positive, --pes >= 0, --pe-associations >= 1")
    return run_bench(bench, ns)


if __name__ == "__main__":
    sys.exit(main())
