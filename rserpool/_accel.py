"""The one place that chooses between a compiled module and its pure-Python twin.

Every extension module ``rserpool._c.<name>`` (built from
``_ext/rserpool/_c/<name>.pyx``) has a pure-Python twin with the same API.
Callers never import either directly; they do::

    from rserpool import _accel
    _codec = _accel.load("tlv", "rserpool.wire._codec_py")

Environment variables (a value of 1/true/yes/on counts as set):

``RSERPOOL_NO_EXTENSIONS=1``
    Always use the pure-Python twins (wins over the variable below).
``RSERPOOL_REQUIRE_EXTENSIONS=1``
    A compiled module that cannot be imported is an ``ImportError`` instead
    of a silent fallback (CI sets this).

Otherwise a missing extension logs one warning on the ``rserpool`` logger and
the twin is used.  :data:`ACTIVE` records each choice.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

__all__ = ["ACTIVE", "COMPILED", "PURE", "load", "is_compiled", "env_flag"]

NO_EXTENSIONS_ENV = "RSERPOOL_NO_EXTENSIONS"
REQUIRE_EXTENSIONS_ENV = "RSERPOOL_REQUIRE_EXTENSIONS"
EXTENSION_PACKAGE = "rserpool._c"

COMPILED = "compiled"
PURE = "pure"

#: name -> ``"compiled"``, or ``"pure: <why>"`` for a pure-Python twin.
#: Test with ``ACTIVE[name] == COMPILED`` or ``ACTIVE[name].startswith(PURE)``.
ACTIVE: dict[str, str] = {}

log = logging.getLogger("rserpool")
_warned: set[str] = set()


def env_flag(name: str) -> bool:
    """True if environment variable *name* is set to 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_compiled(name: str) -> bool:
    """True if :func:`load` picked the compiled module for *name*."""
    return ACTIVE.get(name) == COMPILED


def load(name: str, twin: str) -> ModuleType:
    """Return ``rserpool._c.<name>`` if usable, else the module named *twin*.

    Raises ImportError if the compiled module cannot be imported while
    ``RSERPOOL_REQUIRE_EXTENSIONS=1`` (and ``RSERPOOL_NO_EXTENSIONS`` is not
    set).  Errors other than ImportError raised while importing the compiled
    module propagate: a broken build must not be hidden.
    """
    if env_flag(NO_EXTENSIONS_ENV):
        module = importlib.import_module(twin)
        ACTIVE[name] = f"{PURE}: {NO_EXTENSIONS_ENV}=1"
        return module

    compiled = f"{EXTENSION_PACKAGE}.{name}"
    try:
        module = importlib.import_module(compiled)
    except ImportError as exc:
        if env_flag(REQUIRE_EXTENSIONS_ENV):
            raise ImportError(
                f"compiled extension {compiled} is required "
                f"({REQUIRE_EXTENSIONS_ENV}=1) but could not be imported: "
                f"{exc}; run `make build`",
                name=compiled,
            ) from exc
        module = importlib.import_module(twin)
        if isinstance(exc, ModuleNotFoundError) and exc.name == compiled:
            why = f"{compiled} not built"
        else:
            why = f"{compiled} failed to import ({exc})"
        ACTIVE[name] = f"{PURE}: {why}"
        if name not in _warned:
            _warned.add(name)
            log.warning(
                "compiled extension %s could not be imported (%s); using the "
                "slower pure-Python twin %s. Run `make build` to compile it.",
                compiled,
                exc,
                twin,
            )
        return module

    ACTIVE[name] = COMPILED
    return module
