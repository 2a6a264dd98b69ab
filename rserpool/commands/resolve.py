"""``rserpool resolve NAME``: ask a registrar for pool elements of a pool.

Prints one line per selected PE (identifier, user transport and addresses,
policy and its values, home registrar), or with ``--json`` one JSON document
``{"pool_handle": ..., "registrar": ..., "elements": [...]}``.  Exit status 1
with a message on stderr when the pool is unknown or no registrar answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from ..constants import ErrorCause
from ..errors import NoRegistrarError, OperationError
from ._common import add_registrar_options, pool_user_options, registrar_missing, setup_logging

__all__ = ["add_parser", "run", "format_element", "add_registrar_options",
           "setup_logging"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "resolve", help="resolve a pool handle to pool elements",
        description="Send an ASAP Handle Resolution for NAME and print the selected "
        "pool elements, one line each (or JSON).  Exit status 1 when the pool is "
        "unknown or no registrar answers.")
    p.add_argument("name", metavar="NAME", help="the pool handle")
    p.add_argument("--items", type=int, default=None, metavar="N",
                   help="how many PEs to ask for (default: the registrar's default)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_registrar_options(p)
    p.set_defaults(run=run)


def _pct(value: int | None) -> str:
    return "-" if value is None else f"{100.0 * value / 0xFFFFFFFF:.2f}%"


def format_element(e: Any) -> str:
    """One line for a :class:`~rserpool.protocol.asap_user.PoolElementInfo`."""
    addrs = ",".join(f"[{a}]" if ":" in a else a for a in e.addresses)
    parts = [f"0x{e.identifier:08x}", f"{e.transport}", f"{addrs}:{e.port}", e.policy]
    if e.load is not None:
        parts.append(f"load={_pct(e.load)}")
    if e.load_degradation is not None:
        parts.append(f"degradation={_pct(e.load_degradation)}")
    if e.weight is not None:
        parts.append(f"weight={e.weight}")
    if e.priority is not None:
        parts.append(f"priority={e.priority}")
    parts.append(f"home=0x{e.home_registrar:08x}")
    if e.has_control_channel:
        parts.append("control")
    return "  ".join(parts)


async def _resolve(ns: argparse.Namespace) -> tuple[list[Any], Any]:
    from ..aio.user import PoolUser

    async with PoolUser(**pool_user_options(ns)) as pu:
        found = await pu.resolve(ns.name, ns.items)
        return found, pu.registrar


def run(ns: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    setup_logging(ns.verbose)
    if ns.items is not None and ns.items < 1:
        err.write("rserpool resolve: --items must be at least 1\n")
        return 2
    if registrar_missing(ns, "resolve", err):
        return 1
    try:
        found, registrar = asyncio.run(_resolve(ns))
    except OperationError as exc:
        if exc.cause == ErrorCause.UNKNOWN_POOL_HANDLE:
            err.write(f"rserpool resolve: unknown pool handle {ns.name!r}\n")
        else:
            err.write(f"rserpool resolve: the registrar refused: {exc} "
                      f"(cause 0x{int(exc.cause):04x})\n")
        return 1
    except NoRegistrarError as exc:
        err.write(f"rserpool resolve: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    if ns.json:
        doc = {"pool_handle": ns.name,
               "registrar": None if registrar is None else
               {"transport": registrar.transport, "host": registrar.host,
                "port": registrar.port},
               "elements": [e.to_dict() for e in found]}
        out.write(json.dumps(doc, indent=None) + "\n")
    else:
        if not found:
            out.write(f"pool {ns.name!r}: no pool elements\n")
        for e in found:
            out.write(format_element(e) + "\n")
    out.flush()
    return 0
