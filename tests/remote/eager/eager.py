"""Eager async methods: where each step of a call runs, what its context holds."""

import asyncio
import contextvars

import pomelo_rpc

#: set by ``set_var``: must never be seen by a later call
var = contextvars.ContextVar("eager_test_var", default=None)

#: what the calls saw (read back with ``events``)
_events = []


def _in_task():
    return asyncio.current_task() is not None


async def no_suspend(x):
    """Never suspends: whether it ran in a Task (not when run eagerly)."""
    return {"in_task": _in_task(), "x": x}


async def suspend(x, delay=0.0):
    """Suspends once: in a Task before and after the await?"""
    before = _in_task()
    await asyncio.sleep(delay)
    return [before, _in_task(), x]


async def set_var(value, suspend_first=False):
    """Set ``var`` (after a suspension or not); return what it held before."""
    if suspend_first:
        await asyncio.sleep(0)
    seen = var.get()
    var.set(value)
    return seen


def get_var():
    """What ``var`` holds for a plain call."""
    return var.get()


async def get_var_async():
    """What ``var`` holds for a coroutine call."""
    return var.get()


async def raise_now(message):
    """Raises at its first step."""
    raise ValueError(message)


async def raise_later(message):
    """Raises after suspending."""
    await asyncio.sleep(0)
    raise KeyError(message)


async def cancel_now():
    """Raises CancelledError at its first step."""
    raise asyncio.CancelledError("the handler gave up")


async def remaining(delay=0.0):
    """The budget left at the first step, and after sleeping ``delay``."""
    first = pomelo_rpc.time_remaining()
    if delay:
        await asyncio.sleep(delay)
    return [first, pomelo_rpc.time_remaining()]


def remaining_now():
    """The budget left, for a plain call."""
    return pomelo_rpc.time_remaining()


async def sleepy(tag, delay):
    """Sleep ``delay`` s; record how it ended (done, or the CancelledError's args)."""
    try:
        await asyncio.sleep(delay)
    except asyncio.CancelledError as exc:
        _events.append([tag, "cancelled", list(exc.args)])
        raise
    _events.append([tag, "done"])
    return tag


async def yield_none(x):
    """Suspends with a bare yield (``asyncio.sleep(0)``) twice."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return x


def events():
    """What ``sleepy`` calls recorded."""
    return list(_events)


def hands_on(x, delay=None):
    """A ``def`` answering with a coroutine (as a backend's forwardMessage does for an
    ``async def`` handler): ``no_suspend``'s, or ``suspend``'s with ``delay``."""
    return no_suspend(x) if delay is None else suspend(x, delay)
