"""Mailboxes: the client's connection to one remote server.

``Mailbox`` holds what every transport shares: lazy connect, the bounded queue of
calls made while connecting, the request-id table with its deadlines, keepalive,
and failing every call at once when the connection is lost. ``NativeMailbox``
adds the native protocol. A transport subclasses ``Mailbox`` and provides
``_open``, ``_send_call``, ``_send_ping`` and ``_close_transport``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .acceptor import WRITE_CHUNK, set_nodelay
from .deadline import budget_ms, current_deadline
from .errors import (AuthenticationError, ConnectionLostError, FrameError,
                     PendingQueueFullError, RemoteError, RpcError, RpcTimeoutError,
                     ServerBusyError)
from .security import (challenge_nonce, check_auth_ok, client_proof, new_nonce,
                       token_bytes)
from .observe import observe_mailbox

if TYPE_CHECKING:
    from .core import Core, FrameDecoderLike

_monotonic = time.monotonic
_ceil = math.ceil

log = logging.getLogger("pomelo_rpc.mailbox")

IDLE, CONNECTING, OPEN, CLOSED = "idle", "connecting", "open", "closed"


def call_route(msg: dict[str, Any]) -> str:
    """``namespace.service.method`` of a call message."""
    return f"{msg.get('namespace')}.{msg.get('service')}.{msg.get('method')}"


class Mailbox:
    """Base of the transports' mailboxes; see the module docstring."""

    def __init__(self, server_info: dict[str, Any], opts: dict[str, Any], core: Core) -> None:
        self.server_info = server_info
        self.server_id: str = server_info["id"]
        self.host: str = server_info.get("host") or "127.0.0.1"
        self.port: int = server_info["port"]
        self.core = core
        self.state = IDLE
        # callable(mailbox), set by the station
        self.on_close: Callable[[Mailbox], None] | None = None
        self.close_reason: str | None = None      # why the mailbox closed, once it has
        self._close_error: type[ConnectionLostError] = ConnectionLostError  # and its error
        self._pkg_size: int = opts["pkg_size"]
        self._pending_size: int = opts["pending_size"]
        self._connect_timeout: float = opts["connect_timeout"]
        self._keepalive: float = opts["keepalive"]
        # security (README "Security"): TLS for create_connection, the shared secret
        self._tls: dict[str, Any] = {}
        if opts.get("ssl") is not None:
            self._tls = {"ssl": opts["ssl"], "server_hostname": opts.get("server_hostname")}
        self._auth_token = token_bytes(opts.get("auth_token"))
        self._table = core.pending.PendingTable()
        # (rid, msg, deadline or None) of calls made while connecting
        self._waiting: list[tuple[int, dict[str, Any], float | None]] = []
        # None until the first send or connect sets it; nothing reads it before that
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._last_recv = 0.0
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._connect_task: asyncio.Task[None] | None = None
        # rpc_debug_log, tracing, metrics: ``observe_mailbox`` wraps ``send`` (and sets
        # ``_trace_prefix`` when a trace context travels with each request); off, nothing
        self._trace_prefix: str | None = None
        if opts.get("rpc_debug_log") or opts.get("tracing") or opts.get("metrics"):
            observe_mailbox(self, opts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.server_id} {self.host}:{self.port} {self.state}>"

    @property
    def in_flight(self) -> int:
        """Calls sent or queued and not yet answered."""
        return len(self._table)

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
        state = self.state
        if current_deadline.get() is not None:
            timeout = self._inherit(msg, timeout)
        if state == CLOSED:
            raise ConnectionLostError(f"connection to {self.server_id} is closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiting = self._waiting
        if (state != OPEN and len(waiting) >= self._pending_size
                and len(self._table) < len(waiting)):
            # calls whose deadline passed while they waited make room (never sent); until
            # the connection opens, every call of the table is one of the waiting
            table = self._table
            self._waiting = [w for w in waiting if w[0] in table]
        if state != OPEN and len(self._waiting) >= self._pending_size:
            raise PendingQueueFullError(
                f"{len(self._waiting)} calls already wait for the connection to "
                f"{self.server_id} (pending_size={self._pending_size})")
        fut = loop.create_future()
        deadline: float | None = None
        if timeout:
            deadline = when = loop.time() + timeout
            rid = self._table.add(fut, when, msg)
            if self._timer_at is None or when < self._timer_at:
                self._arm_timer()
        else:
            rid = self._table.add(fut, None, msg)
        if state == OPEN:
            if deadline is None:
                budget = None
            else:
                # the budget left, from the clock (see ``_send_queued``), in whole ms
                # rounded up; an expired call is ``_send_queued``'s to fail
                left = deadline - _monotonic()
                if left <= 0:
                    self._send_queued(rid, msg, deadline)
                    return fut
                budget = _ceil(left * 1000.0)
            try:
                self._send_call(rid, msg, budget)
            except Exception as exc:  # unserializable arguments, oversized frame
                self._send_failed(rid, msg, exc)
        else:
            self._waiting.append((rid, msg, deadline))
            if state == IDLE:
                self.state = CONNECTING
                self._connect_task = loop.create_task(self._connect())
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

    def _send_queued(self, rid: int, msg: dict[str, Any], deadline: float | None) -> None:
        """Send call ``rid`` with the budget it has left (now or once the connection is
        open); one whose deadline has passed is not sent: it fails with its timeout now.

        The budget is counted from the clock, not from ``loop.time()``, which uvloop
        reads once per loop turn: a turn sending many calls would send stale budgets."""
        budget = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                entry = self._table.pop(rid)
                if entry is not None and not entry[0].done():
                    entry[0].set_exception(RpcTimeoutError(
                        f"{call_route(msg)} to {self.server_id} got no response in time "
                        f"(it expired while the connection opened; not sent)"))
                return
            budget = budget_ms(left)
        try:
            self._send_call(rid, msg, budget)
        except Exception as exc:  # unserializable arguments, oversized frame
            self._send_failed(rid, msg, exc)

    def _send_failed(self, rid: int, msg: dict[str, Any], exc: Exception) -> None:
        """Call ``rid`` could not be sent: its future gets the error, nothing is sent."""
        entry = self._table.pop(rid)
        if entry is not None and not entry[0].done():
            if not isinstance(exc, (RpcError, TypeError)):
                exc = RpcError(f"cannot send {call_route(msg)}: {exc}")
            entry[0].set_exception(exc)

    def _check_size(self, frame: bytes, msg: dict[str, Any]) -> bytes:
        if len(frame) > self._pkg_size:
            raise RpcError(f"{call_route(msg)}: request of {len(frame)} bytes exceeds "
                           f"pkg_size {self._pkg_size}")
        return frame

    def _write(self, data: bytes) -> None:
        """Send ``data``: the first write of a loop turn goes out at once (no added
        latency); the ones after it in the same turn go out together, every
        WRITE_CHUNK of them and at the end of the turn."""
        if self._flush_scheduled:
            out = self._out
            out.append(data)
            if len(out) >= WRITE_CHUNK and self._transport is not None:
                self._transport.write(b"".join(out))
                out.clear()
        elif self._transport is not None:
            self._transport.write(data)
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and self._transport is not None:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])
        out.clear()

    def _reject_remote(self, rid: int, type_name: str, message: str, stack: str | None) -> None:
        if type_name == "ServerBusyError":   # refused by admission control: it never ran
            self._table.reject(rid, ServerBusyError(f"{self.server_id}: {message}",
                                                    self.server_id))
            return
        self._table.reject(rid, RemoteError(message, type_name, stack, self.server_id))

    # deadlines ---------------------------------------------------------
    # One timer per mailbox, armed for the earliest deadline slot of the table. It runs
    # once per slot that has work: a firing expires its slot even when the loop clock
    # (whole milliseconds under uvloop) reads a hair before the slot's time, and an
    # expiry run early by ``_received`` cancels the timer it stands in for, so a second
    # timer can never start beside the first.

    def _arm_timer(self) -> None:
        """(Re)arm the timer for the table's next deadline slot, or leave none."""
        when = self._table.next_deadline()
        if self._timer is not None:
            if when == self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = when
        # a millisecond late, so that a clock of any granularity reads ``when`` by then
        self._timer = None if when is None else self._loop.call_at(when + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        when = self._timer_at
        self._timer = None
        now = self._loop.time()
        self._expire(now if when is None or now > when else when)

    def _expire(self, now: float) -> None:
        """Fail the calls whose deadline is at or before ``now``; re-arm the timer."""
        for fut, msg in self._table.expire(now):
            if not fut.done():
                fut.set_exception(RpcTimeoutError(
                    f"{call_route(msg)} to {self.server_id} got no response in time"))
        self._arm_timer()

    # connection --------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now instead of on the first call."""
        if self.state == IDLE:
            self._loop = asyncio.get_running_loop()
            self.state = CONNECTING
            self._connect_task = self._loop.create_task(self._connect())
        if self._connect_task is not None:
            await asyncio.shield(self._connect_task)
        if self.state != OPEN:
            raise self._close_error(self.close_reason or f"cannot connect to {self.server_id}")

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(self._open(), self._connect_timeout)
        except Exception as exc:
            self._connect_task = None     # so that _fail does not cancel this very task
            if self.state != CLOSED:
                if isinstance(exc, asyncio.TimeoutError):
                    reason = "timed out" + (self._silence_hint if self._last_recv == 0.0
                                            and self._transport is not None else "")
                else:
                    reason = str(exc) or repr(exc)
                refused = isinstance(exc, (AuthenticationError, ssl.SSLError))
                self._fail(f"cannot connect to {self.server_id} at {self.host}:{self.port}: "
                           f"{'TLS: ' if isinstance(exc, ssl.SSLError) else ''}{reason}",
                           AuthenticationError if refused else ConnectionLostError)
            return
        finally:
            self._connect_task = None
        if self.state != CONNECTING:
            return
        self.state = OPEN
        self._last_recv = self._loop.time()
        if self._keepalive:
            self._keepalive_handle = self._loop.call_later(self._keepalive, self._on_keepalive)
        waiting, self._waiting = self._waiting, []
        table = self._table
        for rid, msg, deadline in waiting:
            if rid in table:
                self._send_queued(rid, msg, deadline)

    def _received(self) -> None:
        """Call first in ``data_received``: the peer is alive, and a deadline that
        passed before these bytes were read wins over the answer in them (the loop
        may run I/O before a timer that is already due)."""
        now = self._last_recv = self._loop.time()
        if self._timer_at is not None and now >= self._timer_at:
            self._expire(now)

    def _on_keepalive(self) -> None:
        """Ping once the peer has been silent for one period; fail once it has been
        silent for two. Both are counted from the last byte received: checks on a
        fixed tick let a dead peer go unnoticed for up to three periods, and closed a
        healthy idle connection whenever a tick ran a little late."""
        self._keepalive_handle = None
        if self.state != OPEN:
            return
        period = self._keepalive
        last = self._last_recv
        idle = self._loop.time() - last
        if idle >= 2 * period:
            self._fail(f"{self.server_id} did not answer keepalive for {idle:.1f}s")
            return
        if idle >= period:
            self._send_ping()
            when = last + 2 * period
        else:
            when = last + period
        self._keepalive_handle = self._loop.call_at(when + 0.001, self._on_keepalive)

    def _fail(self, reason: str, error: type[ConnectionLostError] = ConnectionLostError) -> None:
        """Close for good: every call in flight or queued fails now with ``error(reason)``."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.close_reason = reason
        self._close_error = error
        log.info("mailbox %s closed: %s", self.server_id, reason)
        for handle in (self._timer, self._keepalive_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._timer_at = self._keepalive_handle = None
        self._waiting.clear()
        self._out.clear()
        for fut, _msg in self._table.drain():
            if not fut.done():
                fut.set_exception(error(reason))
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

    # transport hooks ---------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    #: Added to "timed out" when the connection opened but the server sent nothing.
    _silence_hint = " (connected, but the server sent nothing)"

    async def _create_connection(self) -> None:
        """Connect this protocol to the server, over TLS with the ``ssl`` option."""
        # a transport's mailbox is also its asyncio.Protocol (Mailbox alone is not)
        await self._loop.create_connection(lambda: self, self.host,  # type: ignore[type-var]
                                           self.port, **self._tls)

    def _auth_failed(self, reason: str) -> None:
        """The handshake proved the server or this client wrong: close with
        AuthenticationError (what a call or ``connect`` raises)."""
        log.warning("%s: %s", self.server_id, reason)
        self._fail(f"cannot connect to {self.server_id} at {self.host}:{self.port}: {reason}",
                   AuthenticationError)

    def _send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """Send call ``rid`` with ``budget``, the ms left before its deadline (or None)."""
        raise NotImplementedError

    def _send_ping(self) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()


class NativeMailbox(Mailbox, asyncio.Protocol):
    """Mailbox speaking the native protocol (length-prefixed msgpack frames)."""

    _decoder: FrameDecoderLike
    _silence_hint = (" (connected, but the server sent no greeting: a TLS server needs ssl=, "
                     "or it is not a pomelo_rpc native server)")

    def __init__(self, server_info: dict[str, Any], opts: dict[str, Any], core: Core) -> None:
        super().__init__(server_info, opts, core)
        frames = core.frames
        self._frames = frames
        self._decoder = frames.FrameDecoder(self._pkg_size)
        self._encode_request = frames.encode_request
        self._encode_request_budget = frames.encode_request_budget
        self._ids: dict[tuple[str, str, str], int] = {}   # method ids from the HELLO
        self._hello: asyncio.Future[None] | None = None
        self._k_ok, self._k_err, self._k_hello, self._k_pong = (
            frames.RESP_OK, frames.RESP_ERR, frames.HELLO, frames.PONG)
        # auth_token handshake: the nonces of this connection; proven once AUTH_OK checked
        self._server_nonce = self._client_nonce = b""
        self._server_proven = False
        if self._trace_prefix is not None:
            self._send_call = self._send_call_traced  # type: ignore[method-assign]

    async def _open(self) -> None:
        self._hello = self._loop.create_future()
        await self._create_connection()
        await self._hello

    def _send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        ns, service, method = msg["namespace"], msg["service"], msg["method"]
        mid = self._ids.get((ns, service, method))
        if budget is not None:
            if mid is not None:
                frame = self._encode_request_budget(rid, mid, msg["args"], None, budget)
            else:
                frame = self._frames.encode_request_by_name_budget(
                    rid, ns, service, method, msg["args"], None, budget)
        elif mid is not None:
            frame = self._encode_request(rid, mid, msg["args"])
        else:
            frame = self._frames.encode_request_by_name(rid, ns, service, method, msg["args"])
        self._write(self._check_size(frame, msg))

    def _send_call_traced(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """``_send_call`` carrying the call's traceparent (tracing, rpc_debug_log) in the
        frame's trace field (and the budget after it)."""
        ns, service, method = msg["namespace"], msg["service"], msg["method"]
        mid = self._ids.get((ns, service, method))
        frames, trace = self._frames, msg["trace_id"]
        if budget is not None:
            if mid is not None:
                frame = frames.encode_request_budget(rid, mid, msg["args"], trace, budget)
            else:
                frame = frames.encode_request_by_name_budget(
                    rid, ns, service, method, msg["args"], trace, budget)
        elif mid is not None:
            frame = frames.encode_request_traced(rid, mid, msg["args"], trace)
        else:
            frame = frames.encode_request_by_name_traced(rid, ns, service, method,
                                                         msg["args"], trace)
        self._write(self._check_size(frame, msg))

    def _send_ping(self) -> None:
        self._write(self._frames.PING_FRAME)

    # asyncio.Protocol --------------------------------------------------

    # asyncio gives a stream protocol an asyncio.Transport (typeshed: BaseTransport)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        set_nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
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
        self._fail(f"connection to {self.server_id} lost" + (f": {exc}" if exc else ""))

    def data_received(self, data: bytes) -> None:
        self._received()
        try:
            msgs = self._decoder.feed(data)
            for msg in msgs:
                kind = msg[0]
                if kind == self._k_ok:
                    self._table.resolve(msg[1], msg[2])
                elif kind == self._k_err:
                    err = msg[2]
                    self._reject_remote(msg[1], err[0], err[1], err[2])
                elif kind == self._k_hello:
                    self._on_hello(msg)
                elif kind == self._frames.CHALLENGE or kind == self._frames.AUTH_OK:
                    self._on_handshake(msg)
                elif kind != self._k_pong:
                    raise FrameError(f"unexpected message kind {kind!r}")
        except (FrameError, TypeError, IndexError, KeyError) as exc:
            log.warning("bad data from %s, closing: %r", self.server_id, exc)
            self._fail(f"bad data from {self.server_id}: {exc}")

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
                self._transport.write(self._frames.encode_auth(
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
        self._ids = {tuple(entry): mid for mid, entry in enumerate(msg[2])}
        if self._hello is not None and not self._hello.done():
            self._hello.set_result(None)
