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
import logging
from typing import TYPE_CHECKING, Any

from .acceptor import BaseAcceptor, ServerConnection
from .mqtt_json import (ErrorAnswer, answer_payload, batch_payload, failure_payload,
                        server_codec)
from .core.dispatch import NOTIFY_RID
from .errors import DispatchError, ServerBusyError

if TYPE_CHECKING:
    from .core import Core
    from collections.abc import Callable

    from .core.dispatch import Dispatcher

log = logging.getLogger("pomelo_rpc.mqtt_acceptor")

_REQ_NAME = 2   # the dispatcher's by-name request kind (see core.frames.REQ_NAME)


def is_notify_id(rid: Any) -> bool:
    """True if a request's ``id`` makes it a notify for pinus-rpc's tcp acceptor
    (``pkg.id ? answer : null``: 0, none, or another JavaScript falsy value)."""
    return not rid and not isinstance(rid, (list, dict))

if TYPE_CHECKING:
    # the mixin's base, for the type checker: either core's JsonServerProtocol (the pure
    # one's types); at run time the base is given per core (``protocol_class``)
    from .core.json_protocol import JsonServerProtocol as _ProtocolBase
else:
    _ProtocolBase = object


class MqttProtocol(_ProtocolBase):
    """The mqtt side of a core's ``JsonServerProtocol`` (``protocol_class`` puts the two
    together): the core reads the packets, runs the common requests and writes their
    answers; here, the rest: CONNECT, PINGREQ, DISCONNECT, requests in arrays,
    notifies, traced requests, errors, and the answers of ``buffer_msg`` (batched every
    ``interval`` s). A request without an id is run and not answered (a notify)."""

    #: a request of id 0 is a notify too (pinus tcp)
    zero_id_notifies = False

    def __init__(self, owner: _MqttConnection, acceptor: MqttAcceptor) -> None:
        mqtt = acceptor.core.mqtt
        super().__init__(owner, acceptor.dispatcher, acceptor.overload, acceptor.pkg_size,
                         *self.framing(acceptor), *server_codec(acceptor.core),
                         acceptor.heads)
        self.kinds = (mqtt.PUBLISH, mqtt.PINGREQ, mqtt.CONNECT, mqtt.DISCONNECT)
        self.pingresp = mqtt.PINGRESP_PACKET
        self.buffer_msg = acceptor.buffer_msg
        self.interval = acceptor.interval
        self.client_id: str | None = None   # from the client's CONNECT
        self.pings = 0             # PINGREQs answered
        self.batch: list[bytes] = []        # JSON payloads of responses (buffer_msg)
        self.batch_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def framing(acceptor: MqttAcceptor) -> tuple[Any, int, int, Callable[[bytes], bytes]]:
        """The core's ``(decoder, request kind, payload index, framing of an answer)``:
        MQTT packets, PUBLISH, ``(PUBLISH, topic, payload, ...)``, a PUBLISH on "rpc"."""
        mqtt = acceptor.core.mqtt
        return mqtt.MqttDecoder(acceptor.pkg_size), mqtt.PUBLISH, 2, mqtt.encode_publish

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; calls still running are cancelled."""
        if self.batch_timer is not None:
            self.batch_timer.cancel()
            self.batch_timer = None
        self.batch.clear()
        super().connection_lost(exc)

    def on_packet(self, packet: Any) -> bool:
        """A packet other than a PUBLISH: PINGREQ answered, CONNECT noted, DISCONNECT
        closes the connection (False)."""
        kind = packet[0]
        _publish, pingreq, connect, disconnect = self.kinds
        if kind == pingreq:
            self.respond_pong()
        elif kind == connect:
            self.client_id = packet[1]
            log.debug("mqtt client %s connected from %s", packet[1], self.owner._peer)
        elif kind == disconnect:
            self.writer.flush_now()
            if self.transport is not None:
                self.transport.close()
            return False
        else:
            log.debug("ignoring MQTT packet type %s from %s", kind, self.owner._peer)
        return True

    def is_ping(self, packet: Any) -> bool:
        """True if ``packet`` is a PINGREQ."""
        return bool(packet[0] == self.kinds[1])

    def respond_pong(self) -> None:
        """Queue a PINGRESP."""
        self.pings += 1
        self.writer.queue(self.pingresp)

    # requests ----------------------------------------------------------

    def bad_payload(self, exc: ValueError) -> None:
        """A PUBLISH whose payload is not JSON: logged, dropped."""
        log.warning("bad rpc payload from %s: %s", self.owner._peer, exc)

    def on_pkg(self, pkg: Any, arrived: float) -> None:
        """A payload the core does not run itself: a JSON array of requests (a
        buffering client), or one request object that is not the common one."""
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
        if not rid and self.zero_id_notifies and is_notify_id(rid):
            rid = None                  # pinus tcp: a notify, never answered
        msg = pkg.get("msg")
        if type(msg) is not dict:
            self.respond(self.encode_failure(rid, DispatchError("rpc request without a msg object")))
            return
        args = msg.get("args")
        request = [_REQ_NAME, 0 if rid is not None else NOTIFY_RID, msg.get("namespace"),
                   msg.get("service"), msg.get("method"), [] if args is None else args]
        if self.tracing:   # the W3C traceparent, else pomelo-rpc's traceId (rpcDebugLog)
            request.append(pkg.get("traceparent") or pkg.get("traceId"))
        # "budget": ms left, from a Python client (a Node client sends none)
        self.accept(request, rid, pkg.get("budget"), arrived)

    # answers -------------------------------------------------------------

    def encode_failure(self, rid: Any, exc: BaseException) -> bytes:
        """The JSON payload answering call ``rid`` with the error ``exc``."""
        log.debug("remote call %s failed: %r", rid, exc)
        if type(exc) is ErrorAnswer:     # answered with the elements it carries
            return answer_payload(rid, exc)
        return failure_payload(rid, exc)

    def encode_busy(self, rid: Any) -> bytes:
        """The JSON payload refusing call ``rid`` past ``max_in_flight``."""
        return self.encode_failure(rid, ServerBusyError(self.overload.busy_text))

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


_protocol_classes: dict[tuple[str, type[MqttProtocol]], type[MqttProtocol]] = {}


def protocol_class(core: Core, mixin: type[MqttProtocol] | None = None) -> type[MqttProtocol]:
    """``mixin`` (``MqttProtocol`` or a subclass) on ``core``'s ``JsonServerProtocol``
    (made once per core and mixin)."""
    mixin = MqttProtocol if mixin is None else mixin
    cls = _protocol_classes.get((core.name, mixin))
    if cls is None:
        base = core.json_protocol.JsonServerProtocol
        cls = _protocol_classes[(core.name, mixin)] = type(
            mixin.__name__, (mixin, base), {"__doc__": mixin.__doc__})
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
        buffered: int = self._protocol.packets.buffered
        return buffered

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
        self._protocol.writer.direct(mqtt.encode_connack(0))

    def _before_close(self) -> None:
        self._protocol.close_batch()


class MqttAcceptor(BaseAcceptor):
    """Serves pomelo-rpc's mqtt protocol (MQTT framing, JSON payloads)."""

    connection_class = _MqttConnection
    name = "mqtt acceptor"

    def __init__(self, opts: dict[str, Any], dispatcher: Dispatcher, core: Core) -> None:
        super().__init__(opts, dispatcher, core)
        self.buffer_msg = bool(opts["buffer_msg"])
        self.interval: float = opts["interval"]
        #: the routes of the request heads its connections learnt (JsonServerProtocol)
        self.heads: dict[bytes, tuple[Any, Any, Any]] = {}
