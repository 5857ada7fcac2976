"""The mqtt mailbox: calls a server speaking pomelo-rpc 1.0.7's mqtt protocol.

On connect it sends CONNECT (client id ``MQTT_RPC_<ms>``) and, like the Node
client, does not wait for a CONNACK. A call is a PUBLISH on topic ``rpc`` with
JSON ``{"id": rid, "msg": {"namespace", "serverType", "service", "method",
"args"}}`` (a JSON array of them with ``buffer_msg``); the answer is
``{"id": rid, "resp": [err, ...results]}``, alone or in an array. Keepalive uses
PINGREQ/PINGRESP.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from .errors import AuthenticationError, RpcError
from .mailbox import Mailbox
from .mqtt_json import batch_payload, dumps, json_bytes, json_codec

if TYPE_CHECKING:
    from .core import Core
    from .core.client_protocol import JsonClientProtocol

log = logging.getLogger("pomelo_rpc.mqtt_mailbox")

_MAX_HEADS = 1024   # routes whose request JSON head a mailbox keeps (see _call_head)

_STACK_HEAD = re.compile(r"^\s*([A-Za-z_$][\w$.]*)(?::\s?(.*))?$")


def _js_truthy(value: object) -> bool:
    """JavaScript truthiness of a JSON value (how pomelo code tests ``err``)."""
    if value is None or value is False:
        return False
    if type(value) in (int, float):
        return value != 0 and value == value
    if type(value) is str:
        return value != ""
    return True


def describe_remote_error(err: object) -> tuple[str, str, str | None]:
    """``(type_name, message, stack)`` of the ``err`` a pomelo-rpc server sent.

    A JavaScript Error arrives as ``{"stack": "TypeError: <message>\\n at ..."}`` (and
    ``msg`` when the server set it): the message is ``err.msg`` if present, else the
    stack's first line without its ``Type: `` prefix; the type is that prefix.
    """
    if isinstance(err, dict):
        stack = err.get("stack") if isinstance(err.get("stack"), str) else None
        type_name: str | None
        message: str | None
        type_name = message = None
        if stack:
            first = stack.split("\n", 1)[0]
            head = _STACK_HEAD.match(first)
            if head is not None:
                type_name, message = head.group(1), head.group(2) or ""
            else:
                message = first
        msg = err.get("msg")
        if msg is None:
            msg = err.get("message")
        if msg is not None:
            message = msg if isinstance(msg, str) else dumps(msg)
        if message is None:
            message = dumps(err)
        return type_name or "Error", message, stack
    if isinstance(err, str):
        return "Error", err, None
    return "Error", dumps(err), None


def remote_fields(err: object) -> dict[str, Any] | None:
    """Every field of the ``err`` a server sent but its stack (pinus sends an error's
    own fields: ``{"code": 42, "stack": ...}``), for ``RemoteError.fields``."""
    if isinstance(err, dict):
        return {k: v for k, v in err.items() if k != "stack"}
    return None


def results_value(results: list[Any]) -> Any:
    """The call's value from the callback results after ``err``: None, the one, or a list."""
    n = len(results)
    if n == 1:
        return results[0]
    if n == 0:
        return None
    return list(results)


