"""Remote services loaded from directories: one ``*.py`` file, one service.

A service module either defines ``create(context)`` returning the service object,
whose public callables are the methods, or its public module-level functions are
the methods. The same directory tells the client which proxies to generate.
"""

import importlib.util
import inspect
import logging
import os
import sys

log = logging.getLogger("pomelo_rpc.remotes")

_loaded_count = 0


def _import_file(path):
    """Import the file at ``path`` as a fresh module."""
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
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def service_files(directory):
    """``{service_name: file}`` for each public ``*.py`` file of ``directory``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"remote service directory not found: {directory}")
    out = {}
    for entry in sorted(os.listdir(directory)):
        stem, ext = os.path.splitext(entry)
        if ext == ".py" and not stem.startswith("_"):
            out[stem] = os.path.join(directory, entry)
    return out


def public_methods(service):
    """``{name: callable}`` of a service object, module or dict (names not starting with ``_``)."""
    out = {}
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


def load_directory(directory, context):
    """``{service_name: service}`` for a directory; each ``create(context)`` is called."""
    services = {}
    for name, path in service_files(directory).items():
        module = _import_file(path)
        factory = getattr(module, "create", None)
        services[name] = factory(context) if callable(factory) else module
    return services


def arity(func):
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


def is_async(func):
    """True for a coroutine function (or a callable object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def method_entries(namespaces):
    """Dispatcher entries from ``{namespace: {service_name: service}}``."""
    entries = []
    for ns in sorted(namespaces):
        for svc in sorted(namespaces[ns]):
            for name, func in sorted(public_methods(namespaces[ns][svc]).items()):
                lo, hi = arity(func)
                entries.append((ns, svc, name, func, lo, hi, is_async(func)))
    return entries


def load_paths(paths, context, extra=None):
    """``{namespace: {service: object}}`` from ``[{"namespace", "path"}]`` plus ``extra``."""
    namespaces = {}
    for item in paths:
        ns, path = item["namespace"], item["path"]
        namespaces.setdefault(ns, {}).update(load_directory(path, context))
    for ns, services in (extra or {}).items():
        namespaces.setdefault(ns, {}).update(services)
    return namespaces


def interface(directory, context):
    """``{service_name: [method names]}`` of a directory, for generating client proxies."""
    return {name: sorted(public_methods(svc))
            for name, svc in load_directory(directory, context).items()}
