"""Wire codec benchmarks: the compiled codec against its pure-Python twin.

pytest-benchmark (``make bench``, or
``.venv/bin/python -m pytest benches/bench_wire.py --benchmark-only``):

* ``test_decode[c|py-<Message>]`` / ``test_encode[...]``: full decode of bytes
  to typed objects, and encode of typed objects to bytes, for one realistic
  message of each of the 24 ASAP/ENRP types;
* ``test_hot_path[c|py]``: what the registrar does for every handle
  resolution: request bytes in, ``(pool handle, items)`` out, then the response
  bytes from the pool handle, the pool's encoded policy and three encoded pool
  element parameters.

Standalone (``python benches/bench_wire.py``) it measures both implementations
side by side in one run with ``timeit`` (best of 5 repeats) and prints the
table quoted in the README; ``--out FILE`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import timeit
from typing import Any

import pytest

from rserpool.constants import ErrorCause, PolicyType, UpdateAction

IMPLS = {"py": "rserpool.wire._codec_py", "c": "rserpool._c.tlv"}


def load(kind: str) -> Any:
    return importlib.import_module(IMPLS[kind])


def sample_messages(w: Any) -> dict[str, tuple[str, Any]]:
    """One realistic message per type, named by class."""
    user = w.SctpTransport(30000, ["10.255.0.100"], 1)
    asap = w.SctpTransport(40000, ["10.255.0.100"], 0)
    lu = w.PoolPolicy(PolicyType.LEAST_USED, [0x4CCCCCCC])
    pe = w.PoolElement(0x12345678, 0, 90000, user, lu)
    full = [w.PoolElement(0x1000 + i, 0x11111111, 90000,
                          w.SctpTransport(30000 + i, [f"10.255.0.{i + 1}"], 1), lu, asap)
            for i in range(10)]
    si = w.ServerInformation(0x11111111, w.SctpTransport(9901, ["10.255.0.1"]))
    err = [w.Cause(ErrorCause.UNKNOWN_POOL_HANDLE)]
    msgs = [
        ("asap", w.Registration(b"EchoPool", pe)),
        ("asap", w.Deregistration(b"EchoPool", 0x12345678)),
        ("asap", w.RegistrationResponse(b"EchoPool", 0x12345678)),
        ("asap", w.DeregistrationResponse(b"EchoPool", 0x12345678)),
        ("asap", w.HandleResolution(b"EchoPool", 3)),
        ("asap", w.HandleResolutionResponse(b"EchoPool", lu, [p.replace(asap_transport=None)
                                                             for p in full[:3]])),
        ("asap", w.EndpointKeepAlive(0x11111111, b"EchoPool", 0x12345678, True)),
        ("asap", w.EndpointKeepAliveAck(b"EchoPool", 0x12345678)),
        ("asap", w.EndpointUnreachable(b"EchoPool", 0x12345678)),
        ("asap", w.ServerAnnounce(0x11111111, [w.SctpTransport(3863, ["10.255.0.1"])])),
        ("asap", w.Cookie(b"session-state" * 4)),
        ("asap", w.CookieEcho(b"session-state" * 4)),
        ("asap", w.BusinessCard(b"EchoPool", lu, full[:2])),
        ("asap", w.AsapErrorMessage(err)),
        ("enrp", w.Presence(0x11111111, 0x22222222, 0x29A5, si, True)),
        ("enrp", w.HandleTableRequest(0x11111111, 0x22222222, True)),
        ("enrp", w.HandleTableResponse(0x11111111, 0x22222222, [(b"EchoPool", full)], True)),
        ("enrp", w.HandleUpdate(0x11111111, 0x22222222, UpdateAction.ADD_PE, b"EchoPool",
                                full[0])),
        ("enrp", w.ListRequest(0x11111111, 0x22222222)),
        ("enrp", w.ListResponse(0x11111111, 0x22222222, [si, si.replace(server_id=3)])),
        ("enrp", w.InitTakeover(0x11111111, 0x22222222, 0x33333333)),
        ("enrp", w.InitTakeoverAck(0x22222222, 0x11111111, 0x33333333)),
        ("enrp", w.TakeoverServer(0x11111111, 0x22222222, 0x33333333)),
        ("enrp", w.EnrpErrorMessage(0x11111111, 0x22222222, err)),
    ]
    return {type(m).__name__: (p, m) for p, m in msgs}


def hot_path_inputs(w: Any) -> tuple[bytes, bytes, list[bytes]]:
    request = w.encode_message(w.HandleResolution(b"EchoPool", 3))
    lu = w.PoolPolicy(PolicyType.LEAST_USED, [0])
    pes = [w.encode_parameter(w.PoolElement(
        0x1000 + i, 0x11111111, 90000, w.SctpTransport(30000, [f"10.0.0.{i}"], 1), lu))
        for i in range(3)]
    return request, w.encode_parameter(lu), pes


def hot_path(w: Any) -> Any:
    request, policy, pes = hot_path_inputs(w)
    parse = w.parse_handle_resolution
    build = w.build_handle_resolution_response

    def run() -> bytes:
        handle, _items = parse(request)
        return build(handle, policy, pes)
    return run


NAMES = list(sample_messages(load("py")))


@pytest.fixture(params=["c", "py"])
def impl(request: Any) -> Any:
    return load(request.param)


@pytest.mark.parametrize("name", NAMES)
def test_decode(benchmark: Any, impl: Any, name: str) -> None:
    """Bytes to typed objects (decode_message) for one message type."""
    proto, msg = sample_messages(impl)[name]
    data = impl.encode_message(msg)
    result = benchmark(impl.decode_message, data, proto)
    assert result == msg


@pytest.mark.parametrize("name", NAMES)
def test_encode(benchmark: Any, impl: Any, name: str) -> None:
    """Typed objects to bytes (encode_message) for one message type."""
    proto, msg = sample_messages(impl)[name]
    data = benchmark(impl.encode_message, msg)
    assert impl.decode_message(data, proto) == msg


def test_hot_path(benchmark: Any, impl: Any) -> None:
    """Handle resolution request bytes -> response bytes (3 pre-encoded PEs)."""
    data = benchmark(hot_path(impl))
    assert impl.decode_message(data, "asap").pool_handle == b"EchoPool"


# ---------------------------------------------------------------------------
# standalone side-by-side table

def _per_call(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def table() -> str:
    py, c = load("py"), load("c")
    rows = []
    total = {"dec": [0.0, 0.0], "enc": [0.0, 0.0]}
    for name in NAMES:
        proto, mp = sample_messages(py)[name]
        _, mc = sample_messages(c)[name]
        data = py.encode_message(mp)
        times = {}
        for kind, w, m in (("py", py, mp), ("c", c, mc)):
            times[("dec", kind)] = _per_call(lambda: w.decode_message(data, proto), 2000)
            times[("enc", kind)] = _per_call(lambda: w.encode_message(m), 2000)
        for op in ("dec", "enc"):
            total[op][0] += times[(op, "py")]
            total[op][1] += times[(op, "c")]
        rows.append(f"| {name} | {len(data)} | {times[('dec', 'py')] * 1e6:.2f} | "
                    f"{times[('dec', 'c')] * 1e6:.2f} | "
                    f"{times[('dec', 'py')] / times[('dec', 'c')]:.1f}x | "
                    f"{times[('enc', 'py')] * 1e6:.2f} | {times[('enc', 'c')] * 1e6:.2f} | "
                    f"{times[('enc', 'py')] / times[('enc', 'c')]:.1f}x |")
    hp_py = _per_call(hot_path(py), 20000)
    hp_c = _per_call(hot_path(c), 200000)
    head = [
        f"# rserpool wire codec, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}; best of 5, per call",
        "",
        "| message | bytes | decode py µs | decode c µs | ratio | encode py µs | "
        "encode c µs | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tail = [
        f"| **all 24 (sum)** | | {total['dec'][0] * 1e6:.1f} | {total['dec'][1] * 1e6:.1f} | "
        f"{total['dec'][0] / total['dec'][1]:.1f}x | {total['enc'][0] * 1e6:.1f} | "
        f"{total['enc'][1] * 1e6:.1f} | {total['enc'][0] / total['enc'][1]:.1f}x |",
        "",
        f"Hot path (parse Handle Resolution + build response with 3 encoded PEs): "
        f"compiled {hp_c * 1e9:.0f} ns, pure {hp_py * 1e9:.0f} ns "
        f"({hp_py / hp_c:.0f}x)",
    ]
    return "\n".join(head + rows + tail) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the table to this file")
    ns = parser.parse_args(argv)
    text = table()
    sys.stdout.write(text)
    if ns.out:
        with open(ns.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
