"""Evidence 2 of issue 4 for the policy and bad-peer checks: over real kernel
SCTP (inside User-Mode Linux on hosts without it, see
``rserpool.testing.pytest_sctp``).

* Every pool policy, seen through the network: four PEs registered over
  SCTP associations, a pool user (:class:`~rserpool.aio.user.PoolUser`,
  transport ``"sctp"``, no cache) resolving over SCTP gets, resolution after
  resolution, the selection order a handlespace with the registrar's seed
  gives for the same elements.  The policies and their values are those of
  ``tests/integration/test_user.py::test_every_policy_selects_through_the_
  network_as_the_handlespace_does`` (the same check over TCP).
* Bad peers on SCTP associations, while a well-behaved SCTP pool user keeps
  resolving and checking every answer: a malformed ASAP message gets its
  association aborted (and the PEs registered over it removed), a message
  of an unknown type gets an ASAP Error and the association stays; messages
  with a PPID other than ASAP's (11) are ignored, even a valid
  Deregistration from the PE's own association.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from rserpool.aio.user import PoolUser
from rserpool.constants import PPID, ErrorCause
from rserpool.handlespace import Handlespace
from rserpool.testing import aio as testing_aio
from rserpool.wire import AsapErrorMessage, Deregistration, HandleResolution, encode_message

pytestmark = pytest.mark.sctp

SCENARIO_TIMEOUT = 60.0
POOL = b"EchoPool"
SEED = 99


def _load(name: str, relative: str) -> ModuleType:
    """A module of ``tests/integration`` (not a package) under its own name."""
    path = Path(__file__).resolve().parents[1] / "integration" / relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: AsapClient, running_registrar, pool_element, ResolutionProber
#: (tests/integration/conftest.py)
H = _load("_policies_sctp_helpers", "conftest.py")
#: The policies and policy values of the TCP check (tests/integration/test_user.py)
#: (test_user.py does ``from conftest import ...``: give it its own conftest)
_saved_conftest = sys.modules.get("conftest")
sys.modules["conftest"] = H
try:
    ALL_POLICIES = _load("_policies_sctp_user_tests", "test_user.py").ALL_POLICIES
finally:
    if _saved_conftest is not None:
        sys.modules["conftest"] = _saved_conftest


#: ``run(coro_fn)``: ``coro_fn()`` in a new event loop, within SCENARIO_TIMEOUT.
run = partial(testing_aio.run_with_timeout, timeout=SCENARIO_TIMEOUT)
#: ``await until(cond, what=...)``: an effect of another task or side (not a
#: timing assertion); AssertionError if it does not come within 15 s.
until = partial(testing_aio.until, timeout=15.0)


async def register_over_sctp(reg: Any, pool: bytes, identifier: int, *, policy: int = 1,
                             values: tuple[int, ...] | list[int] = (), port: int = 7000
                             ) -> Any:
    """A PE on its own SCTP association (answering keep-alives), registered."""
    host, asap_port = reg.address("sctp")
    pe = await H.AsapClient.connect(host, asap_port, transport="sctp", auto_ack=True)
    resp = await pe.register(pool, H.pool_element(identifier, policy=policy, values=values,
                                                  address=host, port=port,
                                                  transport="sctp"))
    assert not resp.rejected, resp
    return pe


# ---------------------------------------------------------------------------
# every policy through the network


async def policy_scenario(ptype: int, base: tuple[int, ...]) -> None:
    """The TCP check of test_user.py, with SCTP everywhere: the registrar
    serves SCTP only, the PEs register over SCTP, the PU resolves over SCTP."""
    async with H.running_registrar(transports=("sctp",), seed=SEED,
                                   keep_alive_interval=5.0, keep_alive_timeout=5.0) as reg:
        assert reg.transports == ["sctp"]
        host, port = reg.address("sctp")
        pes = [await register_over_sctp(reg, POOL, ident, policy=ptype,
                                        values=[v + 5 * n for v in base], port=7001 + n)
               for n, ident in enumerate((0xA1, 0xA2, 0xA3, 0xA4))]
        try:
            entries = sorted(reg.handlespace.pool_elements(POOL), key=lambda e: e.seq)
            assert {type(e.user_transport).__name__ for e in entries} == {"SctpTransport"}
            reference = Handlespace(seed=SEED, max_bad_pe_reports=3)
            for entry in entries:
                reference.register(POOL, entry.pool_element, 0.0)
            counts = (1, 3, 2, 4, 1, 2, 3)
            async with PoolUser(registrars=[f"{host}:{port}"], discovery=False,
                                transport="sctp") as pu:
                got = [[e.identifier for e in await pu.resolve(POOL, n)] for n in counts]
                assert pu.registrar is not None and pu.registrar.transport == "sctp"
                assert pu.requests_sent == len(counts)
            want = [[e.identifier for e in reference.select_entries(POOL, n)] for n in counts]
            assert got == want
            assert all(len(g) == min(n, 4) for g, n in zip(got, counts))
            assert reg.statistics()["resolutions"] == len(counts)
        finally:
            for pe in pes:
                await pe.close()


@pytest.mark.parametrize("ptype,base", ALL_POLICIES, ids=[p.name for p, _ in ALL_POLICIES])
def test_every_policy_selects_through_sctp_as_the_handlespace_does(ptype, base):
    run(lambda: policy_scenario(ptype, base))


# ---------------------------------------------------------------------------
# bad peers on SCTP associations

GOOD = b"Good"
#: Keep-alives are not under test here: timers loose enough that a slow UML
#: guest never misses one (the integration defaults are 1 s / 1 s).
STEADY = dict(transports=("sctp",), keep_alive_interval=5.0, keep_alive_timeout=5.0)
GOOD_IDS = {0x601, 0x602}


@contextlib.asynccontextmanager
async def good_service(reg: Any) -> Any:
    """Two PEs of ``Good`` on one SCTP association, and a prober on another."""
    host, port = reg.address("sctp")
    pe = await H.AsapClient.connect(host, port, transport="sctp", auto_ack=True)
    for n, ident in enumerate(sorted(GOOD_IDS)):
        resp = await pe.register(GOOD, H.pool_element(ident, address=host, port=7100 + n,
                                                      transport="sctp"))
        assert not resp.rejected, resp
    prober = H.ResolutionProber(await H.AsapClient.connect(host, port, transport="sctp"),
                                GOOD, GOOD_IDS)
    await prober.progressed()
    try:
        yield prober
        await prober.progressed()
        assert all((GOOD, i) in reg.handlespace for i in GOOD_IDS)
        assert not pe.closed.is_set()
    finally:
        await prober.stop()
        await pe.close()


MALFORMED = {
    "short-length": b"\x01\x00\x00\x02",                       # length below the header
    "length-mismatch": b"\x03\x00\x00\x40" + b"\x00" * 12,    # 64 announced, 16 sent
    "overrun": b"\x05\x00\x00\x0c\x00\x09\x00\x40abcd",        # parameter overruns
    "empty-pool-element": b"\x01\x00\x00\x10\x00\x09\x00\x08Evil\x00\x0a\x00\x04",
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_message_aborts_only_that_association(data):
    async def scenario() -> None:
        async with H.running_registrar(**STEADY) as reg:
            async with good_service(reg) as prober:
                host, port = reg.address("sctp")
                bad = await register_over_sctp(reg, b"Evil", 0x666, port=7200)
                assert (b"Evil", 0x666) in reg.handlespace
                aborts = reg.statistics()["aborts"]
                bad.send(data)                              # PPID 11
                await bad.wait_closed(timeout=15.0)         # ABORTed by the registrar
                assert reg.statistics()["aborts"] == aborts + 1
                # its PE went with it; everyone else is served throughout
                await until(lambda: (b"Evil", 0x666) not in reg.handlespace,
                            what="the bad peer's PE removed")
                await prober.progressed()
                other = await H.AsapClient.connect(host, port, transport="sctp")
                resp = await other.resolve(GOOD, 3)
                assert {pe.identifier for pe in resp.pool_elements} == GOOD_IDS
                await other.close()

    run(scenario)


def test_unknown_message_type_gets_an_asap_error_and_the_association_stays():
    async def scenario() -> None:
        async with H.running_registrar(**STEADY) as reg:
            async with good_service(reg) as prober:
                host, port = reg.address("sctp")
                peer = await H.AsapClient.connect(host, port, transport="sctp")
                resp = await peer.request(b"\x7f\x00\x00\x08\x00\x00\x00\x00")
                assert type(resp) is AsapErrorMessage
                assert [int(c.code) for c in resp.causes] == [ErrorCause.UNRECOGNIZED_MESSAGE]
                assert not peer.closed.is_set()
                resp = await peer.resolve(GOOD, 3)         # still served
                assert {pe.identifier for pe in resp.pool_elements} == GOOD_IDS
                await prober.progressed()
                await peer.close()

    run(scenario)


@pytest.mark.parametrize("ppid", [0, PPID.ENRP, 0xFFFFFFFE], ids=["0", "enrp", "high"])
def test_messages_with_a_non_asap_ppid_are_ignored(ppid):
    async def scenario() -> None:
        async with H.running_registrar(**STEADY) as reg:
            async with good_service(reg) as prober:
                host, port = reg.address("sctp")
                pe = await register_over_sctp(reg, b"Other", 0x777, port=7300)
                channel = pe._channel
                # garbage, a valid resolution and a valid deregistration of its
                # own PE, all with a foreign PPID: none of them is acted upon
                channel.send(b"\x01\x00\x00\x02 not ASAP at all", ppid=ppid)
                channel.send(encode_message(HandleResolution(GOOD)), ppid=ppid)
                channel.send(encode_message(Deregistration(b"Other", 0x777)), ppid=ppid)
                # the same association is then served, answered once: only
                # this resolution (SCTP keeps the order of one stream)
                resp = await pe.resolve(b"Other")
                assert [e.identifier for e in resp.pool_elements] == [0x777]
                assert pe.messages.empty() and not pe.closed.is_set()
                assert (b"Other", 0x777) in reg.handlespace
                assert reg.statistics()["aborts"] == 0
                await prober.progressed()
                # with PPID 11 the deregistration does happen
                resp = await pe.deregister(b"Other", 0x777)
                assert resp.error is None and (b"Other", 0x777) not in reg.handlespace
                await pe.close()

    run(scenario)
