"""The mqtt acceptor: serves clients speaking pomelo-rpc 1.0.7's mqtt protocol.

MQTT 3.1.1 framing (decoded by the core's ``mqtt`` codec). A request is a PUBLISH
on topic ``rpc`` whose payload is JSON ``{"id": n, "msg": {"namespace", "serverType",
"service", "method", "args"}}``, or a JSON array of such objects when the client
buffers; the response is a PUBLISH with ``{"id": n, "resp": [err, ...results]}``.
Like the original server this one sends no CONNACK (the Node client does not wait
for one) and answers PINGREQ with PINGRESP. With ``buffer_msg`` the responses are
queued and sent every ``interval`` seconds as one JSON array.
"""

import asyncio
import json
import logging
import traceback

from .acceptor import BaseAcceptor, ServerConnection
from .errors import DispatchError, FrameError

log = logging.getLogger("pomelo_rpc.mqtt_acceptor")

_REQ_NAME = 2   # the dispatcher's by-name request kind (see core.frames.REQ_NAME)

dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
loads = json.loads


def json_text(value):
    """Compact JSON text of ``value`` (TypeError/ValueError if JSON cannot carry it)."""
    if type(value) is int:
        return str(value)
    return dumps(value)


def json_bytes(value):
    """UTF-8 compact JSON of ``value`` (TypeError/ValueError if JSON cannot carry it)."""
    return dumps(value).encode("utf-8")


def batch_payload(parts):
    """Payload of a JSON array made of ``parts``, each the UTF-8 JSON of one item."""
    return b"[" + b",".join(parts) + b"]"


def error_object(exc):
    """``{"msg", "stack"}`` of an exception, as pomelo-rpc sends an error.

    The stack starts with ``<Type>: <message>`` like a JavaScript one, so that both a
    Node caller (which reads ``err.msg``) and a Python one (type from the stack) see it.
    """
    message = str(exc)
    frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
    return {"msg": message, "stack": f"{type(exc).__name__}: {message}\n{frames}"}


def failure_payload(rid, exc):
    """UTF-8 JSON of the response to call ``rid`` that failed with ``exc``."""
    text = f'{{"id":{dumps(rid)},"resp":[{dumps(error_object(exc))}]}}'
    return text.encode("utf-8", "replace")


def result_payload(rid, result):
    """UTF-8 JSON of the response to call ``rid`` returning ``result``.

    pomelo's callback convention: ``resp`` is ``[null, result]``. A result JSON
    cannot carry becomes an error response.
    """
    try:
        return f'{{"id":{json_text(rid)},"resp":[null,{json_text(result)}]}}'.encode("utf-8")
    except (TypeError, ValueError) as exc:   # UnicodeEncodeError is a ValueError
        return failure_payload(rid, TypeError(f"result cannot be serialized: {exc}"))


class _MqttConnection(ServerConnection):
    """One client connection of the mqtt acceptor."""

    def __init__(self, acceptor):
        super().__init__(acceptor)
        mqtt = acceptor.core.mqtt
        self._decoder = mqtt.MqttDecoder(acceptor.pkg_size)
        self._publish = mqtt.encode_publish
        self._k_publish, self._k_pingreq, self._k_connect, self._k_disconnect = (
            mqtt.PUBLISH, mqtt.PINGREQ, mqtt.CONNECT, mqtt.DISCONNECT)
        self._pingresp = mqtt.PINGRESP_PACKET
        self._buffer_msg = acceptor.buffer_msg
        self._interval = acceptor.interval
        self.client_id = None      # from the client's CONNECT
        self.pings = 0             # PINGREQs answered
        self._batch = []           # JSON payloads of responses (buffer_msg)
        self._batch_timer = None

    def connection_lost(self, exc):
        """asyncio: the connection closed; calls still running are cancelled."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        self._batch.clear()
        super().connection_lost(exc)

    def data_received(self, data):
        """asyncio: decode MQTT packets; run requests, answer PINGREQ, close on DISCONNECT."""
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

    def _is_ping(self, packet):
        return packet[0] == self._k_pingreq

    def _respond_pong(self):
        self.pings += 1
        self._out.append(self._pingresp)

    # requests ----------------------------------------------------------

    def _on_publish(self, payload):
        try:
            pkg = loads(payload)
        except ValueError as exc:
            log.warning("bad rpc payload from %s: %s", self._peer, exc)
            return
        if type(pkg) is list:
            for item in pkg:
                self._on_request(item)
        else:
            self._on_request(pkg)

    def _on_request(self, pkg):
        if type(pkg) is not dict:
            log.warning("rpc request from %s is not an object: %.80r", self._peer, pkg)
            return
        rid = pkg.get("id")
        msg = pkg.get("msg")
        if type(msg) is not dict:
            self._respond(self._encode_failure(rid, DispatchError("rpc request without a msg object")))
            return
        args = msg.get("args")
        _, state, outcome = self._dispatch([_REQ_NAME, 0, msg.get("namespace"),
                                            msg.get("service"), msg.get("method"),
                                            [] if args is None else args])
        self._answer(rid, state, outcome)

    # answers -------------------------------------------------------------

    def _encode_result(self, rid, result):
        return result_payload(rid, result)

    def _encode_failure(self, rid, exc):
        self._log_failure(rid, exc)
        return failure_payload(rid, exc)

    def _respond(self, payload):
        if self._buffer_msg:
            self._batch.append(payload)
            if self._batch_timer is None:
                self._batch_timer = asyncio.get_running_loop().call_later(
                    self._interval, self._flush_batch)
        else:
            self._out.append(self._publish(payload))

    def _flush_batch(self):
        self._batch_timer = None
        if self._batch and self._transport is not None and not self._eof_sent:
            payload = batch_payload(self._batch)
            self._batch.clear()
            self._transport.write(self._publish(payload))

    def _before_close(self):
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._flush_batch()


class MqttAcceptor(BaseAcceptor):
    """Serves pomelo-rpc's mqtt protocol (MQTT framing, JSON payloads)."""

    connection_class = _MqttConnection
    name = "mqtt acceptor"

    def __init__(self, opts, dispatcher, core):
        super().__init__(opts, dispatcher, core)
        self.buffer_msg = bool(opts.get("buffer_msg", False))
        self.interval = opts.get("interval", 0.05)
