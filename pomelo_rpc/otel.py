"""``tracing=True``: OpenTelemetry spans of calls (the optional extra ``pomelo-rpc[otel]``,
opentelemetry-api only: the SDK, its exporters and samplers are the application's).

A CLIENT span per call sent and a SERVER span per request dispatched, named and
described after OpenTelemetry's RPC semantic conventions: name ``<rpc.service>/<rpc.method>``
(``rpc.service`` is ``namespace.service``), attributes ``rpc.system`` (``pomelo_rpc``),
``rpc.service``, ``rpc.method``, ``server.address``/``server.port`` on the client,
``pomelo_rpc.server_id`` (the peer on the client, this server on the server) and
``pomelo_rpc.transport``. A failed call records its exception, ``error.type`` and an
ERROR status. The client span's W3C ``traceparent`` travels with the request (see
``pomelo_rpc.tracing``); the server span is its child, and is the current span while the
method runs, so that a call made by the method is the server span's child in turn.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .tracing import parse_traceparent

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import (NonRecordingSpan, Span, SpanContext, SpanKind, Status,
                                     StatusCode, TraceFlags, Tracer)
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("tracing=True needs opentelemetry-api: "
                      "pip install 'pomelo-rpc[otel]'") from exc

SYSTEM = "pomelo_rpc"
UNKNOWN_NAME = "pomelo_rpc/unknown"

attach = otel_context.attach
detach = otel_context.detach
set_span_in_context = trace.set_span_in_context


def tracer_of(option: Any) -> Tracer:
    """The tracer for ``tracing=option``: True takes the global tracer provider; a
    ``TracerProvider`` object is used as it is."""
    if option is True:
        return trace.get_tracer("pomelo_rpc", __version__)
    return option.get_tracer("pomelo_rpc", __version__)  # type: ignore[no-any-return]


def _route_attributes(route: str | None) -> tuple[str, dict[str, Any]]:
    """Span name and RPC attributes of ``namespace.service.method``."""
    if not route:
        return UNKNOWN_NAME, {"rpc.system": SYSTEM}
    service, _, method = route.rpartition(".")
    return f"{service}/{method}", {"rpc.system": SYSTEM, "rpc.service": service,
                                   "rpc.method": method}


def traceparent(span: Span) -> str:
    """The W3C ``traceparent`` header value of ``span``."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def start_client_span(tracer: Tracer, route: str, server_id: str, host: str, port: int,
                      transport: str) -> Span:
    """A CLIENT span for a call to ``route`` on ``server_id``, child of the current span."""
    name, attributes = _route_attributes(route)
    attributes.update({"server.address": host, "server.port": port,
                       "network.transport": "tcp", "pomelo_rpc.server_id": server_id,
                       "pomelo_rpc.transport": transport})
    return tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def remote_parent(value: object) -> Context | None:
    """The context whose span is the caller's, from a ``traceparent`` (None if absent or
    malformed: the server span then starts a trace of its own)."""
    parsed = parse_traceparent(value)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    span_context = SpanContext(trace_id=int(trace_id, 16), span_id=int(span_id, 16),
                               is_remote=True, trace_flags=TraceFlags(flags))
    return set_span_in_context(NonRecordingSpan(span_context), Context())


def start_server_span(tracer: Tracer, route: str | None, carried: object, server_id: str,
                      transport: str) -> Span:
    """A SERVER span for a request to ``route``, child of the caller's span when the
    request carried its ``traceparent``."""
    name, attributes = _route_attributes(route)
    attributes.update({"pomelo_rpc.server_id": server_id, "pomelo_rpc.transport": transport})
    return tracer.start_span(name, context=remote_parent(carried), kind=SpanKind.SERVER,
                             attributes=attributes)


def end_span(span: Span, error: BaseException | None, dispatched: bool = True) -> None:
    """End ``span``: with the error recorded when the call failed; ``dispatched`` False
    renames it ``pomelo_rpc/unknown`` (no span name per garbage route)."""
    if error is not None:
        if not dispatched:
            span.update_name(UNKNOWN_NAME)
        if span.is_recording():
            span.set_attribute("error.type", type(error).__name__)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
