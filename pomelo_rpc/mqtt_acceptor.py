"""The mqtt acceptor: serves clients speaking pomelo-rpc 1.0.7's mqtt protocol.

MQTT 3.1.1 framing (decoded by the core's ``mqtt`` codec). A request is a PUBLISH
on topic ``rpc`` whose payload is JSON ``{"id": n, "msg": {"namespace", "serverType",
"service", "method", "args"}}``, or a JSON array of such objects when the client
buffers; the response is a PUBLISH with ``{"id": n, "resp": [err, ...results]}``.
Like the original server this one sends no CONNACK (the Node client does not wait
for one) and answers PINGREQ with PINGRESP. With ``buffer_msg`` the responses are
queued and sent every ``interval`` seconds as one JSON array.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import json.encoder
import json.scanner
import logging
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .acceptor import WRITE_CHUNK, BaseAcceptor, ServerConnection
from .errors import DispatchError, FrameError
from .overload import clock

if TYPE_CHECKING:
    from .core import Core, DispatcherLike, MqttDecoderLike

log = logging.getLogger("pomelo_rpc.mqtt_acceptor")

_REQ_NAME = 2   # the dispatcher's by-name request kind (see core.frames.REQ_NAME)

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encoder_dumps = _ENCODER.encode
_json_loads = json.loads
_JSON_OPEN = (0x7B, 0x5B)     # b"{", b"["

# The scanner behind json.loads, made once (json.loads runs four Python frames first);
# json's C scanner and encoder are None where _json is missing (typeshed omits them).
_c_make_scanner: Any = getattr(json.scanner, "c_make_scanner", None)
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_scan: Any = None if _c_make_scanner is None else _c_make_scanner(json.JSONDecoder())


def make_dumps(json_string: Callable[[str], str] = json.encoder.encode_basestring,
               ) -> Callable[[Any], str]:
    """A ``dumps`` whose C encoder is made once (``JSONEncoder.encode`` makes one per
    call) and writes each string with ``json_string``: a core's ``mqtt.json_string``,
    which must give exactly what ``json.encoder.encode_basestring`` gives."""
    if _c_make_encoder is None:  # pragma: no cover - CPython has _json
        return _encoder_dumps
    markers: dict[int, Any] = {}
    c_encode = _c_make_encoder(markers, _ENCODER.default, json_string, None, ":", ",",
                               False, False, False)

    def dumps(value: Any) -> str:
        """Compact JSON text of ``value``: exactly ``json.JSONEncoder(separators=(",",
        ":"), ensure_ascii=False, allow_nan=False).encode(value)``, errors included."""
        # markers (the circular-reference check) is not empty while an encoding is
        # under way: a re-entrant call, from a container's own code, gets its own encoder
        if markers or isinstance(value, str):
            return _encoder_dumps(value)
        try:
            return "".join(c_encode(value, 0))
        except BaseException:
            markers.clear()       # the C encoder leaves its marks behind on an error
            raise
    return dumps


#: Compact JSON text of a value (TypeError/ValueError if JSON cannot carry it).
dumps = make_dumps()

_core_dumps: dict[str, Callable[[Any], str]] = {}


def core_dumps(core: Core) -> Callable[[Any], str]:
    """``dumps`` writing strings with ``core``'s ``mqtt.json_string`` (the same text;
    the compiled one only quotes an ASCII string with nothing to escape)."""
    fn = _core_dumps.get(core.name)
    if fn is None:
        fn = _core_dumps[core.name] = make_dumps(core.mqtt.json_string)
    return fn


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``: the same value, or the same error.

    An RPC payload (UTF-8 bytes of a JSON object or array) goes straight to the scanner;
    anything else, and anything the scanner rejects, goes through ``json.loads``.
    """
    if _c_scan is not None and type(data) is bytes and data and data[0] in _JSON_OPEN:
        try:
            text = data.decode("utf-8")
            value, end = _c_scan(text, 0)
        except (ValueError, StopIteration):
            return _json_loads(data)
        if end == len(text) or not text[end:].strip(" \t\n\r"):
            return value
    return _json_loads(data)


def json_bytes(value: Any) -> bytes:
    """UTF-8 compact JSON of ``value`` (TypeError/ValueError if JSON cannot carry it)."""
    return dumps(value).encode("utf-8")


