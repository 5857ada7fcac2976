"""Routers: choose the server id a routed call goes to.

A router is ``router(route_param, msg, route_context) -> server_id`` (sync or async)
or an object with such a ``route`` method. Without one, the client uses pomelo's
default: crc32 of the session uid modulo the servers of the type. The built-ins
picked by ``router_type`` see the client's own server list; as in pomelo, a
``router_type`` wins over ``router`` when both are given.

Health (docs/liveness.md): the routers that spread load (rr, wrr, la, rd) choose
among the servers that are neither down nor still connecting while the type has
one; the hash routers (the default and ch) keep their choice, whose call then fails
at once with ServerUnavailableError if that server is down (failover moves it on).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from .errors import NoServerError

if TYPE_CHECKING:
    from typing import Protocol

    from .client import RpcClient

    #: What a router returns: a server id (None: no server), or an awaitable of one.
    RouteResult = Union[str, None, Awaitable[Union[str, None]]]
    #: ``router(route_param, msg, route_context)``
    RouteFunc = Callable[[Any, dict[str, Any], Any], RouteResult]

    class RouterObject(Protocol):
        """A router given as an object with a ``route`` method."""

        def route(self, route_param: Any, msg: dict[str, Any], route_context: Any,
                  /) -> RouteResult: ...

__all__ = ["default_route", "crc32_index", "ROUTER_TYPES", "make_router"]


def _js_string(value: object) -> str:
    """``String(value)`` as JavaScript writes it, for the values a uid or key can be."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _js_truthy(value: object) -> bool:
    """Whether JavaScript sees ``value`` as true (``[]`` and ``{}`` are)."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == value and value != 0   # NaN and 0 are false
    return True


def _json(value: object) -> str:
    """``JSON.stringify(value)`` for plain data."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _uid(route_param: object) -> str:
    """The uid pomelo hashes: ``session.uid || ''`` (a str or int route_param is the uid)."""
    if route_param is None:
        return ""
    if isinstance(route_param, dict):
        uid = route_param.get("uid")
    elif isinstance(route_param, (str, int)) and not isinstance(route_param, bool):
        uid = route_param
    else:
        uid = getattr(route_param, "uid", None)
    return _js_string(uid) if _js_truthy(uid) else ""   # pomelo: session.uid || ''


def crc32_index(uid: str, count: int) -> int:
    """pomelo's index: ``abs(crc32(uid))`` with crc32 signed as in Node's ``crc``, mod ``count``."""
    try:
        data = uid.encode("latin-1")    # Node's crc takes each char code's low byte
    except UnicodeEncodeError:
        data = bytes(ord(ch) & 0xFF for ch in uid)
    value = zlib.crc32(data)
    if value >= 0x80000000:
        value -= 0x100000000
    return abs(value) % count


class _Builtin:
    """A built-in router bound to a client (it reads the client's server list)."""

    def __init__(self, client: RpcClient) -> None:
        self.client = client

    def servers(self, msg: Mapping[str, Any]) -> list[str]:
        server_type = msg["server_type"]
        ids = self.client.server_ids(server_type)
        if not ids:
            raise NoServerError(f"no server of type {server_type!r}")
        return ids


class _Spreading(_Builtin):
    """A router spreading load: it leaves out servers that are down or connecting."""

    def servers(self, msg: Mapping[str, Any]) -> list[str]:
        # (one Python frame per call: the station's lists read directly)
        server_type = msg["server_type"]
        station = self.client._station
        ids = station.by_type.get(server_type)
        if not ids:
            raise NoServerError(f"no server of type {server_type!r}")
        if station.health.down or station.slow:
            return station.routable(ids)
        return ids


