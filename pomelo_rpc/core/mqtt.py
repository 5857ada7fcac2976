"""MQTT 3.1.1 codec, pure-Python twin of ``src/mqtt.pyx`` (same names, same behaviour).

Only what pomelo-rpc 1.0.7's mqtt transport uses is parsed in full. A packet is
decoded as a tuple whose first item is its type:

- ``(CONNECT, client_id, keepalive, username, password)`` (``username`` a str and
  ``password`` bytes when their CONNECT flags are set, else None)
- ``(CONNACK, session_present, return_code)``
- ``(PUBLISH, topic, payload, qos, packet_id)`` (``packet_id`` is None at QoS 0)
- ``(PUBACK|PUBREC|PUBREL|PUBCOMP, packet_id)``
- ``(PINGREQ,)``, ``(PINGRESP,)``, ``(DISCONNECT,)``
- ``(SUBSCRIBE|SUBACK|UNSUBSCRIBE|UNSUBACK, body)`` (body bytes, not interpreted)

``max_size`` bounds the remaining length (the bytes after the fixed header).
"""

from __future__ import annotations

import json.encoder
import re
import time
from typing import Any

from ..errors import FrameError
from ._stream import rest

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

TOPIC_RPC = "rpc"
MAX_REMAINING = 268435455   # the largest remaining length 4 varint bytes can carry

# Fixed-header flags that MQTT 3.1.1 requires (PUBLISH's are free; checked apart).
_REQUIRED_FLAGS = (None, 0, 0, None, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, None)
_EMPTY = (PINGREQ, PINGRESP, DISCONNECT)

PINGREQ_PACKET = b"\xc0\x00"
PINGRESP_PACKET = b"\xd0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


def _utf8(data: bytes | bytearray | memoryview, what: str) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"MQTT {what} is not valid UTF-8") from None


def _parse(kind: int, flags: int, body: memoryview) -> tuple[Any, ...]:
    """The packet tuple of one complete packet; FrameError if it is malformed."""
    n = len(body)
    if kind == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise FrameError("MQTT PUBLISH with QoS 3")
        if n < 2:
            raise FrameError("MQTT PUBLISH too short for its topic")
        tlen = (body[0] << 8) | body[1]
        off = 2 + tlen
        if off > n:
            raise FrameError("MQTT PUBLISH topic overruns the packet")
        topic = _utf8(body[2:off], "topic")
        packet_id = None
        if qos:
            if off + 2 > n:
                raise FrameError("MQTT PUBLISH too short for its packet id")
            packet_id = (body[off] << 8) | body[off + 1]
            off += 2
        return (PUBLISH, topic, bytes(body[off:]), qos, packet_id)
    want = _REQUIRED_FLAGS[kind]
    if want is not None and flags != want:
        raise FrameError(f"MQTT packet type {kind} with invalid flags {flags:#x}")
    if kind in _EMPTY:
        if n:
            raise FrameError(f"MQTT packet type {kind} must be empty, has {n} bytes")
        return (kind,)
    if kind == CONNECT:
        return _parse_connect(body)
    if kind == CONNACK:
        if n != 2:
            raise FrameError(f"MQTT CONNACK of {n} bytes (want 2)")
        return (CONNACK, bool(body[0] & 1), body[1])
    if PUBACK <= kind <= PUBCOMP:
        if n != 2:
            raise FrameError(f"MQTT packet type {kind} of {n} bytes (want 2)")
        return (kind, (body[0] << 8) | body[1])
    return (kind, bytes(body))


