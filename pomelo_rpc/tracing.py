"""``rpc_debug_log``: a trace id per call, carried to the server with the request, and
one log line per step of the call on the ``pomelo_rpc.trace`` logger, at DEBUG.

Client (the mailbox): ``rpc send`` when the call is handed to the connection, ``rpc done``
with the outcome and the duration. Server (the acceptor): ``rpc received`` before the
method runs, ``rpc answered`` with the outcome and the duration. Every line carries
``trace=<id> route=<namespace.service.method> server=<server id>``, so that grepping a
trace id finds both sides of a call. A trace id is ``<client server_id>-<n>`` (``client-<n>``
when the client's context names no server id), ``n`` counting the calls of the process.

The native protocol carries the id as a trailing field of the request frame; the mqtt
one as pomelo-rpc's ``traceId`` (with ``seqId``, ``source``, ``remote``) beside ``id`` and
``msg``. With the option off nothing of this runs: no id, no extra field, no wrapper.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import DispatcherLike

log = logging.getLogger("pomelo_rpc.trace")

_counter = itertools.count(1)


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


def new_trace_id(prefix: str) -> str:
    """A trace id unique in this process: ``<prefix>-<n>``."""
    return f"{prefix}-{next(_counter)}"


def describe_outcome(error: BaseException | None) -> str:
    """``ok`` or ``error <Type>: <message>``, as logged."""
    if error is None:
        return "ok"
    return f"error {type(error).__name__}: {error}"


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# client ------------------------------------------------------------------------

def log_send(trace: str, route: str, server_id: str) -> float:
    """Log a call being sent; return its start time (for ``log_done``)."""
    log.debug("rpc send trace=%s route=%s server=%s", trace, route, server_id)
    return time.perf_counter()


def log_done(trace: str, route: str, server_id: str, start: float,
             error: BaseException | None) -> None:
    """Log the outcome of a call sent at ``start``."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("rpc done trace=%s route=%s server=%s %s in %.3f ms", trace, route,
                  server_id, describe_outcome(error), _elapsed_ms(start))


def done_callback(trace: str, route: str, server_id: str,
                  start: float) -> Callable[[asyncio.Future[Any]], None]:
    """A future's done callback logging the call's outcome."""
    def _done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            error: BaseException | None = asyncio.CancelledError("the call was cancelled")
        else:
            error = fut.exception()
        log_done(trace, route, server_id, start, error)
    return _done


# server ------------------------------------------------------------------------

def _log_answered(trace: str | None, route: str | None, server_id: str, start: float,
                  error: BaseException | None) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("rpc answered trace=%s route=%s server=%s %s in %.3f ms", trace, route,
                  server_id, describe_outcome(error), _elapsed_ms(start))


async def _traced(coro: Coroutine[Any, Any, Any], trace: str | None, route: str | None,
                  server_id: str, start: float) -> Any:
    try:
        result = await coro
    except BaseException as exc:
        _log_answered(trace, route, server_id, start, exc)
        raise
    _log_answered(trace, route, server_id, start, None)
    return result


def traced_dispatch(dispatcher: DispatcherLike, server_id: str,
                    done_state: int, pending_state: int) -> Callable[[object], tuple[int, int, Any]]:
    """``dispatcher.dispatch`` logging each request received and its answer.

    The answer of a coroutine method is logged when it finishes (the coroutine is
    wrapped); a frame that is no request (a ping, garbage) goes to ``dispatch`` as it is.
    """
    dispatch = dispatcher.dispatch
    describe = dispatcher.describe

    def run(msg: object) -> tuple[int, int, Any]:
        info = describe(msg)
        if info is None:
            return dispatch(msg)
        trace, route = info
        log.debug("rpc received trace=%s route=%s server=%s", trace, route, server_id)
        start = time.perf_counter()
        rid, state, outcome = dispatch(msg)
        if state == pending_state:
            return rid, state, _traced(outcome, trace, route, server_id, start)
        _log_answered(trace, route, server_id, start, None if state == done_state else outcome)
        return rid, state, outcome

    return run
