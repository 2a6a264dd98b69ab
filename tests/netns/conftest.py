"""Tests across network namespaces that the tests build themselves.

A test marked ``netns`` needs root, iproute2 and a kernel with
network namespaces, bridges and veths (:func:`rserpool.testing.netns.netns_problem`).
Without them it is **skipped**, or it **fails** when ``CI=true`` or
``RSERPOOL_REQUIRE_NETNS=1`` (the policy of the ``sctp`` marker).

Fixtures:

``network``   a :class:`rserpool.testing.netns.Network` (a bridge in its own
              namespace; add hosts with ``network.add_host(name)``); process
              outputs go to the test's ``tmp_path``, and the tail of each is
              attached to the report of a failed test.  Teardown stops every
              process and deletes every namespace, and fails the test if one
              is left.

At the start of the session, namespaces left by killed earlier runs
(``rsptest-<dead pid>-...``) are deleted; at the end, the session checks that
none of its own is left.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rserpool.testing import netns

_NETWORKS = pytest.StashKey[list[netns.Network]]()


def pytest_report_header(config: pytest.Config) -> str:
    problem = netns.netns_problem()
    policy = " (required: CI / RSERPOOL_REQUIRE_NETNS)" if netns.netns_required() else ""
    return f"netns tests: {'available' if problem is None else 'unavailable: ' + problem}{policy}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        netns.require_netns()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.failed and call.when in ("call", "teardown"):
        for net in item.stash.get(_NETWORKS, []):
            rep.sections.append((f"processes of {net.id}", net.describe()))
    return rep


@pytest.fixture(scope="session", autouse=True)
def _netns_session() -> Iterator[None]:
    """Delete stale namespaces first; check that this run left none."""
    if netns.netns_problem() is None:
        netns.cleanup_stale()
    yield
    if netns.netns_problem() is None:
        ours = f"{netns.NAME_PREFIX}-{os.getpid()}-"
        left = [n for n in netns.list_namespaces() if n.startswith(ours)]
        assert not left, f"namespaces left behind by this test run: {left}"


@pytest.fixture
def network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[netns.Network]:
    """A fresh network: a bridge in its own namespace (no hosts yet)."""
    net = netns.Network(workdir=tmp_path / "net")
    request.node.stash.setdefault(_NETWORKS, []).append(net)
    try:
        net.start()
        yield net
    finally:
        names = net.namespaces
        net.close()  # raises NetnsError if a namespace survived
        left = set(netns.list_namespaces())
        assert not left & set(names), f"namespaces left: {sorted(left & set(names))}"


@pytest.fixture
def tshark_required() -> bool:
    """True when a missing tshark must fail tests rather than skip them (CI)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("CI", "RSERPOOL_REQUIRE_TSHARK"))
