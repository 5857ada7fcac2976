# What other compiled modules may cimport from mqtt.pyx: the JSON payload helpers and the
# call's framer of the hot path, called as C functions.

cpdef bint plain_json(object value) except -1
cpdef bint long_digits(bytes data)
cpdef object request_parts(bytes payload)
cpdef bytes encode_call(object rid, object budget, bytes head, bytes args)
cpdef bytes encode_call_json(object rid, object budget, bytes head, object args,
                             object codec)
cpdef object answer_parts(object payload)
cpdef bytes answer_payload(object rid, bytes body)
cpdef bytes json_suffixed(object value, object codec, bytes suffix)
