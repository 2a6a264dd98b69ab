"""A "PE swarm": many pool elements in one process, registered with one
registrar and kept alive (test and load tool; does I/O).

Usage::

    python -m rserpool.testing.swarm --registrar 10.0.0.1:3863 --pool SwarmPool \\
        --count 5000 --connections 50 [--transport tcp|sctp] [--local-address ADDR] \\
        [--policy rr] [--weight W] [--load FRACTION] [--registration-life SECONDS] \\
        [--id-base INT] [--window 32] [--status-interval SECONDS] [--no-control]

For the multi-registrar (ENRP) tests in network namespaces and User-Mode
Linux, and for load measurements: one process that stands for thousands of
PEs, so that a test can watch a registrar take the PEs of another one over.

What it does
------------
* The PEs get the identifiers ``id_base + 0 .. id_base + count - 1``
  (``--id-base``; default: a random base whose whole range lies in
  1..0xFFFFFFFF), one pool (``--pool``), one policy (``--policy``, any name
  :func:`rserpool.protocol.asap_element.policy_type_from_name` takes, with
  ``--weight`` / ``--load`` where the policy has such values).
* They are registered over ``--connections`` associations to the registrar
  (TCP connections or SCTP associations; association ``g`` of ``M``
  registers the PEs ``g * count // M`` .. ``(g + 1) * count // M - 1``),
  with ``--window`` registrations outstanding per association.
* User transport: a TCP transport parameter on the local address with a
  **dummy** port, ``--user-port + i % 40000`` for PE ``i`` (nothing listens
  there: pool users of a swarm cannot connect).  The local address is
  ``--local-address``, else the address the kernel routes to the registrar
  from (so the registrar's user-address filter, digest 6.3 step 2, keeps it).
* ASAP endpoint, so that another registrar (a takeover, digest 6.14) can reach
  the PEs:

  - TCP: each association has its own ASAP listener (a TCP server socket on
    the local address, ephemeral port); the Registration's Pool Element
    names it in its ASAP transport parameter (``TcpTransport(listener port,
    [local address])``), as :mod:`rserpool.aio.element` does; the registrar
    keeps it (``AsapRegistrar._asap_transport``) and hands it on by ENRP.
  - SCTP: each association is opened from its own one-to-many SCTP socket
    (:func:`rserpool.aio.transport.start_endpoint`, bound to
    ``--local-address`` or the wildcard, ephemeral port); the registrar
    records the association's peer addresses and that port, and a new
    registrar's association to them arrives on the same socket.

* Every Endpoint Keep-Alive for a PE the swarm considers alive is answered
  with an Endpoint Keep-Alive Ack (pool handle, PE ID) over the association it
  came on, whichever association that is (the registration association, or
  one a registrar opened to an ASAP endpoint).  A keep-alive without a PE ID
  (RFC form) is acknowledged once per alive PE whose home is that association.
* A keep-alive with the H bit (digest 6.6) on an association other than the
  PE's home association, or from a server ID other than its known home, moves
  the PE's home there: the association becomes the one its deregistration
  goes over and the server ID its home registrar.  Any peer may claim a PE
  (a test tool: no check that it is a known registrar).  The first move of
  each PE is recorded (PE ID, new home ID, monotonic and wall time).  The
  home registrar ID of a PE that has not moved is learned from the first
  keep-alive on its registration association.
* No re-registration (use a registration life longer than the test:
  ``--registration-life``, seconds, default 3600).
* A lost association is counted (``lost_associations``) and the swarm keeps
  running: PEs whose home it was live on only if a registrar takes them over.

Control (stdin, one command per line, one JSON line answered on stdout)
----------------------------------------------------------------------
Once every registration is confirmed the swarm prints::

    {"ready": true, "count": N, "seconds": S, "ids": [FIRST, LAST],
     "associations": M, "transport": "tcp", "local_address": "...",
     "asap_ports": [port per association], "pid": PID}

(``seconds`` from the first connect to the last Registration Response).  If
a registration is refused, an association fails or ``--register-timeout``
passes first it prints ``{"ready": false, "error": "..."}`` and exits 1.

Commands (PE IDs are JSON integers; registrar IDs are strings ``"0x%08x"``;
``t`` fields are ``time.monotonic()`` of this process and the ``*_wall``
twins ``time.time()``, so a test in another namespace can compare with its
own clock; null when it did not happen):

``stats``
    ``{"registered": confirmed registrations, "alive": PEs neither
    deregistered nor dropped, "deregistered": n, "dropped": n,
    "acked_keepalives": acks sent, "ignored_keepalives": keep-alives for
    deregistered or dropped PEs (not answered), "unknown_keepalives": for
    PE IDs not ours, "home_keepalives": keep-alives with the H bit,
    "homes": {"0x%08x": alive PEs with that home registrar, "unknown": alive
    PEs whose home has not sent a keep-alive yet}, "homeless": alive PEs whose
    home association is closed, "rehomed": PEs whose home moved at least once,
    "rehome_events": all home moves, "first_rehome": t, "last_rehome": t,
    "first_rehome_wall": t, "last_rehome_wall": t, "associations": open
    associations (both directions), "inbound_associations": associations
    registrars opened to us so far, "lost_associations": associations closed
    by the peer or lost, "errors": protocol problems (see stderr),
    "now": t, "now_wall": t}``
``ids``
    ``{"alive": [PE IDs still considered registered]}``
``dereg K``
    Deregisters the K lowest alive PEs, each over its current home
    association, waits for the responses (``--request-timeout``) and answers
    ``{"deregistered": [IDs]}`` (the ones confirmed; when some were not,
    also ``"failed": {"ID as a decimal string": "reason"}``; those stay alive;
    a PE whose home association is closed fails at once).
``drop K``
    The K lowest alive PEs "die" silently: their keep-alives go unanswered
    from now on, so their registrar removes them by keep-alive timeout.
    ``{"dropped": [IDs]}``
``rehome-wait N TIMEOUT``
    Waits until at least N PEs have moved home (or TIMEOUT seconds) and
    answers ``stats`` plus ``"reached": true|false``.
``rehomes``
    ``{"rehomes": [[PE ID, "0x%08x" new home, t, t_wall], ...]}``: each PE's
    first home move, in order.
``fresh SECONDS``
    ``{"fresh": n, "stale": [up to 100 IDs]}``: alive PEs that did / did not
    get a keep-alive answered in the last SECONDS.
``quit``
    Exits 0 at once, deregistering nothing (the associations close, so the
    registrar drops the PEs registered over them).

Anything else gets ``{"error": "..."}``; blank lines are ignored.  End of
input on stdin acts as ``quit``; ``--no-control`` ignores stdin instead (stop
with SIGTERM).  SIGTERM and SIGINT also act as ``quit``.
``--status-interval S`` writes ``{"status": <stats>}`` every S seconds to
**stderr** (stdout carries only answers).  Log lines go to stderr too (``-v``
for more).  Exit status: 0 after ``quit`` / end of input / a signal, 1 when
the PEs could not all be registered, 2 on bad options.

In-process use (the same engine, without the control loop)::

    swarm = PeSwarm(("127.0.0.1", 3863), "SwarmPool", 1000, connections=10)
    seconds = await swarm.start()       # raises SwarmError
    swarm.stats(); swarm.drop(5); await swarm.deregister(10)
    await swarm.wait_rehomed(100, 10.0)
    swarm.close(); await swarm.wait_closed()

Efficiency: no task per PE: per-PE state lives in flat arrays indexed by
``ID - id_base``; each association's messages are handled by one callback,
and over TCP the acknowledgements to one read leave in one write
(:class:`rserpool.aio.transport.TcpChannel` batches them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from array import array
from typing import Any, Sequence

from ..constants import MAX32, POLICY_VALUE_NAMES, AsapType, PPID, TransportUse
from ..errors import ConfigError, WireError
from ..log import RateLimitedLogger
from ..protocol.asap_element import load_from_fraction, make_policy, policy_type_from_name
from ..wire import (Deregistration, EndpointKeepAliveAck, PoolElement, PoolPolicy,
                    Registration, TcpTransport, decode_message, encode_message)

__all__ = ["PeSwarm", "SwarmError", "main"]

log = logging.getLogger("rserpool.swarm")

#: PE states (one byte each in ``PeSwarm.state``)
PENDING, ALIVE, DEREGISTERING, DEREGISTERED, DROPPED = range(5)
#: States whose keep-alives are answered.
_ANSWERED = (PENDING, ALIVE, DEREGISTERING)

_KEEP_ALIVE = AsapType.ENDPOINT_KEEP_ALIVE
_REGISTRATION_RESPONSE = AsapType.REGISTRATION_RESPONSE
_DEREGISTRATION_RESPONSE = AsapType.DEREGISTRATION_RESPONSE


class SwarmError(Exception):
    """The swarm could not register its PEs."""


def _hex_id(ident: int) -> str:
    return f"0x{ident:08x}"


def _route_source(host: str, port: int) -> str | None:
    """The local address the kernel would use towards ``host`` (None: unknown)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.connect(addr)
                return str(s.getsockname()[0]).split("%", 1)[0]
        except OSError:
            continue
    return None


