"""Run a command inside a User-Mode Linux (UML) kernel, for real kernel SCTP.

Machines without kernel SCTP (this project's CI, most containers) can still
run a real Linux kernel as an ordinary process: Debian's ``user-mode-linux``
package (``/usr/bin/linux.uml``, modules in ``/usr/lib/uml/modules/<ver>``).
The guest's root filesystem is the host's own ``/`` (hostfs), so the guest
runs the very same ``.venv`` and checkout; only the kernel differs.  Boot
takes one or two seconds.

What :func:`run_in_uml` does:

1. writes a private run directory (``$TMPDIR/rserpool-uml-*``) holding an
   init script, the guest environment and, later, the exit status;
2. boots ``linux.uml`` with that script as init (console on a pipe, UML's
   own memory file in ``/dev/shm`` or another tmpfs with room and exec
   rights, an ``LD_PRELOAD`` shim for hosts with a large XSAVE area:
   ``scripts/uml/xstate_shim.c``);
3. in the guest: mounts proc, sysfs, a private tmpfs on ``/tmp`` and
   ``/dev/shm`` (guest writes there never reach the host; the host
   directories under them that the command needs -- the run directory, a
   checkout or venv under ``/tmp``, *share* -- are mounted back in through
   hostfs), loads the kernel modules (``ipv6 hmac sctp`` by default, with
   ``modprobe`` pointed at the UML module tree so that the kernel's own
   module requests work too; then, where the tree has them, ``veth`` and
   ``bridge`` for network namespace tests, quietly skipped otherwise),
   mounts a guest-private tmpfs where ``ip netns add`` keeps its namespace
   files (``/run/netns``; see :data:`GUEST_NETNS_DIRS`), brings ``lo`` up
   with optional extra addresses, ``cd``\\s to *cwd*, runs the command, records its exit status
   in the run directory and powers off;
4. on the host: streams the guest's output line by line, enforces the
   timeout, and returns the command's exit status.

Guest environment: ``PATH`` (plus the sbin directories), ``RSERPOOL_*``,
``PYTHON*``, ``PYTEST_*``, ``HYPOTHESIS_*``, ``CI``, locale and colour
variables are passed through; ``HOME`` is a guest-private directory
(under ``/dev/.rserpool-uml``); ``TMPDIR=/tmp``;
``PYTHONDONTWRITEBYTECODE=1``; ``RSERPOOL_IN_UML=1`` (so nothing inside boots
UML again); ``RSERPOOL_UML_ADDRESSES`` lists the extra addresses, space
separated, without prefix length.  *env* adds to or (with ``None``) removes
from that.

Apart from those, the host filesystem is shared read-write: a command that
writes into the checkout writes into the host's checkout.

Hosts with a large XSAVE area (AVX-512, AMX) crash Debian 12's UML 6.1 at
the first guest process ("ptrace set fp regs failed, errno = 14"): the
shim (built once with ``cc`` into ``build/uml/``) works around it.

Environment: ``RSERPOOL_UML_KERNEL`` (kernel binary), ``RSERPOOL_UML_MODULES``
(module tree), ``RSERPOOL_UML_TMPDIR`` (UML's memory file),
``RSERPOOL_UML_KEEP=1`` (keep the run directory, for debugging).

Command line: ``scripts/uml/run [options] -- command...``
(``python -m rserpool.testing.uml --help``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import mmap
import os
import re
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "DEFAULT_EXTRA_ADDRESSES",
    "DEFAULT_MODULES",
    "DEFAULT_TIMEOUT",
    "GUEST_NETNS_DIRS",
    "OPTIONAL_MODULES",
    "UMLBootError",
    "UMLError",
    "UMLTimeout",
    "UMLUnavailable",
    "in_uml",
    "kernel_sctp_available",
    "main",
    "run_in_uml",
    "uml_available",
    "uml_problem",
]

IN_UML_ENV = "RSERPOOL_IN_UML"
ADDRESSES_ENV = "RSERPOOL_UML_ADDRESSES"
KERNEL_ENV = "RSERPOOL_UML_KERNEL"          # path of the UML kernel binary
MODULES_DIR_ENV = "RSERPOOL_UML_MODULES"    # .../modules/<version>
TMPDIR_ENV = "RSERPOOL_UML_TMPDIR"          # where UML keeps its memory file
KEEP_ENV = "RSERPOOL_UML_KEEP"              # 1: keep the run directory

#: Extra addresses for ``lo`` that tests of multi-homing use.  They exist only
#: inside the guest kernel, which has no network device but ``lo``.
DEFAULT_EXTRA_ADDRESSES: tuple[str, ...] = ("10.255.0.1/24", "10.255.0.2/24", "10.255.0.3/24")
DEFAULT_MODULES: tuple[str, ...] = ("ipv6", "hmac", "sctp")
#: Modules loaded too when the UML module tree has them (``veth`` and
#: ``bridge``, which pulls in ``llc`` and ``stp``: network namespaces linked
#: by a bridge, :mod:`rserpool.testing.netns`); a missing or failing one is
#: only noted in the guest log.
OPTIONAL_MODULES: tuple[str, ...] = ("veth", "bridge")
DEFAULT_TIMEOUT = 600.0
DEFAULT_MEM = "1G"

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIM_SOURCE = REPO_ROOT / "scripts" / "uml" / "xstate_shim.c"

_PASS_PREFIXES = ("RSERPOOL_", "PYTHON", "PYTEST_", "HYPOTHESIS_", "LC_")
_PASS_NAMES = frozenset({
    "CI", "LANG", "LANGUAGE", "TZ", "VIRTUAL_ENV", "COLUMNS", "LINES",
    "PY_COLORS", "NO_COLOR", "FORCE_COLOR",
})
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
#: Host directories the guest replaces by its own tmpfs.
GUEST_TMPFS = ("/tmp", "/dev/shm")
#: Where ``ip netns add`` may keep its namespace files (iproute2 uses
#: ``/run/netns``, older builds ``/var/run/netns``).  On the hostfs root these
#: are the *host's* directories, so the guest mounts a tmpfs of its own
#: there first (or, when a directory is missing, on its parent, so that
#: nothing is created on the host): a namespace made in the guest never
#: leaves a file on the host.
GUEST_NETNS_DIRS = ("/run/netns", "/var/run/netns")
#: Guest-only directory (HOME, the modprobe wrapper).
GUEST_PRIVATE = "/dev/.rserpool-uml"
_UML_CANDIDATES = ("linux.uml", "linux")

LineSink = Callable[[str], None]


class UMLError(RuntimeError):
    """UML could not run the command; ``log`` holds the console output."""

    def __init__(self, message: str, log: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log = list(log)

    def __str__(self) -> str:
        text = super().__str__()
        if self.log:
            tail = self.log[-60:]
            text += "\n--- UML console (last %d lines) ---\n%s" % (len(tail), "\n".join(tail))
        return text


class UMLUnavailable(UMLError):
    """No usable UML kernel on this machine (see :func:`uml_problem`)."""


class UMLBootError(UMLError):
    """UML started but the guest never reported the command's exit status."""


