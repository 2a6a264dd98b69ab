"""``rserpool pe``: run a demo service as a pool element (like RSPLIB's
``rspserver``).

::

    rserpool pe --pool EchoPool --service echo --policy least_used --load 20 \\
        --registrar 127.0.0.1:3863 --no-discovery --transport tcp --address 127.0.0.1

Prints its PE ID, its user endpoint and, once registered, its registrar (one
line each, on stdout); logs to stderr (``-v``: more, ``-q``: less).
``SIGINT``/``SIGTERM`` deregister it and exit with status 0.  Loads and load
degradations are percentages, scaled to 0..0xFFFFFFFF with rounding
(digest 5.1: 30 -> 0x4CCCCCCC).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ..constants import ASAP_ANNOUNCE_GROUP, ASAP_PORT, PolicyType
from ..errors import ConfigError, RSerPoolError
from ._common import StopSignals, log_to_stderr, parse_int as _int

__all__ = ["add_parser", "run"]

_DEFAULT_INTERVAL = 30.0


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"a percentage is 0..100, not {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def add_parser(sub: Any) -> None:
    from ..services import SERVICES

    policies = ", ".join(p.name.lower() for p in PolicyType)
    p = sub.add_parser(
        "pe", help="run a demo service as a pool element",
        description="Register a demo service (echo, discard, daytime, chargen, pingpong) "
        "as a pool element of POOL and serve pool users until SIGINT/SIGTERM, which "
        "deregister it.  Like RSPLIB's rspserver.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pool", required=True, metavar="NAME", help="pool handle")
    p.add_argument("--service", choices=sorted(SERVICES), default="echo")
    p.add_argument("--policy", default="round_robin", metavar="NAME",
                   help=f"pool policy: {policies} (or rr, wrr, lu, lud, ...)")
    p.add_argument("--weight", type=_int, help="weight (weighted policies)")
    p.add_argument("--priority", type=_int, help="priority (priority policies)")
    p.add_argument("--load", type=_percent, metavar="PERCENT",
                   help="load (least-used policies), 0..100")
    p.add_argument("--load-degradation", type=_percent, metavar="PERCENT",
                   help="load degradation / increment, 0..100")
    p.add_argument("--registrar", action="append", default=[], metavar="ADDR:PORT",
                   help="a registrar to use (repeatable; tried in order)")
    p.add_argument("--no-discovery", dest="discovery", action="store_false",
                   help="do not learn registrars from multicast Server Announces")
    p.add_argument("--announce-group", default=ASAP_ANNOUNCE_GROUP, metavar="ADDR",
                   help="multicast group of the registrars' Server Announces")
    p.add_argument("--announce-port", type=_int, default=ASAP_PORT, metavar="PORT")
    p.add_argument("--transport", choices=("auto", "sctp", "tcp"), default="auto",
                   help="auto: SCTP when the kernel has it, else TCP")
    p.add_argument("--address", action="append", default=[], metavar="ADDR",
                   help="local address (repeatable: SCTP multi-homing); default 0.0.0.0")
    p.add_argument("--port", type=_int, default=0, help="user endpoint port (0: any)")
    p.add_argument("--asap-port", type=_int, default=0, help="ASAP endpoint port (0: any)")
    p.add_argument("--identifier", type=_int, metavar="ID",
                   help="PE identifier (default: random in 1..0xFFFFFFFE)")
    p.add_argument("--reregistration-interval", type=_seconds, default=_DEFAULT_INTERVAL,
                   metavar="SECONDS",
                   help="seconds between re-registrations (registration life: 3x)")
    p.add_argument("--cookie-secret", metavar="TEXT",
                   help="HMAC key for the service's cookies (same on every PE of the pool)")
    p.add_argument("--accept-any-home", action="store_true",
                   help="follow a home claim (keep-alive with the H bit) from any peer, as "
                   "RSPLIB does; by default only a known registrar (--registrar, resolved, "
                   "or announced) may take the PE over")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0,
                           help="more log output (-vv: debug)")
    verbosity.add_argument("-q", "--quiet", action="count", default=0,
                           help="less log output")
    p.set_defaults(run=run)


def _setup_logging(verbose: int, quiet: int) -> None:
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = {0: logging.WARNING}.get(quiet, logging.ERROR)
    log_to_stderr(level).propagate = False


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_element(ns: argparse.Namespace) -> Any:
    """The :class:`~rserpool.aio.element.PoolElement` the options describe.

    :raises ConfigError: an inconsistent option.
    """
    from ..aio.element import PoolElement
    from ..services import service_factory

    options: dict[str, Any] = {}
    if ns.cookie_secret and ns.service in ("echo", "chargen", "pingpong"):
        options["secret"] = ns.cookie_secret.encode()
    try:
        service = service_factory(ns.service, **options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not ns.registrar and not ns.discovery:
        raise ConfigError("--no-discovery needs at least one --registrar")
    from ..aio.multicast import parse_registrar_address

    for r in ns.registrar:
        try:
            parse_registrar_address(r)
        except ValueError as exc:
            raise ConfigError(f"--registrar {r}: {exc}") from None
    return PoolElement(
        ns.pool, policy=ns.policy, weight=ns.weight, priority=ns.priority,
        load=None if ns.load is None else ns.load / 100.0,
        load_degradation=None if ns.load_degradation is None else ns.load_degradation / 100.0,
        registrars=ns.registrar, discovery=ns.discovery, announce_group=ns.announce_group,
        announce_port=ns.announce_port, transport=ns.transport,
        addresses=ns.address or ["0.0.0.0"], port=ns.port, asap_port=ns.asap_port,
        identifier=ns.identifier, registration_interval=ns.reregistration_interval,
        service=service, accept_any_home=ns.accept_any_home)


async def _serve(ns: argparse.Namespace) -> int:
    from ..protocol.asap_element import (Deregistered, HomeRegistrarChanged, Registered,
                                         RegistrarLost, RegistrationRefused)

    with StopSignals() as signals:
        try:
            pe = build_element(ns)
        except ConfigError as exc:
            print(f"rserpool pe: {exc}", file=sys.stderr)
            return 2

        def on_event(ev: Any) -> None:
            if isinstance(ev, Registered) and not ev.reregistration:
                home = pe.home_registrar
                where = _hostport(home.host, home.port) if home else "?"
                print(f"PE 0x{pe.identifier:08x}: registered at registrar {where} "
                      f"({pe.transport})", flush=True)
            elif isinstance(ev, HomeRegistrarChanged):
                home = pe.home_registrar
                where = _hostport(home.host, home.port) if home else "?"
                print(f"PE 0x{pe.identifier:08x}: home registrar is now "
                      f"0x{ev.home_registrar:08x} at {where}", flush=True)
            elif isinstance(ev, RegistrarLost):
                print(f"PE 0x{pe.identifier:08x}: registrar lost ({ev.reason}); "
                      "looking for another", flush=True)
            elif isinstance(ev, RegistrationRefused):
                from ..errors import OperationError
                print(f"PE 0x{pe.identifier:08x}: registration refused: "
                      f"{OperationError(ev.cause)}", flush=True)
            elif isinstance(ev, Deregistered):
                print(f"PE 0x{pe.identifier:08x}: deregistered"
                      f"{'' if ev.acknowledged else ' (unconfirmed)'}", flush=True)

        pe.add_listener(on_event)
        try:
            await pe.start(wait=False)
        except OSError as exc:
            print(f"rserpool pe: cannot listen: {exc}", file=sys.stderr)
            return 1
        endpoints = ", ".join(_hostport(h, p) for h, p in pe.user_addresses)
        print(f"PE 0x{pe.identifier:08x}: pool {ns.pool!r}, service {ns.service}, "
              f"{pe.transport.upper()} endpoint {endpoints}", flush=True)
        try:
            await signals.wait()
        finally:
            await pe.stop()
    print(f"PE 0x{pe.identifier:08x}: stopped{signals.suffix()}", flush=True)
    return 0


def run(ns: argparse.Namespace) -> int:
    _setup_logging(ns.verbose, ns.quiet)
    try:
        return asyncio.run(_serve(ns))
    except RSerPoolError as exc:
        print(f"rserpool pe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - a signal before the handler is set
        return 0
