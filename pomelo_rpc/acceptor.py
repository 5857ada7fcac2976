"""The native acceptor: a TCP listener and the lifecycle of its connections (admission,
the auth_token handshake, the overload queue, the idle close, the graceful stop). What a connection
does with each read (decode, admit, dispatch, answer, coalesced writes) is the core's
``ServerProtocol`` (``pomelo_rpc/core/server_protocol.py``), which each connection holds."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from .core.writer import set_nodelay, set_user_timeout
from .errors import FrameError
from .options import SERVER_DEFAULTS
from .overload import Entry, Overload
from .security import (RateLimitedLog, check_auth, new_nonce, parse_allow, peer_allowed,
                       server_proof, token_bytes, warn_if_exposed)
from .observe import observe_acceptor

if TYPE_CHECKING:
    from .core import Core
    from .core.dispatch import Dispatcher
    from .core.frames import FrameDecoder
    from .core.mqtt import MqttDecoder
    from .core.server_protocol import ServerProtocol as ServerProtocolLike

log = logging.getLogger("pomelo_rpc.acceptor")

#: Connections the kernel may hold waiting for ``accept`` (capped by net.core.somaxconn);
#: asyncio's default of 100 drops SYNs, and so stalls connects for 1 s, under a storm.
LISTEN_BACKLOG = 4096

#: Largest frame a connection may send before it has proven its auth_token (an AUTH
#: frame is about 80 bytes): an unauthenticated peer cannot make the server buffer more.
HANDSHAKE_MAX_FRAME = 256


class ServerConnection:
    """One client connection of an acceptor, what every transport shares: admission
    (``allow``, ``max_connections``), the auth_token handshake's deadline, the overload
    queue, and the graceful stop.

    The hot path is its protocol (``_protocol``, a core's ``ServerProtocol`` or a
    subclass of it): what asyncio calls, what decodes, runs and answers the requests.
    It calls back here for what is not a request: ``_connection_made``,
    ``_connection_lost``, ``_on_handshake``, ``_refuse`` and ``_abort``. A transport
    subclasses this with ``_make_protocol`` and, for its handshake, ``_start`` and
    ``_on_handshake``.
    """

    def __init__(self, acceptor: BaseAcceptor) -> None:
        self._acceptor = acceptor
        # overload (pomelo_rpc.overload): the acceptor's; requests waiting for a later turn
        self._overload: Overload = acceptor.overload
        self._queue: deque[Entry] = deque()
        self._transport: asyncio.Transport | None = None
        self._peer: Any = None        # the transport's peername (its type depends on the family)
        self._refused = 0             # requests received after the stop began, not run
        # the idle sweep (``BaseAcceptor._sweep``): the protocol's read count at the last
        # sweep, and the sweep time since which it has not changed
        self._seen_reads = 0
        self._quiet_since = 0.0
        # auth_token: the handshake's deadline and a small decoder of its frames, until
        # the peer has proven the token (both None then, and without a token)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._handshake_decoder: FrameDecoder | MqttDecoder | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._protocol: ServerProtocolLike = self._make_protocol()
        self._protocol.coalescer = acceptor.coalescer
        #: what asyncio talks to: the protocol, or the observer's byte-counting wrapper
        self.protocol: asyncio.BaseProtocol = cast("asyncio.BaseProtocol", self._protocol)
        # metrics, tracing, rpc_debug_log: the acceptor's observer replaces the
        # protocol's ``dispatch`` (and counts bytes)
        if acceptor.observer is not None:
            acceptor.observer.attach(self)

    def _make_protocol(self) -> ServerProtocolLike:
        """The protocol of this connection (each transport makes its own)."""
        raise NotImplementedError

    # called by the protocol ----------------------------------------------

    def _connection_made(self, transport: asyncio.Transport) -> None:
        """A client connected (after the TLS handshake, with ssl): refused if ``allow``
        or ``max_connections`` say so, else TCP_NODELAY on and ``_start``."""
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        refusal = self._acceptor.admit(self._peer)
        if refusal is not None:
            self._protocol.aborted = True
            transport.abort()
            return
        set_nodelay(transport)
        set_user_timeout(transport, self._acceptor.tcp_user_timeout)
        self._quiet_since = asyncio.get_running_loop().time()
        self._acceptor.connections.add(self)
        if self._acceptor.auth_token is not None:
            self._handshake_timer = asyncio.get_running_loop().call_later(
                self._acceptor.handshake_timeout, self._handshake_expired)
        self._start()

    def _start(self) -> None:
        """Hook: the connection is admitted; greet the client if the protocol does."""

    def _on_handshake(self, data: bytes) -> None:
        """Hook: bytes read before the auth_token is proven."""

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        self._deny(f"no valid auth_token proof within {self._acceptor.handshake_timeout:g} s")

    def _begin_handshake(self, decoder: FrameDecoder | MqttDecoder) -> None:
        """From now until ``_authenticated``, what is read goes to ``_on_handshake``,
        decoded by ``decoder``."""
        self._handshake_decoder = decoder
        self._protocol.handshaking = True

    def _handshake_feed(self, data: bytes) -> list[Any]:
        """Decode handshake bytes: the messages completed (none while a small one is
        incomplete, the handshake timer running), or none and the connection denied
        when the bytes are not a frame of the protocol."""
        assert self._handshake_decoder is not None
        try:
            return self._handshake_decoder.feed(data)
        except FrameError as exc:
            self._deny(f"bad handshake frame: {exc}")
            return []

    def _authenticated(self) -> None:
        """The peer proved the auth_token: the handshake is over, its deadline off."""
        self._handshake_decoder = None
        self._protocol.handshaking = False
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _deny(self, reason: str, farewell: bytes = b"") -> None:
        """Close an unauthenticated connection (logged, rate-limited): at once and
        without a word, or after ``farewell`` (the protocol's refusal, e.g. a CONNACK)."""
        self._acceptor.refused += 1
        self._acceptor.refusals.warning("auth", "refused connection from %s: %s",
                                        self._peer, reason)
        self._protocol.aborted = True
        if self._transport is not None:
            if farewell:
                self._transport.write(farewell)
                self._transport.close()
            else:
                self._transport.abort()

    def _connection_lost(self, exc: Exception | None) -> None:
        """The connection closed (its protocol has cancelled the calls still running)."""
        self._acceptor.connections.discard(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        buffered = self._buffered()
        if buffered and not self._protocol.aborted:
            log.warning("connection from %s closed in the middle of a frame "
                        "(%d bytes of it dropped)", self._peer, buffered)
        if self._refused:
            log.warning("%d request(s) from %s arrived while the server was stopping and "
                        "were not run; the caller sees the connection close",
                        self._refused, self._peer)
        self._overload.dropped(self)
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def _buffered(self) -> int:
        """Bytes of an incomplete frame the protocol's decoder holds."""
        return self._protocol.decoder.buffered

    def _abort(self, exc: BaseException) -> None:
        """Close the connection at once: the peer sent what this protocol cannot read."""
        log.warning("closing connection from %s: %s", self._peer, exc)
        self._protocol.aborted = True
        if self._transport is not None:
            self._transport.abort()

    def _refuse(self, msgs: list[Any]) -> None:
        """While stopping: answer pings, do not run new requests (their callers see
        the connection close, which a fail mode may retry elsewhere)."""
        protocol = self._protocol
        for msg in msgs:
            if protocol.is_ping(msg):
                protocol.respond_pong()
            else:
                self._refused += 1
        protocol.writer.flush_now()

    def _paused(self) -> None:
        """The peer stopped reading its answers: its protocol stopped reading and
        running its requests until the answers drain (counted: ``acceptor.paused``)."""
        self._acceptor.paused += 1
        log.debug("connection from %s does not read its answers: not reading or running "
                  "its requests until they drain", self._peer)

    def _resumed(self) -> None:
        """The answers drained: the requests waiting in the queue run again."""
        self._overload.unpark(self)

    @property
    def paused(self) -> bool:
        """Reading and running paused: the peer does not read its answers."""
        return bool(self._protocol.reading_paused)

    def _check_idle(self, now: float, idle_timeout: float) -> None:
        """The acceptor's sweep: close the connection once nothing has arrived on it for
        ``idle_timeout`` s (a client that vanished without a FIN, or stopped pinging)."""
        reads = self._protocol.reads
        if reads != self._seen_reads:
            self._seen_reads = reads
            self._quiet_since = now
            return
        transport = self._transport
        if (now - self._quiet_since < idle_timeout or transport is None
                or self._protocol.stopping is not None):
            return
        acceptor = self._acceptor
        acceptor.idle_closed += 1
        acceptor.refusals.warning("idle", "closing connection from %s: nothing received for "
                                  "%.0f s (idle_timeout)", self._peer, now - self._quiet_since)
        self._protocol.aborted = True
        if transport.get_write_buffer_size():   # a peer that is gone reads nothing more
            transport.abort()
        else:
            transport.close()

    # called by the overload runner ------------------------------------------

    def _run_entry(self, entry: Entry, now: float | None = None) -> None:
        """Run a queued request (see ``ServerProtocol.run_entry``)."""
        self._protocol.run_entry(entry, now)

    def _turn_done(self) -> None:
        """The overload runner ran requests of this connection: send their answers."""
        self._protocol.writer.flush()

    # state -----------------------------------------------------------------

    @property
    def running(self) -> int:
        """Calls of this connection running as coroutines."""
        return len(self._protocol.tasks)

    # closing -----------------------------------------------------------

    def _before_close(self) -> None:
        """Hook: send what the transport still holds (e.g. a batch) before the close."""

    async def drain_and_close(self, grace: float) -> None:
        """Stop: answer the calls already received, then close.

        Calls still running after ``grace`` s are cancelled and answered with an
        error; requests that arrive meanwhile are not run. The answers are followed
        by a FIN (the peer sees the close after the last answer); a peer that does
        not close its side within 2 s is cut. Takes at most about ``grace`` + 3 s.
        """
        protocol = self._protocol
        protocol.stopping = grace
        while self._queue and self._transport is not None:   # received: run them first
            await asyncio.sleep(0.001)
        if protocol.tasks:
            _done, late = await asyncio.wait(set(protocol.tasks), timeout=grace)
            if late:
                log.warning("stopping: cancelling %d call(s) from %s still running after "
                            "the %g s grace", len(late), self._peer, grace)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)
        self._before_close()
        protocol.writer.flush_now()
        transport = self._transport
        if transport is None:
            return
        if protocol.reading_paused:       # keep reading so the peer's close is seen
            protocol.resume_writing()
        try:
            if transport.can_write_eof():
                protocol.writer.closed = True
                transport.write_eof()
            else:
                transport.close()
        except (OSError, RuntimeError):
            transport.abort()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout=2.0)
        except asyncio.TimeoutError:
            if self._transport is not None:
                self._transport.abort()


