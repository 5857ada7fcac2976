"""Tracing's sampling decided before any span is made (``core/sampling``), both cores.

The Sampler decides as the OpenTelemetry SDK's sampler would, on the same parent and
the same trace id: checked against the SDK's own ``should_sample`` for every sampler
pomelo_rpc recognizes. The compiled and the pure traceparent helpers agree on any
input. End to end, with the SDK sampling a fraction of traces across two hops: a
sampled trace has its four spans, an unsampled one none, and both carry one trace id
from the first call to the last server. Many requests in one read each see their own
trace context, a sampled one none, and none is left for a later read.
"""

import asyncio
import contextvars
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as sdk
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (NonRecordingSpan, SpanContext, TraceFlags, get_current_span,
                                 set_span_in_context)

from pomelo_rpc import client, otel, server
from pomelo_rpc import core as core_pkg
from pomelo_rpc.tracing import current_trace, parse_traceparent

SAMPLERS = {
    "parent-based ratio": lambda: sdk.ParentBased(sdk.TraceIdRatioBased(0.3)),
    "ParentBasedTraceIdRatio": lambda: sdk.ParentBasedTraceIdRatio(0.3),
    "ratio": lambda: sdk.TraceIdRatioBased(0.3),
    "always on": lambda: sdk.ALWAYS_ON,
    "always off": lambda: sdk.ALWAYS_OFF,
    "parent-based always on": lambda: sdk.ParentBased(sdk.ALWAYS_ON),
    "parent-based always off": lambda: sdk.ParentBased(sdk.ALWAYS_OFF),
    "ratio 1.0": lambda: sdk.TraceIdRatioBased(1.0),
}


def tracer_with(sampler):
    provider = TracerProvider(sampler=sampler)
    return provider.get_tracer("test")


def random_traceparent(rng):
    trace = rng.getrandbits(128) or 1
    span = rng.getrandbits(64) or 1
    return f"00-{trace:032x}-{span:016x}-{rng.choice([0, 1, 2, 3]):02x}"


def carried_values(rng, n=600):
    """Trace fields a request may carry: valid traceparents (every flag), none, garbage."""
    out = [random_traceparent(rng) for _ in range(n)]
    out += [None, "", 7, "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
            "00-" + "A" * 32 + "-" + "1" * 16 + "-01", "01-" + "a" * 32 + "-" + "b" * 16 + "-01",
            "00-" + "a" * 32 + "-" + "b" * 16 + "-0g", "x" * 55, "pomelo-trace-id"]
    return out


def sdk_decides(sampler, carried, trace_id):
    """The SDK sampler's decision for a span whose parent is the traceparent ``carried``
    (if valid) and whose trace id is ``trace_id``."""
    parsed = parse_traceparent(carried)
    context = None
    if parsed is not None:
        parent = SpanContext(int(parsed[0], 16), int(parsed[1], 16), is_remote=True,
                             trace_flags=TraceFlags(parsed[2]))
        context = set_span_in_context(NonRecordingSpan(parent), Context())
    return sampler.should_sample(context, trace_id, "x").decision.is_sampled()


@pytest.mark.parametrize("name", SAMPLERS)
def test_the_sampler_decides_as_the_sdk_would(core, name):
    tracer = tracer_with(SAMPLERS[name]())
    sampler = otel.sampler_of(tracer, core_pkg.select(core))
    assert sampler is not None, f"{name} should be recognized"
    rng = random.Random(17)
    sampled = unsampled = 0
    for carried in carried_values(rng):
        decided = sampler.incoming(carried)
        parsed = parse_traceparent(carried)
        if decided is None:                 # sampled: the SDK makes the span
            trace_id = (int(parsed[0], 16) if parsed is not None
                        else sampler.take_trace_id())
            assert trace_id, "a sampled root has its trace id"
            assert sdk_decides(tracer.sampler, carried, trace_id), carried
            sampled += 1
        else:                               # not sampled: no span, the context travels
            got = parse_traceparent(decided)
            assert got is not None, decided
            trace_id = int(got[0], 16)
            assert not sdk_decides(tracer.sampler, carried, trace_id), carried
            assert got[2] & 1 == 0
            if parsed is not None and parsed[2] & 1 == 0:   # unsampled already: as it came
                assert decided == carried
            elif parsed is not None:        # in the caller's trace, a span id of its own
                assert got[0] == parsed[0] and got[1] != parsed[1]
                assert got[2] == parsed[2] & 0xFE
            else:                           # a new trace, its ids random (W3C level 2)
                assert got[2] == 0x02
            unsampled += 1
    assert sampled + unsampled > 600
    if "ratio" in name and name != "ratio 1.0":
        assert sampled and unsampled


