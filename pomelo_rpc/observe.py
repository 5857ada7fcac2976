"""Observing calls: what ``metrics``, ``tracing`` and ``rpc_debug_log`` install.

On the client, ``observe_mailbox`` wraps a mailbox's ``send`` (and, for metrics, its
protocol in a ``CountingProtocol`` to count bytes and reconnects). On the server,
``ServerObserver`` replaces each connection's protocol's ``dispatch`` with a wrapper of
the dispatcher's (and, for metrics, wraps the protocol in a ``CountingProtocol``). The wrappers
are installed when the mailbox or the connection is made, and only when one of the
options is on: with the three off the call path is the one without this module, with
no added branch.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from .core.dispatch import NOTIFY_RID
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

    def writelines(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` and count them."""
        self._transport.writelines(chunks)
        self._table[self._key] = self._table.get(self._key, 0) + sum(map(len, chunks))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingProtocol:
    """The protocol asyncio talks to when metrics count bytes: ``inner`` (a protocol
    object of the core, whose methods cannot be wrapped one by one) gets a
    CountingTransport, and what it reads is counted into ``side.received[key]``."""

    def __init__(self, inner: Any, side: Side, key: str,
                 on_connect: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._side = side
        self._key = key
        self._on_connect = on_connect

    def connection_made(self, transport: asyncio.Transport) -> None:
        """asyncio: connected; the inner protocol gets a counting transport."""
        if self._on_connect is not None:
            self._on_connect()
        self._inner.connection_made(CountingTransport(transport, self._side.sent, self._key))

    def data_received(self, data: bytes) -> None:
        """asyncio: count, then hand over."""
        table = self._side.received
        table[self._key] = table.get(self._key, 0) + len(data)
        self._inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: hand over."""
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        """asyncio: hand over."""
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        """asyncio: hand over."""
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        """asyncio: hand over."""
        self._inner.resume_writing()


class _RouteSeries:
    """The metric series of one peer, by route: ``key_of(msg)`` is a hashable key of the
    message's route, ``route_of(msg)`` its name; calls the server could not dispatch
    share the ``unknown`` series, and so do names that are no route at all."""

    def __init__(self, side: Side, server_id: str, key_of: Callable[[Any], Any],
                 route_of: Callable[[Any], str | None]) -> None:
        from .metrics import MAX_ROUTES, UNKNOWN_ROUTE, outcome_of
        from .overload import DEADLINE_PASSED

        def outcome(exc: BaseException) -> str:
            # a coroutine call cut at its deadline by the server's overload control
            if isinstance(exc, asyncio.CancelledError) and exc.args == (DEADLINE_PASSED,):
                return "expired"
            return outcome_of(exc)
        self.cache: dict[Any, Series] = {}     # by key_of(msg), read by the fast paths
        self._side = side
        self._server_id = server_id
        self._key_of = key_of
        self._route_of = route_of
        self._max = MAX_ROUTES
        self._outcome_of = outcome
        self._unknown_route = UNKNOWN_ROUTE

    @property
    def unknown(self) -> Series:
        """The series of calls to no route the server knows (made on first use)."""
        return self._side.get(self._unknown_route, self._server_id)

    def lookup(self, msg: Any) -> Series:
        """The series of ``msg``'s route, made on first use."""
        try:
            key = self._key_of(msg)
            series = self.cache.get(key)
        except (TypeError, KeyError, IndexError):   # no route: unhashable or missing names
            return self.unknown
        if series is None:
            route = self._route_of(msg)
            series = self._side.get(route, self._server_id) if route else self.unknown
            if len(self.cache) < self._max:
                self.cache[key] = series
        return series

    def record(self, msg: Any, error: BaseException | None, seconds: float,
               ok: str = "ok") -> None:
        """Count one call of ``msg`` that ended with ``error`` (None: ``ok``, the outcome
        of a call that went well: ``notify`` for a notify) after ``seconds``."""
        if error is None:
            self.lookup(msg).add(ok, seconds)
        elif not_dispatched(error):
            self.unknown.add("error", seconds)
        else:
            self.lookup(msg).add(self._outcome_of(error), seconds)


def _client_key(msg: dict[str, Any]) -> tuple[Any, Any, Any]:
    return msg["namespace"], msg["service"], msg["method"]


def _is_notify(msg: Any) -> bool:
    """True if ``msg``, a request inside a server, is a notify's."""
    return bool(msg[1] == NOTIFY_RID)


# client -----------------------------------------------------------------------------

def _metered_send(send: Callable[..., Any], routes: _RouteSeries,
                  ) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``send`` counting each call in ``routes`` (metrics alone: the fast path)."""
    from .metrics import BUCKETS
    cache = routes.cache
    record = routes.record
    clock = _clock

    async def metered_send(msg: dict[str, Any], timeout: float | None = None) -> Any:
        start = clock()
        try:
            result = await send(msg, timeout)
        except BaseException as exc:
            record(msg, exc, clock() - start)
            raise
        seconds = clock() - start
        try:
            series = cache[msg["namespace"], msg["service"], msg["method"]]
        except (KeyError, TypeError):
            series = routes.lookup(msg)
        series.buckets[bisect_left(BUCKETS, seconds)] += 1
        series.seconds += seconds
        return result

    return metered_send


def _observed(send: Callable[..., Any], routes: _RouteSeries,
              ok: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``send`` counting each call in ``routes``, ``ok`` when it went well."""
    async def counted(msg: dict[str, Any], timeout: float | None = None) -> Any:
        start = _clock()
        error: BaseException | None = None
        try:
            return await send(msg, timeout)
        except BaseException as exc:
            error = exc
            raise
        finally:
            routes.record(msg, error, _clock() - start, ok)
    return counted


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
    routes: _RouteSeries | None = None
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

        mailbox._wrap_protocol = lambda inner: CountingProtocol(inner, side, sid, reconnected)
        routes = _RouteSeries(side, sid, _client_key, call_route)
    send = mailbox.send
    notify = mailbox.notify
    if tracer is None and not debug:
        assert routes is not None
        mailbox.send = _metered_send(send, routes)  # type: ignore[method-assign,assignment]
        mailbox.notify = _observed(notify, routes, "notify")  # type: ignore[method-assign,assignment]
        mailbox.direct = None
        return
    mailbox._trace_prefix = context_id(opts.get("context"), "client")
    transport = str(opts["transport"])

    def observed(send: Callable[..., Any], ok: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        """``send`` (a call's, or a notify's when ``ok`` is "notify") with a span and/or
        the debug log and metrics."""
        async def observed_send(msg: dict[str, Any], timeout: float | None = None) -> Any:
            span: Any = None
            if tracer is not None:
                span = start_span(tracer, call_route(msg), sid, mailbox.host, mailbox.port,
                                  transport)
                carried = traceparent(span)
            else:
                carried = child_traceparent()
            msg = dict(msg)
            msg["trace_id"] = carried
            if debug:
                log_step("send", carried[3:35], call_route(msg), sid)
            start = _clock()
            error: BaseException | None = None
            try:
                return await send(msg, timeout)
            except BaseException as exc:
                error = exc
                raise
            finally:
                if routes is not None:
                    routes.record(msg, error, _clock() - start, ok)
                if span is not None:
                    end_span(span, error, not not_dispatched(error))
                if debug:
                    log_outcome("done" if ok == "ok" else "sent", carried[3:35],
                                call_route(msg), sid, start, error)
        return observed_send

    mailbox.send = observed(send, "ok")  # type: ignore[method-assign,assignment]
    mailbox.notify = observed(notify, "notify")  # type: ignore[method-assign,assignment]
    mailbox.direct = None


# server -----------------------------------------------------------------------------

class ServerObserver:
    """What ``metrics``, ``tracing`` and ``rpc_debug_log`` install on an acceptor's
    connections: ``dispatch`` wrapped, and metrics' byte counts."""

    def __init__(self, acceptor: BaseAcceptor) -> None:
        opts = acceptor.opts
        self.server_id = server_id = context_id(opts.get("context"), "server")
        self.debug = bool(opts.get("rpc_debug_log"))
        self.tracer: Any = None
        if opts.get("tracing"):
            from . import otel
            self.tracer = otel.tracer_of(opts["tracing"])
        self.side: Side | None = None
        routes: _RouteSeries | None = None
        dispatcher = acceptor.dispatcher
        if opts.get("metrics"):
            from .metrics import for_registry
            metrics = for_registry(opts.get("metrics_registry"))
            metrics.add_acceptor(acceptor, server_id)
            self.side = metrics.server
            describe = dispatcher.describe

            def route_of(msg: Any) -> str | None:
                """The route a request names, if the server serves it (else None: the
                ``unknown`` series; never a series per name a client made up)."""
                info = describe(msg)
                route = None if info is None else info[1]
                if route is not None and msg[0] != 1:      # by name: check it is served
                    try:
                        dispatcher.by_name(msg[2], msg[3], msg[4])
                    except Exception:
                        return None
                return route
            routes = _RouteSeries(self.side, server_id, _server_key, route_of)
            # requests refused (busy) or skipped (expired) never reach dispatch: the
            # acceptor's overload control reports them here (pomelo_rpc.overload)
            refused_routes = routes

            def refused(_conn: object, request: Any, outcome: str) -> None:
                refused_routes.lookup(request).add(outcome, 0.0)
            acceptor.overload.on_refused = refused
        #: requests carry a trace context the wrapper reads
        self.reads_context = self.tracer is not None or self.debug
        states = acceptor.core.dispatch
        if self.reads_context:
            self.dispatch = self._observed_dispatch(acceptor, routes)
        else:
            assert routes is not None
            self.dispatch = _metered_dispatch(dispatcher.dispatch, routes, states.DONE,
                                              states.PENDING)

    def attach(self, conn: ServerConnection) -> None:
        """Install the wrappers on a new connection: its protocol's ``dispatch``, and
        with metrics a wrapper of the protocol counting bytes, which asyncio gets."""
        protocol = conn._protocol
        protocol.dispatch = self.dispatch
        protocol.tracing = self.reads_context
        if self.side is not None:
            conn.protocol = cast("asyncio.BaseProtocol",
                                 CountingProtocol(protocol, self.side, self.server_id))

    def _observed_dispatch(self, acceptor: BaseAcceptor, routes: _RouteSeries | None,
                           ) -> Callable[[object], tuple[int, int, Any]]:
        """``dispatch`` with spans and/or the debug log (and metrics, if on)."""
        dispatcher = acceptor.dispatcher
        dispatch, describe = dispatcher.dispatch, dispatcher.describe
        done_state = acceptor.core.dispatch.DONE
        pending_state = acceptor.core.dispatch.PENDING
        server_id, tracer, debug = self.server_id, self.tracer, self.debug
        transport = str(acceptor.opts["transport"])
        if tracer is not None:
            from . import otel
            start_span, end_span = otel.start_server_span, otel.end_span
            otel_attach, otel_detach, in_context = (otel.attach, otel.detach,
                                                    otel.set_span_in_context)

        def enter_context(carried: object, span: Any) -> Callable[[], None]:
            """Make the request's context current; return what undoes it."""
            if span is not None:
                token = otel_attach(in_context(span))
                return lambda: otel_detach(token)
            debug_token = enter(carried)
            return lambda: leave(debug_token)

        def finish(msg: object, route: str | None, span: Any, trace: str | None,
                   start: float, error: BaseException | None) -> None:
            if routes is not None:
                routes.record(msg, error, _clock() - start,
                              "notify" if _is_notify(msg) else "ok")
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
                undo()
            if state == pending_state:
                return rid, state, finish_later(outcome, msg, carried, route, span, trace,
                                                start)
            finish(msg, route, span, trace, start, None if state == done_state else outcome)
            return rid, state, outcome

        return observed


def _server_key(msg: Any) -> Any:
    """A request's route key: its method id, or its names (kinds 1 and 2)."""
    return msg[2] if msg[0] == 1 else (msg[2], msg[3], msg[4])


def _metered_dispatch(dispatch: Callable[[object], tuple[int, int, Any]], routes: _RouteSeries,
                      done_state: int, pending_state: int,
                      ) -> Callable[[object], tuple[int, int, Any]]:
    """``dispatch`` counting each request in ``routes`` (metrics alone: the fast path)."""
    from .metrics import BUCKETS
    cache = routes.cache
    record = routes.record
    clock = _clock

    async def metered_later(coro: Coroutine[Any, Any, Any], msg: object, start: float) -> Any:
        try:
            result = await coro
        except BaseException as exc:
            record(msg, exc, clock() - start)
            raise
        record(msg, None, clock() - start, "notify" if _is_notify(msg) else "ok")
        return result

    def metered(msg: Any) -> tuple[int, int, Any]:
        start = clock()
        rid, state, outcome = dispatch(msg)     # FrameError (no request) goes up uncounted
        if state == pending_state:
            return rid, state, metered_later(outcome, msg, start)
        seconds = clock() - start
        if state != done_state:
            record(msg, outcome, seconds)
            return rid, state, outcome
        if rid == NOTIFY_RID:
            record(msg, None, seconds, "notify")
            return rid, state, outcome
        try:
            series = cache[msg[2] if msg[0] == 1 else (msg[2], msg[3], msg[4])]
        except KeyError:
            series = routes.lookup(msg)
        series.buckets[bisect_left(BUCKETS, seconds)] += 1
        series.seconds += seconds
        return rid, state, outcome

    return metered


def observe_acceptor(acceptor: BaseAcceptor) -> ServerObserver | None:
    """The observer of ``acceptor``'s connections, or None when every option is off."""
    opts = acceptor.opts
    if opts.get("metrics") or opts.get("tracing") or opts.get("rpc_debug_log"):
        return ServerObserver(acceptor)
    return None
