"""The hot core (frame codec, request-id table, dispatch), run against both twins.

Every test taking the ``core`` fixture runs once per core that can be loaded here
("cython" and "python"); the ``*_same_in_both_cores`` tests run one scenario on
both and compare the outcomes.  CI sets POMELO_RPC_REQUIRE_CYTHON=1 so that a
missing or broken compiled core fails instead of silently dropping its half.
"""

import asyncio
import contextvars
import os
import random
import struct

import msgpack
import pytest

from pomelo_rpc import core as core_pkg
from pomelo_rpc.errors import DispatchError, FrameError, RpcError

CORES = core_pkg.available()


@pytest.fixture(params=CORES, ids=CORES)
def core(request):
    """One core: a namespace with ``.frames``, ``.pending`` and ``.dispatch``."""
    return core_pkg.select(request.param)


def both_cores():
    if len(CORES) < 2:
        pytest.skip(f"only the {CORES} core(s) can be loaded here")
    return [core_pkg.select(name) for name in CORES]


def test_compiled_core_is_available_when_required():
    if os.environ.get("POMELO_RPC_REQUIRE_CYTHON", "") in ("", "0"):
        pytest.skip("POMELO_RPC_REQUIRE_CYTHON is not set")
    try:
        cy = core_pkg.select("cython")
    except ImportError as exc:
        pytest.fail(f"the compiled core cannot be imported: {exc!r}")
    assert "cython" in CORES
    # Loading is not enough: a build that lost its .pxd declarations imports fine
    # and fails on first use.
    assert cy.frames.FrameDecoder().feed(cy.frames.PING_FRAME) == [[cy.frames.PING]]
    table = cy.pending.PendingTable()
    assert table.add(Fut()) == 0
    assert len(cy.dispatch.Dispatcher([]).table) == 0


def test_cores_are_what_they_claim(core):
    assert core.name in ("cython", "python")
    modname = core.frames.__name__
    assert modname.startswith("pomelo_rpc._cy." if core.name == "cython" else "pomelo_rpc.core.")


def test_select_rejects_unknown_core():
    with pytest.raises(ValueError):
        core_pkg.select("rust")


# --------------------------------------------------------------------------- frames


def decode_all(frames_mod, data, **kw):
    dec = frames_mod.FrameDecoder(**kw)
    out = dec.feed(data)
    assert dec.buffered == 0
    return out


def reference_frame(message):
    """What the wire must carry: 4-byte big-endian length, then msgpack (bin type on)."""
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_kind_constants(core):
    f = core.frames
    assert (f.HELLO, f.REQ_ID, f.REQ_NAME, f.RESP_OK, f.RESP_ERR, f.PING, f.PONG) == (0, 1, 2, 3, 4, 5, 6)
    assert f.HEADER_SIZE == 4
    assert f.PROTOCOL_VERSION == 1


def test_header_is_4_byte_big_endian_length(core):
    f = core.frames
    assert f.PING_FRAME == b"\x00\x00\x00\x02\x91\x05"
    assert f.PONG_FRAME == b"\x00\x00\x00\x02\x91\x06"
    for size in (0, 1, 255, 256, 65535, 65536, 70000):
        frame = f.encode_response(1, b"x" * size)
        body = frame[4:]
        assert frame[:4] == struct.pack(">I", len(body))
        assert msgpack.unpackb(body) == [f.RESP_OK, 1, b"x" * size]


def test_encode_matches_reference_wire_format(core):
    f = core.frames
    cases = [
        (f.encode_request(7, 3, [1, "a"]), [f.REQ_ID, 7, 3, [1, "a"]]),
        (f.encode_request_by_name(8, "user", "calc", "add", [1, 2]), [f.REQ_NAME, 8, "user", "calc", "add", [1, 2]]),
        (f.encode_response(9, {"ok": True}), [f.RESP_OK, 9, {"ok": True}]),
        (f.encode_error(10, "KeyError", "nope", "Traceback..."), [f.RESP_ERR, 10, ["KeyError", "nope", "Traceback..."]]),
        (f.encode_hello([["user", "calc", "add"]]), [f.HELLO, f.PROTOCOL_VERSION, [["user", "calc", "add"]]]),
        (f.PING_FRAME, [f.PING]),
        (f.PONG_FRAME, [f.PONG]),
        (f.encode([f.PING]), [f.PING]),
    ]
    for frame, message in cases:
        assert type(frame) is bytes
        assert frame == reference_frame(message)
        assert decode_all(f, frame) == [message]


VALUES = [
    None, True, False, 0, 1, -1, 127, 128, -33, 2**31, -2**31, 2**63 - 1, -2**63, 2**64 - 1,
    0.0, -0.0, 1.5, -2.25, 1e300, float("inf"), float("-inf"),
    "", "plain", "héllo wörld ✓ 🍐 中文", "\x00nul",
    b"", b"\x00\xff\x80 bytes",
    [], [1, [2, [3, []]]],
    {}, {"a": {"b": [1, {"c": None}]}, "x": b"\x01"}, {1: "int key", -2: [None]},
    "long " * 10000, list(range(2000)), {str(i): i for i in range(300)},
]