def test_unknown_samplers_are_left_to_the_sdk(core):
    c = core_pkg.select(core)
    odd = sdk.ParentBased(sdk.ALWAYS_ON, remote_parent_not_sampled=sdk.ALWAYS_ON)
    assert otel.sampler_of(tracer_with(odd), c) is None

    class Custom(sdk.Sampler):
        def should_sample(self, *args, **kwargs):
            return sdk.SamplingResult(sdk.Decision.DROP)

        def get_description(self):
            return "custom"
    assert otel.sampler_of(tracer_with(Custom()), c) is None
    from opentelemetry.trace import NoOpTracer
    assert otel.sampler_of(NoOpTracer(), c) is None


def test_a_call_continues_the_current_context(core):
    """Outgoing: the application's current span wins, then the request being served,
    then a new root."""
    tracer = tracer_with(sdk.ParentBased(sdk.TraceIdRatioBased(0.0)))
    sampler = otel.sampler_of(tracer, core_pkg.select(core))
    served = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-02"
    token = current_trace.set(served)
    try:
        mine = sampler.outgoing()
        assert mine[:36] == served[:36] and mine[52:] == "-02" and mine != served
        # an unsampled span of the application's, current: its child
        app = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0))
        from opentelemetry import context as otel_context
        attached = otel_context.attach(set_span_in_context(NonRecordingSpan(app)))
        try:
            mine = sampler.outgoing()
            assert mine.startswith(f"00-{0x1234:032x}-") and mine.endswith("-00")
            sampled_app = SpanContext(0x99, 0x77, is_remote=False,
                                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
            inner = otel_context.attach(set_span_in_context(NonRecordingSpan(sampled_app)))
            try:
                assert sampler.outgoing() is None   # sampled: the SDK makes the span
            finally:
                otel_context.detach(inner)
        finally:
            otel_context.detach(attached)
    finally:
        current_trace.reset(token)
    root = sampler.outgoing()                       # nothing current: a new trace
    assert parse_traceparent(root) is not None and root[3:35] != served[3:35]


# the compiled helpers against the pure ones ----------------------------------------

def _twins():
    names = core_pkg.available()
    if names != ["cython", "python"]:
        pytest.skip("needs both cores")
    return core_pkg.select("cython").sampling, core_pkg.select("python").sampling


near_valid = st.builds(
    lambda trace, span, flags, cut, junk: (
        f"00-{trace:032x}-{span:016x}-{flags:02x}"[:cut] + junk),
    st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1), st.integers(0, 255),
    st.integers(0, 55), st.text(max_size=3))


@settings(max_examples=400, deadline=None)
@given(st.one_of(near_valid, st.text(max_size=60), st.none(), st.integers(),
                 st.binary(max_size=55)))
def test_traceparent_state_of_both_cores(value):
    cy, py = _twins()
    assert cy.state(value) == py.state(value)


def test_every_character_at_every_place_of_both_cores():
    """The compiled check reads eight digits at a time: any one character in any
    place of a valid traceparent (and the all-zero ids) is judged as the pure one does."""
    cy, py = _twins()
    base = "00-" + "0123456789abcdef" * 2 + "-" + "fedcba9876543210" + "-01"
    chars = [chr(c) for c in range(128)] + ["\u00e9", "\u20ac"]
    for i in range(55):
        for c in chars:
            value = base[:i] + c + base[i + 1:]
            assert cy.state(value) == py.state(value), (i, c)
    for value in ("00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                  "00-" + "0" * 31 + "1-" + "0" * 16 + "-00",
                  "00-" + "0" * 31 + "1-" + "0" * 15 + "1-00"):
        assert cy.state(value) == py.state(value)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255),
       st.integers(0, 2**64 - 1))
def test_child_and_root_of_both_cores(trace, span, flags, low):
    cy, py = _twins()
    parent = f"00-{trace:032x}-{span:016x}-{flags:02x}"
    for m in (cy, py):
        kid = m.child(parent)
        assert m.state(kid) == 0 and kid[:36] == parent[:36]
        assert kid[52:] == f"-{flags & 0xFE:02x}"
        assert m.trace_low(parent) == trace & (2**64 - 1)
        fresh = m.root(low, flags)
        assert len(fresh) == 55 and fresh[19:35] == f"{low:016x}" and fresh[53:] == f"{flags:02x}"
        assert 0 < m.rand64() < 2**64


