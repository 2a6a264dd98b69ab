"""Pool elements over real kernel SCTP (inside UML on hosts without it), with
the real registrar: registration over the PE's one-to-many ASAP socket,
multi-homed user addresses, keep-alives, load updates, a takeover's H-bit
keep-alive on a new association, and an echo session with its cookie."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import pytest

from rserpool.aio.element import PoolElement
from rserpool.aio.transport import open_channel
from rserpool.config import RegistrarConfig
from rserpool.constants import PPID, TransportUse
from rserpool.protocol.asap_element import (Deregistered, HomeRegistrarChanged,
                                            KeepAliveAnswered, Registered, load_from_fraction)
from rserpool.services.echo import EchoService
from rserpool.wire import (Cookie, CookieEcho, Deregistration, DeregistrationResponse,
                           EndpointKeepAlive, EndpointKeepAliveAck, HandleResolution,
                           HandleResolutionResponse, SctpTransport, decode_message,
                           encode_message)

pytestmark = pytest.mark.sctp

HANDLE = b"SctpEchoPool"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def extra_addresses() -> list[str]:
    env = os.environ.get("RSERPOOL_UML_ADDRESSES", "10.255.0.1 10.255.0.2 10.255.0.3")
    return env.replace(",", " ").split()


class Inbox:
    """Messages of one channel (ASAP decoded when PPID is 11)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Any]] = []
        self.closed: list[Any] = []
        self._event = asyncio.Event()

    def on_message(self, ch: Any, data: bytes, ppid: int) -> None:
        self.items.append((ppid, decode_message(data, "asap") if ppid == PPID.ASAP else data))
        self._event.set()

    def on_close(self, ch: Any, reason: Any) -> None:
        self.closed.append(reason)
        self._event.set()

    async def next(self, pred: Callable[[int, Any], bool], timeout: float = 10.0) -> Any:
        async def waiter() -> Any:
            while True:
                for i, (ppid, item) in enumerate(self.items):
                    if pred(ppid, item):
                        del self.items[: i + 1]
                        return item
                self._event.clear()
                await self._event.wait()
        return await asyncio.wait_for(waiter(), timeout)


async def resolve(host: str, port: int) -> HandleResolutionResponse:
    inbox = Inbox()
    ch = await open_channel("sctp", host, port, on_message=inbox.on_message)
    try:
        ch.send(encode_message(HandleResolution(HANDLE, 0xFFFFFFFF)))
        return await inbox.next(lambda p, m: isinstance(m, HandleResolutionResponse))
    finally:
        ch.close()


async def started_registrar(address: str) -> Any:
    from rserpool.aio.registrar import Registrar

    reg = Registrar(RegistrarConfig(addresses=(address,), asap_port=0, transports=("sctp",),
                                    enrp_port=0, presence_multicast=False,
                                    announce=False, keep_alive_interval=1.0,
                                    keep_alive_timeout=1.0), seed=7)
    await reg.start()
    return reg


def test_pe_over_sctp_registers_multihomed_and_serves_with_cookies():
    a1, a2, a3 = extra_addresses()[:3]

    async def main() -> None:
        reg = await started_registrar(a3)
        host, port = reg.address("sctp")
        pe = PoolElement(HANDLE, policy="least_used", load=0.2, registrars=[f"{host}:{port}"],
                         discovery=False, transport="sctp", addresses=[a1, a2],
                         registration_interval=2.0, service=EchoService)
        events: list[Any] = []
        pe.add_listener(events.append)
        try:
            await pe.start()
            assert pe.transport == "sctp" and pe.registered
            home = pe.home_registrar
            assert (home.transport, home.host, home.port) == ("sctp", host, port)
            # the registrar reaches us over the PE's own one-to-many socket
            for _ in range(100):
                if sum(isinstance(e, KeepAliveAnswered) for e in events) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert sum(isinstance(e, KeepAliveAnswered) for e in events) >= 2
            [entry] = (await resolve(host, port)).pool_elements
            assert entry.identifier == pe.identifier
            assert isinstance(entry.user_transport, SctpTransport)
            assert set(entry.user_transport.addresses) == {a1, a2}
            assert entry.user_transport.port == pe.user_addresses[0][1]
            assert entry.user_transport.transport_use == TransportUse.DATA_PLUS_CONTROL
            assert entry.policy.load == load_from_fraction(0.2)
            # load change -> re-registration the registrar sees
            pe.update_load(0.7)
            await pe.wait_for(lambda e: isinstance(e, Registered) and e.reregistration, 10)
            [entry] = (await resolve(host, port)).pool_elements
            assert entry.policy.load == load_from_fraction(0.7)
            # an echo session: data with its PPID, cookies with PPID 11
            inbox = Inbox()
            ch = await open_channel("sctp", a1, pe.user_addresses[0][1], framing="session",
                                    on_message=inbox.on_message)
            ch.send(encode_message(CookieEcho(b"echo 1 41 400")), ppid=PPID.ASAP)
            # (a PPID whose low byte is >= 0x80 overflows in pysctp: see the report)
            ch.send(b"over sctp", ppid=0x1234)
            assert await inbox.next(lambda p, m: p == 0x1234) == b"over sctp"
            cookie = await inbox.next(lambda p, m: isinstance(m, Cookie))
            assert cookie.cookie == b"echo 1 42 409"
            ch.close()
        finally:
            await pe.stop()
            await reg.stop()
        assert events[-1] == Deregistered(pe.identifier, True)
    run(main())


def test_h_bit_keep_alive_on_a_new_sctp_association_moves_the_home():
    a1, _, a3 = extra_addresses()[:3]

    async def main() -> None:
        reg = await started_registrar(a3)
        host, port = reg.address("sctp")
        pe = PoolElement(HANDLE, registrars=[f"{host}:{port}"], discovery=False,
                         transport="sctp", addresses=[a1], registration_interval=1.0)
        try:
            await pe.start()
            first = pe.home_registrar
            # a registrar taking over opens an association to the PE's ASAP endpoint
            inbox = Inbox()
            asap_host, asap_port = pe.asap_addresses[0]
            fake = await open_channel("sctp", asap_host, asap_port,
                                      on_message=inbox.on_message, on_close=inbox.on_close)
            changed = asyncio.ensure_future(pe.wait_for(HomeRegistrarChanged, 10))
            fake.send(encode_message(EndpointKeepAlive(0xBEEF0002, HANDLE, pe.identifier,
                                                       home=True)))
            ack = await inbox.next(lambda p, m: isinstance(m, EndpointKeepAliveAck))
            assert ack == EndpointKeepAliveAck(HANDLE, pe.identifier)
            assert await changed == HomeRegistrarChanged(0xBEEF0002, first.server_id)
            assert pe.home_registrar.server_id == 0xBEEF0002
            assert pe.home_registrar.port == fake.local[1]
            # deregistration goes to the new home
            stop = asyncio.ensure_future(pe.stop())
            dereg = await inbox.next(lambda p, m: isinstance(m, Deregistration))
            assert dereg.identifier == pe.identifier
            fake.send(encode_message(DeregistrationResponse(HANDLE, pe.identifier)))
            await stop
            fake.close()
        finally:
            await pe.stop()
            await reg.stop()
    run(main())
