"""pinus-rpc's tcp framing, pure-Python twin of ``_cy/pinus_tcp.pyx`` (same names, same
behaviour).

A frame, as pinus-rpc 1.7.4's ``lib/util/composer.ts`` writes it: the length of what
follows as a big-endian base-128 varint (7 bits a byte, the most significant group
first, the high bit set on every byte but the last), then one type byte, then the
payload (UTF-8 JSON); the length counts the type byte. Types: ``REQUEST`` (payload
``{"id", "msg"}``, or a JSON array of them from a buffering client; id 0 is a notify),
``PING`` and ``PONG`` (no payload), ``RESPONSE`` (``{"id", "resp"}``, or an array).

A frame is decoded as ``(type, payload)``, the payload as bytes (empty for a ping or a
pong). Bad input is a FrameError, after which the stream is unusable: a length whose
varint has a leading zero group (composer.ts never writes one, and a run of them would
never end) or more than ``MAX_LENGTH_BYTES`` bytes, a length of 0 (no type byte), a
length over ``max_size``, an unknown type.
"""

from __future__ import annotations

from typing import Any

from ..errors import FrameError
from ._stream import rest
from .mqtt import _codec_text, call_payload

REQUEST = 0
PING = 1
PONG = 2
RESPONSE = 3

#: The longest length varint accepted (35 bits: far past any ``pkg_size``).
MAX_LENGTH_BYTES = 5
_MAX_LENGTH = (1 << (7 * MAX_LENGTH_BYTES)) - 1

PING_FRAME = b"\x01\x01"
PONG_FRAME = b"\x01\x02"

_EMPTY = {PING: (PING, b""), PONG: (PONG, b"")}


class PinusDecoder:
    """Incremental decoder: ``feed`` any split of the byte stream, get whole frames."""

    def __init__(self, max_size: int = 8 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_size

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Add ``data``; return the ``(type, payload)`` of each frame completed by it.

        Raises FrameError on a bad length or type (see the module docstring); the
        stream is then unusable and the connection must be closed.
        """
        buf = self._buf
        if buf:
            buf += data
            data = buf
        out: list[tuple[int, bytes]] = []
        n = len(data)
        off = 0
        mx = self._max
        view = memoryview(data)
        try:
            while off < n:
                if view[off] == 0x80:
                    raise FrameError("pinus tcp frame length with a leading zero group")
                size = 0
                pos = off
                complete = False
                while pos < n:
                    byte = view[pos]
                    pos += 1
                    size = (size << 7) | (byte & 0x7F)
                    if size > mx:
                        raise FrameError(f"pinus tcp frame of {size} bytes exceeds "
                                         f"pkg_size {mx}")
                    if not byte & 0x80:
                        complete = True
                        break
                    if pos - off == MAX_LENGTH_BYTES:
                        raise FrameError(f"pinus tcp frame length is longer than "
                                         f"{MAX_LENGTH_BYTES} bytes")
                if not complete:
                    break
                if size == 0:
                    raise FrameError("pinus tcp frame of 0 bytes (no type)")
                end = pos + size
                if end > n:
                    break
                kind = view[pos]
                if kind > RESPONSE:
                    raise FrameError(f"unknown pinus tcp frame type {kind}")
                if size == 1 and kind in _EMPTY:
                    out.append(_EMPTY[kind])
                else:
                    out.append((kind, bytes(view[pos + 1:end])))
                off = end
        finally:
            view.release()
        self._buf = rest(buf, data, off)
        return out


def _length(n: int) -> bytes:
    """``n`` as composer.ts writes a length: big-endian base-128, minimal."""
    if n > _MAX_LENGTH:
        raise FrameError(f"pinus tcp frame of {n} bytes is too long to frame")
    out = bytearray((n & 0x7F,))
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.reverse()
    return bytes(out)


def encode(kind: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """The frame of type ``kind`` carrying ``payload`` (bytes)."""
    if not 0 <= kind <= 0xFF:
        raise FrameError(f"pinus tcp frame type {kind} out of range")
    body = bytes(payload)
    return _length(len(body) + 1) + bytes((kind,)) + body


def encode_request(payload: bytes | bytearray | memoryview) -> bytes:
    """A REQUEST frame: ``payload`` is the JSON of a request (or of an array of them)."""
    return encode(REQUEST, payload)


def encode_response(payload: bytes | bytearray | memoryview) -> bytes:
    """A RESPONSE frame: ``payload`` is the JSON of an answer (or of an array of them)."""
    return encode(RESPONSE, payload)


def encode_call(rid: int, budget: int | None, head: bytes, args: bytes) -> bytes:
    """The REQUEST frame of a call: ``{"id":<rid>,"budget":<budget><head><args>}}`` (no
    ``"budget"`` when it is None), ``head`` and ``args`` being JSON text already (the
    request's ``,"msg":{...,"args":`` and its arguments); ``rid`` and ``budget`` ints
    of at most 64 bits."""
    return encode(REQUEST, call_payload(rid, budget, head, args))


def encode_call_json(rid: int, budget: int | None, head: bytes, args: Any,
                     codec: Any) -> bytes:
    """``encode_call(rid, budget, head, codec.dumps_bytes(args))`` (the compiled twin
    writes the usual small args itself, the same text)."""
    return encode_call(rid, budget, head, _codec_text(codec, args))
