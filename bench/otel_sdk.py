"""What the OpenTelemetry SDK's own spans cost, alone: instructions per span.

    python bench/otel_sdk.py [--spans 2000] [--cases client,server,...]

The floor under a sampled call with ``tracing=``: each case makes spans the way
pomelo_rpc makes its CLIENT and SERVER spans (same names, kinds and attributes; see
``pomelo_rpc.otel``), with the SDK's public API only and nothing of pomelo_rpc around
it, under ``valgrind --tool=callgrind``: runs of N and 3N spans subtracted (start-up,
imports and warm-up cancel out). The provider is the instruction bench's: the SDK's
``ParentBased(TraceIdRatioBased(1.0))`` sampler and a ``SimpleSpanProcessor`` whose
exporter drops the spans (the SDK's cost without a backend's). The other cases change
one thing each, to see what that thing costs and whether another use of the public API
is cheaper:

- ``client``: ``tracer.start_span(name, kind=CLIENT, attributes=<the 8 of a call>)``,
  ``span.end()``: what pomelo_rpc does per sampled call on the client;
- ``server``: a SERVER span with its 5 attributes, child of a remote parent context,
  made current (``context.attach``/``detach``) around the method, then ended: the
  server's;
- ``no-attributes``: ``client`` without attributes;
- ``set-attribute``: ``client`` with its attributes set one by one after the start;
- ``set-attributes``: ``client`` with its attributes set by one ``set_attributes``;
- ``no-exception-flags``: ``client`` started with ``record_exception=False,
  set_status_on_exception=False``;
- ``always-on``: ``client`` with the ``ALWAYS_ON`` sampler (no ParentBased, no ratio);
- ``no-processor``: ``client`` with no span processor (made and ended, handed to nobody);
- ``batch``: ``client`` with a ``BatchSpanProcessor`` (the production default);
- ``use-span``: ``server`` made current with ``trace.use_span`` instead of attach;
- ``unsampled``: ``client`` with ``ParentBased(TraceIdRatioBased(0))`` (a span the SDK
  does not record: what every call costs when the SDK decides).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pomelo_rpc import callgrind  # noqa: E402

CASES = ("client", "server", "no-attributes", "set-attribute", "set-attributes",
         "no-exception-flags", "always-on", "no-processor", "batch", "use-span",
         "unsampled")

CLIENT_ATTRIBUTES = {"rpc.system": "pomelo_rpc", "rpc.service": "user.service",
                     "rpc.method": "aecho", "server.address": "127.0.0.1",
                     "server.port": 40000, "network.transport": "tcp",
                     "pomelo_rpc.server_id": "bench-0", "pomelo_rpc.transport": "native"}
SERVER_ATTRIBUTES = {"rpc.system": "pomelo_rpc", "rpc.service": "user.service",
                     "rpc.method": "aecho", "pomelo_rpc.server_id": "bench-0",
                     "pomelo_rpc.transport": "native"}
NAME = "user.service/aecho"


def make_spans(case: str, spans: int) -> None:
    """A warm-up of 200 spans of ``case``, then ``spans`` more."""
    import gc

    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (BatchSpanProcessor, SimpleSpanProcessor,
                                                SpanExporter, SpanExportResult)
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
    from opentelemetry.trace import (NonRecordingSpan, SpanContext, SpanKind, TraceFlags)

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler = (ALWAYS_ON if case == "always-on" else
               ParentBased(TraceIdRatioBased(0.0 if case == "unsampled" else 1.0)))
    provider = TracerProvider(sampler=sampler)
    if case == "batch":
        provider.add_span_processor(BatchSpanProcessor(Drop()))
    elif case != "no-processor":
        provider.add_span_processor(SimpleSpanProcessor(Drop()))
    tracer = provider.get_tracer("pomelo_rpc")
    client, server = SpanKind.CLIENT, SpanKind.SERVER
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
        is_remote=True, trace_flags=TraceFlags(1))), context.Context())

    def one() -> None:
        if case in ("server", "use-span"):
            span = tracer.start_span(NAME, context=parent, kind=server,
                                     attributes=SERVER_ATTRIBUTES)
            if case == "use-span":
                with trace.use_span(span, end_on_exit=True):
                    pass
                return
            token = context.attach(trace.set_span_in_context(span))
            context.detach(token)
        elif case == "no-attributes":
            span = tracer.start_span(NAME, kind=client)
        elif case == "set-attribute":
            span = tracer.start_span(NAME, kind=client)
            for key, value in CLIENT_ATTRIBUTES.items():
                span.set_attribute(key, value)
        elif case == "set-attributes":
            span = tracer.start_span(NAME, kind=client)
            span.set_attributes(CLIENT_ATTRIBUTES)
        elif case == "no-exception-flags":
            span = tracer.start_span(NAME, kind=client, attributes=CLIENT_ATTRIBUTES,
                                     record_exception=False, set_status_on_exception=False)
        else:
            span = tracer.start_span(NAME, kind=client, attributes=CLIENT_ATTRIBUTES)
        span.end()

    for _ in range(200):
        one()
    gc.collect()
    gc.freeze()
    for _ in range(spans):
        one()
    provider.shutdown()


def per_span(case: str, spans: int) -> float:
    """Instructions of one span of ``case`` (runs of ``spans`` and ``3 * spans``)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    return callgrind.per_op(
        lambda n: [sys.executable, os.path.abspath(__file__), "--count", case, str(n)],
        spans, env)


def main(argv: Sequence[str] | None = None) -> int:
    """Print instructions per span of each case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=2000, help="N (N and 3N spans counted)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: "
                        + ", ".join(CASES))
    parser.add_argument("--count", nargs=2, metavar=("CASE", "SPANS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count:
        make_spans(args.count[0], int(args.count[1]))
        return 0
    callgrind.require()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    import opentelemetry.sdk.version as sdk_version
    print(f"opentelemetry-sdk {sdk_version.__version__}: instructions per span "
          f"(callgrind, {args.spans} and {3 * args.spans} spans subtracted)")
    base = None
    for case in cases:
        cost = per_span(case, args.spans)
        if case == "client":
            base = cost
        line = f"{case:<20} {cost:>10,.0f}"
        if base is not None and case != "client":
            line += f" {cost - base:>+10,.0f} vs client"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