def _parse_connect(body: memoryview) -> tuple[Any, ...]:
    n = len(body)
    if n < 2:
        raise FrameError("MQTT CONNECT too short")
    plen = (body[0] << 8) | body[1]
    off = 2 + plen
    if off + 4 > n:
        raise FrameError("MQTT CONNECT too short")
    name = bytes(body[2:off])
    if name not in (b"MQTT", b"MQIsdp"):
        raise FrameError(f"MQTT CONNECT with unknown protocol name {name!r}")
    level = body[off]
    if level not in (3, 4):
        raise FrameError(f"MQTT CONNECT with unsupported protocol level {level}")
    cflags = body[off + 1]
    keepalive = (body[off + 2] << 8) | body[off + 3]
    off += 4
    fields: list[Any] = [None]  # client id, then will topic and payload, user name, password
    if cflags & 0x04:
        fields += [None, None]
    user_at = pass_at = 0       # the index of the user name and password in ``fields``
    if cflags & 0x80:
        user_at = len(fields)
        fields.append(None)
    if cflags & 0x40:
        pass_at = len(fields)
        fields.append(None)
    for i in range(len(fields)):
        if off + 2 > n:
            raise FrameError("MQTT CONNECT too short for its fields")
        flen = (body[off] << 8) | body[off + 1]
        off += 2
        if off + flen > n:
            raise FrameError("MQTT CONNECT field overruns the packet")
        fields[i] = body[off:off + flen]
        off += flen
    return (CONNECT, _utf8(fields[0], "client id"), keepalive,
            _utf8(fields[user_at], "user name") if user_at else None,
            bytes(fields[pass_at]) if pass_at else None)


class MqttDecoder:
    """Incremental MQTT decoder: ``feed`` any split of the byte stream, get whole packets."""

    def __init__(self, max_size: int = 8 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_size

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a packet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[Any, ...]]:
        """Add ``data``; return the list of packet tuples completed by it.

        Raises FrameError on a malformed packet, a remaining length longer than 4
        bytes or over ``max_size``; the stream is then unusable and must be closed.
        """
        buf = self._buf
        if buf:
            buf += data
            data = buf
        out = []
        n = len(data)
        off = 0
        mx = self._max
        view = memoryview(data)
        try:
            while n - off >= 2:
                head = view[off]
                kind = head >> 4
                if kind == 0 or kind == 15:
                    raise FrameError(f"reserved MQTT packet type {kind}")
                size = 0
                shift = 0
                pos = off + 1
                while True:
                    if pos == n:
                        size = -1          # the remaining length is still incomplete
                        break
                    byte = view[pos]
                    pos += 1
                    size |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift == 28:
                        raise FrameError("MQTT remaining length is longer than 4 bytes")
                if size < 0:
                    break
                if size > mx:
                    raise FrameError(f"MQTT packet of {size} bytes exceeds pkg_size {mx}")
                end = pos + size
                if end > n:
                    break
                out.append(_parse(kind, head & 0x0F, view[pos:end]))
                off = end
        finally:
            view.release()
        self._buf = rest(buf, data, off)
        return out


def _varint(n: int) -> bytes:
    if n < 0 or n > MAX_REMAINING:
        raise FrameError(f"MQTT remaining length {n} out of range")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > 0xFFFF:
        raise FrameError(f"MQTT string of {len(raw)} bytes is too long")
    return len(raw).to_bytes(2, "big") + raw


def make_client_id() -> str:
    """A client id as pomelo-rpc's mqtt mailbox makes it: ``MQTT_RPC_<ms since epoch>``."""
    return f"MQTT_RPC_{int(time.time() * 1000)}"


def encode_connect(client_id: str | bytes | None = None, keepalive: int = 0,
                   username: str | None = None, password: bytes | None = None) -> bytes:
    """A CONNECT packet as Node pomelo-rpc sends it (MQTT 3.1.1, clean session), with
    a user name and password when given (a password needs a user name)."""
    if client_id is None:
        client_id = make_client_id()
    if not 0 <= keepalive <= 0xFFFF:
        raise FrameError(f"MQTT keepalive {keepalive} out of range")
    if password is not None and username is None:
        raise FrameError("MQTT 3.1.1 CONNECT: a password needs a user name")
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = (b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive.to_bytes(2, "big")
            + _string(client_id))
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return b"\x10" + _varint(len(body)) + body


