"""Benchmark service: echo returns its payload; hold answers after ``seconds``."""

from __future__ import annotations

import asyncio
from typing import Any


def echo(payload: Any) -> Any:
    return payload


async def hold(payload: Any, seconds: float) -> Any:
    await asyncio.sleep(seconds)
    return payload


async def aecho(payload: Any) -> Any:
    """``echo`` as an ``async def`` that never suspends, as most handlers are written."""
    return payload
