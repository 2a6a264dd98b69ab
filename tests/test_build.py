"""The build and the compiled/pure-Python selection in rserpool._accel."""

from __future__ import annotations

import importlib
import logging
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rserpool
from rserpool import _accel


ROOT = Path(__file__).resolve().parent.parent
PYX_DIR = ROOT / "_ext" / "rserpool" / "_c"
ENV_VARS = (_accel.NO_EXTENSIONS_ENV, _accel.REQUIRE_EXTENSIONS_ENV)


def request_clean_accel(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_accel, "ACTIVE", {})
    monkeypatch.setattr(_accel, "_warned", set())
    return _accel


@pytest.fixture
def clean_accel(monkeypatch):
    """Isolate _accel's module state and clear the selection env vars."""
    return request_clean_accel(monkeypatch)


@pytest.fixture
def fake_twin(tmp_path, monkeypatch):
    """A throwaway pure-Python 'twin' module importable as rserpool_fake_twin."""
    (tmp_path / "rserpool_fake_twin.py").write_text("IMPL = 'pure'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "rserpool_fake_twin"
    sys.modules.pop("rserpool_fake_twin", None)


def run_py(code: str, *, env: dict[str, str], extra_path: Path | None = None):
    """Run *code* in a fresh interpreter from the repo root."""
    full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def extensions_required() -> bool:
    return _accel.env_flag(_accel.REQUIRE_EXTENSIONS_ENV)


def pyx_stems() -> list[str]:
    return sorted(p.stem for p in PYX_DIR.glob("*.pyx"))


# --- _accel.load ------------------------------------------------------------


def test_no_extensions_env_selects_twin(clean_accel, fake_twin, monkeypatch):
    monkeypatch.setenv("RSERPOOL_NO_EXTENSIONS", "1")
    monkeypatch.setenv("RSERPOOL_REQUIRE_EXTENSIONS", "1")  # opt-out wins
    module = clean_accel.load("tlv", fake_twin)
    assert module.IMPL == "pure"
    assert clean_accel.ACTIVE["tlv"] == "pure: RSERPOOL_NO_EXTENSIONS=1"
    assert not clean_accel.is_compiled("tlv")


def test_missing_extension_falls_back_with_one_warning(clean_accel, fake_twin, caplog):
    caplog.set_level(logging.WARNING, logger="rserpool")
    first = clean_accel.load("no_such_ext_xyz", fake_twin)
    second = clean_accel.load("no_such_ext_xyz", fake_twin)
    assert first is second
    assert first.IMPL == "pure"
    assert clean_accel.ACTIVE["no_such_ext_xyz"].startswith("pure: ")
    assert "not built" in clean_accel.ACTIVE["no_such_ext_xyz"]
    warnings = [r for r in caplog.records if r.name == "rserpool"]
    assert len(warnings) == 1, warnings
    assert "rserpool._c.no_such_ext_xyz" in warnings[0].getMessage()
    assert "make build" in warnings[0].getMessage()


def test_require_extensions_makes_missing_extension_an_import_error(
    clean_accel, fake_twin, monkeypatch
):
    monkeypatch.setenv("RSERPOOL_REQUIRE_EXTENSIONS", "1")
    with pytest.raises(ImportError) as info:
        clean_accel.load("no_such_ext_xyz", fake_twin)
    message = str(info.value)
    assert "rserpool._c.no_such_ext_xyz is required" in message
    assert "RSERPOOL_REQUIRE_EXTENSIONS=1" in message
    assert "make build" in message
    assert info.value.name == "rserpool._c.no_such_ext_xyz"
    assert isinstance(info.value.__cause__, ImportError)
    assert "no_such_ext_xyz" not in clean_accel.ACTIVE


def test_require_zero_is_not_set(clean_accel, fake_twin, monkeypatch):
    monkeypatch.setenv("RSERPOOL_REQUIRE_EXTENSIONS", "0")
    assert clean_accel.load("no_such_ext_xyz", fake_twin).IMPL == "pure"


# --- summary ------------------------------------------------------------------


def test_summary_and_extensions_active(clean_accel, monkeypatch):
    monkeypatch.setattr(rserpool, "_ACCEL_CLIENTS", ())
    assert rserpool.implementation_summary() == (
        f"rserpool {rserpool.__version__} (no accelerated modules loaded)"
    )
    assert rserpool.extensions_active() is False

    clean_accel.ACTIVE.update(tlv="compiled", handlespace="compiled")
    assert rserpool.extensions_active() is True
    assert rserpool.implementation_summary() == (
        "rserpool 0.1.0 (compiled extensions: handlespace, tlv)"
    )

    clean_accel.ACTIVE["handlespace"] = "pure: RSERPOOL_NO_EXTENSIONS=1"
    assert rserpool.extensions_active() is False
    assert rserpool.implementation_summary() == (
        "rserpool 0.1.0 (compiled extensions: tlv; "
        "pure-Python twins: handlespace — RSERPOOL_NO_EXTENSIONS=1)"
    )


def test_version_matches_metadata():
    from importlib import metadata

    try:
        installed = metadata.version("rserpool")
    except metadata.PackageNotFoundError:
        pytest.skip("rserpool is not installed (run `make setup`)")
    assert installed == rserpool.__version__


def test_import_rserpool_is_light():
    proc = run_py(
        """
        import sys, rserpool
        heavy = sorted(m for m in sys.modules
                       if m.startswith(("rserpool.wire", "rserpool._c.")))
        print(heavy)
        """,
        env={},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- subprocesses: environment variables seen by a fresh interpreter ----------


def test_subprocess_no_extensions(tmp_path):
    (tmp_path / "rserpool_fake_twin.py").write_text("IMPL = 'pure'\n")
    proc = run_py(
        """
        import rserpool
        from rserpool import _accel
        m = _accel.load("tlv", "rserpool_fake_twin")
        print(m.IMPL)
        print(_accel.ACTIVE["tlv"])
        print(rserpool.implementation_summary())
        """,
        env={"RSERPOOL_NO_EXTENSIONS": "1", "RSERPOOL_REQUIRE_EXTENSIONS": "1"},
        extra_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    impl, active, summary = proc.stdout.splitlines()[-3:]
    assert impl == "pure"
    assert active == "pure: RSERPOOL_NO_EXTENSIONS=1"
    assert "pure-Python twins: " in summary and "tlv — RSERPOOL_NO_EXTENSIONS=1" in summary
    assert "compiled extensions" not in summary


def test_subprocess_require_missing_fails(tmp_path):
    (tmp_path / "rserpool_fake_twin.py").write_text("IMPL = 'pure'\n")
    proc = run_py(
        """
        from rserpool import _accel
        _accel.load("no_such_ext_xyz", "rserpool_fake_twin")
        """,
        env={"RSERPOOL_REQUIRE_EXTENSIONS": "1"},
        extra_path=tmp_path,
    )
    assert proc.returncode != 0
    assert "ImportError: compiled extension rserpool._c.no_such_ext_xyz is required" in proc.stderr


def _cli_available() -> bool:
    try:
        importlib.import_module("rserpool.cli")
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _cli_available(), reason="rserpool.cli does not exist yet")
@pytest.mark.parametrize("no_ext", ["1", ""], ids=["no-extensions", "default"])
def test_version_command(no_ext):
    env = {"RSERPOOL_NO_EXTENSIONS": no_ext}
    script = Path(sys.executable).with_name("rserpool")
    cmds = [[sys.executable, "-m", "rserpool", "--version"]]
    if script.exists():
        cmds.append([str(script), "--version"])
    full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    full_env.update(env)
    if extensions_required():
        full_env["RSERPOOL_REQUIRE_EXTENSIONS"] = "1"
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        out = proc.stdout + proc.stderr
        assert f"rserpool {rserpool.__version__}" in out, out
        if no_ext:
            assert "compiled extensions" not in out, out


# --- the compiled extensions --------------------------------------------------


def test_setup_py_builds_every_pyx():
    setup_ns = runpy.run_path(str(ROOT / "setup.py"), run_name="rserpool_setup")
    sources = setup_ns["discover_sources"](ROOT)
    assert sorted(sources) == [f"rserpool._c.{stem}" for stem in pyx_stems()]
    for name, path in sources.items():
        assert path == f"_ext/rserpool/_c/{name.rsplit('.', 1)[1]}.pyx"


@pytest.mark.parametrize("stem", pyx_stems())
def test_compiled_module_importable(stem, monkeypatch):
    required = extensions_required()  # before clean_accel clears the env
    clean_accel = request_clean_accel(monkeypatch)
    qualname = f"rserpool._c.{stem}"
    try:
        module = importlib.import_module(qualname)
    except ImportError as exc:
        if required:
            pytest.fail(f"{qualname} not importable with RSERPOOL_REQUIRE_EXTENSIONS=1: {exc}")
        pytest.skip(f"{qualname} not built (run `make build`): {exc}")
    path = Path(module.__file__)
    assert path.suffix in {".so", ".pyd"}, path
    assert path.parent == ROOT / "rserpool" / "_c", path
    # _accel picks it (the twin is never imported).
    monkeypatch.setenv("RSERPOOL_REQUIRE_EXTENSIONS", "1")
    assert clean_accel.load(stem, "rserpool_twin_that_does_not_exist") is module
    assert clean_accel.ACTIVE[stem] == "compiled"


def test_tlv_compiled_when_required():
    """CI (RSERPOOL_REQUIRE_EXTENSIONS=1) must have the compiled tlv module."""
    if not extensions_required():
        pytest.skip("RSERPOOL_REQUIRE_EXTENSIONS is not set")
    proc = run_py(
        """
        import rserpool._c.tlv as m
        print(m.__file__)
        """,
        env={"RSERPOOL_REQUIRE_EXTENSIONS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(".so")
