"""A registrar joining a scope that already holds many pool elements: how fast
it downloads the whole handlespace from its mentor over ENRP.

Usage (loopback only)::

    .venv/bin/python benches/load_enrp_download.py           # 100,000 PEs, 3 + 1 registrars
    .venv/bin/python benches/load_enrp_download.py --out benches/results/enrp-download.txt
    .venv/bin/python benches/load_enrp_download.py --pes 20000 --page 128 --rounds 1 \\
        --profile /tmp/enrp-prof

It starts ``--registrars`` registrar processes (``python -m rserpool
registrar``: TCP only, 127.0.0.1, ephemeral ASAP and ENRP ports, no multicast,
no announces, keep-alive interval ``--keep-alive-interval``), registrar *k*
with every earlier one as static ENRP peer (``--peer tcp:127.0.0.1:PORT``), and
waits until each has heard all the others and ended its start-up.  Then:

1. registers ``--pes`` PEs, spread evenly over the registrars and over
   ``--pools`` pools, over ``--associations`` TCP connections in all, and
   acknowledges every Endpoint Keep-Alive on them from then on;
2. waits until every registrar holds all of them, by downloading each one's
   handlespace with ``rserpool.aio.hsdump`` (an ENRP observer) and checking the
   PEs per home registrar;
3. for each of ``--rounds`` rounds and each ``--page`` value P (a
   comma-separated list, its order alternating between rounds; registrar *i*
   serves the *i*-th with ``--max-elements-per-ht-request P``): starts one more
   registrar (the *joiner*, a new ID each
   time) with registrar *i* as its only static peer, and follows its log
   ("mentor ...: downloading its handle table", "handle table of ...
   downloaded: N PEs in M responses", "start-up over"): the seconds from the
   process start to each line (the log's millisecond timestamps), the download
   itself (first to second line) in PEs/s, the responses and the PEs per
   response, the CPU seconds of the joiner and of the mentor over the download
   (``/proc``, sampled when the lines appear; the mentor's background rate,
   keep-alives mostly, measured just before), the joiner's RSS before and after;
4. verifies the joiner: its handlespace, downloaded with hsdump, must equal the
   mentor's PE for PE (every field of the wire Pool Element parameter, home
   registrar included), with equal per-owner counts and checksums; anything
   else is a failure.  The joiner is stopped and, before the next one starts,
   the bench waits until every registrar has dropped it from its peer table.

``--profile DIR`` runs every joiner under cProfile (``DIR/joiner-P-R.prof``)
and prints its top functions (its whole life: start-up, the download, and
serving the hsdump of step 4, which is where its ``_page`` and
``_on_ht_request`` calls come from); the mentor's side is profiled without I/O by
``--profile-core`` (the ENRP cores of a mentor and a joiner in this process,
the mentor's handlespace filled with the same PEs, messages handed over
directly), which shows the split between serving, decoding and applying.

The exit status is 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import re
import shlex
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _loadcommon import (BENCH_ERRORS, Output, ServerProcess,  # noqa: E402
                         REGISTRAR_PORT_PATTERN, cpu_seconds, end_report, registrar_command,
                         rss_bytes, run_bench, start_report, stop_servers)
from load_resolution import PeFarm  # noqa: E402

from rserpool.wire import encode_parameter  # noqa: E402

#: Registrar IDs: the scope's registrars, then the joiners.
BASE_ID = 0x10000001
JOINER_ID = 0x40000001
#: A line of the registrar's start-up message naming its TCP ENRP endpoint.
ENRP_PORT_PATTERN = re.compile(r"ENRP over TCP on \[?127\.0\.0\.1\]?:(\d+)")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([\w.]+): (.*)$")
_MENTOR = re.compile(r"mentor 0x([0-9a-f]{8}): downloading its handle table")
_DOWNLOADED = re.compile(r"handle table of 0x([0-9a-f]{8}) downloaded: (\d+) PEs in "
                         r"(\d+) responses")
_STARTUP = re.compile(r"start-up over \((no mentor|mentor 0x([0-9a-f]{8}))\): "
                      r"serving (\d+) PEs in (\d+) pools")
_APPEARED = re.compile(r"peer 0x([0-9a-f]{8}) appeared")
_LOST = re.compile(r"peer 0x([0-9a-f]{8}) lost")
#: Log lines of a joiner that make its round fail.
_BAD = re.compile(r"abandoned|refused|audit: checksum|internal error|Traceback|"
                  r"MISMATCH", re.IGNORECASE)
#: Seconds between two looks at a joiner's log while it downloads.
POLL = 0.005


# ---------------------------------------------------------------------------
# registrar processes and their logs

class LogFollower:
    """The new lines of a server's log, read from where the last call stopped."""

    def __init__(self, server: ServerProcess) -> None:
        self.path = server.log.name
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        if not data:
            return []
        self.offset += len(data)
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        return data[:cut].decode(errors="replace").splitlines()


