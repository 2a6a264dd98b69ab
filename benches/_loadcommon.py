"""What the load generators ``load_resolution.py`` and ``load_registrations.py``
share: the machine facts and ``/proc`` readings of their reports, the
loopback check of ``--target``, server subprocesses (the registrar under
test), the report itself (``Output``, its first and last lines) and the
command-line plumbing around a bench coroutine.

Both scripts import it by name: run as ``python benches/<tool>.py`` the
``benches`` folder is first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import platform
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Awaitable, Callable, Sequence

from rserpool.wire import IMPLEMENTATION

_TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# machine facts, /proc readings, address checks

def machine_facts() -> str:
    """One line: cores, CPU model, load average now, kernel, Python, codec."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    return (f"# machine: {usable} usable of {os.cpu_count()} cores, {model}; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; Linux {platform.release()}; "
            f"{platform.python_implementation()} {platform.python_version()}; "
            f"rserpool codec {IMPLEMENTATION}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def find_listener_pid(port: int) -> int | None:
    """The pid of the (own user's) process listening on TCP ``port``, if any."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{parts[9]}]")
        except OSError:
            continue
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def loopback_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (address, port); refuses anything that is not loopback."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--target {text!r} is not HOST:PORT")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SystemExit(f"--target {text!r}: {exc}") from exc
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                for a in addresses):
        raise SystemExit(f"--target {text!r} resolves to {addresses}: this load generator "
                         f"only runs against loopback addresses")
    return addresses[0], int(port)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _child_setup(raise_fds: bool) -> Callable[[], None]:
    """preexec_fn of a server subprocess: SIGTERM when this process dies
    (Linux PR_SET_PDEATHSIG), and optionally the raised fd limit."""
    def setup() -> None:
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if raise_fds:
            raise_fd_limit()
    return setup


# ---------------------------------------------------------------------------
# server subprocesses

class ServerProcess:
    """A server subprocess whose output goes to a log file; ready once a line
    of its output matches ``port_pattern`` (group 1: the TCP port)."""

    def __init__(self, name: str, command: list[str], port_pattern: str, *,
                 raise_fds: bool = False) -> None:
        self.name = name
        self.command = command
        self.pattern = re.compile(port_pattern, re.IGNORECASE | re.MULTILINE)
        self.log = tempfile.NamedTemporaryFile(prefix=f"load-{name}-", suffix=".log",
                                               delete=False)
        self.port = 0
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=_child_setup(raise_fds))
        self.pid = self.proc.pid

    def output(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def tail(self, lines: int = 15) -> str:
        return "\n".join(f"    {self.name}| {line}"
                         for line in self.output().splitlines()[-lines:])

    async def wait_ready(self, host: str = "127.0.0.1", timeout: float = 30.0) -> int:
        """Wait for the port in the output and a successful connect; the port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode} "
                                   f"before it was ready:\n{self.tail()}")
            m = self.pattern.search(self.output())
            if m:
                port = int(m.group(1))
                try:
                    _, w = await asyncio.open_connection(host, port)
                except OSError:
                    pass
                else:
                    w.close()
                    self.port = port
                    return port
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s "
                           f"(command: {shlex.join(self.command)}):\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> str | None:
        """SIGTERM, wait; a problem description if it did not stop cleanly."""
        problem = None
        if self.proc.poll() is not None:
            problem = (f"{self.name} had already exited with status {self.proc.returncode}"
                       f":\n{self.tail()}")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = f"{self.name} did not stop within {timeout:.0f} s of SIGTERM"
            else:
                if rc not in (0, -signal.SIGTERM):
                    problem = f"{self.name} exited with status {rc} on SIGTERM:\n{self.tail()}"
        self.log.close()
        if problem is None:
            os.unlink(self.log.name)
        else:
            problem += f"\n    (log kept in {self.log.name})"
        return problem


#: A line of the registrar's start-up message naming its TCP ASAP endpoint.
REGISTRAR_PORT_PATTERN = r"\btcp\b[^\n]*?\b127\.0\.0\.1\]?:(\d+)"


