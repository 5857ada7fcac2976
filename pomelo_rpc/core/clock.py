"""The monotonic clock: pure-Python twin of ``pomelo_rpc/_cy/clock.pyx``.

``monotonic`` is ``time.monotonic`` itself; the compiled twin reads the same clock
without a Python call.
"""

from __future__ import annotations

import time

#: seconds of the monotonic clock, as a float
monotonic = time.monotonic
