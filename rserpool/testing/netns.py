"""Small throw-away networks of Linux network namespaces, built by tests.

A :class:`Network` is a dedicated *switch* namespace holding one Linux
bridge, plus one namespace per :class:`Host`, each linked to the bridge by a
veth pair.  Nothing is created in the namespace the tests run in: each veth
end is created directly inside its target namespace, so the machine's own
interfaces, routes and addresses are never touched, and all traffic stays
between namespaces that the test created.

::

    with Network() as net:                       # switch namespace + bridge
        a = net.add_host("reg")                  # 10.77.0.1/24 on eth0
        b = net.add_host("pe")                   # 10.77.0.2/24
        proc = a.run_python("-m", "rserpool", "registrar")   # a Process
        proc.wait_output(r"listening", timeout=15)
        b.link_down()                            # unplug b's cable
        ...
    # every process killed, every namespace deleted (also on exceptions)

Each host has ``lo`` up, its address on ``eth0`` and a route for
``224.0.0.0/4`` via ``eth0`` (multicast sends need a route; there is no
default route).  The bridge floods multicast (IGMP snooping off), so a
datagram to 239.0.0.50 reaches every host whatever groups were joined.

Processes run through ``ip netns exec`` in their own session (so a stop
kills their whole process group), with stdin from ``/dev/null`` and stdout
and stderr written to files in the network's work directory.  Teardown
stops the processes started here (SIGTERM, then SIGKILL), then kills any
process still inside a namespace of the network (``ip netns pids``), then
deletes the namespaces (which removes the veths and the bridge) and checks
that none is left.  Namespace names are ``rsptest-<pid>-<n>-<host>``;
:func:`cleanup_stale` deletes those whose creating process is dead (left by
a run that was killed).

:meth:`Host.entered` switches the *calling thread* into a host's namespace
(``setns``), so a test can make sockets there without a subprocess; a
socket keeps the namespace it was created in.

Availability: root, ``ip`` from iproute2, and a kernel with network
namespaces, bridges and veths; :func:`netns_problem` probes once and says
what is missing (``RSERPOOL_NETNS_DISABLE=1`` makes it report them as
unavailable).  :func:`require_netns` turns a problem into a test failure
when ``CI=true`` or ``RSERPOOL_REQUIRE_NETNS=1``, and a skip otherwise (the
policy of :mod:`rserpool.testing.pytest_sctp`).

Inside User-Mode Linux (:mod:`rserpool.testing.uml`; ``RSERPOOL_IN_UML=1``)
the same code builds the same networks in the guest kernel, for tests over
kernel SCTP (``tests/sctp/test_enrp_sctp_netns.py``): the guest loads
``veth`` and ``bridge`` and mounts a tmpfs of its own on ``/run/netns``.
Because the guest's root filesystem is the host's (hostfs), the namespace
files must not land on the host's ``/run``: inside UML,
:func:`netns_problem` refuses (reports a problem) unless
:data:`NETNS_DIR` is on a tmpfs mounted in the guest
(:func:`netns_dir_is_guest_tmpfs`).

Command line (for debugging): ``python -m rserpool.testing.netns`` prints the
availability check; ``--cleanup`` deletes stale namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import functools
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DISABLE_ENV",
    "NAME_PREFIX",
    "REQUIRE_ENV",
    "Host",
    "Network",
    "NetnsError",
    "Process",
    "cleanup_stale",
    "in_uml_guest",
    "netns_dir_is_guest_tmpfs",
    "list_namespaces",
    "netns_problem",
    "netns_required",
    "require_netns",
    "wait_until",
]

NAME_PREFIX = "rsptest"
REQUIRE_ENV = "RSERPOOL_REQUIRE_NETNS"
DISABLE_ENV = "RSERPOOL_NETNS_DISABLE"
DEFAULT_SUBNET = "10.77.0.0/24"
MULTICAST_ROUTE = "224.0.0.0/4"
HOST_INTERFACE = "eth0"
BRIDGE = "br0"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_TRUE = {"1", "true", "yes", "on"}
_counter = itertools.count(1)
T = TypeVar("T")


class NetnsError(RuntimeError):
    """A namespace operation failed (the message holds the command and its stderr)."""


# --- availability ---------------------------------------------------------------------


def netns_required() -> bool:
    """True when unavailable namespaces must fail tests (``CI=true`` or
    ``RSERPOOL_REQUIRE_NETNS=1``)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in (REQUIRE_ENV, "CI"))


