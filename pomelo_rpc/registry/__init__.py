"""Cluster membership on an existing engine: ``create(url)`` picks the backend by scheme::

    reg = registry.create("redis://127.0.0.1:6379/0", cluster="game1", ttl=10.0,
                          connect_timeout=5.0)
    await reg.open()

Schemes: ``file`` (pomelo's servers.json), ``redis``, ``etcd``, ``pomelo`` (the master of
a Node pomelo cluster), ``pinus`` (the master of a pinus cluster). Backends are imported
lazily, so their optional dependencies load only when used. Each class is built as
``Cls(url, *, cluster, ttl, connect_timeout)``.
"""

from __future__ import annotations

import importlib
from typing import Any, cast
from urllib.parse import urlsplit

from .base import LEAVING, Listener, Record, Registry, RegistryError

__all__ = ["create", "register_scheme", "Registry", "RegistryError", "Record", "Listener",
           "LEAVING"]

_SCHEMES: dict[str, str | type] = {
    "file": "pomelo_rpc.registry.file:FileRegistry",
    "redis": "pomelo_rpc.registry.redis:RedisRegistry",
    "rediss": "pomelo_rpc.registry.redis:RedisRegistry",    # Redis over TLS
    "etcd": "pomelo_rpc.registry.etcd:EtcdRegistry",
    "pomelo": "pomelo_rpc.registry.pomelo:PomeloMasterRegistry",
    "pinus": "pomelo_rpc.registry.pinus:PinusMasterRegistry",
}


def register_scheme(scheme: str, target: str | type) -> None:
    """Make URLs of ``scheme`` build ``target`` (a class, or ``"module.path:ClassName"``)."""
    _SCHEMES[scheme.lower()] = target


def _resolve(target: str | type) -> Any:
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)
    return target


def create(registry: str | Registry, *, cluster: str, ttl: float,
           connect_timeout: float) -> Registry:
    """The Registry for ``registry``: an object of the protocol is returned as it is;
    a URL builds the backend of its scheme (ValueError for an unknown scheme)."""
    if not isinstance(registry, str):
        return registry
    scheme = urlsplit(registry).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown registry scheme {scheme!r} in {registry!r}; "
                         f"known: {', '.join(sorted(_SCHEMES))}")
    cls = _resolve(_SCHEMES[scheme])
    return cast(Registry, cls(registry, cluster=cluster, ttl=ttl,
                              connect_timeout=connect_timeout))
