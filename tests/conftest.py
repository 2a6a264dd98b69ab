"""Shared pytest configuration for rserpool.

Compiled modules and their pure-Python twins
--------------------------------------------
Each extension ``rserpool._c.<name>`` has a pure-Python twin, and tests that
exercise one should run against both.  Two equivalent ways:

1. The ``accel_impl`` fixture plus the ``accel`` marker (preferred: no import
   at collection time, and the failure is reported on the test itself)::

       @pytest.mark.accel("tlv", "rserpool.wire._codec_py")
       def test_roundtrip(accel_impl):
           assert accel_impl.decode(accel_impl.encode(x)) == x

   The marker may also be put on a class or module (``pytestmark``).  Each
   test runs twice, with ids ``[c]`` (compiled) and ``[py]`` (twin).

2. :func:`implementations` for an explicit ``parametrize``::

       from conftest import implementations

       @pytest.mark.parametrize("codec", implementations("tlv", "rserpool.wire._codec_py"))
       def test_roundtrip(codec): ...

   (or wrap it in a project fixture, e.g. ``codec_impl``, with
   ``@pytest.fixture(params=implementations(...))`` returning ``request.param``).

Either way the compiled variant:

* uses the compiled module when it is built;
* is **skipped** when it is not built and ``RSERPOOL_REQUIRE_EXTENSIONS`` is
  unset (a developer who has not run ``make build``);
* **fails** (never skips) when it is not built and
  ``RSERPOOL_REQUIRE_EXTENSIONS=1`` (CI sets it in ``.ci/run``).

The compiled variant always imports ``rserpool._c.<name>`` directly (ignoring
``RSERPOOL_NO_EXTENSIONS``): both variants are tested regardless of which one
``rserpool._accel.load`` would pick.

``from conftest import ...`` in a test module gets the nearest conftest.py
above it (this file, unless its own directory has one): see
:func:`pytest_collectstart`.

Markers (declared in pyproject.toml): ``sctp``, ``netns``, ``slow``, ``tshark``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REQUIRE_ENV = "RSERPOOL_REQUIRE_EXTENSIONS"

# sctp-marked tests run inside a User-Mode Linux kernel on hosts without kernel SCTP
pytest_plugins = ["rserpool.testing.pytest_sctp"]


def extensions_required() -> bool:
    """True when a missing compiled module must fail tests (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def import_compiled(name: str) -> tuple[ModuleType | None, str]:
    """Import ``rserpool._c.<name>``; return (module or None, why it is missing)."""
    qualname = f"rserpool._c.{name}"
    try:
        return importlib.import_module(qualname), ""
    except ImportError as exc:
        return None, f"{qualname} is not built ({exc}); run `make build`"


class MissingExtension:
    """Stands in for a compiled module that is required but not built.

    Any attribute access fails the test with an explanation, so a test using
    it fails instead of being skipped.
    """

    def __init__(self, name: str, why: str) -> None:
        self._name = name
        self._why = why

    def __getattr__(self, attr: str) -> Any:
        pytest.fail(f"{self._why} [{REQUIRE_ENV}=1]", pytrace=False)

    def __repr__(self) -> str:
        return f"<missing compiled module rserpool._c.{self._name}>"


def implementations(name: str, twin: str) -> list[Any]:
    """``[param(compiled, id="c"), param(twin, id="py")]`` for parametrize.

    The twin is imported eagerly (it must always work).  The compiled param is
    marked skip if it is not built, unless RSERPOOL_REQUIRE_EXTENSIONS=1, in
    which case it is a :class:`MissingExtension` that fails the test on use.
    """
    compiled, why = import_compiled(name)
    twin_module = importlib.import_module(twin)
    if compiled is not None:
        c_param = pytest.param(compiled, id="c")
    elif extensions_required():
        c_param = pytest.param(MissingExtension(name, why), id="c")
    else:
        c_param = pytest.param(None, id="c", marks=pytest.mark.skip(reason=why))
    return [c_param, pytest.param(twin_module, id="py")]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "accel(name, twin): run the test with the accel_impl fixture bound to "
        "rserpool._c.<name> and to its pure-Python twin module <twin>",
    )


def pytest_collectstart(collector: pytest.Collector) -> None:
    """Make ``import conftest`` in a test module mean its nearest conftest.py.

    pytest imports every conftest.py outside a package under the one name
    ``conftest``, so ``sys.modules["conftest"]`` is whichever was loaded last
    (``tests/wire/conftest.py`` after ``pytest tests/wire tests/...``).  Just
    before a test module is imported, point that name at the conftest.py
    nearest above the module.
    """
    if not isinstance(collector, pytest.Module):
        return
    nearest: ModuleType | None = None
    depth = -1
    for plugin in collector.config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None)
        if not isinstance(plugin, ModuleType) or not file or Path(file).name != "conftest.py":
            continue
        folder = Path(file).resolve().parent
        if folder in collector.path.resolve().parents and len(folder.parts) > depth:
            nearest, depth = plugin, len(folder.parts)
    if nearest is not None and nearest.__name__ == "conftest":
        sys.modules["conftest"] = nearest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "accel_impl" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("accel")
    if marker is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: the accel_impl fixture needs "
            '@pytest.mark.accel("<name>", "<twin module>")'
        )
    name, twin = marker.args
    metafunc.parametrize(
        "accel_impl",
        [("compiled", name, twin), ("pure", name, twin)],
        ids=["c", "py"],
        indirect=True,
    )


@pytest.fixture
def accel_impl(request: pytest.FixtureRequest) -> ModuleType:
    """The module under test: compiled or pure twin (see module docstring)."""
    kind, name, twin = request.param
    if kind == "pure":
        return importlib.import_module(twin)
    module, why = import_compiled(name)
    if module is None:
        if extensions_required():
            pytest.fail(f"{why} [{REQUIRE_ENV}=1]", pytrace=False)
        pytest.skip(why)
    return module
