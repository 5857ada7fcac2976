"""The pinus-tcp acceptor: serves clients speaking pinus-rpc 1.7.4's tcp transport.

The mqtt acceptor's JSON (``{"id", "msg"}`` requests, ``{"id", "resp"}`` answers,
arrays from a buffering client and, with ``buffer_msg``, to it) in pinus-rpc's tcp
framing (``core.pinus_tcp``: a varint length, a type byte, the JSON). A request of id
0 (or none) is a notify: run, never answered. A PING is answered with a PONG; a
connection that sent nothing for ``pinus_idle_timeout`` s (checked every as many
seconds, as pinus-rpc's acceptor does) is closed. Frames that are not pinus tcp (bad
lengths, unknown types) close the connection, logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .mqtt_acceptor import MqttAcceptor, MqttProtocol, _MqttConnection, protocol_class
from .security import check_no_auth_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from .core import Core
    from .core.dispatch import Dispatcher

log = logging.getLogger("pomelo_rpc.pinus_tcp_acceptor")


class PinusTcpProtocol(MqttProtocol):
    """The pinus tcp side of a core's ``ServerProtocol`` (``protocol_class`` puts the
    two together): frames in, JSON requests run by the core's code, framed answers out;
    a request of id 0 is a notify."""

    zero_id_notifies = True

    def __init__(self, owner: _PinusTcpConnection, acceptor: PinusTcpAcceptor) -> None:
        super().__init__(owner, acceptor)
        pinus = acceptor.core.pinus_tcp
        self.pingresp = pinus.PONG_FRAME
        self.kinds = (pinus.REQUEST, pinus.PING, -1, -1)   # see MqttProtocol.is_ping
        self.idle: float = acceptor.pinus_idle_timeout or 0.0
        self.heard = True          # a frame arrived since the last idle check
        self.idle_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def framing(acceptor: MqttAcceptor) -> tuple[Any, int, int, Callable[[bytes], bytes]]:
        """The core's ``(decoder, request kind, payload index, framing of an answer)``:
        pinus tcp frames, REQUEST, ``(type, payload)``, a RESPONSE frame."""
        pinus = acceptor.core.pinus_tcp
        return (pinus.PinusDecoder(acceptor.pkg_size), pinus.REQUEST, 1,
                pinus.encode_response)

    def start_idle_timer(self) -> None:
        """Check for silence every ``pinus_idle_timeout`` s from now."""
        if self.idle and self.loop is not None:
            self.idle_timer = self.loop.call_later(self.idle, self.idle_check)

    def idle_check(self) -> None:
        """Close the connection if it sent nothing since the last check."""
        self.idle_timer = None
        if self.transport is None:
            return
        if self.heard:
            self.heard = False
            self.start_idle_timer()
            return
        log.info("closing connection from %s: nothing received for %g s",
                 self.owner._peer, self.idle)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; calls still running are cancelled."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        super().connection_lost(exc)

    def on_packet(self, packet: Any) -> bool:
        """A frame other than a REQUEST: a PING is answered with a PONG; a PONG or a
        RESPONSE from a client needs nothing."""
        if packet[0] == self.kinds[1]:
            self.respond_pong()
        else:
            log.debug("ignoring a pinus tcp frame of type %s from %s", packet[0],
                      self.owner._peer)
        return True


class _PinusTcpConnection(_MqttConnection):
    """One client connection of the pinus-tcp acceptor."""

    _acceptor: PinusTcpAcceptor
    _protocol: PinusTcpProtocol

    def _make_protocol(self) -> PinusTcpProtocol:
        cls = protocol_class(self._acceptor.core, PinusTcpProtocol)
        protocol: PinusTcpProtocol = cls(self, self._acceptor)  # type: ignore[assignment]
        return protocol

    def _start(self) -> None:
        """No handshake: the idle check starts."""
        self._protocol.start_idle_timer()


class PinusTcpAcceptor(MqttAcceptor):
    """Serves pinus-rpc's tcp transport (varint-framed JSON)."""

    connection_class = _PinusTcpConnection
    name = "pinus-tcp acceptor"

    def __init__(self, opts: dict[str, Any], dispatcher: Dispatcher, core: Core) -> None:
        check_no_auth_token(opts)
        super().__init__(opts, dispatcher, core)
        self.pinus_idle_timeout: float | None = opts["pinus_idle_timeout"]