def registrar_command(base: str | None, options: Sequence[str]) -> list[str]:
    """The registrar command line: TCP on 127.0.0.1 at an ephemeral port, no
    multicast, then ``options``."""
    cmd = shlex.split(base) if base else [sys.executable, "-m", "rserpool", "registrar"]
    return cmd + ["--transport", "tcp", "--address", "127.0.0.1", "--asap-port", "0",
                  "--enrp-port", "0", "--no-presence-multicast",
                  "--no-announce", *options]


async def start_registrar(base: str | None, options: Sequence[str]) -> ServerProcess:
    server = ServerProcess("registrar", registrar_command(base, options),
                           REGISTRAR_PORT_PATTERN, raise_fds=True)
    try:
        await server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------
# the report

class Output:
    """Prints lines and keeps them for ``--out``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self, path: str | None) -> None:
        if path:
            with open(path, "w") as f:
                f.write("\n".join(self.lines) + "\n")


#: The errors a bench reports as a failure (instead of a traceback).
BENCH_ERRORS = (RuntimeError, OSError, asyncio.TimeoutError, ConnectionError)


def start_report(out: Output) -> None:
    """The report's first lines (the machine, the command line); the
    file-descriptor limit raised."""
    out(machine_facts())
    out(f"# command: {shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}")
    raise_fd_limit()


async def registrar_under_test(ns: argparse.Namespace, out: Output, options: Sequence[str]
                               ) -> tuple[ServerProcess | None, str, int, int | None]:
    """(the started registrar or None, host, port, pid or None): the one of
    ``--target`` (pid: ``--pid``, else the listener on the port if visible; the
    caller reports it), or one started with ``options`` (reported here)."""
    if ns.target:
        host, port = ns.target_address
        return None, host, port, ns.pid or find_listener_pid(port)
    registrar = await start_registrar(ns.registrar_cmd, options)
    host, port, pid = "127.0.0.1", registrar.port, registrar.pid
    out(f"registrar: started `{shlex.join(registrar.command[1:])}`, pid {pid}, "
        f"tcp {host}:{port}")
    return registrar, host, port, pid


def stop_servers(failures: list[str], *servers: ServerProcess | None) -> None:
    """Stop each server (None: skipped), in order; their problems to ``failures``."""
    for server in servers:
        if server:
            problem = server.stop()
            if problem:
                failures.append(problem)


def end_report(out: Output, failures: list[str]) -> int:
    """The report's last lines (the load average, the failures or "OK: no
    errors"); 1 when anything failed, else 0."""
    load = os.getloadavg()
    out(f"# load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if failures:
        out("FAILED:")
        for f in failures:
            out(f"  - {f}")
        return 1
    out("OK: no errors")
    return 0


# ---------------------------------------------------------------------------
# the command line

def new_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of a tool whose docstring is ``doc``, with ``--target``."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--target", metavar="HOST:PORT",
                        help="a running registrar (loopback only); default: start one")
    return parser


def add_registrar_and_out_options(parser: argparse.ArgumentParser, arg_example: str = ""
                                  ) -> None:
    """``--registrar-cmd``, ``--registrar-arg`` (its help ending in
    ``arg_example``) and ``--out``."""
    parser.add_argument("--registrar-cmd",
                        help="command that starts a registrar (default: "
                             "'<python> -m rserpool registrar')")
    parser.add_argument("--registrar-arg", action="append", default=[], metavar="ARG",
                        help="extra registrar option (repeat)" + arg_example)
    parser.add_argument("--out", help="also write the report to this file")


def run_bench(bench: Callable[[argparse.Namespace, Output], Awaitable[int]],
              ns: argparse.Namespace) -> int:
    """``bench(ns, out)`` in a new event loop, after the loopback check of
    ``--target`` (``ns.target_address``); the report saved to ``--out``; its
    exit status (130 on Ctrl-C)."""
    ns.target_address = loopback_target(ns.target) if ns.target else None
    out = Output()
    try:
        rc = asyncio.run(bench(ns, out))
    except KeyboardInterrupt:
        rc = 130
    out.save(ns.out)
    return rc
