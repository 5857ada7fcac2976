"""``tracing=True``: OpenTelemetry spans of calls (the optional extra ``pomelo-rpc[otel]``,
opentelemetry-api only: the SDK, its exporters and samplers are the application's).

Sampling is decided before any span is made when the tracer is the SDK's with a
sampler pomelo_rpc recognizes (``sampler_of``; see ``pomelo_rpc.core.sampling``): a
call or a request that is not sampled then makes no span object at all, and its
context travels as a raw W3C traceparent. In a handler serving such a request, the
application's own spans do not see that context unless it asks for it:
``current_context()`` gives the OpenTelemetry context of the request being served.

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

from collections.abc import Callable
from typing import Any

from . import __version__
from .errors import not_dispatched
from .tracing import current_trace, parse_traceparent

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

__all__ = ["Context", "current_context", "sampler_of", "tracer_of"]

attach = otel_context.attach
detach = otel_context.detach
set_span_in_context = trace.set_span_in_context


def current_context() -> Context:
    """The OpenTelemetry context of the call being served: the current one, or, in a
    handler serving a request tracing did not sample (no span was made for it), a
    context whose parent span is that request's (pass it as ``context=`` to
    ``tracer.start_span`` to continue its trace)."""
    if not trace.get_current_span().get_span_context().is_valid:
        parent = remote_parent(current_trace.get())
        if parent is not None:
            return parent
    return otel_context.get_current()


def span_parent(span: Span) -> str | None:
    """What a call made under ``span`` (the application's current span) continues: None
    (not a valid span: as if none), ``""`` (sampled: the call's span is made with the
    SDK), or the span's traceparent (not sampled)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    if ctx.trace_flags.sampled:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class _Presupplied:
    """The id generator of pomelo_rpc's own tracer: the trace id of the next root is
    the one the ``Sampler`` drew when it decided to sample it (so that the SDK's
    sampler, deciding on the same id, samples it too); else the SDK's generator."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.next = 0           # the trace id of the next root, when set
        # the SDK calls these per span: the inner generator's own, not a wrapper
        self.generate_span_id = inner.generate_span_id
        self.is_trace_id_random = getattr(inner, "is_trace_id_random", lambda: False)

    def generate_trace_id(self) -> int:
        """The presupplied trace id (once), else a new one."""
        trace_id = self.next
        if trace_id:
            self.next = 0
            return trace_id
        return int(self.inner.generate_trace_id())


def _otel_variable() -> tuple[Any, str]:
    """OpenTelemetry's context variable and the key of the current span in its context,
    when its runtime context is the default one (read directly by the Sampler: no
    Python call per call); else ``(None, "")``."""
    try:
        from contextvars import ContextVar

        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY
        runtime = otel_context._RUNTIME_CONTEXT
        if type(runtime) is ContextVarsRuntimeContext:
            var = runtime._current_context
            if isinstance(var, ContextVar) and isinstance(_SPAN_KEY, str):
                return var, _SPAN_KEY
    except (ImportError, AttributeError):
        pass
    return None, ""


def sampler_of(tracer: Tracer, core: Any) -> Any:
    """A ``core.sampling.Sampler`` deciding like ``tracer``'s sampler, or None when
    pomelo_rpc does not know how that sampler decides (then every call makes its span
    with the SDK, which decides). Known: the SDK's ``ParentBased`` (and
    ``ParentBasedTraceIdRatio``) with its default delegates, over ``ALWAYS_ON``,
    ``ALWAYS_OFF`` or ``TraceIdRatioBased``; those three alone. Installs on ``tracer``
    (pomelo_rpc's own instance) the id generator that keeps the two decisions alike."""
    sampler = getattr(tracer, "sampler", None)
    ids = getattr(tracer, "id_generator", None)
    if sampler is None or ids is None:
        return None
    try:
        from opentelemetry.sdk.trace import sampling as sdk
    except ImportError:
        return None
    root, parent_based = sampler, False
    if type(sampler) in (sdk.ParentBased, sdk.ParentBasedTraceIdRatio):
        if not (sampler._remote_parent_sampled is sdk.ALWAYS_ON
                and sampler._remote_parent_not_sampled is sdk.ALWAYS_OFF
                and sampler._local_parent_sampled is sdk.ALWAYS_ON
                and sampler._local_parent_not_sampled is sdk.ALWAYS_OFF):
            return None
        root, parent_based = sampler._root, True
    sampling = core.sampling
    bound = 0
    if type(root) is sdk.StaticSampler:
        mode = (sampling.ALWAYS if root._decision is sdk.Decision.RECORD_AND_SAMPLE
                else sampling.NEVER if root._decision is sdk.Decision.DROP else None)
        if mode is None:
            return None
    elif type(root) is sdk.TraceIdRatioBased:
        mode, bound = sampling.RATIO, int(root.bound)
    else:
        return None
    if not isinstance(ids, _Presupplied):
        ids = _Presupplied(ids)
        tracer.id_generator = ids              # type: ignore[attr-defined]
    otel_var, span_key = _otel_variable()
    return sampling.Sampler(mode, bound, parent_based, 0x02 if ids.is_trace_id_random() else 0,
                            current_trace, otel_var, span_key, trace.get_current_span,
                            span_parent)


def presupply(tracer: Tracer) -> Callable[[int], None]:
    """What makes the next root span ``tracer`` makes get a trace id (see
    ``sampler_of``, which installs the generator this sets)."""
    ids = getattr(tracer, "id_generator", None)
    if not isinstance(ids, _Presupplied):
        return lambda trace_id: None

    def set_next(trace_id: int) -> None:
        ids.next = trace_id
    return set_next


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


class RouteSpans:
    """The names and attributes of one side's spans to or from one peer, by route: made
    once per route (for ``MAX_ROUTES`` routes; past them, for each span), then the same
    dict for every span (the SDK copies what it is given). ``fixed``: the attributes
    every span has."""

    MAX_ROUTES = 1000

    def __init__(self, kind: SpanKind, fixed: dict[str, Any]) -> None:
        self.kind = kind
        self.fixed = fixed
        self.cache: dict[str | None, tuple[str, dict[str, Any]]] = {}

    def of(self, route: str | None) -> tuple[str, dict[str, Any]]:
        """Name and attributes of a span of ``route`` (not to be changed)."""
        found = self.cache.get(route)
        if found is None:
            name, attributes = _route_attributes(route)
            attributes.update(self.fixed)
            found = name, attributes
            if len(self.cache) < self.MAX_ROUTES:
                self.cache[route] = found
        return found


def traceparent(span: Span) -> str:
    """The W3C ``traceparent`` header value of ``span``."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def client_spans(server_id: str, host: str, port: int, transport: str) -> RouteSpans:
    """The CLIENT spans of the calls to ``server_id`` at ``host:port``."""
    return RouteSpans(SpanKind.CLIENT, {
        "server.address": host, "server.port": port, "network.transport": "tcp",
        "pomelo_rpc.server_id": server_id, "pomelo_rpc.transport": transport})


def start_span(tracer: Tracer, spans: RouteSpans, route: str | None,
               context: Context | None = None) -> Span:
    """A span of ``spans``' kind (CLIENT: see ``client_spans``) for a call to ``route``,
    child of the current span (or of ``context``'s)."""
    name, attributes = spans.of(route)
    return tracer.start_span(name, context=context, kind=spans.kind, attributes=attributes)


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


def sampled_parent(carried: object) -> Context | None:
    """``remote_parent`` of what a request the ``Sampler`` sampled carried: a traceparent
    it checked already is read by position (no second parse), anything else as
    ``remote_parent`` reads it."""
    if type(carried) is not str or len(carried) != 55:
        return remote_parent(carried)
    try:
        span_context = SpanContext(trace_id=int(carried[3:35], 16),
                                   span_id=int(carried[36:52], 16), is_remote=True,
                                   trace_flags=TraceFlags(int(carried[53:], 16)))
    except ValueError:
        return remote_parent(carried)
    return set_span_in_context(NonRecordingSpan(span_context), Context())


def server_spans(server_id: str, transport: str) -> RouteSpans:
    """The SERVER spans of the requests ``server_id`` serves."""
    return RouteSpans(SpanKind.SERVER, {"pomelo_rpc.server_id": server_id,
                                        "pomelo_rpc.transport": transport})


def start_server_span(tracer: Tracer, spans: RouteSpans, route: str | None,
                      carried: object) -> Span:
    """A SERVER span (``spans``: see ``server_spans``) for a request to ``route``, child
    of the caller's span when the request carried its ``traceparent``."""
    return start_span(tracer, spans, route, remote_parent(carried))


def end_span(span: Span, error: BaseException | None) -> None:
    """End ``span``: with the error recorded when the call failed; an error saying the
    server could not dispatch it renames it ``pomelo_rpc/unknown`` (no span name per
    garbage route)."""
    if error is not None:
        if not_dispatched(error):
            span.update_name(UNKNOWN_NAME)
        if span.is_recording():
            span.set_attribute("error.type", type(error).__name__)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
