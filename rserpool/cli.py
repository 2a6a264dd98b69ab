"""The ``rserpool`` command line.  Subcommands grow with the project:

* ``rserpool dump FILE...`` prints every ASAP/ENRP message in pcap/pcapng
  captures (``--json`` for every decoded field).
* ``rserpool --version`` says which implementation (compiled or pure) is active.

``main(argv)`` returns the exit status, so tests can call it directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

__all__ = ["main"]


def _version_text() -> str:
    import rserpool
    from rserpool import wire  # noqa: F401  (loads the codec so the summary is complete)

    return rserpool.implementation_summary()


def _fmt_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")


def _dump(paths: Sequence[str], as_json: bool, out: TextIO, err: TextIO) -> int:
    from rserpool.capture import CaptureError, read_capture
    from rserpool.errors import WireError
    from rserpool.wire import decode_message
    from rserpool.wire.describe import json_safe, summarize

    failures = 0
    shown = 0
    for path in paths:
        if len(paths) > 1 and not as_json:
            out.write(f"==> {path} <==\n")
        try:
            records = read_capture(path)
            for rec in records:
                where = f"{rec.src}:{rec.sport} -> {rec.dst}:{rec.dport}"
                proto = f"{rec.transport.upper()} {rec.protocol.upper()}"
                try:
                    msg = decode_message(rec.payload, rec.protocol)
                except WireError as exc:
                    failures += 1
                    reason = f"{type(exc).__name__}: {exc}"
                    if as_json:
                        out.write(json.dumps({
                            "file": path, "frame": rec.frame, "time": rec.time,
                            "src": rec.src, "sport": rec.sport, "dst": rec.dst,
                            "dport": rec.dport, "transport": rec.transport,
                            "protocol": rec.protocol, "error": reason,
                            "payload": rec.payload.hex()}) + "\n")
                    else:
                        out.write(f"{_fmt_time(rec.time)} #{rec.frame} {where} {proto} "
                                  f"UNDECODABLE {reason} payload={rec.payload[:64].hex()}\n")
                    continue
                shown += 1
                if as_json:
                    record: dict[str, Any] = {
                        "file": path, "frame": rec.frame, "time": rec.time,
                        "src": rec.src, "sport": rec.sport, "dst": rec.dst,
                        "dport": rec.dport, "transport": rec.transport,
                        "protocol": rec.protocol, "message": json_safe(msg.to_dict())}
                    if rec.note:
                        record["note"] = rec.note
                    out.write(json.dumps(record) + "\n")
                else:
                    note = f" ({rec.note})" if rec.note else ""
                    out.write(f"{_fmt_time(rec.time)} #{rec.frame} {where} {proto} "
                              f"{summarize(msg)}{note}\n")
            for warning in records.warnings:
                err.write(f"rserpool dump: {path}: {warning}\n")
                failures += 1
        except CaptureError as exc:
            err.write(f"rserpool dump: {path}: {exc}\n")
            failures += 1
        except OSError as exc:
            err.write(f"rserpool dump: {path}: {exc.strerror or exc}\n")
            failures += 1
    if failures:
        err.write(f"rserpool dump: {failures} payload(s) or file(s) could not be decoded "
                  f"({shown} message(s) shown)\n")
        return 1
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rserpool",
        description="Reliable Server Pooling (RFC 5351-5356): ASAP/ENRP tools.")
    parser.add_argument("--version", action="store_true",
                        help="print the version and which implementation is active")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    dump = sub.add_parser("dump", help="print the ASAP/ENRP messages in pcap/pcapng files",
                          description="Print one line per ASAP/ENRP message (SCTP PPID "
                          "11/12, TCP and UDP on ports 3863/9901) in each capture file. "
                          "Exit status 1 if any payload does not decode.")
    dump.add_argument("files", nargs="+", metavar="FILE")
    dump.add_argument("--json", action="store_true",
                      help="one JSON object per message with every decoded field")
    for name in COMMANDS:
        _command_module(name).add_parser(sub)
    return parser


#: Subcommands living in ``rserpool/commands/<name>.py``; each module exports
#: ``add_parser(subparsers)`` (registering ``set_defaults(run=run)``) and
#: ``run(ns) -> int``.
COMMANDS = ("registrar", "pe", "resolve", "pu", "hsdump")


def _command_module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"rserpool.commands.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    ns = parser.parse_args(argv)
    if ns.version:
        print(_version_text())
        return 0
    if ns.command == "dump":
        try:
            return _dump(ns.files, ns.json, sys.stdout, sys.stderr)
        except BrokenPipeError:
            return 0
    run = getattr(ns, "run", None)
    if run is not None:
        return int(run(ns))
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
