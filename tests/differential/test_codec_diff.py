"""Differential tests: the compiled codec against its pure-Python twin.

Random valid messages must encode to the same bytes in both, decode to the
same objects in both (encode with one, decode with the other), and re-encode
to the same bytes.  Random and mutated byte strings must give the same result
in both: the same message, or the same exception class at the same offset.

``RSERPOOL_HYPOTHESIS_EXAMPLES`` raises the example counts for long runs.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rserpool.errors import WireError
from rserpool.wire import _codec_py as py

from conftest import implementations
from strategies import messages, rebuild

EXAMPLES = int(os.environ.get("RSERPOOL_HYPOTHESIS_EXAMPLES", "400"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

_c_param = implementations("tlv", "rserpool.wire._codec_py")[0]


@pytest.fixture(params=[_c_param])
def c(request):
    mod = request.param
    # MissingExtension fails the test on first attribute access.
    assert mod.IMPLEMENTATION == "compiled"
    return mod


def outcome(mod, data: bytes, protocol: str):
    try:
        return ("ok", mod.decode_message(data, protocol).to_dict())
    except WireError as exc:
        return ("error", type(exc).__name__, exc.offset)


@SETTINGS
@given(msg=messages)
def test_valid_messages_agree(c, msg):
    data = py.encode_message(msg)
    c_msg = rebuild(msg, c)
    assert c.encode_message(c_msg) == data
    c_back = c.decode_message(data, msg.PROTOCOL)
    py_back = py.decode_message(data, msg.PROTOCOL)
    assert c_back.to_dict() == py_back.to_dict()
    assert c.encode_message(c_back) == data
    assert py.encode_message(py_back) == data
    assert c_back == rebuild(py_back, c)


@st.composite
def mutated(draw):
    msg = draw(messages)
    data = bytearray(py.encode_message(msg))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "length"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        else:  # rewrite a 16-bit length-like field at a 4-aligned TLV start
            j = (i & ~3) + 2
            if j + 2 <= len(data):
                data[j:j + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(data), draw(st.sampled_from([msg.PROTOCOL, "asap", "enrp"]))


@SETTINGS
@given(case=mutated())
def test_mutated_bytes_agree(c, case):
    data, protocol = case
    assert outcome(c, data, protocol) == outcome(py, data, protocol)


@SETTINGS
@given(data=st.binary(max_size=200), protocol=st.sampled_from(["asap", "enrp"]))
def test_random_bytes_agree(c, data, protocol):
    assert outcome(c, data, protocol) == outcome(py, data, protocol)


@SETTINGS
@given(data=st.binary(max_size=120))
def test_random_parameters_agree(c, data):
    def run(mod):
        try:
            r = mod.decode_parameter(data)
            return ("ok", r.to_dict() if hasattr(r, "to_dict") else
                    [x.to_dict() for x in r] if isinstance(r, tuple) else r)
        except WireError as exc:
            return ("error", type(exc).__name__, exc.offset)
    assert run(c) == run(py)


@SETTINGS
@given(msg=messages)
def test_hot_path_agrees(c, msg):
    data = py.encode_message(msg)
    def run(mod):
        try:
            return ("ok", mod.parse_handle_resolution(data))
        except WireError as exc:
            return ("error", type(exc).__name__, exc.offset)
    assert run(c) == run(py)
