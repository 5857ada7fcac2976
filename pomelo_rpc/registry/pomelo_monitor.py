"""pomelo-admin's monitor protocol: the link from a server process to the pomelo master.

What pomelo-admin 1.0.1 (pomelo 2.2.7) speaks between a ``MonitorAgent`` and the
``MasterAgent``: MQTT 3.1.1 over TCP. The monitor sends CONNECT (client id
``MQTT_ADMIN_<ms>``), the master answers CONNACK; every message after that is a QoS 0
PUBLISH whose topic names the kind of message and whose payload is JSON:

- ``register``: monitor → master ``{"id", "type": "monitor", "serverType", "pid",
  "info", "token"}``; master → monitor ``{"code": 1, "msg": "ok"}`` or ``{"code": -1,
  "msg": "server auth failed"}`` (then it disconnects).
- ``monitor``: module traffic. A request ``{"reqId", "moduleId", "body"}`` and a response
  ``{"respId", "error", "body"}`` are JSON text *inside* a JSON string (pomelo-admin
  stringifies them, then the socket stringifies again); a notify ``{"moduleId",
  "body"}`` and a command ``{"command", "moduleId", "body"}`` are plain objects (a
  command may also come as a string). Either form is accepted here.

PINGREQ/PINGRESP keep the link alive; DISCONNECT is a graceful leave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from ..core import mqtt
from ..errors import FrameError

__all__ = ["MonitorLink", "connect", "within", "PRO_OK", "PRO_FAIL"]

log = logging.getLogger("pomelo_rpc.registry.pomelo_monitor")

_T = TypeVar("_T")

#: pomelo-admin's protocol codes in a ``register`` answer
PRO_OK = 1
PRO_FAIL = -1

#: the largest packet accepted from the master (a replaceServer of a big cluster fits)
MAX_PACKET = 8 * 1024 * 1024

#: ``handler(link, message)`` for each request, notify or command from the master
Handler = Callable[["MonitorLink", dict[str, Any]], None]


async def within(aw: Awaitable[_T], timeout: float) -> _T:
    """``await aw`` for at most ``timeout`` s (asyncio.TimeoutError after, ``aw`` cancelled).

    Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation of the caller is never
    lost when ``aw`` completes in the same loop turn: the supervising task of a registry
    must stop when it is cancelled.
    """
    fut = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({fut}, timeout=timeout)
    except BaseException:
        fut.cancel()
        raise
    if not done:
        fut.cancel()
        raise asyncio.TimeoutError()
    return fut.result()


def _json(obj: Any) -> str:
    """JSON text as JavaScript's JSON.stringify writes it (no spaces, UTF-8 as is)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class MonitorLink(asyncio.Protocol):
    """One MQTT connection to the master, from CONNACK until it closes.

    ``closed`` is a future that completes when the connection is gone. Requests to the
    master wait for their response (or fail when the link closes); requests, notifies
    and commands from the master go to ``handler``; a response to a request of the
    master is sent with ``respond``.
    """

    def __init__(self, handler: Handler, keepalive: float) -> None:
        loop = asyncio.get_running_loop()
        self.handler = handler
        self.keepalive = keepalive
        self.closed: asyncio.Future[None] = loop.create_future()
        self._connack: asyncio.Future[None] = loop.create_future()
        self._registered: asyncio.Future[dict[str, Any]] | None = None
        self._transport: asyncio.Transport | None = None
        self._decoder = mqtt.MqttDecoder(MAX_PACKET)
        self._pending: dict[int, asyncio.Future[tuple[Any, Any]]] = {}
        self._next_id = 1
        self._last_heard = time.monotonic()
        self._pinger: asyncio.Task[None] | None = None

    # asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT as pomelo-admin's MqttClient does."""
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(mqtt.encode_connect(f"MQTT_ADMIN_{int(time.time() * 1000)}"))

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail everything that waits on the link."""
        self._transport = None
        reason = ConnectionError(f"connection to the pomelo master lost ({exc or 'closed'})")
        for fut in [self._connack, self._registered, *self._pending.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(reason)
                fut.exception()     # retrieved: nobody may be waiting any more
        self._pending.clear()
        if self._pinger is not None:
            self._pinger.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Decode packets; a malformed one closes the link (logged)."""
        self._last_heard = time.monotonic()
        try:
            for pkt in self._decoder.feed(data):
                self._packet(pkt)
        except (FrameError, ValueError) as exc:
            log.error("pomelo master sent a malformed message (%s): closing the link", exc)
            self.abort()

    # incoming ---------------------------------------------------------------------

    def _packet(self, pkt: tuple[Any, ...]) -> None:
        kind = pkt[0]
        if kind == mqtt.CONNACK:
            if pkt[2] != 0:
                raise FrameError(f"the master refused the MQTT connection (code {pkt[2]})")
            if not self._connack.done():
                self._connack.set_result(None)
        elif kind == mqtt.PUBLISH:
            self._publish(pkt[1], pkt[2])
        elif kind == mqtt.PINGREQ:
            self._write(mqtt.encode_pingresp())
        elif kind == mqtt.DISCONNECT:
            self.abort()
        elif kind != mqtt.PINGRESP:
            log.warning("pomelo master: ignoring MQTT packet of type %d", kind)

    def _publish(self, topic: str, payload: bytes) -> None:
        msg = json.loads(payload)
        if topic == "monitor" and isinstance(msg, str):
            msg = json.loads(msg)      # composeRequest/composeResponse text inside JSON
        if not isinstance(msg, dict):
            raise ValueError(f"{topic} message is not a JSON object: {payload[:80]!r}")
        if topic == "register":
            if self._registered is not None and not self._registered.done():
                self._registered.set_result(msg)
            return
        if topic != "monitor":
            log.warning("pomelo master: ignoring a message on topic %r", topic)
            return
        resp_id = msg.get("respId")
        if resp_id and "command" not in msg:
            fut = self._pending.pop(resp_id, None) if isinstance(resp_id, int) else None
            if fut is None:
                log.warning("pomelo master: response to unknown request %r", resp_id)
            elif not fut.done():
                fut.set_result((msg.get("error"), msg.get("body")))
            return
        try:
            self.handler(self, msg)
        except Exception:   # a bug in a module answer must not take the link down
            log.exception("pomelo master: handling %.200r failed", msg)

    # outgoing ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def publish(self, topic: str, payload: Any) -> None:
        """PUBLISH ``payload`` (JSON-encoded) on ``topic``."""
        self._write(mqtt.encode_publish(_json(payload).encode(), topic))

    async def register(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``register`` and return the master's answer (``{"code", "msg"}``)."""
        self._registered = asyncio.get_running_loop().create_future()
        self.publish("register", req)
        return await within(self._registered, timeout)

    async def request(self, module_id: str, body: Any, timeout: float) -> tuple[Any, Any]:
        """A request to one of the master's modules: its ``(error, body)``."""
        req_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self.publish("monitor", _json({"reqId": req_id, "moduleId": module_id, "body": body}))
        try:
            return await within(fut, timeout)
        finally:
            self._pending.pop(req_id, None)

    def notify(self, module_id: str, body: Any) -> None:
        """A notify to one of the master's modules (no answer)."""
        self.publish("monitor", {"moduleId": module_id, "body": body})

    def respond(self, req_id: Any, error: Any, body: Any = None) -> None:
        """Answer the master's request ``req_id`` as pomelo-admin's composeResponse does
        (``None`` fields are left out, as JSON.stringify drops ``undefined``). Nothing
        is sent for a notify (no ``req_id``): it has no answer."""
        if not req_id:
            return
        resp: dict[str, Any] = {"respId": req_id}
        if error is not None:
            resp["error"] = error
        if body is not None:
            resp["body"] = body
        self.publish("monitor", _json(resp))

    # life cycle -------------------------------------------------------------------

    def start_keepalive(self) -> None:
        """PINGREQ every ``keepalive`` s; a master silent for two periods closes the link."""
        self._pinger = asyncio.get_running_loop().create_task(self._ping_loop())

    async def _ping_loop(self) -> None:
        while self._transport is not None:
            await asyncio.sleep(self.keepalive)
            if time.monotonic() - self._last_heard > 2 * self.keepalive:
                log.warning("pomelo master silent for %.1f s: closing the link",
                            time.monotonic() - self._last_heard)
                self.abort()
                return
            self._write(mqtt.encode_pingreq())

    def disconnect(self) -> None:
        """Graceful leave: DISCONNECT, then close (the master drops this server)."""
        self._write(mqtt.encode_disconnect())
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, as a crash would."""
        if self._transport is not None:
            self._transport.abort()


async def connect(host: str, port: int, handler: Handler, *, timeout: float,
                  keepalive: float) -> MonitorLink:
    """A link to the master at ``host:port`` that got its CONNACK within ``timeout``."""
    loop = asyncio.get_running_loop()

    async def _open() -> MonitorLink:
        _, link = await loop.create_connection(lambda: MonitorLink(handler, keepalive),
                                               host, port)
        try:
            await link._connack
        except BaseException:
            link.abort()
            raise
        return link

    link = await within(_open(), timeout)
    link.start_keepalive()
    return link
