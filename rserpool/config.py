"""Configuration of a registrar: every timer, limit and address of
``shared/spec/RSERPOOL.md`` section 8, with its default in one place.

No I/O except :func:`load_registrar_config`, which reads a TOML file.  Times
are float seconds (RSPLIB's values in ms are converted here); each field is
checked when the object is built, against RSPLIB's CLI ranges where it has one.

A TOML file uses the field names, e.g.::

    asap_port = 3863
    keep_alive_interval = 5.0
    announce = false
    peers = ["10.0.0.2:9901"]
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from typing import Any

from .constants import ASAP_ANNOUNCE_GROUP, ASAP_PORT, ENRP_PORT, ENRP_PRESENCE_GROUP
from .errors import ConfigError

__all__ = ["RegistrarConfig", "load_registrar_config", "parse_peer"]


def parse_peer(text: str) -> tuple[str | None, str, int]:
    """A static ENRP peer ``[sctp:|tcp:]ADDRESS:PORT`` (IPv6 in brackets) as
    ``(transport or None, address, port)``.

    :raises ConfigError: not of that form.
    """
    transport: str | None = None
    rest = text
    for kind in ("sctp:", "tcp:"):
        if text.startswith(kind):
            transport, rest = kind[:-1], text[len(kind):]
            break
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"peer {text!r} is not [sctp:|tcp:]ADDRESS:PORT")
    return transport, host, int(port)


def _range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], not {value!r}")


@dataclass(frozen=True)
class RegistrarConfig:
    """A registrar's settings (defaults: RSPLIB 3.5.10's, except the fixed
    IANA ports instead of RSPLIB's random ones)."""

    #: Registrar ID; 0 picks a random non-zero ID at start.
    registrar_id: int = 0
    #: Local addresses for ASAP and ENRP (several: SCTP multi-homing).
    addresses: tuple[str, ...] = ("0.0.0.0",)
    asap_port: int = ASAP_PORT
    enrp_port: int = ENRP_PORT
    #: Serve ENRP (peer registrars, ``rserpool hsdump``); off: a lone registrar.
    enrp: bool = True
    #: Transports to serve ASAP on: any of "sctp", "tcp".
    transports: tuple[str, ...] = ("sctp", "tcp")
    #: Static ENRP peers as "address:port".
    peers: tuple[str, ...] = ()
    keep_alive_interval: float = 5.0          # 0.3 .. 300 s
    keep_alive_timeout: float = 5.0           # 0.1 .. 60 s
    announce: bool = True
    announce_group: str = ASAP_ANNOUNCE_GROUP
    announce_port: int = ASAP_PORT
    announce_interval: float = 1.0            # 0.1 .. 60 s, randomised ±12.5 %
    announce_ttl: int = 30                    # 1 .. 255
    presence_multicast: bool = True
    presence_group: str = ENRP_PRESENCE_GROUP
    presence_port: int = ENRP_PORT
    peer_heartbeat_interval: float = 2.444444  # 1 .. 300 s, randomised ±12.5 %
    peer_max_time_last_heard: float = 5.0     # 1 .. 300 s
    peer_max_time_no_response: float = 5.0    # 1 .. 60 s
    mentor_discovery_timeout: float = 5.0     # 1 .. 60 s
    takeover_expiry_interval: float = 5.0     # 1 .. 60 s
    max_bad_pe_reports: int = 3               # >= 1
    max_hres_items: int = 3                   # 1 .. 128
    max_increment: int = 0                    # 0: each policy's default
    max_elements_per_ht_request: int = 128    # 1 .. 1024 (and 1,400-byte messages)
    max_handle_length: int = 32
    autoclose_timeout: float = 300.0          # >= 5 s
    distance_step: int = 50                   # ms, >= 1
    max_message_size: int = 65535
    #: Idle time after which a TCP/SCTP peer that sends nothing is dropped.
    idle_timeout: float = 300.0

    def __post_init__(self) -> None:
        _range("registrar_id", self.registrar_id, 0, 0xFFFFFFFF)
        for name in ("asap_port", "enrp_port", "announce_port", "presence_port"):
            _range(name, getattr(self, name), 0, 65535)
        _range("keep_alive_interval", self.keep_alive_interval, 0.3, 300)
        _range("keep_alive_timeout", self.keep_alive_timeout, 0.1, 60)
        _range("announce_interval", self.announce_interval, 0.1, 60)
        _range("announce_ttl", self.announce_ttl, 1, 255)
        _range("peer_heartbeat_interval", self.peer_heartbeat_interval, 1, 300)
        _range("peer_max_time_last_heard", self.peer_max_time_last_heard, 1, 300)
        _range("peer_max_time_no_response", self.peer_max_time_no_response, 1, 60)
        _range("mentor_discovery_timeout", self.mentor_discovery_timeout, 1, 60)
        _range("takeover_expiry_interval", self.takeover_expiry_interval, 1, 60)
        _range("max_bad_pe_reports", self.max_bad_pe_reports, 1, 1 << 31)
        _range("max_hres_items", self.max_hres_items, 1, 128)
        _range("max_increment", self.max_increment, 0, 1 << 31)
        _range("max_elements_per_ht_request", self.max_elements_per_ht_request, 1, 1024)
        _range("max_handle_length", self.max_handle_length, 1, 65531)
        _range("autoclose_timeout", self.autoclose_timeout, 5, 1 << 31)
        _range("distance_step", self.distance_step, 1, 1 << 31)
        _range("max_message_size", self.max_message_size, 4, 65535)
        _range("idle_timeout", self.idle_timeout, 1, 1 << 31)
        for name in ("addresses", "transports", "peers"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.addresses:
            raise ConfigError("at least one local address is needed")
        unknown = set(self.transports) - {"sctp", "tcp"}
        if unknown or not self.transports:
            raise ConfigError(f"transports must be a non-empty subset of sctp, tcp, not "
                              f"{list(self.transports)!r}")
        for peer in self.peers:
            parse_peer(peer)
        for name in ("announce", "presence_multicast", "enrp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false")

    def replace(self, **changes: Any) -> "RegistrarConfig":
        """A copy with some settings changed (checked again)."""
        return dataclasses.replace(self, **changes)


def load_registrar_config(path: str, **overrides: Any) -> RegistrarConfig:
    """Read a TOML file of :class:`RegistrarConfig` fields; ``overrides``
    (e.g. from command-line options) win.  Unknown keys are an error."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    known = {f.name for f in fields(RegistrarConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    for key in ("addresses", "transports", "peers"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(data[key])
    data.update(overrides)
    return RegistrarConfig(**data)
