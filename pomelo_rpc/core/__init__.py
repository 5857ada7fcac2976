"""The hot core: frame codec, request-id table, dispatch, MQTT codec.

Two implementations with the same names: the compiled one in ``pomelo_rpc._cy``
(built from ``src/*.pyx``) and the pure-Python twin in this package. ``select``
returns one of them as a namespace; ``default()`` honours ``POMELO_RPC_PURE=1``.
"""

import logging
import types

from ..options import env_wants_pure

log = logging.getLogger("pomelo_rpc.core")

MODULES = ("frames", "pending", "dispatch", "mqtt")

_loaded = {}


def _load(name):
    if name == "python":
        from . import dispatch, frames, mqtt, pending
    elif name == "cython":
        from .._cy import dispatch, frames, mqtt, pending
    else:
        raise ValueError(f"core must be 'cython' or 'python', not {name!r}")
    return types.SimpleNamespace(name=name, frames=frames, pending=pending, dispatch=dispatch,
                                 mqtt=mqtt)


def select(name=None):
    """The core named ``name`` ('cython' or 'python'); None gives the default one."""
    if name is None:
        return default()
    core = _loaded.get(name)
    if core is None:
        core = _loaded[name] = _load(name)
    return core


def available():
    """Names of the cores that can be loaded here, compiled first."""
    names = []
    for name in ("cython", "python"):
        try:
            select(name)
        except ImportError:
            continue
        names.append(name)
    return names


_default = None


def default():
    """The compiled core unless POMELO_RPC_PURE is set or it was not built."""
    global _default
    if _default is None:
        if env_wants_pure():
            _default = select("python")
        else:
            try:
                _default = select("cython")
            except ImportError as exc:
                log.debug("compiled core unavailable (%s); using the pure-Python core", exc)
                _default = select("python")
    return _default