def test_roundtrip_of_all_kinds_and_value_types(core):
    f = core.frames
    for value in VALUES:
        for frame, message in [
            (f.encode_request(1, 2, [value]), [f.REQ_ID, 1, 2, [value]]),
            (f.encode_request_by_name(3, "ns", "svc", "m", [value, value]), [f.REQ_NAME, 3, "ns", "svc", "m", [value, value]]),
            (f.encode_response(4, value), [f.RESP_OK, 4, value]),
            (f.encode_error(5, "T", "msg", value), [f.RESP_ERR, 5, ["T", "msg", value]]),
            (f.encode_hello([value]), [f.HELLO, 1, [value]]),
        ]:
            (got,) = decode_all(f, frame)
            assert got == message
            assert repr(got) == repr(message)  # types too: bytes stay bytes, str stays str, -0.0


def test_nan_roundtrips(core):
    f = core.frames
    (got,) = decode_all(f, f.encode_response(1, float("nan")))
    assert got[2] != got[2]


def test_tuples_encode_as_lists(core):
    f = core.frames
    assert decode_all(f, f.encode_request(1, 0, (1, (2, 3)))) == [[f.REQ_ID, 1, 0, [1, [2, 3]]]]


def test_unpackable_value_raises_typeerror_and_leaves_packer_clean(core):
    f = core.frames
    with pytest.raises(TypeError):
        f.encode_response(1, [1, 2, object()])
    # the next frame must not carry leftovers of the failed one
    assert f.encode_response(2, "ok") == reference_frame([f.RESP_OK, 2, "ok"])


def sample_stream(f):
    msgs = [
        [f.REQ_ID, 0, 1, ["a", 1]],
        [f.REQ_NAME, 1, "user", "calc", "add", [1, 2]],
        [f.RESP_OK, 2, {"k": [1.5, None, b"\x00"]}],
        [f.RESP_ERR, 3, ["E", "boom", None]],
        [f.PING],
        [f.PONG],
        [f.HELLO, 1, [["user", "calc", "add"]]],
        [f.RESP_OK, 4, "ünïcødé" * 50],
    ]
    return msgs, b"".join(f.encode(m) for m in msgs)


def test_several_frames_in_one_feed(core):
    f = core.frames
    msgs, stream = sample_stream(f)
    dec = f.FrameDecoder()
    assert dec.feed(stream) == msgs
    assert dec.buffered == 0
    assert dec.feed(b"") == []


def test_frames_split_at_every_byte_position(core):
    f = core.frames
    msgs, stream = sample_stream(f)
    for cut in range(len(stream) + 1):
        dec = f.FrameDecoder()
        first = dec.feed(stream[:cut])
        assert dec.buffered == cut - len(b"".join(f.encode(m) for m in first))
        assert first + dec.feed(stream[cut:]) == msgs, cut
        assert dec.buffered == 0


def test_frames_fed_one_byte_at_a_time(core):
    f = core.frames
    msgs, stream = sample_stream(f)
    dec = f.FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += dec.feed(stream[i:i + 1])
    assert out == msgs
    assert dec.buffered == 0


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_any_bytes_like(core, kind):
    f = core.frames
    msgs, stream = sample_stream(f)
    dec = f.FrameDecoder()
    out = []
    for i in range(0, len(stream), 7):
        out += dec.feed(kind(stream[i:i + 7]))
    assert out == msgs


def test_feed_does_not_keep_a_reference_to_callers_buffer(core):
    f = core.frames
    frame = f.encode_response(1, "x" * 100)
    dec = f.FrameDecoder()
    chunk = bytearray(frame[:50])
    assert dec.feed(chunk) == []
    chunk[:] = b"\xff" * 50   # a transport reusing its buffer
    assert dec.feed(frame[50:]) == [[f.RESP_OK, 1, "x" * 100]]


def test_large_frame_in_chunks(core):
    f = core.frames
    value = os.urandom(3 * 1024 * 1024)
    frame = f.encode_response(1, value)
    dec = f.FrameDecoder()
    out = []
    for i in range(0, len(frame), 65536):
        out += dec.feed(frame[i:i + 65536])
        if i + 65536 < len(frame):
            assert dec.buffered == i + 65536
    assert out == [[f.RESP_OK, 1, value]]
    assert dec.buffered == 0


def test_buffered_counts_held_bytes(core):
    f = core.frames
    frame = f.encode_response(1, "hello")
    dec = f.FrameDecoder()
    assert dec.buffered == 0
    assert dec.feed(frame[:2]) == []      # half a header
    assert dec.buffered == 2
    assert dec.feed(frame[2:7]) == []     # header and part of the body
    assert dec.buffered == 7
    assert dec.feed(frame[7:] + frame[:3]) == [[f.RESP_OK, 1, "hello"]]
    assert dec.buffered == 3              # the start of the next frame
    assert dec.feed(frame[3:]) == [[f.RESP_OK, 1, "hello"]]
    assert dec.buffered == 0


def test_frame_of_exactly_max_size_is_accepted(core):
    f = core.frames
    frame = f.encode_response(1, "abc")
    size = len(frame) - 4
    assert decode_all(f, frame, max_size=size) == [[f.RESP_OK, 1, "abc"]]
    with pytest.raises(FrameError):
        f.FrameDecoder(max_size=size - 1).feed(frame)


def test_oversized_frame_raises_when_header_arrives(core):
    f = core.frames
    dec = f.FrameDecoder(max_size=1000)
    assert dec.feed(b"\x00\x00") == []   # header incomplete: nothing known yet
    with pytest.raises(FrameError, match="1001"):
        dec.feed(b"\x03\xe9")            # 1001 > 1000, and no body byte has arrived


