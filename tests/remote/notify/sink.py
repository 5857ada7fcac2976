"""Notify targets: what each method was called with lands in ``context["notes"]``."""

import asyncio


class Sink:
    def __init__(self, context):
        self.notes = (context or {}).get("notes", [])

    def note(self, value):
        self.notes.append(("note", value))
        return "an answer nobody reads"

    async def anote(self, value, delay=0.0):
        await asyncio.sleep(delay)
        self.notes.append(("anote", value))

    def boom(self, message):
        raise ValueError(message)

    async def aboom(self, message):
        await asyncio.sleep(0.01)
        raise KeyError(message)

    async def held(self, seconds):
        self.notes.append(("started", seconds))
        try:
            await asyncio.sleep(seconds)
            self.notes.append(("finished", seconds))
        except asyncio.CancelledError:
            self.notes.append(("cancelled", seconds))
            raise

    def count(self):
        return len(self.notes)


def create(context):
    return Sink(context)
