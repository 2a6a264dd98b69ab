"""``rserpool hsdump``: dumping a registrar's handlespace over ENRP.

The server side is the registrar's own ENRP core (:class:`EnrpServer`) behind
a small TCP endpoint, fed the way a registrar's driver feeds it
(:class:`EnrpTestServer`); the end-to-end test against
:class:`~rserpool.aio.registrar.Registrar` runs once the registrar has an
ENRP endpoint (``Registrar.enrp_address``).

Observer mode (no Presence from hsdump) is served only by a core that answers
Handle Table Requests from associations that never sent a Presence;
:func:`core_serves_observers` tells which core this is, and the observer tests
expect either the full dump or the clear "rejected" error accordingly.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import AsapClient, pool_element

from rserpool.aio.hsdump import HandlespaceDump, HandlespaceDumpError, dump_handlespace
from rserpool.aio.registrar import Registrar
from rserpool.aio.transport import start_endpoint
from rserpool.config import RegistrarConfig
from rserpool.constants import PPID, PolicyType
from rserpool.handlespace import Handlespace
from rserpool.protocol.asap_user import PoolElementInfo
from rserpool.protocol.enrp import MULTICAST, EnrpServer
from rserpool.wire import (
    HandleTableRequest,
    HandleTableResponse,
    PoolElement,
    PoolPolicy,
    SctpTransport,
    TcpTransport,
    decode_message,
    encode_message,
)

REPO = Path(__file__).resolve().parents[2]
REG_ID = 0x12345678
PEER_ID = 0x0BADCAFE
#: (handle, policy, values, user transport kind, count); the handles cover odd
#: lengths and bytes that are not UTF-8.
POOLS = [
    (b"EchoPool", PolicyType.ROUND_ROBIN, (), "tcp", 90),
    (b"abc", PolicyType.WEIGHTED_RANDOM, (7,), "sctp", 60),
    (b"Load-Pool", PolicyType.LEAST_USED, (0x40000000,), "tcp", 70),
    (b"\xff\xfe\x00bin", PolicyType.PRIORITY, (3,), "sctp", 40),
    (b"x", PolicyType.PRIORITY_LEAST_USED_DEGRADATION, (0x10000000, 0x01000000), "tcp", 45),
]
COUNT = sum(p[4] for p in POOLS)
PAGE = 7


def fill(hs: Any, pools: Any = POOLS, homes: tuple[int, ...] = (REG_ID, PEER_ID)) -> None:
    """Register every pool's PEs, homes alternating, ASAP transports varied."""
    ident = 0x1000
    for handle, policy, values, kind, count in pools:
        ut_class = TcpTransport if kind == "tcp" else SctpTransport
        for i in range(count):
            ident += 7919
            home = homes[i % len(homes)]
            asap = (SctpTransport(40000 + i, ["127.0.0.1", "10.0.0.1"]) if i % 3
                    else TcpTransport(41000 + i, ["127.0.0.1"]))
            pe = PoolElement(ident, home, 30000 + i, ut_class(7000 + i, ["127.0.0.1"], 0),
                             PoolPolicy(policy, values), asap)
            hs.register(handle, pe, 0.0, home_registrar=home)


def contents(hs: Any) -> dict[tuple[bytes, int], Any]:
    return {(h, e.identifier): e.pool_element for h in hs.pools() for e in hs.pool_elements(h)}


def core_serves_observers() -> bool:
    """True when the ENRP core answers a Handle Table Request from an
    association that never sent a Presence (else it rejects it, R=1)."""
    core = EnrpServer(RegistrarConfig(), REG_ID, Handlespace(own_id=REG_ID), seed=0)
    core.peer_connected("observer", 0.0)
    core.pop_sends()
    core.receive("observer", encode_message(HandleTableRequest(0x77, REG_ID)), 0.0)
    replies = [decode_message(d, "enrp") for _, d in core.pop_sends()]
    return any(type(m) is HandleTableResponse and not m.rejected for m in replies)


SERVES_OBSERVERS = core_serves_observers()