class UMLTimeout(UMLError):
    """The whole run (boot + command) took longer than the timeout."""


# --- probing ------------------------------------------------------------------


def in_uml() -> bool:
    """True inside a guest started by :func:`run_in_uml`."""
    return os.environ.get(IN_UML_ENV, "") == "1"


def kernel_sctp_available() -> bool:
    """True if this kernel can make a one-to-many SCTP socket."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
    except OSError:
        return False
    sock.close()
    return True


def find_kernel() -> Path | None:
    """The UML kernel binary: ``$RSERPOOL_UML_KERNEL``, ``linux.uml``, ``linux``."""
    explicit = os.environ.get(KERNEL_ENV)
    if explicit:
        return Path(explicit) if os.access(explicit, os.X_OK) else None
    for name in _UML_CANDIDATES:
        found = shutil.which(name)
        if not found:
            continue
        real = os.path.realpath(found)
        # /usr/bin/linux is an alternatives link; make sure it is UML.
        if name == "linux" and "uml" not in os.path.basename(real):
            continue
        return Path(found)
    return None


@functools.lru_cache(maxsize=None)
def kernel_version(kernel: str) -> str | None:
    """``linux.uml --version`` (e.g. ``6.1.176``), None if it does not say."""
    try:
        out = subprocess.run(
            [kernel, "--version"], capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        line = line.strip()
        if re.fullmatch(r"\d+\.\d+[\w.+~-]*", line):
            return line
    return None


def module_dir(kernel: Path) -> Path | None:
    """``/usr/lib/uml/modules/<version>`` for *kernel* (or $RSERPOOL_UML_MODULES)."""
    explicit = os.environ.get(MODULES_DIR_ENV)
    if explicit:
        return Path(explicit) if Path(explicit, "modules.dep").is_file() else None
    version = kernel_version(str(kernel))
    if not version:
        return None
    for base in (Path("/usr/lib/uml/modules"), kernel.resolve().parent.parent / "lib" / "uml" / "modules"):
        cand = base / version
        if (cand / "modules.dep").is_file():
            return cand
    return None


def _module_present(mods: Path, name: str) -> bool:
    """True if the module tree *mods* has module *name* (per ``modules.dep``)."""
    wanted = {f"{name}.ko", f"{name.replace('_', '-')}.ko", f"{name.replace('-', '_')}.ko"}
    try:
        text = Path(mods, "modules.dep").read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        path = line.split(":", 1)[0]
        base = os.path.basename(path)
        for ext in (".xz", ".zst", ".gz"):
            base = base.removesuffix(ext)
        if base in wanted:
            return True
    return False


def _parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not match:
        raise ValueError(f"bad memory size {text!r} (want e.g. 512M or 1G)")
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]


def _exec_mmap_ok(directory: str) -> bool:
    """UML maps its memory file PROT_EXEC: that fails on a noexec mount."""
    try:
        with tempfile.TemporaryFile(dir=directory) as handle:
            handle.write(b"\0" * mmap.PAGESIZE)
            handle.flush()
            mapped = mmap.mmap(handle.fileno(), mmap.PAGESIZE, flags=mmap.MAP_SHARED,
                               prot=mmap.PROT_READ | mmap.PROT_EXEC)
            mapped.close()
        return True
    except (OSError, ValueError):
        return False


def pick_uml_tmpdir(mem: str = DEFAULT_MEM) -> tuple[str | None, list[str]]:
    """A directory for UML's memory file, and why others were rejected.

    Preference: ``$RSERPOOL_UML_TMPDIR``, ``/dev/shm`` (tmpfs: fast), then
    ``$TMPDIR``, ``/tmp``, ``/var/tmp``.  It must be writable, allow exec
    mappings and have room for *mem* (a container's 64 MB /dev/shm does not).
    """
    need = _parse_size(mem)
    rejected: list[str] = []
    seen: set[str] = set()
    for cand in (os.environ.get(TMPDIR_ENV), "/dev/shm", os.environ.get("TMPDIR"),
                 tempfile.gettempdir(), "/tmp", "/var/tmp"):
        if not cand or cand in seen:
            continue
        seen.add(cand)
        if not os.path.isdir(cand) or not os.access(cand, os.W_OK | os.X_OK):
            rejected.append(f"{cand}: not a writable directory")
            continue
        stat = os.statvfs(cand)
        free = stat.f_bavail * stat.f_frsize
        if free < need:
            rejected.append(f"{cand}: {free >> 20} MiB free, UML needs {need >> 20} MiB")
            continue
        if not _exec_mmap_ok(cand):
            rejected.append(f"{cand}: PROT_EXEC mmap refused (noexec?)")
            continue
        return cand, rejected
    return None, rejected


@functools.lru_cache(maxsize=None)
def _uml_problem_cached(kernel_env: str | None, modules_env: str | None, path: str) -> str | None:
    del kernel_env, modules_env, path  # cache keys only
    if sys.platform != "linux":
        return "UML runs on Linux hosts only"
    kernel = find_kernel()
    if kernel is None:
        return ("no User-Mode Linux kernel (linux.uml) found: "
                "apt-get install user-mode-linux kmod (scripts/bootstrap.sh does)")
    mods = module_dir(kernel)
    if mods is None:
        return f"no module tree for {kernel} (version {kernel_version(str(kernel))!r}) under /usr/lib/uml/modules"
    if not list(mods.glob("kernel/net/sctp/sctp.ko*")):
        return f"{mods} has no net/sctp/sctp.ko"
    if not _find_tool("modprobe"):
        return "no modprobe (apt-get install kmod)"
    if not _find_tool("ip"):
        return "no ip command (apt-get install iproute2)"
    tmpdir, rejected = pick_uml_tmpdir()
    if tmpdir is None:
        return "no directory for UML's memory file: " + "; ".join(rejected)
    return None


def uml_problem() -> str | None:
    """Why :func:`run_in_uml` cannot work here, or None if it should."""
    if in_uml():
        return f"already inside UML ({IN_UML_ENV}=1)"
    return _uml_problem_cached(os.environ.get(KERNEL_ENV), os.environ.get(MODULES_DIR_ENV),
                               os.environ.get("PATH", ""))


def uml_available() -> bool:
    """True if a UML kernel with SCTP modules is installed and usable here."""
    return uml_problem() is None


def _find_tool(name: str) -> str | None:
    path = os.environ.get("PATH", os.defpath) + ":" + ":".join(_SBIN)
    return shutil.which(name, path=path)


# --- the XSAVE shim -----------------------------------------------------------


def _ensure_shim(notes: list[str]) -> str | None:
    """Build scripts/uml/xstate_shim.c once (cached by content hash)."""
    if not SHIM_SOURCE.is_file():
        notes.append(f"xstate shim: {SHIM_SOURCE} not found")
        return None
    source = SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    name = f"xstate_shim-{digest}.so"
    cache_dirs = [REPO_ROOT / "build" / "uml",
                  Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rserpool-uml",
                  Path(tempfile.gettempdir()) / f"rserpool-uml-cache-{os.getuid()}"]
    for directory in cache_dirs:
        if (directory / name).is_file():
            return str(directory / name)
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        notes.append("xstate shim: no C compiler (cc) to build it")
        return None
    for directory in cache_dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
            os.close(fd)
        except OSError:
            continue
        proc = subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", tmp, str(SHIM_SOURCE), "-ldl"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            os.unlink(tmp)
            notes.append(f"xstate shim: {compiler} failed: {proc.stderr.strip()}")
            return None
        os.replace(tmp, directory / name)
        return str(directory / name)
    notes.append("xstate shim: no writable cache directory")
    return None


# --- the guest side ---------------------------------------------------------------


def _guest_env(env: Mapping[str, str | None] | None, addresses: Sequence[str]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k in _PASS_NAMES or k.startswith(_PASS_PREFIXES)}
    path = [p for p in os.environ.get("PATH", os.defpath).split(":") if p]
    path += [p for p in (*_SBIN, "/usr/local/bin", "/usr/bin", "/bin") if p not in path]
    out["PATH"] = ":".join(path)
    out["HOME"] = f"{GUEST_PRIVATE}/home"
    out["TERM"] = "dumb"
    out.setdefault("LANG", "C.UTF-8")
    if "COLUMNS" not in out:
        out["COLUMNS"] = str(max(80, shutil.get_terminal_size((100, 24)).columns))
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    out["TMPDIR"] = "/tmp"
    out[IN_UML_ENV] = "1"
    out[ADDRESSES_ENV] = " ".join(a.split("/")[0] for a in addresses)
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = str(value)
    return out


def _hidden_root(path: str) -> str | None:
    """The directory to share so that *path* stays visible in the guest:
    ``/tmp/x`` for ``/tmp/x/y/z``, None if *path* is not under GUEST_TMPFS."""
    path = os.path.abspath(path)
    for base in GUEST_TMPFS:
        if path == base:
            return base
        if path.startswith(base + "/"):
            return f"{base}/{path[len(base) + 1:].split('/')[0]}"
    return None


def _auto_shares(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> set[str]:
    """Shares needed for the command itself: a checkout or venv under /tmp."""
    paths = [cwd, argv[0] if "/" in argv[0] else (shutil.which(argv[0]) or "")]
    paths += [os.path.join(cwd, argv[0])] if "/" in argv[0] and not os.path.isabs(argv[0]) else []
    paths += env.get("PYTHONPATH", "").split(":") + [env.get("VIRTUAL_ENV", "")]
    roots = {_hidden_root(p) for p in paths if p}
    return {r for r in roots if r and os.path.isdir(r)}


def _init_script(*, run_dir: str, token: str, cwd: str, argv: Sequence[str],
                 modules: Sequence[str], mods_dir: str, addresses: Sequence[str],
                 shares: Sequence[str], optional_modules: Sequence[str] = ()) -> str:
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# Generated by rserpool.testing.uml: init (pid 1) of a UML guest.",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"RUN={q(run_dir)}",
        f"say() {{ echo \"rserpool-uml[{token}]: $*\"; }}",
        "poweroff_now() { sync; echo o > /proc/sysrq-trigger; sleep 60; }",
        "mount -t proc proc /proc || { say 'cannot mount /proc'; exit 1; }",
        "mount -t sysfs sysfs /sys",
        # Guest-private scratch space: writes to the hostfs / go to the host.
        # /dev is the guest's own devtmpfs.
        f"PRIV={GUEST_PRIVATE}",
        'mkdir -p "$PRIV" && mount -t tmpfs -o mode=755 tmpfs "$PRIV"',
        'mkdir -p "$PRIV/home" "$PRIV/modroot/lib"',
        *(f"mkdir -p {d} && mount -t tmpfs -o mode=1777 tmpfs {d}" for d in GUEST_TMPFS),
    ]
    # Host directories hidden by those tmpfs mounts come back via hostfs
    # (parents first).
    for share in sorted({run_dir, *shares}, key=lambda p: (p.count("/"), p)):
        lines.append(f"mkdir -p {q(share)} && mount -t hostfs -o {q(share)} hostfs {q(share)}"
                     f" || say 'cannot share host directory '{q(share)}")
    lines += [
        'exec 3>"$RUN/guest.log"',
        # modprobe -d ROOT reads ROOT/lib/modules/$(uname -r): point it (and
        # the kernel's own module requests, e.g. crypto) at the UML tree.
        f'ln -s {q(os.path.dirname(mods_dir))} "$PRIV/modroot/lib/modules"',
        "printf '#!/bin/sh\\nexec modprobe -d %s/modroot \"$@\"\\n' \"$PRIV\" > \"$PRIV/modprobe\"",
        'chmod 755 "$PRIV/modprobe"',
        'echo "$PRIV/modprobe" > /proc/sys/kernel/modprobe',
        "failed=",
    ]
    for module in modules:
        lines.append(f'"$PRIV/modprobe" {q(module)} 2>&3'
                     f" || failed=\"$failed {module}\"")
    for module in optional_modules:
        lines.append(f'"$PRIV/modprobe" {q(module)} 2>&3'
                     f" || echo 'optional module '{q(module)}' not loaded' >&3")
    lines += [
        '[ -z "$failed" ] || say "modprobe failed:$failed (see $RUN/guest.log)"',
        # Network namespace files on a guest tmpfs, never on the host's /run.
        f"for d in {' '.join(q(d) for d in GUEST_NETNS_DIRS)}; do",
        '  real=$(readlink -f "$d") || continue',
        '  if [ -d "$real" ]; then target=$real; else target=$(dirname "$real"); fi',
        '  [ -d "$target" ] && [ "$target" != / ] || continue',
        '  mountpoint -q "$target" 2>/dev/null && grep -q " $target tmpfs " /proc/mounts && continue',
        '  mount -t tmpfs -o mode=755 tmpfs "$target" 2>&3 && mkdir -p "$real"'
        " || say \"cannot mount a tmpfs on $target (ip netns unsafe)\"",
        "done",
        "ip link set lo up",
    ]
    for addr in addresses:
        extra = " nodad" if ":" in addr else ""
        lines.append(f"ip addr add {q(addr)} dev lo{extra} 2>&3 || say 'cannot add address '{q(addr)}")
    lines += [
        # Start from a clean environment (the kernel passes unknown boot
        # parameters such as mem=1G to init as variables).
        "for v in $(env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p'); do"
        ' [ "$v" = PATH ] || unset "$v"; done',
        '. "$RUN/env.sh"',
        f"cd {q(cwd)} || {{ say 'cannot cd to '{q(cwd)}; echo 125 > \"$RUN/status\"; poweroff_now; }}",
        'say "ready kernel=$(uname -r)"',
        " ".join(q(a) for a in argv) + " </dev/null 2>&1",
        "rc=$?",
        'echo "$rc" > "$RUN/status.tmp" && mv "$RUN/status.tmp" "$RUN/status"',
        'say "done rc=$rc"',
        "poweroff_now",
        "",
    ]
    return "\n".join(lines)


# --- the host side -----------------------------------------------------------------


def _stdout_sink(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - not our group after all
        proc.kill()


def run_in_uml(
    argv: Sequence[str],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    extra_addresses: Iterable[str] = (),
    modules: Sequence[str] = DEFAULT_MODULES,
    optional_modules: Sequence[str] = OPTIONAL_MODULES,
    mem: str = DEFAULT_MEM,
    share: Iterable[str | os.PathLike[str]] = (),
    output: LineSink | None = None,
    verbose: bool = False,
) -> int:
    """Boot UML, run *argv* in it, return its exit status.

    *argv* runs from *cwd* (default: the current directory) with stdin
    ``/dev/null``; its stdout and stderr (merged) are passed line by line
    to *output* (default: printed).  Boot messages are shown only if
    *verbose*, or in the exception if the guest never reports back.
    *extra_addresses* are ``ADDR/PREFIX`` strings added to ``lo`` (IPv6
    ones with ``nodad``).  *share* lists host directories under ``/tmp`` or
    ``/dev/shm`` that the guest must see (its own ``/tmp`` is a tmpfs).
    *optional_modules* are loaded after *modules*, those of them that the
    UML module tree has (a failure is only noted in the guest log).

    Raises :class:`UMLUnavailable`, :class:`UMLBootError` or
    :class:`UMLTimeout` (all :class:`UMLError`) when the command's status
    cannot be had.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("run_in_uml: empty command")
    problem = uml_problem()
    if problem:
        raise UMLUnavailable(f"UML unavailable: {problem}")
    sink = output or _stdout_sink
    addresses = list(extra_addresses)
    kernel = find_kernel()
    mods = module_dir(kernel) if kernel else None
    tmpdir, _rejected = pick_uml_tmpdir(mem)
    assert kernel and mods and tmpdir  # uml_problem() checked

    notes: list[str] = []
    shim = _ensure_shim(notes)
    token = secrets.token_hex(4)
    run_dir = tempfile.mkdtemp(prefix="rserpool-uml-")
    try:
        work_dir = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
        guest_env = _guest_env(env, addresses)
        shares = {os.path.abspath(os.fspath(s)) for s in share}
        shares |= _auto_shares(argv, work_dir, guest_env)
        script = _init_script(
            run_dir=run_dir, token=token, cwd=work_dir, argv=argv, modules=modules,
            mods_dir=str(mods), addresses=addresses, shares=sorted(shares),
            optional_modules=[m for m in optional_modules if m not in modules
                              and _module_present(mods, m)],
        )
        init = Path(run_dir, "init")
        init.write_text(script)
        init.chmod(0o755)
        env_lines = [f"export {k}={shlex.quote(v)}"
                     for k, v in sorted(guest_env.items())
                     if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        Path(run_dir, "env.sh").write_text("\n".join(env_lines) + "\n")
        uml_dir = Path(run_dir, "uml")
        uml_dir.mkdir()

        cmdline = [
            str(kernel), f"mem={mem}", "root=/dev/root", "rootfstype=hostfs", "rootflags=/",
            "rw", f"init={init}", "con=null", "con0=fd:0,fd:1", "ssl=null",
            f"uml_dir={uml_dir}", f"umid=r{token}", "quiet",
        ]
        host_env = dict(os.environ)
        host_env["TMPDIR"] = tmpdir
        host_env.pop("LD_PRELOAD", None)
        if shim:
            host_env["LD_PRELOAD"] = shim
        return _boot(cmdline, host_env, run_dir, token, timeout, sink, verbose, notes)
    finally:
        if os.environ.get(KEEP_ENV) == "1":
            sink(f"uml: run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def _boot(cmdline: list[str], host_env: dict[str, str], run_dir: str, token: str,
          timeout: float, sink: LineSink, verbose: bool, notes: list[str]) -> int:
    ready_prefix = f"rserpool-uml[{token}]: ready"
    done_prefix = f"rserpool-uml[{token}]: done"
    marker_prefix = f"rserpool-uml[{token}]: "
    log: deque[str] = deque(notes, maxlen=400)
    phase = "boot"          # boot -> run -> done
    timed_out = False
    start = time.monotonic()
    deadline = start + timeout

    # stdin is a pipe we never write to: UML's console wants an fd it can poll
    # (/dev/null cannot be), and CI has no terminal.
    proc = subprocess.Popen(
        cmdline, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=host_env, start_new_session=True,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    pending = b""

    def handle(raw: bytes) -> None:
        nonlocal phase
        # A tty rewrites lines with \r ("collecting ... \rcollected 5 items"):
        # keep what the line finally shows.
        line = raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1]
        log.append(line)
        if line.startswith(marker_prefix):
            if line.startswith(ready_prefix):
                phase = "run"
                if verbose:
                    sink(line)
                return
            if line.startswith(done_prefix):
                phase = "done"
                if verbose:
                    sink(line)
                return
            sink(line)  # a guest-side problem report: always show
            return
        if phase == "run" or verbose:
            sink(line)

    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 5:
                break  # UML is gone but a straggler holds the pipe open
            if not selector.select(min(1.0, deadline - now)):
                continue
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:  # pragma: no cover
                continue
            if not chunk:
                break  # EOF: UML and all its helpers are gone
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                handle(raw)
    finally:
        if pending:
            handle(pending)
        if proc.poll() is None:
            if not timed_out and phase == "done":
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            _kill_group(proc)
        else:
            _kill_group(proc)  # stray helpers in UML's process group
        proc.wait()
        selector.close()
        proc.stdout.close()
        if proc.stdin:
            proc.stdin.close()

    elapsed = time.monotonic() - start
    status_file = Path(run_dir, "status")
    guest_log = Path(run_dir, "guest.log")
    if guest_log.is_file():
        log.extend("guest: " + line for line in guest_log.read_text(errors="replace").splitlines())
    if status_file.is_file():
        try:
            return int(status_file.read_text().strip())
        except ValueError:
            pass
    if timed_out:
        where = "while booting" if phase == "boot" else "while the command ran"
        raise UMLTimeout(f"UML run timed out after {timeout:.0f} s ({where})", log)
    if phase == "boot":
        raise UMLBootError(
            f"UML exited after {elapsed:.1f} s (exit status {proc.returncode}) before the "
            f"guest was ready: boot failure", log)
    raise UMLBootError(
        f"UML exited after {elapsed:.1f} s (exit status {proc.returncode}) without the "
        f"command's exit status (guest crashed?)", log)


# --- command line --------------------------------------------------------------


def _describe() -> str:
    lines = []
    kernel = find_kernel()
    lines.append(f"kernel:        {kernel or 'not found'}")
    if kernel:
        lines.append(f"version:       {kernel_version(str(kernel))}")
        lines.append(f"modules:       {module_dir(kernel)}")
    tmpdir, rejected = pick_uml_tmpdir()
    lines.append(f"memory file:   {tmpdir}" + (f"  (rejected: {'; '.join(rejected)})" if rejected else ""))
    lines.append(f"modprobe, ip:  {_find_tool('modprobe')}, {_find_tool('ip')}")
    lines.append(f"host SCTP:     {'yes' if kernel_sctp_available() else 'no'}")
    problem = uml_problem()
    lines.append(f"usable:        {'yes' if problem is None else 'no: ' + problem}")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/uml/run",
        description="Run a command inside a User-Mode Linux kernel (real kernel SCTP). "
                    "Exit status: the command's; 124 on timeout; 125 if UML could not run it.",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help="limit for boot + command (default %(default).0f)")
    parser.add_argument("--address", action="append", default=[], metavar="ADDR/LEN",
                        help="add an address to the guest's lo (repeatable)")
    parser.add_argument("--test-addresses", action="store_true",
                        help="add " + " ".join(DEFAULT_EXTRA_ADDRESSES))
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set a variable in the guest (repeatable)")
    parser.add_argument("--module", action="append", default=None, metavar="NAME",
                        help="kernel module to load (repeatable; default: %s)" % " ".join(DEFAULT_MODULES))
    parser.add_argument("--mem", default=DEFAULT_MEM, help="guest memory (default %(default)s)")
    parser.add_argument("--cwd", default=None, help="directory to run in (default: current)")
    parser.add_argument("--share", action="append", default=[], metavar="DIR",
                        help="host directory under /tmp the guest must see (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the boot messages")
    parser.add_argument("--check", action="store_true", help="report what was found and exit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    opts = parser.parse_args(args)

    if opts.check:
        print(_describe())
        return 0 if uml_available() else 1
    command = list(opts.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("no command given (e.g. scripts/uml/run -- cat /proc/net/sctp/assocs)")
    env: dict[str, str | None] = {}
    for item in opts.env:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env wants NAME=VALUE, not {item!r}")
        env[name] = value
    addresses = list(opts.address) + (list(DEFAULT_EXTRA_ADDRESSES) if opts.test_addresses else [])
    try:
        return run_in_uml(
            command, env=env, cwd=opts.cwd, timeout=opts.timeout, extra_addresses=addresses,
            modules=opts.module if opts.module is not None else DEFAULT_MODULES,
            mem=opts.mem, share=opts.share, verbose=opts.verbose,
        )
    except UMLTimeout as exc:
        print(f"uml: {exc}", file=sys.stderr)
        return 124
    except UMLError as exc:
        print(f"uml: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
