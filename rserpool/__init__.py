"""rserpool: Reliable Server Pooling (RFC 5351-5356): ASAP and ENRP.

This module stays light on purpose: importing ``rserpool`` loads no protocol
code and no compiled extension.  Which implementation (compiled Cython module
or pure-Python twin) is used for each accelerated module is decided in
:mod:`rserpool._accel`; :func:`implementation_summary` reports it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "extensions_active", "implementation_summary"]

#: Modules whose import calls ``_accel.load(...)``.  They are imported lazily
#: (only by the two functions below) so that the report covers every
#: accelerated module without making ``import rserpool`` heavy.
_ACCEL_CLIENTS: tuple[str, ...] = ("rserpool.wire", "rserpool.handlespace")


def _load_accel_clients() -> None:
    for client in _ACCEL_CLIENTS:
        try:
            importlib.import_module(client)
        except ModuleNotFoundError as exc:
            # Tolerate only the client itself being absent, not a missing
            # dependency or a required extension (that is an ImportError
            # raised by _accel.load with RSERPOOL_REQUIRE_EXTENSIONS=1).
            if exc.name != client:
                raise


def _active() -> dict[str, str]:
    _load_accel_clients()
    from rserpool import _accel

    return dict(_accel.ACTIVE)


def extensions_active() -> bool:
    """True iff accelerated modules are loaded and every one is compiled."""
    active = _active()
    return bool(active) and all(v == "compiled" for v in active.values())


def implementation_summary() -> str:
    """One line for ``rserpool --version``, e.g.

    ``rserpool 0.1.0 (compiled extensions: tlv)`` or
    ``rserpool 0.1.0 (pure-Python twins: tlv — RSERPOOL_NO_EXTENSIONS=1)``.
    """
    active = _active()
    compiled = sorted(n for n, v in active.items() if v == "compiled")
    by_reason: dict[str, list[str]] = {}
    for name, value in sorted(active.items()):
        if value != "compiled":
            reason = value.partition(":")[2].strip() or "unknown reason"
            by_reason.setdefault(reason, []).append(name)

    parts = []
    if compiled:
        parts.append("compiled extensions: " + ", ".join(compiled))
    if by_reason:
        parts.append(
            "pure-Python twins: "
            + "; ".join(f"{', '.join(names)} — {why}" for why, names in by_reason.items())
        )
    detail = "; ".join(parts) if parts else "no accelerated modules loaded"
    return f"rserpool {__version__} ({detail})"
