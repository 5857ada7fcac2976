"""Native frame codec, pure-Python twin of ``src/frames.pyx``.

A frame is a 4-byte big-endian body length followed by one msgpack object, a list
whose first item is the message kind (see ``HELLO`` ... ``PONG``).

A request has optional trailing fields, each present only when a later one is or
when it has a value: ``[REQ_ID, rid, method_id, args, trace, budget_ms]`` and
``[REQ_NAME, rid, namespace, service, method, args, trace, budget_ms]``, where
``trace`` is a str (W3C traceparent or rpc_debug_log trace id) or None, and
``budget_ms`` the caller's remaining time budget in whole milliseconds (an int,
relative so that clocks need not agree). Without either, a request is 4 (6) fields.

A notify (a one-way call: no request id, nothing sent back) is laid out as a request
with nil where the rid would be: ``[NOTIFY_ID, nil, method_id, args, trace, budget_ms]``
and ``[NOTIFY_NAME, nil, namespace, service, method, args, trace, budget_ms]`` (the same
trailing fields). Its second field is never an int, so a server reads it apart from
the requests without a test on the path of every request, and runs it as one.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import FrameError
from ._stream import rest

HEADER_SIZE = 4

# Message kinds: the first item of every frame body.
HELLO = 0      # server -> client: [HELLO, version, [[namespace, service, method], ...]]
REQ_ID = 1     # [REQ_ID, rid, method_id, args] (+ trace) (+ budget_ms): see above
REQ_NAME = 2   # [REQ_NAME, rid, namespace, service, method, args] (+ trace) (+ budget_ms)
RESP_OK = 3    # [RESP_OK, rid, result]
RESP_ERR = 4   # [RESP_ERR, rid, [type_name, message, stack]] (+ the error's fields, a map)
PING = 5       # [PING]
PONG = 6       # [PONG]
# The auth_token handshake (see pomelo_rpc.security); a server without a token skips it.
CHALLENGE = 7  # server -> client, first frame: [CHALLENGE, version, server_nonce]
AUTH = 8       # client -> server, first frame: [AUTH, proof, client_nonce]
AUTH_OK = 9    # server -> client, before HELLO: [AUTH_OK, proof]
NOTIFY_ID = 10    # [NOTIFY_ID, nil, method_id, args] (+ trace) (+ budget_ms): no answer
NOTIFY_NAME = 11  # [NOTIFY_NAME, nil, namespace, service, method, args] (+ trace) (+ budget)

PROTOCOL_VERSION = 1

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def _unpack(body: bytes | bytearray | memoryview) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


class FrameDecoder:
    """Incremental decoder: ``feed`` any split of the byte stream, get whole messages."""

    def __init__(self, max_size: int = 8 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_size

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Add ``data``; return the list of messages completed by it.

        Raises FrameError on an oversized frame or a body that is not one msgpack
        object; the stream is then unusable and the connection must be closed.
        """
        buf = self._buf
        if buf:
            buf += data
            data = buf
        out = []
        n = len(data)
        off = 0
        view = memoryview(data)
        try:
            while n - off >= HEADER_SIZE:
                size = int.from_bytes(view[off:off + HEADER_SIZE], "big")
                if size > self._max:
                    raise FrameError(f"frame of {size} bytes exceeds pkg_size {self._max}")
                end = off + HEADER_SIZE + size
                if end > n:
                    break
                try:
                    out.append(_unpack(view[off + HEADER_SIZE:end]))
                except Exception as exc:
                    raise FrameError(f"frame body is not one msgpack object: {exc}") from None
                off = end
        finally:
            view.release()
        self._buf = rest(buf, data, off)
        return out


def encode(message: Any) -> bytes:
    """Encode one message (a list) as a frame."""
    body: bytes = _packer.pack(message)
    if len(body) > 0xFFFFFFFF:
        raise FrameError(f"message of {len(body)} bytes does not fit in a frame")
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def encode_request(rid: int, method_id: int, args: list[Any]) -> bytes:
    """A request naming its method by the id from the server's HELLO table."""
    return encode([REQ_ID, rid, method_id, args])


