"""The native acceptor: a TCP listener whose connections decode requests, dispatch
them and send the responses back, coalescing the writes of one loop turn."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .deadline import current_deadline
from .errors import DispatchError, FrameError, ServerBusyError
from .options import SERVER_DEFAULTS
from .overload import BadBudget, Entry, Overload, clock
from .security import (RateLimitedLog, check_auth, new_nonce, parse_allow, peer_allowed,
                       server_proof, token_bytes, warn_if_exposed)
from .observe import observe_acceptor

if TYPE_CHECKING:
    from .core import Core, DispatcherLike, FrameDecoderLike, MqttDecoderLike

log = logging.getLogger("pomelo_rpc.acceptor")

#: Messages queued in one loop turn are written every WRITE_CHUNK of them, not all at
#: the end: the peer starts on the first ones while the rest are being made (with 100
#: calls in flight, writing a whole turn's messages at once left client and server
#: taking turns, each idle while the other worked).
WRITE_CHUNK = 32

#: Connections the kernel may hold waiting for ``accept`` (capped by net.core.somaxconn);
#: asyncio's default of 100 drops SYNs, and so stalls connects for 1 s, under a storm.
LISTEN_BACKLOG = 4096

#: Largest frame a connection may send before it has proven its auth_token (an AUTH
#: frame is about 80 bytes): an unauthenticated peer cannot make the server buffer more.
HANDSHAKE_MAX_FRAME = 256


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on the transport's socket (no 40 ms stalls)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """``(type_name, message, stack)`` of an exception, as sent to the caller."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return type(exc).__name__, str(exc), stack


