"""Hypothesis strategies for every ASAP/ENRP message and parameter.

Objects are built with the pure twin's classes; :func:`rebuild` converts
them to the same objects of another implementation.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from rserpool.constants import POLICY_VALUE_NAMES, ErrorCause, PolicyType
from rserpool.wire import _codec_py as py

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
i32 = st.integers(-0x80000000, 0x7FFFFFFF)
handles = st.binary(min_size=0, max_size=40)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
address = st.one_of(ipv4, ipv6)
addresses = st.lists(address, min_size=1, max_size=4)

sctp = st.builds(py.SctpTransport, u16, addresses, st.sampled_from([0, 1]) | u16)
tcp = st.builds(py.TcpTransport, u16, st.lists(address, min_size=1, max_size=1), u16)
udp = st.builds(py.UdpTransport, u16, st.lists(address, min_size=1, max_size=1))
udplite = st.builds(py.UdpLiteTransport, u16, st.lists(address, min_size=1, max_size=1))
dccp = st.builds(py.DccpTransport, u16, st.lists(address, min_size=1, max_size=1), u32)
transports = st.one_of(sctp, tcp, udp, udplite, dccp)


@st.composite
def policies(draw: Any) -> Any:
    if draw(st.booleans()):
        ptype = draw(st.sampled_from(list(PolicyType)))
        needed = len(POLICY_VALUE_NAMES[ptype])
        values = draw(st.lists(u32, min_size=needed, max_size=needed + 2))
    else:
        ptype = draw(u32)
        values = draw(st.lists(u32, max_size=5))
        needed = len(POLICY_VALUE_NAMES.get(ptype, ()))
        values += [0] * max(0, needed - len(values))
    return py.PoolPolicy(ptype, values)


pool_elements = st.builds(py.PoolElement, u32, u32, i32, transports, policies(),
                          st.none() | sctp)
server_infos = st.builds(py.ServerInformation, u32, sctp)
causes = st.lists(st.builds(py.Cause, st.sampled_from(list(ErrorCause)) | u16,
                            st.binary(max_size=12)), min_size=0, max_size=3)
opt_causes = st.none() | causes
unknown = st.lists(st.builds(py.UnknownParameter, st.integers(0x8000, 0xFFFF).filter(
    lambda t: t != 0x803F), st.binary(max_size=10)), max_size=2)


def _msg(cls: Any, *args: Any) -> Any:
    return st.builds(lambda u, *a: cls(*a, unknown=u), unknown, *args)


def _hrr() -> Any:
    ok = st.builds(lambda u, ph, pol, pes: py.HandleResolutionResponse(ph, pol, pes,
                                                                       unknown=u),
                   unknown, handles, policies(), st.lists(pool_elements, max_size=4))
    err = st.builds(lambda u, ph, c: py.HandleResolutionResponse(ph, error=c, unknown=u),
                    unknown, handles, causes)
    return ok | err


asap_messages = st.one_of(
    _msg(py.Registration, handles, pool_elements),
    _msg(py.Deregistration, handles, u32),
    _msg(py.RegistrationResponse, handles, u32, opt_causes, st.booleans()),
    _msg(py.DeregistrationResponse, handles, u32, opt_causes),
    _msg(py.HandleResolution, handles, st.none() | u32),
    _hrr(),
    _msg(py.EndpointKeepAlive, u32, handles, st.none() | u32, st.booleans()),
    _msg(py.EndpointKeepAliveAck, handles, u32),
    _msg(py.EndpointUnreachable, handles, u32),
    _msg(py.ServerAnnounce, u32, st.lists(transports, max_size=3)),
    _msg(py.Cookie, st.binary(max_size=64)),
    _msg(py.CookieEcho, st.binary(max_size=64)),
    _msg(py.BusinessCard, handles, st.none() | policies(), st.lists(pool_elements, max_size=3)),
    _msg(py.AsapErrorMessage, causes),
)

enrp_messages = st.one_of(
    _msg(py.Presence, u32, u32, u16, st.none() | server_infos, st.booleans()),
    _msg(py.HandleTableRequest, u32, u32, st.booleans()),
    _msg(py.HandleTableResponse, u32, u32,
         st.lists(st.tuples(handles, st.lists(pool_elements, min_size=1, max_size=3)),
                  max_size=3),
         st.booleans(), st.booleans()),
    _msg(py.HandleUpdate, u32, u32, st.sampled_from([0, 1]) | u16, handles, pool_elements,
         st.booleans()),
    _msg(py.ListRequest, u32, u32),
    _msg(py.ListResponse, u32, u32, st.lists(server_infos, max_size=3), st.booleans()),
    _msg(py.InitTakeover, u32, u32, u32),
    _msg(py.InitTakeoverAck, u32, u32, u32),
    _msg(py.TakeoverServer, u32, u32, u32),
    _msg(py.EnrpErrorMessage, u32, u32, causes),
)

messages = st.one_of(asap_messages, enrp_messages)


def rebuild(obj: Any, mod: Any) -> Any:
    """The same object built with the classes of implementation ``mod``."""
    if isinstance(obj, tuple):
        return tuple(rebuild(v, mod) for v in obj)
    fields = getattr(type(obj), "_fields", None)
    if fields is None:
        return obj
    cls = getattr(mod, type(obj).__name__)
    return cls(**{f: rebuild(getattr(obj, f), mod) for f in fields})