class DefaultRouter(_Builtin):
    """pomelo's default: crc32 of ``route_param.uid`` modulo the servers of the type."""

    def route(self, route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
        return default_route(route_param, self.servers(msg))


def default_route(route_param: object, server_ids: Sequence[str]) -> str:
    """The server id pomelo's default router gives ``route_param`` among ``server_ids``."""
    return server_ids[crc32_index(_uid(route_param), len(server_ids))]


class RoundRobin(_Spreading):
    """Each server of the type in turn."""

    def __init__(self, client: RpcClient) -> None:
        super().__init__(client)
        self._next: dict[str, int] = {}

    def route(self, route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
        ids = self.servers(msg)
        server_type = msg["server_type"]
        i = self._next.get(server_type, 0)
        self._next[server_type] = i + 1
        return ids[i % len(ids)]


def _weight(info: Mapping[str, Any]) -> float:
    """A server's ``weight`` as a number >= 0 (absent or None: 1)."""
    weight = info.get("weight")
    if weight is None:
        return 1
    try:
        return max(float(weight), 0)
    except (TypeError, ValueError):
        raise ValueError(f"server {info.get('id')!r} has a bad weight {weight!r}") from None


class WeightedRoundRobin(_Spreading):
    """Smooth weighted round robin over the servers' ``weight`` (default 1)."""

    def __init__(self, client: RpcClient) -> None:
        super().__init__(client)
        self._current: dict[str, dict[str, float]] = {}

    def route(self, route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
        """The server whose smoothed weight credit is highest; weight 0 is never chosen."""
        ids = self.servers(msg)
        current = self._current.setdefault(msg["server_type"], {})
        info = self.client.server_info
        weights = {sid: _weight(info(sid)) for sid in ids}
        for sid in [s for s in current if not weights.get(s)]:
            del current[sid]     # removed, or weight 0: it starts afresh if it comes back
        total: float = 0
        best: str | None = None
        for sid, weight in weights.items():
            if weight <= 0:
                continue
            total += weight
            current[sid] = current.get(sid, 0) + weight
            if best is None or current[sid] > current[best]:
                best = sid
        if best is None:
            raise NoServerError(f"servers of type {msg['server_type']!r} all have weight 0")
        current[best] -= total
        return best


class LeastActive(_Spreading):
    """The server with the fewest calls in flight now (answered calls no longer count).

    Ties go to the tied servers in turn, so an idle cluster still shares the load.
    """

    def __init__(self, client: RpcClient) -> None:
        super().__init__(client)
        self._turn: dict[str, int] = {}

    def route(self, route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
        """The server with the fewest calls in flight; ties in turn."""
        ids = self.servers(msg)
        in_flight = self.client.in_flight
        counts = [in_flight(sid) for sid in ids]
        low = min(counts)
        tied = [sid for sid, n in zip(ids, counts) if n == low]
        if len(tied) == 1:
            return tied[0]
        turn = self._turn.get(msg["server_type"], 0)
        self._turn[msg["server_type"]] = turn + 1
        return tied[turn % len(tied)]


class ConsistentHash(_Builtin):
    """A hash ring with virtual nodes over ``args[hash_field_index]``, as pomelo's.

    Each server owns ``replicas`` points ``md5("<id>:<i>")``; a key goes to the owner
    of the last point at or before ``md5(key)`` (wrapping around), so a key lands on
    the same server as with a Node pomelo client. Adding a server moves only keys to
    it; removing one moves only the keys it owned. A missing or falsy key hashes the
    message's JSON, as pomelo does.
    """

    replicas = 100

    def __init__(self, client: RpcClient) -> None:
        super().__init__(client)
        # server_type -> (server ids, sorted point hashes, owner of each point)
        self._rings: dict[str, tuple[tuple[str, ...], list[int], list[str]]] = {}

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")

    def _ring(self, server_type: str,
              ids: tuple[str, ...]) -> tuple[tuple[str, ...], list[int], list[str]]:
        ring = self._rings.get(server_type)
        if ring is None or ring[0] != ids:
            points: dict[int, str] = {}
            for sid in ids:
                for i in range(self.replicas):
                    points[self._hash(f"{sid}:{i}")] = sid
            hashes = sorted(points)
            ring = self._rings[server_type] = (ids, hashes, [points[h] for h in hashes])
        return ring

    def key(self, msg: Mapping[str, Any]) -> str:
        """The string hashed for ``msg``: ``args[hash_field_index]``, else the message's JSON."""
        args = msg.get("args") or []
        index = self.client.opts["hash_field_index"]
        field = args[index] if -len(args) <= index < len(args) else None
        if _js_truthy(field):
            if isinstance(field, str):
                return field
            if isinstance(field, (bool, int, float)):
                return _js_string(field)
            return _json(field)
        return _json({"namespace": msg.get("namespace"), "serverType": msg["server_type"],
                      "service": msg.get("service"), "method": msg.get("method"), "args": args})

    def route(self, route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
        """The owner of the ring point at or before the hash of ``key(msg)``."""
        ids = tuple(self.servers(msg))
        _, hashes, owners = self._ring(msg["server_type"], ids)
        return owners[bisect.bisect_right(hashes, self._hash(self.key(msg))) - 1]


class RandomRouter(_Spreading):
    """A random server of the type."""

    def route(self, route_param: Any, msg: dict[str, Any], route_context: Any) -> str:
        return random.choice(self.servers(msg))


ROUTER_TYPES: dict[str, Callable[[RpcClient], RouterObject]] = {
    "rr": RoundRobin,
    "wrr": WeightedRoundRobin,
    "la": LeastActive,
    "ch": ConsistentHash,
    "rd": RandomRouter,
}


def make_router(client: RpcClient, router: RouteFunc | RouterObject | None,
                router_type: str | None) -> RouteFunc:
    """The callable ``(route_param, msg, route_context) -> id | awaitable`` for a client.

    ``router_type`` wins over ``router`` (as in pomelo); with neither, pomelo's default.
    """
    if router_type is not None:
        cls = ROUTER_TYPES.get(router_type)
        if cls is None:
            raise ValueError(
                f"unknown router_type {router_type!r}; known: {', '.join(ROUTER_TYPES)}")
        return cls(client).route
    if router is not None:
        route: RouteFunc | None = getattr(router, "route", None)
        if route is not None and callable(route):
            return route
        if not callable(router):
            raise TypeError(f"router must be callable or have .route, not {router!r}")
        return router
    return DefaultRouter(client).route
