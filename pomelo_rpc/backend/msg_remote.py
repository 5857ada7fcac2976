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

from ..mqtt_json import ErrorAnswer, RawResults, dumps, error_object
from .handlers import RouteError
from .session import BackendSession, SessionError

if TYPE_CHECKING:
    from collections.abc import Callable

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
    """The ``msgRemote`` service of a backend server (see the module docstring)."""

    def __init__(self, app: App, handlers: Handlers, filters: HandlerFilters,
                 pinus: bool = False, dumps: Callable[[Any], str] = dumps) -> None:
        self._app = app
        self._dumps = dumps         # a handler's response as JSON (the server core's)
        self._handlers = handlers
        self._filters = filters
        self._pinus = pinus         # a pinus cluster's connectors call (see the module doc)

    async def forwardMessage(self, msg: Any, session: Any) -> RawResults:
        """Run the handler of the player's request ``msg`` (``{"id", "type", "route",
        "body", ...}``) with the backend session of ``session`` (``{"id",
        "frontendId", "uid", "settings"}``); the answer the connector expects."""
        handlers = self._handlers
        entry = None
        route = None
        if type(msg) is dict:
            route = msg.get("route")
            if type(route) is str and handlers.server_type is not None:
                entry = handlers.routes.get(route)      # the usual: lookup's first step
        try:
            if entry is None:
                if type(msg) is not dict:
                    raise BadForward(f"the message is not an object: {msg!r:.80}")
                entry = handlers.lookup(route)
            sess = BackendSession.from_wire(self._app, session)
        except (BadForward, RouteError, SessionError) as exc:
            log.warning("forwardMessage refused: %s", exc)
            raise ErrorAnswer([error_object(exc)], str(exc)) from None
        func, is_async = entry
        body = msg.get("body")
        if body is None:
            body = {"__route__": route}
        elif type(body) is dict:
            body["__route__"] = route        # as pomelo gives it to the handler
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
            code = getattr(error, "code", None)
            if type(code) is not int:
                log.error("handler of %s failed", route, exc_info=error)
                raise ErrorAnswer([error_object(error)], str(error)) from None
            log.info("handler of %s answered code %s: %s", route, code, error)
            if self._pinus:      # pinus reads no response after an error: the code alone
                return RawResults(f'{{"code":{code}}},null')
            raise ErrorAnswer([error_object(error), {"code": code}], str(error)) from None
        if notify:
            return _NOTIFY_ANSWER
        return RawResults(text + ",null")
