"""The Registry protocol: where servers publish their record and clients follow the cluster.

A *record* is a normalized server info (``normalize_server``): ``id``,
``server_type``, ``host``, ``port``, plus any extra keys (``weight``, pomelo's own)
that travel with it. A backend keeps one record per live server of one *cluster*.

Graceful versus vanished: ``deregister`` first publishes the record with
``"leaving": True``, then deletes it. A client gives a leaving server no new calls but
keeps its connection until the calls already sent are answered; a server that
disappears without leaving (TTL expired, lease lost) fails its calls in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..errors import RpcError

__all__ = ["Record", "Listener", "RegistryError", "Registry", "LEAVING", "normalize_server",
           "parse_record", "encode_record", "check_cluster", "Backoff", "OutageHold", "TTL_KEY"]

log = logging.getLogger("pomelo_rpc.registry")

#: A normalized server info: id, server_type, host, port, plus extras.
Record = dict[str, Any]
#: ``listener(full_current_map)``, called after every change (and after each resync).
Listener = Callable[[dict[str, Record]], None]

#: The record key a graceful leave sets before the record is deleted.
LEAVING = "leaving"


class RegistryError(RpcError):
    """The membership engine is unreachable or refused an operation."""


@runtime_checkable
class Registry(Protocol):
    """Membership of one cluster on one engine (see the module docstring)."""

    async def open(self) -> None:
        """Connect; RegistryError within ``connect_timeout`` if the engine is unreachable."""

    async def register(self, record: Record) -> None:
        """Publish this server's record and keep it alive (ttl) until deregister/close.

        The record is published again whenever the engine comes back, even empty.
        """

    async def deregister(self, server_id: str) -> None:
        """Graceful leave: publish the record with ``leaving: True``, keep it visible
        until every watching client can have seen it, then delete it (returns after)."""

    async def watch(self, listener: Listener) -> dict[str, Record]:
        """Return the cluster's current ``{id: record}``; afterwards call ``listener``
        with the full current map after every change (and after each resync)."""

    async def close(self) -> None:
        """Stop keeping records alive and watching; release the connection."""


def normalize_server(info: Mapping[str, Any]) -> Record:
    """A server info with snake_case keys (pomelo's camelCase accepted): id, server_type, host, port."""
    out = dict(info)
    if "serverType" in out and "server_type" not in out:
        out["server_type"] = out.pop("serverType")
    for key in ("id", "server_type", "port"):
        if key not in out:
            raise ValueError(f"server info needs {key!r}: {info!r}")
    out["port"] = int(out["port"])
    out.setdefault("host", "127.0.0.1")
    if not out["host"]:
        out["host"] = "127.0.0.1"
    return out


def parse_record(data: bytes | str | Mapping[str, Any], where: str,
                 warned: set[str] | None = None) -> Record | None:
    """The record in ``data`` (JSON text or a mapping), or None after a warning naming
    ``where`` if it is not a valid server record (garbage in the engine is skipped).

    With ``warned``, the same garbage at the same place is reported only once.
    """
    try:
        raw = json.loads(data) if isinstance(data, (bytes, str)) else data
        if not isinstance(raw, Mapping):
            raise ValueError("not a JSON object")
        record = normalize_server(raw)
        if not isinstance(record["id"], str) or not record["id"]:
            raise ValueError("id is not a non-empty string")
        if not isinstance(record["server_type"], str) or not record["server_type"]:
            raise ValueError("server_type is not a non-empty string")
        if not isinstance(record["host"], str) or not 0 < record["port"] < 65536:
            raise ValueError("bad host or port")
    except (ValueError, TypeError) as exc:   # json's errors are ValueErrors
        if warned is not None:
            seen = f"{where}\0{data!r}"
            if seen in warned:
                return None
            if len(warned) > 1000:
                warned.clear()
            warned.add(seen)
        log.warning("registry: skipping a malformed record at %s: %s (%.80r)", where, exc, data)
        return None
    return record


def encode_record(record: Mapping[str, Any]) -> bytes:
    """The JSON bytes a backend stores for ``record``."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


def check_cluster(cluster: str) -> str:
    """``cluster`` if it is a valid cluster name (letters, digits, ``_.-``), else ValueError."""
    if not isinstance(cluster, str) or not _CLUSTER_NAME.match(cluster):
        raise ValueError(f"a cluster name is letters, digits, '_', '.', '-': {cluster!r}")
    return cluster


class Backoff:
    """Exponential delays between reconnection attempts, logged once per outage.

    ``await backoff.failed(what, exc)`` logs (WARNING on the first failure, DEBUG after)
    and sleeps; ``backoff.succeeded(what)`` logs the recovery and resets the delay.
    """

    def __init__(self, first: float = 0.1, most: float = 2.0) -> None:
        self.first = first
        self.most = most
        self.delay = 0.0
        self.failures = 0

    async def failed(self, what: str, exc: BaseException) -> None:
        """Log the failure of ``what`` and sleep the next delay."""
        self.failures += 1
        self.delay = min(self.most, self.delay * 2 if self.delay else self.first)
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "registry: %s failed (%s: %s); retrying in %.1f s (attempt %d)",
                what, type(exc).__name__, exc, self.delay, self.failures)
        await asyncio.sleep(self.delay)

    def succeeded(self, what: str) -> bool:
        """Note a success; True (after logging) if it ends an outage."""
        if not self.failures:
            return False
        log.warning("registry: %s works again after %d failed attempts", what, self.failures)
        self.failures = 0
        self.delay = 0.0
        return True


#: the record key carrying its server's ``registry_ttl`` (s), so that clients know how
#: long to wait for it to register again after the engine lost it
TTL_KEY = "registry_ttl"


class OutageHold:
    """After the engine was unreachable, keep the records it lost for one ttl.

    An engine that comes back empty has lost every record; the live servers write theirs
    again within one ttl. Until then a client keeps routing to them: ``lost(before,
    fresh)`` after the first snapshot of a reconnection holds the records missing from
    it, ``merge(fresh)`` adds the held ones that are still within their ttl.
    """

    def __init__(self, default_ttl: float) -> None:
        self.default_ttl = default_ttl
        self.held: dict[str, tuple[Record, float]] = {}    # id -> (record, until)

    def lost(self, before: dict[str, Record], fresh: dict[str, Record]) -> None:
        """Hold the (not leaving) records of ``before`` that ``fresh`` lacks."""
        now = time.monotonic()
        for sid, record in before.items():
            if sid not in fresh and not record.get(LEAVING):
                ttl = record.get(TTL_KEY, self.default_ttl)
                if not isinstance(ttl, (int, float)):
                    ttl = self.default_ttl
                self.held[sid] = (record, now + ttl)

    def merge(self, fresh: dict[str, Record]) -> dict[str, Record]:
        """``fresh`` plus the held records not in it whose hold has not run out."""
        if not self.held:
            return fresh
        now = time.monotonic()
        for sid, (_record, until) in list(self.held.items()):
            if sid in fresh or until <= now:
                del self.held[sid]
        merged = dict(fresh)
        for sid, (record, _until) in self.held.items():
            merged[sid] = record
        return merged

    def next_expiry(self) -> float | None:
        """Seconds until the next hold runs out (None when nothing is held)."""
        if not self.held:
            return None
        return max(0.0, min(until for _r, until in self.held.values()) - time.monotonic())
