"""Fixtures for tests against a real, in-process registrar on loopback.

pytest-asyncio is not used: each test gets its own event loop.

Fixtures
--------
``aio_loop``
    A fresh event loop, closed (leftover tasks cancelled) after the test.
``arun``
    ``arun(coro, timeout=30.0)`` runs a coroutine on ``aio_loop`` and returns
    its result.
``registrar_factory``
    ``registrar_factory(**overrides) -> Registrar``: a started
    :class:`rserpool.aio.registrar.Registrar` on ``aio_loop``, stopped after
    the test.  Defaults: :data:`TEST_CONFIG` (127.0.0.1, port 0, TCP only,
    announces off, keep-alive interval and timeout 1 s, ENRP on an ephemeral
    port without Presence multicast), handlespace seed 7.
    ``overrides`` are RegistrarConfig fields plus ``seed=`` and
    ``partial_timeout=`` (Registrar keyword arguments).
``registrar``
    ``registrar_factory()`` with the overrides of an optional marker:
    ``@pytest.mark.registrar(keep_alive_interval=0.3, keep_alive_timeout=0.3)``.

Helpers (``from conftest import ...`` in a test module of this folder)
--------------------------------------------------------------------
:func:`running_registrar` -- ``async with running_registrar(**overrides) as reg:``
for tests that run their own ``asyncio.run``.

:class:`AsapClient` -- a tiny raw ASAP client, TCP by default (asyncio
streams, independent of ``rserpool.aio.transport``) or SCTP (through
``open_channel``): ``send`` bytes or messages, ``recv`` decoded messages,
``register`` / ``deregister`` / ``resolve`` / ``unreachable`` shortcuts, and
``auto_ack`` to answer Endpoint Keep-Alives like a live PE.

:class:`ResolutionProber` -- a well-behaved pool user on an
:class:`AsapClient`, resolving a pool in a loop and checking every answer,
while a test does something bad to the registrar.

(The tests in ``tests/sctp`` load this file with importlib to use these.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable, Iterable

import pytest

from rserpool.aio.registrar import Registrar
from rserpool.config import RegistrarConfig
from rserpool.constants import PolicyType
from rserpool.testing.aio import close_loop, until
from rserpool.wire import (
    Deregistration,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    Message,
    PoolElement,
    PoolPolicy,
    Registration,
    SctpTransport,
    StreamFramer,
    TcpTransport,
    decode_message,
    encode_message,
)

__all__ = ["TEST_CONFIG", "running_registrar", "AsapClient", "pool_element",
           "ResolutionProber"]

#: The registrar configuration of the fixtures.
TEST_CONFIG = RegistrarConfig(addresses=("127.0.0.1",), asap_port=0, transports=("tcp",),
                              announce=False, keep_alive_interval=1.0, keep_alive_timeout=1.0,
                              enrp_port=0, presence_multicast=False,
                              mentor_discovery_timeout=1.0)
#: Handlespace seed of the fixtures (reproducible random policies).
TEST_SEED = 7

_REGISTRAR_KWARGS = ("seed", "partial_timeout", "log_endpoints")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "registrar(**overrides): RegistrarConfig overrides (and seed=, "
        "partial_timeout=) for the `registrar` fixture")


def make_registrar(**overrides: Any) -> Registrar:
    """A Registrar (not started) on the test configuration plus ``overrides``."""
    kwargs = {k: overrides.pop(k) for k in _REGISTRAR_KWARGS if k in overrides}
    kwargs.setdefault("seed", TEST_SEED)
    return Registrar(TEST_CONFIG.replace(**overrides), **kwargs)


@contextlib.asynccontextmanager
async def running_registrar(**overrides: Any) -> AsyncIterator[Registrar]:
    """``async with running_registrar(keep_alive_interval=0.5) as reg:``"""
    reg = make_registrar(**overrides)
    await reg.start()
    try:
        yield reg
    finally:
        await reg.stop()


@pytest.fixture
def aio_loop() -> Iterable[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        close_loop(loop)


@pytest.fixture
def arun(aio_loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    def run(coro: Any, timeout: float = 30.0) -> Any:
        return aio_loop.run_until_complete(asyncio.wait_for(coro, timeout))
    return run


@pytest.fixture
def registrar_factory(aio_loop: asyncio.AbstractEventLoop,
                      arun: Callable[..., Any]) -> Iterable[Callable[..., Registrar]]:
    started: list[Registrar] = []

    def factory(**overrides: Any) -> Registrar:
        reg = make_registrar(**overrides)
        arun(reg.start())
        started.append(reg)
        return reg

    yield factory
    for reg in reversed(started):
        arun(reg.stop())


@pytest.fixture
def registrar(request: pytest.FixtureRequest,
              registrar_factory: Callable[..., Registrar]) -> Registrar:
    marker = request.node.get_closest_marker("registrar")
    return registrar_factory(**(marker.kwargs if marker else {}))


# ---------------------------------------------------------------------------
# a raw ASAP client


def pool_element(identifier: int, *, policy: int = PolicyType.ROUND_ROBIN,
                 values: Iterable[int] = (), address: str = "127.0.0.1", port: int = 7000,
                 life: int = 30000, transport: str = "tcp", use: int = 0) -> PoolElement:
    """A Pool Element parameter as a PE would register it."""
    kind = TcpTransport if transport == "tcp" else SctpTransport
    return PoolElement(identifier, 0, life, kind(port, [address], use),
                       PoolPolicy(policy, list(values)))


class AsapClient:
    """A raw ASAP peer of the registrar (a PE, a PU or a misbehaving peer)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message | None] = asyncio.Queue()
        self.keep_alives: list[EndpointKeepAlive] = []
        self.auto_ack = False
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._channel: Any = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, *, transport: str = "tcp",
                      auto_ack: bool = False, local_address: str | None = None
                      ) -> "AsapClient":
        self = cls()
        self.auto_ack = auto_ack
        if transport == "tcp":
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(local_address, 0) if local_address else None)
            self._writer = writer
            self._task = asyncio.get_running_loop().create_task(self._read(reader))
        else:
            from rserpool.aio.transport import open_channel

            self._channel = await open_channel(
                transport, host, port, local_addresses=[local_address] if local_address else (),
                on_message=lambda ch, data, ppid: self._on_message(data),
                on_close=lambda ch, reason: self._on_eof())
        return self

    @property
    def local(self) -> tuple[str, int]:
        if self._writer is not None:
            return self._writer.get_extra_info("sockname")[:2]
        return self._channel.local

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = StreamFramer()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for raw in framer.feed(data):
                    self._on_message(raw)
        except (ConnectionError, OSError):
            pass
        finally:
            self._on_eof()

    def _on_message(self, raw: bytes) -> None:
        msg = decode_message(raw, "asap")
        if type(msg) is EndpointKeepAlive:
            self.keep_alives.append(msg)
            if self.auto_ack:
                self.send(EndpointKeepAliveAck(msg.pool_handle, msg.identifier))
                return
        self.messages.put_nowait(msg)

    def _on_eof(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.messages.put_nowait(None)

    def send(self, data: bytes | Message) -> None:
        raw = data if isinstance(data, (bytes, bytearray)) else encode_message(data)
        if self._writer is not None:
            self._writer.write(raw)
        else:
            self._channel.send(bytes(raw))

    async def recv(self, timeout: float = 5.0, *, skip_keep_alives: bool = True) -> Message:
        """The next message (Endpoint Keep-Alives skipped unless asked for).

        :raises ConnectionError: the registrar closed the connection first.
        :raises TimeoutError: nothing within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                msg = await asyncio.wait_for(self.messages.get(), max(0.0, end - loop.time()))
            except asyncio.TimeoutError:
                raise TimeoutError(f"no message within {timeout} s") from None
            if msg is None:
                self.messages.put_nowait(None)  # stay closed for later calls
                raise ConnectionError("the registrar closed the connection")
            if skip_keep_alives and type(msg) is EndpointKeepAlive:
                continue
            return msg

    async def request(self, msg: bytes | Message, timeout: float = 5.0) -> Message:
        self.send(msg)
        return await self.recv(timeout)

    async def register(self, handle: bytes, element: PoolElement, timeout: float = 5.0
                       ) -> Message:
        return await self.request(Registration(handle, element), timeout)

    async def deregister(self, handle: bytes, identifier: int, timeout: float = 5.0
                         ) -> Message:
        return await self.request(Deregistration(handle, identifier), timeout)

    async def resolve(self, handle: bytes, items: int | None = None, timeout: float = 5.0
                      ) -> Message:
        return await self.request(HandleResolution(handle, items), timeout)

    def unreachable(self, handle: bytes, identifier: int) -> None:
        self.send(EndpointUnreachable(handle, identifier))

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        elif self._channel is not None:
            self._channel.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    def abort(self) -> None:
        """Reset the connection (TCP RST / SCTP ABORT)."""
        if self._writer is not None:
            self._writer.transport.abort()
        elif self._channel is not None:
            self._channel.abort("test abort")


class ResolutionProber:
    """A well-behaved PU resolving ``pool`` in a loop over ``client`` (an
    :class:`AsapClient`, of either transport) and checking each answer: a
    Handle Resolution Response naming exactly the PEs ``expected``."""

    def __init__(self, client: AsapClient, pool: bytes, expected: set[int]) -> None:
        self.client = client
        self.pool = pool
        self.expected = expected
        self.ok = 0
        self.failures: list[str] = []
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # The flag, not only the cancel: Python 3.11's wait_for() (inside
        # resolve()) swallows a cancel that arrives as its answer does, and
        # the loop would go on forever.
        while not self._stopped:
            try:
                resp = await self.client.resolve(self.pool, 3, timeout=10.0)
            except Exception as exc:  # recorded, the test fails on it
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
            if (type(resp) is not HandleResolutionResponse or resp.error is not None
                    or {pe.identifier for pe in resp.pool_elements} != self.expected):
                self.failures.append(f"wrong answer: {resp!r}")
            else:
                self.ok += 1
            await asyncio.sleep(0.005)

    async def progressed(self, by: int = 5, timeout: float = 15.0) -> None:
        """Wait until ``by`` more correct answers arrived (fails on a wrong one)."""
        target = self.ok + by
        await until(lambda: self.ok >= target or self.failures, timeout, what="prober answers")
        assert not self.failures, self.failures

    async def stop(self) -> None:
        """Stop resolving (fails if any answer was wrong), close the client."""
        self._stopped = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        assert not self.failures, self.failures
        await self.client.close()