def test_oversized_frame_after_good_ones_in_same_feed(core):
    f = core.frames
    dec = f.FrameDecoder(max_size=100)
    with pytest.raises(FrameError):
        dec.feed(f.PING_FRAME + struct.pack(">I", 101))


def test_negative_max_size_accepts_nothing(core):
    f = core.frames
    with pytest.raises(FrameError):
        f.FrameDecoder(max_size=-1).feed(f.PING_FRAME)
    with pytest.raises(FrameError):
        f.FrameDecoder(max_size=0).feed(f.PING_FRAME)


def test_default_max_size_is_8_mib(core):
    f = core.frames
    with pytest.raises(FrameError):
        f.FrameDecoder().feed(struct.pack(">I", 8 * 1024 * 1024 + 1))
    assert f.FrameDecoder().feed(struct.pack(">I", 8 * 1024 * 1024)) == []
    with pytest.raises(FrameError):
        f.FrameDecoder().feed(b"\xff\xff\xff\xff")


@pytest.mark.parametrize("body", [
    b"\xc1",                              # a byte msgpack never uses
    b"\x92\x01",                          # array of 2 with 1 item
    b"\xda\x00\x10abc",                   # str of 16 with 3 bytes
    msgpack.packb([5]) + b"\x00",         # trailing bytes
    msgpack.packb([5]) + msgpack.packb([6]),  # two objects in one body
    b"",                                  # zero-length body
], ids=["reserved", "short-array", "short-str", "trailing", "two-objects", "empty"])
def test_bad_body_raises_frameerror(core, body):
    f = core.frames
    frame = struct.pack(">I", len(body)) + body
    with pytest.raises(FrameError):
        f.FrameDecoder().feed(frame)
    dec = f.FrameDecoder()   # same when it arrives in pieces, after a good frame
    dec.feed(f.PING_FRAME + frame[:2])
    with pytest.raises(FrameError):
        dec.feed(frame[2:])


def test_frameerror_is_an_rpc_and_value_error():
    assert issubclass(FrameError, RpcError)
    assert issubclass(FrameError, ValueError)
    assert issubclass(DispatchError, RpcError)


def test_non_bytes_input_is_rejected(core):
    with pytest.raises(TypeError):
        core.frames.FrameDecoder().feed("not bytes")


def test_frames_same_in_both_cores():
    cores = both_cores()
    msgs, stream = sample_stream(cores[0].frames)
    assert len({c.frames.encode(m) for m in msgs for c in cores}) == len(msgs)
    for c in cores:
        assert c.frames.FrameDecoder().feed(stream) == msgs
    # each core decodes what the other encodes
    for a in cores:
        for b in cores:
            assert b.frames.FrameDecoder().feed(b"".join(a.frames.encode(m) for m in msgs)) == msgs


# --------------------------------------------------------------------------- pending


class Fut:
    """The part of a future PendingTable uses (asyncio's contract)."""

    def __init__(self, done=False):
        self._done = done
        self.result = self.exception = None
        self.calls = 0

    def done(self):
        return self._done

    def set_result(self, value):
        if self._done:      # as asyncio's futures
            raise asyncio.InvalidStateError("invalid state")
        self._done = True
        self.calls += 1
        self.result = value

    def set_exception(self, exc):
        assert not self._done
        self._done = True
        self.calls += 1
        self.exception = exc


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_ids_start_at_zero_and_are_unique(core):
    table = core.pending.PendingTable()
    ids = [table.add(Fut()) for _ in range(1000)]
    assert ids[0] == 0
    assert len(set(ids)) == 1000
    assert len(table) == 1000
    assert all(rid in table for rid in ids)
    for rid in ids[::2]:
        assert table.resolve(rid, rid)
    more = [table.add(Fut()) for _ in range(1000)]
    assert not set(more) & set(ids[1::2])   # no id handed out twice while pending
    assert len(set(more)) == 1000


def test_resolve_sets_result_and_removes(core, loop):
    table = core.pending.PendingTable()
    fut = loop.create_future()
    rid = table.add(fut, None, "info")
    assert rid in table and len(table) == 1
    assert table.resolve(rid, {"v": 1}) is True
    assert fut.result() == {"v": 1}
    assert len(table) == 0 and rid not in table
    assert table.resolve(rid, 2) is False            # already resolved
    assert table.reject(rid, KeyError()) is False
    assert table.resolve(12345, 2) is False          # never known
    assert table.resolve("x", 2) is False
    assert fut.result() == {"v": 1}


def test_reject_sets_exception(core, loop):
    table = core.pending.PendingTable()
    fut = loop.create_future()
    rid = table.add(fut, 5.0)
    err = RuntimeError("boom")
    assert table.reject(rid, err) is True
    assert fut.exception() is err
    assert len(table) == 0
    assert table.reject(rid, err) is False
    assert table.expire(1e6) == []


def test_pop_returns_future_and_info(core):
    table = core.pending.PendingTable()
    fut = Fut()
    rid = table.add(fut, 1.0, info=("route", 1))
    assert table.pop(rid) == (fut, ("route", 1))
    assert table.pop(rid) is None
    assert fut.calls == 0
    assert table.expire(10.0) == []


def test_cancelled_future_is_not_set(core, loop):
    table = core.pending.PendingTable()
    futs = [loop.create_future() for _ in range(3)]
    rids = [table.add(f, 1.0) for f in futs]
    for f in futs:
        f.cancel()
    assert table.resolve(rids[0], 1) is True       # no InvalidStateError
    assert table.reject(rids[1], KeyError()) is True
    assert all(f.cancelled() for f in futs)
    assert len(table) == 1
    assert [e[0] for e in table.expire(2.0)] == [futs[2]]


