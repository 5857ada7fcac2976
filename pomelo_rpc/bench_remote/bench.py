"""Benchmark service: echo returns its payload; hold answers after ``seconds``."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def echo(payload: Any) -> Any:
    return payload


async def hold(payload: Any, seconds: float) -> Any:
    await asyncio.sleep(seconds)
    return payload


async def aecho(payload: Any) -> Any:
    """``echo`` as an ``async def`` that never suspends, as most handlers are written."""
    return payload


def burn(ms: float) -> float:
    """Spin the CPU for ``ms`` milliseconds (a synchronous handler doing real work)."""
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass
    return ms
