"""The registrar over real TCP sockets on loopback: registration, handle
resolution, deregistration, keep-alives answered and not, every policy's
selection order seen through the network, and the ``rserpool registrar``
command (start, print, SIGTERM/SIGINT, configuration)."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from conftest import AsapClient, make_registrar, pool_element
from rserpool import cli
from rserpool.commands.registrar import config_from_args
from rserpool.constants import MAX32, ErrorCause, PolicyType as PT
from rserpool.errors import ConfigError
from rserpool.handlespace import Handlespace
from rserpool.testing import aio as testing_aio
from rserpool.wire import (DeregistrationResponse, HandleResolution,
                           HandleResolutionResponse, Registration, RegistrationResponse,
                           StreamFramer, decode_message, encode_message)

A, B, C, D = 0xA, 0xB, 0xC, 0xD
ROOT = Path(__file__).resolve().parents[2]


def ids(resp):
    assert type(resp) is HandleResolutionResponse and resp.error is None, resp
    return [pe.identifier for pe in resp.pool_elements]


#: ``await wait_for(predicate)``: TimeoutError if it is not true within 10 s.
wait_for = partial(testing_aio.wait_for, timeout=10.0)


def test_register_resolve_deregister(registrar, arun):
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        pu = await AsapClient.connect(host, port)
        for ident, pe_port in ((A, 7001), (B, 7002)):
            resp = await pe.register(b"EchoPool", pool_element(ident, port=pe_port))
            assert type(resp) is RegistrationResponse and not resp.rejected
            assert resp.identifier == ident
        resp = await pu.resolve(b"EchoPool")
        assert ids(resp) == [A, B] and resp.policy.policy_type == PT.ROUND_ROBIN
        first = resp.pool_elements[0]
        assert first.home_registrar == registrar.registrar_id
        assert (first.user_transport.port, first.user_transport.addresses) == (7001,
                                                                              ("127.0.0.1",))
        entry = registrar.handlespace.get(b"EchoPool", A)
        assert entry.asap_transport.port == pe.local[1]  # the PE's end of the connection
        resp = await pe.deregister(b"EchoPool", A)
        assert type(resp) is DeregistrationResponse and resp.error is None
        assert ids(await pu.resolve(b"EchoPool", 5)) == [B]
        resp = await pu.resolve(b"NoSuchPool")
        assert [int(c.code) for c in resp.error] == [ErrorCause.UNKNOWN_POOL_HANDLE]
        await pe.close()
        # the PE's connection is gone: B is removed
        await wait_for(lambda: len(registrar.handlespace) == 0)
        resp = await pu.resolve(b"EchoPool")
        assert resp.error is not None
        await pu.close()

    arun(scenario())


def test_several_messages_in_one_segment(registrar, arun):
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        await pe.register(b"P", pool_element(A))
        pu = await AsapClient.connect(host, port)
        pu.send(encode_message(HandleResolution(b"P", 1)) * 5)
        for _ in range(5):
            assert ids(await pu.recv()) == [A]
        await pe.close()
        await pu.close()

    arun(scenario())


@pytest.mark.registrar(keep_alive_interval=0.3, keep_alive_timeout=2.0)
def test_keep_alive_answered(registrar, arun):
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        await pe.register(b"P", pool_element(A, life=60000))
        await wait_for(lambda: len(pe.keep_alives) >= 3)
        ka = pe.keep_alives[0]
        assert (ka.server_id, ka.pool_handle, ka.identifier, ka.home) == (
            registrar.registrar_id, b"P", A, False)
        pu = await AsapClient.connect(host, port)
        assert ids(await pu.resolve(b"P")) == [A]
        assert not pe.closed.is_set()
        await pe.close()
        await pu.close()

    arun(scenario())


@pytest.mark.registrar(keep_alive_interval=0.3, keep_alive_timeout=0.3)
def test_keep_alive_not_answered(registrar, arun):
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=False)
        await pe.register(b"P", pool_element(A))
        pu = await AsapClient.connect(host, port)
        assert ids(await pu.resolve(b"P")) == [A]
        # one keep-alive, no answer: the PE is removed and its lone connection aborted
        await pe.wait_closed(timeout=10.0)
        assert len(pe.keep_alives) == 1
        resp = await pu.resolve(b"P")
        assert [int(c.code) for c in resp.error] == [ErrorCause.UNKNOWN_POOL_HANDLE]
        await pe.close()
        await pu.close()

    arun(scenario())


@pytest.mark.registrar(keep_alive_interval=0.3, keep_alive_timeout=2.0)
def test_registration_life_expiry(registrar, arun):
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        await pe.register(b"P", pool_element(A, life=500))   # 0.5 s, never renewed
        await wait_for(lambda: (b"P", A) not in registrar.handlespace)
        assert not pe.closed.is_set()          # expiry does not drop the connection
        assert not (await pe.register(b"P", pool_element(A, life=500))).rejected
        await pe.close()

    arun(scenario())


# ---- every policy through the network --------------------------------------------------

#: (policy, [(PE id, policy values)], steps) with steps of (items, expected ids) or
#: ("register", id, values): hand-worked orders of tests/unit/test_handlespace.py.
DETERMINISTIC = {
    "round_robin": (PT.ROUND_ROBIN, [(A, []), (B, []), (C, []), (D, [])],
                    [(3, [A, B, C]), (3, [B, C, D]), (3, [C, D, A])]
                    + [(1, [x]) for x in (D, A, B, C, D)]),
    "weighted_round_robin": (PT.WEIGHTED_ROUND_ROBIN, [(A, [2]), (B, [1])],
                             [(1, [x]) for x in (B, A, A, B, A, A, B, A, A)]),
    "priority": (PT.PRIORITY, [(A, [5]), (B, [5]), (C, [9])], [(2, [C, A]), (2, [C, A])]),
    "least_used": (PT.LEAST_USED, [(A, [10]), (B, [10]), (C, [5])],
                   [(1, [C])] * 3 + [(3, [C, A, B]), ("register", C, [20])]
                   + [(1, [x]) for x in (A, B, A, B)]),
    "least_used_degradation": (PT.LEAST_USED_DEGRADATION, [(A, [0, 100]), (B, [50, 0])],
                               [(1, [A]), (1, [B]), (1, [B]), (1, [B]),
                                ("register", A, [0, 100]), (1, [A])]),
    "priority_least_used": (PT.PRIORITY_LEAST_USED, [(A, [10, 50]), (B, [40, 0])],
                            [(1, [B])] * 3),
    "least_used_dpf": (PT.LEAST_USED_DPF, [(A, [100, 10, 50]), (B, [400, 1, 50])],
                       [(2, [B, A])]),
}


@pytest.mark.parametrize("case", sorted(DETERMINISTIC))
def test_policy_orders_through_the_network(registrar, arun, case):
    policy, members, steps = DETERMINISTIC[case]
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        pu = await AsapClient.connect(host, port)
        for ident, values in members:
            assert not (await pe.register(b"P", pool_element(ident, policy=policy,
                                                             values=values))).rejected
        for step in steps:
            if step[0] == "register":
                _, ident, values = step
                await pe.register(b"P", pool_element(ident, policy=policy, values=values))
                continue
            items, expected = step
            assert ids(await pu.resolve(b"P", items)) == expected, step
        await pe.close()
        await pu.close()

    arun(scenario())


@pytest.mark.parametrize("policy", list(PT), ids=lambda p: p.name.lower())
def test_every_policy_matches_the_handlespace(registrar, arun, policy):
    """The network sees exactly what a local handlespace with the same seed and
    the same registrations selects (random policies included)."""
    from rserpool.constants import POLICY_VALUE_NAMES

    host, port = registrar.address("tcp")
    nvalues = len(POLICY_VALUE_NAMES[policy])
    members = [(i, [(i * 7919 + k * 104729) % 1000 + 1 for k in range(nvalues)])
               for i in range(1, 7)]

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        pu = await AsapClient.connect(host, port)
        local = Handlespace(own_id=registrar.registrar_id, seed=7)
        for ident, values in members:
            resp = await pe.register(b"P", pool_element(ident, policy=policy, values=values))
            assert not resp.rejected
            local.register(b"P", registrar.handlespace.get(b"P", ident).pool_element, 0.0)
        for n in (1, 3, 1, 2, 6, 1, 4, 1, 1, 5):
            want = [int.from_bytes(x[4:8], "big") for x in local.select(b"P", n)]
            assert ids(await pu.resolve(b"P", n)) == want
        await pe.close()
        await pu.close()

    arun(scenario())


def test_item_count_option(registrar_factory, arun):
    registrar = registrar_factory(max_hres_items=2)
    host, port = registrar.address("tcp")

    async def scenario():
        pe = await AsapClient.connect(host, port, auto_ack=True)
        for ident in range(1, 131):
            await pe.register(b"P", pool_element(ident))
        pu = await AsapClient.connect(host, port)
        assert len(ids(await pu.resolve(b"P"))) == 2
        assert len(ids(await pu.resolve(b"P", 7))) == 7
        assert len(ids(await pu.resolve(b"P", MAX32))) == 128
        await pe.close()
        await pu.close()

    arun(scenario())


# ---- the command line ---------------------------------------------------------------------


class CliProcess:
    """``rserpool registrar`` in a subprocess; stdout and stderr collected by
    threads (so nothing is lost between ``readline`` and the end)."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rserpool", "registrar", "--address", "127.0.0.1",
             "--asap-port", "0", "--no-announce", "--enrp-port", "0", "--no-presence-multicast", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, self.lines),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, None),
                             daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(stream, into, lines) -> None:
        with stream:
            for line in stream:
                into.append(line)
                if lines is not None:
                    lines.put(line)
        if lines is not None:
            lines.put(None)

    def wait_for_port(self, transport: str = "TCP") -> int:
        while True:
            line = self.lines.get(timeout=60)
            if line is None:
                raise AssertionError(f"registrar exited early ({self.proc.wait()}): "
                                     f"{''.join(self.out)} {''.join(self.err)}")
            m = re.search(rf"ASAP over {transport} on 127\.0\.0\.1:(\d+)", line)
            if m:
                return int(m.group(1))

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        try:
            self.proc.send_signal(sig)
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for t in self.threads:
            t.join(timeout=10)
        return code, "".join(self.out), "".join(self.err)


