# Augments pomelo_rpc/core/meter.py (compiled here through the meter.py link): the
# series' counts as C arrays, the meter's byte counts as C integers.

cimport cython

cdef Py_ssize_t _MAX_CACHED
cdef double _BOUNDS[19]
cdef Py_ssize_t _NBOUNDS


cdef class Series:
    cdef long long counts[8]
    cdef long long buckets[20]
    cdef readonly double seconds

    @cython.locals(i=Py_ssize_t)
    cpdef add_index(self, Py_ssize_t index, double seconds)
    @cython.locals(i=Py_ssize_t)
    cpdef merge(self, Series other)


cdef class Meter:
    cdef readonly object routes
    cdef readonly dict cache
    cdef readonly bint server
    cdef public long long sent
    cdef public long long received
    cdef dict by_method
    cdef Py_ssize_t by_method_size

    @cython.locals(found=list, entry=tuple)
    cpdef Series known(self, dict msg)
    cpdef Series call_series(self, dict msg)
    cpdef Series series(self, object msg)
    cpdef ok(self, object msg, double seconds)
    cpdef notified(self, object msg, double seconds)
    cpdef cancelled(self, object msg, double seconds)
    cpdef failed(self, object msg, object error, double seconds)


cpdef tuple client_key(dict msg)
cpdef object server_key(object msg)
