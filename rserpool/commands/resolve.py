"""``rserpool resolve``: placeholder until its owner fills it in."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("resolve", help="(not yet implemented)")
    p.set_defaults(run=run)


def run(ns: argparse.Namespace) -> int:
    raise SystemExit("rserpool resolve: not implemented yet")
