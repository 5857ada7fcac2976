"""Property tests of the native frame codec (and the request table), on both cores."""

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pomelo_rpc import core as core_pkg
from pomelo_rpc.errors import FrameError

CORES = core_pkg.available()
ALL = [core_pkg.select(name) for name in CORES]

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(params=CORES, ids=CORES)
def core(request):
    return core_pkg.select(request.param)


def need_two():
    if len(ALL) < 2:
        pytest.skip(f"only the {CORES} core(s) can be loaded here")


# msgpack-representable values; NaN is left out so that == compares messages
scalars = (st.none() | st.booleans()
           | st.integers(min_value=-2**63, max_value=2**64 - 1)
           | st.floats(allow_nan=False)
           | st.text(max_size=30) | st.binary(max_size=30))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.dictionaries(st.text(max_size=8) | st.integers(-1000, 1000), inner, max_size=5)),
    max_leaves=20,
)
rids = st.integers(min_value=0, max_value=2**31 - 1)
names = st.text(min_size=1, max_size=12)


@st.composite
def messages(draw):
    """(encoder name, args, decoded message) for any message kind."""
    kind = draw(st.sampled_from(["req", "req_name", "resp", "err", "hello", "ping", "pong", "raw",
                                 "notify", "notify_name"]))
    rid = draw(rids)
    if kind in ("notify", "notify_name"):
        args = draw(st.lists(values, max_size=4))
        trace = draw(st.none() | st.text(max_size=20))
        budget = draw(st.none() | st.integers(0, 2**31))
        tail = [trace, budget] if budget is not None else [] if trace is None else [trace]
        if kind == "notify":
            mid = draw(st.integers(0, 1000))
            return "encode_notify", (mid, args, trace, budget), [10, None, mid, args, *tail]
        ns, svc, m = draw(names), draw(names), draw(names)
        return ("encode_notify_by_name", (ns, svc, m, args, trace, budget),
                [11, None, ns, svc, m, args, *tail])
    if kind == "req":
        mid, args = draw(st.integers(0, 1000)), draw(st.lists(values, max_size=4))
        return "encode_request", (rid, mid, args), [1, rid, mid, args]
    if kind == "req_name":
        ns, svc, m, args = draw(names), draw(names), draw(names), draw(st.lists(values, max_size=4))
        return "encode_request_by_name", (rid, ns, svc, m, args), [2, rid, ns, svc, m, args]
    if kind == "resp":
        v = draw(values)
        return "encode_response", (rid, v), [3, rid, v]
    if kind == "err":
        t, msg, stack = draw(names), draw(st.text(max_size=40)), draw(st.none() | st.text(max_size=40))
        fields = draw(st.none() | st.fixed_dictionaries({"code": st.integers(-2**63, 2**63 - 1) | names}))
        if fields is None:
            return "encode_error", (rid, t, msg, stack), [4, rid, [t, msg, stack]]
        return "encode_error", (rid, t, msg, stack, fields), [4, rid, [t, msg, stack, fields]]
    if kind == "hello":
        table = draw(st.lists(st.lists(names, min_size=3, max_size=3), max_size=4))
        return "encode_hello", (table,), [0, 1, table]
    if kind == "ping":
        return "PING_FRAME", None, [5]
    if kind == "pong":
        return "PONG_FRAME", None, [6]
    body = draw(st.lists(values, max_size=4))
    return "encode", (body,), body


def encode_with(frames_mod, item):
    name, args, _ = item
    attr = getattr(frames_mod, name)
    return attr if args is None else attr(*args)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


@SETTINGS
@given(items=st.lists(messages(), min_size=1, max_size=8), cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_any_split_decodes_to_the_same_messages(items, cuts):
    expected = [m for _, _, m in items]
    for c in ALL:
        stream = b"".join(encode_with(c.frames, it) for it in items)
        whole = c.frames.FrameDecoder()
        assert whole.feed(stream) == expected
        assert whole.buffered == 0
        dec = c.frames.FrameDecoder()
        out = []
        for chunk in split(stream, cuts):
            out += dec.feed(chunk)
        assert out == expected
        assert dec.buffered == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(messages(), min_size=1, max_size=4))
def test_one_byte_at_a_time(items):
    expected = [m for _, _, m in items]
    for c in ALL:
        stream = b"".join(encode_with(c.frames, it) for it in items)
        dec = c.frames.FrameDecoder()
        out = []
        for i in range(len(stream)):
            out += dec.feed(stream[i:i + 1])
            assert dec.buffered == len(stream[:i + 1]) - sum(map(len, map(c.frames.encode, out)))
        assert out == expected


@SETTINGS
@given(items=st.lists(messages(), min_size=1, max_size=5))
def test_encoding_is_identical_in_both_cores(items):
    need_two()
    encoded = [[encode_with(c.frames, it) for it in items] for c in ALL]
    assert encoded[0] == encoded[1]
    for frame in encoded[0]:
        body = frame[4:]
        assert frame[:4] == struct.pack(">I", len(body))


# ---------------------------------------------------------------- hostile input