def sync_request(port, message):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode_message(message))
        framer = StreamFramer()
        while True:
            data = s.recv(65536)
            assert data, "connection closed"
            msgs = framer.feed(data)
            if msgs:
                return decode_message(msgs[0], "asap")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_starts_serves_and_stops_cleanly(sig):
    cli_proc = CliProcess("--transport", "tcp", "--registrar-id", "0x1234abcd")
    try:
        port = cli_proc.wait_for_port()
        resp = sync_request(port, HandleResolution(b"nothing"))
        assert [int(c.code) for c in resp.error] == [ErrorCause.UNKNOWN_POOL_HANDLE]
        # a PE that registers and goes away: one INFO line each
        resp = sync_request(port, Registration(b"CliPool", pool_element(0xC11)))
        assert type(resp) is RegistrationResponse and not resp.rejected
    finally:
        code, out, err = cli_proc.stop(sig)
    assert code == 0, err
    assert out.startswith(f"registrar 0x1234abcd: ASAP over TCP on 127.0.0.1:{port}\n")
    assert f"stopped on {sig.name}" in out
    assert "INFO rserpool.registrar: PE 0x00000c11 registered in pool 'CliPool'" in err
    assert "PE 0x00000c11 removed from pool 'CliPool': association lost" in err
    assert "Traceback" not in err


