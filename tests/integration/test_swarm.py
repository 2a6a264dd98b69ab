"""The PE swarm (``python -m rserpool.testing.swarm``) as a subprocess against
the real registrar in this process, over loopback TCP: registration of many
PEs over several connections, keep-alive answers, ``dereg`` and ``drop``
seen by the registrar, an H-bit home move through an association's ASAP
listener (and the deregistration that then goes to the new home), lost
associations, and start-up failures."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from conftest import AsapClient, pool_element, running_registrar

from rserpool.constants import PolicyType
from rserpool.testing.aio import run_with_timeout, until
from rserpool.wire import (Deregistration, DeregistrationResponse, EndpointKeepAlive,
                           EndpointKeepAliveAck, RegistrationResponse, TcpTransport)

POOL = b"SwarmPool"
#: registrar keep-alive interval and timeout of these tests (seconds); the
#: timeout leaves a swarm process on a loaded machine time to answer (the
#: swarm never re-registers: a late answer would lose a live PE for good)
INTERVAL, TIMEOUT = 1.0, 3.0
#: the server ID of the fake takeover registrar
TAKER = 0x1234


class Swarm:
    """A swarm subprocess: ``ready`` is its first line, ``command`` sends
    one control line and returns the JSON answer."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready

    @classmethod
    async def start(cls, registrar: Any, count: int, *args: str,
                    timeout: float = 15.0) -> "Swarm":
        host, port = registrar.address("tcp") if not isinstance(registrar, tuple) \
            else registrar
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rserpool.testing.swarm", "--registrar", f"{host}:{port}",
            "--pool", POOL.decode(), "--count", str(count), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=1 << 24,
            env=dict(os.environ, PYTHONWARNINGS="error"))
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except BaseException:
            await cls._kill(proc)
            raise
        return cls(proc, json.loads(line) if line else {})

    async def command(self, line: str, timeout: float = 15.0) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert answer, f"the swarm ended instead of answering {line!r}"
        return json.loads(answer)

    async def quit(self) -> tuple[int, bytes]:
        """Send ``quit``; the exit status and stderr."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"quit\n")
        await self.proc.stdin.drain()
        _, err = await asyncio.wait_for(self.proc.communicate(), 15)
        assert self.proc.returncode is not None
        return self.proc.returncode, err

    async def close(self) -> None:
        if self.proc.returncode is None:
            await self._kill(self.proc)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def swarm_stats_until(swarm: Swarm, pred: Any, timeout: float = 5.0) -> Any:
    """The swarm's ``stats`` once ``pred(stats)`` holds (polled)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        stats = await swarm.command("stats")
        if pred(stats):
            return stats
        assert loop.time() < end, f"gave up waiting; last stats {stats}"
        await asyncio.sleep(0.05)


def registered_ids(registrar: Any) -> set[int]:
    return {e.identifier for e in registrar.handlespace.pool_elements(POOL)} \
        if POOL in registrar.handlespace.pools() else set()


def test_swarm_registers_answers_deregisters_drops_and_moves_home() -> None:
    async def scenario() -> None:
        async with running_registrar(keep_alive_interval=INTERVAL,
                                     keep_alive_timeout=TIMEOUT) as reg:
            base = random.randrange(1, 0xFFFF0000)
            swarm = await Swarm.start(reg, 200, "--connections", "4",
                                      "--id-base", str(base))
            try:
                await run_swarm_scenario(reg, swarm, base)
            finally:
                await swarm.close()

    run_with_timeout(scenario(), 60)