class ServerConnection(asyncio.Protocol):
    """What every acceptor's connection shares: answers coalesced per loop turn, the
    calls running for it, read backpressure, and the graceful stop.

    A transport subclasses it with ``data_received`` (decode, then ``_dispatch_request``
    or its own handling), ``_encode_result(rid, result)`` and ``_encode_failure(rid,
    exc)`` (each returns the bytes of one answer), and ``_is_ping(msg)``.
    """

    def __init__(self, acceptor: BaseAcceptor) -> None:
        self._acceptor = acceptor
        dispatch = acceptor.core.dispatch
        self._dispatch: Callable[[object], tuple[int, int, Any]] = acceptor.dispatcher.dispatch
        self._done_state = dispatch.DONE
        self._pending_state = dispatch.PENDING
        # metrics, tracing, rpc_debug_log: the acceptor's observer wraps ``_dispatch`` (and
        # counts bytes); ``_tracing``: requests carry a trace context to read
        self._tracing = False
        if acceptor.observer is not None:
            acceptor.observer.attach(self)
        # the transport's decoder: ``buffered`` is read here
        self._decoder: FrameDecoderLike | MqttDecoderLike | None = None
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Future[Any]] = set()
        # overload (pomelo_rpc.overload): the acceptor's; requests waiting for a later turn
        self._overload: Overload = acceptor.overload
        self._queue: deque[Entry] = deque()
        self._peer: Any = None        # the transport's peername (its type depends on the family)
        self._stopping: float | None = None  # the stop grace, once drain_and_close has begun
        self._refused = 0             # requests received after the stop began, not run
        self._reading_paused = False
        self._eof_sent = False
        self._aborted = False
        # auth_token: the handshake's deadline and a small decoder of its frames, until
        # the peer has proven the token (both None then, and without a token)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._handshake_decoder: FrameDecoderLike | MqttDecoderLike | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    if TYPE_CHECKING:
        # provided by each transport's subclass (see the class docstring); ``rid`` is the
        # native protocol's int, or whatever JSON id an mqtt client sent
        def _encode_result(self, rid: Any, result: Any) -> bytes: ...
        def _encode_failure(self, rid: Any, exc: BaseException) -> bytes: ...
        def _is_ping(self, msg: Any) -> bool: ...
        def _respond_pong(self) -> None: ...
        def _run_request(self, request: Any, rid: Any, deadline: float | None) -> None: ...

    # asyncio callbacks -------------------------------------------------

    # asyncio gives a stream protocol an asyncio.Transport (typeshed: BaseTransport)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """asyncio: a client connected (after the TLS handshake, with ssl): refused
        if ``allow`` or ``max_connections`` say so, else TCP_NODELAY on and ``_start``."""
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        refusal = self._acceptor.admit(self._peer)
        if refusal is not None:
            self._aborted = True
            transport.abort()
            return
        set_nodelay(transport)
        self._acceptor.connections.add(self)
        if self._acceptor.auth_token is not None:
            self._handshake_timer = asyncio.get_running_loop().call_later(
                self._acceptor.handshake_timeout, self._handshake_expired)
        self._start()

    def _start(self) -> None:
        """Hook: the connection is admitted; greet the client if the protocol does."""

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        self._deny(f"no valid auth_token proof within {self._acceptor.handshake_timeout:g} s")

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
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _deny(self, reason: str, farewell: bytes = b"") -> None:
        """Close an unauthenticated connection (logged, rate-limited): at once and
        without a word, or after ``farewell`` (the protocol's refusal, e.g. a CONNACK)."""
        self._acceptor.refused += 1
        self._acceptor.refusals.warning("auth", "refused connection from %s: %s",
                                        self._peer, reason)
        self._aborted = True
        if self._transport is not None:
            if farewell:
                self._transport.write(farewell)
                self._transport.close()
            else:
                self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; calls still running are cancelled."""
        self._acceptor.connections.discard(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._decoder is not None and self._decoder.buffered and not self._aborted:
            log.warning("connection from %s closed in the middle of a frame "
                        "(%d bytes of it dropped)", self._peer, self._decoder.buffered)
        if self._refused:
            log.warning("%d request(s) from %s arrived while the server was stopping and "
                        "were not run; the caller sees the connection close",
                        self._refused, self._peer)
        self._overload.dropped(self)
        for task in self._tasks:
            task.cancel()
        self._out.clear()
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def running(self) -> int:
        """Calls of this connection running as coroutines."""
        return len(self._tasks)

    def pause_writing(self) -> None:
        """asyncio: the peer does not read its answers; stop reading its requests until
        it does, so that a stuck or hostile client cannot grow the write buffer forever."""
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        """asyncio: the answers drained; read requests again."""
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    # requests and answers ------------------------------------------------

    def _submit(self, request: Any, rid: Any, budget: Any, arrived: float) -> None:
        """Run a request now, or queue it for a later turn (this connection has queued
        requests, or the turn's handler slice is spent), or refuse it (busy)."""
        overload = self._overload
        cap = overload.max_in_flight
        if cap is not None and overload.held >= cap:      # overload.full
            overload.refused(self, request, "busy")
            self._respond(self._encode_busy(rid))
            return
        if type(budget) is int and budget >= 0 and overload.deadlines:
            deadline: float | None = arrived + budget * 0.001   # overload.deadline's case
        else:
            try:
                deadline = overload.deadline(budget, arrived)
            except BadBudget as exc:
                self._respond(self._encode_failure(rid, DispatchError(str(exc))))
                return
        if self._queue or overload.spent():
            overload.enqueue(self, (request, rid, deadline))
        else:
            self._run_entry((request, rid, deadline))

    def _encode_busy(self, rid: Any) -> bytes:
        """The answer refusing call ``rid`` past ``max_in_flight``."""
        return self._encode_failure(rid, ServerBusyError(self._overload.busy_text))

    def _run_entry(self, entry: Entry, now: float | None = None) -> None:
        """Run a request unless its deadline has passed (then it is counted, not
        answered); with a deadline, ``time_remaining()`` reads it in the handler.
        ``now``: the clock as the caller read it just before, if it did."""
        if self._transport is None or self._aborted:
            return
        request, rid, deadline = entry
        if deadline is None:
            self._run_request(request, rid, None)
            return
        if deadline <= (clock() if now is None else now):
            self._overload.refused(self, request, "expired")
            return
        token = current_deadline.set(deadline)
        try:
            self._run_request(request, rid, deadline)
        finally:
            current_deadline.reset(token)

    def _turn_done(self) -> None:
        """The overload runner ran requests of this connection: send their answers."""
        if self._out and not self._flush_scheduled:
            self._flush()

    def _answer(self, rid: Any, state: int, outcome: Any,
                deadline: float | None = None) -> None:
        """Queue the answer to call ``rid`` from the dispatcher's ``(state, outcome)``;
        a coroutine's answer goes out when it finishes (it is cancelled at
        ``deadline``, unanswered)."""
        if state == self._done_state:
            self._respond(self._encode_result(rid, outcome))
        elif state == self._pending_state:
            task = asyncio.ensure_future(outcome)
            self._tasks.add(task)
            tid = self._overload.started(task, deadline)
            task.add_done_callback(lambda t, rid=rid, tid=tid: self._task_done(rid, t, tid))
        else:
            self._respond(self._encode_failure(rid, outcome))

    def _task_done(self, rid: Any, task: asyncio.Future[Any], tid: int | None = None) -> None:
        self._tasks.discard(task)
        if self._overload.finished(task, tid):
            return      # cut at its deadline: its caller has had its timeout
        if self._transport is None:
            return
        if task.cancelled():
            if self._stopping is not None:
                reason = (f"the server stopped before the call finished "
                          f"(stop grace {self._stopping:g} s)")
            else:
                reason = "the call was cancelled"
            answer = self._encode_failure(rid, asyncio.CancelledError(reason))
        elif task.exception() is not None:
            # not None: checked just above (mypy does not narrow a call's result)
            answer = self._encode_failure(rid, task.exception())  # type: ignore[arg-type]
        else:
            answer = self._encode_result(rid, task.result())
        self._respond(answer)
        if self._out and not self._flush_scheduled:
            # the first answer of a loop turn goes out at once; the ones after it in
            # the same turn go out together with the flush scheduled here
            self._flush()
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _respond(self, data: bytes) -> None:
        """Queue an answer for the next write."""
        self._out.append(data)

    def _flush(self) -> None:
        """Write every queued answer in one write."""
        self._flush_scheduled = False
        out = self._out
        if out and self._transport is not None and not self._eof_sent:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        out.clear()

    def _log_failure(self, rid: Any, exc: BaseException) -> None:
        log.debug("remote call %s failed: %r", rid, exc)

    # closing -----------------------------------------------------------

    def _abort(self, exc: BaseException) -> None:
        log.warning("closing connection from %s: %s", self._peer, exc)
        self._aborted = True
        if self._transport is not None:
            self._transport.abort()

    def _refuse(self, msgs: list[Any]) -> None:
        """While stopping: answer pings, do not run new requests (their callers see
        the connection close, which a fail mode may retry elsewhere)."""
        for msg in msgs:
            if self._is_ping(msg):
                self._respond_pong()
            else:
                self._refused += 1
        self._flush()

    def _before_close(self) -> None:
        """Hook: send what the transport still holds (e.g. a batch) before the close."""

    async def drain_and_close(self, grace: float) -> None:
        """Stop: answer the calls already received, then close.

        Calls still running after ``grace`` s are cancelled and answered with an
        error; requests that arrive meanwhile are not run. The answers are followed
        by a FIN (the peer sees the close after the last answer); a peer that does
        not close its side within 2 s is cut. Takes at most about ``grace`` + 3 s.
        """
        self._stopping = grace
        while self._queue and self._transport is not None:   # received: run them first
            await asyncio.sleep(0.001)
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=grace)
            if late:
                log.warning("stopping: cancelling %d call(s) from %s still running after "
                            "the %g s grace", len(late), self._peer, grace)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)
        self._before_close()
        self._flush()
        transport = self._transport
        if transport is None:
            return
        if self._reading_paused:       # keep reading so the peer's close is seen
            self.resume_writing()
        try:
            if transport.can_write_eof():
                self._eof_sent = True
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

    _decoder: FrameDecoderLike

    def __init__(self, acceptor: BaseAcceptor) -> None:
        super().__init__(acceptor)
        frames = acceptor.core.frames
        self._frames = frames
        self._decoder = frames.FrameDecoder(acceptor.pkg_size)
        self._ping = frames.PING
        self._pong = frames.PONG_FRAME
        self._nonce = b""         # auth_token: this connection's challenge

    # asyncio gives a stream protocol an asyncio.Transport (typeshed: BaseTransport)
    def _start(self) -> None:
        """Send the method table (HELLO), or with an auth_token the challenge first."""
        assert self._transport is not None
        if self._acceptor.auth_token is None:
            self._transport.write(self._frames.encode_hello(self._acceptor.dispatcher.table))
            return
        self._nonce = new_nonce()
        self._handshake_decoder = self._frames.FrameDecoder(HANDSHAKE_MAX_FRAME)
        self._transport.write(self._frames.encode_challenge(self._nonce))

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
        self._transport.write(
            self._frames.encode_auth_ok(server_proof(token, self._nonce, client_nonce))
            + self._frames.encode_hello(self._acceptor.dispatcher.table))

    def send_hello(self, frame: bytes) -> None:
        """Send a new HELLO (the method table grew: ``reload_remotes``), after the
        answers already queued; the client takes the new ids from it. A connection
        still proving its auth_token gets none (it gets the table once proven)."""
        if self._transport is None or self._eof_sent or self._handshake_decoder is not None:
            return
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush()

    def data_received(self, data: bytes) -> None:
        """asyncio: decode frames, run the requests, write the answers ready now at once."""
        if self._handshake_decoder is not None:
            self._on_handshake(data)
            return
        try:
            msgs = self._decoder.feed(data)
        except FrameError as exc:
            self._abort(exc)
            return
        if self._stopping is not None:
            self._refuse(msgs)
            return
        arrived = clock()
        overload = self._overload
        queue = self._queue
        cap = overload.max_in_flight
        # no deadline for a request without a budget (and no default_budget), nor with
        # deadlines off
        plain = not overload.deadlines
        no_default = overload.default_budget is None
        dispatch = self._dispatch
        answer = self._answer
        out = self._out
        # the deadline the handler reads (and a coroutine's task keeps): set for each
        # request that has one, cleared for one without, and the context restored as
        # it was once, at the end of the batch (not a set and a reset per request)
        token = None
        live = False
        try:
            for msg in msgs:
                if type(msg) is not list or len(msg) < 2 or type(msg[1]) is not int:
                    if self._is_ping(msg):
                        self._respond_pong()
                        continue
                    self._abort(FrameError(f"malformed request frame: {msg!r:.80}"))
                    return
                n = len(msg)      # the budget field, if any (see core.frames)
                budget = (msg[5] if n == 6 and msg[0] == 1 else
                          msg[7] if n == 8 and msg[0] == 2 else None)
                # the common cases inline (``_submit`` in full for the others): this
                # turn's slice started and not spent, nothing queued here, room to hold
                # it, no budget or a live one
                end = overload.slice_end
                inline = (end is not None and not queue
                          and (cap is None or overload.held < cap) and clock() < end)
                deadline = None
                if inline and not (plain or budget is None and no_default):
                    if type(budget) is int and budget > 0:
                        deadline = arrived + budget * 0.001
                    else:
                        inline = False
                if deadline is not None:
                    set_token = current_deadline.set(deadline)
                    if token is None:
                        token = set_token
                    live = True
                elif live:
                    current_deadline.set(None)
                    live = False
                if inline:
                    rid, state, outcome = dispatch(msg)
                    answer(rid, state, outcome, deadline)
                else:
                    self._submit(msg, msg[1], budget, arrived)
                    if self._aborted:
                        return
                if len(out) >= WRITE_CHUNK and not self._flush_scheduled:
                    self._flush()
        finally:
            if token is not None:
                current_deadline.reset(token)
        if out and not self._flush_scheduled:
            self._flush()

    def _run_request(self, request: Any, rid: Any, deadline: float | None) -> None:
        try:
            rid, state, outcome = self._dispatch(request)
        except FrameError as exc:
            self._abort(exc)
            return
        self._answer(rid, state, outcome, deadline)

    def _is_ping(self, msg: Any) -> bool:
        return type(msg) is list and len(msg) == 1 and msg[0] == self._ping

    def _respond_pong(self) -> None:
        self._out.append(self._pong)

    def _encode_result(self, rid: Any, result: Any) -> bytes:
        try:
            return self._frames.encode_response(rid, result)
        except Exception as exc:  # the result cannot be packed
            return self._encode_failure(rid, TypeError(f"result cannot be serialized: {exc}"))

    def _encode_failure(self, rid: Any, exc: BaseException) -> bytes:
        self._log_failure(rid, exc)
        type_name, message, stack = describe_error(exc)
        return self._frames.encode_error(rid, type_name, message, stack)

    def _encode_busy(self, rid: Any) -> bytes:
        # no stack to format: a refusal under load must cost next to nothing
        return self._frames.encode_error(rid, "ServerBusyError", self._overload.busy_text, None)


