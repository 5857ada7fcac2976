"""Tracing's sampling decided before any span is made: pure-Python twin of
``pomelo_rpc/_cy/sampling.pyx`` (same names, same behaviour; the compiled one makes
its ids with a C generator and writes the traceparents in C).

With ``tracing=`` a tracer whose sampler pomelo_rpc recognizes (the OpenTelemetry
SDK's ``ParentBased`` with its default delegates, ``TraceIdRatioBased``,
``ALWAYS_ON``, ``ALWAYS_OFF``; see ``pomelo_rpc.otel.sampler_of``), a ``Sampler``
decides each call's sampling the way that sampler would, from the parent's W3C
``traceparent`` flags and the trace id's low 64 bits. A call it does not sample gets
no span object at all: its context travels as the raw traceparent string (a new span
id in the parent's trace, or a new trace), and a request it does not sample makes
the traceparent it came with current for its handler (``pomelo_rpc.tracing``'s
context variable; a child of it only when its sampled flag must be cleared), so that
the calls the handler makes continue the trace, unsampled. A call it samples
returns None: the caller makes the span with the SDK, whose id generator is then
handed the trace id drawn here (``take_trace_id``), so that the SDK's sampler
decides alike.
"""

from __future__ import annotations

import random
import re
from typing import Any

ALWAYS = 0      # every root sampled
NEVER = 1       # no root sampled
RATIO = 2       # a root sampled when its trace id's low 64 bits are under ``bound``

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_LOW64 = (1 << 64) - 1

_getrandbits = random.getrandbits


def rand64() -> int:
    """A random 64-bit id, never 0."""
    return _getrandbits(64) or 1


def state(value: object) -> int:
    """-1 if ``value`` is not a valid W3C traceparent (version 00), else its sampled
    flag: 1 sampled, 0 not."""
    if type(value) is not str or len(value) != 55:
        return -1
    m = _TRACEPARENT.fullmatch(value)
    if m is None or m.group(1) == _ZERO_TRACE or m.group(2) == _ZERO_SPAN:
        return -1
    return int(m.group(3), 16) & 1


def child(parent: str) -> str:
    """An unsampled traceparent in the trace of ``parent`` (a valid one) with a new span
    id and the parent's other flags."""
    return f"{parent[:36]}{rand64():016x}-{int(parent[53:], 16) & 0xFE:02x}"


def trace_low(parent: str) -> int:
    """The low 64 bits of the trace id of ``parent`` (a valid traceparent)."""
    return int(parent[19:35], 16)


def root(low: int, flags: int) -> str:
    """A traceparent of a new trace whose trace id's low 64 bits are ``low``."""
    return f"00-{rand64():016x}{low:016x}-{rand64():016x}-{flags:02x}"


