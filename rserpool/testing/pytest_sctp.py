"""pytest plugin: tests marked ``@pytest.mark.sctp`` run on real kernel SCTP.

Where the kernel has SCTP (or inside the UML guest), ``sctp`` tests run as
usual.  Where it does not (CI, containers), they run in a User-Mode Linux
guest (:mod:`rserpool.testing.uml`), all in one boot:

* every selected ``sctp`` test is replaced on the host by a *proxy* with the
  same node id; the first one to run (or ``test_sctp_suite_in_uml``, which
  is moved before them) boots UML once and runs
  ``pytest -m sctp <those node ids>`` inside it;
* each proxy then reports its own test's inner result: passed, failed (with
  the inner traceback and captured output), error, skipped or xfailed; so
  the host run's counts, ``-v`` lines, ``--lf`` and junit XML cover the
  ``sctp`` tests as if they had run on the host;
* ``tests/kernel_sctp/test_in_uml.py::test_sctp_suite_in_uml`` passes iff the inner
  run passed, and the terminal summary gets a "sctp tests in UML" section
  with the inner summary line.  The inner output is streamed live, each line
  prefixed ``uml|`` (``RSERPOOL_UML_QUIET=1`` turns that off).

If neither kernel SCTP nor UML is usable, ``sctp`` tests **fail** when
``RSERPOOL_REQUIRE_SCTP=1`` or ``CI=true``, and are skipped otherwise.

Environment:

``RSERPOOL_SCTP_MODE``     ``auto`` (default: direct if this kernel has
                           SCTP, else UML), ``uml`` (always UML) or
                           ``direct`` (never UML)
``RSERPOOL_REQUIRE_SCTP``  ``1``: unavailable SCTP fails the tests
``RSERPOOL_UML_TIMEOUT``   seconds for the whole UML run (default 900)
``RSERPOOL_UML_QUIET``     ``1``: do not stream the inner output
``RSERPOOL_UML_REPORT``    (set by the host for the inner run) JSON-lines
                           file receiving the inner test reports

Fixture ``sctp_extra_addresses``: the extra local IPv4 addresses (at least
two) for multi-homing tests; in UML they are
:data:`rserpool.testing.uml.DEFAULT_EXTRA_ADDRESSES`.

Registration: ``pytest_plugins = ["rserpool.testing.pytest_sctp"]`` in the
top-level ``tests/conftest.py`` (``tests/kernel_sctp/conftest.py`` registers it
too, if it is not yet registered, when that directory is collected).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rserpool.testing import uml

PLUGIN_NAME = "rserpool.testing.pytest_sctp"
MODE_ENV = "RSERPOOL_SCTP_MODE"
REQUIRE_ENV = "RSERPOOL_REQUIRE_SCTP"
TIMEOUT_ENV = "RSERPOOL_UML_TIMEOUT"
QUIET_ENV = "RSERPOOL_UML_QUIET"
REPORT_ENV = "RSERPOOL_UML_REPORT"
RUNNER_NAME = "test_sctp_suite_in_uml"
DEFAULT_UML_TIMEOUT = 900.0
UML_TEST_ADDRESSES = uml.DEFAULT_EXTRA_ADDRESSES

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def sctp_required() -> bool:
    """True when unavailable SCTP must fail tests (RSERPOOL_REQUIRE_SCTP=1, CI)."""
    return _flag(REQUIRE_ENV) or _flag("CI")


def uml_timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_UML_TIMEOUT)
    except ValueError:
        return DEFAULT_UML_TIMEOUT


def choose_mode() -> tuple[str, str]:
    """("direct" | "uml" | "unavailable", why)."""
    if uml.in_uml():
        return "direct", "inside UML"
    wanted = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if wanted not in {"auto", "uml", "direct"}:
        raise pytest.UsageError(f"{MODE_ENV}={wanted!r}: want auto, uml or direct")
    if wanted != "uml" and uml.kernel_sctp_available():
        return "direct", "this kernel has SCTP"
    if wanted == "direct":
        return "unavailable", f"this kernel has no SCTP ({MODE_ENV}=direct)"
    problem = uml.uml_problem()
    if problem:
        return "unavailable", f"this kernel has no SCTP and {problem}"
    kernel = uml.find_kernel()
    version = uml.kernel_version(str(kernel)) if kernel else None
    return "uml", f"User-Mode Linux {version} ({kernel})"


# --- session state -------------------------------------------------------------


@dataclass
class InnerRun:
    """Outcome of the one UML run of the sctp tests."""

    status: int | None = None
    error: str | None = None          # UML could not run (boot failure, timeout)
    reports: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    collect_errors: list[dict[str, Any]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    summary: str = ""
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reps in self.reports.values():
            outcome = _final_outcome(reps)
            out[outcome] = out.get(outcome, 0) + 1
        return out


def _final_outcome(reps: dict[str, dict[str, Any]]) -> str:
    for when in ("setup", "call", "teardown"):
        rep = reps.get(when)
        if rep and rep["outcome"] == "failed":
            return "failed" if when == "call" else "error"
    for when in ("setup", "call"):
        rep = reps.get(when)
        if rep and rep["outcome"] == "skipped":
            return "xfailed" if rep.get("wasxfail") is not None else "skipped"
    call = reps.get("call")
    if call and call.get("wasxfail") is not None:
        return "xpassed"
    return "passed" if call else "error"


@dataclass
class State:
    mode: str
    why: str
    nodeids: list[str] = field(default_factory=list)
    run: InnerRun | None = None


_STATE = pytest.StashKey[State]()


def _state(config: pytest.Config) -> State:
    state = config.stash.get(_STATE, None)
    if state is None:
        state = State(*choose_mode())
        config.stash[_STATE] = state
    return state


# --- hooks -------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    report = os.environ.get(REPORT_ENV)
    if report and uml.in_uml() and not config.pluginmanager.has_plugin("rserpool-uml-reporter"):
        config.pluginmanager.register(_InnerReporter(report), "rserpool-uml-reporter")


def pytest_report_header(config: pytest.Config) -> str:
    state = _state(config)
    return f"sctp tests: {state.mode} ({state.why})"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    state = _state(config)
    if state.mode == "direct":
        return
    new: list[pytest.Item] = []
    runners: list[pytest.Item] = []
    for item in items:
        if getattr(item, "originalname", None) == RUNNER_NAME:
            runners.append(item)
        if item.get_closest_marker("sctp") is None or isinstance(item, SctpProxy):
            new.append(item)
            continue
        new.append(SctpProxy.from_parent(item.parent, name=item.name, original=item))
        state.nodeids.append(item.nodeid)
    proxies = [i for i, item in enumerate(new) if isinstance(item, SctpProxy)]
    if proxies and runners:
        # The suite runner goes right before the first proxy: it boots UML.
        first = new[proxies[0]]
        new = [item for item in new if item not in runners]
        at = new.index(first)
        new[at:at] = runners
    if config.pluginmanager.has_plugin("timeout") and state.mode == "uml":
        limit = uml_timeout() + 120
        for item in new:
            if isinstance(item, SctpProxy) or item in runners:
                item.add_marker(pytest.mark.timeout(limit))
    items[:] = new


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    # A proxy's skip points at the inner skip's location, not at this plugin.
    location = getattr(item, "skip_location", None)
    if isinstance(item, SctpProxy) and rep.skipped and location and isinstance(rep.longrepr, tuple):
        rep.longrepr = (location[0], location[1], rep.longrepr[2])
    return rep


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or state.run is None:
        return
    run = state.run
    terminalreporter.section("sctp tests in UML")
    if run.error:
        terminalreporter.line(f"UML run failed: {run.error.splitlines()[0]}")
        return
    counts = ", ".join(f"{n} {k}" for k, n in sorted(run.counts().items()))
    terminalreporter.line(
        f"{len(state.nodeids)} sctp tests ran in {state.why}: {counts or 'no results'}; "
        f"inner pytest exit status {run.status}; boot + run {run.seconds:.1f} s")
    if run.summary:
        terminalreporter.line(f"inner summary: {run.summary}")


# --- the inner (guest) side ------------------------------------------------------------


class _InnerReporter:
    """Inside UML: write each test report as one JSON line for the host."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reason, location = "", None
        if report.skipped and isinstance(report.longrepr, tuple):
            path, lineno, reason = report.longrepr
            reason = reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
            location = [str(path), lineno]
        self._write({
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "longrepr": "" if report.passed else report.longreprtext,
            "reason": reason,
            "location": location,
            "wasxfail": getattr(report, "wasxfail", None),
            "sections": [list(s) for s in report.sections],
            "duration": report.duration,
        })

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._write({"collect_error": report.nodeid, "longrepr": report.longreprtext})

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._write({"exitstatus": int(exitstatus)})