class _Link:
    """One association (either direction) and what the swarm knows of it."""

    __slots__ = ("swarm", "channel", "endpoint", "group", "inbound", "server_id", "first",
                 "end", "next", "outstanding", "closing")

    def __init__(self, swarm: PeSwarm, group: int, inbound: bool,
                 first: int = 0, end: int = 0) -> None:
        self.swarm = swarm
        self.channel: Any = None
        #: the ASAP endpoint of the group (TCP listener or SCTP socket)
        self.endpoint: Any = None
        self.group = group
        self.inbound = inbound
        self.server_id = 0
        # registration range of an outbound link: PE indices first..end-1
        self.first = first
        self.end = end
        self.next = first
        self.outstanding = 0
        self.closing = False

    def on_message(self, channel: Any, data: bytes, ppid: int) -> None:
        self.swarm._on_message(self, data)

    def on_close(self, channel: Any, reason: str | None) -> None:
        self.swarm._on_close(self, reason)

    def send_many(self, messages: list[bytes]) -> None:
        """Send messages; over TCP in one write."""
        ch = self.channel
        if ch is None or ch.closed or not messages:
            return
        try:
            if ch.transport == "tcp":
                ch.send(messages[0] if len(messages) == 1 else b"".join(messages))
            else:
                for m in messages:
                    ch.send(m, ppid=PPID.ASAP)
        except ConnectionError:
            pass  # its close callback tells the swarm

    def describe(self) -> str:
        ch = self.channel
        peer = f"{ch.peer[0]}:{ch.peer[1]}" if ch is not None else "?"
        return (f"{'inbound' if self.inbound else 'registration'} association "
                f"{self.group} ({ch.transport if ch else '?'} {peer})")


