"""Evidence 3 of issue 4: registrar discovery by multicast announces, across
network namespaces the tests build (:mod:`rserpool.testing.netns`).

Every host is its own namespace on one bridge; nothing is configured with a
registrar address.  What is shown:

* the announce machinery (:mod:`rserpool.aio.multicast`) across hosts: a
  listener learns a registrar from its Server Announces, forgets it no
  sooner than 5 s after the last one, and learns a second registrar;
* a registrar announces from its ASAP address and port, with its transport
  parameters (our decoder on a plain UDP socket in another host, and tshark
  on the packets captured there);
* a PE and a PU with no registrar configured: the PE registers, the PU
  resolves it; the registrar dies, a second one appears on a fourth host, the
  PE registers there and the PU resolves through it.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import sys

import pytest

from rserpool import capture
from rserpool.constants import ErrorCause
from rserpool.testing import netns
from rserpool.wire import (
    HandleResolution,
    HandleResolutionResponse,
    SctpTransport,
    ServerAnnounce,
    TcpTransport,
    decode_message,
    encode_message,
)

pytestmark = pytest.mark.netns

GROUP, PORT = "239.0.0.50", 3863
ANNOUNCE_TIMEOUT = 5.0  # digest 6.2: learned entries expire 5 s after the last announce

# A registrar's announces without the registrar: AnnounceSender from the ASAP
# address and port given on the command line.
SENDER = """
import asyncio, sys
from rserpool.aio.multicast import AnnounceSender
from rserpool.wire import ServerAnnounce, TcpTransport, encode_message

async def main():
    address, port, server_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = encode_message(ServerAnnounce(server_id, [TcpTransport(port, [address])]))
    sender = await AnnounceSender.start(%(group)r, %(port)d, source=(address, port), ttl=4,
                                        interval=0.5, payload=lambda: data)
    print("announcing from %%s:%%d" %% sender.source, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
""" % {"group": GROUP, "port": PORT}

# A PE's or PU's registrar table fed by an AnnounceListener: prints one JSON
# line per change of the usable entries, with the loop time and the time of
# the last announce from each registrar.
LISTENER = """
import asyncio, json
from rserpool.aio.multicast import AnnounceListener, RegistrarTable

async def main():
    loop = asyncio.get_running_loop()
    table = RegistrarTable(transport="tcp")
    heard = {}

    def on_datagram(data, source):
        for entry in table.learn(data, source, loop.time()):
            heard[entry.server_id] = loop.time()

    await AnnounceListener.start(%(group)r, %(port)d, on_datagram=on_datagram)
    print(json.dumps({"listening": True}), flush=True)
    last = None
    while True:
        now = loop.time()
        entries = sorted([e.host, e.port, e.server_id] for e in table.candidates(now))
        if entries != last:
            print(json.dumps({"time": now, "entries": entries,
                              "heard": {str(k): v for k, v in heard.items()}}), flush=True)
            last = entries
        await asyncio.sleep(0.05)

asyncio.run(main())
""" % {"group": GROUP, "port": PORT}


def json_lines(proc: netns.Process) -> list[dict]:
    return [json.loads(line) for line in proc.stdout().splitlines() if line.startswith("{")]


def table_states(proc: netns.Process) -> list[dict]:
    return [rec for rec in json_lines(proc) if "entries" in rec]


def wait_table(proc: netns.Process, entries: list[list], after: dict | None = None,
               timeout: float = 15.0) -> dict:
    """Wait until the listener's table holds exactly ``entries`` (in a state
    printed after the state ``after``); return that state."""
    since = after["time"] if after else float("-inf")

    def found() -> dict | None:
        return next((s for s in table_states(proc)
                     if s["time"] > since and s["entries"] == sorted(entries)), None)
    return netns.wait_until(found, timeout=timeout,
                            message=lambda: f"registrar table {entries}\n{proc.describe()}")


def test_announces_are_learned_forgotten_and_relearned_across_hosts(network):
    """AnnounceSender in one host, AnnounceListener + RegistrarTable in another."""
    r1, r2, pe = (network.add_host(n) for n in ("reg1", "reg2", "pe"))
    listener = pe.run_python("-c", LISTENER, name="listener")
    listener.wait_output('"listening"')
    first = r1.run_python("-c", SENDER, r1.address, "4001", "111", name="sender")
    first.wait_output(rf"announcing from {r1.address}:4001")
    learned = wait_table(listener, [[r1.address, 4001, 111]])
    # Unplug the first registrar: its entry expires, no sooner than 5 s
    # after its last announce was heard.
    r1.link_down()
    gone = wait_table(listener, [], after=learned)
    assert gone["time"] - gone["heard"]["111"] >= ANNOUNCE_TIMEOUT - 0.01
    # A second registrar on another host is learned.
    second = r2.run_python("-c", SENDER, r2.address, "4002", "222", name="sender")
    second.wait_output(rf"announcing from {r2.address}:4002")
    state = wait_table(listener, [[r2.address, 4002, 222]], after=gone)
    # The first one comes back: both are usable.
    r1.link_up()
    state = wait_table(listener, [[r1.address, 4001, 111], [r2.address, 4002, 222]], after=state)
    # Killing a sender makes its entry expire too.
    second.kill()
    wait_table(listener, [[r1.address, 4001, 111]], after=state)
    assert listener.alive and first.alive, network.describe()


# --- registrar, PE and PU as processes ---------------------------------------------

RSERPOOL = [sys.executable, "-m", "rserpool"]
POOL = "EchoPool"
PE_ID = 0x5E0001
REG1_ID, REG2_ID = 0x111, 0x222
REG1_PORT, REG2_PORT = 4001, 4002  # not 3863: PEs and PUs can only learn them from announces

# A long-running pool user (the library): resolves POOL every 0.5 s and prints
# one JSON line per attempt: the registrar used, the PEs, its registrar table.
PU_LOOP = """
import asyncio, json, sys
from rserpool.aio.user import PoolUser
from rserpool.errors import RSerPoolError

