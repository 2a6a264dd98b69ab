"""``rserpool registrar``: run an RSerPool registrar (ASAP over SCTP and TCP,
Server Announces over UDP multicast).

Every :class:`rserpool.config.RegistrarConfig` field has an option; defaults
are read from ``RegistrarConfig()`` (one place).  ``--config FILE`` reads a
TOML file of the same fields; options given on the command line win.  Prints
where it listens, logs one line per PE registered, deregistered, expired or
removed, and stops cleanly (exit status 0) on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import fields
from typing import Any, Callable

from ..config import RegistrarConfig, load_registrar_config
from ..errors import ConfigError
from ._common import StopSignals, log_to_stderr, parse_int as _int

__all__ = ["add_parser", "run", "config_from_args"]

#: Option help per RegistrarConfig field; the default is appended from
#: RegistrarConfig() so it is never written twice.
_HELP: dict[str, tuple[str, str]] = {
    # field: (metavar, help)
    "registrar_id": ("ID", "registrar ID, decimal or 0x-hex; 0 picks a random one"),
    "addresses": ("ADDR", "local address for ASAP (repeat or comma-separate for SCTP "
                          "multi-homing; IPv4 and IPv6)"),
    "asap_port": ("PORT", "ASAP port for SCTP and TCP (0: any free port)"),
    "enrp_port": ("PORT", "ENRP port for SCTP and TCP (0: any free port)"),
    "enrp": ("", "serve ENRP: peer registrars, handle table downloads (rserpool hsdump)"),
    "transports": ("sctp|tcp", "transport to serve ASAP on (repeat or comma-separate); "
                               "SCTP is skipped with a note where this host has none"),
    "peers": ("ADDR:PORT", "static ENRP peer (repeatable; [sctp:|tcp:]ADDR:PORT)"),
    "keep_alive_interval": ("SECONDS", "time from a registration or keep-alive ACK to the "
                                       "next Endpoint Keep-Alive"),
    "keep_alive_timeout": ("SECONDS", "time a PE has to answer a keep-alive"),
    "announce": ("", "send ASAP Server Announces by UDP multicast"),
    "announce_group": ("GROUP", "multicast group of the Server Announces"),
    "announce_port": ("PORT", "UDP port of the Server Announces"),
    "announce_interval": ("SECONDS", "time between Server Announces (randomised +-12.5 %%)"),
    "announce_ttl": ("TTL", "multicast TTL of the Server Announces"),
    "presence_multicast": ("", "send and hear ENRP Presence by UDP multicast (peer "
                                "discovery)"),
    "presence_group": ("GROUP", "ENRP Presence multicast group"),
    "presence_port": ("PORT", "ENRP Presence UDP port"),
    "peer_heartbeat_interval": ("SECONDS", "ENRP heartbeat cycle"),
    "peer_max_time_last_heard": ("SECONDS", "ENRP max time last heard"),
    "peer_max_time_no_response": ("SECONDS", "ENRP max time no response"),
    "mentor_discovery_timeout": ("SECONDS", "ENRP mentor discovery timeout"),
    "takeover_expiry_interval": ("SECONDS", "ENRP takeover expiry interval"),
    "max_bad_pe_reports": ("N", "distinct Endpoint Unreachable reporters that remove a PE"),
    "max_hres_items": ("N", "PEs in a handle resolution response when the PU does not say"),
    "max_increment": ("N", "selection increment of the policies (0: each policy's default)"),
    "max_elements_per_ht_request": ("N", "PEs per ENRP Handle Table Response"),
    "max_handle_length": ("BYTES", "longest pool handle accepted"),
    "autoclose_timeout": ("SECONDS", "SCTP autoclose of idle associations"),
    "distance_step": ("MS", "distance step of the DPF policies"),
    "max_message_size": ("BYTES", "largest ASAP message accepted"),
    "idle_timeout": ("SECONDS", "drop a peer that sends nothing for this long (unless it "
                                "has PEs registered)"),
}

#: Tuple fields take a singular option name (repeatable, comma-separable).
_SINGULAR = {"addresses": "address", "transports": "transport", "peers": "peer"}


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


class _Extend(argparse.Action):
    """Repeatable option whose values may also be comma-separated."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.extend(v.strip() for v in str(values).split(",") if v.strip())
        setattr(namespace, self.dest, items)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) if value else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def add_parser(sub: Any) -> None:
    defaults = RegistrarConfig()
    p = sub.add_parser(
        "registrar", help="run a registrar (ASAP over SCTP/TCP, multicast announces)",
        description="Run an RSerPool registrar: PEs register with it, PUs resolve pool "
        "handles through it.  Serves ASAP over kernel SCTP (when this host has it) and "
        "TCP, and announces itself by UDP multicast.  Options override --config.")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file of settings (names as the long options, with _ for -)")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0,
                           help="more log output (DEBUG: every association, re-registration)")
    verbosity.add_argument("-q", "--quiet", action="count", default=0,
                           help="less log output (-q: warnings only, -qq: errors only)")
    p.add_argument("--partial-timeout", type=_float, metavar="SECONDS", default=None,
                   help="drop a peer that holds part of a message this long without "
                   f"completing one (default: {_partial_default():g})")
    for f in fields(RegistrarConfig):
        metavar, text = _HELP.get(f.name, ("VALUE", f.name.replace("_", " ")))
        default = getattr(defaults, f.name)
        help_text = f"{text} (default: {_show(default)})"
        if isinstance(default, bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                           action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        elif isinstance(default, tuple):
            opt = _SINGULAR.get(f.name, f.name).replace("_", "-")
            p.add_argument(f"--{opt}", dest=f.name, action=_Extend, default=None,
                           metavar=metavar, help=help_text)
        else:
            conv: Callable[[str], Any] = _float if isinstance(default, float) else _int
            p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=conv,
                           default=None, metavar=metavar, help=help_text)
    p.set_defaults(run=run)


