"""Micro-benchmarks of the hot core, each run on both cores in one group.

    python -m pytest bench/test_bench_core.py --benchmark-only
"""

import pytest

import pomelo_rpc
from pomelo_rpc import core as core_pkg

CORES = core_pkg.available()

# keep the whole file well under 30 s
pytestmark = pytest.mark.benchmark(max_time=0.25, min_rounds=5, warmup=False)

N = 1000


@pytest.fixture(params=CORES, ids=CORES)
def core(request):
    return core_pkg.select(request.param)


class Fut:
    """A minimal future: what PendingTable calls."""

    __slots__ = ("_done", "value")

    def __init__(self):
        self._done = False
        self.value = None

    def done(self):
        return self._done

    def set_result(self, value):
        self._done = True
        self.value = value


def request_stream(f):
    return b"".join(f.encode_request(i, i % 16, [i, "user-%d" % i, {"k": i}]) for i in range(N))


def test_decode_1000_requests(benchmark, core):
    benchmark.group = "frames: decode 1000 request frames from one buffer"
    f = core.frames
    data = request_stream(f)
    out = benchmark(lambda: f.FrameDecoder().feed(data))
    assert len(out) == N and out[-1][1] == N - 1


def test_decode_1000_requests_in_tcp_chunks(benchmark, core):
    benchmark.group = "frames: decode 1000 request frames in 1460-byte chunks"
    f = core.frames
    data = request_stream(f)
    chunks = [data[i:i + 1460] for i in range(0, len(data), 1460)]

    def run():
        dec = f.FrameDecoder()
        feed = dec.feed
        out = []
        for c in chunks:
            out += feed(c)
        return out

    assert len(benchmark(run)) == N


def test_encode_response(benchmark, core):
    benchmark.group = "frames: encode a response"
    f = core.frames
    result = {"uid": 1001, "name": "player", "items": [1, 2, 3], "ok": True}
    frame = benchmark(f.encode_response, 123456, result)
    assert f.FrameDecoder().feed(frame) == [[f.RESP_OK, 123456, result]]


def test_encode_request(benchmark, core):
    benchmark.group = "frames: encode a request by id"
    f = core.frames
    frame = benchmark(f.encode_request, 42, 7, ["uid-1", {"a": 1}])
    assert f.FrameDecoder().feed(frame) == [[f.REQ_ID, 42, 7, ["uid-1", {"a": 1}]]]


def test_pending_add_resolve_1000(benchmark, core):
    benchmark.group = "pending: add + resolve 1000 asyncio futures (one timeout)"
    PendingTable = core.pending.PendingTable
    loop = pomelo_rpc.new_event_loop()
    last = []

    def run():
        table = PendingTable()
        add = table.add
        new = loop.create_future
        futs = [new() for _ in range(N)]
        rids = [add(fut, 100.0, None) for fut in futs]
        resolve = table.resolve
        for rid in rids:
            resolve(rid, rid)
        last[:] = futs
        return table

    table = benchmark(run)
    loop.close()
    assert len(table) == 0 and last[-1].result() == N - 1


def test_pending_expire_1000(benchmark, core):
    benchmark.group = "pending: expire 1000 due entries"
    PendingTable = core.pending.PendingTable

    def setup():
        table = PendingTable()
        for i in range(N):
            table.add(Fut(), 100.0 + i * 0.001, i)
        return (table,), {}

    out = benchmark.pedantic(lambda table: table.expire(200.0), setup=setup, rounds=100)
    assert len(out) == N


def test_pending_expire_nothing_due(benchmark, core):
    benchmark.group = "pending: expire with 1000 entries, none due"
    table = core.pending.PendingTable()
    for i in range(N):
        table.add(Fut(), 100.0 + i * 0.001, i)
    assert benchmark(table.expire, 50.0) == []
    assert len(table) == N


def methods():
    def add(a, b):
        return a + b
    return [("user", "calc", f"m{i}", add, 2, 2, False) for i in range(16)]


def test_dispatch_by_id(benchmark, core):
    benchmark.group = "dispatch: request frame by method id"
    d = core.dispatch.Dispatcher(methods())
    msg = [1, 77, 5, [20, 22]]
    assert benchmark(d.dispatch, msg) == (77, core.dispatch.DONE, 42)


def test_dispatch_by_name(benchmark, core):
    benchmark.group = "dispatch: request frame by name"
    d = core.dispatch.Dispatcher(methods())
    msg = [2, 77, "user", "calc", "m5", [20, 22]]
    assert benchmark(d.dispatch, msg) == (77, core.dispatch.DONE, 42)


def test_decode_dispatch_encode_1000(benchmark, core):
    benchmark.group = "server path: decode + dispatch + encode 1000 requests"
    f, disp = core.frames, core.dispatch
    d = disp.Dispatcher(methods())
    data = b"".join(f.encode_request(i, i % 16, [i, 1]) for i in range(N))
    DONE = disp.DONE

    def run():
        out = []
        dispatch, encode_response = d.dispatch, f.encode_response
        for msg in f.FrameDecoder().feed(data):
            rid, state, result = dispatch(msg)
            if state == DONE:
                out.append(encode_response(rid, result))
        return b"".join(out)

    assert len(f.FrameDecoder().feed(benchmark(run))) == N