def stamp(line: str) -> tuple[float, str, str] | None:
    """(epoch seconds, level, message) of a timestamped log line."""
    m = _STAMP.match(line)
    if not m:
        return None
    seconds = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    return seconds + int(m.group(2)) / 1000.0, m.group(3), m.group(5)


class Node:
    """A registrar process of the bench: its ID, ports and log."""

    def __init__(self, name: str, rid: int, server: ServerProcess, started: float) -> None:
        self.name = name
        self.rid = rid
        self.server = server
        self.started = started    # time.time() just before the process was spawned
        self.log = LogFollower(server)
        self.asap_port = 0
        self.enrp_port = 0

    @property
    def pid(self) -> int:
        return self.server.pid

    def stop(self, failures: list[str]) -> None:
        stop_servers(failures, self.server)


async def start_node(name: str, rid: int, options: list[str], *, cmd: str | None,
                     profile: str | None = None, wait: bool = True) -> Node:
    """A registrar process with ID ``rid``; with ``wait``, once it listens."""
    command = registrar_command(cmd, ["--registrar-id", f"{rid:#010x}", *options])
    if profile:
        at = command.index("-m")
        command[at:at] = ["-m", "cProfile", "-o", profile]
    started = time.time()
    node = Node(name, rid, ServerProcess(name, command, REGISTRAR_PORT_PATTERN,
                                         raise_fds=True), started)
    if wait:
        try:
            node.asap_port = await node.server.wait_ready()
            node.enrp_port = await enrp_port(node.server)
        except BaseException:
            node.server.stop()
            raise
    return node


