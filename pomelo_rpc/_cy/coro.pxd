# What the server protocol cimports from coro.pyx.

cpdef tuple step(object coro, object ctx)