class _NativeConnection(ServerConnection):
    """One client connection of the native acceptor."""

    def __init__(self, acceptor: BaseAcceptor) -> None:
        self._frames = acceptor.core.frames
        self._nonce = b""         # auth_token: this connection's challenge
        super().__init__(acceptor)

    def _make_protocol(self) -> ServerProtocolLike:
        acceptor = self._acceptor
        protocol: ServerProtocolLike = acceptor.core.server_protocol.ServerProtocol(
            self, acceptor.dispatcher, acceptor.overload, acceptor.pkg_size)
        return protocol

    def _start(self) -> None:
        """Send the method table (HELLO), or with an auth_token the challenge first."""
        assert self._transport is not None
        if self._acceptor.auth_token is None:
            self._protocol.writer.direct(self._frames.encode_hello(self._acceptor.dispatcher.table))
            return
        self._nonce = new_nonce()
        self._begin_handshake(self._frames.FrameDecoder(HANDSHAKE_MAX_FRAME))
        self._protocol.writer.direct(self._frames.encode_challenge(self._nonce))

    def _on_handshake(self, data: bytes) -> None:
        """Before the auth_token is proven: the first frame must be a right AUTH, alone;
        anything else closes the connection unanswered."""
        token = self._acceptor.auth_token
        decoder = self._handshake_decoder
        msgs = self._handshake_feed(data)
        if not msgs:
            return
        assert token is not None and decoder is not None and self._transport is not None
        client_nonce = None
        if len(msgs) == 1 and not decoder.buffered:
            client_nonce = check_auth(msgs[0], token, self._frames.AUTH, self._nonce)
        if client_nonce is None:
            self._deny("wrong auth_token proof, or a frame other than AUTH first")
            return
        self._authenticated()
        self._protocol.writer.direct(
            self._frames.encode_auth_ok(server_proof(token, self._nonce, client_nonce))
            + self._frames.encode_hello(self._acceptor.dispatcher.table))

    def send_hello(self, frame: bytes) -> None:
        """Send a new HELLO (the method table grew: ``reload_remotes``), after the
        answers already queued; the client takes the new ids from it. A connection
        still proving its auth_token gets none (it gets the table once proven)."""
        self._protocol.send_hello(frame)


