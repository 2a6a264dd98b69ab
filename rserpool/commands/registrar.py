"""``rserpool registrar``: placeholder until its owner fills it in."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("registrar", help="(not yet implemented)")
    p.set_defaults(run=run)


def run(ns: argparse.Namespace) -> int:
    raise SystemExit("rserpool registrar: not implemented yet")