class BaseAcceptor:
    """Listens on a TCP port; each connection is a ``connection_class(self)``."""

    # set by each transport's acceptor (None here: BaseAcceptor is not used as it is)
    connection_class: type[ServerConnection] = None  # type: ignore[assignment]
    name = "acceptor"

    def __init__(self, opts: dict[str, Any], dispatcher: DispatcherLike, core: Core) -> None:
        self.dispatcher = dispatcher
        self.core = core
        self.opts = opts
        self.pkg_size: int = opts["pkg_size"]
        self.connections: set[ServerConnection] = set()
        self.accepted = 0          # connections accepted since listen
        self._server: asyncio.Server | None = None
        # deadlines, admission, fairness (README "Overload"): see pomelo_rpc.overload
        self.overload = Overload(opts, core)
        self.observer = observe_acceptor(self)   # metrics, tracing, rpc_debug_log; or None
        # security (README "Security"): see the options of the same names
        self.ssl = opts.get("ssl")
        self.auth_token = token_bytes(opts.get("auth_token"))
        self.allow = parse_allow(opts.get("allow"))
        self.max_connections: int | None = opts.get("max_connections")
        self.handshake_timeout: float = opts.get("handshake_timeout",
                                                 SERVER_DEFAULTS["handshake_timeout"])
        self.refused = 0           # connections refused: allow, max_connections, auth_token
        self.refusals = RateLimitedLog(log)

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

    def _new_connection(self) -> ServerConnection:
        self.accepted += 1
        return self.connection_class(self)

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
        warn_if_exposed(log, host, self.opts)
        log.info("%s listening on %s:%s%s", self.name, host, self.port,
                 " (TLS)" if self.ssl is not None else "")

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, answer the calls already received (up to ``grace`` s), close."""
        if self._server is None:
            return
        self._server.close()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.drain_and_close(grace) for c in conns))
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
