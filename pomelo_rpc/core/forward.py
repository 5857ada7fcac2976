# cython: annotation_typing=False
"""A backend server's ``forwardMessage``, its common case: one source for both cores.

Imported as it is for the pure-Python core; compiled with ``pomelo_rpc/_cy/forward.pxd``
for the Cython core.

A pomelo connector forwards a player's request to a backend server as
``sys.<type>.msgRemote.forwardMessage(msg, session)`` (``pomelo_rpc.backend.msg_remote``).
``Forwarder.forwardMessage`` is that method as the dispatcher calls it: a ``def`` that,
in the common case (a request on a route of the handler directory, a well-formed
session, no handler filters), makes the backend session (``new_session``), calls a
``def`` handler at once and returns the answer (``[null, resp, null]``'s JSON after the
first ``null``), with no coroutine and no Python frame of its own. An
``async def`` handler's call is handed to ``finish`` (a coroutine the server drives
eagerly: answered at once when it does not suspend); a handler's error to ``failed``
(pomelo's ``code``); anything else, refused requests and filters included, to
``slow`` (the whole of ``forwardMessage`` in Python). The answer is a
``core.json_codec.RawJson``, written by the JSON protocol as it is. The dispatcher runs a ``def``
method's coroutine as an ``async def`` method's (``core.dispatch``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .json_codec import RawJson
from .mqtt import json_suffixed

if TYPE_CHECKING:
    from collections.abc import Callable

    from .json_codec import JsonCodec

#: pomelo-protocol's message type of a notify (the connector expects no response)
NOTIFY = 1


class SessionFields:
    """The fields of a backend session (the base of ``pomelo_rpc.backend.BackendSession``
    made from the default core's): ``id``, ``frontend_id``, ``uid``, ``settings`` and
    its ``_app``. Compiled, an extension type whose fields ``new_session`` sets as C
    fields (no attribute lookup, no ``__dict__``)."""

    __slots__ = ("id", "frontend_id", "uid", "settings", "_app")

    id: Any
    frontend_id: Any
    uid: Any
    settings: Any
    _app: Any


#: the names of what forwardMessage reads in its arguments
NAMES = ("route", "body", "type", "id", "frontendId", "uid", "settings")
#: ``NAMES`` as the JSON text of an object (see ``keys_of``)
KEYS_JSON = b'{"route":0,"body":0,"type":0,"id":0,"frontendId":0,"uid":0,"settings":0}'


def keys_of(obj: Any) -> tuple[Any, ...]:
    """``NAMES`` as the str objects a JSON codec made of ``KEYS_JSON`` (``obj``): orjson
    hands out one object per key it has cached, and a dict lookup with the very object
    a dict holds compares pointers, not text (each name itself where ``obj`` lacks it)."""
    found = {key: key for key in obj} if type(obj) is dict else {}
    return tuple(found.get(name, name) for name in NAMES)


def new_session(cls: type, app: Any, obj: Any, keys: tuple[Any, ...] = NAMES) -> Any:
    """The backend session (a ``cls``, made without ``__init__``: its ``_app``, ``id``,
    ``frontend_id``, ``uid``, ``settings``) of pomelo's ``{"id", "frontendId", "uid",
    "settings"}``; None if ``obj`` is not one (a non-empty id, string or number; a
    frontendId; a uid string, number or null; settings an object or none). ``cls`` is
    a subclass of either core's ``SessionFields``; of this core's, made the quick way.
    ``keys``: ``NAMES`` (``keys_of``'s, equal str objects)."""
    if type(obj) is not dict:
        return None
    fields: dict[str, Any] = obj      # (compiled: a dict's own lookups)
    sid = fields.get(keys[3])
    frontend_id = fields.get(keys[4])
    uid = fields.get(keys[5])
    settings = fields.get(keys[6])
    kind = type(uid)
    if ((type(sid) is not int and (type(sid) is not str or not sid))
            or type(frontend_id) is not str or not frontend_id
            or (uid is not None and kind is not str and kind is not int
                and kind is not float)
            or (type(settings) is not dict and settings is not None)):
        return None
    if settings is None:
        settings = {}
    if issubclass(cls, SessionFields):
        made = SessionFields.__new__(cls)      # (compiled: the type's own, C fields)
        made._app = app
        made.id = sid
        made.frontend_id = frontend_id
        made.uid = uid
        made.settings = settings
        return made
    session: Any = cls.__new__(cls)     # the other core's fields
    session._app = app
    session.id = sid
    session.frontend_id = frontend_id
    session.uid = uid
    session.settings = settings
    return session


def handler_body(body: Any, route: Any) -> Any:
    """What a handler gets of a request's ``body``: an object with its ``__route__``
    set, as pomelo gives it (a missing body, just the route; any other value as it is)."""
    if body is None:
        return {"__route__": route}
    if type(body) is dict:
        obj: dict[str, Any] = body      # (compiled: a dict's own insert)
        obj["__route__"] = route
    return body


class Forwarder:
    """``forwardMessage`` of one backend server; see the module docstring.

    ``handlers``: its ``routes`` (route -> ``(func, is_async)``, read on every call:
    a reload replaces it) and ``server_type``; ``filters``: its ``befores`` and
    ``afters``; ``session_class``: what ``new_session`` makes; ``keys``: ``keys_of`` the
    codec's ``KEYS_JSON`` (the names themselves by default); ``codec``: a response's
    JSON (its ``dumps_bytes``, a ``core.json_codec.JsonCodec``); ``notify_answer``: a
    notify's answer; ``slow(msg, session)``, ``finish(func, body, session, route, notify)``:
    coroutines; ``failed(error, route)``: the answer to a handler's error, or raises
    the error answer.
    """

    def __init__(self, app: Any, handlers: Any, filters: Any, session_class: type,
                 codec: JsonCodec, notify_answer: Any,
                 slow: Callable[[Any, Any], Any], finish: Callable[..., Any],
                 failed: Callable[[Exception, str], Any],
                 keys: tuple[Any, ...] = NAMES) -> None:
        self.app = app
        #: ``NAMES`` as the codec's str objects (``keys_of``), and the request's three
        self.keys: tuple[Any, ...] = keys
        self.route_key: Any = keys[0]
        self.body_key: Any = keys[1]
        self.type_key: Any = keys[2]
        #: the route found last, its entry and the table it was found in
        self.last_routes: Any = None
        self.last_route: Any = None
        self.last_entry: Any = None
        self.handlers = handlers
        self.filters = filters
        #: the filters' lists (``filters.before``/``after`` append to these) and the
        #: server type (fixed), read here without an attribute lookup per call
        self.befores: list[Any] = filters.befores
        self.afters: list[Any] = filters.afters
        self.server_type: Any = handlers.server_type
        self.session_class = session_class
        self.codec = codec
        self.notify_answer = notify_answer
        self.slow = slow
        self.finish = finish
        self.failed = failed

    def forwardMessage(self, msg: Any, session: Any) -> Any:
        """Run the handler of the player's request ``msg`` (``{"id", "type", "route",
        "body", ...}``) with the backend session of ``session``: the answer the
        connector expects, or a coroutine of it."""
        if type(msg) is not dict:
            return self.slow(msg, session)
        request: dict[str, Any] = msg     # (compiled: a dict's own lookups)
        route = request.get(self.route_key)
        if type(route) is not str or self.server_type is None or self.befores or self.afters:
            return self.slow(msg, session)
        routes: dict[str, Any] = self.handlers.routes     # (a reload replaces it)
        if routes is self.last_routes and route == self.last_route:
            entry = self.last_entry       # compared, cheaper than hashed (a new str)
        else:
            entry = routes.get(route)
            if entry is None:
                return self.slow(msg, session)
            self.last_routes = routes
            self.last_route = route
            self.last_entry = entry
        sess = new_session(self.session_class, self.app, session, self.keys)
        if sess is None:
            return self.slow(msg, session)
        func = entry[0]
        body = handler_body(request.get(self.body_key), route)
        notify = request.get(self.type_key) == NOTIFY
        if entry[1]:
            return self.finish(func, body, sess, route, notify)
        try:
            result = func(body, sess)
            if notify:
                return self.notify_answer
            # the response's JSON and the answer's last item, in one bytes object
            data = json_suffixed({} if result is None else result, self.codec, b",null")
        except Exception as exc:
            return self.failed(exc, route)
        return RawJson(data)