async def enrp_port(server: ServerProcess, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = ENRP_PORT_PATTERN.search(server.output())
        if m:
            return int(m.group(1))
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{server.name} printed no ENRP TCP endpoint:\n{server.tail()}")


async def wait_peered(nodes: list[Node], timeout: float) -> float:
    """Wait until every node has heard every other one and ended its start-up;
    the seconds it took."""
    t0 = time.monotonic()
    heard: dict[int, set[int]] = {n.rid: set() for n in nodes}
    over: set[int] = set()
    ids = {n.rid for n in nodes}
    while True:
        for n in nodes:
            for line in n.log.lines():
                m = _APPEARED.search(line)
                if m:
                    heard[n.rid].add(int(m.group(1), 16))
                if _STARTUP.search(line):
                    over.add(n.rid)
        if over == ids and all(heard[r] >= ids - {r} for r in ids):
            return time.monotonic() - t0
        for n in nodes:
            if n.server.proc.poll() is not None:
                raise RuntimeError(f"{n.name} exited:\n{n.server.tail()}")
        if time.monotonic() - t0 > timeout:
            missing = {f"{r:#010x}": sorted(f"{x:#010x}" for x in ids - {r} - heard[r])
                       for r in ids}
            raise RuntimeError(f"registrars not peered within {timeout:g} s: not heard "
                               f"{missing}; start-up over: {sorted(hex(r) for r in over)}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------
# handlespace snapshots (rserpool.aio.hsdump)

class Snapshot:
    """A registrar's handlespace as hsdump downloaded it: every PE's wire
    Pool Element parameter by (pool handle, identifier), per-owner counts and
    checksums."""

    def __init__(self, dump: Any) -> None:
        self.registrar_id = dump.registrar_id
        self.pages = dump.pages
        self.elapsed = dump.elapsed
        self.owners = dump.owners()
        self.checksums = dump.checksums()
        self.reported = dump.reported_checksum
        self.pools = len({handle for handle, _ in dump.elements})
        self.elements = {key: encode_parameter(pe) for key, pe in dump.elements.items()}

    def __len__(self) -> int:
        return len(self.elements)

    def differences(self, other: "Snapshot", limit: int = 5) -> list[str]:
        """What differs from ``other`` (empty: the same handlespace)."""
        out = []
        mine, theirs = self.elements, other.elements
        missing = theirs.keys() - mine.keys()
        extra = mine.keys() - theirs.keys()
        changed = [k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k]]
        if missing:
            out.append(f"{len(missing)} PEs missing, e.g. {_keys(missing, limit)}")
        if extra:
            out.append(f"{len(extra)} PEs too many, e.g. {_keys(extra, limit)}")
        if changed:
            k = changed[0]
            out.append(f"{len(changed)} PEs differ, e.g. {_keys(changed, limit)}: "
                       f"{mine[k].hex()} vs {theirs[k].hex()}")
        if self.owners != other.owners:
            out.append(f"PEs per owner {_counts(self.owners)} vs {_counts(other.owners)}")
        own = {h: c for h, c in self.checksums.items() if h != self.registrar_id
               or h in self.owners}
        their = {h: c for h, c in other.checksums.items() if h != other.registrar_id
                 or h in other.owners}
        if own != their:
            out.append(f"checksums per owner {_hexd(own)} vs {_hexd(their)}")
        return out


def _keys(keys: Any, limit: int) -> str:
    return ", ".join(f"{h.decode(errors='replace')}/{i:#010x}" for h, i in sorted(keys)[:limit])


def _hexd(d: dict[int, int]) -> str:
    return "{" + ", ".join(f"{k:#010x}: {v:#06x}" for k, v in sorted(d.items())) + "}"


def _counts(d: dict[int, int]) -> str:
    return "{" + ", ".join(f"{k:#010x}: {v:,}" for k, v in sorted(d.items())) + "}"


async def snapshot(port: int, timeout: float = 10.0) -> Snapshot:
    from rserpool.aio.hsdump import HandlespaceDumpError, dump_handlespace

    try:
        dump = await dump_handlespace("127.0.0.1", port, transport="tcp", timeout=timeout)
    except HandlespaceDumpError as exc:
        raise RuntimeError(f"hsdump of 127.0.0.1:{port}: {exc}") from None
    return Snapshot(dump)


async def wait_all_hold(nodes: list[Node], expect: dict[int, int], timeout: float
                        ) -> dict[int, Snapshot]:
    """Wait until each node's handlespace has ``expect`` PEs per owner; the
    last snapshot of each."""
    t0 = time.monotonic()
    shots: dict[int, Snapshot] = {}
    pending = list(nodes)
    while pending:
        for n in list(pending):
            shot = await snapshot(n.enrp_port)
            shots[n.rid] = shot
            if shot.owners == expect:
                pending.remove(n)
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("not every registrar holds every PE after "
                               f"{timeout:g} s: " + "; ".join(
                                   f"{n.name} {len(shots[n.rid]):,} "
                                   f"{_counts(shots[n.rid].owners)}" for n in pending))
        await asyncio.sleep(0.5)
    return shots


# ---------------------------------------------------------------------------
# one joiner

class Round:
    """What one joiner's download measured."""

    def __init__(self, page: int, index: int) -> None:
        self.page = page
        self.index = index
        self.t_mentor = self.t_downloaded = self.t_startup = float("nan")
        self.count = self.responses = 0
        self.startup_line = ""
        self.cpu_j = [0.0, 0.0]   # joiner CPU at the mentor line, at the downloaded line
        self.cpu_m = [0.0, 0.0]   # mentor CPU likewise
        self.rss = [0, 0]
        self.background = 0.0     # the mentor's CPU rate just before (cores)
        self.bad: list[str] = []
        self.warnings = 0

    @property
    def download(self) -> float:
        return self.t_downloaded - self.t_mentor

    @property
    def rate(self) -> float:
        return self.count / max(self.download, 1e-3)

    def line(self) -> str:
        dj = self.cpu_j[1] - self.cpu_j[0]
        dm = self.cpu_m[1] - self.cpu_m[0]
        bg = self.background * self.download
        return (f"page {self.page:>4} round {self.index}: mentor chosen {self.t_mentor:.3f} s "
                f"after the process start, downloaded {self.t_downloaded:.3f} s, start-up over "
                f"{self.t_startup:.3f} s; download {self.download:.3f} s = "
                f"{self.rate:,.0f} PEs/s, {self.count:,} PEs in {self.responses:,} responses "
                f"({self.count / max(self.responses, 1):.1f} PEs/response); CPU joiner "
                f"{dj:.2f} s ({dj / max(self.download, 1e-3):.2f} cores), mentor {dm:.2f} s "
                f"({dm / max(self.download, 1e-3):.2f} cores, {bg:.2f} s of it background); "
                f"joiner RSS {self.rss[0] / 2**20:.1f} -> {self.rss[1] / 2**20:.1f} MiB")


async def join(ns: argparse.Namespace, mentor: Node, page: int, index: int, rid: int,
               expect_total: int, reference: Snapshot, out: Output, failures: list[str]
               ) -> Round | None:
    """Start a joiner with ``mentor`` as its static peer, follow its download,
    verify it, stop it.  The round, or None when it failed."""
    r = Round(page, index)
    t = time.monotonic()
    c = cpu_seconds(mentor.pid)
    await asyncio.sleep(1.0)
    r.background = (cpu_seconds(mentor.pid) - c) / (time.monotonic() - t)
    profile = (os.path.join(ns.profile, f"joiner-{page}-{index}.prof") if ns.profile
               else None)
    options = ["--keep-alive-interval", f"{ns.keep_alive_interval:g}",
               "--peer", f"tcp:127.0.0.1:{mentor.enrp_port}", *ns.registrar_arg]
    joiner = await start_node(f"joiner-{index}", rid, options, cmd=ns.registrar_cmd,
                              profile=profile, wait=False)
    ok = False
    try:
        deadline = time.monotonic() + ns.timeout
        seen_mentor = seen_done = seen_startup = False
        while not (seen_done and seen_startup):
            if joiner.server.proc.poll() is not None:
                raise RuntimeError(f"the joiner exited:\n{joiner.server.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the joiner did not finish its download within "
                                   f"{ns.timeout:g} s:\n{joiner.server.tail()}")
            for line in joiner.log.lines():
                parsed = stamp(line)
                if parsed is None:
                    if "Traceback" in line:
                        r.bad.append(line)
                    continue
                when, level, text = parsed
                if level in ("WARNING", "ERROR", "CRITICAL"):
                    r.warnings += 1
                    if _BAD.search(text):
                        r.bad.append(text)
                m = _MENTOR.search(text)
                if m and not seen_mentor:
                    seen_mentor = True
                    r.cpu_j[0], r.cpu_m[0] = cpu_seconds(joiner.pid), cpu_seconds(mentor.pid)
                    r.rss[0] = rss_bytes(joiner.pid)
                    r.t_mentor = when - joiner.started
                    if int(m.group(1), 16) != mentor.rid:
                        r.bad.append(f"mentor {m.group(1)} instead of {mentor.rid:#010x}")
                m = _DOWNLOADED.search(text)
                if m and not seen_done:
                    seen_done = True
                    r.cpu_j[1], r.cpu_m[1] = cpu_seconds(joiner.pid), cpu_seconds(mentor.pid)
                    r.rss[1] = rss_bytes(joiner.pid)
                    r.t_downloaded = when - joiner.started
                    r.count, r.responses = int(m.group(2)), int(m.group(3))
                m = _STARTUP.search(text)
                if m and not seen_startup:
                    seen_startup = True
                    r.t_startup = when - joiner.started
                    r.startup_line = text
            await asyncio.sleep(POLL)
        if not seen_mentor:
            raise RuntimeError(f"the joiner never logged its mentor:\n{joiner.server.tail()}")
        out(r.line())
        if r.count != expect_total:
            r.bad.append(f"the joiner applied {r.count:,} PEs, not {expect_total:,}")
        if f"mentor 0x{mentor.rid:08x}" not in r.startup_line:
            r.bad.append(f"start-up: {r.startup_line!r} (not over with the mentor's "
                         f"download: --mentor-discovery-timeout shorter than the download?)")
        joiner.enrp_port = await enrp_port(joiner.server)
        got = await snapshot(joiner.enrp_port)
        now = await snapshot(mentor.enrp_port)
        diff = got.differences(now)
        if now.differences(reference):
            r.bad.append(f"the mentor's handlespace changed during the round: "
                         f"{now.differences(reference)}")
        if diff:
            r.bad.append("joiner != mentor: " + "; ".join(diff))
        elif not r.bad:
            out(f"  verified: the joiner holds the mentor's {len(got):,} PEs in {got.pools} "
                f"pools exactly (every Pool Element parameter byte for byte), per owner "
                + ", ".join(f"{h:#010x} {got.owners[h]:,} PEs checksum {got.checksums[h]:#06x}"
                            for h in sorted(got.owners))
                + f"; hsdump of the joiner: {got.pages:,} pages in {got.elapsed:.2f} s"
                + (f"; {r.warnings} other warnings in its log" if r.warnings else ""))
        ok = not r.bad
        if r.bad:
            failures.append(f"page {page} round {index}: " + "; ".join(r.bad[:5]))
    finally:
        problem = joiner.server.stop()
        if problem:
            failures.append(problem)
            ok = False
    if profile and os.path.exists(profile):
        show_profile(out, f"joiner, page {page} round {index} (cProfile, whole process life)",
                     profile, ns.profile_lines)
    return r if ok else None


async def wait_forgotten(nodes: list[Node], rid: int, timeout: float) -> float | None:
    """Seconds until every node has logged ``peer rid lost`` (None: timeout)."""
    t0 = time.monotonic()
    left = {n.rid for n in nodes}
    while left and time.monotonic() - t0 < timeout:
        for n in nodes:
            for line in n.log.lines():
                m = _LOST.search(line)
                if m and int(m.group(1), 16) == rid:
                    left.discard(n.rid)
        await asyncio.sleep(0.1)
    return None if left else time.monotonic() - t0


# ---------------------------------------------------------------------------
# profiles

def show_profile(out: Output, title: str, path_or_profile: Any, lines: int) -> None:
    text = io.StringIO()
    stats = pstats.Stats(path_or_profile, stream=text)
    stats.sort_stats("tottime").print_stats(lines)
    out(f"profile: {title}, top {lines} by own time:")
    body = text.getvalue().splitlines()
    start = next((i for i, ln in enumerate(body) if "ncalls" in ln), 0)
    for ln in body[start:]:
        if ln.strip():
            out("  " + ln.rstrip().replace(os.getcwd() + "/", ""))


def profile_core(ns: argparse.Namespace, out: Output, page: int) -> None:
    """The ENRP cores of a mentor and a joiner in this process, messages handed
    over directly: what the download costs without I/O, and where it goes."""
    from rserpool.config import RegistrarConfig
    from rserpool.constants import PolicyType, TransportUse
    from rserpool.handlespace import Handlespace
    from rserpool.protocol.enrp import EnrpServer
    from rserpool.wire import PoolElement, PoolPolicy, TcpTransport

    cfg = RegistrarConfig(addresses=("127.0.0.1",), max_elements_per_ht_request=page)
    homes = [BASE_ID + i for i in range(ns.registrars)]
    mentor_hs = Handlespace(own_id=homes[0], seed=1)
    per_pool = -(-ns.pes // ns.pools)
    n = 0
    for p in range(ns.pools):
        handle = pool_handle(p)
        for i in range(min(per_pool, ns.pes - n)):
            home = homes[n % len(homes)]
            pe = PoolElement(0x01000000 + n, home, ns.life,
                             TcpTransport(20000 + n % 40000, ("127.0.0.1",),
                                          TransportUse.DATA_PLUS_CONTROL),
                             PoolPolicy(PolicyType.ROUND_ROBIN, ()),
                             TcpTransport(40000 + n % 300, ("127.0.0.1",), 0))
            mentor_hs.register(handle, pe, 0.0, home_registrar=home)
            n += 1
    mentor = EnrpServer(cfg, homes[0], mentor_hs, seed=1)
    joiner = EnrpServer(cfg, JOINER_ID, Handlespace(own_id=JOINER_ID, seed=2), seed=2)
    mkey, jkey = ("to-mentor",), ("to-joiner",)

    def run() -> tuple[int, float, float]:
        joiner.peer_connected(mkey, 0.0, server_id=homes[0])
        mentor.peer_connected(jkey, 0.0)
        messages = 0
        t_mentor = t_joiner = 0.0
        while True:
            t = time.perf_counter()
            j_sends = joiner.pop_sends()
            for _, data in j_sends:
                mentor.receive(jkey, data, 0.1)
            t_mentor += time.perf_counter() - t
            t = time.perf_counter()
            m_sends = mentor.pop_sends()
            for _, data in m_sends:
                joiner.receive(mkey, data, 0.1)
            t_joiner += time.perf_counter() - t
            messages += len(j_sends) + len(m_sends)
            if not j_sends and not m_sends:
                return messages, t_mentor, t_joiner

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    messages, t_mentor, t_joiner = run()
    prof.disable()
    took = time.perf_counter() - t0
    got = len(joiner.handlespace)
    events = [e for e in joiner.pop_events() if type(e).__name__ == "HandleTableDownloaded"]
    pages = events[0].pages if events else 0
    out(f"core replay, page {page}: {got:,} of {n:,} PEs in {pages:,} responses, {messages:,} "
        f"messages in {took:.3f} s (profiled) = {got / took:,.0f} PEs/s; mentor's core "
        f"{t_mentor:.3f} s, joiner's core {t_joiner:.3f} s")
    show_profile(out, f"core replay, page {page}", prof, ns.profile_lines)


# ---------------------------------------------------------------------------
# the benchmark

def pool_handle(p: int) -> bytes:
    return f"EnrpPool-{p}".encode()


async def bench(ns: argparse.Namespace, out: Output) -> int:
    failures: list[str] = []
    start_report(out)
    nodes: list[Node] = []
    farms: list[PeFarm] = []
    rounds: list[Round] = []
    try:
        if ns.profile_core:
            for page in ns.pages:
                profile_core(ns, out, page)
            out()
        # 1. the scope's registrars, registrar k with every earlier one as static peer
        common = ["--keep-alive-interval", f"{ns.keep_alive_interval:g}", *ns.registrar_arg]
        for k in range(ns.registrars):
            options = list(common)
            if k < len(ns.pages):
                options += ["--max-elements-per-ht-request", str(ns.pages[k])]
            for earlier in nodes:
                options += ["--peer", f"tcp:127.0.0.1:{earlier.enrp_port}"]
            node = await start_node(f"registrar-{k + 1}", BASE_ID + k, options,
                                    cmd=ns.registrar_cmd)
            nodes.append(node)
            out(f"registrar-{k + 1}: {node.rid:#010x}, pid {node.pid}, ASAP tcp "
                f"127.0.0.1:{node.asap_port}, ENRP tcp 127.0.0.1:{node.enrp_port}"
                + (f", {ns.pages[k]} PEs per Handle Table Response at most"
                   if k < len(ns.pages) else ""))
        out(f"  command: {shlex.join(nodes[-1].server.command[1:])}")
        took = await wait_peered(nodes, 60.0)
        out(f"all {len(nodes)} registrars peered and out of start-up {took:.2f} s after the "
            f"last one was listening")

        # 2. the PEs
        per_node = [ns.pes // ns.registrars + (k < ns.pes % ns.registrars)
                    for k in range(ns.registrars)]
        cells = ns.registrars * ns.pools
        assoc = max(1, ns.associations // cells)
        base = 0x01000000
        expect: dict[int, int] = {}
        for k, node in enumerate(nodes):
            for p in range(ns.pools):
                count = per_node[k] // ns.pools + (p < per_node[k] % ns.pools)
                if not count:
                    continue
                farm = PeFarm("127.0.0.1", node.asap_port, pool_handle(p), count, assoc,
                              life_ms=ns.life, window=ns.window)
                farm.base = base  # identifiers unique in the scope, not random
                base += count
                farms.append(farm)
            expect[node.rid] = per_node[k]
        cpu0 = [cpu_seconds(n.pid) for n in nodes]
        took = max(await asyncio.gather(*(f.start() for f in farms)))
        accepted = sum(f.accepted for f in farms)
        cpu1 = [cpu_seconds(n.pid) for n in nodes]
        out(f"registration: {accepted:,} of {ns.pes:,} PEs accepted in {ns.pools} pools "
            f"({', '.join(f'{c:,}' for c in per_node)} per registrar) over "
            f"{sum(f.associations for f in farms)} associations in {took:.2f} s = "
            f"{accepted / max(took, 1e-9):,.0f} registrations/s; registrars' CPU "
            + ", ".join(f"{b - a:.2f}" for a, b in zip(cpu0, cpu1)) + " s")
        if accepted != ns.pes:
            failures.append(f"{ns.pes - accepted} registrations not accepted: "
                            f"{[f.failures for f in farms if f.failures][:3]}")
            return 1
        t0 = time.monotonic()
        shots = await wait_all_hold(nodes, expect, 120.0)
        out(f"every registrar holds all {ns.pes:,} PEs (checked by hsdump within "
            f"{time.monotonic() - t0:.2f} s of the last registration; each dump "
            + ", ".join(f"{shots[n.rid].pages:,} pages in {shots[n.rid].elapsed:.2f} s"
                        for n in nodes)
            + f"); checksums per owner {_hexd(shots[nodes[0].rid].checksums)}")
        for n in nodes[1:]:
            diff = shots[n.rid].differences(shots[nodes[0].rid])
            if diff:
                failures.append(f"{n.name} differs from {nodes[0].name}: {diff}")
        if failures:
            return 1
        rss = [rss_bytes(n.pid) for n in nodes]
        out(f"registrars' RSS: {', '.join(f'{x / 2**20:.1f}' for x in rss)} MiB; keep-alive "
            f"interval {ns.keep_alive_interval:g} s ({ns.pes / ns.keep_alive_interval:,.0f} "
            f"keep-alives/s in all, acknowledged by this process)")
        out()

        # 3. and 4. the joiners: each round one per page size, the order
        # alternating so that the noise of a shared machine hits all alike
        for i, page in enumerate(ns.pages):
            out(f"mentor of the joiners for page {page}: {nodes[i].name} ({nodes[i].rid:#010x}, "
                f"--max-elements-per-ht-request {page})")
        rid = JOINER_ID
        plan = [(index, i) for index in range(1, ns.rounds + 1)
                for i in (range(len(ns.pages)) if index % 2 else
                          reversed(range(len(ns.pages))))]
        for n, (index, i) in enumerate(plan):
            mentor = nodes[i]
            r = await join(ns, mentor, ns.pages[i], index, rid, ns.pes, shots[mentor.rid],
                           out, failures)
            if r is None:
                break
            rounds.append(r)
            if n + 1 < len(plan):
                # the next joiner finds the scope as this one did
                gone = await wait_forgotten(nodes, rid, 60.0)
                if gone is None:
                    out(f"  (joiner {rid:#010x} still in a peer table after 60 s)")
            rid += 1
        for f in farms:
            if f.lost:
                failures.extend(f.lost[:5])
            if f.failure_count:
                failures.append(f"PE side: {f.failure_count} problems, e.g. {f.failures[:3]}")
        if rounds:
            out()
            summarise(ns, rounds, out)
            keep = sum(f.keep_alives for f in farms)
            out(f"PE associations: {keep:,} keep-alives answered during the run, "
                f"{sum(len(f.lost) for f in farms)} associations lost")
    except BENCH_ERRORS as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for f in farms:
            f.close()
        for n in reversed(nodes):
            n.stop(failures)
    return 1 if end_report(out, failures) else 0


def summarise(ns: argparse.Namespace, rounds: list[Round], out: Output) -> None:
    """The medians per page size, and what limits a page."""
    med = statistics.median
    per_response = {}
    for page in ns.pages:
        rs = [r for r in rounds if r.page == page]
        if not rs:
            continue
        download = med(r.download for r in rs)
        responses = med(r.responses for r in rs)
        to_done = med(r.t_downloaded for r in rs)
        cpu_j = med(r.cpu_j[1] - r.cpu_j[0] for r in rs)
        cpu_m = med(r.cpu_m[1] - r.cpu_m[0] for r in rs)
        rss = med(r.rss[1] for r in rs)
        grown = med(r.rss[1] - r.rss[0] for r in rs)
        per_response[page] = ns.pes / responses
        out(f"page {page:>4}, median of {len(rs)}: download {download:.3f} s = "
            f"{med(r.rate for r in rs):,.0f} PEs/s; process start to downloaded {to_done:.3f} s "
            f"({ns.pes / to_done:,.0f} PEs/s), to start-up over "
            f"{med(r.t_startup for r in rs):.3f} s; {responses:,.0f} responses, "
            f"{ns.pes / responses:.1f} PEs each, {download / responses * 1e6:.0f} µs per "
            f"request/response; CPU joiner {cpu_j:.2f} s ({cpu_j / ns.pes * 1e6:.1f} µs/PE), "
            f"mentor {cpu_m:.2f} s ({cpu_m / ns.pes * 1e6:.1f} µs/PE); joiner RSS "
            f"{rss / 2**20:.1f} MiB (+{grown / ns.pes:,.0f} bytes per PE)")
    if len(per_response) > 1:
        sizes = ", ".join(f"{page}: {n:.1f}" for page, n in per_response.items())
        out(f"PEs per response by --max-elements-per-ht-request ({sizes}): a page ends at "
            f"whichever comes first, the element count or 1,400 bytes")
    best = max(med(r.rate for r in rounds if r.page == page) for page in per_response)
    out(f"download rate, best median: {best:,.0f} PEs/s (target >= 20,000 PEs/s: "
        f"{'met' if best >= 20_000 else 'NOT met'})")


def _pages(text: str) -> list[int]:
    try:
        pages = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not pages or not all(1 <= p <= 1024 for p in pages):
        raise argparse.ArgumentTypeError("page sizes must be in [1, 1024]")
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pes", type=int, default=100_000, help="PEs registered in the scope")
    parser.add_argument("--pools", type=int, default=10, help="pools they are spread over")
    parser.add_argument("--registrars", type=int, default=3,
                        help="registrars of the scope (the joiner comes on top)")
    parser.add_argument("--page", dest="pages", type=_pages, default=[128, 1024],
                        metavar="N[,N...]",
                        help="max-elements-per-ht-request of the mentors: registrar i "
                             "serves the i-th value and is the mentor of its joiners")
    parser.add_argument("--rounds", type=int, default=3,
                        help="joiners (one after the other) per page size")
    parser.add_argument("--associations", type=int, default=300,
                        help="TCP connections the PEs register over, in all")
    parser.add_argument("--window", type=int, default=32,
                        help="registrations outstanding per association")
    parser.add_argument("--keep-alive-interval", type=float, default=30.0,
                        help="seconds (passed to every registrar)")
    parser.add_argument("--life", type=int, default=3_600_000,
                        help="registration life, ms (the PEs do not re-register)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a joiner may take to finish its download")
    parser.add_argument("--profile", metavar="DIR",
                        help="run the joiners under cProfile, files in DIR, summaries printed")
    parser.add_argument("--profile-core", action="store_true",
                        help="first profile the download between two ENRP cores in this "
                             "process (no I/O)")
    parser.add_argument("--profile-lines", type=int, default=20,
                        help="functions shown per profile")
    parser.add_argument("--registrar-cmd",
                        help="command that starts a registrar (default: "
                             "'<python> -m rserpool registrar')")
    parser.add_argument("--registrar-arg", action="append", default=[], metavar="ARG",
                        help="extra option of every registrar (repeat), e.g. "
                             "--registrar-arg=--mentor-discovery-timeout=30")
    parser.add_argument("--out", help="also write the report to this file")
    ns = parser.parse_args(argv)
    if ns.pes < 1 or ns.pools < 1 or ns.rounds < 1 or ns.associations < 1 or ns.window < 1:
        parser.error("--pes, --pools, --rounds, --associations and --window must be positive")
    if ns.registrars < 1 or len(ns.pages) > ns.registrars:
        parser.error("--registrars must be at least 1 and at least the number of --page "
                     "values (each page size has its own mentor)")
    if ns.profile:
        os.makedirs(ns.profile, exist_ok=True)
    ns.target = None
    return run_bench(bench, ns)


if __name__ == "__main__":
    sys.exit(main())