def encode_connack(return_code: int = 0, session_present: bool = False) -> bytes:
    """A CONNACK packet."""
    return bytes((0x20, 2, 1 if session_present else 0, return_code))


def encode_publish(payload: bytes | bytearray | memoryview, topic: str | bytes = TOPIC_RPC,
                   qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH packet carrying ``payload`` (bytes) on ``topic``."""
    if not 0 <= qos <= 2:
        raise FrameError(f"MQTT QoS {qos} out of range")
    if not 0 <= packet_id <= 0xFFFF:
        raise FrameError(f"MQTT packet id {packet_id} out of range")
    head = _string(topic)
    if qos:
        head += packet_id.to_bytes(2, "big")
    return (bytes((0x30 | (qos << 1),)) + _varint(len(head) + len(payload)) + head
            + bytes(payload))


def encode_pingreq() -> bytes:
    """A PINGREQ packet."""
    return PINGREQ_PACKET


def encode_pingresp() -> bytes:
    """A PINGRESP packet."""
    return PINGRESP_PACKET


def encode_disconnect() -> bytes:
    """A DISCONNECT packet."""
    return DISCONNECT_PACKET


#: The JSON text of string ``s`` as ``json`` writes it with ``ensure_ascii=False``:
#: ``json.encoder.encode_basestring`` itself (the compiled twin only quotes an ASCII
#: string with nothing to escape, without the per-character pass).
json_string = json.encoder.encode_basestring


#: orjson's own nesting limit is 255 levels
_PLAIN_DEPTH = 200
_FLOAT_MAX = 1.7976931348623157e308


def _plain(value: Any, depth: int) -> bool:
    t = type(value)
    if value is None or t is bool or t is str:
        return True
    if t is int:
        # orjson writes 64-bit integers; json any
        return bool(-0x8000000000000000 <= value <= 0xFFFFFFFFFFFFFFFF)
    if t is float:
        # orjson writes NaN and infinities as null (json raises), and numbers between
        # 1e-4 and 0 without an exponent (json with one): those go to json
        return bool(value == 0.0 or 1e-4 <= value <= _FLOAT_MAX
                    or -_FLOAT_MAX <= value <= -1e-4)
    if depth >= _PLAIN_DEPTH:
        return False
    if t is list or t is tuple:
        return all(_plain(item, depth + 1) for item in value)
    if t is dict:
        return all(type(key) is str and _plain(item, depth + 1)
                   for key, item in value.items())
    return False             # subclasses and every other type: json decides


def plain_json(value: Any) -> bool:
    """True when orjson writes ``value`` exactly as ``json`` does (compact, not ASCII
    only): None, bool, str, 64-bit int, a float that is 0 or finite and not below
    1e-4 in magnitude, and lists, tuples and str-keyed dicts of those (their exact
    types, at most 200 levels deep)."""
    return _plain(value, 0)


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def long_digits(data: bytes) -> bool:
    """True when ``data`` holds a run of 19 digits or more (an integer orjson would read
    as a float: past 64 bits)."""
    return _LONG_DIGITS.search(data) is not None


_REQUEST_START = re.compile(rb'\{"id":([1-9][0-9]{0,17})(?:,"budget":([1-9][0-9]{0,14}))?')


def request_parts(payload: bytes) -> tuple[int, int | None, bytes, bytes] | None:
    """The parts of the usual request payload ``{"id":<rid>[,"budget":<ms>]<head><args>}}``
    as ``(rid, budget or None, head, args)``: ``rid`` up to 18 digits, the first not 0,
    ``budget`` up to 15 such, ``head`` the bytes up to the first ``"args":`` (included),
    ``args`` the bytes between it and the closing ``}}``, without a run of 19 digits
    (see ``long_digits``); None for any other payload. Nothing here says the head or the
    args are JSON: the caller parses them."""
    n = len(payload)
    match = _REQUEST_START.match(payload)
    if n < 8 or match is None or not payload.endswith(b"}}"):
        return None
    start = match.end()
    end = payload.find(b'"args":', start, n - 2)
    if end < 0:
        return None
    end += 7
    args = payload[end:n - 2]
    if long_digits(args):
        return None
    budget = match.group(2)
    return (int(match.group(1)), None if budget is None else int(budget),
            payload[start:end], args)


def call_payload(rid: int, budget: int | None, head: bytes, args: bytes) -> bytes:
    """The JSON payload of a call: ``{"id":<rid>,"budget":<budget><head><args>}}`` (no
    ``"budget"`` when it is None), ``head`` and ``args`` being JSON text already (the
    request's ``,"msg":{...,"args":`` and its arguments)."""
    if type(head) is not bytes or type(args) is not bytes:
        raise TypeError("encode_call: head and args must be bytes")
    if budget is None:
        return b'{"id":%d%b%b}}' % (rid, head, args)
    return b'{"id":%d,"budget":%d%b%b}}' % (rid, budget, head, args)


def encode_call(rid: int, budget: int | None, head: bytes, args: bytes) -> bytes:
    """The PUBLISH (topic ``rpc``, QoS 0) of a call: ``encode_publish`` of its
    ``call_payload``; ``rid`` and ``budget`` ints of at most 64 bits."""
    return encode_publish(call_payload(rid, budget, head, args))


def encode_call_json(rid: int, budget: int | None, head: bytes, args: Any,
                     codec: Any) -> bytes:
    """``encode_call(rid, budget, head, codec.dumps_bytes(args))`` (the compiled twin
    writes the usual small args itself, the same text)."""
    return encode_call(rid, budget, head, _codec_text(codec, args))


def _codec_text(codec: Any, args: Any) -> bytes:
    """``codec.dumps_bytes(args)``, which must be bytes."""
    text = codec.dumps_bytes(args)
    if type(text) is not bytes:
        raise TypeError("encode_call_json: the codec's dumps_bytes must give bytes")
    return text


_ANSWER = re.compile(rb'\{"id":(0|[1-9][0-9]{0,17}),"resp":\[null,')


def answer_parts(payload: bytes) -> tuple[int, bytes] | None:
    """``(rid, value)`` of the common answer ``{"id":<rid>,"resp":[null,<value>]}`` as
    pomelo-rpc's servers (Node's ``JSON.stringify``, ours) write it: ``rid`` up to 18
    digits (0, or the first not 0), ``value`` the bytes between (not empty), without a
    run of 19 digits (see ``long_digits``); None for any other payload (or one that is
    not bytes). Nothing here says the value is JSON: the caller parses it (such a text
    is valid JSON exactly when its value is)."""
    if type(payload) is not bytes or not payload.endswith(b"]}"):
        return None
    match = _ANSWER.match(payload)
    if match is None or match.end() >= len(payload) - 2:
        return None
    value = payload[match.end():-2]
    if long_digits(value):
        return None
    return (int(match.group(1)), value)


def answer_payload(rid: int, body: bytes) -> bytes:
    """The common answer ``{"id":<rid>,"resp":[null,<body>]}`` to call ``rid`` (an int),
    ``body`` being its value's JSON text."""
    if type(body) is not bytes:
        raise TypeError("answer_payload: body must be bytes")
    return b'{"id":%d,"resp":[null,%b]}' % (rid, body)


def json_suffixed(value: Any, codec: Any, suffix: bytes) -> bytes:
    """``codec.dumps_bytes(value) + suffix`` (compiled: the usual small values written
    in C, in one bytes object; a backend's answer, ``[null,<value>,null]``'s middle and
    end: ``core.forward``)."""
    if type(suffix) is not bytes:
        raise TypeError("json_suffixed: the suffix must be bytes")
    data: bytes = codec.dumps_bytes(value) + suffix
    return data
