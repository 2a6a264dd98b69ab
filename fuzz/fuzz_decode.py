"""Coverage-guided differential fuzzing of the compiled decoder (atheris).

Every input goes through the compiled codec (``rserpool._c.tlv``) and the
pure-Python twin: both must give the same message or the same exception class
at the same offset.  Coverage comes from the twin's Python code (atheris
instruments it), which steers the inputs into every branch of the format; the
compiled decoder sees the same inputs.  A decoded message must re-encode and
decode again to the same object; anything but a ``WireError`` is a crash.

    make fuzz                                   # FUZZ_RUNS=200000 by default
    .venv/bin/python fuzz/fuzz_decode.py -max_total_time=600 fuzz/corpus/fuzz_decode
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["rserpool"]):
    from rserpool.errors import WireError
    from rserpool.wire import _codec_py as py
    from rserpool.wire.stream import StreamFramer

from rserpool._c import tlv as c  # noqa: E402  (compiled: not instrumentable)

PROTOCOLS = ("asap", "enrp")


def outcome(mod, data: bytes, protocol: str):
    try:
        msg = mod.decode_message(data, protocol)
    except WireError as exc:
        return ("error", type(exc).__name__, exc.offset), None
    return ("ok", msg.to_dict()), msg


def test_one(data: bytes) -> None:
    if not data:
        return
    protocol = PROTOCOLS[data[0] & 1]
    body = data[1:]
    got_c, msg_c = outcome(c, body, protocol)
    got_py, _ = outcome(py, body, protocol)
    if got_c != got_py:
        raise AssertionError(f"compiled {got_c!r} != pure {got_py!r} for {body.hex()}")
    if msg_c is not None:
        again = c.encode_message(msg_c)
        if c.decode_message(again, protocol) != msg_c:
            raise AssertionError(f"re-encode changed the message: {body.hex()}")
    try:
        hp_c = ("ok", c.parse_handle_resolution(body))
    except WireError as exc:
        hp_c = ("error", type(exc).__name__, exc.offset)
    try:
        hp_py = ("ok", py.parse_handle_resolution(body))
    except WireError as exc:
        hp_py = ("error", type(exc).__name__, exc.offset)
    if hp_c != hp_py:
        raise AssertionError(f"hot path: compiled {hp_c!r} != pure {hp_py!r}: {body.hex()}")
    framer = StreamFramer()
    try:
        for i in range(0, len(body), 7):
            framer.feed(body[i:i + 7])
    except WireError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
