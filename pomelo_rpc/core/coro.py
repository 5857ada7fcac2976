"""One step of a coroutine in a context: pure-Python twin of ``pomelo_rpc/_cy/coro.pyx``.

How the server starts an ``async def`` call eagerly (``server_protocol``): its first
step runs at once, in the call's own copy of the context.
"""

from __future__ import annotations

from collections.abc import Coroutine
from contextvars import Context
from typing import Any


def step(coro: Coroutine[Any, Any, Any], ctx: Context) -> tuple[bool, Any]:
    """Run ``coro`` in ``ctx`` until it returns or suspends: ``(True, its value)`` or
    ``(False, what it yielded)``; what it raises propagates."""
    try:
        return False, ctx.run(coro.send, None)
    except StopIteration as stop:
        return True, stop.value