# end to end ---------------------------------------------------------------------

class Back:
    def whoami(self):
        """The trace this request is in, and whether it is sampled (a span is current)."""
        ctx = get_current_span().get_span_context()
        if ctx.is_valid:
            return [f"{ctx.trace_id:032x}", True]
        parsed = parse_traceparent(current_trace.get())
        return [parsed[0], bool(parsed[2] & 1)] if parsed else None


class Front:
    def __init__(self, cli):
        self._cli = cli

    async def relay(self):
        mine = Back().whoami()
        theirs = await self._cli.rpc_invoke("back-1", {
            "namespace": "user", "server_type": "back", "service": "back",
            "method": "whoami", "args": []})
        return [mine, theirs]

    async def relay_later(self):
        """``relay`` after the handler suspended."""
        await asyncio.sleep(0)
        return await self.relay()

    async def relay_gathered(self):
        """``relay`` in a task ``gather`` starts before the handler suspends: the task
        copies the handler's context, the trace with it."""
        (result,) = await asyncio.gather(self.relay())
        return result


def provider_sampling(sampler):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize("transport", ["native", "mqtt"])
@pytest.mark.parametrize("rate", [0.5, 0.0])
async def test_sampled_traces_have_every_span_and_the_others_none(core, transport, rate):
    make = (lambda: sdk.ParentBased(sdk.TraceIdRatioBased(rate)))
    (back_prov, back_exp), (front_prov, front_exp), (out_prov, out_exp) = (
        provider_sampling(make()), provider_sampling(make()), provider_sampling(make()))
    back = server.create(services={"user": {"back": Back()}}, core=core, transport=transport,
                         context={"server_id": "back-1"}, tracing=back_prov)
    await back.start()
    inner = client.create(core=core, transport=transport, tracing=front_prov)
    inner.add_servers([{"id": "back-1", "server_type": "back", "port": back.port}])
    await inner.start()
    front = server.create(services={"user": {"front": Front(inner)}}, core=core,
                          transport=transport, context={"server_id": "front-1"},
                          tracing=front_prov)
    await front.start()
    outer = client.create(core=core, transport=transport, tracing=out_prov)
    outer.add_servers([{"id": "front-1", "server_type": "front", "port": front.port}])
    await outer.start()
    try:
        seen = [await outer.rpc_invoke("front-1", {
            "namespace": "user", "server_type": "front", "service": "front",
            "method": ("relay", "relay_later", "relay_gathered")[i % 3], "args": []})
            for i in range(40)]
    finally:
        for c in (outer, inner):
            await c.stop()
        for g in (front, back):
            await g.stop()
    spans = (out_exp.get_finished_spans() + front_exp.get_finished_spans()
             + back_exp.get_finished_spans())
    by_trace = {}
    for span in spans:
        by_trace.setdefault(f"{span.context.trace_id:032x}", []).append(span)
    sampled = 0
    for (front_trace, front_sampled), (back_trace, back_sampled) in seen:
        assert front_trace == back_trace            # one trace, from the first call on
        assert front_sampled == back_sampled
        if front_sampled:
            sampled += 1
            assert len(by_trace.pop(front_trace)) == 4   # 2 CLIENT + 2 SERVER spans
        else:
            assert front_trace not in by_trace       # not a span made for it
    assert not by_trace                               # no span of any other trace
    if rate == 0.0:
        assert sampled == 0 and not spans
    else:
        assert 0 < sampled < 40


class Seen:
    def see(self):
        """Whether a span is current (sampled), and the raw traceparent current."""
        return [get_current_span().get_span_context().is_valid, current_trace.get()]

    async def see_later(self):
        """``see`` at the first step and again after suspending."""
        first = self.see()
        await asyncio.sleep(0)
        return [first, self.see()]


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_requests_of_one_read_see_their_own_trace_and_none_leaks(core, transport):
    provider, _ = provider_sampling(sdk.ParentBased(sdk.TraceIdRatioBased(0.5)))
    gw = server.create(services={"user": {"seen": Seen()}}, core=core, transport=transport,
                       context={"server_id": "seen-1"}, tracing=provider)
    await gw.start()
    # no tracing on the client: the server draws each request's root, sampled or not
    cli = client.create(core=core, transport=transport)
    cli.add_servers([{"id": "seen-1", "server_type": "seen", "port": gw.port}])
    await cli.start()

    def call(method):
        return cli.rpc_invoke("seen-1", {"namespace": "user", "server_type": "seen",
                                         "service": "seen", "method": method, "args": []})
    try:
        # sent in one turn: read by the server together
        batch = await asyncio.gather(*(call("see" if i % 2 else "see_later")
                                       for i in range(80)))
        alone = [await call("see") for _ in range(12)]     # one read each
    finally:
        await cli.stop()
        await gw.stop()
    seen = alone + [s for s in batch if type(s[0]) is bool]
    for first, later in (s for s in batch if type(s[0]) is list):
        assert later == first                  # the same context after suspending
        seen.append(first)
    traces = []
    for sampled, traceparent in seen:
        if sampled:
            assert traceparent is None        # nobody else's left current
        else:
            parsed = parse_traceparent(traceparent)
            assert parsed is not None and not parsed[2] & 1
            traces.append(parsed[0])
    assert len(set(traces)) == len(traces)     # each request its own trace
    assert 0 < len(traces) < len(seen)


