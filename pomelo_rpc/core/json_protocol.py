# cython: annotation_typing=False
"""The server's side of one connection of the JSON transports: one source for both cores.

Imported as it is for the pure-Python core; compiled with
``pomelo_rpc/_cy/json_protocol.pxd`` for the Cython core.

``JsonServerProtocol`` is ``ServerProtocol`` speaking pomelo-rpc 1.0.7's JSON: the
mqtt acceptor's (MQTT PUBLISH packets) and the pinus-tcp acceptor's (pinus-rpc's
varint frames). Here, the hot path of every read: the packets are decoded, the common
request ``{"id": n, "msg": {"namespace", "service", "method", "args"}}`` (n an int
other than 0) is made the by-name request the dispatcher runs and admitted as a
native request is (``accept``), and the common answer ``{"id": n, "resp": [null,
value]}`` is written, framed, in the read's flush. The transport's class
(``pomelo_rpc.mqtt_acceptor.MqttProtocol``, a subclass) gets everything else:
the other packets (``on_packet``: CONNECT, PINGREQ, DISCONNECT, pings), the other
request objects (``on_pkg``: arrays from a buffering client, notifies, traced
requests, bad ones), payloads that are not JSON (``bad_payload``), the answers of
``buffer_msg`` (``add_to_batch``) and the errors (``encode_failure``).

JSON is read and written by ``codec`` (``core.json_codec.JsonCodec``): ``json``'s
values and text exactly, orjson's where they are the same. With orjson, a request of
a route seen before has only its args parsed (``learn``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import monotonic
from .mqtt import answer_payload, request_parts
from .server_protocol import ServerProtocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..acceptor import ServerConnection
    from ..overload import Overload
    from .dispatch import Dispatcher
    from .json_codec import JsonCodec

_REQ_NAME = 2   # the dispatcher's by-name request kind (see core.frames.REQ_NAME)
#: the most heads an acceptor learns, and the longest it learns
MAX_HEADS = 1024
MAX_HEAD = 1024


class JsonServerProtocol(ServerProtocol):
    """The JSON transports' ``ServerProtocol``; see the module docstring.

    ``packets``: the transport's incremental decoder (``feed``), whose requests are the
    packets of kind ``kind_request`` carrying their payload at ``payload_at``;
    ``publish`` frames an answer's payload; ``codec``: see the module docstring;
    ``result_payload(rid, result)``: the answer of a result ``encode_result`` does not
    write; ``heads``: the heads learnt (see ``learn``), shared by an acceptor's
    connections.
    """

    def __init__(self, owner: ServerConnection, dispatcher: Dispatcher, overload: Overload,
                 max_frame: int, packets: Any, kind_request: int, payload_at: int,
                 publish: Callable[[bytes], bytes], codec: JsonCodec,
                 result_payload: Callable[[Any, Any], bytes],
                 heads: dict[bytes, tuple[Any, Any, Any]] | None = None) -> None:
        super().__init__(owner, dispatcher, overload, max_frame)
        self.packets = packets
        self.kind_request = kind_request
        self.payload_at = payload_at
        self.publish = publish
        self.codec: JsonCodec = codec
        #: the answer of a result the hot path does not write (or cannot: the error's)
        self.result_payload = result_payload
        #: the route of each head learnt (see ``learn``), shared by an acceptor's
        #: connections; None: every payload parsed whole (no orjson)
        self.heads = heads if codec.fast_loads is not None else None
        #: the head this connection's last fast request had, and its route (a
        #: connection usually repeats one route: its head compared, not hashed)
        self.last_head = b""
        self.last_route: tuple[Any, Any, Any] | None = None
        self.buffer_msg = False        # answers batched by the transport's class
        self.heard = False             # a read since the transport's class last cleared it

    def decode(self, data: bytes) -> list[Any]:
        """The packets ``data`` completes."""
        packets: list[Any] = self.packets.feed(data)
        return packets

    def data_received(self, data: bytes) -> None:
        """asyncio: decode the packets; run the requests, answers out in one flush."""
        self.heard = True
        packets = self.read(data)
        if packets is None:
            return
        arrived = monotonic()
        kind = self.kind_request
        at = self.payload_at
        heads = self.heads
        try:
            for packet in packets:
                if packet[0] != kind:
                    if not self.on_packet(packet):
                        return
                    continue
                payload = packet[at]
                parts = None
                if heads is not None and not self.tracing and type(payload) is bytes:
                    # the usual request of a route seen before: only its args parsed
                    parts = request_parts(payload)
                    if parts is not None:
                        head = parts[2]
                        if head == self.last_head:    # compared, cheaper than hashed
                            route = self.last_route
                        else:
                            route = heads.get(head)
                            if route is not None:
                                self.last_head = head
                                self.last_route = route
                        fast = self.codec.fast_loads
                        if route is not None and fast is not None:
                            try:
                                args = fast(parts[3])
                            except ValueError:       # parsed whole below, and answered
                                route = None
                            if route is not None:
                                self.accept([_REQ_NAME, 0, route[0], route[1], route[2],
                                             [] if args is None else args],
                                            parts[0], parts[1], arrived)
                                continue
                try:
                    pkg = self.codec.loads(payload)
                except ValueError as exc:
                    self.bad_payload(exc)
                    continue
                if type(pkg) is dict and not self.tracing:
                    rid = pkg.get("id")
                    msg = pkg.get("msg")
                    if type(rid) is int and rid != 0 and type(msg) is dict:
                        args = msg.get("args")
                        request = [_REQ_NAME, 0, msg.get("namespace"), msg.get("service"),
                                   msg.get("method"), [] if args is None else args]
                        if parts is not None:
                            self.learn(parts[2])
                        # "budget": ms left, from a Python client (a Node client sends none)
                        self.accept(request, rid, pkg.get("budget"), arrived)
                        continue
                self.on_pkg(pkg, arrived)
        finally:
            self.end_read()     # the deadline ``accept`` left current
        self.writer.flush()

    def learn(self, head: bytes) -> None:
        """Learn the route of ``head`` (see ``core.mqtt.request_parts``) if every payload
        ``{"id":<rid>[,"budget":<ms>]`` + ``head`` + ``<args>}}`` whose args are one
        JSON value is the request ``{"id": rid[, "budget": ms], "msg": {..., "args":
        args}}``: what ``{"id":1`` and ``{"id":2`` + ``head`` + ``null}}`` parse to says
        (an "id" or "budget" in the head, a head not ending where a value starts, fail it)."""
        heads = self.heads
        if heads is None or len(heads) >= MAX_HEADS or len(head) > MAX_HEAD or head in heads:
            return
        try:
            one = self.codec.loads(b'{"id":1' + head + b"null}}")
            two = self.codec.loads(b'{"id":2' + head + b"null}}")
        except ValueError:
            return
        if type(one) is not dict or type(two) is not dict or len(one) != 2:
            return
        msg = one.get("msg")
        if (type(one.get("id")) is not int or one.get("id") != 1 or type(two.get("id")) is not int
                or two.get("id") != 2 or type(msg) is not dict or "args" not in msg
                or msg["args"] is not None):
            return
        heads[head] = (msg.get("namespace"), msg.get("service"), msg.get("method"))

    def encode_result(self, rid: Any, result: Any) -> bytes:
        """The JSON payload answering call ``rid`` with ``result`` (``[null, result]``)."""
        if type(rid) is int:
            try:
                body = self.codec.dumps_bytes(result)
            except (TypeError, ValueError):
                return self.result_payload(rid, result)   # the error's answer
            return answer_payload(rid, body)
        return self.result_payload(rid, result)

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

    # the transport's class ------------------------------------------------

    def on_packet(self, packet: Any) -> bool:
        """A packet other than a request; False if the connection ends with it."""
        raise NotImplementedError

    def on_pkg(self, pkg: Any, arrived: float) -> None:
        """A request payload's JSON value that is not the common request."""
        raise NotImplementedError

    def bad_payload(self, exc: ValueError) -> None:
        """A request payload that is not JSON."""
        raise NotImplementedError

    def add_to_batch(self, payload: bytes) -> None:
        """``buffer_msg``: the payload goes out with the others of the next interval."""
        raise NotImplementedError
