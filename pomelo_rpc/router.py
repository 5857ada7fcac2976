"""Routers: choose the server id a routed call goes to.

A router is ``router(route_param, msg, route_context) -> server_id`` (sync or async)
or an object with such a ``route`` method. Without one, the client uses pomelo's
default: crc32 of the session uid modulo the servers of the type. The built-ins
picked by ``router_type`` see the client's own server list.
"""

import bisect
import hashlib
import random
import zlib

from .errors import NoServerError

__all__ = ["default_route", "crc32_index", "ROUTER_TYPES", "make_router"]


def _uid(route_param):
    if route_param is None:
        return ""
    if isinstance(route_param, dict):
        uid = route_param.get("uid")
    elif isinstance(route_param, (str, int)):
        uid = route_param
    else:
        uid = getattr(route_param, "uid", None)
    return "" if uid is None else str(uid)


def crc32_index(uid, count):
    """pomelo's index: ``abs(crc32(uid))`` with crc32 signed as in Node's ``crc``, mod ``count``."""
    value = zlib.crc32(bytes(ord(ch) & 0xFF for ch in uid))
    if value >= 0x80000000:
        value -= 0x100000000
    return abs(value) % count


class _Builtin:
    """A built-in router bound to a client (it reads the client's server list)."""

    def __init__(self, client):
        self.client = client

    def servers(self, msg):
        server_type = msg["server_type"]
        ids = self.client.server_ids(server_type)
        if not ids:
            raise NoServerError(f"no server of type {server_type!r}")
        return ids


class DefaultRouter(_Builtin):
    """pomelo's default: crc32 of ``route_param.uid`` modulo the servers of the type."""

    def route(self, route_param, msg, route_context):
        return default_route(route_param, self.servers(msg))


def default_route(route_param, server_ids):
    """The server id pomelo's default router gives ``route_param`` among ``server_ids``."""
    return server_ids[crc32_index(_uid(route_param), len(server_ids))]


class RoundRobin(_Builtin):
    """Each server of the type in turn."""

    def __init__(self, client):
        super().__init__(client)
        self._next = {}

    def route(self, route_param, msg, route_context):
        ids = self.servers(msg)
        i = self._next.get(msg["server_type"], 0)
        self._next[msg["server_type"]] = i + 1
        return ids[i % len(ids)]


class WeightedRoundRobin(_Builtin):
    """Smooth weighted round robin over the servers' ``weight`` (default 1)."""

    def __init__(self, client):
        super().__init__(client)
        self._current = {}

    def route(self, route_param, msg, route_context):
        ids = self.servers(msg)
        current = self._current.setdefault(msg["server_type"], {})
        total = 0
        best = None
        for sid in ids:
            weight = self.client.server_info(sid).get("weight", 1) or 0
            total += weight
            current[sid] = current.get(sid, 0) + weight
            if best is None or current[sid] > current[best]:
                best = sid
        for sid in list(current):
            if sid not in ids:
                del current[sid]
        if total <= 0:
            raise NoServerError(f"servers of type {msg['server_type']!r} all have weight 0")
        current[best] -= total
        return best


class LeastActive(_Builtin):
    """The server with the fewest calls in flight (ties: the first)."""

    def route(self, route_param, msg, route_context):
        ids = self.servers(msg)
        return min(ids, key=self.client.in_flight)


class ConsistentHash(_Builtin):
    """A hash ring with virtual nodes over ``args[hash_field_index]``."""

    replicas = 100

    def __init__(self, client):
        super().__init__(client)
        self._rings = {}

    @staticmethod
    def _hash(key):
        return int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "big")

    def _ring(self, server_type, ids):
        ring = self._rings.get(server_type)
        if ring is None or ring[0] != ids:
            points = sorted((self._hash(f"{sid}#{i}"), sid)
                            for sid in ids for i in range(self.replicas))
            ring = self._rings[server_type] = (tuple(ids), [p[0] for p in points],
                                                [p[1] for p in points])
        return ring

    def route(self, route_param, msg, route_context):
        ids = tuple(self.servers(msg))
        _, hashes, owners = self._ring(msg["server_type"], ids)
        args = msg.get("args") or []
        index = self.client.opts["hash_field_index"]
        key = str(args[index]) if index < len(args) else ""
        pos = bisect.bisect(hashes, self._hash(key)) % len(hashes)
        return owners[pos]


class RandomRouter(_Builtin):
    """A random server of the type."""

    def route(self, route_param, msg, route_context):
        return random.choice(self.servers(msg))


ROUTER_TYPES = {
    "rr": RoundRobin,
    "wrr": WeightedRoundRobin,
    "la": LeastActive,
    "ch": ConsistentHash,
    "rd": RandomRouter,
}


def make_router(client, router, router_type):
    """The callable ``(route_param, msg, route_context) -> id | awaitable`` for a client."""
    if router is not None:
        route = getattr(router, "route", None)
        if route is not None and callable(route):
            return route
        if not callable(router):
            raise TypeError(f"router must be callable or have .route, not {router!r}")
        return router
    if router_type is None:
        return DefaultRouter(client).route
    cls = ROUTER_TYPES.get(router_type)
    if cls is None:
        raise ValueError(f"unknown router_type {router_type!r}; known: {', '.join(ROUTER_TYPES)}")
    return cls(client).route