def batch_payload(parts: Iterable[bytes]) -> bytes:
    """Payload of a JSON array made of ``parts``, each the UTF-8 JSON of one item."""
    return b"[" + b",".join(parts) + b"]"


def error_object(exc: BaseException) -> dict[str, str]:
    """``{"msg", "stack"}`` of an exception, as pomelo-rpc sends an error.

    The stack starts with ``<Type>: <message>`` like a JavaScript one, so that both a
    Node caller (which reads ``err.msg``) and a Python one (type from the stack) see it.
    """
    message = str(exc)
    frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
    return {"msg": message, "stack": f"{type(exc).__name__}: {message}\n{frames}"}


def failure_payload(rid: Any, exc: BaseException) -> bytes:
    """UTF-8 JSON of the response to call ``rid`` that failed with ``exc``."""
    text = f'{{"id":{dumps(rid)},"resp":[{dumps(error_object(exc))}]}}'
    return text.encode("utf-8", "replace")


def result_payload(rid: Any, result: Any, dumps: Callable[[Any], str] = dumps) -> bytes:
    """UTF-8 JSON of the response to call ``rid`` returning ``result``.

    pomelo's callback convention: ``resp`` is ``[null, result]``. A result JSON
    cannot carry becomes an error response. ``dumps``: see ``core_dumps``.
    """
    try:
        return ('{"id":' + (str(rid) if type(rid) is int else dumps(rid)) + ',"resp":[null,'
                + dumps(result) + "]}").encode("utf-8")
    except (TypeError, ValueError) as exc:   # UnicodeEncodeError is a ValueError
        return failure_payload(rid, TypeError(f"result cannot be serialized: {exc}"))


