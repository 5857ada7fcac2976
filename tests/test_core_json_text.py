"""A call's frame with its arguments written in it (``encode_call_json`` of ``core.mqtt``
and ``core.pinus_tcp``): exactly ``encode_call`` of the codec's text of the arguments,
in both cores, whatever the arguments (the compiled core writes the usual small
values itself, the others go to the codec, errors included)."""

from __future__ import annotations

import enum
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo_rpc import core as core_pkg
from pomelo_rpc.mqtt_json import RawResults, json_codec

HEAD = b',"msg":{"namespace":"user","serverType":"bench","service":"s","method":"m","args":'


class Level(enum.IntEnum):
    LOW = 1


class Text(str):
    pass


def _frame(module, codec, args, rid=7, budget=None):
    """``module.encode_call_json`` of ``args``: the frame, or the type of its error."""
    try:
        return module.encode_call_json(rid, budget, HEAD, args, codec)
    except (TypeError, ValueError) as exc:
        return type(exc)


def _want(module, codec, args, rid=7, budget=None):
    """``module.encode_call`` of the codec's text of ``args`` (or the type of its error)."""
    try:
        text = codec.dumps_bytes(args)
    except (TypeError, ValueError) as exc:
        return type(exc)
    return module.encode_call(rid, budget, HEAD, text)


def _check(args, rid=7, budget=None):
    frames = []
    for name in core_pkg.available():
        core = core_pkg.select(name)
        codec = json_codec(core)
        for module in (core.mqtt, core.pinus_tcp):
            got = _frame(module, codec, args, rid, budget)
            assert got == _want(module, codec, args, rid, budget), (name, module.__name__)
            frames.append(got)
    # the same bytes in both cores (mqtt's, then pinus-tcp's, per core)
    assert frames[0::2] == [frames[0]] * len(frames[0::2])
    assert frames[1::2] == [frames[1]] * len(frames[1::2])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.sampled_from(["", "x" * 10, "é", "\ud800", "a\"b", "\x1f",
                                               "\x7f", "日本", "🎮"]),
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=5) | st.sampled_from(["\ud800", "a\\"]),
                                     inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(args=st.lists(json_values, max_size=4), rid=st.integers(1, 2**40),
       budget=st.none() | st.integers(0, 10**9))
def test_the_frame_of_any_arguments_is_the_codecs(args, rid, budget):
    """Any JSON-like arguments (floats of every range, NaN, big integers, strings with
    escapes, lone surrogates, non-ASCII text, nesting): the same frame, or the same
    error, as ``encode_call`` of the codec's text, in both cores."""
    _check(args, rid, budget)


@pytest.mark.parametrize("args", [
    [{"a": "run", "b": "x" * 10, "time": 1765062000.1234567}],
    [1, -5, 0, 2**63 - 1, -2**63, 2**63, 2**64, True, False, None],
    [1e-5, 1e-4, 0.0, -0.0, 1e16, 1.7976931348623157e308, float("inf"), float("nan")],
    [{1: "int key"}], [{"a": {"b": {"c": []}}}], [(), {}, []],
    [Level.LOW], [Text("sub")], [RawResults("[1]")], [b"bytes"], [{"k": object()}],
    ["x" * 100_000], [["deep"]] * 3,
])
def test_the_usual_and_the_unusual_arguments(args):
    """The benchmark's payload, integers at and past 64 bits, floats orjson writes as
    json does and the others, non-str keys, subclasses, values JSON cannot carry, a
    text larger than the writer keeps: the codec's frame or error."""
    _check(args)


def test_deep_and_cyclic_arguments_go_to_the_codec():
    """Nesting past the writer's depth is the codec's text; a cycle the codec's error."""
    deep: list = []
    for _ in range(100):
        deep = [deep]
    _check([deep])
    cyclic: list = []
    cyclic.append(cyclic)
    _check([cyclic])


def test_a_float_is_written_as_json_writes_it():
    """The text in the frame is json's for a float (orjson's, where it is the same)."""
    for name in core_pkg.available():
        core = core_pkg.select(name)
        frame = core.pinus_tcp.encode_call_json(1, None, HEAD, [0.1, 1e16, 1e-4],
                                                json_codec(core))
        assert frame.endswith(json.dumps([0.1, 1e16, 1e-4], separators=(",", ":")).encode()
                              + b"}}")


def _float_cases() -> list[float]:
    """Floats where the shortest text is hard to get right: around each power of ten
    and of two the writer handles (the narrower gap below a power of two), halves."""
    import math
    out = []
    for k in range(-4, 17):
        x = 10.0 ** k
        out += [x, math.nextafter(x, 0), math.nextafter(x, math.inf), x / 3, x * 0.7]
    for e in range(-14, 54):
        x = 2.0 ** e
        out += [x, math.nextafter(x, 0), math.nextafter(x, math.inf), x * 1.5]
    return out + [0.1, 0.2, 0.30000000000000004, 1765062000.1234567, 9999999999999998.0,
                  0.9999999999999999, 1234567890123456.5, 5e-324, -0.0, 0.0]


@settings(max_examples=2000, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False)
       | st.floats(min_value=1e-4, max_value=1e16) | st.sampled_from(_float_cases()))
def test_every_float_is_json_s_text(value):
    """A float in the arguments: json's text (``repr``), in both cores, the compiled
    core's own shortest-digits writer included (and its negative)."""
    for x in (value, -value):
        _check([x])
        want = json.dumps([x], separators=(",", ":")).encode()
        for name in core_pkg.available():
            core = core_pkg.select(name)
            frame = core.pinus_tcp.encode_call_json(1, None, HEAD, [x], json_codec(core))
            assert frame.endswith(want + b"}}"), (name, x)
