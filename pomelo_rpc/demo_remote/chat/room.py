"""Demo chat service: async methods, as a chat server's would be."""

from __future__ import annotations

import asyncio
from typing import Any

_history: list[tuple[Any, str]] = []


async def say(uid: Any, text: str) -> int:
    await asyncio.sleep(0)
    _history.append((uid, text))
    return len(_history)


def history(limit: int = 5) -> list[list[Any]]:
    return [list(entry) for entry in _history[-limit:]]
