"""Demo services for pool elements (like RSPLIB's ``rspserver`` services).

Each module defines a :class:`~rserpool.aio.element.SessionHandler` subclass;
its class (or a ``functools.partial`` of it) is the ``service`` argument of
:class:`~rserpool.aio.element.PoolElement`.  Payload formats are in each
module's docstring; all are plain ASCII so that ``rserpool pu`` can show them.

=========  ===========================================================
echo       every message back unchanged; Cookie ``echo 1 <messages> <bytes>``
discard    drops everything
daytime    the local time as text, at connect and for every message
chargen    RFC 864's rotating 72-character lines, as fast as the PU reads
pingpong   ``PING <n> [data]`` -> ``PONG <n> <count> [data]``; Cookie
           ``pingpong 1 <count>``
=========  ===========================================================

Cookies (ASAP Cookie, PPID 11) carry a session's state to the PU, which echoes
the latest one to the next PE after a failover (digest 6.16); the services
that keep state restore it from the Cookie Echo.  With a ``secret`` the cookie
gets an HMAC-SHA256 tag (:mod:`rserpool.services.cookies`) and a cookie with a
wrong tag is ignored.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["SERVICES", "service_factory"]

#: Service name -> "module:class".
SERVICES = {
    "echo": "rserpool.services.echo:EchoService",
    "discard": "rserpool.services.discard:DiscardService",
    "daytime": "rserpool.services.daytime:DaytimeService",
    "chargen": "rserpool.services.chargen:ChargenService",
    "pingpong": "rserpool.services.pingpong:PingPongService",
}


def service_factory(name: str, **options: Any) -> Callable[[], Any]:
    """A ``service`` callable for :class:`~rserpool.aio.element.PoolElement`:
    the named service's handler class with ``options`` (keyword arguments of
    its constructor)."""
    import functools
    import importlib

    try:
        target = SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; one of: {', '.join(SERVICES)}") from None
    module, _, cls = target.partition(":")
    handler = getattr(importlib.import_module(module), cls)
    return functools.partial(handler, **options) if options else handler
