"""pomelo_rpc: pomelo's RPC layer in Python, with a Cython core on uvloop and msgpack."""

import typing as _typing

from . import client, server
from .core import default as _default_core
from .errors import (AuthenticationError, ConnectionLostError, DispatchError, FrameError,
                     NoServerError, PendingQueueFullError, RemoteError, RpcError, RpcTimeoutError)
from .proxy import BroadcastError

if _typing.TYPE_CHECKING:   # typing-only names, kept out of the package namespace
    import asyncio
    from collections.abc import Awaitable
    from typing import TypeVar

    _T = TypeVar("_T")

__version__ = "0.1.0"

#: "cython" when the compiled core is in use, "python" for the pure-Python twin.
IMPLEMENTATION = _default_core().name


def new_event_loop() -> "asyncio.AbstractEventLoop":
    """A uvloop loop when uvloop is installed, else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        import asyncio
        return asyncio.new_event_loop()
    # uvloop ships its types; where it is not installed (Windows, PyPy) mypy sees Any here
    return uvloop.new_event_loop()  # type: ignore[no-any-return, unused-ignore]


def run(main: "Awaitable[_T]") -> "_T":
    """Run coroutine ``main`` to completion on uvloop when installed (like ``asyncio.run``)."""
    import asyncio
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


__all__ = [
    "server", "client", "IMPLEMENTATION", "run", "new_event_loop",
    "RpcError", "RemoteError", "RpcTimeoutError", "ConnectionLostError", "AuthenticationError",
    "NoServerError",
    "PendingQueueFullError", "FrameError", "DispatchError", "BroadcastError",
]