def test_done_future_is_not_set_again(core):
    table = core.pending.PendingTable()
    fut = Fut(done=True)
    assert table.resolve(table.add(fut), 1) is True
    assert table.reject(table.add(fut), KeyError()) is True
    assert fut.calls == 0


def test_expire_returns_only_due_entries(core):
    table = core.pending.PendingTable()
    a, b, c, n = Fut(), Fut(), Fut(), Fut()
    table.add(a, 10.0, "a")
    table.add(b, 20.0, "b")
    table.add(c, 10.0, "c")
    table.add(n, None, "n")
    assert table.expire(9.99) == []
    assert table.expire(10.0 + 0.005) == [(a, "a"), (c, "c")]
    assert len(table) == 2
    assert table.expire(10.5) == []
    assert table.expire(20.0 + 0.005) == [(b, "b")]
    assert len(table) == 1 and a.calls == b.calls == 0   # expire does not touch futures
    assert table.expire(1e12) == []                     # no deadline: never expires
    assert len(table) == 1


def test_expire_returns_in_deadline_order(core):
    table = core.pending.PendingTable()
    rnd = random.Random(7)
    deadlines = [rnd.uniform(100, 200) for _ in range(500)]
    for i, d in enumerate(deadlines):
        table.add(Fut(), d, i)
    out = [info for _, info in table.expire(300.0)]
    assert sorted(out) == list(range(500))
    got = [deadlines[i] for i in out]
    # ordered by deadline, to within the 5 ms resolution
    for i, x in enumerate(got):
        assert all(x <= y + 0.005 for y in got[i + 1:])


def check_expiry_bounds(core, deadlines, res):
    """An entry with deadline d: never gone at now < d, always gone at now >= d + res."""
    for d in deadlines:
        table = core.pending.PendingTable(res) if res is not None else core.pending.PendingTable()
        r = 0.005 if res is None else res
        rid = table.add(Fut(), d)
        before = [x for x in (d - r, d - r / 2, d - 1e-9, d - abs(d) * 1e-15) if x < d]
        for now in before:
            assert table.expire(now) == [], (d, now)
            assert rid in table
        assert len(table.expire(d + r)) == 1, (d, r, table.next_deadline())
        assert len(table) == 0


def test_expiry_bounds_on_slot_boundaries(core):
    # deadlines that are multiples of the resolution, where float division rounds
    check_expiry_bounds(core, [k * 0.005 for k in range(0, 400)], None)
    check_expiry_bounds(core, [k * 0.001 for k in range(0, 400)], None)


def test_expiry_bounds_random(core):
    rnd = random.Random(12345)
    check_expiry_bounds(core, [rnd.uniform(0, 1e6) for _ in range(2000)], None)
    check_expiry_bounds(core, [rnd.uniform(0, 100) for _ in range(500)], 0.01)
    check_expiry_bounds(core, [rnd.uniform(0, 100) for _ in range(500)], 1.0)


def test_next_deadline(core):
    table = core.pending.PendingTable()
    assert table.next_deadline() is None
    table.add(Fut(), None)
    assert table.next_deadline() is None
    r1 = table.add(Fut(), 10.0)
    table.add(Fut(), 5.0)
    nd = table.next_deadline()
    assert 5.0 <= nd <= 5.0 + 0.005
    assert len(table.expire(nd)) == 1     # expire has work at next_deadline()
    nd = table.next_deadline()
    assert 10.0 <= nd <= 10.0 + 0.005
    table.resolve(r1, None)
    table.expire(nd)
    assert table.next_deadline() is None


@pytest.mark.parametrize("d", [0.015, 1.0, 12345.678, 0.3])
def test_expire_at_next_deadline_has_work(core, d):
    table = core.pending.PendingTable()
    table.add(Fut(), d)
    nd = table.next_deadline()
    assert d <= nd <= d + 0.005
    assert len(table.expire(nd)) == 1, (d, nd)


def test_slot_count_goes_to_zero(core):
    table = core.pending.PendingTable()
    rnd = random.Random(3)
    rids = [table.add(Fut(), rnd.uniform(1.0, 2.0)) for _ in range(300)]
    table.add(Fut())                     # no deadline: no slot
    assert 0 < table.slot_count <= 201
    for rid in rids[::2]:
        table.resolve(rid, None)         # resolved entries' slots go when they expire
    expired = table.expire(2.0 + 0.005)
    assert len(expired) == 150
    assert table.slot_count == 0
    assert table.next_deadline() is None
    assert len(table) == 1


def test_answered_slots_leave_before_their_time(core):
    """A connection with a few calls per loop turn (many connections): a slot whose
    calls were all answered leaves the table then, not ``timeout`` later, so the
    deadline timer waits for the one slot still holding calls, not one per turn."""
    table = core.pending.PendingTable()
    t = 0.0
    for _turn in range(2000):
        t += 0.014
        rids = [table.add(Fut(), t + 10.0) for _ in range(2)]
        for rid in rids:
            table.resolve(rid, None)
        assert table.slot_count <= 1
    late = Fut()
    rid = table.add(late, t + 10.0)
    assert table.next_deadline() == pytest.approx(t + 10.0, abs=0.006)
    assert table.expire(t + 9.9) == [] and rid in table
    assert table.expire(t + 10.006) == [(late, None)]
    assert table.slot_count == 0 and table.next_deadline() is None


