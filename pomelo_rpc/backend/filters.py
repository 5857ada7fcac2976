"""Handler filters (``gw.before(f)``, ``gw.after(f)``): pomelo's backend filters, run
around every handler of the server. ``before(msg, session)`` may raise to refuse the
request (the error's ``code``, else 500, reaches the player); ``after(msg, session,
resp, error)`` sees every outcome before the answer leaves. Sync or async."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pomelo_rpc.backend.filters")

__all__ = ["HandlerFilters"]


async def _run(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class HandlerFilters:
    """The before and after filters of a server's handlers, in the order added."""

    def __init__(self) -> None:
        self.befores: list[Callable[..., Any]] = []
        self.afters: list[Callable[..., Any]] = []

    def before(self, f: Any) -> None:
        """Add ``f(msg, session)`` (or an object's ``.before``)."""
        self.befores.append(getattr(f, "before", f))

    def after(self, f: Any) -> None:
        """Add ``f(msg, session, resp, error)`` (or an object's ``.after``)."""
        self.afters.append(getattr(f, "after", f))

    async def run_before(self, msg: Any, session: Any) -> None:
        """Run the before filters; the first that raises refuses the request."""
        for f in self.befores:
            await _run(f(msg, session))

    async def run_after(self, msg: Any, session: Any, resp: Any,
                        error: BaseException | None) -> None:
        """Run the after filters; one that raises is logged, the answer stands."""
        for f in self.afters:
            try:
                await _run(f(msg, session, resp, error))
            except Exception:
                log.exception("after filter %r failed on %s", f, msg)