_other = contextvars.ContextVar("test_sampling_other", default=None)


class Keep:
    """Handlers that keep their request's trace context past their first step, each
    in another way; ``seen`` gets ``[what the handler saw, what was seen later]`` (what
    the handler saw as bytes: a copy, holding nothing of the context)."""

    def __init__(self):
        self.seen = []
        self.kept = []

    @staticmethod
    def now():
        return current_trace.get().encode()

    async def _later(self, first):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.seen.append([first, self.now()])

    async def spawn(self):
        """A task started before returning (no suspension: the request's read goes on)."""
        first = self.now()
        asyncio.ensure_future(self._later(first))
        return first.decode()

    async def spawn_after_set(self):
        """Another variable set, then a task started (it copies the context set)."""
        first = self.now()
        _other.set(1)
        asyncio.ensure_future(self._later(first))
        return first.decode()

    def keep_str(self):
        """The traceparent's str itself kept."""
        first = self.now()
        self.kept.append([first, current_trace.get()])
        return first.decode()

    def keep_context(self):
        """A copy of the context kept (read after the read has gone on)."""
        first = self.now()
        self.kept.append([first, contextvars.copy_context()])
        return first.decode()

    def run_in_copy(self):
        """A copy of the context entered and set in, and kept."""
        first = self.now()
        ctx = contextvars.copy_context()
        ctx.run(_other.set, 2)
        self.kept.append([first, ctx])
        return first.decode()

    def see(self):
        return self.now().decode()


_MANY = [contextvars.ContextVar(f"test_sampling_{i}") for i in range(40)]


@pytest.mark.parametrize("transport", ["native", "mqtt"])
@pytest.mark.parametrize("variables", [0, 40])
async def test_a_trace_context_kept_past_the_request_stays_its_own(core, transport,
                                                                   variables):
    """Requests read together whose handlers keep their context (a task, the str, a
    copy of the context) among requests whose handlers do not: what was kept still
    names its own request's trace once the read has run the others. Also with 40 more
    variables in the server's context (its variables then in a tree of nodes, parts
    of which a context made from another shares)."""
    for var in _MANY[:variables]:
        var.set(0)
    provider, _ = provider_sampling(sdk.ParentBased(sdk.TraceIdRatioBased(0.0)))
    keep = Keep()
    gw = server.create(services={"user": {"keep": keep}}, core=core, transport=transport,
                       context={"server_id": "keep-1"}, tracing=provider)
    await gw.start()
    cli = client.create(core=core, transport=transport)   # the server draws each root
    cli.add_servers([{"id": "keep-1", "server_type": "keep", "port": gw.port}])
    await cli.start()
    methods = ["spawn", "see", "see", "spawn_after_set", "see", "keep_str", "see",
               "keep_context", "see", "run_in_copy", "see", "see"]

    def call(method):
        return cli.rpc_invoke("keep-1", {"namespace": "user", "server_type": "keep",
                                         "service": "keep", "method": method, "args": []})
    try:
        answers = await asyncio.gather(*(call(methods[i % len(methods)])
                                         for i in range(120)))
        spawned = sum(1 for i in range(120) if methods[i % len(methods)].startswith("spawn"))
        for _ in range(500):
            if len(keep.seen) == spawned:
                break
            await asyncio.sleep(0.01)
    finally:
        await cli.stop()
        await gw.stop()
    assert len(keep.seen) == spawned
    assert all(parse_traceparent(a) is not None for a in answers)
    assert len(set(answers)) == len(answers)           # each request its own trace
    for first, later in keep.seen:
        assert later == first
    for first, kept in keep.kept:
        now = kept if type(kept) is str else kept.run(current_trace.get)
        assert now.encode() == first