# --- the host side --------------------------------------------------------------------


_SUMMARY = re.compile(
    r"^=+ (.*\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?).*"
    r"|no tests ran.*) =+$")


def _terminal_sink(config: pytest.Config, run: InnerRun):
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    quiet = _flag(QUIET_ENV)

    def sink(line: str) -> None:
        run.output.append(line)
        match = _SUMMARY.match(line.strip())
        if match:
            run.summary = match.group(1)
        if quiet or tr is None:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(f"uml| {line}")
        else:
            tr.write_line(f"uml| {line}")

    return sink


def inner_command(config: pytest.Config, nodeids: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", PLUGIN_NAME, "-m", "sctp", "-v",
           "--color=no", "-p", "no:cacheprovider", f"--rootdir={config.rootpath}"]
    if config.inipath:
        cmd.append(f"--config-file={config.inipath}")
    if config.getoption("capture", "fd") == "no":   # -s: the tests' prints stream too
        cmd.append("-s")
    return cmd + ["--", *nodeids]


def ensure_run(config: pytest.Config) -> InnerRun:
    """Run the selected sctp tests in UML, once per session."""
    state = _state(config)
    if state.run is not None:
        return state.run
    run = state.run = InnerRun()
    share = tempfile.mkdtemp(prefix="rserpool-sctp-")
    report = Path(share, "reports.jsonl")
    sink = _terminal_sink(config, run)
    start = time.monotonic()
    try:
        sink(f"booting UML for {len(state.nodeids)} sctp tests: {state.why}")
        run.status = uml.run_in_uml(
            inner_command(config, state.nodeids),
            env={REPORT_ENV: str(report), "PYTEST_ADDOPTS": None, "PYTEST_CURRENT_TEST": None},
            cwd=config.rootpath,
            timeout=uml_timeout(),
            extra_addresses=UML_TEST_ADDRESSES,
            share=[share],
            output=sink,
        )
    except uml.UMLError as exc:
        run.error = str(exc)
    finally:
        run.seconds = time.monotonic() - start
        if report.is_file():
            _load_reports(run, report)
        for leftover in Path(share).iterdir():
            leftover.unlink()
        os.rmdir(share)
    sink(f"UML run finished in {run.seconds:.1f} s: "
         + (run.error.splitlines()[0] if run.error else f"inner pytest exit status {run.status}"))
    return run


