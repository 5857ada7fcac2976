"""``redis://host:port/db``: membership in Redis, through redis-py's asyncio client.

Keys, for cluster ``C`` (``pomelo_rpc:C:`` keeps clusters apart on one Redis):

- ``pomelo_rpc:C:server:<id>``: the record as JSON, with a TTL of ``registry_ttl``,
  rewritten every ttl/3 (``SET ... PX ttl GET``: one command, which also tells whether
  the key was lost, e.g. by a Redis that restarted empty);
- ``pomelo_rpc:C:ids``: a set of the ids, so that a client reads the cluster with
  SMEMBERS + MGET instead of scanning the keyspace (an id whose key expired is dropped);
- ``pomelo_rpc:C:changes``: a pub/sub channel where every write is announced.

A client re-reads the cluster on each notice and every ``RESYNC`` s anyway: pub/sub
loses messages across reconnects, and an expired key sends no notice (that resync is
what bounds how late a killed server disappears: ttl + ``RESYNC``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:   # pragma: no cover - depends on the install
    raise ImportError("the redis:// registry needs redis-py: "
                      "pip install 'pomelo-rpc[redis]'") from exc

from .base import Record, encode_record, parse_record
from .engine import EngineRegistry

log = logging.getLogger("pomelo_rpc.registry.redis")

__all__ = ["RedisRegistry", "RESYNC"]

#: seconds between two full reads of the cluster by a client, notices or not
RESYNC = 0.5


class RedisRegistry(EngineRegistry):
    """Registry backend on Redis (see the module docstring)."""

    engine_errors = EngineRegistry.engine_errors + (RedisError,)
    notice_delay = 2 * RESYNC   # a client that missed the notice still resyncs in time

    def __init__(self, url: str, *, cluster: str, ttl: float, connect_timeout: float) -> None:
        super().__init__(url, cluster=cluster, ttl=ttl, connect_timeout=connect_timeout)
        self._redis: Any = aioredis.from_url(
            url, socket_connect_timeout=connect_timeout,
            socket_timeout=max(connect_timeout, 2 * RESYNC))
        prefix = f"pomelo_rpc:{self.cluster}:"
        self._key_prefix = prefix + "server:"
        self._ids = prefix + "ids"
        self._channel = prefix + "changes"
        self._ttl_ms = max(1, int(self.ttl * 1000))
        self._warned: set[str] = set()

    async def _connect(self) -> None:
        await self._redis.ping()

    async def _put(self, record: Record, refresh: bool) -> None:
        sid = record["id"]
        data = encode_record(record)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key_prefix + sid, data, px=self._ttl_ms, get=True)
            pipe.sadd(self._ids, sid)   # every time: a reader may have just dropped the id
            old, _added = await pipe.execute()
        if old != data:     # new, changed, or lost by the engine: tell the clients
            await self._redis.publish(self._channel, sid)

    async def _delete(self, server_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._key_prefix + server_id)
            pipe.srem(self._ids, server_id)
            pipe.publish(self._channel, server_id)
            await pipe.execute()

    async def _snapshot(self) -> dict[str, Record]:
        ids = sorted(i.decode(errors="replace") for i in await self._redis.smembers(self._ids))
        if not ids:
            return {}
        values = await self._redis.mget([self._key_prefix + sid for sid in ids])
        records, expired = {}, []
        for sid, value in zip(ids, values):
            if value is None:
                expired.append(sid)
                continue
            record = parse_record(value, self._key_prefix + sid, self._warned)
            if record is not None:
                if record["id"] != sid:
                    parse_record(f"id {record['id']!r} under the key of {sid!r}",
                                 self._key_prefix + sid, self._warned)
                else:
                    records[sid] = record
        if expired:
            await self._redis.srem(self._ids, *expired)
        return records

    async def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            while not self._closed:
                self._deliver(await self._snapshot())
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=RESYNC)
                while msg is not None:     # many notices: one read
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        finally:
            try:
                await asyncio.wait_for(pubsub.aclose(), 1.0)
            except self.engine_errors + (asyncio.CancelledError,):
                pass

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self._redis.aclose(), 1.0)
        except self.engine_errors:
            pass
