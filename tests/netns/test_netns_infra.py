"""The namespace test network itself (:mod:`rserpool.testing.netns`) works:
hosts get their addresses and a multicast route but no default route, they
reach each other over the bridge, a multicast datagram to the ASAP announce
group crosses it, unplugging a host stops it, teardown leaves no namespace
and no process behind, and the ``netns`` marker fails (CI) or skips
(elsewhere) where namespaces are unavailable."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys

import pytest

from rserpool.testing import netns

NETNS = pytest.mark.netns  # all but the two tests of the marker's policy, at the end

GROUP, PORT = "239.0.0.50", 3863


def multicast_receiver(host: netns.Host, group: str = GROUP, port: int = PORT) -> socket.socket:
    """A UDP socket in ``host`` that has joined ``group`` on ``port``."""
    with host.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((group, port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(host.address)))
    return sock


def multicast_sender(host: netns.Host, ttl: int = 4) -> socket.socket:
    with host.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.bind((host.address, 0))
    return sock


def drain(sock: socket.socket, wait: float = 0.0) -> list[tuple[bytes, tuple[str, int]]]:
    """Datagrams queued on ``sock`` (waiting up to ``wait`` s for the first)."""
    got = []
    sock.settimeout(wait)
    while True:
        try:
            got.append(sock.recvfrom(65535))
        except (TimeoutError, BlockingIOError):
            return got
        sock.settimeout(0)


def own_addresses(host: netns.Host | None = None) -> str:
    argv = ["ip", "-o", "-4", "addr", "show"]
    if host is None:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return host.ip("-o", "-4", "addr", "show")


@NETNS
def test_hosts_get_addresses_and_routes(network):
    a = network.add_host("a")
    b = network.add_host("b", address="10.77.0.20")
    assert (a.address, b.address) == ("10.77.0.1", "10.77.0.20")
    assert network.add_host("c").address == "10.77.0.2"
    links = a.ip("-o", "link", "show")
    assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == ["lo", "eth0"]
    assert "inet 10.77.0.1/24" in own_addresses(a)
    routes = a.ip("route", "show")
    assert "224.0.0.0/4 dev eth0" in routes
    assert "default" not in routes
    bridge_ports = network.hosts["a"].network.switch
    ports = netns._ip("-n", bridge_ports, "-o", "link", "show", "master", netns.BRIDGE).stdout
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()) == \
        ["p-a", "p-b", "p-c"]
    # The namespace the tests run in is untouched.
    assert "10.77.0." not in own_addresses()
    with pytest.raises(ValueError):
        network.add_host("a")
    with pytest.raises(ValueError):
        network.add_host("Bad-Name")
    with pytest.raises(ValueError):
        network.add_host("d", address="192.0.2.1")


@NETNS
def test_hosts_talk_tcp_over_the_bridge(network):
    a, b = network.add_host("a"), network.add_host("b")
    with b.entered():
        server = socket.create_server((b.address, 0))
    port = server.getsockname()[1]
    client = a.run_python("-c", (
        "import socket, sys\n"
        f"s = socket.create_connection(({b.address!r}, {port}), timeout=10)\n"
        "s.sendall(b'ping from ' + s.getsockname()[0].encode())\n"
        "print(s.recv(100).decode())\n"), name="client")
    server.settimeout(15)
    conn, peer = server.accept()
    with conn:
        conn.settimeout(15)
        data = conn.recv(100)
        conn.sendall(b"pong")
    server.close()
    assert client.wait(15) == 0, client.describe()
    assert peer[0] == a.address
    assert data == f"ping from {a.address}".encode()
    assert client.stdout().strip() == "pong"


@NETNS
def test_multicast_announce_group_crosses_the_bridge(network):
    a, b, c = (network.add_host(n) for n in ("a", "b", "c"))
    receivers = {h.name: multicast_receiver(h) for h in (b, c)}
    # The sender is a separate process in ``a``, as a registrar would be.
    sender = a.run_python("-c", (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 4)\n"
        f"s.bind(({a.address!r}, 3863))\n"
        "n = 0\n"
        "while True:\n"
        f"    s.sendto(b'announce %d' % n, ({GROUP!r}, {PORT}))\n"
        "    n += 1\n"
        "    time.sleep(0.1)\n"), name="sender")
    try:
        for name, sock in receivers.items():
            got = netns.wait_until(lambda sock=sock: drain(sock, 0.5), timeout=15,
                                   message=f"no datagram in {name}")
            data, source = got[0]
            assert data.startswith(b"announce ")
            assert source == (a.address, 3863)
    finally:
        for sock in receivers.values():
            sock.close()
        sender.stop()
    assert sender.returncode is not None


@NETNS
def test_link_down_stops_multicast_and_link_up_restores_it(network):
    a, b = network.add_host("a"), network.add_host("b")
    rx, tx = multicast_receiver(b), multicast_sender(a)
    with rx, tx:
        def delivered(tag: bytes) -> bool:
            tx.sendto(tag, (GROUP, PORT))
            return any(data == tag for data, _ in drain(rx, 0.2))

        netns.wait_until(lambda: delivered(b"before"), timeout=15, message="before link down")
        a.link_down()
        assert not a.link_is_up()
        assert "NO-CARRIER" in a.ip("-o", "link", "show", "eth0")
        lost = [b"lost %d" % i for i in range(20)]
        for tag in lost:
            tx.sendto(tag, (GROUP, PORT))  # no error in the host: the cable is out
        a.link_up()
        assert a.link_is_up()
        # Datagrams sent after the link is back arrive; the ones sent while
        # it was down never do (UDP on one bridge does not reorder them).
        received = []

        def after() -> bool:
            tx.sendto(b"after", (GROUP, PORT))
            received.extend(data for data, _ in drain(rx, 0.2))
            return b"after" in received

        netns.wait_until(after, timeout=15, message="after link up")
        assert not set(lost) & set(received)
        # And the other direction is cut too while down.
        tx_b, rx_a = multicast_sender(b), multicast_receiver(a)
        with tx_b, rx_a:
            a.link_down()
            tx_b.sendto(b"to a", (GROUP, PORT))
            a.link_up()
            got: list[bytes] = []

            def again() -> bool:
                tx_b.sendto(b"again", (GROUP, PORT))
                got.extend(data for data, _ in drain(rx_a, 0.2))
                return b"again" in got

            netns.wait_until(again, timeout=15, message="b to a after link up")
            assert b"to a" not in got


@NETNS
def test_process_api(network):
    a = network.add_host("a")
    ok = a.run_python("-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
                      name="three")
    assert ok.wait(15) == 3
    assert (ok.stdout(), ok.stderr()) == ("out\n", "err\n")
    assert ok.stdout_path.parent == network.workdir
    assert "exit status 3" in ok.describe()
    # Processes see only the host's interfaces.
    seen = a.check_output([sys.executable, "-c",
                           "import json, socket; print(json.dumps(socket.if_nameindex()))"])
    assert sorted(name for _, name in json.loads(seen)) == ["eth0", "lo"]
    sleeper = a.run_python("-c", "import time; print('ready', flush=True); time.sleep(600)",
                           name="sleeper")
    sleeper.wait_output("ready")
    assert sleeper.alive
    with pytest.raises(TimeoutError):
        sleeper.wait_output("never printed", timeout=0.3)
    assert sleeper.stop() == -15
    quitter = a.run_python("-c", "print('bye')", name="quitter")
    quitter.wait(15)
    with pytest.raises(netns.NetnsError):
        quitter.wait_output("never printed", timeout=15)
    with pytest.raises(netns.NetnsError):
        a.check_output([sys.executable, "-c", "raise SystemExit(2)"])


@NETNS
def test_teardown_kills_processes_and_deletes_namespaces(tmp_path):
    with netns.Network(workdir=tmp_path) as net:
        a, b = net.add_host("a"), net.add_host("b")
        names = net.namespaces
        assert set(names) <= set(netns.list_namespaces())
        assert len(names) == 3  # switch, a, b
        # One that ignores SIGTERM, one with a child in its process group, and
        # one started behind the Network's back (only `ip netns pids` finds it).
        stubborn = a.run_python("-c", (
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n"), name="stubborn")
        parent = b.run(["sh", "-c", "sleep 600 & echo child $!; wait"], name="parent")
        stray = subprocess.Popen(b.command(["sleep", "600"]), stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        stubborn.wait_output("ready")
        child = int(parent.wait_output(r"child (\d+)").group(1))
        netns.wait_until(lambda: stray.pid in netns._namespace_pids(b.netns), timeout=15,
                         message="stray process in b")
    assert stubborn.returncode == -9
    assert parent.returncode is not None
    assert stray.wait(15) == -9
    assert not netns._pid_alive(child) or _is_zombie(child)
    assert not set(names) & set(netns.list_namespaces())
    # Closing twice is harmless; a closed network cannot be reused.
    net.close()
    with pytest.raises(netns.NetnsError):
        net.add_host("c")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@NETNS
def test_teardown_after_an_exception(tmp_path):
    with pytest.raises(RuntimeError, match="test failure"):
        with netns.Network(workdir=tmp_path) as net:
            net.add_host("a")
            net["a"].run(["sleep", "600"])
            names = net.namespaces
            raise RuntimeError("test failure")
    assert net.processes[0].returncode is not None
    assert not set(names) & set(netns.list_namespaces())


@NETNS
def test_cleanup_stale_deletes_only_dead_runs():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.NAME_PREFIX}-{dead.pid}-1-x"
    live = f"{netns.NAME_PREFIX}-{os.getpid()}-999-x"
    for name in (stale, live):
        netns._ip("netns", "add", name)
    try:
        removed = netns.cleanup_stale()
        assert stale in removed and live not in removed
        left = netns.list_namespaces()
        assert stale not in left and live in left
    finally:
        for name in (stale, live):
            netns._ip("netns", "delete", name, check=False)


@pytest.mark.parametrize("env, outcome", [
    ({"CI": "true"}, "fail"),
    ({netns.REQUIRE_ENV: "1"}, "fail"),
    ({}, "skip"),
])
def test_unavailable_netns_fails_in_ci_and_skips_elsewhere(monkeypatch, env, outcome):
    for name in ("CI", netns.REQUIRE_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(netns, "netns_problem", lambda: "no namespaces in this test")
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="no namespaces in this test"):
        netns.require_netns()
    monkeypatch.setattr(netns, "netns_problem", lambda: None)
    netns.require_netns()  # available: nothing happens


@pytest.mark.parametrize("env, outcome", [
    ({"CI": "true"}, "1 error"),  # pytest.fail in setup: reported as an error, exit status 1
    ({netns.REQUIRE_ENV: "1"}, "1 error"),
    ({}, "1 skipped"),
])
def test_marker_policy_end_to_end(tmp_path, env, outcome):
    """A real pytest run of a ``netns`` test where namespaces are unavailable
    (``RSERPOOL_NETNS_DISABLE=1``): it fails (in its setup) under CI and is
    skipped otherwise."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CI", netns.REQUIRE_ENV, "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    target = f"{__file__}::test_hosts_get_addresses_and_routes"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfs",
         f"--basetemp={tmp_path / 'inner'}", target],
        env={**clean, netns.DISABLE_ENV: "1", **env}, capture_output=True, text=True,
        timeout=240, check=False)
    summary = run.stdout.strip().splitlines()[-1]
    assert outcome in summary, run.stdout + run.stderr
    assert f"netns tests cannot run: disabled by {netns.DISABLE_ENV}=1" in run.stdout
    assert run.returncode == (1 if outcome == "1 error" else 0)