class EnrpTestServer:
    """An :class:`EnrpServer` core behind a TCP (or SCTP) endpoint: accept ->
    ``peer_connected``, message -> ``receive``, then every queued send goes
    to its channel; the core's timers run on the loop."""

    def __init__(self, hs: Any, registrar_id: int = REG_ID, **config: Any) -> None:
        config.setdefault("addresses", ("127.0.0.1",))
        config.setdefault("presence_multicast", False)
        self.config = RegistrarConfig(**config)
        self.hs = hs
        self.core: Any = None
        self.endpoint: Any = None
        self.port = 0
        self.events: list[Any] = []
        self.channels: list[Any] = []
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, transport: str = "tcp") -> EnrpTestServer:
        self.loop = asyncio.get_running_loop()
        self.core = EnrpServer(self.config, REG_ID, self.hs, seed=1, now=self.loop.time())
        self.endpoint = await start_endpoint(transport, ["127.0.0.1"], 0, framing="asap",
                                             on_channel=self._on_channel)
        self.port = self.endpoint.port
        self.core.set_local_endpoint(["127.0.0.1"], self.port)
        self._arm()
        return self

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.endpoint is not None:
            self.endpoint.close()

    def _on_channel(self, ch: Any) -> None:
        self.channels.append(ch)
        ch.on_message = self._on_message
        ch.on_close = self._on_close
        self.core.peer_connected(ch, self.loop.time())
        self._flush()

    def _on_message(self, ch: Any, data: bytes, ppid: int) -> None:
        self.core.receive(ch, data, self.loop.time())
        self._flush()

    def _on_close(self, ch: Any, reason: Any) -> None:
        self.core.peer_disconnected(ch, self.loop.time())
        self._flush()

    def _flush(self) -> None:
        for key, data in self.core.pop_sends():
            if key != MULTICAST and not key.closed:
                key.send(data, ppid=PPID.ENRP)
        self.events.extend(self.core.pop_events())

    def _arm(self) -> None:
        self._timer = self.loop.call_at(self.core.next_deadline(), self._on_due)

    def _on_due(self) -> None:
        self.core.handle_timer(self.loop.time())
        self._flush()
        self._arm()

    def served(self) -> int:
        return int(self.core.counters["ht_requests_served"])


@pytest.fixture
def handlespace() -> Any:
    hs = Handlespace(own_id=REG_ID, seed=3)
    fill(hs)
    assert len(hs) == COUNT
    return hs


@pytest.fixture
def server(arun: Any, handlespace: Any) -> Any:
    srv = arun(EnrpTestServer(handlespace, max_elements_per_ht_request=PAGE).start())
    yield srv
    srv.close()


def check_dump(dump: HandlespaceDump, hs: Any, *, own_only: bool = False) -> None:
    expected = contents(hs)
    if own_only:
        expected = {k: v for k, v in expected.items() if v.home_registrar == REG_ID}
    assert dump.elements == expected  # ids, pools, homes, every PE field
    assert [h for h, _ in dump.pools()] == sorted({h for h, _ in expected},
                                                  key=lambda h: (len(h), h))
    assert dump.registrar_id == REG_ID
    assert dump.reported_checksum == hs.checksum(REG_ID)
    sums = dump.checksums()
    homes = {REG_ID} if own_only else {REG_ID, PEER_ID}
    assert set(sums) == homes
    for home in homes:
        assert sums[home] == hs.checksum(home)
    assert dump.checksum_matches is True
    assert dump.pages >= math.ceil(len(expected) / PAGE)


