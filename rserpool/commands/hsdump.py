"""``rserpool hsdump ADDR[:PORT]``: download and print a registrar's handlespace.

Connects to the registrar's ENRP endpoint (default port 9901), fetches the
whole handle table with ENRP Handle Table Requests (see
:mod:`rserpool.aio.hsdump`) and prints it: a header line with the
registrar's ID and the checksum it reported, one line per pool, one
indented line per PE, then the ownership checksums per home registrar
computed from the downloaded PEs, the registrar's own line marked
``match``/``MISMATCH`` against its reported checksum.  ``--json`` prints one
JSON document instead (keys in ``docs/readme-hsdump.md``).

Exit status: 0 done, 1 connection/timeout/protocol failure (one line on
stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from ..constants import ENRP_PORT
from ._common import setup_logging

__all__ = ["add_parser", "format_dump", "run"]


def _address(text: str) -> tuple[str, int]:
    from ..aio.multicast import parse_registrar_address

    try:
        return parse_registrar_address(text, ENRP_PORT)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "hsdump", help="print a registrar's handlespace (fetched over ENRP)",
        description="Connect to a registrar's ENRP endpoint, download its handle table "
        "(Handle Table Requests while the M flag is set) and print every pool and PE, "
        "then the ownership checksum of each home registrar computed from the "
        "download, checked against the checksum the registrar reports for its own "
        "PEs.  Exit status 1 on a connection, timeout or protocol failure, 2 on a "
        "usage error.")
    p.add_argument("address", type=_address, metavar="ADDR[:PORT]",
                   help=f"the registrar's ENRP endpoint ([v6]:port for IPv6; default "
                   f"port {ENRP_PORT})")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--transport", choices=("tcp", "sctp"), default="tcp",
                   help="transport to the registrar (default: tcp)")
    p.add_argument("--timeout", type=_seconds, default=5.0, metavar="SECONDS",
                   help="limit for connecting and for each response (default: %(default)s)")
    p.add_argument("--own-only", action="store_true",
                   help="ask only for the PEs whose home is this registrar "
                   "(own-children-only flag)")
    p.add_argument("--as-peer", action="store_true",
                   help="announce a Presence first (for registrars that serve handle "
                   "tables to peers only); default: stay a non-peer")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-v info, -vv debug)")
    p.set_defaults(run=run)


def format_dump(dump: Any) -> list[str]:
    """The human-readable lines of a
    :class:`~rserpool.aio.hsdump.HandlespaceDump`."""
    from ..protocol.asap_user import PoolElementInfo
    from ..wire.describe import handle_text, transport_text
    from .resolve import format_element

    reported = dump.reported_checksum
    rid = f"0x{dump.registrar_id:08x}" if dump.registrar_id else "unknown"
    rep = f"0x{reported:04x}" if reported is not None else "none (no Presence)"
    pools = dump.pools()
    where = f"{dump.transport} {dump.host}:{dump.port}"
    lines = [f"registrar {rid} at {where}: reported checksum {rep}; "
             f"{len(dump.elements)} PE(s) in {len(pools)} pool(s), {dump.pages} page(s), "
             f"{dump.elapsed:.3f} s" + ("  [own children only]" if dump.own_children_only
                                        else "")]
    if dump.server_info is not None:
        lines.append(f"server information: id 0x{dump.server_info.server_id:08x}, "
                     f"ENRP {transport_text(dump.server_info.transport)}")
    for handle, pes in pools:
        infos = [PoolElementInfo.from_pool_element(handle, pe) for pe in pes]
        lines.append(f"pool {handle_text(handle)}: {len(pes)} PE(s), {infos[0].policy}, "
                     f"{infos[0].transport}")
        for pe, info in zip(pes, infos):
            line = f"  {format_element(info)}  life={pe.registration_life}ms"
            if pe.asap_transport is not None:
                line += f"  asap={transport_text(pe.asap_transport)}"
            lines.append(line)
    lines.append("checksums per owner (computed from the dump):")
    lines.append(f"  {'home':<10}  {'PEs':>8}  checksum")
    counts = dump.owners()
    for home, value in dump.checksums().items():
        row = f"  0x{home:08x}  {counts.get(home, 0):>8}  0x{value:04x}"
        if home == dump.registrar_id:
            if reported is None:
                row += "  (registrar; nothing reported)"
            elif value == reported:
                row += f"  match (registrar reports 0x{reported:04x})"
            else:
                row += f"  MISMATCH (registrar reports 0x{reported:04x})"
        lines.append(row)
    return lines


async def _fetch(ns: argparse.Namespace) -> Any:
    from ..aio.hsdump import dump_handlespace

    host, port = ns.address
    return await dump_handlespace(host, port, transport=ns.transport, timeout=ns.timeout,
                                  own_children_only=ns.own_only, as_peer=ns.as_peer)


def run(ns: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from ..aio.hsdump import HandlespaceDumpError

    out = out or sys.stdout
    err = err or sys.stderr
    setup_logging(ns.verbose)
    try:
        dump = asyncio.run(_fetch(ns))
    except HandlespaceDumpError as exc:
        err.write(f"rserpool hsdump: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        if ns.json:
            out.writelines(dump.iter_json())
            out.write("\n")
        else:
            out.write("\n".join(format_dump(dump)) + "\n")
        out.flush()
    except BrokenPipeError:
        return 0
    return 0