class PeSwarm:
    """``count`` pool elements registered with one registrar over
    ``connections`` associations (see the module docstring).

    :param registrar: ``(host, port)`` of the registrar's ASAP endpoint.
    :param pool: pool handle.
    :param transport: ``"tcp"`` or ``"sctp"``.
    :param local_address: local address of every socket (None: the address
        routed towards the registrar; SCTP sockets then bind the wildcard).
    :param policy: the PEs' policy parameter.
    :param registration_life: seconds.
    :param id_base: first PE ID (None: random, the whole range in
        1..0xFFFFFFFF).
    :param window: registrations outstanding per association.
    :param user_port: first dummy user transport port.
    """

    def __init__(self, registrar: tuple[str, int], pool: bytes | str, count: int, *,
                 connections: int = 1, transport: str = "tcp",
                 local_address: str | None = None, policy: PoolPolicy | None = None,
                 registration_life: float = 3600.0, id_base: int | None = None,
                 window: int = 32, user_port: int = 20000, connect_timeout: float = 5.0,
                 request_timeout: float = 10.0) -> None:
        if count < 1:
            raise ConfigError("count must be at least 1")
        if transport not in ("tcp", "sctp"):
            raise ConfigError(f"transport must be tcp or sctp, not {transport!r}")
        if id_base is None:
            id_base = random.randrange(1, MAX32 - count + 2)
        if not (1 <= id_base and id_base + count - 1 <= MAX32):
            raise ConfigError(f"PE IDs {id_base}..{id_base + count - 1} do not fit in "
                              f"1..0xFFFFFFFF")
        life_ms = int(round(registration_life * 1000))
        if not 1 <= life_ms <= 0x7FFFFFFF:
            raise ConfigError("registration life must be in 0.001..2147483.647 s")
        if not 1 <= user_port <= 65535:
            raise ConfigError("user port must be in 1..65535")
        self.host, self.port = registrar
        self.pool = pool.encode() if isinstance(pool, str) else bytes(pool)
        self.count = count
        self.connections = max(1, min(connections, count))
        self.transport = transport
        self.local_address = local_address
        self.policy = policy if policy is not None else make_policy("rr")
        self.life_ms = life_ms
        self.base = id_base
        self.window = max(1, window)
        self.user_port = user_port
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.user_address = ""
        # per-PE state, indexed by ID - base
        self.state = bytearray(count)
        self.home: list[_Link | None] = [None] * count
        self.home_id = array("L", bytes(array("L").itemsize * count))
        self.last_ack = array("d", bytes(8 * count))
        self.rehome_mono = array("d", bytes(8 * count))
        self._acks: list[bytes] = []
        self.rehome_log: list[tuple[int, int, float, float]] = []
        # associations
        self.links: list[_Link] = []          # outbound, one per group
        self.inbound: list[_Link] = []
        self.endpoints: list[Any] = []         # ASAP listener / SCTP socket per group
        # counters
        self.registered = 0
        self.deregistered = 0
        self.dropped = 0
        self.acked = 0
        self.ignored = 0
        self.unknown = 0
        self.home_keep_alives = 0
        self.rehomed = 0
        self.rehome_events = 0
        self.first_rehome: tuple[float, float] | None = None
        self.last_rehome: tuple[float, float] | None = None
        self.inbound_total = 0
        self.lost = 0
        self.errors = 0
        self._closing = False
        #: peer-caused warnings: once per (kind, peer address), then DEBUG
        self._noise = RateLimitedLogger(log, clock=time.monotonic)
        self._ready: asyncio.Future[None] | None = None
        self._rehome_changed: asyncio.Event | None = None
        self._dereg_pending: dict[int, str | None] = {}
        self._dereg_done: asyncio.Event | None = None

    # ------------------------------------------------------------- set-up
    async def start(self, timeout: float = 60.0) -> float:
        """Connect, bind the ASAP endpoints and register every PE; the
        seconds that took.  :raises SwarmError: something failed (whatever
        is open stays open: call :meth:`close`)."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._rehome_changed = asyncio.Event()
        self._dereg_done = asyncio.Event()
        from ..aio.transport import raise_fd_limit, sctp_available

        raise_fd_limit()
        if self.transport == "sctp" and not sctp_available():
            raise SwarmError("SCTP is not available on this host (no kernel SCTP or pysctp)")
        self.user_address = (self.local_address or _route_source(self.host, self.port)
                             or ("0.0.0.0" if ":" not in self.host else "::"))
        self._acks = [encode_message(EndpointKeepAliveAck(self.pool, self.base + i))
                      for i in range(self.count)]
        t0 = time.monotonic()
        gate = asyncio.Semaphore(64)
        m = self.connections

        async def setup(group: int) -> None:
            first, end = group * self.count // m, (group + 1) * self.count // m
            async with gate:
                await self._open_group(group, first, end)

        tasks = [loop.create_task(setup(g)) for g in range(m)]
        done, pending = await asyncio.wait(
            tasks, timeout=self.connect_timeout * (1 + m // 64) + 5.0,
            return_when=asyncio.FIRST_EXCEPTION)
        failure = next((t.exception() for t in done if t.exception() is not None), None)
        if failure is not None or pending:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            what = f"{type(failure).__name__}: {failure}" if failure is not None \
                else "timed out"
            raise SwarmError(f"cannot connect to the registrar at {self.host}:{self.port} "
                             f"({self.transport}): {what}")
        self.links.sort(key=lambda link: link.group)
        for link in self.links:
            self._send_registrations(link, self.window)
        left = max(0.1, timeout - (time.monotonic() - t0))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), left)
        except asyncio.TimeoutError:
            raise SwarmError(f"only {self.registered} of {self.count} registrations "
                             f"confirmed within {timeout:g} s") from None
        return time.monotonic() - t0

    async def _open_group(self, group: int, first: int, end: int) -> None:
        from ..aio.transport import open_channel, start_endpoint

        link = _Link(self, group, False, first, end)

        def on_inbound(channel: Any) -> None:
            self._on_inbound(group, channel)

        if self.transport == "tcp":
            link.channel = await open_channel(
                "tcp", self.host, self.port,
                local_addresses=[self.local_address] if self.local_address else (),
                timeout=self.connect_timeout, on_message=link.on_message,
                on_close=link.on_close)
            self.links.append(link)  # closed by close() from now on
            ep = await start_endpoint("tcp", [link.channel.local[0]], 0,
                                      on_channel=on_inbound)
            self.endpoints.append((group, ep))
        else:
            wildcard = "::" if ":" in self.host else "0.0.0.0"
            ep = await start_endpoint("sctp", [self.local_address or wildcard], 0,
                                      on_channel=on_inbound)
            self.endpoints.append((group, ep))
            link.channel = await ep.connect(self.host, self.port,
                                            timeout=self.connect_timeout,
                                            on_message=link.on_message,
                                            on_close=link.on_close)
            self.links.append(link)
        link.endpoint = ep

    def _asap_transport(self, link: _Link) -> Any:
        if self.transport != "tcp":
            return None  # the registrar takes the association's addresses and port
        return TcpTransport(link.endpoint.port, [link.channel.local[0]])

    def _send_registrations(self, link: _Link, k: int) -> None:
        end = min(link.next + k, link.end)
        if end <= link.next:
            return
        asap = self._asap_transport(link)
        address = self.user_address if self.transport == "sctp" else link.channel.local[0]
        out = []
        for i in range(link.next, end):
            self.home[i] = link
            pe = PoolElement(self.base + i, 0, self.life_ms,
                             TcpTransport(self.user_port + i % 40000, [address],
                                          TransportUse.DATA_PLUS_CONTROL),
                             self.policy, asap)
            out.append(encode_message(Registration(self.pool, pe)))
        link.outstanding += end - link.next
        link.next = end
        link.send_many(out)

    def _fail(self, text: str) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(SwarmError(text))

    # ------------------------------------------------------------- input
    def _on_inbound(self, group: int, channel: Any) -> None:
        if self._closing:
            channel.abort("swarm stopping")
            return
        link = _Link(self, group, True)
        link.channel = channel
        channel.on_message = link.on_message
        channel.on_close = link.on_close
        self.inbound.append(link)
        self.inbound_total += 1
        log.info("%s opened", link.describe())

    def _on_message(self, link: _Link, data: bytes) -> None:
        kind = data[0] if data else -1
        try:
            msg = decode_message(data, "asap")
        except WireError as exc:
            self.errors += 1
            self._noise.warning(("garbage", link.channel.peer[0]),
                                "%s: undecodable message: %s: %s", link.describe(), exc,
                                data[:32].hex())
            return
        if kind == _KEEP_ALIVE:
            self._on_keep_alive(link, msg)
        elif kind == _REGISTRATION_RESPONSE:
            self._on_registration_response(link, msg)
        elif kind == _DEREGISTRATION_RESPONSE:
            self._on_deregistration_response(link, msg)
        else:
            self.errors += 1
            self._noise.warning(("unexpected", link.channel.peer[0], kind),
                                "%s: unexpected %s: %s", link.describe(), type(msg).__name__,
                                msg)

    def _on_keep_alive(self, link: _Link, msg: Any) -> None:
        now = time.monotonic()
        ident = msg.identifier
        server = msg.server_id
        link.server_id = server
        if msg.home:
            self.home_keep_alives += 1
        if ident is None:  # RFC form: one ack per alive PE homed on this link
            indices = [i for i in range(self.count)
                       if self.home[i] is link and self.state[i] in _ANSWERED]
        else:
            i = ident - self.base
            if not 0 <= i < self.count:
                self.unknown += 1
                return
            if self.state[i] not in _ANSWERED:
                self.ignored += 1
                return
            indices = [i]
        acks = self._acks
        send = link.channel.send
        for i in indices:
            home = self.home[i]
            if msg.home and (home is not link or self.home_id[i] not in (0, server)):
                self._rehome(i, link, server, now)
            elif home is link and self.home_id[i] != server:
                self.home_id[i] = server
            self.last_ack[i] = now
            try:
                send(acks[i], ppid=PPID.ASAP)
            except ConnectionError:
                return
            self.acked += 1

    def _rehome(self, i: int, link: _Link, server: int, now: float) -> None:
        self.home[i] = link
        self.home_id[i] = server
        wall = time.time()
        self.rehome_events += 1
        self.last_rehome = (now, wall)
        if not self.rehome_mono[i]:
            self.rehome_mono[i] = now
            self.rehome_log.append((self.base + i, server, now, wall))
            self.rehomed += 1
            if self.first_rehome is None:
                self.first_rehome = (now, wall)
            if self._rehome_changed is not None:
                self._rehome_changed.set()

    def _on_registration_response(self, link: _Link, msg: Any) -> None:
        i = msg.identifier - self.base
        if not 0 <= i < self.count or link.inbound:
            self.errors += 1
            self._noise.warning(("registration-response", link.channel.peer[0]),
                                "%s: registration response for PE %s, not one of ours",
                                link.describe(), _hex_id(msg.identifier))
            return
        if msg.rejected or msg.error:
            causes = ", ".join(f"cause 0x{int(c.code):04x}" for c in msg.error or ())
            self._fail(f"registration of PE {_hex_id(msg.identifier)} refused: "
                       f"{causes or 'R flag'}")
            return
        if self.state[i] == PENDING:
            self.state[i] = ALIVE
            self.registered += 1
        link.outstanding -= 1
        self._send_registrations(link, 1)
        if self.registered == self.count and self._ready is not None \
                and not self._ready.done():
            self._ready.set_result(None)

    def _on_deregistration_response(self, link: _Link, msg: Any) -> None:
        ident = msg.identifier
        if ident not in self._dereg_pending:
            self.errors += 1
            self._noise.warning(("deregistration-response", link.channel.peer[0]),
                                "%s: unexpected deregistration response for PE %s",
                                link.describe(), _hex_id(ident))
            return
        if msg.error:
            self._dereg_pending[ident] = ", ".join(f"cause 0x{int(c.code):04x}"
                                                   for c in msg.error)
        else:
            self._dereg_pending[ident] = ""
        if all(v is not None for v in self._dereg_pending.values()):
            assert self._dereg_done is not None
            self._dereg_done.set()

    def _on_close(self, link: _Link, reason: str | None) -> None:
        if link.inbound and link in self.inbound:
            self.inbound.remove(link)
        if self._closing or link.closing:
            return
        self.lost += 1
        peer = link.channel.peer[0] if link.channel is not None else "?"
        self._noise.warning(("lost", link.inbound, peer), "%s lost: %s", link.describe(),
                            reason)
        if not link.inbound and (link.next < link.end or link.outstanding):
            self._fail(f"{link.describe()} closed before its registrations were confirmed: "
                       f"{reason}")
        for ident, result in self._dereg_pending.items():
            i = ident - self.base
            if result is None and self.home[i] is link:
                self._dereg_pending[ident] = f"home association lost: {reason}"
        if self._dereg_pending and all(v is not None for v in self._dereg_pending.values()):
            assert self._dereg_done is not None
            self._dereg_done.set()

    # ------------------------------------------------------------- commands
    def alive_indices(self) -> list[int]:
        return [i for i, s in enumerate(self.state) if s == ALIVE]

    def ids(self) -> list[int]:
        """IDs of the PEs still considered registered."""
        base = self.base
        return [base + i for i, s in enumerate(self.state) if s in (ALIVE, DEREGISTERING)]

    def stats(self) -> dict[str, Any]:
        homes: dict[str, int] = {}
        unknown = homeless = 0
        alive = 0
        for i, s in enumerate(self.state):
            if s not in (ALIVE, DEREGISTERING):
                continue
            alive += 1
            hid = self.home_id[i]
            if hid:
                key = _hex_id(hid)
                homes[key] = homes.get(key, 0) + 1
            else:
                unknown += 1
            home = self.home[i]
            if home is None or home.channel is None or home.channel.closed:
                homeless += 1
        if unknown:
            homes["unknown"] = unknown
        first, last = self.first_rehome, self.last_rehome
        open_links = sum(1 for link in self.links if not link.channel.closed) + \
            sum(1 for link in self.inbound if not link.channel.closed)
        return {
            "registered": self.registered, "alive": alive,
            "deregistered": self.deregistered, "dropped": self.dropped,
            "acked_keepalives": self.acked, "ignored_keepalives": self.ignored,
            "unknown_keepalives": self.unknown, "home_keepalives": self.home_keep_alives,
            "homes": homes, "homeless": homeless,
            "rehomed": self.rehomed, "rehome_events": self.rehome_events,
            "first_rehome": first[0] if first else None,
            "last_rehome": last[0] if last else None,
            "first_rehome_wall": first[1] if first else None,
            "last_rehome_wall": last[1] if last else None,
            "associations": open_links, "inbound_associations": self.inbound_total,
            "lost_associations": self.lost, "errors": self.errors,
            "now": time.monotonic(), "now_wall": time.time(),
        }

    async def deregister(self, k: int) -> dict[str, Any]:
        """Deregister the ``k`` lowest alive PEs over their home associations."""
        assert self._dereg_done is not None
        chosen = self.alive_indices()[:max(0, k)]
        failed: dict[str, str] = {}
        by_link: dict[_Link, list[bytes]] = {}
        self._dereg_pending = {}
        for i in chosen:
            ident = self.base + i
            home = self.home[i]
            if home is None or home.channel is None or home.channel.closed:
                failed[str(ident)] = "home association closed"
                continue
            self.state[i] = DEREGISTERING
            self._dereg_pending[ident] = None
            by_link.setdefault(home, []).append(
                encode_message(Deregistration(self.pool, ident)))
        self._dereg_done.clear()
        for link, messages in by_link.items():
            link.send_many(messages)
        if self._dereg_pending:
            try:
                await asyncio.wait_for(self._dereg_done.wait(), self.request_timeout)
            except asyncio.TimeoutError:
                pass
        done: list[int] = []
        for ident, result in self._dereg_pending.items():
            i = ident - self.base
            if result == "":
                self.state[i] = DEREGISTERED
                self.deregistered += 1
                done.append(ident)
            else:
                self.state[i] = ALIVE
                failed[str(ident)] = result or f"no response within {self.request_timeout:g} s"
        self._dereg_pending = {}
        answer: dict[str, Any] = {"deregistered": sorted(done)}
        if failed:
            answer["failed"] = failed
        return answer

    def drop(self, k: int) -> list[int]:
        """Stop answering keep-alives for the ``k`` lowest alive PEs."""
        chosen = self.alive_indices()[:max(0, k)]
        for i in chosen:
            self.state[i] = DROPPED
        self.dropped += len(chosen)
        return [self.base + i for i in chosen]

    async def wait_rehomed(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` PEs moved home; False after ``timeout``."""
        assert self._rehome_changed is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.rehomed < n:
            left = end - loop.time()
            if left <= 0:
                return False
            self._rehome_changed.clear()
            try:
                await asyncio.wait_for(self._rehome_changed.wait(), left)
            except asyncio.TimeoutError:
                return self.rehomed >= n
        return True

    def fresh(self, within: float) -> tuple[int, list[int]]:
        limit = time.monotonic() - within
        fresh = 0
        stale: list[int] = []
        for i, s in enumerate(self.state):
            if s not in (ALIVE, DEREGISTERING):
                continue
            if self.last_ack[i] >= limit:
                fresh += 1
            elif len(stale) < 100:
                stale.append(self.base + i)
        return fresh, stale

    def close(self) -> None:
        """Close every association and endpoint (deregisters nothing)."""
        self._closing = True
        for link in self.links + self.inbound:
            link.closing = True
            if link.channel is not None and not link.channel.closed:
                link.channel.close()
        for _, ep in self.endpoints:
            ep.close()

    async def wait_closed(self) -> None:
        for _, ep in self.endpoints:
            await ep.wait_closed()
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------
# the process

