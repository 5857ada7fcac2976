"""Run inside a clean venv holding an installed pomelo-rpc and one extra (test_packaging):
the extra's feature starts and works on a real call. Imports nothing from the checkout.

    python extras_check.py redis redis://127.0.0.1:PORT/0
    python extras_check.py etcd etcd://127.0.0.1:PORT
    python extras_check.py metrics
    python extras_check.py otel          # opentelemetry-api only: tracing=True, no SDK
    python extras_check.py otel-sdk      # with the user's SDK: a trace across the call

Prints one JSON line of what it saw; any failed check raises (exit status 1).
"""

import json
import sys

import pomelo_rpc
from pomelo_rpc import client, server

ECHO = {"user": {"svc": {"echo": lambda x: x}}}
MSG = {"namespace": "user", "server_type": "t", "service": "svc", "method": "echo"}


async def call(cli, n=1):
    """``n`` echo calls to server s-1; their answers."""
    return [await cli.rpc_invoke("s-1", dict(MSG, args=[i])) for i in range(n)]


async def registry(url):
    """A server registers in the engine; a client follows it there and calls it."""
    gw = server.create(services=ECHO, server_info={"id": "s-1", "server_type": "t"},
                       registry=url, cluster="extras_check")
    await gw.start()
    cli = client.create(registry=url, cluster="extras_check")
    await cli.start()
    try:
        seen = cli.server_ids("t")
        assert seen == ["s-1"], seen
        assert await call(cli, 2) == [0, 1]
        return {"registry": url.split(":")[0], "servers": seen}
    finally:
        await cli.stop()
        await gw.stop()


async def metrics():
    """Both sides count their calls in a prometheus_client registry."""
    from prometheus_client import CollectorRegistry, generate_latest
    reg = CollectorRegistry()
    gw = server.create(services=ECHO, context={"server_id": "s-1"}, metrics=True,
                       metrics_registry=reg)
    await gw.start()
    cli = client.create(metrics=True, metrics_registry=reg)
    cli.add_servers([{"id": "s-1", "server_type": "t", "port": gw.port}])
    await cli.start()
    try:
        await call(cli, 3)
    finally:
        await cli.stop()
        await gw.stop()
    text = generate_latest(reg).decode()
    for side in ("client", "server"):
        line = (f'pomelo_rpc_{side}_calls_total{{outcome="ok",route="user.svc.echo",'
                f'server="s-1"}} 3.0')
        assert line in text, text
    return {"metrics": [ln for ln in text.splitlines() if "_calls_total{" in ln]}


async def traced(provider):
    """One call with tracing on both sides (True: the global provider)."""
    gw = server.create(services=ECHO, tracing=provider)
    await gw.start()
    cli = client.create(tracing=provider)
    cli.add_servers([{"id": "s-1", "server_type": "t", "port": gw.port}])
    await cli.start()
    try:
        assert await call(cli) == [0]
    finally:
        await cli.stop()
        await gw.stop()


async def otel_api():
    """With opentelemetry-api alone (no SDK): tracing=True starts, and calls work."""
    import opentelemetry.trace
    await traced(True)
    return {"tracer_provider": type(opentelemetry.trace.get_tracer_provider()).__name__}


async def otel_sdk():
    """With the user's SDK: a CLIENT span and its SERVER child, one trace across the call."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await traced(provider)
    spans = {s.kind.name: s for s in exporter.get_finished_spans()}
    cli_span, srv_span = spans["CLIENT"], spans["SERVER"]
    assert srv_span.context.trace_id == cli_span.context.trace_id
    assert srv_span.parent is not None and srv_span.parent.span_id == cli_span.context.span_id
    return {"spans": sorted(f"{kind} {s.name}" for kind, s in spans.items())}


def main(argv):
    kind = argv[0]
    checks = {"redis": lambda: registry(argv[1]), "etcd": lambda: registry(argv[1]),
              "metrics": metrics, "otel": otel_api, "otel-sdk": otel_sdk}
    seen = pomelo_rpc.run(checks[kind]())
    print(json.dumps(dict(seen, extra=kind, implementation=pomelo_rpc.IMPLEMENTATION)))


if __name__ == "__main__":
    main(sys.argv[1:])
