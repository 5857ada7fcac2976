"""The pinus-tcp mailbox: calls a server speaking pinus-rpc 1.7.4's tcp transport.

The JSON is the mqtt transport's (``{"id", "msg"}`` requests, ``{"id", "resp"}``
answers, arrays with ``buffer_msg``), so this is the mqtt mailbox with another framing
around it: a frame is a varint length, a type byte and the JSON (``core.pinus_tcp``).
No CONNECT, no handshake. Request ids start at 1: id 0 is a notify, which the server
runs without answering. Like pinus-rpc's own mailbox, it sends a PING every
``pinus_ping_interval`` s and closes the connection (failing its calls) when the PONG
does not come within ``pinus_pong_timeout`` s; pinus-rpc's acceptor closes a
connection that sent nothing for 30 s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .mqtt_json import json_codec
from .mqtt_mailbox import MqttMailbox
from .security import check_no_auth_token

if TYPE_CHECKING:
    from .core import Core
    from .core.client_protocol import JsonClientProtocol

log = logging.getLogger("pomelo_rpc.pinus_tcp_mailbox")

#: request ids start here: 0 is pinus-rpc's notify
FIRST_ID = 1


class PinusTcpMailbox(MqttMailbox):
    """Mailbox speaking pinus-rpc's tcp transport (varint-framed JSON)."""

    _silence_hint = " (connected, but the server answered nothing)"

    def __init__(self, server_info: dict[str, Any], opts: dict[str, Any], core: Core) -> None:
        check_no_auth_token(opts)
        super().__init__(server_info, opts, core)
        pinus = core.pinus_tcp
        self._pinus = pinus
        self._publish = pinus.encode_request      # the mqtt mailbox's PUBLISH, framed here
        self._ping_interval: float = opts["pinus_ping_interval"] or 0.0
        self._pong_timeout: float = opts["pinus_pong_timeout"] or 0.0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None

    def _make_protocol(self, opts: dict[str, Any]) -> JsonClientProtocol:
        core = self.core
        pinus = core.pinus_tcp
        protocol: JsonClientProtocol = core.client_protocol.JsonClientProtocol(
            self, self.server_id, self._pkg_size, FIRST_ID, pinus.PinusDecoder(self._pkg_size),
            pinus.RESPONSE, 1, json_codec(core), pinus=True)
        return protocol

    # transport hooks ---------------------------------------------------

    def _send_notify(self, msg: dict[str, Any], budget: int | None,
                     timeout: float | None) -> None:
        """A notify is a request of id 0: the server runs it and answers nothing."""
        self._send_call(0, msg, budget)

    def _send_ping(self) -> None:
        self.protocol.writer.write(self._pinus.PING_FRAME)

    def _close_transport(self) -> None:
        self._stop_heartbeat()
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        self._batch.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # heartbeat -----------------------------------------------------------

    def _heartbeat(self) -> None:
        """The next PING, ``pinus_ping_interval`` s from now."""
        if self._ping_interval and self._ping_timer is None and self._transport is not None:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._transport is None:
            return
        self._send_ping()
        if self._pong_timeout and self._pong_timer is None:
            self._pong_timer = self._loop.call_later(self._pong_timeout, self._pong_missed)

    def _pong_missed(self) -> None:
        self._pong_timer = None
        self._fail(f"{self.server_id} did not answer a ping within {self._pong_timeout:g} s")

    def _stop_heartbeat(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

    # the protocol's callbacks ------------------------------------------

    def _connection_made(self, transport: asyncio.Transport) -> None:
        """Connected: nothing to send first; the heartbeat starts."""
        self._transport = transport
        self._heartbeat()

    def _on_packet(self, packet: tuple[Any, ...]) -> None:
        """A frame the protocol does not handle: a PONG ends the wait for it, an answer
        before the first ping's PONG says the server does not answer pings."""
        kind = packet[0]
        pinus = self._pinus
        if kind == pinus.RESPONSE:
            if self._ping_check:      # an answer before the first ping's pong
                self._no_pingresp()
            self.protocol.answer(packet[1])
        elif kind == pinus.PONG:
            self._ping_check = False
            if self._pong_timer is not None:
                self._pong_timer.cancel()
                self._pong_timer = None
            self._heartbeat()
            self._pong()
        else:          # a request or a ping from a server: pinus-rpc's ignores them too
            log.debug("ignoring a pinus tcp frame of type %s from %s", kind, self.server_id)
