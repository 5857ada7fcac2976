"""The deadline of the call being served, shared by the server and the client sides.

The server sets it (a ``time.monotonic()`` value) while it runs a request that
carries a budget; ``time_remaining()`` reads it in the handler, and a call the
handler makes inherits it: its timeout is the smaller of its own and what is left.
A budget travels as whole milliseconds, relative, so that clocks need not agree
(core.client_protocol.budget_ms).
"""

from __future__ import annotations

import time
from contextvars import ContextVar

#: The deadline (``time.monotonic()``) of the call the current context serves, or None.
current_deadline: ContextVar[float | None] = ContextVar("pomelo_rpc_deadline", default=None)

_monotonic = time.monotonic


def time_remaining() -> float | None:
    """Seconds left before the deadline of the call this handler serves (may be
    negative once it has passed); None outside a call, or for a call without one."""
    deadline = current_deadline.get()
    return None if deadline is None else deadline - _monotonic()


def inherited_timeout(timeout: float | None) -> float | None:
    """``timeout`` (None or 0: none) bounded by what is left of the current call's
    deadline, if there is one: the smaller of the two."""
    deadline = current_deadline.get()
    if deadline is None:
        return timeout
    left = deadline - _monotonic()
    return left if not timeout or left < timeout else timeout