async def run_swarm_scenario(reg: Any, swarm: Swarm, base: int) -> None:
    ready = swarm.ready
    assert ready["ready"] is True, ready
    assert ready["count"] == 200 and ready["ids"] == [base, base + 199]
    assert ready["associations"] == 4 and len(set(ready["asap_ports"])) == 4
    everyone = set(range(base, base + 200))
    assert registered_ids(reg) == everyone
    assert reg.statistics()["associations"] == 4

    # each PE's ASAP transport is its association's listener on 127.0.0.1
    ports = set()
    for ident in everyone:
        asap = reg.handlespace.get(POOL, ident).asap_transport
        assert isinstance(asap, TcpTransport) and asap.addresses == ("127.0.0.1",)
        ports.add(asap.port)
    assert ports == set(ready["asap_ports"])

    # keep-alives get answered: the registrar keeps everyone
    await until(lambda: reg.statistics()["keep_alive_acks"] >= 200, 10, "keep-alive acks")
    stats = await swarm.command("stats")
    assert stats["acked_keepalives"] >= 200 and stats["errors"] == 0
    assert stats["registered"] == stats["alive"] == 200
    assert stats["homes"] == {f"0x{reg.registrar_id:08x}": 200}
    assert stats["rehomed"] == 0 and stats["first_rehome"] is None
    assert stats["associations"] == 4 and stats["lost_associations"] == 0

    # dereg: the 10 lowest go, confirmed by the registrar
    answer = await swarm.command("dereg 10")
    assert answer == {"deregistered": list(range(base, base + 10))}
    assert registered_ids(reg) == everyone - set(range(base, base + 10))

    # drop: the next 5 stop answering and time out at the registrar, no one else
    answer = await swarm.command("drop 5")
    dropped = list(range(base + 10, base + 15))
    assert answer == {"dropped": dropped}
    left = everyone - set(range(base, base + 15))
    await until(lambda: registered_ids(reg) == left, 3 * (INTERVAL + TIMEOUT) + 2,
                "the dropped PEs removed by keep-alive timeout")
    alive = (await swarm.command("ids"))["alive"]
    assert alive == sorted(left)
    stats = await swarm.command("stats")
    assert stats["alive"] == 185 and stats["deregistered"] == 10 and stats["dropped"] == 5
    assert stats["ignored_keepalives"] >= 5

    # a "takeover": H-bit keep-alives on a new link to the ASAP listener
    movers = sorted(left)[:3]
    asap = reg.handlespace.get(POOL, movers[0]).asap_transport
    t0 = time.time()
    taker = await AsapClient.connect(asap.addresses[0], asap.port)
    try:
        for ident in movers:
            taker.send(EndpointKeepAlive(TAKER, POOL, ident, True))
        acks = [await taker.recv(5) for _ in movers]
        assert acks == [EndpointKeepAliveAck(POOL, i) for i in movers]
        stats = await swarm.command("rehome-wait 3 5")
        assert stats["reached"] is True and stats["rehomed"] == 3
        assert stats["homes"] == {f"0x{reg.registrar_id:08x}": 182, f"0x{TAKER:08x}": 3}
        assert stats["inbound_associations"] == 1 and stats["home_keepalives"] == 3
        assert stats["first_rehome"] <= stats["last_rehome"] <= stats["now"]
        assert t0 - 1 <= stats["first_rehome_wall"] <= stats["last_rehome_wall"] <= time.time()
        rehomes = (await swarm.command("rehomes"))["rehomes"]
        assert [(r[0], r[1]) for r in rehomes] == [(i, f"0x{TAKER:08x}") for i in movers]
        # a second H-bit keep-alive on the same link is no new move
        taker.send(EndpointKeepAlive(TAKER, POOL, movers[0], True))
        assert await taker.recv(5) == EndpointKeepAliveAck(POOL, movers[0])
        assert (await swarm.command("stats"))["rehome_events"] == 3

        # the old registrar's keep-alives for the movers are still answered
        acks_before = reg.statistics()["keep_alive_acks"]
        await until(lambda: reg.statistics()["keep_alive_acks"] >= acks_before + 185,
                    3 * INTERVAL + 2, "another round of keep-alive acks")
        assert registered_ids(reg) == left

        # deregistering a mover goes to its new home
        pending = asyncio.ensure_future(swarm.command("dereg 1"))
        msg = await taker.recv(5)
        assert msg == Deregistration(POOL, movers[0])
        taker.send(DeregistrationResponse(POOL, movers[0]))
        assert await pending == {"deregistered": [movers[0]]}
        # ... so the old registrar, which still has it, loses it by keep-alive timeout
        await until(lambda: registered_ids(reg) == left - {movers[0]},
                    3 * (INTERVAL + TIMEOUT) + 2, "the mover removed at the old registrar")
    finally:
        await taker.close()
    # the takeover link's close is counted as lost, the swarm goes on
    stats = await swarm_stats_until(swarm, lambda s: s["lost_associations"] == 1)
    assert stats["alive"] == 184
    assert stats["homeless"] == 2

    status, err = await swarm.quit()
    assert status == 0 and b"Traceback" not in err, err.decode()
    # quit closes the associations: the registrar drops the rest
    await until(lambda: not registered_ids(reg), 5, "the registrar to drop the swarm")


def test_swarm_survives_lost_associations() -> None:
    async def scenario() -> None:
        async with running_registrar() as reg:
            swarm = await Swarm.start(reg, 20, "--connections", "2")
            try:
                assert swarm.ready["ready"] is True, swarm.ready
                first, last = swarm.ready["ids"]
                assert last - first == 19 and 1 <= first
                assert len(registered_ids(reg)) == 20
                await reg.stop()
                stats = await swarm_stats_until(swarm, lambda s: s["lost_associations"] == 2)
                assert stats["associations"] == 0
                assert stats["alive"] == 20 and stats["homeless"] == 20
                answer = await swarm.command("dereg 2")
                assert answer["deregistered"] == []
                assert set(answer["failed"]) == {str(first), str(first + 1)}
                assert (await swarm.command("frobnicate"))["error"].startswith("unknown")
                status, err = await swarm.quit()
                assert status == 0, err.decode()
            finally:
                await swarm.close()

    run_with_timeout(scenario(), 60)


def test_swarm_reports_refused_registrations_and_unreachable_registrar() -> None:
    async def scenario() -> None:
        async with running_registrar() as reg:
            # the pool exists with round robin: least-used PEs are refused
            owner = await AsapClient.connect(*reg.address("tcp"))
            try:
                resp = await owner.register(POOL, pool_element(1, policy=PolicyType.ROUND_ROBIN))
                assert isinstance(resp, RegistrationResponse) and not resp.rejected
                swarm = await Swarm.start(reg, 10, "--policy", "lu", "--id-base", "100")
                try:
                    assert swarm.ready["ready"] is False
                    assert "refused" in swarm.ready["error"], swarm.ready
                    assert await swarm.proc.wait() == 1
                finally:
                    await swarm.close()
            finally:
                await owner.close()
            closed_port = reg.address("tcp")
        swarm = await Swarm.start(closed_port, 5, "--connect-timeout", "2")
        try:
            assert swarm.ready["ready"] is False and "cannot connect" in swarm.ready["error"]
            assert await swarm.proc.wait() == 1
        finally:
            await swarm.close()

    run_with_timeout(scenario(), 60)