def in_uml_guest() -> bool:
    """True inside a User-Mode Linux guest started by :mod:`rserpool.testing.uml`."""
    return os.environ.get("RSERPOOL_IN_UML", "") == "1"


def netns_dir_is_guest_tmpfs(directory: Path = NETNS_DIR) -> bool:
    """True if ``directory`` (after symlinks) is itself on a tmpfs mount
    point of this kernel (``/proc/mounts``): inside UML, one the guest
    mounted, so namespace files stay in the guest."""
    real = os.path.realpath(directory)
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    best: tuple[str, str] | None = None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if real == point or real.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):
                best = (point, fields[2])
    return best is not None and best[1] == "tmpfs"


def _ip_binary() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip") if os.path.exists(p)), None)


@functools.lru_cache(maxsize=1)
def netns_problem() -> str | None:
    """None if namespaces, bridges and veths work here, else why not.

    Probes once per process: creates a namespace, a bridge and a veth pair
    inside it, and deletes the namespace again.
    """
    if os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE:
        return f"disabled by {DISABLE_ENV}=1"
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"network namespaces need root (euid {os.geteuid()})"
    if _ip_binary() is None:
        return "the `ip` command (iproute2) is not installed"
    if in_uml_guest() and not netns_dir_is_guest_tmpfs():
        return (f"inside UML {NETNS_DIR} is not on a guest tmpfs: namespace files would "
                "land on the host's filesystem (hostfs)")
    name = f"{NAME_PREFIX}-{os.getpid()}-probe"
    if _ip_binary() and name in list_namespaces():
        _delete_namespace(name)  # left by a killed process with the same pid
    steps = [
        ["netns", "add", name],
        ["-n", name, "link", "set", "lo", "up"],
        ["-n", name, "link", "add", "probebr", "type", "bridge"],
        ["-n", name, "link", "add", "probea", "type", "veth", "peer", "name", "probeb"],
        ["-n", name, "link", "set", "probea", "master", "probebr"],
    ]
    try:
        for step in steps:
            try:
                _ip(*step)
            except NetnsError as exc:
                return f"network namespaces do not work here: {exc}"
    finally:
        if name in list_namespaces():
            with contextlib.suppress(NetnsError):
                _ip("netns", "delete", name)
    return None


def require_netns() -> None:
    """Fail (CI / ``RSERPOOL_REQUIRE_NETNS=1``) or skip the calling test when
    network namespaces are unavailable.  Needs pytest."""
    import pytest

    problem = netns_problem()
    if problem is None:
        return
    message = f"netns tests cannot run: {problem}"
    if netns_required():
        pytest.fail(f"{message} [{REQUIRE_ENV}=1 or CI=true: netns tests must run]", pytrace=False)
    pytest.skip(message)


# --- small helpers ---------------------------------------------------------------------