def test_slot_made_again_after_it_left_still_expires(core):
    table = core.pending.PendingTable()
    a, b, c = Fut(), Fut(), Fut()
    rid_a = table.add(a, 1.0)
    table.add(b, 2.0)                    # calls now go to 2.0's slot
    table.resolve(rid_a, None)           # 1.0's slot is empty: it leaves
    assert table.slot_count == 1
    table.add(c, 1.0)                    # ... and is made again
    assert table.slot_count == 2
    assert table.expire(1.005) == [(c, None)]
    assert table.expire(2.005) == [(b, None)]
    assert table.slot_count == 0 and len(table) == 0 and table.next_deadline() is None


class _Loop:
    """The part of a loop a deadline timer uses: its time, and the timers it arms."""

    def __init__(self):
        self.now = 0.0
        self.timers = []

    def time(self):
        return self.now

    def call_at(self, when, callback):
        handle = _Handle()
        self.timers.append((when, handle))
        return handle


class _Handle:
    def cancel(self):
        pass


def test_tables_sharing_slots_expire_each_call_into_its_own_table(core):
    """The client connections of one loop share its deadline slots: many tables, each
    with a call now and then, fill one slot per 5 ms of deadlines (not one each), and
    the shared timer hands each table its own expired calls."""
    p = core.pending
    loop = _Loop()
    timer = p.loop_deadlines(loop)
    assert p.loop_deadlines(loop) is timer
    tables = [p.PendingTable() for _ in range(8)]
    got = {i: [] for i in range(8)}
    for i, table in enumerate(tables):
        assert table.share(timer.table)
        table.expired = lambda entries, i=i: got[i].extend(e.info for e in entries)
    rids = {}
    for n in range(400):            # a call every 0.1 ms, round robin over the tables
        table = tables[n % 8]
        d = 10.0 + n * 0.0001
        rids[n] = table.add(Fut(), d, n)
        timer.added(d, loop)
    assert timer.table.slot_count <= 10            # 40 ms of deadlines: 8 or 9 slots
    for n in range(0, 400, 3):      # answered: not expired
        assert tables[n % 8].resolve(rids[n], n)
    drained = tables[5].drain_entries()   # a connection closed: its calls leave
    assert sorted(e.info for e in drained) == [n for n in range(5, 400, 8) if n % 3]
    timer.expire(10.02)
    timer.expire(10.05)
    for i in range(8):
        want = [] if i == 5 else [n for n in range(i, 400, 8) if n % 3]
        assert got[i] == want, i
        assert len(tables[i]) == 0
    assert timer.table.slot_count == 0 and timer.handle is None
    # a table already holding deadlines in slots of its own keeps them
    own = p.PendingTable()
    own.add(Fut(), 1.0)
    assert own.share(timer.table) is False and own.slots is not timer.table


def test_drain(core):
    table = core.pending.PendingTable()
    futs = [Fut() for _ in range(10)]
    for i, f in enumerate(futs):
        table.add(f, 1.0 + i if i % 2 else None, i)
    out = table.drain()
    assert sorted(out, key=lambda e: e[1]) == [(f, i) for i, f in enumerate(futs)]
    assert len(table) == 0
    assert table.slot_count == 0
    assert table.next_deadline() is None
    assert table.expire(1e9) == []
    assert table.drain() == []
    assert table.resolve(0, 1) is False
    rid = table.add(Fut(), 3.0)
    assert rid in table and len(table) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_deadline_is_rejected(core, bad):
    table = core.pending.PendingTable()
    with pytest.raises((ValueError, OverflowError)):
        table.add(Fut(), bad)
    assert table.expire(1e12) == []      # nothing half-added
    assert table.slot_count == 0


def test_non_finite_now_same_in_both_cores():
    outcomes = []
    for c in both_cores():
        seen = []
        for now in (float("nan"), float("-inf"), float("inf")):
            table = c.pending.PendingTable()
            table.add(Fut(), 5.0, "x")
            try:
                seen.append([info for _, info in table.expire(now)])
            except Exception as exc:
                seen.append(type(exc).__name__)
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]


def test_far_deadline_does_not_expire_early(core):
    table = core.pending.PendingTable()
    table.add(Fut(), 1e300)
    assert table.expire(1e6) == []
    assert len(table) == 1


def pending_trace(c, seed):
    """Random add/resolve/reject/pop/expire; everything observable, as plain data."""
    rnd = random.Random(seed)
    table = c.pending.PendingTable(rnd.choice([0.005, 0.001, 0.1]))
    futs = {}
    trace = []
    now = 1000.0
    for step in range(600):
        op = rnd.random()
        if op < 0.45:
            d = None if rnd.random() < 0.2 else now + rnd.uniform(0, 0.5)
            f = Fut(done=rnd.random() < 0.05)
            rid = table.add(f, d, step)
            futs[step] = f
            trace.append(("add", rid))
        elif op < 0.6:
            rid = rnd.randrange(0, step + 2)
            trace.append(("resolve", rid, table.resolve(rid, step)))
        elif op < 0.65:
            rid = rnd.randrange(0, step + 2)
            trace.append(("reject", rid, table.reject(rid, step)))
        elif op < 0.7:
            rid = rnd.randrange(0, step + 2)
            e = table.pop(rid)
            trace.append(("pop", rid, None if e is None else e[1]))
        else:
            now += rnd.uniform(0, 0.05)
            trace.append(("expire", [info for _, info in table.expire(now)]))
        trace.append((len(table), table.slot_count, table.next_deadline()))
    trace.append(("drain", sorted(info for _, info in table.drain())))
    trace.append(sorted((k, f.result, f.exception, f.calls) for k, f in futs.items()))
    return trace


