"""Mailboxes: the client's connection to one remote server.

``Mailbox`` keeps the lifecycle every transport shares: lazy connect, the bounded
queue of calls made while connecting, liveness (``check_liveness``: pings under load
and while idle, a silent connection declared dead, run by the station's watchdog,
``pomelo_rpc.liveness``), and failing every call at once when the connection is
lost. It holds a protocol object of the core
(``pomelo_rpc.core.client_protocol``) that owns the hot path: the request table and
its deadline timer, encoding, decoding and the coalesced writes; the protocol is
what asyncio calls. ``NativeMailbox`` holds the native protocol; a transport
subclasses ``Mailbox`` with ``_make_protocol``, ``_open`` and ``_close_transport``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .core.client_protocol import call_route
from .core.writer import set_user_timeout
from .deadline import current_deadline
from .errors import (AuthenticationError, ConnectionLostError, FrameError,
                     PendingQueueFullError, RpcTimeoutError)
from .security import (challenge_nonce, check_auth_ok, client_proof, new_nonce,
                       token_bytes)
from .observe import observe_mailbox

if TYPE_CHECKING:
    from .core import Core
    from .core.client_protocol import ClientProtocol, NativeClientProtocol

log = logging.getLogger("pomelo_rpc.mailbox")

IDLE, CONNECTING, OPEN, CLOSED = "idle", "connecting", "open", "closed"

INF = float("inf")

__all__ = ["Mailbox", "NativeMailbox", "call_route"]


class Mailbox:
    """Base of the transports' mailboxes; see the module docstring."""

    def __init__(self, server_info: dict[str, Any], opts: dict[str, Any], core: Core) -> None:
        self.server_info = server_info
        self.server_id: str = server_info["id"]
        self.host: str = server_info.get("host") or "127.0.0.1"
        self.port: int = server_info["port"]
        self.core = core
        self.state = IDLE
        # callable(mailbox), set by the station: the mailbox closed; its state changed
        # (connecting, open)
        self.on_close: Callable[[Mailbox], None] | None = None
        self.on_state: Callable[[Mailbox], None] | None = None
        self.close_reason: str | None = None      # why the mailbox closed, once it has
        #: what closed it, when its server is to be taken as down (the station's health
        #: reads it): "connect" (the connection could not be opened), "dead" (declared
        #: dead: silent under load, or past keepalive), "lost" (closed with calls in
        #: flight); None when it closed otherwise
        self.failure: str | None = None
        self._close_error: type[ConnectionLostError] = ConnectionLostError  # and its error
        self._pkg_size: int = opts["pkg_size"]
        self._pending_size: int = opts["pending_size"]
        self._connect_timeout: float = opts["connect_timeout"]
        # liveness (see ``check_liveness``)
        self._keepalive: float = opts["keepalive"]
        self._liveness_interval: float = opts["liveness_interval"]
        self._liveness_timeout: float = opts["liveness_timeout"]
        self._tcp_user_timeout: float = opts["tcp_user_timeout"]
        self._ping_at = 0.0              # loop time of the last ping sent
        self._busy_since: float | None = None   # first tick that saw calls in flight
        self._connect_at = 0.0           # loop time the connection began to open
        #: connecting for ``liveness_interval`` s or more (routers skip the server)
        self.slow = False
        #: the server answers pings (a peer that does not, e.g. a custom mqtt server,
        #: cannot be told dead from slow: its connection is never declared dead)
        self.pings_answered = True
        #: not known yet whether it does (mqtt: its first PINGREQ is unanswered so far):
        #: silence under load counts as death only after ``connect_timeout``
        self._ping_check = False
        self._pong_waiters: list[asyncio.Future[None]] = []
        # security (docs/security.md): TLS for create_connection, the shared secret
        self._tls: dict[str, Any] = {}
        if opts.get("ssl") is not None:
            self._tls = {"ssl": opts["ssl"], "server_hostname": opts.get("server_hostname")}
        self._auth_token = token_bytes(opts.get("auth_token"))
        #: the connection's protocol (the core's): the calls, their deadlines, the bytes
        #: in and out; ``send`` is its ``send``
        self.protocol: ClientProtocol = self._make_protocol(opts)
        #: where the client's call path sends calls (and notifies) without this mailbox's
        #: ``send`` (``notify``): its protocol, as long as they are the protocol's (None
        #: once an observer, or a subclass, puts its own in the way)
        self.direct: ClientProtocol | None = (
            self.protocol if type(self).send is Mailbox.send
            and type(self).notify is Mailbox.notify else None)
        #: ... and notifies (None once an observer puts its own ``notify`` in the way,
        #: while calls may still go to the protocol: metrics count them there)
        self.notify_direct: ClientProtocol | None = self.direct
        # (rid, msg, deadline or None) of calls made while connecting
        self._waiting: list[tuple[int, dict[str, Any], float | None]] = []
        # None until the first send or connect sets it; nothing reads it before that
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._transport: asyncio.Transport | None = None
        self._connect_task: asyncio.Task[None] | None = None
        # rpc_debug_log, tracing, metrics: ``observe_mailbox`` gives the protocol a meter,
        # wraps ``send`` (and sets ``_trace_prefix`` when a trace context travels with
        # each request) and may set ``_on_connect`` (called as each connection opens);
        # off, nothing
        self._trace_prefix: str | None = None
        self._on_connect: Callable[[], None] | None = None
        if opts.get("rpc_debug_log") or opts.get("tracing") or opts.get("metrics"):
            observe_mailbox(self, opts)
            self.protocol.traced = self._trace_prefix is not None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.server_id} {self.host}:{self.port} {self.state}>"

    @property
    def in_flight(self) -> int:
        """Calls sent or queued and not yet answered."""
        return len(self.protocol.table)

    @property
    def waiting(self) -> int:
        """Calls queued while the connection opens."""
        return len(self._waiting)

    # calls -------------------------------------------------------------

    def send(self, msg: dict[str, Any], timeout: float | None = None) -> asyncio.Future[Any]:
        """Send call ``msg`` (namespace, service, method, args); return a future of the result.

        ``timeout`` (None or 0: none) is bounded by what is left of the deadline of the
        call being served, when a handler makes this call; the server is told the
        budget left (native frame field, mqtt JSON field ``budget``) as it is sent."""
        return self.protocol.send(msg, timeout)

    def notify(self, msg: dict[str, Any], timeout: float | None = None) -> asyncio.Future[Any]:
        """Send notify ``msg`` (a one-way call: no answer is awaited); a future done once
        it is written, failed if it cannot be (connection lost before the write, or
        none could be opened). ``timeout``: the budget the server runs it under."""
        return self.protocol.notify(msg, timeout)

    def _notify_later(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """A notify while the connection is not open (the protocol hands it here): sent
        once it is open (the first starts connecting)."""
        if self.state == CLOSED:
            raise ConnectionLostError(f"connection to {self.server_id} is closed")
        return asyncio.ensure_future(self._notify_when_open(msg, timeout))

    async def _notify_when_open(self, msg: dict[str, Any], timeout: float | None) -> None:
        deadline = None if not timeout else time.monotonic() + timeout
        await self.connect()
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise RpcTimeoutError(f"{call_route(msg)} to {self.server_id}: the notify "
                                      f"expired while the connection opened; not sent")
        await self.protocol.notify(msg, timeout)

    def _send_later(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """A call while the connection is not open (the protocol hands it here): it
        waits for the connection (a bounded queue), and the first starts connecting."""
        state = self.state
        if state == CLOSED:
            raise ConnectionLostError(f"connection to {self.server_id} is closed")
        if self._loop is None:
            self._loop = self.protocol.loop = asyncio.get_running_loop()
        waiting = self._waiting
        table = self.protocol.table
        if len(waiting) >= self._pending_size and len(table) < len(waiting):
            # calls whose deadline passed while they waited make room (never sent); until
            # the connection opens, every call of the table is one of the waiting
            self._waiting = waiting = [w for w in waiting if w[0] in table]
        if len(waiting) >= self._pending_size:
            raise PendingQueueFullError(
                f"{len(waiting)} calls already wait for the connection to "
                f"{self.server_id} (pending_size={self._pending_size})")
        fut, rid, deadline = self.protocol.add(msg, timeout)
        waiting.append((rid, msg, deadline))
        if state == IDLE:
            self._begin_connect()
        return fut

    def _inherit(self, msg: dict[str, Any], timeout: float | None) -> float:
        """``timeout`` bounded by the deadline of the call being served; RpcTimeoutError
        at once when that deadline has passed (nothing is sent)."""
        deadline = current_deadline.get()
        assert deadline is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise RpcTimeoutError(f"{call_route(msg)} to {self.server_id}: the deadline of "
                                  f"the call being served has passed")
        return left if not timeout or left < timeout else timeout

    # connection --------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now instead of on the first call."""
        if self.state == IDLE:
            self._loop = self.protocol.loop = asyncio.get_running_loop()
            self._begin_connect()
        if self._connect_task is not None:
            await asyncio.shield(self._connect_task)
        if self.state != OPEN:
            raise self._close_error(self.close_reason or f"cannot connect to {self.server_id}")

    def _begin_connect(self) -> None:
        self.state = CONNECTING
        self._connect_at = self._loop.time()
        self._connect_task = self._loop.create_task(self._connect())
        if self.on_state is not None:
            self.on_state(self)

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(self._open(), self._connect_timeout)
        except Exception as exc:
            self._connect_task = None     # so that _fail does not cancel this very task
            if self.state != CLOSED:
                if isinstance(exc, asyncio.TimeoutError):
                    reason = "timed out" + (self._silence_hint
                                            if self.protocol.last_recv == 0.0
                                            and self._transport is not None else "")
                else:
                    reason = str(exc) or repr(exc)
                refused = isinstance(exc, (AuthenticationError, ssl.SSLError))
                if not refused:      # (a refusal says nothing of the server's health)
                    self.failure = "connect"
                self._fail(f"cannot connect to {self.server_id} at {self.host}:{self.port}: "
                           f"{'TLS: ' if isinstance(exc, ssl.SSLError) else ''}{reason}",
                           AuthenticationError if refused else ConnectionLostError)
            return
        finally:
            self._connect_task = None
        if self.state != CONNECTING:
            return
        self.state = OPEN
        self.protocol.open = True
        self.protocol.last_recv = self._loop.time()
        if self.on_state is not None:
            self.on_state(self)       # the station's watchdog checks it from now on
        waiting, self._waiting = self._waiting, []
        protocol = self.protocol
        table = protocol.table
        for rid, msg, deadline in waiting:
            if rid in table:
                protocol.send_queued(rid, msg, deadline)

    def check_liveness(self, now: float, stalled: bool) -> float | None:
        """The station's watchdog (``pomelo_rpc.liveness``): the loop time this mailbox
        wants its next check at (``INF``: none), or None once it is no longer open.

        With calls in flight (or a ping unanswered): silent for ``liveness_interval`` s,
        it pings; silent for ``liveness_timeout`` s, it is declared dead (closed, its
        calls failed with ConnectionLostError, its server taken as down). With
        ``keepalive``, silent for that long it pings, for twice that it is dead, idle
        or not. Silence counts from the last byte received, or from the tick that first
        saw the calls in flight. ``stalled``: this loop ran the check late (it was
        blocked), so what arrived meanwhile may be unread: nothing is declared dead."""
        if self.state != OPEN:
            return self._check_connect(now, stalled) if self.state == CONNECTING else None
        if not self.pings_answered:
            return INF
        protocol = self.protocol
        last = protocol.last_recv
        busy = len(protocol.table) > 0 or self._ping_at > last
        keepalive = self._keepalive
        ping_after = keepalive
        dead_after = 2 * keepalive
        if busy:
            if self._busy_since is None or stalled:
                self._busy_since = now
            ref = max(last, self._busy_since)
            if self._liveness_timeout:
                if not ping_after or self._liveness_interval < ping_after:
                    ping_after = self._liveness_interval
                if not dead_after or self._liveness_timeout < dead_after:
                    dead_after = self._liveness_timeout
            if self._ping_check and dead_after and dead_after < self._connect_timeout:
                dead_after = self._connect_timeout
        else:
            self._busy_since = None
            ref = last
        silence = now - ref
        if dead_after and silence >= dead_after and not stalled:
            why = (f"nothing received for {silence:.1f} s with {len(protocol.table)} call(s) "
                   f"in flight" if busy else f"nothing received for {silence:.1f} s")
            if self._ping_at > last:
                why += " and a ping unanswered"
            self._declare_dead(why + (f" (keepalive {keepalive:g} s)" if dead_after == 2 * keepalive
                                      else f" (liveness_timeout {dead_after:g} s)"))
            return None
        if ping_after and silence >= ping_after and self._ping_at <= last:
            self._ping_now(now)
        wake = ref + dead_after if dead_after else INF
        if ping_after and self._ping_at <= last and ref + ping_after < wake:
            wake = ref + ping_after
        return wake

    def _check_connect(self, now: float, stalled: bool) -> float:
        """``check_liveness`` while connecting: slow after ``liveness_interval`` s (the
        load-spreading routers skip its server); with calls waiting, dead after
        ``liveness_timeout`` s, like a silent open connection (the calls fail now, and
        the server is down: probes go on connecting in the background)."""
        waited = now - self._connect_at
        interval = self._liveness_interval
        timeout = self._liveness_timeout
        if not timeout:
            return INF
        if waited >= interval and not self.slow:
            self.slow = True
            if self.on_state is not None:
                self.on_state(self)
        if waited >= timeout and self._waiting and not stalled:
            self.failure = "connect"
            log.warning("connection to %s not open after %.1f s with %d call(s) waiting",
                        self.server_id, waited, len(self._waiting))
            self._fail(f"cannot connect to {self.server_id} at {self.host}:{self.port}: "
                       f"not open after {waited:.1f} s (liveness_timeout {timeout:g} s)")
            return INF
        return self._connect_at + (timeout if self.slow else interval)

    def _ping_now(self, now: float) -> None:
        self._ping_at = now
        self.protocol.send_ping()

    def _declare_dead(self, why: str) -> None:
        """Close the connection as dead: its calls fail at once, its server is down."""
        log.warning("connection to %s declared dead: %s", self.server_id, why)
        self.failure = "dead"
        self._fail(f"connection to {self.server_id} declared dead: {why}")

    async def ping(self, timeout: float) -> None:
        """Ping the server over the open connection and wait for its answer, at most
        ``timeout`` s (ConnectionLostError without one): the server's loop is alive."""
        if self.state != OPEN:
            raise self._close_error(self.close_reason or f"connection to {self.server_id} "
                                    f"is not open")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pong_waiters.append(fut)
        self._ping_now(self._loop.time())
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise ConnectionLostError(f"{self.server_id} did not answer a ping within "
                                      f"{timeout:g} s") from None
        finally:
            if fut in self._pong_waiters:
                self._pong_waiters.remove(fut)

    def _pong(self) -> None:
        """The server answered a ping."""
        waiters, self._pong_waiters = self._pong_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _fail(self, reason: str, error: type[ConnectionLostError] = ConnectionLostError) -> None:
        """Close for good: every call in flight or queued fails now with ``error(reason)``."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.protocol.open = False
        self.close_reason = reason
        self._close_error = error
        log.info("mailbox %s closed: %s", self.server_id, reason)
        self._waiting.clear()
        waiters, self._pong_waiters = self._pong_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error(reason))
        self.protocol.fail_all(error, reason)
        if self._connect_task is not None:
            self._connect_task.cancel()
        self._close_transport()
        if self.on_close is not None:
            self.on_close(self)

    def abort(self, reason: str = "mailbox closed") -> None:
        """Close now; calls in flight or queued fail with ConnectionLostError(reason)."""
        self._fail(reason)

    async def close(self, reason: str = "mailbox closed") -> None:
        """Close the connection; calls still in flight fail with ConnectionLostError."""
        self._fail(reason)

    # the protocol's callbacks ------------------------------------------

    def _connection_made(self, transport: asyncio.Transport) -> None:
        """The protocol connected."""
        self._transport = transport

    def _connection_lost(self, exc: Exception | None) -> None:
        """The protocol's connection closed: every call in flight fails."""
        self._transport = None
        self._lost_with_calls()
        self._fail(f"connection to {self.server_id} lost" + (f": {exc}" if exc else ""))

    def _lost_with_calls(self) -> None:
        """The open connection closed under calls in flight: its server is taken as
        down (an idle connection that closes, e.g. a server's idle close, is not)."""
        if self.state == OPEN and len(self.protocol.table):
            self.failure = "lost"

    def _bad_data(self, exc: Exception) -> None:
        """The server sent what the protocol cannot read: close."""
        log.warning("bad data from %s, closing: %r", self.server_id, exc)
        self._fail(f"bad data from {self.server_id}: {exc}")

    # transport hooks ---------------------------------------------------

    def _make_protocol(self, opts: dict[str, Any]) -> ClientProtocol:
        """The transport's protocol object for this mailbox."""
        raise NotImplementedError

    async def _open(self) -> None:
        raise NotImplementedError

    #: Added to "timed out" when the connection opened but the server sent nothing.
    _silence_hint = " (connected, but the server sent nothing)"

    async def _create_connection(self) -> None:
        """Connect the protocol to the server, over TLS with the ``ssl`` option."""
        protocol: Any = self.protocol
        transport, _ = await self._loop.create_connection(lambda: protocol, self.host,
                                                          self.port, **self._tls)
        set_user_timeout(transport, self._tcp_user_timeout)
        if self._on_connect is not None:          # metrics: count the reconnects
            self._on_connect()

    def _auth_failed(self, reason: str) -> None:
        """The handshake proved the server or this client wrong: close with
        AuthenticationError (what a call or ``connect`` raises)."""
        log.warning("%s: %s", self.server_id, reason)
        self._fail(f"cannot connect to {self.server_id} at {self.host}:{self.port}: {reason}",
                   AuthenticationError)

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()


class NativeMailbox(Mailbox):
    """Mailbox speaking the native protocol (length-prefixed msgpack frames)."""

    protocol: NativeClientProtocol
    _silence_hint = (" (connected, but the server sent no greeting: a TLS server needs ssl=, "
                     "or it is not a pomelo_rpc native server)")

    def __init__(self, server_info: dict[str, Any], opts: dict[str, Any], core: Core) -> None:
        super().__init__(server_info, opts, core)
        self._frames = core.frames
        self._hello: asyncio.Future[None] | None = None
        # auth_token handshake: the nonces of this connection; proven once AUTH_OK checked
        self._server_nonce = self._client_nonce = b""
        self._server_proven = False

    def _make_protocol(self, opts: dict[str, Any]) -> NativeClientProtocol:
        protocol: NativeClientProtocol = self.core.client_protocol.NativeClientProtocol(
            self, self.server_id, self._pkg_size)
        return protocol

    async def _open(self) -> None:
        self._hello = self._loop.create_future()
        await self._create_connection()
        await self._hello

    def _connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._hello is not None and not self._hello.done():
            if self._client_nonce and not self._server_proven:
                # the server closed on this client's proof: the tokens differ
                self._refuse_server("the server closed the connection on this client's "
                                    "auth_token proof: the tokens differ")
                return
            reason = ("the server closed the connection before its greeting"
                      + (f": {exc}" if exc else "")
                      + (" (with TLS, how a server requiring client certificates refuses a "
                         "client without a trusted one)" if self._tls else ""))
            self._hello.set_exception(ConnectionLostError(reason))
            self._fail(f"cannot connect to {self.server_id} at {self.host}:{self.port}: {reason}")
            return
        super()._connection_lost(exc)

    def _on_control(self, msg: list[Any]) -> None:
        """A frame that answers no call: HELLO, or a handshake frame."""
        kind = msg[0]
        frames = self._frames
        if kind == frames.PONG:
            self._pong()
        elif kind == frames.HELLO:
            self._on_hello(msg)
        elif kind == frames.CHALLENGE or kind == frames.AUTH_OK:
            self._on_handshake(msg)
        else:
            raise FrameError(f"unexpected message kind {kind!r}")

    def _on_handshake(self, msg: list[Any]) -> None:
        """CHALLENGE: answer with the proof of the auth_token; AUTH_OK: check the
        server's proof. Either at any other time, or wrong, closes the connection."""
        if self._hello is None or self._hello.done() or self._transport is None:
            raise FrameError(f"unexpected handshake message kind {msg[0]!r}")
        token = self._auth_token
        if msg[0] == self._frames.CHALLENGE:
            nonce = challenge_nonce(msg)
            if token is None:
                self._refuse_server("the server requires an auth_token; none is set")
            elif nonce is None or self._server_nonce:
                raise FrameError(f"malformed or repeated challenge: {msg!r:.80}")
            else:
                self._server_nonce, self._client_nonce = nonce, new_nonce()
                self.protocol.writer.direct(self._frames.encode_auth(
                    client_proof(token, nonce, self._client_nonce), self._client_nonce))
        elif token is None or not self._server_nonce or not check_auth_ok(
                msg, token, self._server_nonce, self._client_nonce):
            self._refuse_server("the server's auth_token proof is wrong")
        else:
            self._server_proven = True

    def _refuse_server(self, reason: str) -> None:
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(AuthenticationError(reason))
        self._auth_failed(reason)

    def _on_hello(self, msg: list[Any]) -> None:
        """The server's method table: at connect, and again on the open connection when
        a server with ``reload_remotes`` gained methods (ids already known never change,
        so calls in flight are unaffected)."""
        if self._auth_token is not None and not self._server_proven:
            self._refuse_server("the server sent its method table without proving the "
                                "auth_token (it has none, or is not the server expected)")
            return
        self.protocol.ids = {tuple(entry): mid for mid, entry in enumerate(msg[2])}
        if self._hello is not None and not self._hello.done():
            self._hello.set_result(None)