def _partial_default() -> float:
    from ..aio.registrar import PARTIAL_MESSAGE_TIMEOUT

    return PARTIAL_MESSAGE_TIMEOUT


def config_from_args(ns: argparse.Namespace) -> RegistrarConfig:
    """The configuration: the TOML file (if any), then the options given.

    :raises ConfigError: a bad value or file.
    """
    given: dict[str, Any] = {}
    for f in fields(RegistrarConfig):
        value = getattr(ns, f.name, None)
        if value is not None:
            given[f.name] = tuple(value) if isinstance(value, list) else value
    if ns.config:
        return load_registrar_config(ns.config, **given)
    try:
        return RegistrarConfig(**given)
    except TypeError as exc:  # pragma: no cover - a field without an option
        raise ConfigError(str(exc)) from exc


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.DEBUG if verbose else {0: logging.INFO, 1: logging.WARNING}.get(
        quiet, logging.ERROR)
    log_to_stderr(level)


async def _serve(config: RegistrarConfig, partial_timeout: float | None) -> int:
    from ..aio.registrar import PARTIAL_MESSAGE_TIMEOUT, Registrar, TransportUnavailableError

    # Handlers first: a signal during start-up still stops cleanly.
    with StopSignals() as signals:
        registrar = Registrar(config, log_endpoints=False,
                              partial_timeout=(PARTIAL_MESSAGE_TIMEOUT if partial_timeout is None
                                               else partial_timeout))
        try:
            await registrar.start()
        except TransportUnavailableError as exc:
            print(f"rserpool registrar: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"rserpool registrar: cannot listen: {exc}", file=sys.stderr)
            return 1
        for line in registrar.describe():
            print(line, flush=True)
        try:
            await signals.wait()
        finally:
            stats = registrar.statistics()
            await registrar.stop()
    print(f"registrar 0x{registrar.registrar_id:08x}: stopped{signals.suffix()} "
          f"({stats['pool_elements']} PEs in {stats['pools']} pools, "
          f"{stats['resolutions']} handle resolutions served)", flush=True)
    return 0


def run(ns: argparse.Namespace) -> int:
    try:
        config = config_from_args(ns)
    except ConfigError as exc:
        print(f"rserpool registrar: {exc}", file=sys.stderr)
        return 2
    if ns.partial_timeout is not None and ns.partial_timeout <= 0:
        print("rserpool registrar: --partial-timeout must be positive", file=sys.stderr)
        return 2
    _setup_logging(ns.verbose, ns.quiet)
    try:
        return asyncio.run(_serve(config, ns.partial_timeout))
    except KeyboardInterrupt:  # pragma: no cover - a signal before the handler is set
        return 0
