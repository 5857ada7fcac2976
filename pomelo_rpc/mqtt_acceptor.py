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

from .acceptor import BaseAcceptor, ServerConnection
from .errors import DispatchError, FrameError, ServerBusyError
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


if TYPE_CHECKING:
    # the mixin's base, for the type checker: either core's ServerProtocol (the pure
    # one's types); at run time the base is given per core (``protocol_class``)
    from .core.server_protocol import ServerProtocol as _ProtocolBase
else:
    _ProtocolBase = object


class MqttProtocol(_ProtocolBase):
    """The mqtt side of a core's ``ServerProtocol`` (``protocol_class`` puts the two
    together): MQTT packets in, JSON requests admitted and run by the core's code,
    JSON answers published (or batched every ``interval`` s with ``buffer_msg``)."""

    def __init__(self, owner: _MqttConnection, acceptor: MqttAcceptor) -> None:
        super().__init__(owner, acceptor.dispatcher, acceptor.overload, acceptor.pkg_size)
        mqtt = acceptor.core.mqtt
        self.packets: MqttDecoderLike = mqtt.MqttDecoder(acceptor.pkg_size)
        self.publish = mqtt.encode_publish
        self.dumps = core_dumps(acceptor.core)
        self.kinds = (mqtt.PUBLISH, mqtt.PINGREQ, mqtt.CONNECT, mqtt.DISCONNECT)
        self.pingresp = mqtt.PINGRESP_PACKET
        self.buffer_msg = acceptor.buffer_msg
        self.interval = acceptor.interval
        self.client_id: str | None = None   # from the client's CONNECT
        self.pings = 0             # PINGREQs answered
        self.batch: list[bytes] = []        # JSON payloads of responses (buffer_msg)
        self.batch_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; calls still running are cancelled."""
        if self.batch_timer is not None:
            self.batch_timer.cancel()
            self.batch_timer = None
        self.batch.clear()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """asyncio: decode MQTT packets; run requests, answer PINGREQ, close on DISCONNECT."""
        if self.handshaking:
            self.owner._on_handshake(data)
            return
        try:
            packets = self.packets.feed(data)
        except FrameError as exc:
            self.owner._abort(exc)
            return
        if self.stopping is not None:
            self.owner._refuse(packets)
            return
        publish, pingreq, connect, disconnect = self.kinds
        for packet in packets:
            kind = packet[0]
            if kind == publish:
                self.on_publish(packet[2])
            elif kind == pingreq:
                self.respond_pong()
            elif kind == connect:
                self.client_id = packet[1]
                log.debug("mqtt client %s connected from %s", packet[1], self.owner._peer)
            elif kind == disconnect:
                self.writer.flush_now()
                if self.transport is not None:
                    self.transport.close()
                return
            else:
                log.debug("ignoring MQTT packet type %s from %s", kind, self.owner._peer)
        self.writer.flush()

    def is_ping(self, packet: Any) -> bool:
        """True if ``packet`` is a PINGREQ."""
        return bool(packet[0] == self.kinds[1])

    def respond_pong(self) -> None:
        """Queue a PINGRESP."""
        self.pings += 1
        self.writer.queue(self.pingresp)

    # requests ----------------------------------------------------------

    def on_publish(self, payload: bytes) -> None:
        """A PUBLISH: one request, or a JSON array of them (a buffering client)."""
        try:
            pkg = loads(payload)
        except ValueError as exc:
            log.warning("bad rpc payload from %s: %s", self.owner._peer, exc)
            return
        arrived = clock()
        if type(pkg) is list:
            for item in pkg:
                self.on_request(item, arrived)
        else:
            self.on_request(pkg, arrived)

    def on_request(self, pkg: Any, arrived: float) -> None:
        """One request object: made a by-name request frame and submitted."""
        if type(pkg) is not dict:
            log.warning("rpc request from %s is not an object: %.80r", self.owner._peer, pkg)
            return
        rid = pkg.get("id")
        msg = pkg.get("msg")
        if type(msg) is not dict:
            self.respond(self.encode_failure(rid, DispatchError("rpc request without a msg object")))
            return
        args = msg.get("args")
        request = [_REQ_NAME, 0, msg.get("namespace"), msg.get("service"), msg.get("method"),
                   [] if args is None else args]
        if self.tracing:   # the W3C traceparent, else pomelo-rpc's traceId (rpcDebugLog)
            request.append(pkg.get("traceparent") or pkg.get("traceId"))
        # "budget": ms left, from a Python client (a Node client sends none)
        self.submit(request, rid, pkg.get("budget"), arrived)

    # answers -------------------------------------------------------------

    def encode_result(self, rid: Any, result: Any) -> bytes:
        """The JSON payload answering call ``rid`` with ``result``."""
        return result_payload(rid, result, self.dumps)

    def encode_failure(self, rid: Any, exc: BaseException) -> bytes:
        """The JSON payload answering call ``rid`` with the error ``exc``."""
        log.debug("remote call %s failed: %r", rid, exc)
        return failure_payload(rid, exc)

    def encode_busy(self, rid: Any) -> bytes:
        """The JSON payload refusing call ``rid`` past ``max_in_flight``."""
        return self.encode_failure(rid, ServerBusyError(self.overload.busy_text))

    def respond(self, data: bytes) -> None:
        """Queue an answer's payload: published with this read's others, or batched."""
        if self.buffer_msg:
            self.add_to_batch(data)
        else:
            self.writer.queue(self.publish(data))

    def send(self, data: bytes) -> None:
        """Send an answer's payload made outside a read (published, or batched)."""
        if self.buffer_msg:
            self.add_to_batch(data)
        else:
            self.writer.write(self.publish(data))

    def add_to_batch(self, payload: bytes) -> None:
        """``buffer_msg``: the payload goes out with the others of the next ``interval``."""
        self.batch.append(payload)
        if self.batch_timer is None:
            assert self.loop is not None
            self.batch_timer = self.loop.call_later(self.interval, self.flush_batch)

    def flush_batch(self) -> None:
        """Publish the batched answers as one JSON array."""
        self.batch_timer = None
        if self.batch and self.transport is not None and not self.writer.closed:
            payload = batch_payload(self.batch)
            self.batch.clear()
            self.writer.write(self.publish(payload))

    def close_batch(self) -> None:
        """The connection stops: publish the batch now."""
        if self.batch_timer is not None:
            self.batch_timer.cancel()
            self.flush_batch()


