"""``etcd://host:port``: membership in etcd v3, through the asyncio client ``aetcd``.

Each server's record is the JSON value of ``/pomelo_rpc/<cluster>/servers/<id>``,
attached to a lease of ``registry_ttl`` seconds (etcd rounds it up to whole seconds,
and to its minimum lease TTL) kept alive every ttl/3; a killed server's lease runs out
and etcd deletes the key. A client reads the prefix once, then watches it from the
revision it read: every put and delete reaches it as an event, so no polling. After a
lost connection it reads the prefix again and watches from there (an etcd restarted
empty starts its revisions over).

Why aetcd: it is the maintained asyncio etcd v3 client on PyPI (a fork of the
unmaintained python-etcd3 rebuilt on grpc.aio), it speaks the v3 gRPC API that every
etcd since 3.0 serves (tested here with Debian's etcd 3.4), and it exposes leases,
keep-alive and prefix watches directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any
from urllib.parse import urlsplit

try:
    import aetcd
    from aetcd.exceptions import ClientError
    from grpc.aio import AioRpcError
except ImportError as exc:   # pragma: no cover - depends on the install
    raise ImportError("the etcd:// registry needs aetcd: "
                      "pip install 'pomelo-rpc[etcd]'") from exc

from .base import Record, encode_record, parse_record
from .engine import EngineRegistry

log = logging.getLogger("pomelo_rpc.registry.etcd")

__all__ = ["EtcdRegistry"]

#: gRPC reconnects within a second of the engine coming back (its default backoff
#: grows to two minutes, longer than any ttl); each registry has its own connection
#: (gRPC's shared one would hand a new registry the failure cached by an old one)
_CHANNEL_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 100,
                    "grpc.min_reconnect_backoff_ms": 100,
                    "grpc.max_reconnect_backoff_ms": 1000,
                    "grpc.use_local_subchannel_pool": 1}


class EtcdRegistry(EngineRegistry):
    """Registry backend on etcd v3 (see the module docstring)."""

    engine_errors = EngineRegistry.engine_errors + (ClientError, AioRpcError)
    notice_delay = 0.5      # watches deliver at once: a margin for a busy client

    def __init__(self, url: str, *, cluster: str, ttl: float, connect_timeout: float) -> None:
        super().__init__(url, cluster=cluster, ttl=ttl, connect_timeout=connect_timeout)
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 2379)
        self._client: Any = self._new_client()
        self._prefix = f"/pomelo_rpc/{self.cluster}/servers/".encode()
        self._lease_ttl = max(1, math.ceil(self.ttl))
        self._leases: dict[str, int] = {}       # server id -> its lease id
        self._warned: set[str] = set()

    def _new_client(self) -> Any:
        host, port = self._address
        return aetcd.Client(host=host, port=port, timeout=self.connect_timeout,
                            options=_CHANNEL_OPTIONS)

    async def _close_client(self, client: Any) -> None:
        try:
            await asyncio.wait_for(client.close(), 2.0)
        except self.engine_errors + (RuntimeError,):
            pass

    async def _connect(self) -> None:
        await self._client.get(self._prefix)

    async def _put(self, record: Record, refresh: bool) -> None:
        sid = record["id"]
        lease_id = self._leases.get(sid)
        if refresh and lease_id is not None:
            reply = await self._client.refresh_lease(lease_id)
            if reply is not None and reply.TTL > 0:
                return
            log.info("etcd lease of %s was lost; registering it again", sid)
            lease_id = None
        if lease_id is None:
            lease_id = (await self._client.lease(self._lease_ttl)).id
            self._leases[sid] = lease_id
        await self._client.put(self._prefix + sid.encode(), encode_record(record),
                               lease=lease_id)

    async def _delete(self, server_id: str) -> None:
        await self._client.delete(self._prefix + server_id.encode())
        lease_id = self._leases.pop(server_id, None)
        if lease_id is not None:
            await self._client.revoke_lease(lease_id)

    def _record(self, key: bytes, value: bytes) -> Record | None:
        sid = key[len(self._prefix):].decode(errors="replace")
        record = parse_record(value, key.decode(errors="replace"), self._warned)
        if record is not None and record["id"] != sid:
            parse_record(f"id {record['id']!r} under the key of {sid!r}",
                         key.decode(errors="replace"), self._warned)
            return None
        return record

    async def _load(self, client: Any) -> tuple[dict[str, Record], int]:
        found = await client.get_prefix(self._prefix)
        records = {}
        for kv in found:
            record = self._record(kv.key, kv.value)
            if record is not None:
                records[record["id"]] = record
        return records, found.header.revision

    async def _snapshot(self) -> dict[str, Record]:
        return (await self._load(self._client))[0]

    async def _follow(self) -> None:
        # a client of its own for each watch: aetcd's watcher does not always recover
        # from a broken stream, a new connection always does
        client = self._new_client()
        try:
            records, revision = await self._load(client)
            self._deliver(dict(records))
            watch = await client.watch_prefix(self._prefix, start_revision=revision + 1)
            async for event in watch:
                if self._closed:
                    break
                sid = event.kv.key[len(self._prefix):].decode(errors="replace")
                record = self._record(event.kv.key, event.kv.value) \
                    if event.kind == "PUT" else None
                if record is None:
                    records.pop(sid, None)
                else:
                    records[sid] = record
                self._deliver(dict(records))
        finally:
            await self._close_client(client)
        if not self._closed:
            raise ConnectionError("the etcd watch ended")

    async def _disconnect(self) -> None:
        await self._close_client(self._client)
