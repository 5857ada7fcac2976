"""The core's pinus tcp codec (``core.pinus_tcp``), run against both twins.

Byte layouts follow pinus-rpc 1.7.4's ``lib/util/composer.ts``; tests/test_pinus.py
runs the real Node composer against them.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pomelo_rpc import core as core_pkg
from pomelo_rpc.errors import FrameError

CORES = core_pkg.available()


@pytest.fixture(params=CORES, ids=CORES)
def pt(request):
    """The ``pinus_tcp`` module of one core."""
    return core_pkg.select(request.param).pinus_tcp


def both():
    """Both cores' pinus_tcp modules (skip unless both load)."""
    if len(CORES) < 2:
        pytest.skip(f"only the {CORES} core(s) can be loaded here")
    return [core_pkg.select(name).pinus_tcp for name in CORES]


def decode_all(pt, data, max_size=8 * 1024 * 1024):
    """Decode ``data`` in one feed, which must leave nothing buffered."""
    dec = pt.PinusDecoder(max_size)
    out = dec.feed(data)
    assert dec.buffered == 0
    return out


def decode_error(pt, data, max_size=8 * 1024 * 1024):
    """The FrameError message decoding ``data`` raises."""
    with pytest.raises(FrameError) as info:
        pt.PinusDecoder(max_size).feed(data)
    return str(info.value)


def test_names(pt):
    assert (pt.REQUEST, pt.PING, pt.PONG, pt.RESPONSE) == (0, 1, 2, 3)
    assert pt.PING_FRAME == pt.encode(pt.PING) == b"\x01\x01"
    assert pt.PONG_FRAME == pt.encode(pt.PONG) == b"\x01\x02"
    assert pt.MAX_LENGTH_BYTES == 5


def test_frame_bytes(pt):
    payload = b'{"id":1,"msg":{}}'
    assert pt.encode_request(payload) == bytes([len(payload) + 1, 0]) + payload
    assert pt.encode_response(payload) == bytes([len(payload) + 1, 3]) + payload
    assert pt.encode(7, bytearray(b"ab")) == b"\x03\x07ab"
    assert pt.encode_request(memoryview(b"xy")) == b"\x03\x00xy"
    assert decode_all(pt, pt.PING_FRAME + pt.PONG_FRAME + pt.encode_request(payload)) == [
        (pt.PING, b""), (pt.PONG, b""), (pt.REQUEST, payload)]


@pytest.mark.parametrize("length,header", [
    (1, b"\x01"), (127, b"\x7f"), (128, b"\x81\x00"), (129, b"\x81\x01"), (300, b"\x82\x2c"),
    (16383, b"\xff\x7f"), (16384, b"\x81\x80\x00"), (2097152, b"\x81\x80\x80\x00"),
])
def test_length_is_big_endian_base_128(pt, length, header):
    """composer.ts: the most significant group first, the high bit on all but the last."""
    payload = b"p" * (length - 1)
    frame = pt.encode_response(payload)
    assert frame[:len(header)] == header
    assert len(frame) == len(header) + length
    assert decode_all(pt, frame) == [(pt.RESPONSE, payload)]


def test_encoder_errors(pt):
    for kind in (-1, 256):
        with pytest.raises(FrameError):
            pt.encode(kind, b"x")
    with pytest.raises(TypeError):
        pt.encode_request("not bytes")


def test_incremental_and_buffered(pt):
    frame = pt.encode_request(b"x" * 300)          # a 2-byte length
    dec = pt.PinusDecoder()
    assert dec.feed(frame[:1]) == [] and dec.buffered == 1      # length not complete yet
    assert dec.feed(frame[1:2]) == [] and dec.buffered == 2
    assert dec.feed(frame[2:100]) == [] and dec.buffered == 100
    assert dec.feed(bytearray(frame[100:]) + frame[:3]) == [(pt.REQUEST, b"x" * 300)]
    assert dec.buffered == 3
    assert dec.feed(memoryview(frame[3:])) == [(pt.REQUEST, b"x" * 300)]
    assert dec.buffered == 0
    assert dec.feed(b"") == []


def test_pkg_size(pt):
    frame = pt.encode_response(b"x" * 99)          # length 100
    assert decode_all(pt, frame, 100) == [(pt.RESPONSE, b"x" * 99)]
    # refused as soon as the length is known, before the body arrives
    assert "exceeds pkg_size 99" in decode_error(pt, frame[:2], 99)
    # ... and as soon as the part of the length read already exceeds it
    assert "exceeds pkg_size" in decode_error(pt, b"\xff\xff", 1000)


