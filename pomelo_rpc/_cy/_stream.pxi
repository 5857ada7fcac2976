# Included by the incremental decoders (frames.pyx, mqtt.pyx). Twin: pomelo_rpc/core/_stream.py.

cdef inline bytearray _rest(bytearray buf, object data, Py_ssize_t off, Py_ssize_t n,
                            bint buffered):
    """What a decoder holds after consuming ``off`` of the ``n`` bytes of ``data``:
    ``buf`` trimmed when ``data`` was ``buf`` (``buffered``), else ``buf`` (empty) when
    all was consumed, else a copy of the unread tail."""
    if buffered:
        del buf[:off]
        return buf
    if off == n:
        return buf
    return bytearray(data[off:])
