"""The registrar over real kernel SCTP (marked ``sctp``: on a host without
kernel SCTP these run inside User-Mode Linux, see
``rserpool.testing.pytest_sctp``): registration, resolution, keep-alives
answered and not, association abort and shutdown, multi-homing (the user
address filter against the association's peer addresses), SCTP and TCP
served at once on one port, and PPIDs other than ASAP's ignored."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from rserpool.constants import PPID, ErrorCause
from rserpool.testing import aio as testing_aio
from rserpool.wire import (HandleResolution, HandleResolutionResponse, SctpTransport,
                           encode_message)

pytestmark = pytest.mark.sctp


def _helpers():
    """The integration tests' helpers (AsapClient, running_registrar, ...)."""
    path = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_registrar_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H = _helpers()
A, B = 0xA, 0xB


@pytest.fixture
def arun():
    loop = asyncio.new_event_loop()

    def run(coro, timeout=60.0):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    try:
        yield run
    finally:
        testing_aio.close_loop(loop)


#: ``await wait_for(predicate)``: TimeoutError if it is not true within 15 s.
wait_for = partial(testing_aio.wait_for, timeout=15.0)


def ids(resp):
    assert type(resp) is HandleResolutionResponse and resp.error is None, resp
    return [pe.identifier for pe in resp.pool_elements]


def sctp_element(ident, addresses, port=7000):
    return H.PoolElement(ident, 0, 30000, SctpTransport(port, addresses, 1),
                         H.PoolPolicy(1, []))


def test_sctp_and_tcp_at_once_on_one_port(arun):
    async def scenario():
        async with H.running_registrar(transports=("sctp", "tcp")) as reg:
            assert reg.transports == ["sctp", "tcp"]
            (sctp_host, sctp_port), (_, tcp_port) = reg.address("sctp"), reg.address("tcp")
            assert sctp_port == tcp_port and sctp_host == "127.0.0.1"
            pe = await H.AsapClient.connect("127.0.0.1", sctp_port, transport="sctp",
                                            auto_ack=True)
            resp = await pe.register(b"P", sctp_element(A, ["127.0.0.1"]))
            assert not resp.rejected
            entry = reg.handlespace.get(b"P", A)
            # the association's port and peer addresses (a wildcard-bound client
            # brings every address of the host)
            assert entry.asap_transport.port == pe.local[1]
            assert "127.0.0.1" in entry.asap_transport.addresses
            assert entry.user_transport.addresses == ("127.0.0.1",)
            # a PU over TCP sees the PE registered over SCTP
            pu = await H.AsapClient.connect("127.0.0.1", tcp_port)
            resp = await pu.resolve(b"P")
            assert ids(resp) == [A]
            assert resp.pool_elements[0].user_transport.transport_use == 1
            # and one over SCTP too
            pu2 = await H.AsapClient.connect("127.0.0.1", sctp_port, transport="sctp")
            assert ids(await pu2.resolve(b"P")) == [A]
            resp = await pe.deregister(b"P", A)
            assert resp.error is None and (b"P", A) not in reg.handlespace
            for c in (pe, pu, pu2):
                await c.close()

    arun(scenario())


def test_keep_alive_answered_over_sctp(arun):
    async def scenario():
        # timeout 2 s: a stall of the one-CPU guest must not remove the PE
        async with H.running_registrar(transports=("sctp",), keep_alive_interval=0.3,
                                       keep_alive_timeout=2.0) as reg:
            host, port = reg.address("sctp")
            pe = await H.AsapClient.connect(host, port, transport="sctp", auto_ack=True)
            await pe.register(b"P", sctp_element(A, [host]))
            await wait_for(lambda: len(pe.keep_alives) >= 3)
            ka = pe.keep_alives[-1]
            assert (ka.server_id, ka.identifier, ka.home) == (reg.registrar_id, A, False)
            assert (b"P", A) in reg.handlespace and not pe.closed.is_set()
            await pe.close()
            await wait_for(lambda: (b"P", A) not in reg.handlespace)

    arun(scenario())