def _load_reports(run: InnerRun, path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "nodeid" in record:
            run.reports.setdefault(record["nodeid"], {})[record["when"]] = record
        elif "collect_error" in record:
            run.collect_errors.append(record)


def _unavailable(state: State) -> None:
    message = f"kernel SCTP unavailable: {state.why}"
    if sctp_required():
        pytest.fail(f"{message} [{REQUIRE_ENV}=1 or CI=true: sctp tests must run]", pytrace=False)
    pytest.skip(message)


def check_suite(config: pytest.Config) -> str:
    """Body of ``test_sctp_suite_in_uml``: pass iff the inner run passed."""
    state = _state(config)
    if state.mode == "direct":
        pytest.skip(f"sctp tests run directly: {state.why}")
    if state.mode == "unavailable":
        _unavailable(state)
    if not state.nodeids:
        pytest.skip("no sctp tests selected")
    run = ensure_run(config)
    if run.error:
        pytest.fail(f"could not run the sctp tests in UML:\n{run.error}", pytrace=False)
    counts = run.counts()
    line = (f"{len(state.nodeids)} sctp tests in UML: "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            + f" (inner: {run.summary or 'no summary line'}; {run.seconds:.1f} s)")
    missing = [n for n in state.nodeids if n not in run.reports]
    problems = []
    if run.status not in (0,):
        problems.append(f"inner pytest exited with status {run.status}")
    if missing:
        problems.append(f"{len(missing)} tests have no inner result: {', '.join(missing[:10])}")
    bad = counts.get("failed", 0) + counts.get("error", 0)
    if bad:
        problems.append(f"{bad} failed or errored (see their own reports)")
    if problems:
        tail = "\n".join(run.output[-80:])
        pytest.fail(f"{line}\n" + "\n".join(problems) + f"\n--- inner output (tail) ---\n{tail}",
                    pytrace=False)
    print(line)
    return line


# --- proxies -----------------------------------------------------------------------------


class InnerResult(Exception):
    """An inner failure or error, shown as the inner report's text."""


class SctpProxy(pytest.Item):
    """Stands on the host for one sctp test that runs inside UML."""

    def __init__(self, *, original: pytest.Item, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.original_path, self.original_lineno, self.original_domain = original.reportinfo()
        self.own_markers.extend(original.own_markers)
        self.keywords.update({k: v for k, v in original.keywords.items() if k != self.name})
        lineno = self.original_lineno
        self.skip_location: list[Any] | None = [
            str(self.original_path), lineno + 1 if isinstance(lineno, int) else 0]

    def reportinfo(self):  # type: ignore[override]
        return self.original_path, self.original_lineno, self.original_domain

    def _reports(self, when: str) -> dict[str, Any] | None:
        state = _state(self.config)
        if state.mode == "unavailable":
            if when == "setup":
                return None
            _unavailable(state)  # a failure or skip of the test itself
        run = ensure_run(self.config)
        reps = run.reports.get(self.nodeid)
        if reps is None:
            why = run.error.splitlines()[0] if run.error else f"inner pytest exit status {run.status}"
            extra = "".join(f"\ncollection error in {e['collect_error']}:\n{e['longrepr']}"
                            for e in run.collect_errors)
            raise InnerResult(f"no result from the UML run for this test ({why}){extra}")
        return reps.get(when)

    @staticmethod
    def _text(rep: dict[str, Any]) -> str:
        text = rep.get("longrepr") or ""
        for title, content in rep.get("sections") or ():
            text += f"\n{'-' * 20} {title} (in UML) {'-' * 20}\n{content}"
        return text

    def _apply(self, rep: dict[str, Any] | None) -> None:
        if rep is None:
            return
        if rep["outcome"] == "failed":
            raise InnerResult(self._text(rep))
        if rep["outcome"] == "skipped":
            self.skip_location = rep.get("location")
            if rep.get("wasxfail") is not None:
                pytest.xfail(rep["wasxfail"] or "xfailed in UML")
            pytest.skip(rep.get("reason") or "skipped in UML")

    def setup(self) -> None:
        self._apply(self._reports("setup"))

    def runtest(self) -> None:
        rep = self._reports("call")
        if rep is None:
            raise InnerResult("the test did not run in UML (no call report)")
        self._apply(rep)

    def teardown(self) -> None:
        state = _state(self.config)
        run = state.run
        if run is None or run.error or self.nodeid not in run.reports:
            return
        self._apply(run.reports[self.nodeid].get("teardown"))

    def repr_failure(self, excinfo, style=None):  # type: ignore[override]
        if isinstance(excinfo.value, InnerResult):
            return f"[ran inside UML]\n{excinfo.value}"
        return super().repr_failure(excinfo, style)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def sctp_extra_addresses() -> list[str]:
    """Extra local IPv4 addresses (at least two) for multi-homing tests."""
    addresses = os.environ.get(uml.ADDRESSES_ENV, "").split()
    if len(addresses) < 2:
        message = (f"no extra local addresses ({uml.ADDRESSES_ENV} unset): "
                   "multi-homing tests need the UML guest")
        if sctp_required() and uml.in_uml():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return addresses