async def run_cli(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rserpool", "hsdump", *args, cwd=str(REPO), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def free_port() -> int:
    """A TCP port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# the library


def test_checksum_vectors_of_the_digest() -> None:
    """Digest 6.13's test vectors, computed the dump's way."""
    def checksum(pes: list[tuple[bytes, int]]) -> int:
        dump = HandlespaceDump("tcp", "h", 1, registrar_id=1)
        for handle, ident in pes:
            dump.elements[(handle, ident)] = PoolElement(
                ident, 1, 1, TcpTransport(1, ["127.0.0.1"]), PoolPolicy(1))
        return dump.checksums()[1]
    assert checksum([(b"EchoPool", 0x12345678)]) == 0x29A5
    assert checksum([(b"EchoPool", 0x12345678), (b"abc", 0xDEADBEEF)]) == 0xC7A4
    assert checksum([(b"abc", 0x00000001)]) == 0x3B9C
    assert checksum([]) == 0xFFFF


def test_dump_as_peer_pages_and_checksums(arun: Any, server: Any, handlespace: Any) -> None:
    dump = arun(dump_handlespace("127.0.0.1", server.port, as_peer=True, timeout=5.0))
    check_dump(dump, handlespace)
    assert dump.pages == server.served() >= math.ceil(COUNT / PAGE)
    assert dump.server_info is not None and dump.server_info.server_id == REG_ID
    doc = dump.to_dict()
    assert "".join(dump.iter_json()) == json.dumps(doc)  # what --json writes
    for pool in doc["pools"]:
        handle = bytes.fromhex(pool["pool_handle_hex"])
        for e in pool["elements"]:
            # every key of `rserpool resolve --json`, same values
            info = PoolElementInfo.from_pool_element(handle, dump.elements[(handle,
                                                                            e["identifier"])])
            assert info.to_dict().items() <= e.items()


def test_dump_own_children_only(arun: Any, server: Any, handlespace: Any) -> None:
    dump = arun(dump_handlespace("127.0.0.1", server.port, as_peer=True,
                                 own_children_only=True))
    check_dump(dump, handlespace, own_only=True)


def test_dump_as_observer(arun: Any, server: Any, handlespace: Any) -> None:
    """Default mode: no Presence from us.  Served by a core that serves
    non-peers; today's core rejects it, and that must be a clear error."""
    if SERVES_OBSERVERS:
        dump = arun(dump_handlespace("127.0.0.1", server.port))
        check_dump(dump, handlespace)
    else:
        with pytest.raises(HandlespaceDumpError, match="rejected the Handle Table Request"):
            arun(dump_handlespace("127.0.0.1", server.port))
    # never a peer of the registrar
    assert REG_ID not in server.core.peers() and not server.core.peers()


def test_dump_of_an_empty_handlespace(arun: Any) -> None:
    srv = arun(EnrpTestServer(Handlespace(own_id=REG_ID)).start())
    try:
        dump = arun(dump_handlespace("127.0.0.1", srv.port, as_peer=True))
    finally:
        srv.close()
    assert dump.elements == {} and dump.pages == 1
    assert dump.checksums() == {REG_ID: 0xFFFF} and dump.checksum_matches is True


def test_a_changed_registrar_checksum_is_a_mismatch(arun: Any, server: Any,
                                                    handlespace: Any) -> None:
    """The registrar's Presence reports its checksum before the dump; a PE
    registered meanwhile makes the dump disagree with it."""
    dump = arun(dump_handlespace("127.0.0.1", server.port, as_peer=True))
    pe = PoolElement(0x7FFFFFFF, REG_ID, 1000, TcpTransport(9, ["127.0.0.1"]),
                     PoolPolicy(PolicyType.ROUND_ROBIN))
    dump.elements[(b"EchoPool", pe.identifier)] = pe
    assert dump.checksum_matches is False
    from rserpool.commands.hsdump import format_dump
    assert any("MISMATCH" in line for line in format_dump(dump))


def test_unreachable_port(arun: Any) -> None:
    with pytest.raises(HandlespaceDumpError, match="cannot connect to 127.0.0.1:"):
        arun(dump_handlespace("127.0.0.1", free_port(), timeout=2.0))


async def _silent_server() -> Any:
    """Accepts and reads, never writes."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_silent_server_times_out(arun: Any) -> None:
    async def go() -> float:
        srv = await _silent_server()
        port = srv.sockets[0].getsockname()[1]
        start = time.monotonic()
        try:
            with pytest.raises(HandlespaceDumpError,
                               match=r"no Handle Table Response within 0\.5 s"):
                await dump_handlespace("127.0.0.1", port, timeout=0.5)
        finally:
            srv.close()
        return time.monotonic() - start
    elapsed = arun(go())
    # not before the 0.5 s timeout; the upper bound only says it did not hang
    assert 0.45 <= elapsed < 5.0


# ---------------------------------------------------------------------------
# the command


def _expected_rows(hs: Any) -> set[tuple[str, int, int]]:
    return {(h.hex(), e.identifier, e.home_registrar) for h in hs.pools()
            for e in hs.pool_elements(h)}


def test_cli_json(arun: Any, server: Any, handlespace: Any) -> None:
    before = time.time()
    rc, out, err = arun(run_cli(f"127.0.0.1:{server.port}", "--json", "--as-peer",
                                "--timeout", "5"))
    assert rc == 0, err
    doc = json.loads(out)
    assert before <= doc["completed_at"] <= time.time()
    assert doc["format"] == 1
    assert doc["registrar_id"] == REG_ID and doc["registrar_id_hex"] == "0x12345678"
    assert doc["reported_checksum"] == handlespace.checksum(REG_ID)
    assert doc["checksum_match"] is True
    assert doc["mode"] == "peer" and doc["own_children_only"] is False
    assert doc["registrar"] == {"transport": "tcp", "host": "127.0.0.1", "port": server.port}
    assert doc["element_count"] == COUNT and doc["pool_count"] == len(POOLS)
    assert doc["pages"] >= math.ceil(COUNT / PAGE)
    rows = {(p["pool_handle_hex"], e["identifier"], e["home_registrar"])
            for p in doc["pools"] for e in p["elements"]}
    assert rows == _expected_rows(handlespace)
    for pool in doc["pools"]:
        handle = bytes.fromhex(pool["pool_handle_hex"])
        assert pool["element_count"] == handlespace.pool_size(handle)
        assert [e["identifier"] for e in pool["elements"]] == \
            [e.identifier for e in handlespace.pool_elements(handle)]
        for e in pool["elements"]:
            entry = handlespace.get(handle, e["identifier"])
            assert e["registration_life_ms"] == entry.registration_life
            assert e["port"] == entry.user_transport.port
            assert e["policy_type"] == int(entry.policy.policy_type)
            assert e["asap_transport"]["port"] == entry.asap_transport.port
    assert {c["home_registrar"]: c["checksum"] for c in doc["checksums"]} == \
        {REG_ID: handlespace.checksum(REG_ID), PEER_ID: handlespace.checksum(PEER_ID)}
    own = [c for c in doc["checksums"] if c["is_registrar"]]
    assert len(own) == 1 and own[0]["match"] is True
    assert own[0]["elements"] == len(handlespace.owned_by(REG_ID))


def test_cli_text(arun: Any, server: Any, handlespace: Any) -> None:
    rc, out, err = arun(run_cli(f"127.0.0.1:{server.port}", "--as-peer"))
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("registrar 0x12345678 at tcp 127.0.0.1:")
    assert f"reported checksum 0x{handlespace.checksum(REG_ID):04x}" in lines[0]
    assert sum(1 for ln in lines if ln.startswith("pool ")) == len(POOLS)
    assert sum(1 for ln in lines if ln.startswith("  0x") and "home=" in ln) == COUNT
    assert "pool EchoPool: 90 PE(s), ROUND_ROBIN, tcp" in lines
    assert any(ln.startswith("  0x12345678") and " match " in ln for ln in lines)
    assert any(ln.startswith(f"  0x{PEER_ID:08x}") for ln in lines)
    assert "MISMATCH" not in out


def test_cli_as_observer(arun: Any, server: Any, handlespace: Any) -> None:
    rc, out, err = arun(run_cli(f"127.0.0.1:{server.port}", "--json"))
    if SERVES_OBSERVERS:
        assert rc == 0, err
        assert json.loads(out)["element_count"] == COUNT
    else:
        assert rc == 1 and out == ""
        assert err == ("rserpool hsdump: the registrar rejected the Handle Table Request "
                       "(R flag) (try --as-peer)\n")


def test_cli_unreachable(arun: Any) -> None:
    port = free_port()
    rc, out, err = arun(run_cli(f"127.0.0.1:{port}", "--timeout", "2"))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"rserpool hsdump: cannot connect to 127.0.0.1:{port} over tcp: ")
    assert "refused" in err.lower()


def test_cli_silent_server(arun: Any) -> None:
    async def go() -> tuple[int, str, str]:
        srv = await _silent_server()
        try:
            return await run_cli(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}",
                                 "--timeout", "0.5")
        finally:
            srv.close()
    rc, out, err = arun(go())
    assert rc == 1 and out == ""
    assert err == "rserpool hsdump: no Handle Table Response within 0.5 s\n"


@pytest.mark.parametrize("args", [[], ["127.0.0.1:notaport"], ["127.0.0.1:1", "--timeout", "0"],
                                  ["127.0.0.1:1", "--transport", "udp"]])
def test_cli_usage(arun: Any, args: list[str]) -> None:
    rc, out, err = arun(run_cli(*args))
    assert rc == 2 and out == "" and "usage:" in err


# ---------------------------------------------------------------------------
# scale


@pytest.mark.slow
def test_100k_elements(arun: Any) -> None:
    """100,000 PEs with the default page limits (128 PEs, 1,400 bytes)."""
    hs = Handlespace(own_id=REG_ID, seed=5)
    pools = [(f"pool-{i:03d}".encode(), PolicyType.LEAST_USED, (i,), "tcp", 1000)
             for i in range(100)]
    fill(hs, pools)
    assert len(hs) == 100_000
    srv = arun(EnrpTestServer(hs).start())
    try:
        start = time.perf_counter()
        dump = arun(dump_handlespace("127.0.0.1", srv.port, as_peer=True), timeout=120)
        elapsed = time.perf_counter() - start
    finally:
        srv.close()
    assert len(dump.elements) == 100_000
    assert dump.checksums() == {REG_ID: hs.checksum(REG_ID), PEER_ID: hs.checksum(PEER_ID)}
    # the time is printed, not asserted (figures: benches/load_enrp_download.py)
    print(f"\nhsdump: 100,000 PEs in {dump.pages} pages, {elapsed:.2f} s")


# ---------------------------------------------------------------------------
# SCTP


@pytest.mark.sctp
def test_dump_over_sctp(arun: Any, handlespace: Any) -> None:
    srv = arun(EnrpTestServer(handlespace, max_elements_per_ht_request=PAGE).start("sctp"))
    try:
        dump = arun(dump_handlespace("127.0.0.1", srv.port, transport="sctp", as_peer=True))
    finally:
        srv.close()
    check_dump(dump, handlespace)


# ---------------------------------------------------------------------------
# the real registrar


@pytest.mark.skipif(not hasattr(Registrar, "enrp_address"),
                    reason="the registrar has no ENRP endpoint yet (Registrar.enrp_address)")
@pytest.mark.parametrize("as_peer", [False, True], ids=["observer", "peer"])
def test_registrar_end_to_end(arun: Any, registrar_factory: Any, as_peer: bool) -> None:
    reg = registrar_factory(enrp_port=0, presence_multicast=False,
                            max_elements_per_ht_request=PAGE)
    host, port = reg.address("tcp")

    async def register() -> list[Any]:
        clients = []
        for i in range(40):
            client = await AsapClient.connect(host, port, auto_ack=True)
            handle = b"EchoPool" if i % 2 else b"abc"
            resp = await client.register(handle, pool_element(0x100 + i, port=7000 + i))
            assert not resp.rejected and resp.error is None, resp
            clients.append(client)
        return clients

    clients = arun(register())
    try:
        ehost, eport = reg.enrp_address("tcp")
        dump = arun(dump_handlespace(ehost, eport, as_peer=as_peer))
        assert dump.registrar_id == reg.registrar_id
        assert dump.elements == contents(reg.handlespace)
        assert len(dump.elements) == 40
        assert dump.checksums() == {reg.registrar_id: reg.handlespace.checksum(reg.registrar_id)}
        assert dump.checksum_matches is True
        rc, out, err = arun(run_cli(f"{ehost}:{eport}", "--json",
                                    *(["--as-peer"] if as_peer else [])))
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["element_count"] == 40 and doc["checksum_match"] is True
    finally:
        for c in clients:
            arun(c.close())