def _emit(obj: dict[str, Any], stream: Any = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    out.flush()


def _start_stdin_reader(loop: asyncio.AbstractEventLoop,
                        queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines (then None at end of input) to ``queue`` from a
    daemon thread (works whatever stdin is: pipe, file, terminal)."""
    def put(item: str | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the process is ending
            pass

    def run() -> None:
        # raw reads of fd 0: no buffered-stream lock is held by this thread
        # when the interpreter shuts down around it
        pending = b""
        while True:
            try:
                chunk = os.read(0, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                put(line.decode(errors="replace"))
        if pending.strip():
            put(pending.decode(errors="replace"))
        put(None)

    threading.Thread(target=run, name="swarm-stdin", daemon=True).start()


async def _command(swarm: PeSwarm, line: str) -> dict[str, Any] | None:
    """The answer to one control line (None: quit)."""
    words = line.split()
    cmd, args = words[0].lower(), words[1:]
    try:
        if cmd == "stats" and not args:
            return swarm.stats()
        if cmd == "ids" and not args:
            return {"alive": swarm.ids()}
        if cmd == "dereg" and len(args) == 1:
            return await swarm.deregister(int(args[0]))
        if cmd == "drop" and len(args) == 1:
            return {"dropped": swarm.drop(int(args[0]))}
        if cmd == "rehome-wait" and len(args) == 2:
            reached = await swarm.wait_rehomed(int(args[0]), float(args[1]))
            return dict(swarm.stats(), reached=reached)
        if cmd == "rehomes" and not args:
            return {"rehomes": [[ident, _hex_id(home), t, wall]
                                for ident, home, t, wall in swarm.rehome_log]}
        if cmd == "fresh" and len(args) == 1:
            n, stale = swarm.fresh(float(args[0]))
            return {"fresh": n, "stale": stale}
        if cmd == "quit" and not args:
            return None
    except ValueError as exc:
        return {"error": f"bad argument in {line.strip()!r}: {exc}"}
    return {"error": f"unknown command {line.strip()!r} (stats, ids, dereg K, drop K, "
                     f"rehome-wait N TIMEOUT, rehomes, fresh SECONDS, quit)"}


async def run(ns: argparse.Namespace, policy: PoolPolicy) -> int:
    loop = asyncio.get_running_loop()
    host, port = ns.registrar
    swarm = PeSwarm((host, port), ns.pool, ns.count, connections=ns.connections,
                    transport=ns.transport, local_address=ns.local_address, policy=policy,
                    registration_life=ns.registration_life, id_base=ns.id_base,
                    window=ns.window, user_port=ns.user_port,
                    connect_timeout=ns.connect_timeout, request_timeout=ns.request_timeout)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    if not ns.no_control:
        _start_stdin_reader(loop, queue)
    status_task: asyncio.Task[None] | None = None
    try:
        start = loop.create_task(swarm.start(ns.register_timeout))
        stopper = loop.create_task(stop.wait())
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            stopper.cancel()
            _emit({"ready": False, "error": "stopped by a signal before ready"})
            return 1
        stopper.cancel()
        try:
            seconds = start.result()
        except (SwarmError, ConfigError, OSError) as exc:
            _emit({"ready": False, "error": str(exc)})
            return 1
        _emit({"ready": True, "count": swarm.count, "seconds": round(seconds, 6),
               "ids": [swarm.base, swarm.base + swarm.count - 1],
               "associations": len(swarm.links), "transport": swarm.transport,
               "local_address": swarm.user_address,
               "asap_ports": [ep.port for _, ep in sorted(swarm.endpoints,
                                                          key=lambda e: e[0])],
               "pid": os.getpid()})
        if ns.status_interval and ns.status_interval > 0:
            async def status() -> None:
                while True:
                    await asyncio.sleep(ns.status_interval)
                    _emit({"status": swarm.stats()}, sys.stderr)
            status_task = loop.create_task(status())
        while not stop.is_set():
            getter = loop.create_task(queue.get())
            stopper = loop.create_task(stop.wait())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                break
            line = getter.result()
            if line is None:
                break
            if not line.strip():
                continue  # blank lines are no commands
            answer = await _command(swarm, line)
            if answer is None:
                break
            _emit(answer)
        return 0
    finally:
        if status_task is not None:
            status_task.cancel()
        swarm.close()
        await swarm.wait_closed()


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}")
    return host, number


def _int(text: str) -> int:
    return int(text, 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rserpool.testing.swarm",
        description="Register many pool elements with one registrar and keep them alive; "
                    "controlled by one-line commands on stdin (stats, ids, dereg K, drop K, "
                    "rehome-wait N TIMEOUT, rehomes, fresh SECONDS, quit), each answered "
                    "by one JSON line on stdout.")
    p.add_argument("--registrar", type=_hostport, required=True, metavar="HOST:PORT")
    p.add_argument("--pool", required=True, help="pool handle")
    p.add_argument("--count", type=int, required=True, help="pool elements")
    p.add_argument("--connections", type=int, default=1,
                   help="associations to the registrar, PEs spread evenly (1)")
    p.add_argument("--transport", choices=("tcp", "sctp"), default="tcp")
    p.add_argument("--local-address", help="local address of every socket (default: the "
                   "one routed to the registrar; SCTP sockets then bind the wildcard)")
    p.add_argument("--policy", default="rr", help="policy name (rr, lu, wrr, ...) (rr)")
    p.add_argument("--weight", type=_int, help="policy weight, where the policy has one")
    p.add_argument("--load", type=float, help="policy load as a fraction in [0, 1]")
    p.add_argument("--registration-life", type=float, default=3600.0,
                   help="seconds; the PEs never re-register (3600)")
    p.add_argument("--id-base", type=_int,
                   help="first PE ID, decimal or 0x-hex (default: random)")
    p.add_argument("--window", type=int, default=32,
                   help="registrations outstanding per association (32)")
    p.add_argument("--user-port", type=int, default=20000,
                   help="dummy user transport port of the first PE (+ i %% 40000) (20000)")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--register-timeout", type=float, default=60.0,
                   help="seconds for all registrations to be confirmed (60)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds to wait for deregistration responses (10)")
    p.add_argument("--status-interval", type=float, default=0.0,
                   help="write {\"status\": stats} to stderr every this many seconds (0: off)")
    p.add_argument("--no-control", action="store_true",
                   help="ignore stdin; run until SIGTERM/SIGINT")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.count < 1 or ns.connections < 1 or ns.window < 1:
        parser.error("--count, --connections and --window must be at least 1")
    try:
        ptype = policy_type_from_name(ns.policy)
        names = POLICY_VALUE_NAMES.get(ptype, ())
        values: dict[str, int] = {}
        if ns.weight is not None:
            values["weight"] = ns.weight
        if ns.load is not None:
            values["load"] = load_from_fraction(ns.load)
        if "load" in names and "load" not in values:
            values["load"] = 0
        policy = make_policy(ptype, **values)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        stream=sys.stderr, format="swarm %(levelname)s %(name)s: %(message)s",
        level=logging.WARNING if ns.verbose == 0 else
        logging.INFO if ns.verbose == 1 else logging.DEBUG)
    try:
        return asyncio.run(run(ns, policy))
    except ConfigError as exc:
        _emit({"ready": False, "error": str(exc)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