@pytest.mark.parametrize("seed", range(5))
def test_pending_same_in_both_cores(seed):
    traces = [pending_trace(c, seed) for c in both_cores()]
    assert traces[0] == traces[1]


# --------------------------------------------------------------------------- dispatch


def add(a, b):
    return a + b


def echo(x):
    return x


def opt(a, b=1, c=2):
    return [a, b, c]


def var(*args):
    return list(args)


def boom(x):
    raise KeyError(x)


def raises_dispatch_error():
    raise DispatchError("from the method")


async def double(x):
    await asyncio.sleep(0)
    return x * 2


METHODS = [
    ("user", "calc", "add", add, 2, 2, False),      # 0
    ("user", "calc", "echo", echo, 1, 1, False),    # 1
    ("user", "calc", "opt", opt, 1, 3, False),      # 2
    ("user", "calc", "var", var, 0, -1, False),     # 3
    ("user", "calc", "atleast", var, 1, -1, False),  # 4
    ("user", "misc", "boom", boom, 1, 1, False),    # 5
    ("sys", "misc", "double", double, 1, 1, True),  # 6
    ("sys", "misc", "derr", raises_dispatch_error, 0, 0, False),  # 7
]


@pytest.fixture
def disp(core):
    return core.dispatch.Dispatcher(METHODS)


def failed(core, outcome, rid, exc_type, *fragments):
    got_rid, state, exc = outcome
    assert got_rid == rid
    assert state == core.dispatch.FAILED
    assert type(exc) is exc_type, exc
    for frag in fragments:
        assert frag in str(exc), (frag, str(exc))
    return exc


def test_outcome_constants(core):
    d = core.dispatch
    assert (d.DONE, d.FAILED, d.PENDING) == (0, 1, 2)


def test_table_indexes_are_method_ids(core, disp):
    assert disp.table == [[ns, svc, name] for ns, svc, name, *_ in METHODS]
    assert len(disp) == len(METHODS)
    for i, (ns, svc, name, func, lo, hi, is_async) in enumerate(METHODS):
        m = disp.by_id(i)
        assert (m.mid, m.namespace, m.service, m.name, m.func, m.min_args, m.max_args, m.is_async) == \
            (i, ns, svc, name, func, lo, hi, is_async)
        assert m.route == f"{ns}.{svc}.{name}"
        assert disp.by_name(ns, svc, name) is m
    assert [m.mid for m in disp.methods] == list(range(len(METHODS)))


def test_table_accepts_any_iterable_and_empty(core):
    d = core.dispatch.Dispatcher(iter(METHODS[:2]))
    assert d.table == [["user", "calc", "add"], ["user", "calc", "echo"]]
    empty = core.dispatch.Dispatcher([])
    assert empty.table == [] and len(empty) == 0
    failed(core, empty.dispatch([1, 1, 0, []]), 1, DispatchError, "unknown method id 0")
    failed(core, empty.dispatch([2, 1, "a", "b", "c", []]), 1, DispatchError, "unknown namespace 'a'")


def test_dispatch_by_id_and_by_name(core, disp):
    DONE = core.dispatch.DONE
    assert disp.dispatch([1, 7, 0, [2, 3]]) == (7, DONE, 5)
    assert disp.dispatch([2, 8, "user", "calc", "add", [2, 3]]) == (8, DONE, 5)
    assert disp.dispatch([1, 0, 1, [None]]) == (0, DONE, None)
    assert disp.dispatch([1, 2**40, 1, ["x"]]) == (2**40, DONE, "x")
    assert disp.dispatch([2, 9, "user", "calc", "echo", [{"a": [1]}]]) == (9, DONE, {"a": [1]})


def test_dispatch_of_a_decoded_frame(core, disp):
    f = core.frames
    stream = f.encode_request(3, 0, [20, 22]) + f.encode_request_by_name(4, "user", "calc", "opt", [1, 2])
    msgs = f.FrameDecoder().feed(stream)
    assert [disp.dispatch(m) for m in msgs] == [(3, core.dispatch.DONE, 42), (4, core.dispatch.DONE, [1, 2, 2])]


def test_coroutine_method_returns_pending(core, disp):
    rid, state, coro = disp.dispatch([1, 5, 6, [21]])
    assert (rid, state) == (5, core.dispatch.PENDING)
    assert asyncio.iscoroutine(coro)
    lp = asyncio.new_event_loop()
    try:
        assert lp.run_until_complete(coro) == 42
    finally:
        lp.close()
    rid, state, coro = disp.dispatch([2, 6, "sys", "misc", "double", [1]])
    assert (rid, state) == (6, core.dispatch.PENDING)
    coro.close()


def test_coroutine_method_with_wrong_arity_fails_without_coroutine(core, disp):
    failed(core, disp.dispatch([1, 5, 6, []]), 5, DispatchError, "sys.misc.double takes 1 argument(s), got 0")


