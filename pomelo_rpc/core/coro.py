"""One step of a coroutine in a context: pure-Python twin of ``pomelo_rpc/_cy/coro.pyx``.

How the server starts an ``async def`` call eagerly (``server_protocol``): its first
step runs at once, in the call's own copy of the context. And how it calls a method
with the argument list of a request (``call_list``), and how a client makes the future
of a call (``new_future``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any

_Future = asyncio.Future

#: the ``create_future`` methods that make ``asyncio.Future(loop=loop)`` and nothing else
_PLAIN_CREATE: list[object] = [asyncio.BaseEventLoop.create_future]
try:
    import uvloop
    _PLAIN_CREATE.append(uvloop.Loop.create_future)
except ImportError:    # pragma: no cover (a dependency)
    pass


class Suspended:
    """What ``step`` returns when the coroutine suspended: what it yielded."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def step(coro: Coroutine[Any, Any, Any], ctx: Context) -> Any:
    """Run ``coro`` in ``ctx`` until it returns or suspends: its value, or a
    ``Suspended`` holding what it yielded; what it raises propagates."""
    try:
        return Suspended(ctx.run(coro.send, None))
    except StopIteration as stop:
        return stop.value


def call_list(func: Callable[..., Any], args: list[Any]) -> Any:
    """``func(*args)`` (compiled: the list's items passed as they are, no tuple made)."""
    return func(*args)


def as_list(items: tuple[Any, ...]) -> list[Any]:
    """``list(items)`` (compiled: the list made at its size, the items set in it)."""
    return list(items)


def future_kwargs(loop: asyncio.AbstractEventLoop) -> dict[str, Any] | None:
    """What ``new_future`` makes the futures of ``loop`` with: ``{"loop": loop}`` when
    its ``create_future`` is asyncio's or uvloop's (which make exactly that), else None."""
    create = getattr(type(loop), "create_future", None)
    if any(create is plain for plain in _PLAIN_CREATE):
        return {"loop": loop}
    return None


def new_future(loop: asyncio.AbstractEventLoop,
               kwargs: dict[str, Any] | None) -> asyncio.Future[Any]:
    """``loop.create_future()``; with ``kwargs`` (``future_kwargs(loop)``) the future
    made as it would (compiled: the type called with the dict, no method looked up)."""
    if kwargs is None:
        return loop.create_future()
    return _Future(**kwargs)
