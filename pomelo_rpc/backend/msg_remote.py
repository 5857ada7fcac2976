"""``sys.msgRemote``: the remote service a pomelo connector calls to forward a
player's request (``forwardMessage(msg, session)``) to a backend server.

It is an ordinary service of the gateway's ``sys`` namespace, served on the mqtt (or
pinus-tcp) transport like any other. Its answers are pomelo's callback arguments: a
request's ``[null, resp, null]`` (``RawResults``: the response's JSON and the push
options), an error's ``[err]`` or ``[err, {"code": N}]`` (``ErrorAnswer``); the
connector answers the player with ``resp``, or ``{"code": N}`` (500 when the error has
no code).

In a pinus 1.7 cluster (``pinus=True``) the answers are the same but one: pinus's
proxies resolve with ``resp[1]`` or reject with ``resp[0]`` alone, so its connector
answers any error with 500, whatever follows it. An error with a code is answered as
pinus's own msgRemote answers a handler error that comes with a response: the response
alone, ``[null, {"code": N}, null]``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import core as cores
from ..mqtt_json import ErrorAnswer, RawResults, core_dumps, error_object, json_codec
from .handlers import RouteError
from .session import BackendSession, SessionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core import Core
    from .app import App
    from .filters import HandlerFilters
    from .handlers import Handlers

log = logging.getLogger("pomelo_rpc.backend.msg_remote")

__all__ = ["MsgRemote"]

#: pomelo-protocol's message type of a notify (the connector expects no response)
NOTIFY = 1
#: the answer to a notify: no response, no options
_NOTIFY_ANSWER = RawResults("null,null")


class BadForward(Exception):
    """A forwardMessage whose arguments are not a pomelo request and session."""


class MsgRemote:
    """The ``msgRemote`` service of a backend server (see the module docstring).

    ``forwardMessage`` is ``core``'s ``forward.Forwarder`` (the common case compiled
    in the Cython core); what it does not take itself comes back here: ``_forward``
    (the whole of it), ``_finish`` (an ``async def`` handler), ``_failed`` (an error).
    """

    def __init__(self, app: App, handlers: Handlers, filters: HandlerFilters,
                 pinus: bool = False, core: Core | None = None) -> None:
        core = core or cores.default()
        self._app = app
        self._dumps = core_dumps(core)    # a handler's response as JSON (the server core's)
        self._handlers = handlers
        self._filters = filters
        self._pinus = pinus         # a pinus cluster's connectors call (see the module doc)
        self._handler_body = core.forward.handler_body    # what a handler gets of a body
        codec = json_codec(core)
        forwarder = core.forward.Forwarder(
            app, handlers, filters, BackendSession, codec, _NOTIFY_ANSWER,
            self._forward, self._finish, self._failed,
            core.forward.keys_of(codec.loads(core.forward.KEYS_JSON)))
        #: ``forwardMessage(msg, session)``: run the handler of the player's request
        #: ``msg`` (``{"id", "type", "route", "body", ...}``) with the backend session
        #: of ``session`` (``{"id", "frontendId", "uid", "settings"}``); the answer the
        #: connector expects (or a coroutine of it)
        self.forwardMessage: Callable[[Any, Any], Any] = forwarder.forwardMessage

    async def _forward(self, msg: Any, session: Any) -> RawResults:
        """``forwardMessage`` in full: refusals, filters."""
        handlers = self._handlers
        route: Any = msg.get("route") if type(msg) is dict else None
        try:
            if type(msg) is not dict:
                raise BadForward(f"the message is not an object: {msg!r:.80}")
            func, is_async = handlers.lookup(route)
            sess = BackendSession.from_wire(self._app, session)
        except (BadForward, RouteError, SessionError) as exc:
            log.warning("forwardMessage refused: %s", exc)
            raise ErrorAnswer([error_object(exc)], str(exc)) from None
        body = self._handler_body(msg.get("body"), route)
        notify = msg.get("type") == NOTIFY
        filters = self._filters
        result: Any = None
        error: Exception | None = None
        text = ""
        try:
            if filters.befores:
                await filters.run_before(body, sess)
            result = func(body, sess)
            if is_async:
                result = await result
            if not notify:
                text = self._dumps({} if result is None else result)
        except Exception as exc:
            error = exc
        if filters.afters:
            await filters.run_after(body, sess, result, error)
        if error is not None:
            return self._failed(error, route)
        if notify:
            return _NOTIFY_ANSWER
        return RawResults(text + ",null")

    async def _finish(self, func: Callable[..., Any], body: Any, sess: BackendSession,
                      route: str, notify: bool) -> RawResults:
        """The answer of an ``async def`` handler (no filters)."""
        try:
            result = await func(body, sess)
            if notify:
                return _NOTIFY_ANSWER
            text = self._dumps({} if result is None else result)
        except Exception as exc:
            return self._failed(exc, route)
        return RawResults(text + ",null")

    def _failed(self, error: Exception, route: str) -> RawResults:
        """The answer to a handler's ``error``: raises the ErrorAnswer pomelo expects
        (with its ``code``), or a pinus connector's answer to a code."""
        code = getattr(error, "code", None)
        if type(code) is not int:
            log.error("handler of %s failed", route, exc_info=error)
            raise ErrorAnswer([error_object(error)], str(error)) from None
        log.info("handler of %s answered code %s: %s", route, code, error)
        if self._pinus:      # pinus reads no response after an error: the code alone
            return RawResults(f'{{"code":{code}}},null')
        raise ErrorAnswer([error_object(error), {"code": code}], str(error)) from None