@st.composite
def hostile_streams(draw):
    """Byte streams a broken or hostile peer might send: mostly well-framed garbage."""
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        how = draw(st.sampled_from(["garbage-body", "valid", "mutated", "raw", "bad-length"]))
        if how == "garbage-body":
            body = draw(st.binary(max_size=40))
            parts.append(struct.pack(">I", len(body)) + body)
        elif how == "valid":
            parts.append(core_pkg.select("python").frames.encode(draw(st.lists(values, max_size=3))))
        elif how == "mutated":
            frame = bytearray(core_pkg.select("python").frames.encode(draw(st.lists(values, min_size=1, max_size=3))))
            for _ in range(draw(st.integers(1, 3))):
                i = draw(st.integers(0, len(frame) - 1))
                frame[i] = draw(st.integers(0, 255))
            parts.append(bytes(frame))
        elif how == "bad-length":
            body = draw(st.binary(max_size=40))
            parts.append(struct.pack(">I", draw(st.integers(0, 2**32 - 1))) + body)
        else:
            parts.append(draw(st.binary(max_size=40)))
    return b"".join(parts)


def run_decoder(frames_mod, chunks, max_size):
    """Feed ``chunks``; return (messages, error?) where only FrameError is allowed."""
    dec = frames_mod.FrameDecoder(max_size=max_size)
    out = []
    for chunk in chunks:
        try:
            out += dec.feed(chunk)
        except FrameError:
            return repr(out), True, None
        assert dec.buffered <= sum(map(len, chunks))
    return repr(out), False, dec.buffered


max_sizes = st.sampled_from([8 * 1024 * 1024, 1024, 40, 16, 1])


@SETTINGS
@given(data=hostile_streams(), cuts=st.lists(st.integers(0, 10**6), max_size=8), max_size=max_sizes)
def test_hostile_input_raises_only_frameerror_and_cores_agree(data, cuts, max_size):
    chunks = split(data, cuts)
    results = [run_decoder(c.frames, chunks, max_size) for c in ALL]  # any other exception fails here
    if len(results) == 2:
        assert results[0] == results[1]


@SETTINGS
@given(data=st.binary(max_size=300), max_size=max_sizes)
def test_random_bytes_raise_only_frameerror_and_cores_agree(data, max_size):
    results = [run_decoder(c.frames, [data], max_size) for c in ALL]
    if len(results) == 2:
        assert results[0] == results[1]


@SETTINGS
@given(data=hostile_streams(), cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_split_does_not_change_whether_a_stream_is_valid(data, cuts):
    for c in ALL:
        whole_msgs, whole_err, _ = run_decoder(c.frames, [data], 1024)
        split_msgs, split_err, _ = run_decoder(c.frames, split(data, cuts), 1024)
        assert whole_err == split_err
        if not whole_err:
            assert whole_msgs == split_msgs


# ---------------------------------------------------------------- request table

class Fut:
    def __init__(self):
        self.value = None
        self._done = False

    def done(self):
        return self._done

    def set_result(self, v):
        self._done, self.value = True, v

    def set_exception(self, e):
        self._done, self.value = True, e


deadlines = st.floats(min_value=0, max_value=1e7, allow_nan=False)
resolutions = st.sampled_from([0.005, 0.001, 0.01, 0.05, 0.25, 1.0])


@SETTINGS
@given(ds=st.lists(deadlines, min_size=1, max_size=30), res=resolutions,
       nows=st.lists(deadlines, max_size=10))
@example(ds=[20.0], res=0.005, nows=[20.005])       # 20.005 / 0.005 rounds below 4001
@example(ds=[1.0, 0.015], res=0.005, nows=[0.015, 1.005])
def test_expiry_never_early_always_by_deadline_plus_resolution(ds, res, nows):
    for c in ALL:
        table = c.pending.PendingTable(res)
        left = {}
        for i, d in enumerate(ds):
            table.add(Fut(), d, i)
            left[i] = d
        for now in sorted(nows):
            for _, i in table.expire(now):
                assert ds[i] <= now, (ds[i], now, res)       # never early
                del left[i]
            for d in left.values():
                assert now < d + res, (d, now, res)          # always by d + resolution
        for i, d in sorted(left.items(), key=lambda kv: kv[1]):
            if i in left:
                for _, j in table.expire(d + res):
                    assert ds[j] <= d + res
                    del left[j]
                assert i not in left, (d, res)
        assert len(table) == 0 and table.slot_count == 0


@SETTINGS
@given(ds=st.lists(deadlines, min_size=1, max_size=20), res=resolutions)
@example(ds=[1.0], res=0.005)
def test_expire_at_next_deadline_always_has_work(ds, res):
    for c in ALL:
        table = c.pending.PendingTable(res)
        for d in ds:
            table.add(Fut(), d)
        while len(table):
            nd = table.next_deadline()
            assert nd is not None
            assert table.expire(nd), (nd, res)
        assert table.next_deadline() is None


# the encoders that pack their fields without building the message list give the
# frame of that list, byte for byte, on both cores (fallbacks to msgpack included)
odd_values = values | st.tuples(values, values) | st.integers(min_value=2**64, max_value=2**70)


@SETTINGS
@given(rid=rids, mid=st.integers(0, 1000), args=st.lists(odd_values, max_size=4),
       trace=st.none() | st.text(max_size=55), budget=st.integers(0, 2**40),
       result=odd_values)
def test_direct_encoders_give_the_frame_of_the_message_list(rid, mid, args, trace, budget,
                                                            result):
    for c in ALL:
        f = c.frames
        try:
            expected = f.encode([f.REQ_ID, rid, mid, args, trace, budget])
        except Exception as exc:
            with pytest.raises(type(exc)):
                f.encode_request_budget(rid, mid, args, trace, budget)
        else:
            assert f.encode_request_budget(rid, mid, args, trace, budget) == expected
        try:
            expected = f.encode([f.RESP_OK, rid, result])
        except Exception as exc:
            with pytest.raises(type(exc)):
                f.encode_response(rid, result)
        else:
            assert f.encode_response(rid, result) == expected