def test_unknown_names(core, disp):
    failed(core, disp.dispatch([2, 1, "nope", "calc", "add", []]), 1, DispatchError, "unknown namespace", "nope")
    failed(core, disp.dispatch([2, 2, "user", "nosvc", "add", []]), 2, DispatchError, "unknown service", "user.nosvc")
    exc = failed(core, disp.dispatch([2, 3, "user", "calc", "nomethod", []]), 3, DispatchError,
                 "unknown method", "user.calc.nomethod")
    assert "namespace" not in str(exc) and "service" not in str(exc)
    # a service that exists in another namespace is still unknown here
    failed(core, disp.dispatch([2, 4, "sys", "calc", "add", []]), 4, DispatchError, "unknown service sys.calc")
    with pytest.raises(DispatchError, match="unknown method user.calc.x"):
        disp.by_name("user", "calc", "x")


@pytest.mark.parametrize("mid", [len(METHODS), 99, -1, "0", 1.0, True, None, [0]])
def test_unknown_method_id(core, disp, mid):
    failed(core, disp.dispatch([1, 4, mid, [1]]), 4, DispatchError, "unknown method id", repr(mid))
    with pytest.raises(DispatchError):
        disp.by_id(mid)


@pytest.mark.parametrize("mid, args, message", [
    (1, [1, 2], "user.calc.echo takes 1 argument(s), got 2"),
    (1, [], "user.calc.echo takes 1 argument(s), got 0"),
    (0, [1], "user.calc.add takes 2 argument(s), got 1"),
    (0, [1, 2, 3], "user.calc.add takes 2 argument(s), got 3"),
    (2, [], "user.calc.opt takes 1 to 3 argument(s), got 0"),
    (2, [1, 2, 3, 4], "user.calc.opt takes 1 to 3 argument(s), got 4"),
    (4, [], "user.calc.atleast takes at least 1 argument(s), got 0"),
    (7, [1], "sys.misc.derr takes 0 argument(s), got 1"),
])
def test_wrong_argument_count(core, disp, mid, args, message):
    exc = failed(core, disp.dispatch([1, 11, mid, args]), 11, DispatchError)
    assert str(exc) == message


def test_argument_counts_in_range(core, disp):
    DONE = core.dispatch.DONE
    assert disp.dispatch([1, 1, 2, [0]]) == (1, DONE, [0, 1, 2])
    assert disp.dispatch([1, 1, 2, [0, 5]]) == (1, DONE, [0, 5, 2])
    assert disp.dispatch([1, 1, 2, [0, 5, 6]]) == (1, DONE, [0, 5, 6])
    assert disp.dispatch([1, 1, 3, []]) == (1, DONE, [])
    assert disp.dispatch([1, 1, 3, list(range(100))]) == (1, DONE, list(range(100)))
    assert disp.dispatch([1, 1, 4, [1]]) == (1, DONE, [1])
    assert disp.dispatch([1, 1, 4, [1] * 50]) == (1, DONE, [1] * 50)


@pytest.mark.parametrize("args", [(1,), {"a": 1}, None, "x", 5, b"ab"])
def test_args_not_a_list(core, disp, args):
    failed(core, disp.dispatch([1, 6, 1, args]), 6, DispatchError, "must be a list", type(args).__name__)
    failed(core, disp.dispatch([2, 6, "user", "calc", "echo", args]), 6, DispatchError, "must be a list")


def test_method_that_raises(core, disp):
    exc = failed(core, disp.dispatch([1, 12, 5, ["k"]]), 12, KeyError)
    assert exc.args == ("k",)
    exc = failed(core, disp.dispatch([1, 13, 7, []]), 13, DispatchError)
    assert str(exc) == "from the method"


@pytest.mark.parametrize("kind_msg", [
    [3, 5, 0, [1]],                       # a response kind
    [0, 5, 0, [1]],
    [1, 5, 0],                            # REQ_ID with 3 fields
    [1, 5, 0, [1], "trace", 9, "extra"],  # REQ_ID with 7 fields (5: trace id, 6: budget)
    [2, 5, "user", "calc", "echo"],       # REQ_NAME with 5 fields
    [2, 5, "user", "calc", "echo", [1], "trace", 9, "extra"],   # 9 (7: trace, 8: budget)
    ["1", 5, 0, [1]],
    [None, 5],
])
def test_malformed_request_with_rid_fails(core, disp, kind_msg):
    failed(core, disp.dispatch(kind_msg), 5, DispatchError, "malformed request")


@pytest.mark.parametrize("msg", [
    None, "abc", b"\x01", 5, {"rid": 1}, (1, 7, 0, [1]),
    [], [1], [1, "7", 0, [1]], [1, None, 0, [1]], [1, 7.0, 0, [1]], [1, True, 0, [1]],
    [2, [7], "user", "calc", "echo", [1]],
])
def test_malformed_frame_without_int_rid_raises(core, disp, msg):
    with pytest.raises(FrameError, match="malformed request frame"):
        disp.dispatch(msg)


def test_duplicate_method_raises(core):
    with pytest.raises(ValueError, match="duplicate remote method user.calc.add"):
        core.dispatch.Dispatcher(METHODS + [("user", "calc", "add", echo, 1, 1, False)])
    # same name elsewhere is fine
    core.dispatch.Dispatcher(METHODS + [("other", "calc", "add", echo, 1, 1, False)])


