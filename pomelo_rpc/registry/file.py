"""``file:///path/servers.json``: membership in a JSON file on this host (no engine needed).

The file is pomelo's ``servers.json``, in either of its shapes:

- environment-keyed, ``{"development": {"area": [{"id": ..., "host": ..., "port": ...}]}}``:
  the section named by ``cluster`` is read;
- type-keyed, ``{"area": [...], "chat": [...]}``: a static list, read by every cluster.

Entries written by hand are permanent. A server that registers writes its record into
its cluster's section with an ``expires`` time (Unix seconds), rewritten every ttl/3
under a lock (``servers.json.lock``) and atomically replaced, so readers never see a
half-written file; an entry past its ``expires`` is ignored, and removed by the next
writer. Clients poll the file's status every ``POLL`` s and re-read it when it changed.
A file that cannot be parsed is treated like an engine that is down: clients keep their
last list, servers retry with backoff and write their records again once it parses
(even as ``{}``).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from .base import Record, RegistryError, parse_record
from .engine import EngineRegistry

log = logging.getLogger("pomelo_rpc.registry.file")

__all__ = ["FileRegistry"]

#: seconds between two checks of the file for changes (and of entries for expiry)
POLL = 0.1
EXPIRES = "expires"


class FileRegistry(EngineRegistry):
    """Registry backend on a pomelo ``servers.json`` (see the module docstring)."""

    engine_errors = EngineRegistry.engine_errors + (ValueError,)   # unparsable: "down"
    notice_delay = 0.6     # a leaving record stays for several polls

    def __init__(self, url: str, *, cluster: str, ttl: float, connect_timeout: float) -> None:
        super().__init__(url, cluster=cluster, ttl=ttl, connect_timeout=connect_timeout)
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"a file registry URL is file:///absolute/path.json, not {url!r}")
        self.path = unquote(parts.path)
        self._stamp: tuple[int, int, int] | None = None   # (inode, size, mtime) last read
        self._entries: list[Record] = []           # the cluster's entries, last read
        self._warned: set[str] = set()

    # reading -------------------------------------------------------------

    def _load(self) -> Any:
        try:
            with open(self.path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            return {}
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise ValueError(f"{self.path} is not a JSON object")
        return data

    @staticmethod
    def _type_keyed(data: dict[str, Any]) -> bool:
        return any(isinstance(v, list) for v in data.values())

    def _parse(self, data: dict[str, Any]) -> list[Record]:
        section = data if self._type_keyed(data) else data.get(self.cluster, {})
        entries = []
        for server_type, infos in (section.items() if isinstance(section, dict) else ()):
            where = f"{self.path} [{self.cluster}/{server_type}]"
            for info in infos if isinstance(infos, list) else [infos]:
                if isinstance(info, dict) and "server_type" not in info:
                    info = dict(info, server_type=server_type)
                record = parse_record(info, where, self._warned)
                if record is not None:
                    if not isinstance(record.get(EXPIRES, 0), (int, float)):
                        parse_record("expires is not a number", where, self._warned)
                        continue
                    entries.append(record)
        return entries

    def _live(self) -> dict[str, Record]:
        now = time.time()
        return {r["id"]: {k: v for k, v in r.items() if k != EXPIRES}
                for r in self._entries if r.get(EXPIRES, now + 1) > now}

    def _read(self) -> dict[str, Record]:
        """The live records, re-reading the file if it changed (ValueError if unparsable)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            self._entries = self._parse(self._load())
            self._stamp = stamp
        return self._live()

    # writing -------------------------------------------------------------

    def _rewrite(self, server_id: str, record: Record | None) -> None:
        """Under the lock: drop ``server_id`` and expired entries from this cluster's
        section, add ``record`` (with its expiry) if given, and replace the file."""
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            if self._type_keyed(data):
                raise RegistryError(f"{self.path} is a type-keyed (static) servers.json; "
                                    "servers register into an environment-keyed one")
            section = data.get(self.cluster)
            if not isinstance(section, dict):
                section = data[self.cluster] = {}
            now = time.time()
            for server_type in list(section):
                infos = section[server_type]
                if isinstance(infos, list):
                    infos[:] = [i for i in infos if not (
                        isinstance(i, dict) and (i.get("id") == server_id or (
                            isinstance(i.get(EXPIRES), (int, float)) and i[EXPIRES] < now)))]
                    if not infos:
                        del section[server_type]
            if record is not None:
                entry = {k: v for k, v in record.items() if k != "server_type"}
                entry[EXPIRES] = round(now + self.ttl, 3)
                section.setdefault(record["server_type"], []).append(entry)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    # hooks -----------------------------------------------------------------

    async def _connect(self) -> None:
        folder = os.path.dirname(self.path) or "."
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"directory {folder} does not exist")

    async def _put(self, record: Record, refresh: bool) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._rewrite, record["id"],
                                                         record)

    async def _delete(self, server_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._rewrite, server_id, None)

    async def _snapshot(self) -> dict[str, Record]:
        return self._read()

    async def _follow(self) -> None:
        while not self._closed:
            self._deliver(self._read())
            await asyncio.sleep(POLL)