class MqttMailbox(Mailbox):
    """Mailbox speaking pomelo-rpc 1.0.7's mqtt protocol (MQTT framing, JSON payloads)."""

    protocol: JsonClientProtocol
    _silence_hint = (" (connected, but no CONNACK for the auth_token: the server has none, "
                     "like Node pomelo-rpc, or it is a TLS server and needs ssl=)")

    def __init__(self, server_info: dict[str, Any], opts: dict[str, Any], core: Core) -> None:
        super().__init__(server_info, opts, core)
        mqtt = core.mqtt
        self._mqtt = mqtt
        self._publish = mqtt.encode_publish
        self._buffer_msg = bool(opts["buffer_msg"])
        self._interval: float = opts["interval"]
        self._batch: list[bytes] = []   # JSON payloads of calls (buffer_msg)
        self._batch_timer: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[None] | None = None   # see _open
        if self._trace_prefix is not None:   # tracing, rpc_debug_log
            self._pomelo_trace = bool(opts.get("rpc_debug_log"))
            self._send_call = self._send_call_traced  # type: ignore[method-assign]
        # the protocol writes a call's PUBLISH itself unless it is batched or traced
        self.protocol.plain_calls = not self._buffer_msg and self._trace_prefix is None

    def _make_protocol(self, opts: dict[str, Any]) -> JsonClientProtocol:
        core = self.core
        mqtt = core.mqtt
        protocol: JsonClientProtocol = core.client_protocol.JsonClientProtocol(
            self, self.server_id, self._pkg_size, 0, mqtt.MqttDecoder(self._pkg_size),
            mqtt.PUBLISH, 2, json_codec(core))
        return protocol

    async def _open(self) -> None:
        # with an auth_token, the server's CONNACK says whether it took it (a server
        # without one, like Node pomelo-rpc, sends none: the connect then times out)
        self._connack = self._loop.create_future() if self._auth_token is not None else None
        await self._create_connection()
        if self._connack is not None:
            await self._connack
        # before any call: does the server answer pings? A PUBLISH before the PINGRESP
        # says it does not (see ``_no_pingresp``); one known not to is not asked
        if self.pings_answered:
            self._ping_check = True
            self._ping_now(self._loop.time())

    # transport hooks ---------------------------------------------------

    def _send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        # a call the protocol does not write itself (buffer_msg): its JSON, batched
        self._send_part(self.protocol.call_json(rid, msg, budget), msg)

    def _send_notify(self, msg: dict[str, Any], budget: int | None,
                     timeout: float | None) -> None:
        """A notify: pomelo-rpc has none, so it is a request whose answer is dropped (its
        id is held until then: ``ClientProtocol.reserve``)."""
        rid = self.protocol.reserve(timeout)
        try:
            self._send_call(rid, msg, budget)
        except BaseException:
            self.protocol.table.pop(rid)
            raise

    def _send_part(self, part: bytes, msg: dict[str, Any]) -> None:
        """Send the JSON of one call: into the batch (buffer_msg) or as its own PUBLISH."""
        if self._buffer_msg:
            self.protocol.check_size(part, msg)
            self._batch.append(part)
            if self._batch_timer is None:
                self._batch_timer = self._loop.call_later(self._interval, self._flush_batch)
        else:
            self.protocol.writer.write(self.protocol.check_size(self._publish(part), msg))

    def _call_head(self, key: tuple[Any, Any, Any, Any]) -> bytes:
        """``,"msg":{"namespace":…,"serverType":…,"service":…,"method":…,"args":`` of a
        route (UTF-8), kept in the protocol's ``heads`` when its names are strings (and
        the server type maybe null)."""
        namespace, server_type, service, method = map(dumps, key)
        # a call without a server type (pomelo's rpcInvoke, e.g. to a connector's sys
        # remotes) carries no serverType, as Node's does
        server_type = "" if key[1] is None else f'"serverType":{server_type},'
        head = (f',"msg":{{"namespace":{namespace},{server_type}"service":{service},'
                f'"method":{method},"args":').encode("utf-8")
        heads = self.protocol.heads
        if len(heads) < _MAX_HEADS and all(type(k) is str or k is None for k in key):
            heads[key] = head
        return head

    def _send_call_traced(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """``_send_call`` carrying the call's W3C traceparent as an extra ``traceparent``
        field (Node pomelo-rpc ignores it); with rpc_debug_log also pomelo-rpc's own
        tracing fields (``traceId``: the trace id), which a Node server logs."""
        carried: str = self.protocol.trace or msg["trace_id"]
        pkg: dict[str, Any] = {"traceparent": carried}
        if self._pomelo_trace:
            pkg.update(traceId=carried[3:35], seqId=1, source=self._trace_prefix,
                       remote=self.server_id)
        pkg["id"] = rid
        if budget is not None:
            pkg["budget"] = budget
        body = pkg["msg"] = {"namespace": msg["namespace"]}
        if msg.get("server_type") is not None:
            body["serverType"] = msg["server_type"]
        body.update(service=msg["service"], method=msg["method"], args=msg["args"])
        self._send_part(json_bytes(pkg), msg)

    def _send_ping(self) -> None:
        self.protocol.writer.write(self._mqtt.PINGREQ_PACKET)

    def _close_transport(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        self._batch.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(self._mqtt.DISCONNECT_PACKET)
            transport.close()

    def _flush_batch(self) -> None:
        self._batch_timer = None
        if self._batch and self._transport is not None:
            payload = batch_payload(self._batch)
            self._batch.clear()
            self.protocol.writer.write(self._publish(payload))

    # the protocol's callbacks ------------------------------------------

    def _connection_made(self, transport: asyncio.Transport) -> None:
        """Connected: send CONNECT (no CONNACK is awaited)."""
        self._transport = transport
        if self._auth_token is not None:   # the auth_token as the CONNECT password
            self.protocol.writer.direct(self._mqtt.encode_connect(None, 0, "pomelo_rpc",
                                                                   self._auth_token))
        else:
            self.protocol.writer.direct(self._mqtt.encode_connect(None, 0))

    def _connection_lost(self, exc: Exception | None) -> None:
        """The connection closed; every call in flight fails."""
        self._transport = None
        self._lost_with_calls()
        reason = f"connection to {self.server_id} lost" + (f": {exc}" if exc else "")
        if not self.protocol.heard:   # refused at once: say what usually refuses a client so
            reason += (" before the server sent anything (with TLS: a server requiring "
                       "client certificates refuses a client without a trusted one)"
                       if self._tls else " before the server sent anything (if it "
                       "serves TLS, set ssl=)")
        self._fail(reason)

    def _bad_payload(self, exc: ValueError) -> None:
        """A PUBLISH whose payload is not JSON: logged, dropped."""
        log.warning("bad rpc payload from %s: %s", self.server_id, exc)

    def _on_packet(self, packet: tuple[Any, ...]) -> None:
        """A packet that is not a PUBLISH the protocol handles: PINGRESP, CONNACK, or the
        first PUBLISH while the first ping is unanswered."""
        kind = packet[0]
        if kind == self._mqtt.PUBLISH:
            if self._ping_check:
                self._no_pingresp()
            self.protocol.answer(packet[2])
        elif kind == self._mqtt.PINGRESP:
            self._ping_check = False
            self._pong()
        elif kind == self._mqtt.CONNACK:
            self._on_connack(packet[2])

    def _no_pingresp(self) -> None:
        """An answer came before the PINGRESP of the PINGREQ sent first: this server
        does not answer pings, so silence cannot tell it dead from slow."""
        self._ping_check = False
        self.pings_answered = False
        log.info("%s does not answer PINGREQ: its connection is never declared dead "
                 "for silence (TCP_USER_TIMEOUT and the call timeouts still apply)",
                 self.server_id)

    def _on_connack(self, return_code: int) -> None:
        """With an auth_token: code 0, the server took it; any other, it did not.
        Without one, a CONNACK (which Node pomelo-rpc never sends) needs nothing."""
        connack = self._connack
        if connack is None:
            if return_code != 0:   # our server refusing a client without an auth_token
                self._auth_failed(f"the server requires an auth_token (CONNACK code "
                                  f"{return_code}); none is set")
            return
        if connack.done():
            return
        if return_code == 0:
            connack.set_result(None)
        else:
            reason = f"the server refused the auth_token (CONNACK code {return_code})"
            connack.set_exception(AuthenticationError(reason))
            self._auth_failed(reason)

    def _on_pkg(self, pkg: Any) -> None:
        """A payload that is not the common answer: answers in an array (the server's
        buffer_msg), and each answer of another shape."""
        if type(pkg) is list:
            for item in pkg:
                self._on_response(item)
        else:
            self._on_response(pkg)

    def _on_response(self, pkg: Any) -> None:
        if type(pkg) is not dict or type(pkg.get("id")) is not int:
            log.warning("rpc response from %s without an id: %.80r", self.server_id, pkg)
            return
        rid = pkg["id"]
        resp = pkg.get("resp")
        if resp is None:
            resp = []
        elif type(resp) is not list:
            self.protocol.fail(rid, RpcError(
                f"malformed response from {self.server_id}: resp is {type(resp).__name__}"),
                self.protocol.read_at)
            return
        if resp and _js_truthy(resp[0]):
            type_name, message, stack = describe_remote_error(resp[0])
            self.protocol.reject_remote(rid, type_name, message, stack, remote_fields(resp[0]))
        else:
            self.protocol.resolve(rid, results_value(resp[1:]))

