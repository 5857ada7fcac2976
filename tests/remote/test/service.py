"""Test service: module-level functions are the methods."""

import asyncio


def echo(msg):
    return msg


def add(a, b=0):
    return a + b


async def slow_echo(msg, delay=0.0):
    await asyncio.sleep(delay)
    return msg


def fail(message):
    raise ValueError(message)


async def async_fail(message):
    await asyncio.sleep(0)
    raise KeyError(message)


def variadic(*args):
    return len(args)


def unserializable():
    return object()


def _private():
    return "hidden"
