"""Compiled twins of ``pomelo_rpc.core`` (built from ``src/*.pyx`` by setup.py)."""