_protocol_classes: dict[str, type[MqttProtocol]] = {}


def protocol_class(core: Core) -> type[MqttProtocol]:
    """``MqttProtocol`` on ``core``'s ``ServerProtocol`` (made once per core)."""
    cls = _protocol_classes.get(core.name)
    if cls is None:
        base = core.server_protocol.ServerProtocol
        cls = _protocol_classes[core.name] = type(
            "MqttProtocol", (MqttProtocol, base), {"__doc__": MqttProtocol.__doc__})
    return cls


class _MqttConnection(ServerConnection):
    """One client connection of the mqtt acceptor."""

    _acceptor: MqttAcceptor
    _protocol: MqttProtocol

    def _make_protocol(self) -> MqttProtocol:
        return protocol_class(self._acceptor.core)(self, self._acceptor)

    @property
    def client_id(self) -> str | None:
        """The client id of the client's CONNECT."""
        return self._protocol.client_id

    @property
    def pings(self) -> int:
        """PINGREQs answered."""
        return self._protocol.pings

    def _buffered(self) -> int:
        return self._protocol.packets.buffered

    def _start(self) -> None:
        """With an auth_token, the first packet must be a CONNECT carrying it."""
        token = self._acceptor.auth_token
        if token is not None:
            self._begin_handshake(self._acceptor.core.mqtt.MqttDecoder(512 + len(token)))

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
        if packet[0] != mqtt.CONNECT:
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
        self._protocol.client_id = packet[1]
        self._transport.write(mqtt.encode_connack(0))

    def _before_close(self) -> None:
        self._protocol.close_batch()


class MqttAcceptor(BaseAcceptor):
    """Serves pomelo-rpc's mqtt protocol (MQTT framing, JSON payloads)."""

    connection_class = _MqttConnection
    name = "mqtt acceptor"

    def __init__(self, opts: dict[str, Any], dispatcher: DispatcherLike, core: Core) -> None:
        super().__init__(opts, dispatcher, core)
        self.buffer_msg = bool(opts["buffer_msg"])
        self.interval: float = opts["interval"]