def dispatch_matrix():
    msgs = [
        [1, 1, 0, [1, 2]], [2, 2, "user", "calc", "add", ["a", "b"]], [1, 3, 0, [1, "x"]],
        [1, 4, 99, []], [1, 4, -1, []], [1, 4, "0", []], [1, 4, True, []], [1, 4, 1.0, [1]],
        [2, 5, "nope", "x", "y", []], [2, 5, "user", "x", "y", []], [2, 5, "user", "calc", "y", []],
        [2, 5, 1, 2, 3, []], [2, 5, ["unhashable"], "calc", "add", []],
        [1, 6, 1, [1, 2]], [1, 6, 2, []], [1, 6, 2, [1, 2, 3, 4]], [1, 6, 4, []], [1, 6, 3, []],
        [1, 7, 1, (1,)], [1, 7, 1, None], [1, 7, 1, {"a": 1}],
        [1, 8, 5, ["k"]], [1, 8, 7, []],
        [3, 9, 0, []], [1, 9, 0], [2, 9, "a"], [1.0, 9, 1, [1]], [True, 9, 1, [1]],
        None, [], [1], [1, "x"], [1, True, 0, [1, 2]], (1, 1, 0, [1, 2]), "str",
    ]
    return msgs


def dispatch_outcome(c, msg):
    d = c.dispatch.Dispatcher(METHODS)
    try:
        rid, state, out = d.dispatch(msg)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))
    if state == c.dispatch.FAILED:
        return (rid, "FAILED", type(out).__name__, str(out))
    return (rid, state, repr(out))


def test_dispatch_same_in_both_cores():
    cores = both_cores()
    for msg in dispatch_matrix():
        outcomes = [dispatch_outcome(c, msg) for c in cores]
        assert outcomes[0] == outcomes[1], msg


# coro.step: one step of a coroutine in a context -------------------------------------

_probe = contextvars.ContextVar("probe", default="outside")


class _Suspend:
    """An awaitable that yields ``token`` once, then returns what it is sent."""

    def __init__(self, token):
        self.token = token

    def __await__(self):
        return (yield self.token)


async def _returns(value):
    _probe.set("inside")
    return value


async def _suspends(token):
    _probe.set("inside")
    got = await _Suspend(token)
    return ("resumed", got, _probe.get())


async def _raises(message):
    raise LookupError(message)


def _stepped(core, coro, ctx):
    """``step``'s outcome as ``(returned, value)``."""
    out = core.coro.step(coro, ctx)
    if type(out) is core.coro.Suspended:
        return False, out.value
    return True, out


def test_step_runs_a_coroutine_to_its_return_in_the_context(core):
    ctx = contextvars.copy_context()
    assert core.coro.step(_returns(42), ctx) == 42
    assert ctx[_probe] == "inside" and _probe.get() == "outside"


def test_step_stops_where_the_coroutine_suspends_and_it_can_go_on(core):
    ctx = contextvars.copy_context()
    coro = _suspends("tok")
    out = core.coro.step(coro, ctx)
    assert type(out) is core.coro.Suspended and out.value == "tok"
    assert _probe.get() == "outside"
    with pytest.raises(StopIteration) as stop:
        ctx.run(coro.send, "back")
    assert stop.value.value == ("resumed", "back", "inside")


def test_step_propagates_what_the_coroutine_raises(core):
    ctx = contextvars.copy_context()
    with pytest.raises(LookupError, match="gone"):
        core.coro.step(_raises("gone"), ctx)
    # the context was left: a later step in it works
    assert _stepped(core, _returns(None), ctx) == (True, None)


def test_step_same_in_both_cores():
    outcomes = []
    for c in both_cores():
        ctx = contextvars.copy_context()
        coro = _suspends(7)
        outcomes.append((_stepped(c, _returns("v"), ctx), _stepped(c, coro, ctx)))
        coro.close()
    assert outcomes[0] == outcomes[1] == ((True, "v"), (False, 7))


def test_call_list_calls_with_the_items_of_the_list(core):
    def f(*args, **kwargs):
        return args, kwargs
    assert core.coro.call_list(f, [1, "a", None]) == ((1, "a", None), {})
    assert core.coro.call_list(f, []) == ((), {})
    with pytest.raises(TypeError):
        core.coro.call_list(lambda a: a, [1, 2])


def test_new_future_is_the_loops_own(core):
    class Custom(asyncio.SelectorEventLoop):
        made = 0

        def create_future(self):
            Custom.made += 1
            return super().create_future()

    for loop in (asyncio.new_event_loop(), Custom()):
        try:
            kwargs = core.coro.future_kwargs(loop)
            fut = core.coro.new_future(loop, kwargs)
            assert type(fut) is asyncio.Future and fut.get_loop() is loop and not fut.done()
            assert (kwargs is None) == isinstance(loop, Custom)
        finally:
            loop.close()
    assert Custom.made == 1


def test_map_keys_decode_right_whatever_the_key_cache_holds(core):
    """Short ASCII map keys may come from the compiled decoder's cache of keys seen:
    thousands of keys, colliding and repeated, non-ASCII and long ones, still decode
    exactly as msgpack does."""
    f = core.frames
    keys = [f"k{i}" for i in range(3000)] + ["é", "ключ", "x" * 17, "", "a", "a"]
    rnd = random.Random(7)
    for _ in range(3):
        rnd.shuffle(keys)
        for start in range(0, len(keys), 50):
            value = {k: i for i, k in enumerate(keys[start:start + 50])}
            (got,) = f.FrameDecoder().feed(f.encode_response(1, value))
            assert got == [f.RESP_OK, 1, value]
            assert list(got[2]) == list(value)
