"""Remote services loaded from directories: one ``*.py`` file, one service.

A service module either defines ``create(context)`` returning the service object,
whose public callables are the methods, or its public module-level functions are
the methods. The same directory tells the client which proxies to generate.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("pomelo_rpc.remotes")

_loaded_count = 0


def _import_file(path: str, fresh: bool = False) -> types.ModuleType:
    """Import the file at ``path`` as a fresh module.

    ``fresh``: compile the source as it is now, never a cached ``.pyc`` (the cache is
    keyed by the mtime in whole seconds and the size, which an edit may keep).
    """
    global _loaded_count
    _loaded_count += 1
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"pomelo_rpc_remote_{_loaded_count}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load remote service {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        if fresh:
            with open(path, "rb") as f:
                source = f.read()
            exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
        else:
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def service_files(directory: str) -> dict[str, str]:
    """``{service_name: file}`` for each public ``*.py`` file of ``directory``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"remote service directory not found: {directory}")
    out = {}
    for entry in sorted(os.listdir(directory)):
        stem, ext = os.path.splitext(entry)
        if ext == ".py" and not stem.startswith("_"):
            out[stem] = os.path.join(directory, entry)
    return out


def public_methods(service: object) -> dict[str, Callable[..., Any]]:
    """``{name: callable}`` of a service object, module or dict (names not starting with ``_``)."""
    out: dict[str, Callable[..., Any]] = {}
    if isinstance(service, dict):
        return {name: value for name, value in service.items()
                if not name.startswith("_") and callable(value)}
    if inspect.ismodule(service):
        for name, value in vars(service).items():
            if (not name.startswith("_") and name != "create" and inspect.isfunction(value)
                    and value.__module__ == service.__name__):
                out[name] = value
        return out
    for name in dir(service):
        if name.startswith("_"):
            continue
        value = getattr(service, name)
        if callable(value) and not inspect.isclass(value):
            out[name] = value
    return out


def load_directory(directory: str, context: Any) -> dict[str, Any]:
    """``{service_name: service}`` for a directory; each ``create(context)`` is called."""
    services = {}
    for name, path in service_files(directory).items():
        services[name] = load_service(path, context)[0]
    return services


def load_service(path: str, context: Any, fresh: bool = False) -> tuple[Any, str]:
    """``(service, module name)`` of one service file: its ``create(context)``, or the
    module itself. ``fresh``: compile the current source (see ``_import_file``)."""
    module = _import_file(path, fresh)
    factory = getattr(module, "create", None)
    if not callable(factory):
        return module, module.__name__
    try:
        return factory(context), module.__name__
    except BaseException:
        sys.modules.pop(module.__name__, None)
        raise


def arity(func: Callable[..., Any]) -> tuple[int, int]:
    """``(min_args, max_args)`` positional arguments ``func`` accepts; max -1 for ``*args``."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return 0, -1
    lo = hi = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo += 1
        elif p.kind == p.VAR_POSITIONAL:
            hi = -1
            break
    return lo, hi


def is_async(func: object) -> bool:
    """True for a coroutine function (or a callable object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def method_entries(
        namespaces: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str, str, Callable[..., Any], int, int, bool]]:
    """Dispatcher entries from ``{namespace: {service_name: service}}``."""
    entries = []
    for ns in sorted(namespaces):
        for svc in sorted(namespaces[ns]):
            for name, func in sorted(public_methods(namespaces[ns][svc]).items()):
                lo, hi = arity(func)
                entries.append((ns, svc, name, func, lo, hi, is_async(func)))
    return entries


def load_paths(paths: Iterable[Mapping[str, str]], context: Any,
               extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{namespace: {service: object}}`` from ``[{"namespace", "path"}]`` plus ``extra``."""
    namespaces: dict[str, dict[str, Any]] = {}
    for item in paths:
        ns, path = item["namespace"], item["path"]
        namespaces.setdefault(ns, {}).update(load_directory(path, context))
    for ns, services in (extra or {}).items():
        namespaces.setdefault(ns, {}).update(services)
    return namespaces


def interface(directory: str, context: Any) -> dict[str, list[str]]:
    """``{service_name: [method names]}`` of a directory, for generating client proxies."""
    return {name: sorted(public_methods(svc))
            for name, svc in load_directory(directory, context).items()}
