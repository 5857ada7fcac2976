# What other compiled modules cimport from clock.pyx.

cpdef double monotonic() noexcept
cpdef long long whole(double q) noexcept