@pytest.mark.parametrize("data,reason", [
    (b"\x80\x01\x00", "leading zero group"),
    (b"\x80", "leading zero group"),
    (b"\x01\x00" + b"\x80", "leading zero group"),       # after a good frame
    (b"\x81\x81\x81\x81\x81\x01", "longer than 5 bytes"),
    (b"\x00", "0 bytes"),
    (b"\x01\x04", "unknown pinus tcp frame type 4"),
    (b"\x03\xff{}", "unknown pinus tcp frame type 255"),
])
def test_malformed_frames(pt, data, reason):
    assert reason in decode_error(pt, data, 1 << 40)


def test_ping_or_pong_with_a_payload_keeps_it(pt):
    assert decode_all(pt, b"\x02\x01x" + b"\x02\x02y") == [(pt.PING, b"x"), (pt.PONG, b"y")]


# both cores, any split -------------------------------------------------------------

_frame = st.tuples(st.integers(0, 3), st.binary(max_size=400))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(_frame, max_size=12), cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_any_split_gives_the_same_frames_in_both_cores(specs, cuts):
    for pt in [core_pkg.select(name).pinus_tcp for name in CORES]:
        stream = b"".join(pt.encode(kind, payload) for kind, payload in specs)
        points = sorted({c % (len(stream) + 1) for c in cuts})
        dec = pt.PinusDecoder()
        got = []
        prev = 0
        for point in points + [len(stream)]:
            got += dec.feed(stream[prev:point])
            prev = point
        assert got == [(kind, payload) for kind, payload in specs], pt.__name__
        assert dec.buffered == 0
    if len(CORES) == 2:
        py, cy = (core_pkg.select(name).pinus_tcp for name in ("python", "cython"))
        assert [py.encode(k, p) for k, p in specs] == [cy.encode(k, p) for k, p in specs]


def _outcome(pt, data, max_size):
    try:
        return ("ok", pt.PinusDecoder(max_size).feed(data))
    except FrameError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64), max_size=st.integers(-1, 80))
def test_arbitrary_bytes_decode_alike_in_both_cores(data, max_size):
    py, cy = both()
    assert _outcome(py, data, max_size) == _outcome(cy, data, max_size)


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(_frame, min_size=1, max_size=5), flip=st.integers(0, 10000),
       value=st.integers(0, 255), max_size=st.sampled_from([1 << 20, 1 << 40, 50]))
def test_corrupted_streams_decode_alike_in_both_cores(specs, flip, value, max_size):
    py, cy = both()
    stream = bytearray(b"".join(py.encode(k, p) for k, p in specs))
    stream[flip % len(stream)] = value
    stream = bytes(stream)
    assert _outcome(py, stream, max_size) == _outcome(cy, stream, max_size)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(_frame, min_size=1, max_size=4))
def test_one_byte_at_a_time(specs):
    for pt in [core_pkg.select(name).pinus_tcp for name in CORES]:
        stream = b"".join(pt.encode(kind, payload) for kind, payload in specs)
        dec = pt.PinusDecoder()
        got = []
        for i in range(len(stream)):
            got += dec.feed(stream[i:i + 1])
            assert dec.buffered == i + 1 - sum(len(pt.encode(k, p)) for k, p in got)
        assert got == [(kind, payload) for kind, payload in specs]


ints64 = st.integers(-2**63, 2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(rid=ints64 | st.integers(0, 2**31), budget=st.none() | ints64 | st.integers(1, 10**6),
       head=st.binary(max_size=300), args=st.binary(max_size=20000))
def test_encode_call_is_the_request_of_its_json(rid, budget, head, args):
    """A call's frame made in one piece is the REQUEST frame of its JSON text, the
    same in both cores."""
    text = b'{"id":%d' % rid + (b"" if budget is None else b',"budget":%d' % budget)
    want = text + head + args + b"}}"
    frames = [pt.encode_call(rid, budget, head, args) for pt in both()]
    assert frames[0] == frames[1] == both()[0].encode_request(want)


def test_encode_call_refuses_what_is_not_bytes(pt):
    for head, args in ((None, b"1"), (b",", None), ("s", b"1")):
        with pytest.raises(TypeError):
            pt.encode_call(1, None, head, args)
