# cython: annotation_typing=False
"""The client's side of one connection: one source for both cores.

Imported as it is for the pure-Python core; compiled with
``pomelo_rpc/_cy/client_protocol.pxd`` (extension types, C calls into the table, the
frame codec and the writer) for the Cython core.

``ClientProtocol`` is what every transport shares: the table of calls awaiting their
answer with its one deadline timer, the coalesced writes, and the asyncio protocol
callbacks handed to the mailbox that owns it. ``NativeClientProtocol`` adds the
native protocol: data_received decodes frames and resolves the calls they answer,
``send_call`` encodes requests. The mailbox (``pomelo_rpc.mailbox``) keeps the
lifecycle: connecting, the calls waiting for the connection, keepalive, closing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..deadline import current_deadline
from ..errors import (ConnectionLostError, FrameError, RemoteError, RpcError,
                      RpcTimeoutError, ServerBusyError)
from .frames import (PING_FRAME, RESP_ERR, RESP_OK, FrameDecoder, encode_notify,
                     encode_notify_by_name, encode_request, encode_request_budget,
                     encode_request_by_name, encode_request_by_name_budget,
                     encode_request_by_name_traced, encode_request_traced)
from .pending import PendingTable, SlotTimer
from .writer import Writer, set_nodelay

if TYPE_CHECKING:
    import asyncio

    from ..mailbox import Mailbox

_monotonic = time.monotonic


def budget_ms(seconds: float) -> int:
    """A budget of ``seconds`` (positive) in whole milliseconds, rounded up."""
    ms = seconds * 1000.0
    budget = int(ms)
    return budget + 1 if budget < ms else budget


def call_route(msg: dict[str, Any]) -> str:
    """``namespace.service.method`` of a call message."""
    return f"{msg.get('namespace')}.{msg.get('service')}.{msg.get('method')}"


class ClientProtocol:
    """Calls to one server over one connection; see the module docstring.

    A transport subclasses it with ``data_received``, ``send_call`` and
    ``send_ping``; its owner (the mailbox) gets ``_connection_made(transport)``,
    ``_connection_lost(exc)`` and, from the transport's code, what is not a call."""

    def __init__(self, owner: Mailbox, server_id: str, pkg_size: int,
                 low_id: int = 0) -> None:
        """``low_id``: the lowest request id (1 where 0 means a notify: pinus tcp)."""
        # Any: each transport's protocol calls the hooks of its own kind of mailbox
        self.owner: Any = owner
        self.server_id = server_id
        self.pkg_size = pkg_size
        self.table = PendingTable(first_id=low_id, low_id=low_id)
        self.writer = Writer()
        #: set by the owner before the first call (the loop of the connection)
        self.loop: asyncio.AbstractEventLoop | None = None
        #: the one timer of the table's deadlines
        self.deadlines = SlotTimer(self.table, self.timed_out, self.loop_time)
        self.last_recv = 0.0
        #: requests carry ``msg["trace_id"]`` (tracing, rpc_debug_log)
        self.traced = False
        #: the connection is open: calls are sent now (else the owner queues them)
        self.open = False
        #: a future already done: the table's entry of a notify sent as a call (see
        #: ``reserve``), which its answer or its deadline leaves as it is
        self.dropped: asyncio.Future[Any] | None = None

    # calls -----------------------------------------------------------------

    def send(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """A call (the mailbox's ``send``): sent now when the connection is open, else
        handed to the owner to wait for it. ``timeout`` is bounded by what is left of
        the deadline of the call a handler serves, if it makes this one."""
        if current_deadline.get() is not None:
            timeout = self.owner._inherit(msg, timeout)
        if self.open:
            return self.call(msg, timeout)
        fut: asyncio.Future[Any] = self.owner._send_later(msg, timeout)
        return fut

    def call(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """Send call ``msg`` now (the connection is open); a future of its answer,
        failed with RpcTimeoutError ``timeout`` s from now (None or 0: never)."""
        fut, rid, deadline = self.add(msg, timeout)
        self.send_queued(rid, msg, deadline)
        return fut

    def add(self, msg: dict[str, Any],
            timeout: float | None) -> tuple[asyncio.Future[Any], int, float | None]:
        """Register call ``msg`` without sending it: ``(future, rid, deadline or
        None)``; ``send_queued`` sends it (now, or once the connection is open)."""
        loop = self.loop
        assert loop is not None
        fut = loop.create_future()
        deadline: float | None = None
        if timeout:
            deadline = loop.time() + timeout
            rid = self.table.add(fut, deadline, msg)
            self.deadlines.added(deadline, loop)
        else:
            rid = self.table.add(fut, None, msg)
        return fut, rid, deadline

    def send_queued(self, rid: int, msg: dict[str, Any], deadline: float | None) -> None:
        """Send call ``rid`` (registered by ``add``) with the budget it has left, in
        whole ms rounded up; one whose deadline has passed is not sent: it fails with
        its timeout now.

        The budget is counted from the clock, not from ``loop.time()``, which uvloop
        reads once per loop turn: a turn sending many calls would send stale budgets."""
        budget: int | None = None
        if deadline is not None:
            left = deadline - _monotonic()
            if left <= 0:
                entry = self.table.pop(rid)
                if entry is not None and not entry[0].done():
                    entry[0].set_exception(RpcTimeoutError(
                        f"{call_route(msg)} to {self.server_id} got no response in time "
                        f"(it expired while the connection opened; not sent)"))
                return
            budget = budget_ms(left)
        try:
            self.send_call(rid, msg, budget)
        except Exception as exc:  # unserializable arguments, oversized frame
            self.send_failed(rid, msg, exc)

    def notify(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """A notify (one-way call: no answer awaited); a future done once it is
        written, failed if it cannot be. Sent now when the connection is open, else
        once it is (the owner's ``_notify_later``); ``timeout`` (bounded as a call's)
        is the budget the server runs it under."""
        if current_deadline.get() is not None:
            timeout = self.owner._inherit(msg, timeout)
        if not self.open:
            later: asyncio.Future[Any] = self.owner._notify_later(msg, timeout)
            return later
        loop = self.loop
        assert loop is not None
        try:
            if self.writer.closed:
                raise ConnectionLostError(f"connection to {self.server_id} is closed")
            self.send_notify(msg, budget_ms(timeout) if timeout else None, timeout)
        except Exception as exc:  # unserializable arguments, oversized frame, closed
            fut = loop.create_future()
            fut.set_exception(exc if isinstance(exc, (RpcError, TypeError)) else
                              RpcError(f"cannot send {call_route(msg)}: {exc}"))
            return fut
        return self.writer.sent()

    def reserve(self, timeout: float | None) -> int:
        """A request id for a notify sent as a call (a transport whose servers answer
        every request): held in the table until its answer, which is dropped, or its
        deadline, so that no call gets the id while that answer may still come."""
        loop = self.loop
        assert loop is not None
        fut = self.dropped
        if fut is None:
            fut = self.dropped = loop.create_future()
            fut.set_result(None)
        if timeout:
            deadline = loop.time() + timeout
            rid = self.table.add(fut, deadline, None)
            self.deadlines.added(deadline, loop)
            return rid
        return self.table.add(fut, None, None)

    def send_failed(self, rid: int, msg: dict[str, Any], exc: Exception) -> None:
        """Call ``rid`` could not be sent: its future gets the error, nothing is sent."""
        entry = self.table.pop(rid)
        if entry is not None and not entry[0].done():
            if not isinstance(exc, (RpcError, TypeError)):
                exc = RpcError(f"cannot send {call_route(msg)}: {exc}")
            entry[0].set_exception(exc)

    def check_size(self, frame: bytes, msg: dict[str, Any]) -> bytes:
        """``frame``, or RpcError when it exceeds ``pkg_size``."""
        if len(frame) > self.pkg_size:
            raise RpcError(f"{call_route(msg)}: request of {len(frame)} bytes exceeds "
                           f"pkg_size {self.pkg_size}")
        return frame

    def reject_remote(self, rid: object, type_name: Any, message: Any, stack: Any,
                      fields: Any = None) -> None:
        """Call ``rid`` failed on the server: RemoteError (with the error's ``fields``,
        a dict, if it sent any), or ServerBusyError when the server refused it at once
        (admission control: it never ran)."""
        if type_name == "ServerBusyError":
            self.table.reject(rid, ServerBusyError(f"{self.server_id}: {message}",
                                                   self.server_id))
            return
        self.table.reject(rid, RemoteError(message, type_name, stack, self.server_id,
                                           fields if type(fields) is dict else None))

    def fail_all(self, error: type[ConnectionLostError], reason: str) -> None:
        """The connection is gone for good: every call fails with ``error(reason)``,
        no timer is left, nothing more is written."""
        self.open = False
        self.deadlines.cancel()
        self.writer.detach()
        for fut, _msg in self.table.drain():
            if not fut.done():
                fut.set_exception(error(reason))

    # deadlines ---------------------------------------------------------------

    def loop_time(self) -> float:
        """The clock of the table's deadlines: the loop's."""
        assert self.loop is not None
        return self.loop.time()

    def timed_out(self, entries: list[tuple[asyncio.Future[Any], Any]]) -> None:
        """The deadline timer expired these calls: each fails with RpcTimeoutError."""
        for fut, msg in entries:
            if not fut.done():
                fut.set_exception(RpcTimeoutError(
                    f"{call_route(msg)} to {self.server_id} got no response in time"))

    def received(self) -> None:
        """Bytes arrived: the peer is alive, and a deadline that passed before they
        were read wins over the answer in them (the loop may run I/O before a timer
        that is already due)."""
        assert self.loop is not None
        now = self.last_recv = self.loop.time()
        self.deadlines.expire_due(now)

    # asyncio protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        """asyncio: connected; TCP_NODELAY on, writes go to ``transport``."""
        assert self.loop is not None
        set_nodelay(transport)
        self.writer.attach(transport, self.loop)
        self.owner._connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; the owner fails what is in flight."""
        self.writer.detach()
        self.owner._connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the server (the transport's subclass decodes them)."""
        raise NotImplementedError

    def eof_received(self) -> bool | None:
        """asyncio: the server closed its side; close ours too."""
        return None

    def pause_writing(self) -> None:
        """asyncio: the server reads slowly; calls keep queueing in the transport."""

    def resume_writing(self) -> None:
        """asyncio: the transport's buffer drained."""

    # transport hooks -------------------------------------------------------------

    def send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """Send call ``rid`` with ``budget``, the ms left before its deadline (or None)."""
        raise NotImplementedError

    def send_notify(self, msg: dict[str, Any], budget: int | None,
                    timeout: float | None) -> None:
        """Send notify ``msg`` with ``budget`` (ms, or None); ``timeout``: its seconds."""
        raise NotImplementedError

    def send_ping(self) -> None:
        """Send a keepalive ping."""
        raise NotImplementedError


class NativeClientProtocol(ClientProtocol):
    """The native protocol (length-prefixed msgpack frames) of one client connection."""

    def __init__(self, owner: Mailbox, server_id: str, pkg_size: int) -> None:
        super().__init__(owner, server_id, pkg_size)
        self.decoder = FrameDecoder(pkg_size)
        #: method ids from the server's HELLO
        self.ids: dict[tuple[str, str, str], int] = {}

    def data_received(self, data: bytes) -> None:
        """asyncio: decode frames; answers resolve their calls, the rest (PONG, HELLO,
        the handshake) goes to the owner; bad data closes the connection."""
        self.received()
        table = self.table
        try:
            for msg in self.decoder.feed(data):
                kind = msg[0]
                if kind == RESP_OK:
                    table.resolve(msg[1], msg[2])
                elif kind == RESP_ERR:
                    err = msg[2]
                    self.reject_remote(msg[1], err[0], err[1], err[2],
                                       err[3] if len(err) > 3 else None)
                else:       # PONG, HELLO, the handshake
                    self.owner._on_control(msg)
        except (FrameError, TypeError, IndexError, KeyError) as exc:
            self.owner._bad_data(exc)

    def send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """Encode call ``rid`` (by method id once the HELLO gave one, else by name)
        with its budget and, when traced, its traceparent; write it."""
        ns = msg["namespace"]
        service = msg["service"]
        method = msg["method"]
        args = msg["args"]
        mid = self.ids.get((ns, service, method))
        trace = msg["trace_id"] if self.traced else None
        if budget is not None:
            if mid is not None:
                frame = encode_request_budget(rid, mid, args, trace, budget)
            else:
                frame = encode_request_by_name_budget(rid, ns, service, method, args, trace,
                                                      budget)
        elif trace is not None:
            if mid is not None:
                frame = encode_request_traced(rid, mid, args, trace)
            else:
                frame = encode_request_by_name_traced(rid, ns, service, method, args, trace)
        elif mid is not None:
            frame = encode_request(rid, mid, args)
        else:
            frame = encode_request_by_name(rid, ns, service, method, args)
        if len(frame) > self.pkg_size:
            self.check_size(frame, msg)
        self.writer.write(frame)

    def send_notify(self, msg: dict[str, Any], budget: int | None,
                    timeout: float | None) -> None:
        """Encode notify ``msg`` (a frame kind of its own, no rid) and write it."""
        ns = msg["namespace"]
        service = msg["service"]
        method = msg["method"]
        mid = self.ids.get((ns, service, method))
        trace = msg["trace_id"] if self.traced else None
        if mid is not None:
            frame = encode_notify(mid, msg["args"], trace, budget)
        else:
            frame = encode_notify_by_name(ns, service, method, msg["args"], trace, budget)
        if len(frame) > self.pkg_size:
            self.check_size(frame, msg)
        self.writer.write(frame)

    def send_ping(self) -> None:
        """Send a PING frame."""
        self.writer.write(PING_FRAME)


class ForwardingClientProtocol(ClientProtocol):
    """A transport whose codec stays in its mailbox (the mqtt one): the table, the
    deadlines and the writes are this protocol's; ``send_call``, ``send_ping`` and the
    decoding of ``data_received`` are the owner's ``_send_call``, ``_send_ping`` and
    ``_data_received``."""

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the server, for the owner to decode."""
        self.received()
        self.owner._data_received(data)

    def send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """The owner sends call ``rid``."""
        self.owner._send_call(rid, msg, budget)

    def send_notify(self, msg: dict[str, Any], budget: int | None,
                    timeout: float | None) -> None:
        """The owner sends notify ``msg``."""
        self.owner._send_notify(msg, budget, timeout)

    def send_ping(self) -> None:
        """The owner sends its keepalive ping."""
        self.owner._send_ping()