class _MqttConnection(ServerConnection):
    """One client connection of the mqtt acceptor."""

    _decoder: MqttDecoderLike

    def __init__(self, acceptor: MqttAcceptor) -> None:
        super().__init__(acceptor)
        mqtt = acceptor.core.mqtt
        self._decoder = mqtt.MqttDecoder(acceptor.pkg_size)
        self._publish = mqtt.encode_publish
        self._dumps = core_dumps(acceptor.core)
        self._k_publish, self._k_pingreq, self._k_connect, self._k_disconnect = (
            mqtt.PUBLISH, mqtt.PINGREQ, mqtt.CONNECT, mqtt.DISCONNECT)
        self._pingresp = mqtt.PINGRESP_PACKET
        self._buffer_msg = acceptor.buffer_msg
        self._interval = acceptor.interval
        self.client_id: str | None = None   # from the client's CONNECT
        self.pings = 0             # PINGREQs answered
        self._batch: list[bytes] = []        # JSON payloads of responses (buffer_msg)
        self._batch_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; calls still running are cancelled."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        self._batch.clear()
        super().connection_lost(exc)

    def _start(self) -> None:
        """With an auth_token, the first packet must be a CONNECT carrying it."""
        token = self._acceptor.auth_token
        if token is not None:
            self._handshake_decoder = self._acceptor.core.mqtt.MqttDecoder(512 + len(token))

    def _on_handshake(self, data: bytes) -> None:
        """Before the auth_token is proven: the first packet must be a CONNECT, alone,
        whose password is the token; CONNACK 0 then, else CONNACK 5 (a CONNECT with
        another password) or nothing (anything else), and the connection is closed."""
        token = self._acceptor.auth_token
        decoder = self._handshake_decoder
        packets = self._handshake_feed(data)
        if not packets:
            return
        assert token is not None and decoder is not None and self._transport is not None
        mqtt = self._acceptor.core.mqtt
        packet = packets[0]
        if packet[0] != self._k_connect:
            self._deny("a packet other than CONNECT first")
            return
        password = packet[4]
        if password is None or not hmac.compare_digest(password, token):
            self._deny("CONNECT without the right auth_token as its password",
                       mqtt.encode_connack(5))
            return
        if len(packets) != 1 or decoder.buffered:
            self._deny("packets after CONNECT before the CONNACK")
            return
        self._authenticated()
        self.client_id = packet[1]
        self._transport.write(mqtt.encode_connack(0))

    def data_received(self, data: bytes) -> None:
        """asyncio: decode MQTT packets; run requests, answer PINGREQ, close on DISCONNECT."""
        if self._handshake_decoder is not None:
            self._on_handshake(data)
            return
        try:
            packets = self._decoder.feed(data)
        except FrameError as exc:
            self._abort(exc)
            return
        if self._stopping is not None:
            self._refuse(packets)
            return
        for packet in packets:
            kind = packet[0]
            if kind == self._k_publish:
                self._on_publish(packet[2])
                if len(self._out) >= WRITE_CHUNK and not self._flush_scheduled:
                    self._flush()
            elif kind == self._k_pingreq:
                self._respond_pong()
            elif kind == self._k_connect:
                self.client_id = packet[1]
                log.debug("mqtt client %s connected from %s", packet[1], self._peer)
            elif kind == self._k_disconnect:
                self._flush()
                if self._transport is not None:
                    self._transport.close()
                return
            else:
                log.debug("ignoring MQTT packet type %s from %s", kind, self._peer)
        if self._out and not self._flush_scheduled:
            self._flush()

    def _is_ping(self, packet: tuple[Any, ...]) -> bool:
        # packet[0], the packet type, is an int, so this is a bool (mypy sees Any == int)
        return packet[0] == self._k_pingreq  # type: ignore[no-any-return]

    def _respond_pong(self) -> None:
        self.pings += 1
        self._out.append(self._pingresp)

    # requests ----------------------------------------------------------

    def _on_publish(self, payload: bytes) -> None:
        try:
            pkg = loads(payload)
        except ValueError as exc:
            log.warning("bad rpc payload from %s: %s", self._peer, exc)
            return
        arrived = clock()
        if type(pkg) is list:
            for item in pkg:
                self._on_request(item, arrived)
        else:
            self._on_request(pkg, arrived)

    def _on_request(self, pkg: Any, arrived: float) -> None:
        if type(pkg) is not dict:
            log.warning("rpc request from %s is not an object: %.80r", self._peer, pkg)
            return
        rid = pkg.get("id")
        msg = pkg.get("msg")
        if type(msg) is not dict:
            self._respond(self._encode_failure(rid, DispatchError("rpc request without a msg object")))
            return
        args = msg.get("args")
        request = [_REQ_NAME, 0, msg.get("namespace"), msg.get("service"), msg.get("method"),
                   [] if args is None else args]
        if self._tracing:   # the W3C traceparent, else pomelo-rpc's traceId (rpcDebugLog)
            request.append(pkg.get("traceparent") or pkg.get("traceId"))
        # "budget": ms left, from a Python client (a Node client sends none)
        self._submit(request, rid, pkg.get("budget"), arrived)

    def _run_request(self, request: Any, rid: Any, deadline: float | None) -> None:
        _, state, outcome = self._dispatch(request)
        if state == self._done_state and not self._buffer_msg:
            # _answer's common case, without its three calls (_encode_result, _respond)
            self._out.append(self._publish(result_payload(rid, outcome, self._dumps)))
        else:
            self._answer(rid, state, outcome, deadline)

    # answers -------------------------------------------------------------

    def _encode_result(self, rid: Any, result: Any) -> bytes:
        return result_payload(rid, result, self._dumps)

    def _encode_failure(self, rid: Any, exc: BaseException) -> bytes:
        self._log_failure(rid, exc)
        return failure_payload(rid, exc)

    def _respond(self, payload: bytes) -> None:
        if self._buffer_msg:
            self._batch.append(payload)
            if self._batch_timer is None:
                self._batch_timer = asyncio.get_running_loop().call_later(
                    self._interval, self._flush_batch)
        else:
            self._out.append(self._publish(payload))

    def _flush_batch(self) -> None:
        self._batch_timer = None
        if self._batch and self._transport is not None and not self._eof_sent:
            payload = batch_payload(self._batch)
            self._batch.clear()
            self._transport.write(self._publish(payload))

    def _before_close(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._flush_batch()


class MqttAcceptor(BaseAcceptor):
    """Serves pomelo-rpc's mqtt protocol (MQTT framing, JSON payloads)."""

    connection_class = _MqttConnection
    name = "mqtt acceptor"

    def __init__(self, opts: dict[str, Any], dispatcher: DispatcherLike, core: Core) -> None:
        super().__init__(opts, dispatcher, core)
        self.buffer_msg = bool(opts["buffer_msg"])
        self.interval: float = opts["interval"]