def test_keep_alive_not_answered_over_sctp(arun):
    async def scenario():
        async with H.running_registrar(transports=("sctp",), keep_alive_interval=0.3,
                                       keep_alive_timeout=0.3) as reg:
            host, port = reg.address("sctp")
            pe = await H.AsapClient.connect(host, port, transport="sctp", auto_ack=False)
            await pe.register(b"P", sctp_element(A, [host]))
            await pe.wait_closed(timeout=15.0)          # aborted by the registrar
            assert len(pe.keep_alives) >= 1
            assert (b"P", A) not in reg.handlespace
            pu = await H.AsapClient.connect(host, port, transport="sctp")
            resp = await pu.resolve(b"P")
            assert [int(c.code) for c in resp.error] == [ErrorCause.UNKNOWN_POOL_HANDLE]
            await pu.close()

    arun(scenario())


@pytest.mark.parametrize("how", ["abort", "shutdown"])
def test_association_loss_removes_its_pes(arun, how):
    async def scenario():
        async with H.running_registrar(transports=("sctp",)) as reg:
            host, port = reg.address("sctp")
            pe = await H.AsapClient.connect(host, port, transport="sctp", auto_ack=True)
            other = await H.AsapClient.connect(host, port, transport="sctp", auto_ack=True)
            await pe.register(b"P", sctp_element(A, [host]))
            await pe.register(b"Q", sctp_element(B, [host], port=7001))
            await other.register(b"P", sctp_element(0xC, [host], port=7002))
            assert len(reg.handlespace) == 3
            if how == "abort":
                pe.abort()
            else:
                await pe.close()
            await wait_for(lambda: len(reg.handlespace) == 1)
            assert (b"P", 0xC) in reg.handlespace
            assert ids(await other.resolve(b"P")) == [0xC]
            await other.close()

    arun(scenario())


def test_multihomed_association_and_user_address_filter(arun, sctp_extra_addresses):
    a1, a2, a3 = sctp_extra_addresses[:3]

    async def scenario():
        async with H.running_registrar(transports=("sctp",), addresses=(a1, "127.0.0.1")) as reg:
            assert {h for kind, h, _ in reg.endpoints} == {a1, "127.0.0.1"}
            port = reg.address("sctp")[1]
            pe = H.AsapClient()
            from rserpool.aio.transport import open_channel

            pe._channel = await open_channel(
                "sctp", a1, port, local_addresses=[a2, a3],
                on_message=lambda ch, data, ppid: pe._on_message(data),
                on_close=lambda ch, reason: pe._on_eof())
            pe.auto_ack = True
            resp = await pe.register(b"P", sctp_element(A, [a3, "192.0.2.1", a2]))
            assert not resp.rejected
            entry = reg.handlespace.get(b"P", A)
            assert entry.user_transport.addresses == (a3, a2)
            assert set(entry.asap_transport.addresses) == {a2, a3}
            resp = await pe.register(b"P", sctp_element(B, ["192.0.2.1"]))
            assert [int(c.code) for c in resp.error] == [
                ErrorCause.RSPLIB_NO_USABLE_USER_ADDRESSES]
            await pe.close()

    arun(scenario())


def test_other_ppids_are_ignored(arun):
    async def scenario():
        async with H.running_registrar(transports=("sctp",)) as reg:
            host, port = reg.address("sctp")
            pu = await H.AsapClient.connect(host, port, transport="sctp")
            pu._channel.send(encode_message(HandleResolution(b"P")), ppid=PPID.ENRP)
            resp = await pu.resolve(b"P")                 # only this one is answered
            assert [int(c.code) for c in resp.error] == [ErrorCause.UNKNOWN_POOL_HANDLE]
            assert pu.messages.empty() and not pu.closed.is_set()
            await pu.close()

    arun(scenario())


def test_cli_serves_sctp_and_tcp_by_default():
    proc = subprocess.Popen([sys.executable, "-m", "rserpool", "registrar", "--address",
                             "127.0.0.1", "--asap-port", "0", "--no-announce",
                             "--enrp-port", "0", "--no-presence-multicast"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=30)
    line = r"registrar 0x[0-9a-f]{8}: ASAP over %s on 127\.0\.0\.1:(\d+)$"
    m1 = re.match(line % "SCTP", first.strip())
    m2 = re.match(line % "TCP", second.strip())
    assert m1 and m2, (first, second, err)
    assert m1.group(1) == m2.group(1)
    assert proc.returncode == 0, err
