"""What the incremental decoders share (twin: ``src/_stream.pxi``)."""

from __future__ import annotations


def rest(buf: bytearray, data: bytes | bytearray | memoryview, off: int) -> bytearray:
    """What a decoder holds after consuming the first ``off`` bytes of ``data``:
    ``buf`` trimmed when ``data`` is ``buf``, else ``buf`` (empty) when all was
    consumed, else a copy of the unread tail."""
    if data is buf:
        del buf[:off]
        return buf
    if off == len(data):
        return buf
    return bytearray(data[off:])
