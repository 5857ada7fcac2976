"""Observing calls: what ``metrics``, ``tracing`` and ``rpc_debug_log`` install.

On the client, ``observe_mailbox`` wraps a mailbox's ``send`` (and, for metrics, its
``connection_made``/``data_received`` to count bytes and reconnects). On the server,
``ServerObserver`` wraps the acceptor's ``dispatch`` for each connection. The wrappers
are installed when the mailbox or the connection is made, and only when one of the
options is on: with the three off the call path is the one without this module, with
no added branch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from .errors import DispatchError, RemoteError
from .tracing import (child_traceparent, context_id, enter, leave, log_outcome, log_step,
                      trace_id_of)

if TYPE_CHECKING:
    from .acceptor import BaseAcceptor, ServerConnection
    from .mailbox import Mailbox
    from .metrics import Series, Side

_clock = time.perf_counter


def not_dispatched(exc: BaseException | None) -> bool:
    """True when ``exc`` (a client's or a server's) says the server could not dispatch
    the call: unknown route, wrong argument count, removed method."""
    return isinstance(exc, DispatchError) or (
        isinstance(exc, RemoteError) and exc.remote_type == "DispatchError")


class CountingTransport:
    """A transport whose writes add their size to ``table[key]`` (metrics' bytes)."""

    __slots__ = ("_transport", "_table", "_key")

    def __init__(self, transport: asyncio.Transport, table: dict[str, int], key: str) -> None:
        self._transport = transport
        self._table = table
        self._key = key

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` and count it."""
        self._transport.write(data)
        self._table[self._key] = self._table.get(self._key, 0) + len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _count_bytes(protocol: Any, side: Side, key: str,
                 on_connect: Callable[[], None] | None = None) -> None:
    """Count what ``protocol`` (a mailbox or a server connection) reads and writes."""
    made = protocol.connection_made
    received = protocol.data_received
    sent_table, received_table = side.sent, side.received

    def connection_made(transport: asyncio.Transport) -> None:
        if on_connect is not None:
            on_connect()
        made(cast("asyncio.Transport", CountingTransport(transport, sent_table, key)))

    def data_received(data: bytes) -> None:
        received_table[key] = received_table.get(key, 0) + len(data)
        received(data)

    protocol.connection_made = connection_made
    protocol.data_received = data_received


class _RouteSeries:
    """The metric series of one peer, by route; unknown routes share one series."""

    def __init__(self, side: Side, server_id: str) -> None:
        from .metrics import MAX_ROUTES, UNKNOWN_ROUTE, outcome_of
        self._side = side
        self._server_id = server_id
        self._cache: dict[Any, Series] = {}
        self._max = MAX_ROUTES
        self._unknown_route = UNKNOWN_ROUTE
        self.outcome_of = outcome_of

    def get(self, key: Any, route: Callable[[], str | None]) -> Series:
        """The series of route ``key`` (hashable); ``route()`` names it on first use."""
        try:
            series = self._cache.get(key)
        except TypeError:       # an unhashable name: not a route the server knows
            return self._side.get(self._unknown_route, self._server_id)
        if series is None:
            name = route()
            series = self._side.get(name or self._unknown_route, self._server_id)
            if len(self._cache) < self._max:
                self._cache[key] = series
        return series

    def add(self, key: Any, route: Callable[[], str | None], error: BaseException | None,
            seconds: float) -> None:
        """Count one call of route ``key`` that ended with ``error`` after ``seconds``."""
        if error is None:
            self.get(key, route).add("ok", seconds)
        elif not_dispatched(error):
            self._side.get(self._unknown_route, self._server_id).add("error", seconds)
        else:
            self.get(key, route).add(self.outcome_of(error), seconds)


# client -----------------------------------------------------------------------------

def observe_mailbox(mailbox: Mailbox, opts: dict[str, Any]) -> None:
    """Install on ``mailbox`` what ``metrics``, ``tracing`` and ``rpc_debug_log`` ask for."""
    from .mailbox import call_route
    sid = mailbox.server_id
    debug = bool(opts.get("rpc_debug_log"))
    tracer: Any = None
    if opts.get("tracing"):
        from . import otel
        tracer = otel.tracer_of(opts["tracing"])
        start_span, traceparent, end_span = (otel.start_client_span, otel.traceparent,
                                             otel.end_span)
    series: _RouteSeries | None = None
    if opts.get("metrics"):
        from .metrics import for_registry
        metrics = for_registry(opts.get("metrics_registry"))
        metrics.add_mailbox(mailbox)
        side = metrics.client

        def reconnected() -> None:
            if sid in side.connected:
                side.reconnects[sid] = side.reconnects.get(sid, 0) + 1
            else:
                side.connected.add(sid)

        if isinstance(mailbox, asyncio.Protocol):
            _count_bytes(mailbox, side, sid, reconnected)
        series = _RouteSeries(side, sid)
    if tracer is not None or debug:
        mailbox._trace_prefix = context_id(opts.get("context"), "client")
    transport = str(opts.get("transport", "native"))
    send = mailbox.send

    async def observed_send(msg: dict[str, Any], timeout: float | None = None) -> Any:
        span: Any = None
        carried = None
        if tracer is not None:
            span = start_span(tracer, call_route(msg), sid, mailbox.host, mailbox.port,
                              transport)
            carried = traceparent(span)
        elif debug:
            carried = child_traceparent()
        if carried is not None:
            msg = dict(msg)
            msg["trace_id"] = carried
        if debug:
            log_step("send", carried[3:35] if carried else None, call_route(msg), sid)
        start = _clock()
        error: BaseException | None = None
        try:
            return await send(msg, timeout)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if series is not None:
                series.add((msg.get("namespace"), msg.get("service"), msg.get("method")),
                           lambda: call_route(msg), error, _clock() - start)
            if span is not None:
                end_span(span, error, not not_dispatched(error))
            if debug:
                log_outcome("done", carried[3:35] if carried else None, call_route(msg), sid,
                            start, error)

    mailbox.send = observed_send  # type: ignore[method-assign,assignment]


# server -----------------------------------------------------------------------------

class ServerObserver:
    """What ``metrics``, ``tracing`` and ``rpc_debug_log`` install on an acceptor's
    connections: ``dispatch`` wrapped, and metrics' byte counts."""

    def __init__(self, acceptor: BaseAcceptor) -> None:
        opts = acceptor.opts
        self.server_id = server_id = context_id(opts.get("context"), "server")
        self.debug = debug = bool(opts.get("rpc_debug_log"))
        self.tracer: Any = None
        if opts.get("tracing"):
            from . import otel
            self.tracer = otel.tracer_of(opts["tracing"])
        self.side: Side | None = None
        series: _RouteSeries | None = None
        if opts.get("metrics"):
            from .metrics import for_registry
            metrics = for_registry(opts.get("metrics_registry"))
            metrics.add_acceptor(acceptor, server_id)
            self.side = metrics.server
            series = _RouteSeries(self.side, server_id)
        #: requests carry a trace context the wrapper reads
        self.reads_context = self.tracer is not None or debug
        self.dispatch = self._make_dispatch(acceptor, series)

    def attach(self, conn: ServerConnection) -> None:
        """Install the wrappers on a new connection."""
        conn._dispatch = self.dispatch
        conn._tracing = self.reads_context
        if self.side is not None:
            _count_bytes(conn, self.side, self.server_id)

    def _make_dispatch(self, acceptor: BaseAcceptor, series: _RouteSeries | None,
                       ) -> Callable[[object], tuple[int, int, Any]]:
        dispatcher = acceptor.dispatcher
        dispatch, describe = dispatcher.dispatch, dispatcher.describe
        done_state = acceptor.core.dispatch.DONE
        pending_state = acceptor.core.dispatch.PENDING
        server_id, tracer, debug = self.server_id, self.tracer, self.debug
        transport = str(acceptor.opts.get("transport", "native"))
        if tracer is not None:
            from . import otel
            start_span, end_span = otel.start_server_span, otel.end_span
            otel_attach, otel_detach, in_context = (otel.attach, otel.detach,
                                                    otel.set_span_in_context)

        def enter_context(carried: object, span: Any) -> Callable[[], None] | None:
            """Make the request's context current; return what undoes it."""
            if span is not None:
                token = otel_attach(in_context(span))
                return lambda: otel_detach(token)
            if debug:
                debug_token = enter(carried)
                return lambda: leave(debug_token)
            return None

        def finish(msg: object, route: str | None, span: Any, trace: str | None,
                   start: float, error: BaseException | None) -> None:
            if series is not None:
                key = msg[2] if type(msg) is list and msg[0] == 1 else route
                series.add(key, lambda: route, error, _clock() - start)
            if span is not None:
                end_span(span, error, not not_dispatched(error))
            if debug:
                log_outcome("answered", trace, route, server_id, start, error)

        async def finish_later(coro: Coroutine[Any, Any, Any], msg: object, carried: object,
                               route: str | None, span: Any, trace: str | None,
                               start: float) -> Any:
            undo = enter_context(carried, span)     # in the task that runs the method
            error: BaseException | None = None
            try:
                return await coro
            except BaseException as exc:
                error = exc
                raise
            finally:
                if undo is not None:
                    undo()
                finish(msg, route, span, trace, start, error)

        def observed(msg: object) -> tuple[int, int, Any]:
            info = describe(msg)
            if info is None:
                return dispatch(msg)
            carried, route = info
            span = None
            if tracer is not None:
                span = start_span(tracer, route, carried, server_id, transport)
            trace = None
            if debug:
                trace = trace_id_of(carried)
                log_step("received", trace, route, server_id)
            start = _clock()
            undo = enter_context(carried, span)
            try:
                rid, state, outcome = dispatch(msg)
            finally:
                if undo is not None:
                    undo()
            if state == pending_state:
                return rid, state, finish_later(outcome, msg, carried, route, span, trace,
                                                start)
            finish(msg, route, span, trace, start, None if state == done_state else outcome)
            return rid, state, outcome

        return observed


def observe_acceptor(acceptor: BaseAcceptor) -> ServerObserver | None:
    """The observer of ``acceptor``'s connections, or None when every option is off."""
    opts = acceptor.opts
    if opts.get("metrics") or opts.get("tracing") or opts.get("rpc_debug_log"):
        return ServerObserver(acceptor)
    return None
