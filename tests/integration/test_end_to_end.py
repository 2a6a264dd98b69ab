"""Evidence 1 of issue 4, end to end on loopback: one registrar, three pool
elements as real processes (``python -m rserpool pe``, so that ``kill -9``
is real), a pool user session.

* ``kill -9`` of the PE in use: the registrar removes it and the session
  fails over to another PE without losing its state: the echo service's
  counters travel in the ASAP Cookie, the PU echoes the latest one to the new
  PE, whose next Cookie continues the count.
* ``kill -STOP`` of the PE in use (a hung PE: its connections stay up): the
  registrar removes it after the keep-alive timeout (short timers here), the
  application notices the silence and calls ``failover()``; the state
  survives again.
* ``rserpool pu`` with standard input from a pipe, talking to ping-pong PEs,
  survives a ``kill -9`` of its PE: it prints the failover lines and the pong
  count goes on.

The scenarios take the transport as a parameter: ``tests/sctp/
test_end_to_end_sctp.py`` runs them over kernel SCTP.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from rserpool.aio.registrar import Registrar
from rserpool.aio.user import FailoverCompleted, FailoverStarted, PoolUser, SessionConnected
from rserpool.config import RegistrarConfig
from rserpool.services.echo import parse_echo_cookie
from rserpool.testing import aio as testing_aio

ECHO_POOL = b"EchoPool"
PINGPONG_POOL = b"PingPongPool"
SCENARIO_TIMEOUT = 90.0
#: Short registrar timers so that a hung PE goes within about 2 s, but not so
#: short that a busy CI host (or the UML guest) misses an ack.
KEEP_ALIVE = dict(keep_alive_interval=1.0, keep_alive_timeout=1.0)


#: ``run(coro_fn)``: ``coro_fn()`` in a new event loop, within SCENARIO_TIMEOUT.
run = partial(testing_aio.run_with_timeout, timeout=SCENARIO_TIMEOUT)
#: ``await until(cond, what=...)``: an effect in another process or task (not a
#: timing assertion); AssertionError if it does not come within 20 s.
until = partial(testing_aio.until, timeout=20.0)


class RegistrarLog(logging.Handler):
    """The registrar's INFO lines (PE registered / removed ...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._logger = logging.getLogger("rserpool.registrar")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> "RegistrarLog":
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def removed(self, identifier: int) -> list[str]:
        return [line for line in self.lines
                if line.startswith(f"PE 0x{identifier:08x} removed")]


def registrar_config(transport: str) -> RegistrarConfig:
    return RegistrarConfig(addresses=("127.0.0.1",), asap_port=0, transports=(transport,),
                          enrp_port=0, presence_multicast=False, mentor_discovery_timeout=1.0,
                           announce=False, **KEEP_ALIVE)


def hostport(reg: Registrar, transport: str) -> str:
    host, port = reg.address(transport)
    return f"{host}:{port}"


class PeProcess:
    """``python -m rserpool pe`` in its own process."""

    def __init__(self, proc: asyncio.subprocess.Process, identifier: int, log: Path) -> None:
        self.proc = proc
        self.identifier = identifier
        self.log = log

    @classmethod
    async def start(cls, reg: Registrar, transport: str, pool: bytes, service: str,
                    identifier: int, logdir: Path) -> "PeProcess":
        log = logdir / f"pe-{identifier:08x}.log"
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rserpool", "pe", "--pool", pool.decode(),
                "--service", service, "--registrar", hostport(reg, transport),
                "--no-discovery", "--transport", transport, "--address", "127.0.0.1",
                "--identifier", f"0x{identifier:08x}", stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=dict(os.environ, PYTHONWARNINGS="error"))
        return cls(proc, identifier, log)

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.signal(signal.SIGKILL)
                await self.proc.wait()


async def start_pool(reg: Registrar, transport: str, pool: bytes, service: str,
                     logdir: Path, base: int) -> dict[int, PeProcess]:
    pes = {}
    for n in range(3):
        pe = await PeProcess.start(reg, transport, pool, service, base + n, logdir)
        pes[pe.identifier] = pe
    try:
        await until(lambda: all((pool, i) in reg.handlespace for i in pes),
                    what="three PEs registered")
    except AssertionError:
        await stop_all(pes)
        raise AssertionError("PEs did not register:\n" + "\n".join(
            p.log.read_text(errors="replace") for p in pes.values()))
    return pes


async def stop_all(pes: dict[int, PeProcess]) -> None:
    await asyncio.gather(*(p.stop() for p in pes.values()))


async def echo(session: Any, data: bytes, timeout: float | None = None) -> bytes:
    session.send(data)
    if timeout is None:
        return await session.recv()
    return await asyncio.wait_for(session.recv(), timeout)


# ---------------------------------------------------------------------------
# scenarios (also run over SCTP by tests/sctp/test_end_to_end_sctp.py)


