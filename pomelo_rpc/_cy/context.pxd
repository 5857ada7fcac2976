# What other compiled modules cimport from context.pyx.

cpdef object deadline()
cpdef object set_deadline(object value)
cpdef reset_deadline(object token)
cpdef object set_trace(object value)
cpdef reset_trace(object token)
cpdef object copy_current()