def _ip(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    exe = _ip_binary()
    if exe is None:
        raise NetnsError("the `ip` command (iproute2) is not installed")
    cmd = [exe, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {exc}") from exc
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` exited with {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespace_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _delete_namespace(name: str) -> None:
    """Kill every process in namespace ``name``, then delete it."""
    for _ in range(50):
        pids = [p for p in _namespace_pids(name) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _ip("netns", "delete", name, check=False)


def cleanup_stale(prefix: str = NAME_PREFIX) -> list[str]:
    """Delete namespaces ``<prefix>-<pid>-...`` whose creating process is
    gone (a run that was killed before its teardown); return their names."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-")
    removed = []
    for name in list_namespaces():
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


def wait_until(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1,
               message: str | Callable[[], str] = "condition") -> T:
    """Poll ``predicate()`` until it returns something true; return that.

    Raises :class:`TimeoutError` (with ``message``, or its result if callable)
    after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"not reached within {timeout:g} s: {text}")
        time.sleep(interval)


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


# --- processes --------------------------------------------------------------------------


class Process:
    """A process started inside a host's namespace (see :meth:`Host.run`).

    Its stdout and stderr go to :attr:`stdout_path` and :attr:`stderr_path`.
    """

    def __init__(self, host: Host, name: str, argv: Sequence[str], popen: subprocess.Popen[bytes],
                 stdout_path: Path, stderr_path: Path) -> None:
        self.host = host
        self.name = name
        self.argv = list(argv)
        self.popen = popen
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<Process {self.name} pid {self.pid} in {self.host.name}: {state}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running, else the exit status (negative: killed by that signal)."""
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self) -> str:
        """stdout followed by stderr."""
        return self.stdout() + self.stderr()

    def describe(self, lines: int = 40) -> str:
        """A header line and the tail of both outputs (for failure messages)."""
        state = "running" if self.returncode is None else f"exit status {self.returncode}"
        argv = " ".join("<script>" if "\n" in a else a for a in self.argv)
        parts = [f"--- {self.name} in {self.host.name} ({state}): {argv}"]
        for label, text in (("stdout", self.stdout()), ("stderr", self.stderr())):
            tail = text.splitlines()[-lines:]
            if tail:
                parts.append(f"  [{label}]")
                parts.extend(f"  {line}" for line in tail)
        return "\n".join(parts)

    def wait_output(self, pattern: str | re.Pattern[str], timeout: float = 15.0,
                    stream: str = "both") -> re.Match[str]:
        """Wait until ``pattern`` matches the output (``"stdout"``, ``"stderr"``
        or ``"both"``); return the match.  Raises :class:`TimeoutError`, or
        :class:`NetnsError` if the process exits without a match."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        read = {"stdout": self.stdout, "stderr": self.stderr, "both": self.output}[stream]
        deadline = time.monotonic() + timeout
        while True:
            exited = self.returncode is not None
            match = regex.search(read())
            if match:
                return match
            if exited:
                raise NetnsError(f"{self.name} exited before printing {regex.pattern!r}\n"
                                 + self.describe())
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} did not print {regex.pattern!r} within "
                                   f"{timeout:g} s\n" + self.describe())
            time.sleep(0.05)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; return its status."""
        return self.popen.wait(timeout)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (only to it, not its group)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL the process group at once (a crash); return the status."""
        self._signal_group(signal.SIGKILL)
        return self.popen.wait(10)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the process group
        too.  Return the exit status."""
        if self.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)
        return self.popen.wait(10)

    def _signal_group(self, sig: int) -> None:
        # start_new_session: the process group id is the child's pid.  The
        # group can outlive the leader (children), so signal it even after
        # the leader exited, but never once the pid is reaped and reusable:
        # poll() has not reaped it as long as returncode is None.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.popen.returncode is None:
                os.killpg(self.pid, sig)


# --- hosts -------------------------------------------------------------------------------


class Host:
    """One namespace linked to the network's bridge (see :meth:`Network.add_host`)."""

    def __init__(self, network: Network, name: str, netns: str, address: str, prefixlen: int,
                 port: str) -> None:
        self.network = network
        self.name = name
        #: the namespace's name (for ``ip netns exec``)
        self.netns = netns
        #: IPv4 address on :attr:`interface`
        self.address = address
        self.prefixlen = prefixlen
        #: the interface inside the host's namespace
        self.interface = HOST_INTERFACE
        #: the bridge port (in the switch namespace) of the host's veth pair
        self.port = port
        self.processes: list[Process] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} netns {self.netns}>"

    # - configuration -

    def ip(self, *args: str, check: bool = True) -> str:
        """``ip -n <netns> ARGS``; return stdout."""
        return _ip("-n", self.netns, *args, check=check).stdout

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs in this namespace."""
        exe = _ip_binary() or "ip"
        return [exe, "netns", "exec", self.netns, *argv]

    def link_down(self) -> None:
        """Unplug the host: its bridge port goes down, so nothing passes in
        either direction; inside the host the interface keeps its address and
        routes (NO-CARRIER), and sockets there see no error."""
        _ip("-n", self.network.switch, "link", "set", self.port, "down")

    def link_up(self) -> None:
        """Plug the host back in (undoes :meth:`link_down`)."""
        _ip("-n", self.network.switch, "link", "set", self.port, "up")

    def link_is_up(self) -> bool:
        """True while the host is plugged in (its bridge port is up)."""
        out = _ip("-n", self.network.switch, "-o", "link", "show", self.port).stdout
        flags = re.search(r"<([^>]*)>", out)
        return flags is not None and "UP" in flags.group(1).split(",")

    # - processes -

    def run(self, argv: Sequence[str], *, name: str | None = None,
            env: Mapping[str, str | None] | None = None, cwd: str | os.PathLike[str] | None = None,
            stdin: str | bytes | None = None) -> Process:
        """Start ``argv`` inside this namespace; return a :class:`Process`.

        stdin is ``/dev/null``, or a file holding ``stdin``; stdout and
        stderr go to ``<workdir>/<host>-<name>.out`` / ``.err``.  The
        environment is this process's, plus ``PYTHONUNBUFFERED=1``, plus
        ``env`` (``None`` values remove a variable).  The process runs in a
        new session.
        """
        name = name or Path(argv[0]).name
        label = f"{self.name}-{name}"
        seq = sum(1 for p in self.network.processes if p.name == name and p.host is self)
        if seq:
            label += f"-{seq}"
        out = self.network.workdir / f"{label}.out"
        err = self.network.workdir / f"{label}.err"
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        full = self.command(argv)
        source = self.network.workdir / f"{label}.in"
        if stdin is not None:
            source.write_bytes(stdin.encode() if isinstance(stdin, str) else stdin)
        with contextlib.ExitStack() as files:
            stdout = files.enter_context(open(out, "wb"))
            stderr = files.enter_context(open(err, "wb"))
            feed: Any = (files.enter_context(open(source, "rb")) if stdin is not None
                         else subprocess.DEVNULL)
            popen = subprocess.Popen(full, stdin=feed, stdout=stdout, stderr=stderr,
                                     env=full_env, cwd=cwd, start_new_session=True)
        proc = Process(self, name, argv, popen, out, err)
        self.processes.append(proc)
        self.network.processes.append(proc)
        return proc

    def run_python(self, *args: str, name: str | None = None, **kwargs: Any) -> Process:
        """:meth:`run` with this interpreter (``sys.executable``) and ``args``."""
        if name is None:
            name = args[1] if len(args) > 1 and args[0] == "-m" else "python"
        return self.run([sys.executable, *args], name=name, **kwargs)

    def check_output(self, argv: Sequence[str], timeout: float = 60.0) -> str:
        """Run ``argv`` in this namespace to completion; return stdout.  A
        non-zero exit raises :class:`NetnsError` with the output."""
        proc = subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} in {self.name} exited with {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    # - this thread, in the namespace -

    @contextlib.contextmanager
    def entered(self) -> Iterator[Host]:
        """Switch the calling thread into this namespace for the ``with`` body.

        Sockets made inside stay in this namespace after the block.  Do not
        ``await`` or start threads inside: only this thread moves.
        """
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(NETNS_DIR / self.netns, os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield self
            finally:
                _setns(own)
        finally:
            os.close(own)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` with the calling thread in this namespace."""
        with self.entered():
            return function(*args, **kwargs)


# --- the network -------------------------------------------------------------------------


class Network:
    """A bridge in its own namespace and hosts linked to it (a context manager).

    :param subnet: IPv4 subnet for the hosts (they get its addresses in order
        of :meth:`add_host`, from the first usable one).
    :param workdir: where process outputs go (default: a new temporary
        directory, removed by :meth:`close` unless ``keep_workdir``).
    :param multicast_route: the route added in each host for multicast
        destinations (via its ``eth0``); ``None`` adds none.
    """

    def __init__(self, *, subnet: str = DEFAULT_SUBNET, workdir: str | os.PathLike[str] | None = None,
                 multicast_route: str | None = MULTICAST_ROUTE, keep_workdir: bool = False) -> None:
        self.id = f"{NAME_PREFIX}-{os.getpid()}-{next(_counter)}"
        self.switch = f"{self.id}-sw"
        self.subnet = ipaddress.ip_network(subnet)
        self.multicast_route = multicast_route
        self._free = iter(self.subnet.hosts())
        self._own_workdir = workdir is None
        self._keep_workdir = keep_workdir
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix=f"{self.id}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, Host] = {}
        self.processes: list[Process] = []
        self._namespaces: list[str] = []
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Network {self.id} {self.subnet} hosts {list(self.hosts)}>"

    def __enter__(self) -> Network:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def namespaces(self) -> list[str]:
        """Names of the namespaces this network created (and not yet deleted)."""
        return list(self._namespaces)

    def _add_namespace(self, name: str) -> None:
        if name in list_namespaces():
            # Names are unique within this process, so this one was left by
            # a killed process that had the same pid.
            _delete_namespace(name)
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def start(self) -> None:
        """Create the switch namespace and its bridge (``add_host`` calls it)."""
        if self._closed:
            raise NetnsError(f"network {self.id} is closed")
        if self._started:
            return
        self._started = True
        self._add_namespace(self.switch)
        # No STP (ports forward at once), no IGMP snooping (multicast floods).
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
            "mcast_snooping", "0", "forward_delay", "0")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")

    def add_host(self, name: str, address: str | None = None) -> Host:
        """Create a host namespace ``name`` (lowercase letters and digits, up
        to 12) linked to the bridge, with ``address`` (default: the next free
        one of the subnet) on ``eth0``, ``lo`` up and the multicast route."""
        if not _HOST_NAME.match(name):
            raise ValueError(f"host name {name!r}: want [a-z][a-z0-9]{{0,11}}")
        with self._lock:
            if name in self.hosts:
                raise ValueError(f"host {name!r} exists")
            self.start()
            taken = {h.address for h in self.hosts.values()}
            if address is None:
                address = next(str(a) for a in self._free if str(a) not in taken)
            elif ipaddress.ip_address(address) not in self.subnet:
                raise ValueError(f"{address} is not in {self.subnet}")
            netns = f"{self.id}-{name}"
            port = f"p-{name}"
            self._add_namespace(netns)
            host = Host(self, name, netns, address, self.subnet.prefixlen, port)
            self.hosts[name] = host
        # The veth ends are created directly in their namespaces.
        _ip("link", "add", HOST_INTERFACE, "netns", netns, "type", "veth",
            "peer", "name", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", BRIDGE)
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", HOST_INTERFACE)
        _ip("-n", netns, "link", "set", HOST_INTERFACE, "up")
        if self.multicast_route:
            _ip("-n", netns, "route", "add", self.multicast_route, "dev", HOST_INTERFACE)
        return host

    def partition(self, *groups: Sequence[Host]) -> None:
        """Split the network: the hosts of each group after the first move to
        a bridge of their own (``br1``, ``br2``, ... in the switch namespace),
        so nothing passes between groups (unicast, multicast, ARP), as if
        the switch were cut in parts.  Hosts in no group stay with the
        first (a new partition replaces the previous one).  Inside the hosts
        nothing changes (links stay up, sockets see no error).  :meth:`heal`
        undoes it.  (No tc actions or netfilter needed: only ``ip link set
        PORT master BRIDGE``.)"""
        seen: set[str] = set()
        for group in groups:
            for host in group:
                if host.network is not self or host.name in seen:
                    raise ValueError(f"{host!r}: not a host of this network, or in two groups")
                seen.add(host.name)
        moved = {host.name for group in groups[1:] for host in group}
        for host in list(self.hosts.values()):
            if host.name not in moved:
                _ip("-n", self.switch, "link", "set", host.port, "master", BRIDGE)
        for n, group in enumerate(groups[1:], 1):
            bridge = f"br{n}"
            if _ip("-n", self.switch, "link", "show", bridge, check=False).returncode:
                _ip("-n", self.switch, "link", "add", bridge, "type", "bridge", "stp_state",
                    "0", "mcast_snooping", "0", "forward_delay", "0")
                _ip("-n", self.switch, "link", "set", bridge, "up")
            for host in group:
                _ip("-n", self.switch, "link", "set", host.port, "master", bridge)

    def heal(self) -> None:
        """Undo :meth:`partition`: every host's port back on the one bridge."""
        for host in list(self.hosts.values()):
            _ip("-n", self.switch, "link", "set", host.port, "master", BRIDGE)

    def describe(self, lines: int = 40) -> str:
        """The tail of every process's output (for failure messages)."""
        return "\n".join(p.describe(lines) for p in self.processes) or "(no processes)"

    def close(self) -> None:
        """Stop all processes and delete all namespaces; idempotent.

        Raises :class:`NetnsError` if a namespace could not be deleted.
        """
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        running = [p for p in self.processes if p.returncode is None]
        for proc in running:
            proc._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for proc in running:
            try:
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.processes:
            try:
                proc.stop(timeout=0)
            except (subprocess.TimeoutExpired, OSError) as exc:
                errors.append(f"{proc!r}: {exc}")
        for name in reversed(self._namespaces):
            _delete_namespace(name)
        left = set(list_namespaces())
        still = [n for n in self._namespaces if n in left]
        self._namespaces = still
        if still:
            errors.append(f"namespaces not deleted: {', '.join(still)}")
        if self._own_workdir and not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise NetnsError("; ".join(errors))


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rserpool.testing.netns",
                                     description="Check network namespace support for the tests.")
    parser.add_argument("--cleanup", action="store_true",
                        help=f"delete stale {NAME_PREFIX}-* namespaces of dead processes")
    ns = parser.parse_args(argv)
    if ns.cleanup:
        for name in cleanup_stale():
            print(f"deleted {name}")
    problem = netns_problem()
    print(f"netns tests: {'available' if problem is None else 'unavailable: ' + problem}")
    return 0 if problem is None else 1


if __name__ == "__main__":
    sys.exit(_main())