def test_cli_says_when_sctp_is_missing():
    from rserpool.aio.transport import sctp_available

    cli_proc = CliProcess()             # default: SCTP and TCP
    try:
        cli_proc.wait_for_port()
    finally:
        code, out, err = cli_proc.stop()
    if sctp_available():
        assert "ASAP over SCTP on 127.0.0.1:" in out
    else:
        assert "SCTP is not available on this host" in out
    assert code == 0, err


def test_cli_sctp_alone_without_sctp_is_an_error():
    from rserpool.aio.transport import sctp_available

    if sctp_available():
        pytest.skip("this host has SCTP")
    res = subprocess.run([sys.executable, "-m", "rserpool", "registrar", "--transport", "sctp",
                          "--asap-port", "0", "--no-announce", "--enrp-port", "0", "--no-presence-multicast"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 1
    assert "SCTP" in res.stderr and "Traceback" not in res.stderr


def parse(*argv):
    return cli._build_parser().parse_args(["registrar", *argv])


def test_cli_options_cover_every_config_field_and_file_loses(tmp_path):
    from dataclasses import fields

    from rserpool.config import RegistrarConfig

    ns = parse()
    assert {f.name for f in fields(RegistrarConfig)} <= set(vars(ns))
    assert config_from_args(ns) == RegistrarConfig()
    path = tmp_path / "registrar.toml"
    path.write_text('asap_port = 4000\nkeep_alive_interval = 2.5\ntransports = ["tcp"]\n'
                    'announce = false\naddresses = ["127.0.0.1"]\n')
    cfg = config_from_args(parse("--config", str(path), "--asap-port", "4001",
                                 "--address", "127.0.0.2,::1", "--announce"))
    assert cfg.asap_port == 4001 and cfg.keep_alive_interval == 2.5
    assert cfg.transports == ("tcp",) and cfg.announce is True
    assert cfg.addresses == ("127.0.0.2", "::1")
    cfg = config_from_args(parse("--registrar-id", "0x10", "--transport", "tcp",
                                 "--transport", "sctp", "--no-announce"))
    assert cfg.registrar_id == 16 and cfg.transports == ("tcp", "sctp") and not cfg.announce
    with pytest.raises(ConfigError):
        config_from_args(parse("--keep-alive-interval", "0.01"))
    path.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError):
        config_from_args(parse("--config", str(path)))


def test_cli_bad_config_exits_2(tmp_path, capsys):
    assert cli.main(["registrar", "--keep-alive-timeout", "1000"]) == 2
    assert "keep_alive_timeout" in capsys.readouterr().err


# ---- Server Announces ------------------------------------------------------------------------


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_announces_from_the_asap_endpoint(registrar_factory, arun, aio_loop):
    from rserpool.aio.multicast import AnnounceListener, RegistrarTable
    from rserpool.wire import ServerAnnounce, TcpTransport

    port = free_udp_port()
    got: asyncio.Queue = asyncio.Queue()

    async def listen():
        return await AnnounceListener.start("239.0.0.50", port, interface="127.0.0.1",
                                            on_datagram=lambda d, a: got.put_nowait((d, a)))

    try:
        listener = arun(listen())
    except OSError as exc:
        pytest.skip(f"no multicast on loopback here: {exc}")
    try:
        registrar = registrar_factory(announce=True, announce_port=port,
                                      announce_interval=0.1)
        host, asap_port = registrar.address("tcp")
        data, source = arun(got.get(), timeout=10)
        assert source == (host, asap_port)        # sent from the ASAP endpoint
        msg = decode_message(data, "asap")
        assert type(msg) is ServerAnnounce and msg.server_id == registrar.registrar_id
        assert msg.transports == (TcpTransport(asap_port, [host]),)
        (entry,) = RegistrarTable(transport="tcp").learn(data, source, 0.0)
        assert (entry.transport, entry.host, entry.port) == ("tcp", host, asap_port)
        assert any("Server Announce to 239.0.0.50" in line for line in registrar.describe())
        arun(registrar.stop())

        async def silence():
            await asyncio.sleep(0.3)
            while not got.empty():
                got.get_nowait()
            await asyncio.sleep(0.5)
            return got.empty()

        assert arun(silence())                    # stop() stopped the announces
    finally:
        listener.stop()


def test_port_in_use_fails_cleanly_and_start_is_once(registrar, arun):
    host, port = registrar.address("tcp")
    second = make_registrar(asap_port=port)
    with pytest.raises(OSError):
        arun(second.start())
    assert second.statistics()["channels"] == 0
    with pytest.raises(RuntimeError):
        arun(registrar.start())