class Sampler:
    """The sampling of one tracer; see the module docstring.

    ``mode`` and ``bound`` are its root sampler's, ``parent_based`` whether a parent's
    flag decides (else the trace id does, parent or not); ``flags`` the flags of an
    unsampled traceparent (``0x02`` when the SDK's ids are random, W3C level 2).
    ``trace_var`` is the context variable holding the unsampled traceparent of the
    request being served. The application's current OpenTelemetry span is
    ``otel_var.get().get(span_key)`` (OpenTelemetry's own context variable, read
    directly), or ``current_span()`` when ``otel_var`` is None; ``span_parent(span)``
    tells what it means for a call: None (no valid span: as if none), ``""``
    (sampled: the caller makes the call's span with the SDK), or its traceparent
    (unsampled: the call is its child)."""

    def __init__(self, mode: int, bound: int, parent_based: bool, flags: int,
                 trace_var: Any, otel_var: Any, span_key: str, current_span: Any,
                 span_parent: Any) -> None:
        if mode == RATIO and bound > _LOW64:     # rate 1.0: every trace
            mode = ALWAYS
        self.mode = mode
        self.bound = bound if mode == RATIO else 0
        self.parent_based = parent_based
        self.flags = flags
        self.trace_var = trace_var
        self.otel_var = otel_var
        self.span_key = span_key
        self.current_span = current_span
        self.span_parent = span_parent
        self.trace_id = 0           # the trace id of the last root sampled here, or 0

    def sampled_root(self, low: int) -> bool:
        """Whether the root sampler samples a trace whose id's low 64 bits are ``low``."""
        mode = self.mode
        if mode == RATIO:
            return low < self.bound
        return mode == ALWAYS

    def new_root(self) -> str | None:
        """A root: its unsampled traceparent, or None when it is sampled (its trace id
        is then ``take_trace_id()``'s)."""
        low = rand64()
        if self.sampled_root(low):
            self.trace_id = (rand64() << 64) | low
            return None
        return root(low, self.flags)

    def within(self, parent: object) -> str | None:
        """A call in the context of ``parent``: its unsampled traceparent, or None when
        it is sampled; a new root when ``parent`` is not a valid traceparent."""
        flag = state(parent)
        if flag < 0:
            return self.new_root()
        assert isinstance(parent, str)
        if self.parent_based:
            sampled = flag == 1
        else:
            sampled = self.sampled_root(trace_low(parent))
        if sampled:
            return None
        return child(parent)

    def outgoing(self) -> str | None:
        """A call made now: its unsampled traceparent, or None when it is sampled (the
        caller makes its span). Its parent: the application's current OpenTelemetry
        span if there is one, else the request this handler serves, else none."""
        if self.otel_var is not None:
            span = self.otel_var.get().get(self.span_key)
        else:
            span = self.current_span()
        if span is not None:
            parent = self.span_parent(span)
            if parent is not None:
                return None if parent == "" else self.within(parent)
        return self.within(self.trace_var.get())

    def incoming(self, carried: object) -> str | None:
        """A request that carried ``carried`` (its trace field): the unsampled
        traceparent to make current while it runs (``carried`` itself when it is
        unsampled already: no span id is drawn for a span nobody records, and the
        calls its handler makes are children of the caller's), or None when it is
        sampled (the server makes its span)."""
        if state(carried) == 0:
            assert isinstance(carried, str)
            if self.parent_based or not self.sampled_root(trace_low(carried)):
                return carried
            return None
        return self.within(carried)

    def take_trace_id(self) -> int:
        """The trace id of the root just sampled (0 if none): once."""
        trace_id = self.trace_id
        self.trace_id = 0
        return trace_id


class Served:
    """The trace context of the requests one server connection runs during a read:
    ``enter`` before each (its tracer's ``incoming`` made current, or nothing when it is
    sampled), ``settle`` after it, ``stepped`` when a coroutine's first step ran in a
    copy of the context, ``clear`` before a request that sets its own, ``leave`` at the
    end of the read (the context as it was: one reset for the read).

    Here each request's traceparent is set in the context variable; the compiled twin
    sets one str per read and rewrites it in place for the next request when nothing
    but the current context can still see it (see its docstring), which nobody can
    tell apart."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.var = sampler.trace_var
        self.token: Any = None      # the read's first set's, or None
        self.live = False           # ``var`` was set in this read

    def enter(self, carried: object) -> bool:
        """Before a request that carried ``carried`` (its trace field) runs: True when
        its unsampled trace context is made current for it, False when it is sampled
        (nothing current: the caller runs it through the span-making dispatch)."""
        value = self.sampler.incoming(carried)
        if value is None:
            self.clear()
            return False
        token = self.var.set(value)
        if self.token is None:
            self.token = token
        self.live = True
        return True

    def stepped(self, ctx: Any) -> None:
        """A coroutine's first step ran in ``ctx`` (a copy of the current context)."""

    def settle(self) -> None:
        """After the request ``enter`` made current ran."""

    def clear(self) -> None:
        """No trace context current for the read's next request (one that sets its own)."""
        if self.live:
            self.var.set(None)
            self.live = False

    def leave(self) -> None:
        """The end of the read: the context as it was before its first ``enter``."""
        token = self.token
        self.live = False
        if token is not None:
            self.token = None
            self.var.reset(token)
