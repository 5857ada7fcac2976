# Augments pomelo_rpc/core/writer.py (compiled here through the writer.py link).

cimport cython

from pomelo_rpc._cy.clock cimport monotonic
from pomelo_rpc._cy.meter cimport Meter

cdef Py_ssize_t WRITE_CHUNK
cdef Py_ssize_t EARLY_SENT

cdef class Writer


cdef class Slice:
    cdef public double seconds
    cdef public double end


cdef class Turn:
    cdef object __weakref__
    cdef readonly object loop
    cdef public bint scheduled
    cdef public bint wrote
    cdef list pending
    cdef Py_ssize_t held
    cdef list hooks
    cdef list slices
    cdef public Py_ssize_t early

    cpdef schedule(self)
    cpdef at_end(self, object hook)
    @cython.locals(end=double)
    cpdef double start_slice(self, Slice turn_slice) except? -1.0
    @cython.locals(pending=list)
    cpdef hold(self, Writer writer)
    @cython.locals(writer=Writer, pending=list)
    cpdef flush(self)
    @cython.locals(slices=list, turn_slice=Slice)
    cpdef end(self)


cpdef object per_loop(object registry, object loop, object make)
cpdef Turn turn_of(object loop)


cdef class Writer:
    cdef public object transport
    cdef Turn _turn
    cdef list _out
    cdef public bint closed
    cdef public bint held
    cdef public Meter meter
    cdef object _sent
    cdef object _flushed

    cpdef Turn turn(self)
    @cython.locals(turn=Turn)
    cpdef write(self, bytes data)
    cpdef queue(self, bytes data)
    cpdef flush(self)
    cpdef flush_now(self)
    @cython.locals(turn=Turn)
    cpdef object sent(self)
    cpdef direct(self, bytes data)
    @cython.locals(meter=Meter, out=list)
    cdef _send(self)
    cdef _flushed_now(self, bint written)
