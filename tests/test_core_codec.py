"""The msgpack body of a frame: the compiled core's own codec gives exactly the bytes,
objects and errors msgpack gives the pure-Python core, for every kind of value."""

import collections
import enum
import math
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pomelo_rpc import core as core_pkg
from pomelo_rpc.errors import FrameError

CORES = core_pkg.available()
pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="needs both cores to compare")


def both():
    return core_pkg.select("cython").frames, core_pkg.select("python").frames


def same(a, b):
    """Equality where nan equals nan and list/tuple types must match."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return "error", type(exc)


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


scalars = (st.none() | st.booleans()
           | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=300) | st.binary(max_size=300)
           | st.sampled_from([Color.RED, Text("sub"), bytearray(b"ba"), "\ud800"]))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=20) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8) | st.integers(-2**40, 2**40), inner,
                                     max_size=20)
                   | st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=4), inner,
                                                                        max_size=3))),
    max_leaves=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_encode_gives_msgpack_bytes_or_msgpack_error(value):
    fast, pure = both()
    a, b = outcome(fast.encode, [3, 1, value]), outcome(pure.encode, [3, 1, value])
    assert a == b


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_decode_of_msgpack_output_matches(value):
    try:
        body = msgpack.packb([3, 1, value], use_bin_type=True)
    except Exception:  # noqa: BLE001 - not packable: nothing to decode
        return
    fast, pure = both()
    frame = struct.pack(">I", len(body)) + body
    a = fast.FrameDecoder().feed(frame)
    b = pure.FrameDecoder().feed(frame)
    assert same(a, b)


@pytest.mark.parametrize("size", [0, 15, 16, 31, 32, 255, 256, 65535, 65536])
def test_size_boundaries_of_str_bin_array_map(size):
    fast, pure = both()
    for value in ("x" * size, b"x" * size, list(range(size)), {i: i for i in range(size)}):
        assert fast.encode([value]) == pure.encode([value])
        assert fast.FrameDecoder().feed(fast.encode([value])) == [[value]]


@pytest.mark.parametrize("size", [0, 1, 16, 17, 31, 32, 63, 64, 65])
def test_ascii_and_utf8_strings_as_values_and_keys(size):
    """A str is the same in both cores and msgpack whether all ASCII (read and written
    in place) or not, at the lengths where the compiled core changes its way."""
    fast, pure = both()
    for text in ("x" * size, "\x7f" * size, "x" * max(size - 1, 0) + "\u00e9",
                 "\u00e9" * size, "\U0001f600" * size):
        message = [3, 1, {text: text, "k": [text]}]
        frame = pure.encode(message)
        assert fast.encode(message) == frame
        decoded = fast.FrameDecoder().feed(frame)
        assert decoded == pure.FrameDecoder().feed(frame) == [message]
    bad = msgpack.packb([3, 1, "x" * size])[:-1] + b"\xff" if size else b"\x93\x03\x01\xa1\xff"
    frame = struct.pack(">I", len(bad)) + bad
    assert outcome(fast.FrameDecoder().feed, frame) == outcome(pure.FrameDecoder().feed, frame)
    assert outcome(fast.FrameDecoder().feed, frame)[0] == "error"


@pytest.mark.parametrize("n", [0, 1, 31, 32, 127, 128, 255, 256, 32767, 32768, 65535, 65536,
                               2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1])
def test_integer_boundaries(n):
    fast, pure = both()
    for v in (n, -n):
        assert outcome(fast.encode, [v]) == outcome(pure.encode, [v])
        if outcome(pure.encode, [v])[0] == "ok":
            assert fast.FrameDecoder().feed(pure.encode([v])) == [[v]]


def test_ext_float32_deep_nesting_and_bad_bodies_follow_msgpack():
    fast, pure = both()
    bodies = [msgpack.packb([msgpack.ExtType(5, b"abc")]),
              msgpack.packb([1.5], use_single_float=True),
              msgpack.packb(msgpack.Timestamp(1, 2)),
              b"\x91" * 600 + b"\xc0",               # deeper than the fast path goes
              b"\x91" * 2000 + b"\xc0",              # deeper than msgpack allows
              b"\xdd\xff\xff\xff\xff",               # an array claiming 4 G items
              b"\x81\x91\x01\x02",                   # an unhashable key
              b"\xa3\xff\xfe\xfd",                   # invalid UTF-8
              b"\xc1", b"\x92\x01", b"\x01\x02"]     # never-used byte, truncated, trailing
    for body in bodies:
        frame = struct.pack(">I", len(body)) + body
        a = outcome(fast.FrameDecoder().feed, frame)
        b = outcome(pure.FrameDecoder().feed, frame)
        assert a[0] == b[0], body[:8]
        if a[0] == "ok":
            assert a[1] == b[1]
        else:
            assert a[1] is b[1] is FrameError


def test_short_strings_decoded_again_are_the_same_strings():
    """The compiled decoder keeps the short ASCII strings it read (by their length and
    two overlapping words): strings of every cached length that differ in one byte,
    anywhere, or share their words at another length, decode as themselves in both
    cores, the first time and from the cache."""
    fast, pure = both()
    texts = []
    for n in range(1, 18):
        base = "".join(chr(97 + i % 26) for i in range(n))
        texts.append(base)
        for at in range(n):        # one byte different, at each place
            texts.append(base[:at] + "Z" + base[at + 1:])
        texts.append(base[:-1] + "\u00e9")      # not ASCII: decoded, never cached
    texts += ["abcdefgh", "abcdefghabcdefgh", "abcdabcd", "aaaa", "aaaaaaaa"]
    message = [3, 1, [texts, {t: i for i, t in enumerate(texts)}]]
    frame = pure.encode(message)
    assert fast.encode(message) == frame
    for _ in range(3):
        decoded = fast.FrameDecoder().feed(frame)
        assert decoded == pure.FrameDecoder().feed(frame) == [message]
        assert all(type(t) is str for t in decoded[0][2][0])


@pytest.mark.parametrize("core", CORES)
def test_call_fields_of_proxy_made_and_other_messages(core):
    """``call_fields``: a call message's namespace, service, method and args, whatever
    its keys' objects or order; KeyError when one is missing."""
    frames = core_pkg.select(core).frames
    args = [1, {"x": 2}]
    proxy_made = {"namespace": "user", "server_type": "area", "service": "s", "method": "m",
                  "args": args}
    assert frames.call_fields(proxy_made) == ("user", "s", "m", args)
    assert frames.call_fields(proxy_made)[3] is args
    # keys made at run time (not the interned ones), in another order, with others
    made = {"".join(["ar", "gs"]): args, "trace_id": "t", "".join(["meth", "od"]): "m",
            "".join(["serv", "ice"]): "s", "".join(["name", "space"]): "user"}
    assert frames.call_fields(made) == ("user", "s", "m", args)
    for missing in ("namespace", "service", "method", "args"):
        msg = dict(proxy_made)
        del msg[missing]
        with pytest.raises(KeyError):
            frames.call_fields(msg)
