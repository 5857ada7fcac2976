"""tracing=True: OpenTelemetry spans across the hop, with the SDK's in-memory exporter.

Client and server each get a tracer provider of their own, so the server span can
only find its parent through what crossed the socket (the native frame's trace
field, the mqtt JSON's ``traceparent``). Also: two hops (a handler calling another
server), the handler's current span, and rpc_debug_log as a view of the same context.
"""

import logging
import os
import re

import pytest
from opentelemetry.trace import SpanKind, StatusCode, get_current_span

from conftest import REMOTE
from otel_support import hex_id, new_provider
from pomelo_rpc import RemoteError, client, server

TEST_DIR = os.path.join(REMOTE, "test")


def msg(service, method, *args, server_type="test"):
    return {"namespace": "user", "server_type": server_type, "service": service,
            "method": method, "args": list(args)}


def one(spans, name, kind):
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def assert_child(child, parent):
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


async def pair(core, transport, server_tracing, client_tracing, **server_opts):
    gw = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                       transport=transport, context={"server_id": "srv-1"},
                       tracing=server_tracing, **server_opts)
    await gw.start()
    cli = client.create(core=core, transport=transport, tracing=client_tracing,
                        context={"server_id": "conn-1"})
    cli.add_servers([{"id": "srv-1", "server_type": "test", "port": gw.port}])
    await cli.start()
    return gw, cli


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_server_span_is_the_client_spans_child(core, transport):
    (cprov, cexp), (sprov, sexp) = new_provider(), new_provider()
    gw, cli = await pair(core, transport, sprov, cprov)
    port = gw.port
    try:
        assert await cli.rpc_invoke("srv-1", msg("service", "echo", "hi")) == "hi"
        assert await cli.rpc_invoke("srv-1", msg("service", "slow_echo", "later", 0.01)) == "later"
        with pytest.raises(RemoteError, match="boom"):
            await cli.rpc_invoke("srv-1", msg("service", "fail", "boom"))
    finally:
        await cli.stop()
        await gw.stop()
    cspans, sspans = cexp.get_finished_spans(), sexp.get_finished_spans()
    assert len(cspans) == len(sspans) == 3
    for method in ("echo", "slow_echo", "fail"):
        name = f"user.service/{method}"
        c, s = one(cspans, name, SpanKind.CLIENT), one(sspans, name, SpanKind.SERVER)
        assert c.parent is None                # a root: the test had no span current
        assert_child(s, c)
        assert s.parent.is_remote
        for span in (c, s):
            assert span.attributes["rpc.system"] == "pomelo_rpc"
            assert span.attributes["rpc.service"] == "user.service"
            assert span.attributes["rpc.method"] == method
            assert span.attributes["pomelo_rpc.server_id"] == "srv-1"
            assert span.attributes["pomelo_rpc.transport"] == transport
        assert c.attributes["server.address"] == "127.0.0.1"
        assert c.attributes["server.port"] == port
        # the server span lies within the client span
        assert c.start_time <= s.start_time <= s.end_time <= c.end_time
    c, s = one(cspans, "user.service/fail", SpanKind.CLIENT), one(sspans, "user.service/fail",
                                                                   SpanKind.SERVER)
    assert c.status.status_code == s.status.status_code == StatusCode.ERROR
    assert s.attributes["error.type"] == "ValueError"
    assert c.attributes["error.type"] == "RemoteError"
    [event] = [e for e in s.events if e.name == "exception"]
    assert event.attributes["exception.message"] == "boom"
    ok = one(sspans, "user.service/echo", SpanKind.SERVER)
    assert ok.status.status_code == StatusCode.UNSET


class Front:
    """A service whose methods call the back server through a client of their own."""

    def __init__(self, cli):
        self._cli = cli

    async def relay(self, value):
        return await self._cli.rpc_invoke("back-1", msg("service", "echo", value))

    def whoami(self):
        """A sync method: the span current while it runs."""
        ctx = get_current_span().get_span_context()
        return [hex_id(ctx.trace_id, 32), hex_id(ctx.span_id, 16)]


