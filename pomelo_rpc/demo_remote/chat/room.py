"""Demo chat service: async methods, as a chat server's would be."""

import asyncio

_history = []


async def say(uid, text):
    await asyncio.sleep(0)
    _history.append((uid, text))
    return len(_history)


def history(limit=5):
    return [list(entry) for entry in _history[-limit:]]
