"""Benchmark service: echo returns its payload."""


def echo(payload):
    return payload