async def main():
    loop = asyncio.get_running_loop()
    async with PoolUser(discovery=True, transport="tcp") as pu:
        print(json.dumps({"started": loop.time()}), flush=True)
        while True:
            record = {"time": loop.time()}
            try:
                pes = await pu.resolve(sys.argv[1])
            except (RSerPoolError, OSError, asyncio.TimeoutError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            else:
                reg = pu.registrar
                record["registrar"] = None if reg is None else [reg.host, reg.port, reg.server_id]
                record["elements"] = [[pe.identifier, list(pe.addresses), pe.home_registrar]
                                      for pe in pes]
            record["table"] = sorted([e.host, e.port, e.server_id]
                                     for e in pu.table.candidates(loop.time()))
            print(json.dumps(record), flush=True)
            await asyncio.sleep(0.5)

asyncio.run(main())
"""


def start_registrar(host: netns.Host, port: int, registrar_id: int, *extra: str,
                    transports: tuple[str, ...] = ("tcp",)) -> netns.Process:
    """``rserpool registrar`` on ``host``'s address and ``port``; waits until
    it says where it serves ASAP."""
    argv = [*RSERPOOL, "registrar", "--address", host.address, "--asap-port", str(port),
            "--registrar-id", hex(registrar_id), "--mentor-discovery-timeout", "1", "-v",
            *extra]
    for transport in transports:
        argv += ["--transport", transport]
    proc = host.run(argv, name="registrar")
    proc.wait_output(rf"ASAP over TCP on {re.escape(host.address)}:{port}\b")
    return proc


def resolve_cli(host: netns.Host) -> dict:
    """``rserpool resolve POOL --json`` on ``host`` (no registrar given)."""
    return json.loads(host.check_output([*RSERPOOL, "resolve", POOL, "--json"]))


def pu_records(proc: netns.Process, since: float = float("-inf")) -> list[dict]:
    return [r for r in json_lines(proc) if "time" in r and r["time"] > since]


def wait_pu_resolves(proc: netns.Process, registrar: list, pe_address: str, since: float,
                     timeout: float = 30.0) -> dict:
    """Wait for the long-running PU to resolve the PE through ``registrar``
    ([host, port, id]), the PE registered there (home registrar)."""
    def found() -> dict | None:
        for rec in pu_records(proc, since):
            if rec.get("registrar") == registrar and \
                    [PE_ID, [pe_address], registrar[2]] in rec.get("elements", []):
                return rec
        return None
    return netns.wait_until(found, timeout=timeout, message=lambda: (
        f"PU resolving through {registrar}\n{proc.describe(15)}"))


def check_resolution(result: dict, registrar: netns.Host, port: int, registrar_id: int,
                     pe: netns.Host) -> None:
    assert result["registrar"] == {"transport": "tcp", "host": registrar.address, "port": port}
    ours = [e for e in result["elements"] if e["identifier"] == PE_ID]
    assert len(ours) == 1, result
    assert ours[0]["addresses"] == [pe.address]
    assert ours[0]["transport"] == "tcp"
    assert ours[0]["home_registrar"] == registrar_id


def echo_through_pool(pu: netns.Host, text: str) -> None:
    """``rserpool pu``: resolve (by announces), connect to a PE, echo lines."""
    lines = f"{text}\nsecond line of {text}\n"
    client = pu.run([*RSERPOOL, "pu", "--pool", POOL, "--service", "echo", "-v"],
                    name="pu", stdin=lines)
    status = client.wait(60)
    assert status == 0, client.describe()
    assert client.stdout() == lines, client.describe()
    assert f"connected to PE 0x{PE_ID:08x}" in client.stderr(), client.describe()


@pytest.mark.parametrize("loss", ["killed", "unplugged"])
def test_pe_and_pu_find_registrars_by_announces_and_follow_a_new_one(network, loss):
    """Evidence 3: a registrar, a PE and a PU on three hosts, no registrar
    address configured anywhere; then the registrar is lost (``kill -9``, or
    its cable is pulled) and a second one appears on a fourth host."""
    reg1, pe_host, pu_host, reg2 = (network.add_host(n) for n in ("reg1", "pe", "pu", "reg2"))
    registrar1 = start_registrar(reg1, REG1_PORT, REG1_ID)
    pu_loop = pu_host.run_python("-c", PU_LOOP, POOL, name="pu-loop")
    pe = pe_host.run([*RSERPOOL, "pe", "--pool", POOL, "--service", "echo", "--transport", "tcp",
                      "--identifier", hex(PE_ID), "--reregistration-interval", "2", "-v"],
                     name="pe")

    # The PE registers with the only registrar it heard of, from its announces.
    pe.wait_output(rf"registered at registrar {re.escape(reg1.address)}:{REG1_PORT} \(tcp\)")
    registrar1.wait_output(rf"PE 0x{PE_ID:08x} registered in pool '{POOL}': "
                           rf"tcp {re.escape(pe_host.address)}:")
    # The PU resolves it through that registrar: a fresh `rserpool resolve`,
    # the long-running library PU, and `rserpool pu` talking to the PE.
    check_resolution(resolve_cli(pu_host), reg1, REG1_PORT, REG1_ID, pe_host)
    first = wait_pu_resolves(pu_loop, [reg1.address, REG1_PORT, REG1_ID], pe_host.address,
                             since=float("-inf"))
    assert first["table"] == [[reg1.address, REG1_PORT, REG1_ID]]
    echo_through_pool(pu_host, "hello via registrar 1")

    # The registrar is lost.
    if loss == "killed":
        registrar1.kill()
    else:
        reg1.link_down()
    pe.wait_output("registrar lost")
    # Its learned entry expires: the PU's table empties (5 s after the last
    # announce; the registrar is not configured anywhere, so nothing is left).
    # The loop prints a record when a resolve ends: one started just before
    # the loss hunts until the entry expires (5 s), then waits for announces
    # (the 7.5 s hunt timeout) before it prints the empty table, so allow 30 s.
    emptied = netns.wait_until(
        lambda: next((r for r in pu_records(pu_loop, first["time"]) if r["table"] == []), None),
        timeout=30, message=lambda: "PU forgetting registrar 1\n" + pu_loop.describe(15))

    # A second registrar appears on a fourth host: the PE registers there,
    # and the PU resolves the PE through it.
    registrar2 = start_registrar(reg2, REG2_PORT, REG2_ID)
    pe.wait_output(rf"registered at registrar {re.escape(reg2.address)}:{REG2_PORT} \(tcp\)",
                   timeout=20)
    registrar2.wait_output(rf"PE 0x{PE_ID:08x} registered in pool '{POOL}': "
                           rf"tcp {re.escape(pe_host.address)}:")
    after = wait_pu_resolves(pu_loop, [reg2.address, REG2_PORT, REG2_ID], pe_host.address,
                             since=emptied["time"], timeout=20)
    assert after["table"] == [[reg2.address, REG2_PORT, REG2_ID]]
    check_resolution(resolve_cli(pu_host), reg2, REG2_PORT, REG2_ID, pe_host)
    echo_through_pool(pu_host, "hello via registrar 2")

    # The same PE and PU processes followed the change (nothing restarted).
    assert pe.alive and pu_loop.alive, network.describe()
    if loss == "unplugged":
        assert registrar1.alive  # it was only cut off
    assert registrar2.alive


# --- the announce itself ------------------------------------------------------------


def active_transports(registrar: netns.Process) -> dict[str, int]:
    """{"tcp": port, "sctp": port} from the registrar's start-up lines."""
    return {kind.lower(): int(port) for kind, port in
            re.findall(r"ASAP over (SCTP|TCP) on .*:(\d+)$", registrar.stdout(), re.MULTILINE)}


def check_announce(message: object, address: str, port: int, registrar_id: int,
                   transports: dict[str, int]) -> None:
    assert isinstance(message, ServerAnnounce)
    assert message.server_id == registrar_id
    kinds = {"tcp": TcpTransport, "sctp": SctpTransport}
    assert sorted(type(t).__name__ for t in message.transports) == \
        sorted(kinds[k].__name__ for k in transports)
    for transport in message.transports:
        kind = "tcp" if isinstance(transport, TcpTransport) else "sctp"
        assert transport.port == transports[kind] == port
        assert address in transport.addresses


def test_registrar_announces_from_its_asap_endpoint_with_its_transports(network):
    """The Server Announce comes from the registrar's ASAP address and port,
    carries its transport parameters, and that endpoint answers ASAP."""
    reg, listener = network.add_host("reg"), network.add_host("listener")
    with listener.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((GROUP, PORT))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        struct.pack("4s4s", socket.inet_aton(GROUP),
                                    socket.inet_aton(listener.address)))
    with sock:
        # Default transports: SCTP too where the kernel has it.
        registrar = reg.run([*RSERPOOL, "registrar", "--address", reg.address, "--asap-port",
                             str(REG1_PORT), "--registrar-id", hex(REG1_ID),
                             "--announce-interval", "0.5", "--mentor-discovery-timeout", "1"],
                            name="registrar")
        registrar.wait_output(rf"ASAP over TCP on {re.escape(reg.address)}:{REG1_PORT}\b")
        transports = active_transports(registrar)
        sock.settimeout(15)
        for _ in range(3):  # every announce, not just the first
            data, source = sock.recvfrom(65535)
            assert source == (reg.address, REG1_PORT)
            check_announce(decode_message(data, "asap"), reg.address, REG1_PORT, REG1_ID,
                           transports)

    # The announced endpoint is the registrar's ASAP endpoint: ask it.
    with listener.entered():
        link = socket.create_connection((reg.address, REG1_PORT), timeout=15)
    with link:
        link.sendall(encode_message(HandleResolution(b"NoSuchPool")))
        answer = read_asap(link)
    assert isinstance(answer, HandleResolutionResponse)
    assert answer.pool_handle == b"NoSuchPool"
    assert [c.code for c in answer.error or ()] == [ErrorCause.UNKNOWN_POOL_HANDLE]