class BaseAcceptor:
    """Listens on a TCP port; each connection is a ``connection_class(self)``."""

    # set by each transport's acceptor (None here: BaseAcceptor is not used as it is)
    connection_class: type[ServerConnection] = None  # type: ignore[assignment]
    name = "acceptor"

    def __init__(self, opts: dict[str, Any], dispatcher: Dispatcher, core: Core) -> None:
        self.dispatcher = dispatcher
        self.core = core
        self.opts = opts
        self.pkg_size: int = opts["pkg_size"]
        self.connections: set[ServerConnection] = set()
        self.accepted = 0          # connections accepted since listen
        self._server: asyncio.Server | None = None
        # deadlines, admission, fairness (docs/overload.md): see pomelo_rpc.overload
        self.overload = Overload(opts, core)
        self.observer = observe_acceptor(self)   # metrics, tracing, rpc_debug_log; or None
        # security (docs/security.md): see the options of the same names
        self.ssl = opts.get("ssl")
        self.auth_token = token_bytes(opts.get("auth_token"))
        self.allow = parse_allow(opts.get("allow"))
        self.max_connections: int | None = opts.get("max_connections")
        self.handshake_timeout: float = opts.get("handshake_timeout",
                                                 SERVER_DEFAULTS["handshake_timeout"])
        self.refused = 0           # connections refused: allow, max_connections, auth_token
        self.refusals = RateLimitedLog(log)
        # liveness (docs/liveness.md): see the options of the same names
        self.tcp_user_timeout: float = opts.get("tcp_user_timeout",
                                                SERVER_DEFAULTS["tcp_user_timeout"])
        self.idle_timeout: float = opts.get("idle_timeout", SERVER_DEFAULTS["idle_timeout"])
        self.idle_closed = 0       # connections closed for idleness
        self.paused = 0            # times a connection stopped reading: its peer did not read
        # read_coalesce (docs/backend-servers.md): the connections' held reads, or None
        window: float = opts.get("read_coalesce") or 0.0
        self.coalescer = core.server_protocol.ReadCoalescer(window) if window else None
        self._sweep_handle: asyncio.TimerHandle | None = None

    def admit(self, peer: Any) -> str | None:
        """Why a new connection from ``peer`` is refused (logged, rate-limited), or None."""
        if self.allow is not None and not peer_allowed(self.allow, peer):
            kind, reason = "allow", "not in the allow list"
        elif self.max_connections is not None and len(self.connections) >= self.max_connections:
            kind, reason = "max", f"max_connections ({self.max_connections}) reached"
        else:
            return None
        self.refused += 1
        self.refusals.warning(kind, "refused connection from %s: %s", peer, reason)
        return reason

    @property
    def port(self) -> int | None:
        """The bound port (after ``listen``)."""
        return self._server.sockets[0].getsockname()[1] if self._server else None

    def _new_connection(self) -> asyncio.BaseProtocol:
        self.accepted += 1
        return self.connection_class(self).protocol

    def methods_changed(self) -> None:
        """The dispatcher's methods were replaced (``reload_remotes``) and new method
        ids were given: tell the connected clients, if the protocol has a way to."""

    async def listen(self, host: str, port: int) -> None:
        """Start listening."""
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.ssl is not None:
            tls = {"ssl": self.ssl, "ssl_handshake_timeout": self.handshake_timeout}
        self._server = await loop.create_server(self._new_connection, host, port,
                                                reuse_address=True, backlog=LISTEN_BACKLOG,
                                                **tls)
        if self.idle_timeout:
            self._sweep_handle = loop.call_later(self._sweep_period(), self._sweep)
        warn_if_exposed(log, host, self.opts)
        log.info("%s listening on %s:%s%s", self.name, host, self.port,
                 " (TLS)" if self.ssl is not None else "")

    def _sweep_period(self) -> float:
        return max(self.idle_timeout / 4, 0.01)

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_timeout`` s; every quarter of it."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            conn._check_idle(now, self.idle_timeout)
        self._sweep_handle = loop.call_later(self._sweep_period(), self._sweep)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, answer the calls already received (up to ``grace`` s), close."""
        if self._server is None:
            return
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self._server.close()
        if self.coalescer is not None:      # held reads read again: the stop sees all
            self.coalescer.close()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.drain_and_close(grace) for c in conns))
        if self.coalescer is not None:      # a hold begun before the drains began
            self.coalescer.close()
        await self._server.wait_closed()
        self._server = None
        self.overload.close()


class NativeAcceptor(BaseAcceptor):
    """Serves the native protocol (length-prefixed msgpack frames)."""

    connection_class = _NativeConnection
    name = "native acceptor"

    def methods_changed(self) -> None:
        """Send the new method table (HELLO) to every connected client."""
        frame = self.core.frames.encode_hello(self.dispatcher.table)
        for conn in list(self.connections):
            if isinstance(conn, _NativeConnection):
                conn.send_hello(frame)
