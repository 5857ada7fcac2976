"""pomelo_rpc: pomelo's RPC layer in Python, with a Cython core on uvloop and msgpack."""

import typing as _typing

from . import client, server
from .core import default as _default_core
from .deadline import time_remaining
from .errors import (AuthenticationError, ConnectionLostError, DispatchError, FrameError,
                     NoServerError, PendingQueueFullError, RemoteError, RpcError,
                     RpcTimeoutError, ServerBusyError, ServerUnavailableError)
from .proxy import BroadcastError

if _typing.TYPE_CHECKING:   # typing-only names, kept out of the package namespace
    import asyncio
    from collections.abc import Awaitable
    from typing import TypeVar

    _T = TypeVar("_T")

# the one place the version is written: pyproject.toml reads it, CHANGELOG.md heads with it
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
    """Run ``main`` to completion on uvloop when installed, as ``asyncio.run`` does: at the
    end, tasks still pending are cancelled, async generators and the default executor
    are shut down, and the loop is closed."""
    import asyncio

    async def _main() -> "_T":
        return await main

    if hasattr(asyncio, "Runner"):      # Python 3.11+
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            result: _T = runner.run(_main())
            return result
    loop = new_event_loop()             # Python 3.10: asyncio.run's steps by hand
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(_main())
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


__all__ = [
    "server", "client", "IMPLEMENTATION", "run", "new_event_loop", "time_remaining",
    "RpcError", "RemoteError", "RpcTimeoutError", "ConnectionLostError", "AuthenticationError",
    "NoServerError", "ServerBusyError", "ServerUnavailableError",
    "PendingQueueFullError", "FrameError", "DispatchError", "BroadcastError",
]