def encode_request_by_name(rid: int, namespace: str, service: str, method: str,
                           args: list[Any]) -> bytes:
    """A request naming its method in full (before HELLO, or for a name not in it)."""
    return encode([REQ_NAME, rid, namespace, service, method, args])


def encode_request_traced(rid: int, method_id: int, args: list[Any], trace_id: str) -> bytes:
    """``encode_request`` carrying a trace id (``rpc_debug_log``) as a trailing field."""
    return encode([REQ_ID, rid, method_id, args, trace_id])


def encode_request_by_name_traced(rid: int, namespace: str, service: str, method: str,
                                  args: list[Any], trace_id: str) -> bytes:
    """``encode_request_by_name`` carrying a trace id as a trailing field."""
    return encode([REQ_NAME, rid, namespace, service, method, args, trace_id])


def encode_request_budget(rid: int, method_id: int, args: list[Any], trace_id: str | None,
                          budget_ms: int) -> bytes:
    """``encode_request`` carrying the caller's remaining budget in ms (and a trace id
    or None) as the trailing fields."""
    return encode([REQ_ID, rid, method_id, args, trace_id, budget_ms])


def encode_request_by_name_budget(rid: int, namespace: str, service: str, method: str,
                                  args: list[Any], trace_id: str | None,
                                  budget_ms: int) -> bytes:
    """``encode_request_by_name`` carrying the remaining budget in ms (and a trace id)."""
    return encode([REQ_NAME, rid, namespace, service, method, args, trace_id, budget_ms])


def _trailing(trace_id: str | None, budget_ms: int | None) -> list[Any]:
    """A message's trailing fields: each present only when a later one is or when it
    has a value."""
    if budget_ms is not None:
        return [trace_id, budget_ms]
    return [] if trace_id is None else [trace_id]


def encode_notify(method_id: int, args: list[Any], trace_id: str | None,
                  budget_ms: int | None) -> bytes:
    """A notify naming its method by the id from the server's HELLO table, with a
    trace id and the budget in ms when they are not None."""
    return encode([NOTIFY_ID, None, method_id, args, *_trailing(trace_id, budget_ms)])


def encode_notify_by_name(namespace: str, service: str, method: str, args: list[Any],
                          trace_id: str | None, budget_ms: int | None) -> bytes:
    """A notify naming its method in full (before HELLO, or for a name not in it)."""
    return encode([NOTIFY_NAME, None, namespace, service, method, args,
                   *_trailing(trace_id, budget_ms)])


def call_fields(msg: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """``(namespace, service, method, args)`` of call message ``msg``, the fields its
    request frame carries; KeyError if one is missing."""
    return msg["namespace"], msg["service"], msg["method"], msg["args"]


def encode_response(rid: int, result: Any) -> bytes:
    """A successful response; TypeError if ``result`` cannot be packed."""
    return encode([RESP_OK, rid, result])


def encode_error(rid: int, type_name: str, message: str, stack: str | None,
                 fields: dict[str, Any] | None = None) -> bytes:
    """An error response; ``fields`` (the error's own, e.g. its ``code``) when not None."""
    if fields is None:
        return encode([RESP_ERR, rid, [type_name, message, stack]])
    return encode([RESP_ERR, rid, [type_name, message, stack, fields]])


def encode_hello(table: list[list[str]]) -> bytes:
    """The server's greeting: its method table, whose indexes are the method ids."""
    return encode([HELLO, PROTOCOL_VERSION, table])


def encode_challenge(nonce: bytes) -> bytes:
    """The server's first frame when it requires an auth_token: a fresh nonce."""
    return encode([CHALLENGE, PROTOCOL_VERSION, nonce])


def encode_auth(proof: bytes, nonce: bytes) -> bytes:
    """The client's answer to a challenge: its proof and a nonce of its own."""
    return encode([AUTH, proof, nonce])


def encode_auth_ok(proof: bytes) -> bytes:
    """The server's proof that it holds the token too (sent just before HELLO)."""
    return encode([AUTH_OK, proof])


PING_FRAME = encode([PING])
PONG_FRAME = encode([PONG])