async def two_hops(core, transport, back_opts, front_opts, outer_opts):
    """back-1 (the test services), front-1 (Front, calling back-1 through a client with
    ``front_opts``) and an outer client to front-1; returns (outer, close)."""
    back = server.create(paths=[{"namespace": "user", "path": TEST_DIR}], core=core,
                         transport=transport, context={"server_id": "back-1"}, **back_opts)
    await back.start()
    inner = client.create(core=core, transport=transport, context={"server_id": "front-1"},
                          **front_opts)
    inner.add_servers([{"id": "back-1", "server_type": "test", "port": back.port}])
    await inner.start()
    front = server.create(services={"user": {"front": Front(inner)}}, core=core,
                          transport=transport, context={"server_id": "front-1"}, **front_opts)
    await front.start()
    outer = client.create(core=core, transport=transport, **outer_opts)
    outer.add_servers([{"id": "front-1", "server_type": "front", "port": front.port}])
    await outer.start()

    async def close():
        for c in (outer, inner):
            await c.stop()
        for g in (front, back):
            await g.stop()
    return outer, close


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_two_hops_make_one_trace(core, transport):
    """app span -> CLIENT -> front SERVER -> (the handler's call) CLIENT -> back SERVER."""
    (app_prov, app_exp), (front_prov, front_exp), (back_prov, back_exp) = (
        new_provider(), new_provider(), new_provider())
    outer, close = await two_hops(core, transport, {"tracing": back_prov},
                                  {"tracing": front_prov}, {"tracing": app_prov})
    try:
        with app_prov.get_tracer("app").start_as_current_span("handle request") as root:
            relayed = await outer.rpc_invoke(
                "front-1", msg("front", "relay", "x", server_type="front"))
            seen = await outer.rpc_invoke("front-1", msg("front", "whoami", server_type="front"))
        assert relayed == "x"
    finally:
        await close()
    app_spans = app_exp.get_finished_spans()
    outer_relay = one(app_spans, "user.front/relay", SpanKind.CLIENT)
    front_relay = one(front_exp.get_finished_spans(), "user.front/relay", SpanKind.SERVER)
    inner_echo = one(front_exp.get_finished_spans(), "user.service/echo", SpanKind.CLIENT)
    back_echo = one(back_exp.get_finished_spans(), "user.service/echo", SpanKind.SERVER)
    root_span = one(app_spans, "handle request", SpanKind.INTERNAL)
    assert_child(outer_relay, root_span)
    assert_child(front_relay, outer_relay)
    assert_child(inner_echo, front_relay)     # the server span was current in the handler
    assert_child(back_echo, inner_echo)
    assert root.get_span_context().trace_id == back_echo.context.trace_id
    # a sync method runs with its server span current too
    whoami = one(front_exp.get_finished_spans(), "user.front/whoami", SpanKind.SERVER)
    assert seen == [hex_id(whoami.context.trace_id, 32), hex_id(whoami.context.span_id, 16)]


async def test_one_side_tracing(core):
    """A traced client and a server without tracing (and the other way round) work;
    the untraced side simply makes no span, a traced server without a caller's
    context starts a trace of its own."""
    for traced, kind in (("client", SpanKind.CLIENT), ("server", SpanKind.SERVER)):
        provider, exporter = new_provider()
        gw, cli = await pair(core, "native", provider if traced == "server" else False,
                             provider if traced == "client" else False)
        try:
            assert await cli.rpc_invoke("srv-1", msg("service", "echo", traced)) == traced
        finally:
            await cli.stop()
            await gw.stop()
        [span] = exporter.get_finished_spans()
        assert span.kind == kind and span.parent is None


LOG_LINE = re.compile(r"^rpc (send|done|received|answered) trace=(\S+) route=(\S+) server=(\S+)")


def logged_traces(caplog):
    out = []
    for r in caplog.records:
        if r.name == "pomelo_rpc.trace":
            m = LOG_LINE.match(r.getMessage())
            assert m, r.getMessage()
            out.append(m.groups())
    return out


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_rpc_debug_log_shows_the_spans_trace_id(core, transport, caplog):
    """rpc_debug_log is a view of the same context: its trace= is the span's trace id."""
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    (cprov, cexp), (sprov, sexp) = new_provider(), new_provider()
    gw, cli = await pair(core, transport, sprov, cprov, rpc_debug_log=True)
    cli.opts["rpc_debug_log"] = True      # the client's mailboxes are made on first use
    try:
        assert await cli.rpc_invoke("srv-1", msg("service", "echo", "hi")) == "hi"
    finally:
        await cli.stop()
        await gw.stop()
    [c] = cexp.get_finished_spans()
    [s] = sexp.get_finished_spans()
    lines = logged_traces(caplog)
    assert sorted(step for step, *_ in lines) == ["answered", "done", "received", "send"]
    assert {trace for _step, trace, *_ in lines} == {hex_id(c.context.trace_id, 32)}
    assert s.context.trace_id == c.context.trace_id


async def test_rpc_debug_log_alone_carries_one_trace_across_two_hops(core, caplog):
    """Without OpenTelemetry spans, the calls a handler makes log the trace id of the
    request it serves."""
    caplog.set_level(logging.DEBUG, logger="pomelo_rpc.trace")
    on = {"rpc_debug_log": True}
    outer, close = await two_hops(core, "native", on, on, on)
    try:
        for value in ("a", "b"):
            assert await outer.rpc_invoke(
                "front-1", msg("front", "relay", value, server_type="front")) == value
    finally:
        await close()
    lines = logged_traces(caplog)
    assert len(lines) == 16                     # 2 requests x 2 hops x 4 steps
    traces = {trace for _step, trace, *_ in lines}
    assert len(traces) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in traces)
    for trace in traces:
        mine = [(step, route) for step, t, route, _s in lines if t == trace]
        assert sorted(mine) == sorted(
            [(step, "user.front.relay") for step in ("send", "received", "answered", "done")]
            + [(step, "user.service.echo") for step in ("send", "received", "answered", "done")])
