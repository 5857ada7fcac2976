"""The monotonic clock: pure-Python twin of ``pomelo_rpc/_cy/clock.pyx``.

``monotonic`` is ``time.monotonic`` itself; the compiled twin reads the same clock
without a Python call.
"""

from __future__ import annotations

import time

#: seconds of the monotonic clock, as a float
monotonic = time.monotonic


def whole(q: float) -> int:
    """``int(q)`` of a float ``q`` in [0, 2**52) (compiled: a C cast, no objects)."""
    return int(q)
