"""``reload_remotes``: the services of a server's ``paths``, reloaded file by file when
their files change (pomelo's reloadRemotes).

The directories are polled (``os.stat`` of each ``*.py``: mtime in ns, size, inode), no
extra dependency. A changed or new file is compiled from its current source and its
service (``create(context)`` or the module) replaces the old one; a file gone takes its
service with it. A file that fails to load (a syntax error, ``create`` raising) is
logged and changes nothing: the old code keeps serving until the file changes again.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from .remotes import load_service, service_files

log = logging.getLogger("pomelo_rpc.reloader")

Stamp = tuple[int, int, int]


def _stamp(path: str) -> Stamp | None:
    """What tells a file's versions apart; None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class ServiceWatcher:
    """The services of ``paths`` (``[{"namespace", "path"}]``) plus ``extra``, kept per
    file so that ``scan`` can reload just what changed."""

    def __init__(self, paths: list[dict[str, str]], context: Any,
                 extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.paths = paths
        self.context = context
        self.extra = extra or {}
        # per path: service name -> the stamp of its file at the last scan
        self._stamps: list[dict[str, Stamp]] = []
        # per path: service name -> (service, name of its module in sys.modules)
        self._loaded: list[dict[str, tuple[Any, str]]] = []
        self._missing: set[int] = set()   # paths whose directory is gone (warned once)

    def load(self) -> dict[str, dict[str, Any]]:
        """Load every service; an error raises, as without ``reload_remotes``."""
        self._stamps, self._loaded = [], []
        for item in self.paths:
            files = service_files(item["path"])
            stamps = {}
            for name, path in files.items():   # before loading: an edit meanwhile is seen
                stamp = _stamp(path)
                if stamp is not None:
                    stamps[name] = stamp
            self._stamps.append(stamps)
            self._loaded.append({name: load_service(path, self.context)
                                 for name, path in files.items()})
        return self.namespaces()

    def namespaces(self) -> dict[str, dict[str, Any]]:
        """``{namespace: {service: object}}`` as loaded now (as ``remotes.load_paths``)."""
        namespaces: dict[str, dict[str, Any]] = {}
        for item, loaded in zip(self.paths, self._loaded):
            services = namespaces.setdefault(item["namespace"], {})
            services.update((name, svc) for name, (svc, _module) in loaded.items())
        for ns, extra in self.extra.items():
            namespaces.setdefault(ns, {}).update(extra)
        return namespaces

    def scan(self) -> list[str]:
        """Reload what changed since the last scan; the changes made, e.g.
        ``["reloaded user.chat", "removed user.old"]`` (empty: nothing to do)."""
        changes: list[str] = []
        for i, item in enumerate(self.paths):
            ns, directory = item["namespace"], item["path"]
            try:
                files = service_files(directory)
            except OSError as exc:
                if i not in self._missing:
                    self._missing.add(i)
                    log.warning("remote service directory %s cannot be read (%s); its "
                                "services keep serving as they are", directory, exc)
                continue
            self._missing.discard(i)
            old_stamps = self._stamps[i]
            loaded = self._loaded[i]
            stamps = {}
            for name, path in files.items():
                stamp = _stamp(path)
                if stamp is None:
                    continue
                stamps[name] = stamp
                if old_stamps.get(name) == stamp:
                    continue
                try:
                    service, module = load_service(path, self.context, fresh=True)
                except Exception:
                    log.exception("reloading remote service %s.%s from %s failed; %s", ns, name,
                                  path, "the old code keeps serving" if name in loaded
                                  else "it is not served")
                    continue
                old = loaded.get(name)
                loaded[name] = (service, module)
                if old is not None:
                    sys.modules.pop(old[1], None)
                changes.append(f"{'reloaded' if old is not None else 'added'} {ns}.{name}")
            for name in [name for name in loaded if name not in stamps]:
                _service, module = loaded.pop(name)
                sys.modules.pop(module, None)
                changes.append(f"removed {ns}.{name}")
            self._stamps[i] = stamps
        return changes
