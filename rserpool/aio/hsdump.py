"""Download a registrar's whole handlespace over ENRP (``rserpool hsdump``).

One ENRP association (TCP with the ASAP/ENRP 4-byte framing, or SCTP with
PPID 12) to the registrar's ENRP endpoint, then:

1. wait briefly for the registrar's Presence (an ENRP core sends one with the
   R flag as soon as an association comes up): it gives the registrar's ID,
   the ownership checksum of its own PEs and its Server Information;
2. *observer* mode (the default): do not answer it, stay a non-peer.
   *Peer* mode (``as_peer=True``): send a Presence of our own first (random
   sender ID, checksum 0xFFFF: we own nothing) so that a registrar that
   serves handle tables only to peers binds the association to us;
3. send Handle Table Requests (sender: a random non-zero ID; receiver: the
   registrar's ID, 0 if no Presence came), one at a time, while the
   response's M flag is set.  A response with the R flag is an error.

Typical use::

    dump = await dump_handlespace("10.0.0.1", 9901, transport="tcp", timeout=5.0)
    for handle, elements in dump.pools():
        ...
    dump.checksums()          # {home registrar ID: 16-bit ownership checksum}

``HandlespaceDump.checksums`` follows ``rserpool/handlespace/SPEC.md``
(``Handlespace.checksum``): per home registrar, the mod-2^32 sum of
:func:`~rserpool.handlespace.pe_checksum_sum` over its PEs, folded with
:func:`~rserpool.handlespace.fold_checksum`; so the value for the
registrar's own ID equals what it reports in its Presence when the dump is a
consistent copy of its table.

Nothing here is a peer registrar: requests the registrar sends us (a Handle
Table Request when it takes us for its mentor in peer mode, a List Request)
are answered with R=1 / an empty server list, and Handle Updates are ignored.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..constants import POLICY_VALUE_NAMES, PPID, policy_name
from ..errors import RSerPoolError, UnknownMessageError, WireError
from ..handlespace import fold_checksum, pe_checksum_sum
from ..protocol.asap_user import transport_name
from ..wire import (
    EnrpErrorMessage,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    ListResponse,
    Presence,
    SctpTransport,
    ServerInformation,
    decode_message,
    encode_message,
)
from .transport import open_channel

__all__ = ["DEFAULT_TIMEOUT", "EMPTY_CHECKSUM", "JSON_FORMAT", "PRESENCE_WAIT",
           "HandlespaceDump", "HandlespaceDumpError", "dump_handlespace", "element_dict"]

#: Seconds for the connection and for each response (``--timeout``).
DEFAULT_TIMEOUT = 5.0
#: At most this long (and at most half the timeout) we wait for the
#: registrar's Presence before requesting without its ID (receiver ID 0).
PRESENCE_WAIT = 1.0
#: The ownership checksum of a registrar that owns no PE.
EMPTY_CHECKSUM = 0xFFFF
#: Version of :meth:`HandlespaceDump.to_dict`'s document (``"format"`` key).
JSON_FORMAT = 1

_M32 = 0xFFFFFFFF


class HandlespaceDumpError(RSerPoolError):
    """The dump failed: no connection, a timeout, a rejected request, or a
    message that does not decode.  ``str()`` is one line for humans."""


def _hex32(value: int) -> str:
    return f"0x{value:08x}"


def _handle_json(handle: bytes) -> str:
    try:
        return handle.decode("utf-8")
    except UnicodeDecodeError:
        return handle.hex()


def _transport_dict(t: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"transport": transport_name(t), "addresses": list(t.addresses),
                         "port": t.port}
    use = getattr(t, "transport_use", None)
    if use is not None:
        d["transport_use"] = int(use)
    return d


def element_dict(pool_handle: bytes, pe: Any) -> dict[str, Any]:
    """One PE of a dump as JSON: the keys of ``rserpool resolve --json``
    (:meth:`~rserpool.protocol.asap_user.PoolElementInfo.to_dict`) plus
    ``home_registrar_hex`` and ``asap_transport`` (None when absent)."""
    ut = pe.user_transport
    pol = pe.policy
    ptype = int(pol.policy_type)
    names = POLICY_VALUE_NAMES.get(ptype, ())
    values = pol.values
    load = pol.load
    asap = pe.asap_transport
    return {
        "pool_handle": _handle_json(pool_handle), "identifier": pe.identifier,
        "identifier_hex": _hex32(pe.identifier), "transport": transport_name(ut),
        "addresses": list(ut.addresses), "port": ut.port,
        "transport_use": int(getattr(ut, "transport_use", 0)),
        "policy": policy_name(ptype), "policy_type": ptype,
        "policy_values": dict(zip(names, values)) if names else list(values),
        "load": load, "load_percent": None if load is None else 100.0 * load / _M32,
        "weight": pol.weight, "priority": pol.priority,
        "load_degradation": pol.load_degradation,
        "home_registrar": pe.home_registrar, "registration_life_ms": pe.registration_life,
        "home_registrar_hex": _hex32(pe.home_registrar),
        "asap_transport": None if asap is None else _transport_dict(asap),
    }


@dataclass(repr=False)
class HandlespaceDump:
    """What :func:`dump_handlespace` got.

    ``elements`` maps ``(pool handle, identifier)`` to the wire
    :class:`~rserpool.wire.PoolElement`, in the order the registrar sent them
    (pool order: pools by length then bytes of the handle, PEs by ID); a PE
    that came twice (the table changed during the dump) keeps its last form.
    """

    transport: str
    host: str
    port: int
    #: The registrar's ID: the Presence's sender, else the responses' sender.
    registrar_id: int = 0
    #: Ownership checksum of the last Presence received (None: none came).
    reported_checksum: int | None = None
    #: The Presence's Server Information (its ENRP endpoint), if any.
    server_info: Any = None
    #: The random sender ID we used.
    own_id: int = 0
    as_peer: bool = False
    own_children_only: bool = False
    #: Handle Table Responses received (pages).
    pages: int = 0
    #: Seconds from connecting to the final page.
    elapsed: float = 0.0
    #: UNIX time (``time.time()``) at which the final page arrived: when the
    #: snapshot was complete.
    completed_at: float = 0.0
    elements: dict[tuple[bytes, int], Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # short: a dump may hold millions of PEs
        return (f"<HandlespaceDump of 0x{self.registrar_id:08x} at {self.transport} "
                f"{self.host}:{self.port}: {len(self.elements)} PEs, {self.pages} pages>")

    # ---- views ------------------------------------------------------------------

    def pools(self) -> list[tuple[bytes, list[Any]]]:
        """``[(pool handle, [PoolElement, ...]), ...]`` in pool order (pools
        by (length, bytes) of the handle, PEs by identifier)."""
        by_pool: dict[bytes, list[Any]] = {}
        for (handle, _), pe in self.elements.items():
            by_pool.setdefault(handle, []).append(pe)
        out = []
        for handle in sorted(by_pool, key=lambda h: (len(h), h)):
            pes = by_pool[handle]
            pes.sort(key=lambda pe: pe.identifier)
            out.append((handle, pes))
        return out

    def owners(self) -> dict[int, int]:
        """``{home registrar ID: number of PEs}``, sorted by ID."""
        counts: dict[int, int] = {}
        for pe in self.elements.values():
            counts[pe.home_registrar] = counts.get(pe.home_registrar, 0) + 1
        return dict(sorted(counts.items()))

    def checksums(self) -> dict[int, int]:
        """``{home registrar ID: ownership checksum}`` computed from the
        downloaded PEs exactly as ``Handlespace.checksum(home)`` does; the
        registrar's own ID is included (0xFFFF if it owns none) once known."""
        sums: dict[int, int] = {}
        for (handle, ident), pe in self.elements.items():
            home = pe.home_registrar
            sums[home] = (sums.get(home, 0) + pe_checksum_sum(handle, ident)) & _M32
        if self.registrar_id and self.registrar_id not in sums:
            sums[self.registrar_id] = 0
        return {home: fold_checksum(s) for home, s in sorted(sums.items())}

    @property
    def checksum_matches(self) -> bool | None:
        """Whether our checksum of the registrar's own PEs equals the one it
        reported (None when no Presence came)."""
        if self.reported_checksum is None or not self.registrar_id:
            return None
        return self.checksums()[self.registrar_id] == self.reported_checksum

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (see ``docs/readme-hsdump.md``);
        ``json.dumps(dump.to_dict())`` is what :meth:`iter_json` writes."""
        pools = self.pools()
        doc = self._head(len(pools))
        doc["pools"] = [dict(self._pool_head(handle, pes),
                             elements=[element_dict(handle, pe) for pe in pes])
                        for handle, pes in pools]
        doc["checksums"] = self._checksum_docs()
        return doc

    def iter_json(self) -> Iterator[str]:
        """``json.dumps(self.to_dict())`` in pieces, one PE at a time (a
        big dump is never held as one dict or string)."""
        pools = self.pools()
        yield json.dumps(self._head(len(pools)))[:-1] + ', "pools": ['
        for i, (handle, pes) in enumerate(pools):
            yield (", " if i else "") + json.dumps(self._pool_head(handle, pes))[:-1]
            yield ', "elements": ['
            for j, pe in enumerate(pes):
                yield (", " if j else "") + json.dumps(element_dict(handle, pe))
            yield "]}"
        yield '], "checksums": ' + json.dumps(self._checksum_docs()) + "}"

    def _head(self, pool_count: int) -> dict[str, Any]:
        info = self.server_info
        reported = self.reported_checksum
        return {
            "format": JSON_FORMAT,
            "registrar": {"transport": self.transport, "host": self.host, "port": self.port},
            "registrar_id": self.registrar_id,
            "registrar_id_hex": _hex32(self.registrar_id),
            "reported_checksum": reported,
            "reported_checksum_hex": None if reported is None else f"0x{reported:04x}",
            "checksum_match": self.checksum_matches,
            "server_information": None if info is None else {
                "server_id": info.server_id, "server_id_hex": _hex32(info.server_id),
                **_transport_dict(info.transport)},
            "mode": "peer" if self.as_peer else "observer",
            "sender_id": self.own_id, "sender_id_hex": _hex32(self.own_id),
            "own_children_only": self.own_children_only,
            "pages": self.pages, "elapsed_s": round(self.elapsed, 6),
            "completed_at": round(self.completed_at, 6),
            "pool_count": pool_count, "element_count": len(self.elements),
        }

    @staticmethod
    def _pool_head(handle: bytes, pes: list[Any]) -> dict[str, Any]:
        first = pes[0]
        ptype = int(first.policy.policy_type)
        return {"pool_handle": _handle_json(handle), "pool_handle_hex": handle.hex(),
                "policy": policy_name(ptype), "policy_type": ptype,
                "transport": transport_name(first.user_transport), "element_count": len(pes)}

    def _checksum_docs(self) -> list[dict[str, Any]]:
        counts = self.owners()
        reported = self.reported_checksum
        out = []
        for home, value in self.checksums().items():
            is_reg = home == self.registrar_id
            out.append({
                "home_registrar": home, "home_registrar_hex": _hex32(home),
                "elements": counts.get(home, 0), "checksum": value,
                "checksum_hex": f"0x{value:04x}", "is_registrar": is_reg,
                "reported": reported if is_reg else None,
                "match": (value == reported) if is_reg and reported is not None else None,
            })
        return out


# ---------------------------------------------------------------------------
# the session


class _Session:
    """The message side of one dump: callbacks of the channel, and a
    one-waiter mailbox of Handle Table Responses (or the failure)."""

    def __init__(self, dump: HandlespaceDump, loop: asyncio.AbstractEventLoop) -> None:
        self.dump = dump
        self.loop = loop
        self.channel: Any = None
        self.presence = asyncio.Event()
        self._inbox: deque[Any] = deque()
        self._waiter: asyncio.Future[Any] | None = None
        self.failure: HandlespaceDumpError | None = None
        self.ignored = 0
        #: peer mode: our Presence went out
        self.presented = False

    # ---- channel callbacks --------------------------------------------------------

    def on_message(self, channel: Any, data: bytes, ppid: int) -> None:
        if self.channel is None:
            self.channel = channel  # a message before open_channel returned
        try:
            msg = decode_message(data, "enrp")
        except UnknownMessageError:
            self.ignored += 1  # an extension we do not speak: not what we asked for
            return
        except WireError as exc:
            self._fail(f"undecodable ENRP message from the registrar: {exc}")
            return
        kind = type(msg)
        if kind is HandleTableResponse:
            self._post(msg)
        elif kind is Presence:
            self._on_presence(msg)
        elif kind is EnrpErrorMessage:
            causes = ", ".join(f"0x{int(c.code):04x}" for c in msg.causes) or "none"
            self._fail(f"the registrar sent an ENRP Error (cause {causes})")
        elif kind is HandleTableRequest:
            # peer mode, the registrar takes us for its mentor: we have no table
            self._send(HandleTableResponse(self.dump.own_id, msg.sender_id, (), False, True))
        elif kind is ListRequest:
            self._send(ListResponse(self.dump.own_id, msg.sender_id, ()))
        else:
            self.ignored += 1  # Handle Updates and the like: not for us

    def on_close(self, channel: Any, reason: str | None) -> None:
        self._fail(f"the registrar closed the association ({reason or 'closed'})")

    def _on_presence(self, msg: Any) -> None:
        dump = self.dump
        if not dump.registrar_id:
            dump.registrar_id = msg.sender_id
        elif msg.sender_id != dump.registrar_id:
            self.ignored += 1
            return
        dump.reported_checksum = msg.checksum
        if msg.server_info is not None:
            dump.server_info = msg.server_info
        self.presence.set()
        if dump.as_peer and msg.reply_required:
            self.send_presence()

    # ---- sending ------------------------------------------------------------------

    def _send(self, msg: Any) -> None:
        ch = self.channel
        if ch is None or ch.closed:
            return
        try:
            ch.send(encode_message(msg), ppid=PPID.ENRP)
        except (ConnectionError, OSError) as exc:
            self._fail(f"cannot send to the registrar: {exc}")

    def send_presence(self) -> None:
        dump = self.dump
        host, port = self.channel.local
        info = ServerInformation(dump.own_id, SctpTransport(port or 1, [host or "0.0.0.0"], 0))
        self._send(Presence(dump.own_id, dump.registrar_id, EMPTY_CHECKSUM, info, False))
        self.presented = True

    def request(self) -> None:
        dump = self.dump
        self._send(HandleTableRequest(dump.own_id, dump.registrar_id, dump.own_children_only))

    # ---- the mailbox --------------------------------------------------------------

    def _post(self, item: Any) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(item)
        else:
            self._inbox.append(item)

    def _fail(self, text: str) -> None:
        if self.failure is None:
            self.failure = HandlespaceDumpError(text)
        self.presence.set()
        self._post(self.failure)

    async def next_response(self, limit: float, timeout: float) -> Any:
        """The next Handle Table Response.

        :raises HandlespaceDumpError: failure, or nothing within ``limit``
            seconds (``timeout`` is the one the message names).
        """
        if self._inbox:
            item = self._inbox.popleft()
        elif self.failure is not None:
            item = self.failure
        else:
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_later(limit, self._timed_out, waiter, timeout)
            try:
                item = await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if isinstance(item, HandlespaceDumpError):
            raise item
        return item

    @staticmethod
    def _timed_out(waiter: asyncio.Future[Any], timeout: float) -> None:
        if not waiter.done():
            waiter.set_result(HandlespaceDumpError(
                f"no Handle Table Response within {timeout:g} s"))


def _connect_error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno and exc.errno > 0:
            return os.strerror(exc.errno)  # asyncio's strerror repeats the address
        if exc.strerror:
            return exc.strerror  # e.g. a name that does not resolve (gaierror)
    return str(exc) or type(exc).__name__


async def dump_handlespace(host: str, port: int, *, transport: str = "tcp",
                           timeout: float = DEFAULT_TIMEOUT, own_children_only: bool = False,
                           as_peer: bool = False, presence_wait: float | None = None,
                           sender_id: int | None = None) -> HandlespaceDump:
    """Download the handlespace of the registrar whose ENRP endpoint is
    ``host:port`` (see the module docstring).

    :param transport: ``"tcp"`` or ``"sctp"``.
    :param timeout: seconds for the connection and for each response.
    :param own_children_only: set the request's own-children-only flag (only
        the PEs whose home the registrar is).
    :param as_peer: send a Presence first (peer mode).
    :param presence_wait: seconds to wait for the registrar's Presence
        (default ``min(PRESENCE_WAIT, timeout / 2)``).
    :param sender_id: our ENRP server ID (default: random, non-zero).
    :raises HandlespaceDumpError: no connection, a timeout, R=1, bad input.
    :raises ValueError: bad arguments.
    """
    if transport not in ("tcp", "sctp"):
        raise ValueError(f"transport must be 'tcp' or 'sctp', not {transport!r}")
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    if sender_id is None:
        sender_id = random.SystemRandom().randint(1, _M32)
    if not 0 < sender_id <= _M32:
        raise ValueError("sender_id must be in [1, 0xFFFFFFFF]")
    loop = asyncio.get_running_loop()
    start = loop.time()
    dump = HandlespaceDump(transport, host, port, own_id=sender_id, as_peer=as_peer,
                           own_children_only=own_children_only)
    session = _Session(dump, loop)
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        channel = await open_channel(transport, host, port, framing="asap", timeout=timeout,
                                     on_message=session.on_message,
                                     on_close=session.on_close)
    except (OSError, ImportError) as exc:  # ConnectionError, TimeoutError are OSErrors
        raise HandlespaceDumpError(f"cannot connect to {where} over {transport}: "
                                   f"{_connect_error_text(exc)}") from None
    session.channel = channel
    # The first page must come within `timeout` of the connection, the
    # Presence wait included; every later page within `timeout` of its request.
    first_deadline = loop.time() + timeout
    try:
        wait = min(PRESENCE_WAIT, timeout / 2) if presence_wait is None else presence_wait
        if wait > 0 and not session.presence.is_set():
            try:
                await asyncio.wait_for(session.presence.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if session.failure is not None:
            raise session.failure
        if as_peer and not session.presented:
            session.send_presence()
        elements = dump.elements
        limit = max(first_deadline - loop.time(), 0.001)
        while True:
            session.request()
            msg = await session.next_response(limit, timeout)
            limit = timeout
            if msg.rejected:
                hint = "" if as_peer else " (try --as-peer)"
                raise HandlespaceDumpError(
                    f"the registrar rejected the Handle Table Request (R flag){hint}")
            if not dump.registrar_id:
                dump.registrar_id = msg.sender_id
            elif msg.sender_id != dump.registrar_id:
                raise HandlespaceDumpError(
                    f"Handle Table Response from {_hex32(msg.sender_id)}, but the "
                    f"registrar is {_hex32(dump.registrar_id)}")
            dump.pages += 1
            if msg.more and not msg.entries:
                raise HandlespaceDumpError("the registrar sent an empty page with the M flag "
                                           "set (no progress)")
            for handle, pes in msg.entries:
                for pe in pes:
                    elements[(handle, pe.identifier)] = pe
            if not msg.more:
                break
        dump.elapsed = loop.time() - start
        dump.completed_at = time.time()
        return dump
    finally:
        channel.on_close = None
        channel.close()

