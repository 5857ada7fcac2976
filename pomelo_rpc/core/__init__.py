"""The hot core: the call path, the protocol classes, request table, dispatch, writer,
the frame, MQTT and pinus tcp codecs.

Two implementations of the same modules. The pure-Python one is this package. The
compiled one is ``pomelo_rpc._cy``: ``frames``, ``mqtt``, ``pinus_tcp``, ``coro``,
``clock``, ``context`` and ``sampling`` are hand-written Cython (``_cy/*.pyx``, each with
its twin here and differential tests); every other
module is written once, here, and compiled there from a link to it with an
augmenting ``.pxd`` (Cython's pure-Python mode). mypy checks this package; the
compiled modules are the same source or tested equal, so they have no stubs.

The core is chosen once, at import (``default()``, read by ``pomelo_rpc.IMPLEMENTATION``):
the compiled one unless ``POMELO_RPC_PURE=1`` is set or it was not built.
``select(name)`` gives either by name: the ``core=`` option, a hook for tests and
benches that run both in one process.
"""

from __future__ import annotations

import importlib
import logging
import os
import types
from importlib.machinery import EXTENSION_SUFFIXES

from ..options import env_wants_pure


class Core(types.SimpleNamespace):
    """One implementation of the core: its ``name`` and its modules."""

    name: str
    frames: types.ModuleType
    pending: types.ModuleType
    dispatch: types.ModuleType
    mqtt: types.ModuleType
    pinus_tcp: types.ModuleType
    writer: types.ModuleType
    client_protocol: types.ModuleType
    server_protocol: types.ModuleType
    json_codec: types.ModuleType
    json_protocol: types.ModuleType
    invoke: types.ModuleType
    meter: types.ModuleType
    coro: types.ModuleType
    clock: types.ModuleType
    context: types.ModuleType
    sampling: types.ModuleType
    forward: types.ModuleType


log = logging.getLogger("pomelo_rpc.core")

#: The file setup.py leaves in an installed ``pomelo_rpc/_cy`` whose core could not be
#: compiled (no C compiler at install time): its text is the warning logged at import.
NOT_COMPILED = "NOT_COMPILED.txt"

#: The modules of a core.
MODULES = ("frames", "pending", "dispatch", "mqtt", "pinus_tcp", "meter", "writer",
           "client_protocol", "server_protocol", "json_codec", "json_protocol", "invoke",
           "coro", "clock", "context", "sampling", "forward")

_loaded: dict[str, Core] = {}


def _load(name: str) -> Core:
    if name not in ("cython", "python"):
        raise ValueError(f"core must be 'cython' or 'python', not {name!r}")
    package = "pomelo_rpc._cy" if name == "cython" else "pomelo_rpc.core"
    modules = {mod: importlib.import_module(f"{package}.{mod}") for mod in MODULES}
    if name == "cython":
        # pomelo_rpc/_cy holds the one-source modules' .py links too: an uncompiled
        # tree imports those as plain Python, which is not the compiled core
        plain = [mod for mod, m in modules.items()
                 if not (m.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))]
        if plain:
            raise ImportError(f"the Cython core is not compiled ({', '.join(plain)} "
                              f"would load as plain Python)")
    return Core(name=name, **modules)


def select(name: str | None = None) -> Core:
    """The core named ``name`` ('cython' or 'python'); None gives the default one."""
    if name is None:
        return default()
    core = _loaded.get(name)
    if core is None:
        core = _loaded[name] = _load(name)
    return core


def _not_compiled(exc: ImportError) -> None:
    """Log why the compiled core is missing: a WARNING in an install whose build fell back
    to the pure-Python core (setup.py's note), DEBUG in a source tree not built yet."""
    from .. import _cy
    note = os.path.join(os.path.dirname(_cy.__file__ or ""), NOT_COMPILED)
    try:
        with open(note, encoding="utf-8") as f:
            why = f.read().strip()
    except OSError:
        log.debug("compiled core unavailable (%s); using the pure-Python core", exc)
        return
    log.warning("%s (POMELO_RPC_PURE=1 chooses the pure-Python core and silences this)", why)


def available() -> list[str]:
    """Names of the cores that can be loaded here, compiled first."""
    names = []
    for name in ("cython", "python"):
        try:
            select(name)
        except ImportError:
            continue
        names.append(name)
    return names


_default: Core | None = None


def default() -> Core:
    """The compiled core unless POMELO_RPC_PURE is set or it was not built."""
    global _default
    if _default is None:
        if env_wants_pure():
            _default = select("python")
        else:
            try:
                _default = select("cython")
            except ImportError as exc:
                _not_compiled(exc)
                _default = select("python")
    return _default


