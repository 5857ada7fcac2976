"""Benchmark service: echo returns its payload."""

from typing import Any


def echo(payload: Any) -> Any:
    return payload
