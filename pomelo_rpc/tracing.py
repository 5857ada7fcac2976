"""A call's trace context, and ``rpc_debug_log``: a logging view of it.

Every call that is traced (``tracing=True``) or logged (``rpc_debug_log=True``) carries
one W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``) to the server: in the
native request frame's optional trailing field, and on mqtt as an extra JSON field
``traceparent`` (which Node pomelo-rpc ignores). With tracing it is the OpenTelemetry
CLIENT span's (see ``pomelo_rpc.otel``); with the log alone it continues the trace
current in this process (the request a handler is serving, or an OpenTelemetry span
of the application's), else it starts a new trace.

``rpc_debug_log`` writes one line per step of a call on the ``pomelo_rpc.trace``
logger, at DEBUG. Client: ``rpc send`` when the call is handed to the connection,
``rpc done`` with the outcome and the duration. Server: ``rpc received`` before the
method runs, ``rpc answered`` with the outcome and the duration. Every line carries
``trace=<trace id> route=<namespace.service.method> server=<server id>``: the 32 hex
digits of the trace id are the ones an OpenTelemetry backend shows, and grepping them
finds both sides of a call and the calls it made in turn. A request from a Node client
with its own rpcDebugLog carries pomelo-rpc's ``traceId`` instead, which is logged as it is.

With neither option, nothing of this runs: no context, no extra field, no wrapper.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

log = logging.getLogger("pomelo_rpc.trace")

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

#: the traceparent of the request this task is serving, when no OpenTelemetry span
#: stands for it: with rpc_debug_log alone, or a request tracing did not sample
current_trace: ContextVar[str | None] = ContextVar("pomelo_rpc_traceparent", default=None)

_otel_current_trace: Any = None     # set on first use: a function, or False without the API


def context_id(context: Any, default: str) -> str:
    """The server id a context names (key or attribute ``server_id`` / ``serverId``)."""
    for key in ("server_id", "serverId"):
        if isinstance(context, Mapping):
            value = context.get(key)
        else:
            value = getattr(context, key, None)
        if value:
            return str(value)
    return default


def parse_traceparent(value: object) -> tuple[str, str, int] | None:
    """``(trace id, span id, flags)`` of a W3C traceparent (version 00), or None if
    ``value`` is not a valid one."""
    if type(value) is not str or len(value) != 55:
        return None
    m = _TRACEPARENT.fullmatch(value)
    if m is None or m.group(1) == _ZERO_TRACE or m.group(2) == _ZERO_SPAN:
        return None
    return m.group(1), m.group(2), int(m.group(3), 16)


def trace_id_of(carried: object) -> str | None:
    """The trace id a request carried: from its traceparent, else pomelo-rpc's
    ``traceId`` as it is (a str), else None."""
    parsed = parse_traceparent(carried)
    if parsed is not None:
        return parsed[0]
    return carried if type(carried) is str else None


def _otel_trace_id() -> str | None:
    """The trace id of the application's current OpenTelemetry span, if any."""
    global _otel_current_trace
    if _otel_current_trace is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel_current_trace = False
        else:
            def current() -> str | None:
                ctx = trace.get_current_span().get_span_context()
                return f"{ctx.trace_id:032x}" if ctx.is_valid else None
            _otel_current_trace = current
    return _otel_current_trace() if _otel_current_trace else None


def child_traceparent() -> str:
    """A traceparent for a new call: a new span id in the current trace (the request
    being served, or the application's OpenTelemetry span), or in a new trace."""
    parsed = parse_traceparent(current_trace.get())
    trace_id = parsed[0] if parsed is not None else _otel_trace_id()
    if trace_id is None:
        trace_id = f"{random.getrandbits(128) or 1:032x}"
    return f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-01"


def enter(carried: object) -> Token[str | None]:
    """Make the traceparent a request carried current (its handler's calls continue
    its trace); undo with ``leave``."""
    return current_trace.set(carried if type(carried) is str else None)


def leave(token: Token[str | None]) -> None:
    """Undo ``enter``."""
    current_trace.reset(token)


def describe_outcome(error: BaseException | None) -> str:
    """``ok`` or ``error <Type>: <message>``, as logged."""
    if error is None:
        return "ok"
    return f"error {type(error).__name__}: {error}"


def log_step(step: str, trace: str | None, route: str | None, server_id: str) -> None:
    """Log ``rpc <step>`` (send, received) of a call."""
    log.debug("rpc %s trace=%s route=%s server=%s", step, trace, route, server_id)


def log_outcome(step: str, trace: str | None, route: str | None, server_id: str,
                start: float, error: BaseException | None) -> None:
    """Log ``rpc <step>`` (done, answered) of a call begun at ``start`` (perf_counter)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("rpc %s trace=%s route=%s server=%s %s in %.3f ms", step, trace, route,
                  server_id, describe_outcome(error), (time.perf_counter() - start) * 1000.0)
