# cython: language_level=3
"""The monotonic clock as a C function (Cython). Twin: ``pomelo_rpc/core/clock.py``.

``monotonic()`` is ``time.monotonic()`` to the last bit (the same clock, converted the
way CPython converts it), without a Python call: the protocol classes read it per
read and per request.
"""

from libc.stdint cimport int64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cpdef double monotonic() noexcept:
    """``time.monotonic()``: seconds of the monotonic clock, as a float."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    # CPython's _PyTime_AsSecondsDouble: whole nanoseconds, then one division
    return <double>(<int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec) / 1e9


cpdef long long whole(double q) noexcept:
    """``int(q)`` of a float ``q`` in [0, 2**52): a C cast, no objects."""
    return <long long>q
