"""Benchmark service: echo returns its payload; hold answers after ``seconds``."""

from __future__ import annotations

import asyncio
from typing import Any


def echo(payload: Any) -> Any:
    return payload


async def hold(payload: Any, seconds: float) -> Any:
    await asyncio.sleep(seconds)
    return payload
