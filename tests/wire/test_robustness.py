"""Hostile input: stream framing, memory, and exceptions that must not leak."""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from rserpool import errors
from rserpool.wire import StreamFramer

pytestmark = pytest.mark.accel("tlv", "rserpool.wire._codec_py")

HR = bytes.fromhex("05000010 0009000c 4563686f506f6f6c".replace(" ", ""))
HR3 = bytes.fromhex("05000018 0009000c 4563686f506f6f6c 803f0008 00000003".replace(" ", ""))


def test_framer_whole_then_byte_at_a_time_then_trailing():
    stream = HR + HR3 + HR
    assert StreamFramer().feed(stream) == [HR, HR3, HR]
    f = StreamFramer()
    out = []
    for i in range(len(stream)):
        out += f.feed(stream[i:i + 1])
    assert out == [HR, HR3, HR] and f.pending == 0
    f = StreamFramer()
    assert f.feed(stream + HR[:5]) == [HR, HR3, HR]
    assert f.pending == 5
    assert f.feed(HR[5:]) == [HR]


def test_framer_header_announcing_64k_then_silence():
    f = StreamFramer()
    assert f.feed(b"\x05\x00\xff\xff" + b"\0" * 100) == []
    assert f.pending == 104  # waits; the registrar's idle timer closes the link


def test_framer_limit_and_broken_length():
    with pytest.raises(errors.OversizeError):
        StreamFramer(max_size=1024).feed(b"\x05\x00\x10\x00")
    f = StreamFramer()
    with pytest.raises(errors.LengthError) as ei:
        f.feed(b"\x05\x00\x00\x02")
    assert ei.value.offset == 2
    with pytest.raises(errors.LengthError):  # stays broken
        f.feed(HR)
    # messages before the broken header are delivered first
    f = StreamFramer()
    assert f.feed(HR + HR + b"\x05\x00\x00\x01") == [HR, HR]
    with pytest.raises(errors.LengthError) as ei:
        f.feed(b"")
    assert ei.value.offset == 34


def _mutations(seed: int, count: int):
    rnd = random.Random(seed)
    bases = [HR, HR3, bytes.fromhex(
        "01000038 0009000c 4563686f506f6f6c 000a0028 12345678 00000000 00015f90 "
        "00040010 13880001 00010008 0a000001 00080008 00000001".replace(" ", ""))]
    for _ in range(count):
        data = bytearray(rnd.choice(bases))
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(data))
            op = rnd.random()
            if op < 0.5:
                data[i] = rnd.randrange(256)
            elif op < 0.75:
                del data[i:]
                if not data:
                    data = bytearray(b"\x05")
            else:
                data[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 6)))
        yield bytes(data), rnd.choice(("asap", "enrp"))


def test_only_wire_errors_escape(accel_impl):
    for data, proto in _mutations(1, 20000):
        try:
            accel_impl.decode_message(data, proto)
        except errors.WireError:
            pass


def test_no_memory_growth_on_bad_input(accel_impl):
    cases = list(_mutations(2, 5000))

    def run():
        for data, proto in cases:
            try:
                accel_impl.decode_message(data, proto)
            except errors.WireError:
                pass
            try:
                accel_impl.parse_handle_resolution(data)
            except errors.WireError:
                pass

    run()  # warm caches (interned strings, enum lookups)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(4):
            run()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024, f"grew by {after - before} bytes over 40,000 decodes"
