"""Observing calls: what ``metrics``, ``tracing`` and ``rpc_debug_log`` install.

Metrics are counted inside the core's protocol classes: ``observe_mailbox`` and
``ServerObserver`` give each protocol (and its writer) a ``Meter`` of the core
(``pomelo_rpc.core.meter``), which counts the calls as they end and the bytes read
and written, with no Python step in the call path; the route of a message is resolved
here (``_RouteSeries``) the first time it is seen, and the outcomes of failed calls
too. Tracing and ``rpc_debug_log`` wrap the call path: on the client a mailbox's
``send``, on the server each connection's protocol's ``dispatch``. Everything is
installed when the mailbox or the connection is made, and only when one of the
options is on: with the three off the call path is the one without this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import not_dispatched
from .tracing import (child_traceparent, context_id, current_trace, enter, leave,
                      log_outcome, log_step, trace_id_of)

if TYPE_CHECKING:
    from .acceptor import BaseAcceptor, ServerConnection
    from .core.meter import Meter, Series
    from .mailbox import Mailbox
    from .metrics import Side
    from .otel import RouteSpans

_clock = time.perf_counter


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


def _observed(send: Callable[..., Any], routes: _RouteSeries,
              ok: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``send`` counting each call in ``routes``, ``ok`` when it went well (a notify's:
    the calls are counted in the protocol, see ``pomelo_rpc.core.meter``)."""
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
        start_span, traceparent, end_span = (otel.start_span, otel.traceparent,
                                             otel.end_span)
        spans = otel.client_spans(sid, mailbox.host, mailbox.port, str(opts["transport"]))
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

        meter = side.client_meter(mailbox.core, sid, lambda: _RouteSeries(
            side, sid, mailbox.core.meter.client_key, call_route))
        mailbox.protocol.meter = mailbox.protocol.writer.meter = meter
        mailbox._on_connect = reconnected
        routes = meter.routes
    if tracer is None and not debug:
        if routes is not None:      # the calls are counted in the protocol, notifies here
            mailbox.notify = _observed(  # type: ignore[method-assign,assignment]
                mailbox.notify, routes, "notify")
            mailbox.notify_direct = None
        return
    mailbox._trace_prefix = context_id(opts.get("context"), "client")
    send = mailbox.send
    notify = mailbox.notify

    def observed(send: Callable[..., Any], ok: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        """``send`` (a call's, or a notify's when ``ok`` is "notify") with a span and/or
        the debug log, and a notify's metrics (a call's are counted in the protocol)."""
        async def observed_send(msg: dict[str, Any], timeout: float | None = None) -> Any:
            span: Any = None
            if tracer is not None:
                span = start_span(tracer, spans, call_route(msg))
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
                if routes is not None and ok == "notify":
                    routes.record(msg, error, _clock() - start, ok)
                if span is not None:
                    end_span(span, error)
                if debug:
                    log_outcome("done" if ok == "ok" else "sent", carried[3:35],
                                call_route(msg), sid, start, error)
        return observed_send

    mailbox.notify = observed(notify, "notify")  # type: ignore[method-assign,assignment]
    mailbox.notify_direct = None
    if tracer is not None and not debug:
        sampler = otel.sampler_of(tracer, mailbox.core)
        if sampler is not None:     # sampling decided in the protocol, spans only if sampled
            mailbox.protocol.tracer = sampler
            mailbox.protocol.on_sampled = _sampled_calls(mailbox, tracer, sampler, spans)
            return
    mailbox.send = observed(send, "ok")  # type: ignore[method-assign,assignment]
    mailbox.direct = None


def _sampled_calls(mailbox: Mailbox, tracer: Any, sampler: Any, spans: RouteSpans,
                   ) -> Callable[[dict[str, Any], float | None], Any]:
    """What the protocol of ``mailbox`` does with a call its ``sampler`` samples: its
    CLIENT span, made with the SDK (the parent: the application's current span, else
    the unsampled request being served, else none: a root with the trace id the
    sampler drew), ended when the call does."""
    from opentelemetry.trace import get_current_span

    from . import otel
    from .mailbox import call_route
    protocol = mailbox.protocol

    start_span, traceparent, end_span = otel.start_span, otel.traceparent, otel.end_span
    send, take_trace_id, Context = protocol.send_carrying, sampler.take_trace_id, otel.Context
    presupply = otel.presupply(tracer)

    def ended(span: Any, fut: asyncio.Future[Any]) -> None:
        """The call of ``span`` ended (its future ``fut``): end the span."""
        error = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        end_span(span, error)

    def sampled(msg: dict[str, Any], timeout: float | None) -> Any:
        context = None
        trace_id = take_trace_id()
        if trace_id:
            presupply(trace_id)
            context = Context()
        elif not get_current_span().get_span_context().is_valid:
            context = otel.remote_parent(current_trace.get())
        span = start_span(tracer, spans, call_route(msg), context)
        try:
            fut = send(msg, timeout, traceparent(span))
        except BaseException as exc:
            end_span(span, exc)
            raise
        fut.add_done_callback(partial(ended, span))
        return fut
    return sampled


# server -----------------------------------------------------------------------------

class ServerObserver:
    """What ``metrics``, ``tracing`` and ``rpc_debug_log`` install on an acceptor's
    connections: a meter on each protocol and its writer (metrics), ``dispatch``
    wrapped (tracing, the debug log)."""

    def __init__(self, acceptor: BaseAcceptor) -> None:
        opts = acceptor.opts
        self.server_id = server_id = context_id(opts.get("context"), "server")
        self.debug = bool(opts.get("rpc_debug_log"))
        self.tracer: Any = None
        if opts.get("tracing"):
            from . import otel
            self.tracer = otel.tracer_of(opts["tracing"])
        self.meter: Meter | None = None
        dispatcher = acceptor.dispatcher
        if opts.get("metrics"):
            from .metrics import for_registry
            metrics = for_registry(opts.get("metrics_registry"))
            metrics.add_acceptor(acceptor, server_id)
            side = metrics.server
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
            routes = _RouteSeries(side, server_id, acceptor.core.meter.server_key, route_of)
            self.meter = acceptor.core.meter.Meter(routes, True)
            side.add_meter(server_id, self.meter)
            # requests refused (busy) or skipped (expired) never reach dispatch: the
            # acceptor's overload control reports them here (pomelo_rpc.overload)

            def refused(_conn: object, request: Any, outcome: str) -> None:
                routes.lookup(request).add(outcome, 0.0)
            acceptor.overload.on_refused = refused
        #: requests carry a trace context the wrapper reads
        self.reads_context = self.tracer is not None or self.debug
        #: tracing alone, a sampler pomelo_rpc knows: the protocol decides each
        #: request's sampling, and only a sampled one runs through the wrapper
        self.sampler: Any = None
        if self.tracer is not None and not self.debug:
            from . import otel
            self.sampler = otel.sampler_of(self.tracer, acceptor.core)
        #: a connection's ``core.sampling.Served`` of ``sampler`` (the acceptor's core's)
        self.served_of: Any = acceptor.core.sampling.Served
        self.dispatch = (None if not self.reads_context else
                         self._sampled_dispatch(acceptor) if self.sampler is not None else
                         self._observed_dispatch(acceptor))

    def attach(self, conn: ServerConnection) -> None:
        """Install on a new connection: the meter on its protocol and its writer, the
        wrapped ``dispatch``."""
        protocol = conn._protocol
        if self.sampler is not None and self.dispatch is not None:
            protocol.tracer = self.sampler
            protocol.served = self.served_of(self.sampler)
            protocol.traced_dispatch = self.dispatch
        elif self.dispatch is not None:
            protocol.dispatch = self.dispatch
        protocol.tracing = self.reads_context
        if self.meter is not None:
            protocol.meter = protocol.writer.meter = self.meter

    def _sampled_dispatch(self, acceptor: BaseAcceptor,
                          ) -> Callable[[object], tuple[int, int, Any]]:
        """``dispatch`` of a request the ``Sampler`` sampled (``traced_dispatch``): its
        SERVER span made with the SDK, current while the method runs, ended when it
        ends (a root: with the trace id the sampler drew)."""
        from . import otel
        dispatcher = acceptor.dispatcher
        dispatch, describe = dispatcher.dispatch, dispatcher.describe
        done_state = acceptor.core.dispatch.DONE
        pending_state = acceptor.core.dispatch.PENDING
        tracer, take_trace_id = self.tracer, self.sampler.take_trace_id
        spans = otel.server_spans(self.server_id, str(acceptor.opts["transport"]))
        start_span, end_span = otel.start_span, otel.end_span
        presupply = otel.presupply(tracer)
        sampled_parent, in_context = otel.sampled_parent, otel.set_span_in_context
        attach, detach = otel.attach, otel.detach

        def enter_span(current: otel.Context) -> Callable[[], None]:
            """Make ``current`` the context; return what undoes it."""
            token = attach(current)
            return partial(detach, token)

        def sampled(msg: object) -> tuple[int, int, Any]:
            info = describe(msg)
            if info is None:
                return dispatch(msg)
            trace_id = take_trace_id()
            if trace_id:                # a root: the trace id the sampler drew
                presupply(trace_id)
                parent = None
            else:                       # the caller's sampled span
                parent = sampled_parent(info[0])
            span = start_span(tracer, spans, info[1], parent)
            current = in_context(span)
            token = attach(current)
            try:
                rid, state, outcome = dispatch(msg)
            finally:
                detach(token)
            if state == pending_state:
                return rid, state, _run_suspended(outcome, partial(enter_span, current),
                                                  partial(end_span, span))
            error = None if state == done_state else outcome
            end_span(span, error)
            return rid, state, outcome

        return sampled

    def _observed_dispatch(self, acceptor: BaseAcceptor,
                           ) -> Callable[[object], tuple[int, int, Any]]:
        """``dispatch`` with spans and/or the debug log."""
        dispatcher = acceptor.dispatcher
        dispatch, describe = dispatcher.dispatch, dispatcher.describe
        done_state = acceptor.core.dispatch.DONE
        pending_state = acceptor.core.dispatch.PENDING
        server_id, tracer, debug = self.server_id, self.tracer, self.debug
        transport = str(acceptor.opts["transport"])
        if tracer is not None:
            from . import otel
            start_span, end_span = otel.start_server_span, otel.end_span
            spans = otel.server_spans(server_id, transport)
            otel_attach, otel_detach, in_context = (otel.attach, otel.detach,
                                                    otel.set_span_in_context)

        def enter_context(carried: object, span: Any) -> Callable[[], None]:
            """Make the request's context current; return what undoes it."""
            if span is not None:
                token = otel_attach(in_context(span))
                return lambda: otel_detach(token)
            debug_token = enter(carried)
            return lambda: leave(debug_token)

        def finish(route: str | None, span: Any, trace: str | None, start: float,
                   error: BaseException | None) -> None:
            if span is not None:
                end_span(span, error)
            if debug:
                log_outcome("answered", trace, route, server_id, start, error)

        def observed(msg: object) -> tuple[int, int, Any]:
            info = describe(msg)
            if info is None:
                return dispatch(msg)
            carried, route = info
            span = None
            if tracer is not None:
                span = start_span(tracer, spans, route, carried)
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
                return rid, state, _run_suspended(
                    outcome, partial(enter_context, carried, span),
                    partial(finish, route, span, trace, start))
            finish(route, span, trace, start, None if state == done_state else outcome)
            return rid, state, outcome

        return observed


async def _run_suspended(coro: Coroutine[Any, Any, Any], enter: Callable[[], Callable[[], None]],
                         finish: Callable[[BaseException | None], None]) -> Any:
    """Await ``coro``, a method that suspended, in the task that runs it: ``enter()``
    makes the request's context current there and returns what undoes it;
    ``finish(error)`` once the method has ended (None when it returned)."""
    undo = enter()
    error: BaseException | None = None
    try:
        return await coro
    except BaseException as exc:
        error = exc
        raise
    finally:
        undo()
        finish(error)


def observe_acceptor(acceptor: BaseAcceptor) -> ServerObserver | None:
    """The observer of ``acceptor``'s connections, or None when every option is off."""
    opts = acceptor.opts
    if opts.get("metrics") or opts.get("tracing") or opts.get("rpc_debug_log"):
        return ServerObserver(acceptor)
    return None