async def kill_9_scenario(transport: str, logdir: Path) -> None:
    with RegistrarLog() as reglog:
        async with Registrar(registrar_config(transport), seed=3) as reg:
            pes = await start_pool(reg, transport, ECHO_POOL, "echo", logdir, 0x1001)
            try:
                events: list[Any] = []
                async with PoolUser(registrars=[hostport(reg, transport)], discovery=False,
                                    transport=transport) as pu:
                    session = await pu.connect_session(ECHO_POOL, on_event=events.append)
                    assert isinstance(events[0], SessionConnected)
                    assert session.element.transport == transport
                    victim = session.element.identifier
                    sent = [b"alpha", b"beta", b"gamma"]
                    for data in sent:
                        assert await echo(session, data) == data
                    await until(lambda: session.cookie is not None
                                and parse_echo_cookie(session.cookie) == (3, 14),
                                what="cookie after three echoes")

                    pes[victim].signal(signal.SIGKILL)
                    await pes[victim].proc.wait()

                    await until(lambda: (ECHO_POOL, victim) not in reg.handlespace,
                                what="the registrar removes the killed PE")
                    assert reglog.removed(victim)
                    await until(lambda: session.failovers == 1, what="failover")
                    started = [e for e in events if isinstance(e, FailoverStarted)]
                    completed = [e for e in events if isinstance(e, FailoverCompleted)]
                    assert [e.element.identifier for e in started] == [victim]
                    new = completed[0].element.identifier
                    assert new != victim and new in pes and completed[0].cookie_echoed

                    # the state went along: the new PE's cookie continues the count
                    assert await echo(session, b"delta") == b"delta"
                    await until(lambda: parse_echo_cookie(session.cookie) == (4, 19),
                                what="cookie continuing the count on the new PE")
                    assert session.element.identifier == new
                    await session.close()
            finally:
                await stop_all(pes)


async def hung_pe_scenario(transport: str, logdir: Path) -> None:
    with RegistrarLog() as reglog:
        async with Registrar(registrar_config(transport), seed=5) as reg:
            pes = await start_pool(reg, transport, ECHO_POOL, "echo", logdir, 0x2001)
            try:
                async with PoolUser(registrars=[hostport(reg, transport)], discovery=False,
                                    transport=transport) as pu:
                    session = await pu.connect_session(ECHO_POOL)
                    hung = session.element.identifier
                    for data in (b"one", b"two"):
                        assert await echo(session, data) == data
                    await until(lambda: parse_echo_cookie(session.cookie or b"") == (2, 6))

                    pes[hung].signal(signal.SIGSTOP)
                    # its connections stay up, so only keep-alives can tell
                    await until(lambda: (ECHO_POOL, hung) not in reg.handlespace,
                                what="keep-alive timeout removes the hung PE")
                    assert any("keep-alive timeout" in line for line in reglog.removed(hung))

                    # the application notices the silence and fails over itself
                    answer = None
                    for _attempt in range(10):
                        try:
                            answer = await echo(session, b"three", timeout=2.0)
                            break
                        except asyncio.TimeoutError:
                            session.failover(reason="no answer")
                    assert answer == b"three"
                    assert session.element.identifier != hung and session.failovers >= 1
                    await until(lambda: parse_echo_cookie(session.cookie) == (3, 11),
                                what="the count went on")
                    await session.close()
            finally:
                await stop_all(pes)


async def _line(stream: asyncio.StreamReader, pattern: str, seen: list[str],
                timeout: float = 20.0) -> re.Match[str]:
    """Read lines until one matches ``pattern``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            raw = await asyncio.wait_for(stream.readline(), max(0.1, end - loop.time()))
        except asyncio.TimeoutError:
            raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                                 f"got {seen}") from None
        if not raw:
            raise AssertionError(f"end of output before {pattern!r}; got {seen}")
        line = raw.decode(errors="replace").rstrip("\n")
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m


async def pu_command_scenario(transport: str, logdir: Path) -> None:
    async with Registrar(registrar_config(transport), seed=7) as reg:
        pes = await start_pool(reg, transport, PINGPONG_POOL, "pingpong", logdir, 0x3001)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rserpool", "pu", "--pool", PINGPONG_POOL.decode(),
            "--service", "pingpong", "--registrar", hostport(reg, transport),
            "--no-discovery", "--transport", transport, "--show-cookies",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONWARNINGS="error"))
        out: list[str] = []
        err: list[str] = []
        try:
            assert proc.stdin and proc.stdout and proc.stderr
            m = await _line(proc.stderr, r"connected to PE 0x([0-9a-f]{8})", err)
            victim = int(m.group(1), 16)
            for seq, word in ((1, "one"), (2, "two")):
                proc.stdin.write(f"{word}\n".encode())
                await proc.stdin.drain()
                await _line(proc.stdout, rf"^PONG {seq} {seq} {word}$", out)
                await _line(proc.stderr, rf"cookie: pingpong 1 {seq}$", err)

            pes[victim].signal(signal.SIGKILL)
            await _line(proc.stderr, rf"failover: PE 0x{victim:08x} lost", err)
            m = await _line(proc.stderr, r"failover: now PE 0x([0-9a-f]{8}).*cookie echoed",
                            err)
            assert int(m.group(1), 16) != victim

            proc.stdin.write(b"three\n")
            await proc.stdin.drain()
            # the pong count continues at 3 on the new PE
            await _line(proc.stdout, r"^PONG 3 3 three$", out)
            proc.stdin.close()
            rest_out, rest_err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, (out, err, rest_err)
            assert out == ["PONG 1 1 one", "PONG 2 2 two", "PONG 3 3 three"]
            assert rest_out == b""
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await stop_all(pes)


# ---------------------------------------------------------------------------
# the tests (TCP)


def test_kill_9_of_the_pe_in_use_fails_over_with_the_session_state(tmp_path):
    run(lambda: kill_9_scenario("tcp", tmp_path))


def test_hung_pe_is_removed_after_the_keep_alive_timeout_and_the_session_moves_on(tmp_path):
    run(lambda: hung_pe_scenario("tcp", tmp_path))


def test_pu_command_survives_a_kill_9(tmp_path):
    run(lambda: pu_command_scenario("tcp", tmp_path))
