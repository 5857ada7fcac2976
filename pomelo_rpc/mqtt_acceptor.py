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

from .acceptor import set_nodelay
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


class _MqttConnection(asyncio.Protocol):
    """One client connection of the mqtt acceptor."""

    def __init__(self, acceptor):
        self._acceptor = acceptor
        mqtt = acceptor.core.mqtt
        self._decoder = mqtt.MqttDecoder(acceptor.pkg_size)
        self._publish = mqtt.encode_publish
        self._k_publish, self._k_pingreq, self._k_connect, self._k_disconnect = (
            mqtt.PUBLISH, mqtt.PINGREQ, mqtt.CONNECT, mqtt.DISCONNECT)
        self._pingresp = mqtt.PINGRESP_PACKET
        self._dispatch = acceptor.dispatcher.dispatch
        dispatch = acceptor.core.dispatch
        self._done_state, self._pending_state = dispatch.DONE, dispatch.PENDING
        self._buffer_msg = acceptor.buffer_msg
        self._interval = acceptor.interval
        self._transport = None
        self._peer = None
        self.client_id = None      # from the client's CONNECT
        self.pings = 0             # PINGREQs answered
        self._out = []             # packets to write at the end of this loop turn
        self._flush_scheduled = False
        self._batch = []           # JSON payloads of responses (buffer_msg)
        self._batch_timer = None
        self._tasks = set()
        self.closed = asyncio.get_running_loop().create_future()

    # asyncio callbacks -------------------------------------------------

    def connection_made(self, transport):
        """asyncio: a client connected (TCP_NODELAY on; no CONNACK, as the original)."""
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        set_nodelay(transport)
        self._acceptor.accepted += 1
        self._acceptor.connections.add(self)

    def connection_lost(self, exc):
        """asyncio: the connection closed; calls still running are cancelled."""
        self._acceptor.connections.discard(self)
        for task in self._tasks:
            task.cancel()
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        self._batch.clear()
        self._out.clear()
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        """asyncio: decode MQTT packets; run requests, answer PINGREQ, close on DISCONNECT."""
        try:
            packets = self._decoder.feed(data)
        except FrameError as exc:
            self._abort(exc)
            return
        out = self._out
        for packet in packets:
            kind = packet[0]
            if kind == self._k_publish:
                self._on_publish(packet[2])
            elif kind == self._k_pingreq:
                self.pings += 1
                out.append(self._pingresp)
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
        if out and not self._flush_scheduled:
            self._flush()

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
            self._respond(failure_payload(rid, DispatchError("rpc request without a msg object")))
            return
        args = msg.get("args")
        request = [_REQ_NAME, 0, msg.get("namespace"), msg.get("service"), msg.get("method"),
                   [] if args is None else args]
        _, state, outcome = self._dispatch(request)
        if state == self._done_state:
            self._respond(result_payload(rid, outcome))
        elif state == self._pending_state:
            task = asyncio.ensure_future(outcome)
            self._tasks.add(task)
            task.add_done_callback(lambda t, rid=rid: self._task_done(rid, t))
        else:
            log.debug("remote call %s failed: %r", rid, outcome)
            self._respond(failure_payload(rid, outcome))

    def _task_done(self, rid, task):
        self._tasks.discard(task)
        if self._transport is None:
            return
        if task.cancelled():
            payload = failure_payload(rid, asyncio.CancelledError("the call was cancelled"))
        elif task.exception() is not None:
            payload = failure_payload(rid, task.exception())
        else:
            payload = result_payload(rid, task.result())
        self._respond(payload)
        if self._out and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # responses ---------------------------------------------------------

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
        if self._batch and self._transport is not None:
            payload = batch_payload(self._batch)
            self._batch.clear()
            self._transport.write(self._publish(payload))

    def _flush(self):
        self._flush_scheduled = False
        out = self._out
        if out and self._transport is not None:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        out.clear()

    # closing -----------------------------------------------------------

    def _abort(self, exc):
        log.warning("closing mqtt connection from %s: %s", self._peer, exc)
        if self._transport is not None:
            self._transport.abort()

    async def drain_and_close(self, grace):
        """Wait up to ``grace`` s for calls in flight, send their answers, then close."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        self._flush()
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._flush_batch()
        if self._transport is not None:
            self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout=max(grace, 0.1))
        except asyncio.TimeoutError:
            if self._transport is not None:
                self._transport.abort()


class MqttAcceptor:
    """Listens on a TCP port and serves pomelo-rpc's mqtt protocol with ``dispatcher``."""

    def __init__(self, opts, dispatcher, core):
        self.dispatcher = dispatcher
        self.core = core
        self.pkg_size = opts["pkg_size"]
        self.buffer_msg = bool(opts.get("buffer_msg", False))
        self.interval = opts.get("interval", 0.05)
        self.connections = set()
        self.accepted = 0          # connections accepted since listen
        self._server = None

    @property
    def port(self):
        """The bound port (after ``listen``)."""
        return self._server.sockets[0].getsockname()[1] if self._server else None

    async def listen(self, host, port):
        """Start listening."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _MqttConnection(self), host, port,
                                                reuse_address=True)
        log.info("mqtt acceptor listening on %s:%s", host, self.port)

    async def close(self, grace=5.0):
        """Stop accepting, answer the calls already received (up to ``grace`` s), close."""
        if self._server is None:
            return
        self._server.close()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.drain_and_close(grace) for c in conns))
        await self._server.wait_closed()
        self._server = None