def read_asap(sock: socket.socket) -> object:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data
    head = exactly(4)
    length = struct.unpack("!H", head[2:])[0]
    return decode_message(head + exactly(length - 4 + (-length % 4)), "asap")


@pytest.mark.tshark
def test_tshark_decodes_the_captured_announce(network, tshark_required):
    """tshark, capturing in another host, sees ASAP Server Announces from the
    registrar's ASAP address and port, with the configured TTL and the
    registrar's transport parameters."""
    if not capture.tshark_available():
        if tshark_required:
            pytest.fail("tshark is required (CI) but not installed")
        pytest.skip("tshark not installed")
    reg, listener = network.add_host("reg"), network.add_host("listener")
    pcap = network.workdir / "announces.pcap"
    sniffer = listener.run(["tshark", "-i", "eth0", "-f", f"udp and dst host {GROUP}",
                            "-c", "3", "-w", str(pcap)], name="tshark")
    sniffer.wait_output(r"Capturing on", stream="stderr")
    registrar = start_registrar(reg, REG1_PORT, REG1_ID, "--announce-interval", "0.5",
                                "--announce-ttl", "7", transports=())
    assert sniffer.wait(30) == 0, sniffer.describe()
    transports = active_transports(registrar)
    frames = capture.tshark_fields(pcap, [
        "ip.src", "ip.ttl", "udp.srcport", "udp.dstport", "asap.message_type",
        "asap.server_identifier", "asap.tcp_transport_port", "asap.sctp_transport_port",
        "asap.ipv4_address", "_ws.malformed", "_ws.expert"])
    assert len(frames) == 3
    for frame in frames:
        assert frame["ip.src"] == [reg.address]
        assert frame["ip.ttl"] == ["7"]
        assert frame["udp.srcport"] == [str(REG1_PORT)]
        assert frame["udp.dstport"] == [str(PORT)]
        assert frame["asap.message_type"] == ["10"]  # ASAP Server Announce
        assert int(frame["asap.server_identifier"][0], 16) == REG1_ID
        assert frame.get("asap.tcp_transport_port") == [str(REG1_PORT)]
        if "sctp" in transports:
            assert frame.get("asap.sctp_transport_port") == [str(REG1_PORT)]
        assert reg.address in frame["asap.ipv4_address"]
        assert "_ws.malformed" not in frame
    text = capture.tshark_decode(pcap)
    assert text.count("Type: ASAP Server Announce (10)") == 3
