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

from typing import TYPE_CHECKING, Any

from ..errors import (ConnectionLostError, FrameError, RemoteError, RpcError,
                      RpcTimeoutError, ServerBusyError)
from .frames import (PING_FRAME, RESP_ERR, RESP_OK, FrameDecoder, call_fields,
                     encode_notify, encode_notify_by_name, encode_request, encode_request_budget,
                     encode_request_by_name, encode_request_by_name_budget,
                     encode_request_by_name_traced, encode_request_traced)
from .clock import monotonic
from .coro import future_kwargs, new_future
from .context import deadline as serving_deadline
from .meter import CANCELLED, OK
from .mqtt import answer_parts
from .mqtt import encode_call_json as mqtt_encode_call
from .pending import PendingTable, SlotTimer, loop_deadlines
from .pinus_tcp import encode_call_json as pinus_encode_call
from .writer import Writer, set_nodelay

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ..mailbox import Mailbox
    from .json_codec import JsonCodec
    from .meter import Meter, Series
    from .pending import PendingCall
    from .sampling import Sampler



#: no route yet (the last route written, of a connection that wrote none)
_NO_ROUTE = object()


def budget_ms(seconds: float) -> int:
    """A budget of ``seconds`` (positive) in whole milliseconds, rounded up."""
    ms = seconds * 1000.0
    budget = int(ms)
    return budget + 1 if budget < ms else budget


def call_route(msg: dict[str, Any]) -> str:
    """``namespace.service.method`` of a call message."""
    return f"{msg.get('namespace')}.{msg.get('service')}.{msg.get('method')}"


def route_of(info: Any) -> str:
    """The route of a table entry's ``info``: the route itself, or a call message."""
    return info if type(info) is str else call_route(info)


class ClientProtocol:
    """Calls to one server over one connection; see the module docstring.

    A transport subclasses it with ``data_received``, ``send_call`` and
    ``send_ping``; its owner (the mailbox) gets ``_connection_made(transport)``,
    ``_connection_lost(exc)`` and, from the transport's code, what is not a call.

    With ``meter`` (``metrics=True``: a ``core.meter.Meter``) every call is counted
    here as it ends: its table entry holds the clock at its start and its route's
    series, and the clock is read once per read for the calls the read answers."""

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
        #: the one timer of the table's deadlines (it hands ``timed_out`` the entries):
        #: once the loop is known (``bind``), the timer of the deadline slots every
        #: client connection of the loop shares
        self.deadlines = SlotTimer(self.table, self.timed_out, self.loop_time, True)
        self.last_recv = 0.0
        #: requests carry ``msg["trace_id"]`` (tracing, rpc_debug_log)
        self.traced = False
        #: the connection is open: calls are sent now (else the owner queues them)
        self.open = False
        #: a future already done: the table's entry of a notify sent as a call (see
        #: ``reserve``), which its answer or its deadline leaves as it is
        self.dropped: asyncio.Future[Any] | None = None
        #: metrics: where the calls and the bytes are counted (None: not counted)
        self.meter: Meter | None = None
        self.read_at = 0.0          # metrics: the clock at the last read
        #: tracing: decides each call's sampling (a ``core.sampling.Sampler``; None: no
        #: tracing here, or an observer wraps ``send``); a call it samples goes to
        #: ``on_sampled(msg, timeout)``, which makes its span and sends it with
        #: ``send_plain``
        self.tracer: Sampler | None = None
        self.on_sampled: Callable[[dict[str, Any], float | None], Any] | None = None
        #: tracing: the traceparent of the call being sent now (no copy of its message
        #: to carry it), read by ``send_call``
        self.trace: str | None = None
        #: the budget (ms, an int) of a call sent with a timeout of ``budget_of`` s
        self.budget_of = 0.0
        self.budget: int | None = None
        #: how ``call`` makes its futures (``core.coro.new_future``), for ``future_loop``
        self.future_loop: asyncio.AbstractEventLoop | None = None
        self.future_kwargs: dict[str, Any] | None = None
        #: ``future_loop.time``, kept (no method looked up per call and per read)
        self.loop_clock: Callable[[], float] | None = None
        # the route (``call_route``) of the last call entered and its str objects (the
        # proxy's): a table entry holds its call's route, not its message (see ``info``)
        self.route_ns: Any = None
        self.route_service: Any = None
        self.route_method: Any = _NO_ROUTE
        self.route = ""

    # calls -----------------------------------------------------------------

    def send(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """A call (the mailbox's ``send``): sent now when the connection is open, else
        handed to the owner to wait for it. ``timeout`` is bounded by what is left of
        the deadline of the call a handler serves, if it makes this one. Traced, it
        carries its trace context: a sampled call goes to ``on_sampled``."""
        tracer = self.tracer
        if tracer is None:
            return self.send_plain(msg, timeout)
        carried = tracer.outgoing()
        if carried is None and self.on_sampled is not None:
            fut: asyncio.Future[Any] = self.on_sampled(msg, timeout)
            return fut
        return self.send_carrying(msg, timeout, carried)

    def send_carrying(self, msg: dict[str, Any], timeout: float | None,
                      carried: str | None) -> asyncio.Future[Any]:
        """``send_plain`` with ``carried`` (a traceparent) as the call's trace context,
        written into its frame (no copy of ``msg`` unless it waits for the connection)."""
        if not self.open:           # it waits for the connection: its trace goes with it
            msg = dict(msg)
            msg["trace_id"] = carried
            return self.send_plain(msg, timeout)
        self.trace = carried
        try:
            return self.send_plain(msg, timeout)
        finally:
            self.trace = None

    def send_plain(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """``send`` without the tracer's decision (``msg`` carries its trace context,
        if it is to)."""
        try:
            if serving_deadline() is not None:
                timeout = self.owner._inherit(msg, timeout)
            if self.open:
                return self.call(msg, timeout)
            later: asyncio.Future[Any] = self.owner._send_later(msg, timeout)
            return later
        except Exception as exc:    # not even begun: the served deadline passed, ...
            if self.meter is not None:
                self.meter.failed(msg, exc, 0.0)
            raise

    def call(self, msg: dict[str, Any], timeout: float | None) -> asyncio.Future[Any]:
        """Send call ``msg`` now (the connection is open); a future of its answer,
        failed with RpcTimeoutError ``timeout`` s from now (None or 0: never). Sent at
        once, its budget is the whole timeout (no clock to read again)."""
        loop = self.loop
        assert loop is not None
        if loop is not self.future_loop:
            self.bind(loop)
        fut = new_future(loop, self.future_kwargs)
        budget: int | None = None
        meter = self.meter
        start = 0.0
        series = None
        info: Any
        if meter is not None:
            start = monotonic()
            series = meter.known(msg)
            info = msg
        else:
            info = self.info(msg)
        if timeout:
            seconds = timeout
            clock = self.loop_clock
            assert clock is not None
            now = clock()
            deadline = now + seconds
            rid = self.table.add_at(fut, deadline, info, start, series)
            if deadline < self.deadlines.next_at:
                self.deadlines.added(deadline, loop)
            budget = self.budget if seconds == self.budget_of else self.budget_for(seconds)
        else:
            rid = self.table.insert(fut, None, info, start, series)
        try:
            self.send_call(rid, msg, budget)
        except Exception as exc:  # unserializable arguments, oversized frame
            self.send_failed(rid, msg, exc)
        return fut

    def info(self, msg: dict[str, Any]) -> str:
        """What the table entry of call ``msg`` holds when no meter counts it: its route
        (``call_route``; the same str as the call before's when it named the same
        method), not the message: the message and its arguments are freed once the
        request is written, not kept (tracked by the cyclic GC) until the answer."""
        ns = msg.get("namespace")
        service = msg.get("service")
        method = msg.get("method")
        if method is self.route_method and service is self.route_service and ns is self.route_ns:
            return self.route
        route = self.route = f"{ns}.{service}.{method}"
        self.route_ns = ns
        self.route_service = service
        self.route_method = method
        return route

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Calls are made on ``loop`` from now on: their futures made as its
        ``create_future`` makes them, their deadlines in the slots every client
        connection of the loop shares (``core.pending.loop_deadlines``: one timer, and
        calls spread over many connections share a slot as one connection's do)."""
        self.future_loop = loop
        self.future_kwargs = future_kwargs(loop)
        self.loop_clock = loop.time
        shared = loop_deadlines(loop)
        if shared is not self.deadlines and self.table.share(shared.table):
            self.deadlines.cancel()
            self.deadlines = shared
            self.table.expired = self.timed_out

    def budget_for(self, seconds: float) -> int:
        """The budget (whole ms, rounded up) of a request sent now with ``seconds``
        (positive) left: the same int object as the request before's when it had the
        same (most calls share one timeout)."""
        budget = self.budget
        if seconds != self.budget_of or budget is None:
            self.budget_of = seconds
            budget = self.budget = budget_ms(seconds)
        return budget

    def register(self, fut: asyncio.Future[Any], deadline: float | None,
                 msg: dict[str, Any]) -> int:
        """The table entry of call ``msg``: its rid (metered, with its start and series)."""
        meter = self.meter
        if meter is None:
            return self.table.add(fut, deadline, msg)
        return self.table.add(fut, deadline, msg, monotonic(), meter.known(msg))

    def add(self, msg: dict[str, Any],
            timeout: float | None) -> tuple[asyncio.Future[Any], int, float | None]:
        """Register call ``msg`` without sending it: ``(future, rid, deadline or
        None)``; ``send_queued`` sends it (now, or once the connection is open)."""
        loop = self.loop
        assert loop is not None
        if loop is not self.future_loop:
            self.bind(loop)
        fut = loop.create_future()
        deadline: float | None = None
        if timeout:
            deadline = loop.time() + timeout
            rid = self.register(fut, deadline, msg)
            self.deadlines.added(deadline, loop)
        else:
            rid = self.register(fut, None, msg)
        return fut, rid, deadline

    def send_queued(self, rid: int, msg: dict[str, Any], deadline: float | None) -> None:
        """Send call ``rid`` (registered by ``add``) with the budget it has left, in
        whole ms rounded up; one whose deadline has passed is not sent: it fails with
        its timeout now.

        The budget is counted from the clock, not from ``loop.time()``, which uvloop
        reads once per loop turn: a turn sending many calls would send stale budgets."""
        budget: int | None = None
        if deadline is not None:
            left = deadline - monotonic()
            if left <= 0:
                self.fail(rid, RpcTimeoutError(
                    f"{call_route(msg)} to {self.server_id} got no response in time "
                    f"(it expired while the connection opened; not sent)"), monotonic())
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
        if serving_deadline() is not None:
            timeout = self.owner._inherit(msg, timeout)
        if not self.open:
            later: asyncio.Future[Any] = self.owner._notify_later(msg, timeout)
            return later
        loop = self.loop
        assert loop is not None
        try:
            if self.writer.closed:
                raise ConnectionLostError(f"connection to {self.server_id} is closed")
            budget: int | None = None
            if timeout:
                budget = self.budget if timeout == self.budget_of else self.budget_for(timeout)
            self.send_notify(msg, budget, timeout)
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
        if loop is not self.future_loop:
            self.bind(loop)
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
        if not isinstance(exc, (RpcError, TypeError)):
            exc = RpcError(f"cannot send {call_route(msg)}: {exc}")
        self.fail(rid, exc, monotonic())

    def check_size(self, frame: bytes, msg: dict[str, Any]) -> bytes:
        """``frame``, or RpcError when it exceeds ``pkg_size``."""
        if len(frame) > self.pkg_size:
            raise RpcError(f"{call_route(msg)}: request of {len(frame)} bytes exceeds "
                           f"pkg_size {self.pkg_size}")
        return frame

    def resolve(self, rid: object, value: Any) -> None:
        """Call ``rid`` was answered with ``value`` (in the read that began at
        ``read_at``): its future gets it (if its caller still waits)."""
        if self.meter is None:
            self.table.resolve(rid, value)
            return
        entry = self.table.take(rid)
        if entry is None or entry.info is None:    # (None: a notify's reserved id)
            return
        fut = entry.future
        if type(entry.info) is str:     # entered before the meter came: not counted
            if not fut.done():
                fut.set_result(value)
            return
        outcome = OK
        if fut.done():
            outcome = CANCELLED
        else:
            fut.set_result(value)
        if entry.series is None:        # its route's first answer: made now
            self.meter.series(entry.info).add_index(outcome, self.read_at - entry.start)
        else:
            series: Series = entry.series
            series.add_index(outcome, self.read_at - entry.start)

    def fail(self, rid: object, exc: BaseException, now: float) -> None:
        """Call ``rid`` failed with ``exc`` (at ``now``, the clock: for metrics)."""
        if self.meter is None:
            self.table.reject(rid, exc)
            return
        entry = self.table.take(rid)
        if entry is not None:
            self.ended(entry, exc, now)

    def ended(self, entry: PendingCall, exc: BaseException, now: float) -> None:
        """A call of the table (already out of it) failed with ``exc``: its future gets
        it, unless its caller gave up; counted when metered."""
        meter = self.meter
        fut = entry.future
        if entry.info is None:          # a notify's reserved id: not a call
            return
        if type(entry.info) is str:     # entered before the meter came: not counted
            meter = None
        if not fut.done():
            fut.set_exception(exc)
            if meter is not None:
                meter.failed(entry.info, exc, now - entry.start)
        elif meter is not None:
            meter.cancelled(entry.info, now - entry.start)

    def reject_remote(self, rid: object, type_name: Any, message: Any, stack: Any,
                      fields: Any = None) -> None:
        """Call ``rid`` failed on the server: RemoteError (with the error's ``fields``,
        a dict, if it sent any), or ServerBusyError when the server refused it at once
        (admission control: it never ran)."""
        exc: RpcError
        if type_name == "ServerBusyError":
            exc = ServerBusyError(f"{self.server_id}: {message}", self.server_id)
        else:
            exc = RemoteError(message, type_name, stack, self.server_id,
                              fields if type(fields) is dict else None)
        self.fail(rid, exc, self.read_at)

    def fail_all(self, error: type[ConnectionLostError], reason: str) -> None:
        """The connection is gone for good: every call fails with ``error(reason)``,
        no timer is left, nothing more is written."""
        self.open = False
        table = self.table
        if table.expired is None:       # its own timer (else the loop's, shared: re-armed)
            self.deadlines.cancel()
        self.writer.detach()
        now = monotonic()
        entries = table.drain_entries()
        if table.expired is not None:
            self.deadlines.arm()
        for entry in entries:
            self.ended(entry, error(reason), now)

    # deadlines ---------------------------------------------------------------

    def loop_time(self) -> float:
        """The clock of the table's deadlines: the loop's."""
        assert self.loop is not None
        return self.loop.time()

    def timed_out(self, entries: list[PendingCall]) -> None:
        """The deadline timer expired these calls: each fails with RpcTimeoutError."""
        now = monotonic()
        for entry in entries:
            self.ended(entry, RpcTimeoutError(
                f"{route_of(entry.info)} to {self.server_id} got no response in time"), now)

    def received(self, size: int = 0) -> None:
        """``size`` bytes arrived: the peer is alive, and a deadline that passed before
        they were read wins over the answer in them (the loop may run I/O before a
        timer that is already due)."""
        assert self.loop is not None
        clock = self.loop_clock
        now = self.last_recv = clock() if clock is not None else self.loop.time()
        meter = self.meter
        if meter is not None:
            self.read_at = monotonic()
            meter.received += size
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
        #: method ids from the server's HELLO (replaced by the next, never changed in place)
        self.ids: dict[tuple[str, str, str], int] = {}
        # the last method looked up in ``ids`` and its id: most requests on a connection
        # name the method of the one before, with the same str objects (the proxy's)
        self.last_ids: dict[tuple[str, str, str], int] | None = None
        self.last_ns: Any = None
        self.last_service: Any = None
        self.last_method: Any = None
        self.last_mid: int | None = None

    def method_id(self, ns: Any, service: Any, method: Any) -> int | None:
        """The id the server's HELLO gave method ``ns.service.method``, or None."""
        ids = self.ids
        if (method is self.last_method and service is self.last_service
                and ns is self.last_ns and ids is self.last_ids):
            return self.last_mid
        mid = ids.get((ns, service, method))
        self.last_ids = ids
        self.last_ns = ns
        self.last_service = service
        self.last_method = method
        self.last_mid = mid
        return mid

    def data_received(self, data: bytes) -> None:
        """asyncio: decode frames; answers resolve their calls, the rest (PONG, HELLO,
        the handshake) goes to the owner; bad data closes the connection."""
        self.received(len(data))
        table = self.table
        metered = self.meter is not None
        try:
            for msg in self.decoder.feed(data):
                kind = msg[0]
                if kind == RESP_OK:
                    if metered:
                        self.resolve(msg[1], msg[2])
                    else:
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
        ns, service, method, args = call_fields(msg)
        mid = self.method_id(ns, service, method)
        trace = self.trace
        if trace is None and self.traced:
            trace = msg.get("trace_id")
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
        mid = self.method_id(ns, service, method)
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
        self.received(len(data))
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


class JsonClientProtocol(ForwardingClientProtocol):
    """pomelo-rpc 1.0.7's JSON, the client's side of one connection of the mqtt
    transport (``MqttMailbox``'s: MQTT PUBLISH packets) and of pinus-tcp
    (``PinusTcpMailbox``'s, ``pinus`` True: pinus-rpc's varint frames).

    Here, the hot path: the packets are decoded, the common answer ``{"id": rid,
    "resp": [null, value]}`` resolves its call, and a call's request is framed in one
    piece (``core.mqtt.encode_call_json`` or ``core.pinus_tcp.encode_call_json``: the
    JSON text between its id and its arguments made once per route, by the owner's
    ``_call_head``; the usual small arguments written in the frame by the compiled
    core) and written. The owner gets every other packet (``_on_packet``:
    pings, pongs, CONNACK, an answer while the first ping is unanswered) and answer
    (``_on_pkg``: arrays of a buffering server, errors), what cannot be decoded
    (``_bad_data``, ``_bad_payload``), the calls it batches or traces (``_send_call``,
    when ``plain_calls`` is False) and the notifies (``_send_notify``).

    ``packets``: the transport's incremental decoder (``feed``), whose answers are the
    packets of kind ``kind_answer`` carrying their payload at ``payload_at``; ``codec``
    (``mqtt_json.json_codec``): ``json``'s text and values exactly, through orjson
    where it gives the same.
    """

    def __init__(self, owner: Mailbox, server_id: str, pkg_size: int, low_id: int,
                 packets: Any, kind_answer: int, payload_at: int, codec: JsonCodec,
                 pinus: bool = False) -> None:
        super().__init__(owner, server_id, pkg_size, low_id)
        self.packets = packets
        self.kind_answer = kind_answer
        self.payload_at = payload_at
        self.pinus = pinus
        #: the JSON codec (``mqtt_json.json_codec``): ``json``'s text and values exactly
        self.codec: JsonCodec = codec
        #: ``,"msg":{...,"args":`` of each route, UTF-8 (the owner's ``_call_head``
        #: fills it)
        self.heads: dict[tuple[Any, Any, Any, Any], bytes] = {}
        # the route of the last call written and its head: most calls on a connection
        # name the route of the one before, with the same str objects (the proxy's)
        self.last_ns: Any = None
        self.last_type: Any = None
        self.last_service: Any = None
        self.last_method: Any = _NO_ROUTE
        self.last_head = b""
        #: calls are written here (else the owner's ``_send_call``: buffer_msg, tracing)
        self.plain_calls = True
        self.heard = False          # any byte received yet

    def data_received(self, data: bytes) -> None:
        """asyncio: decode the packets; resolve the calls the common answers answer."""
        self.received(len(data))
        self.heard = True
        owner = self.owner
        try:
            packets = self.packets.feed(data)
        except FrameError as exc:
            owner._bad_data(exc)
            return
        kind = self.kind_answer
        at = self.payload_at
        # (the first ping's wait begins before any call, and ends in ``_on_packet``)
        checking = owner._ping_check
        for packet in packets:
            if packet[0] != kind or checking:
                owner._on_packet(packet)
                checking = owner._ping_check
            else:
                self.answer(packet[at])

    def answer(self, payload: bytes) -> None:
        """An answer's payload: the common answer resolves its call, any other JSON
        goes to the owner's ``_on_pkg``, what is not JSON to its ``_bad_payload``."""
        if self.common_answer(payload):
            return
        try:
            pkg = self.codec.loads(payload)
        except ValueError as exc:
            self.owner._bad_payload(exc)
            return
        if type(pkg) is dict:
            rid = pkg.get("id")
            resp = pkg.get("resp")
            if type(rid) is int and type(resp) is list and len(resp) == 2 and resp[0] is None:
                self.resolve(rid, resp[1])
                return
        self.owner._on_pkg(pkg)

    def common_answer(self, payload: bytes) -> bool:
        """Resolve the call a common answer answers, written as a server writes it
        (``core.mqtt.answer_parts``), its value parsed alone: True; else False, nothing
        done. A value that is not valid alone (or another text) goes through the whole
        parse."""
        parts = answer_parts(payload)
        if parts is None:
            return False
        try:
            value = self.codec.loads_short(parts[1])
        except ValueError:
            return False
        self.resolve(parts[0], value)
        return True

    def call_json(self, rid: int, msg: dict[str, Any], budget: int | None) -> bytes:
        """The JSON payload of call ``rid``: ``{"id": rid, "msg": {"namespace",
        "serverType", "service", "method", "args"}}``, with ``"budget"`` (ms left, which
        a Node server ignores) after the id when it has a deadline."""
        head = self.call_head(msg)
        args = self.codec.dumps_bytes(msg["args"])
        if budget is None:
            return b'{"id":%d%b%b}}' % (rid, head, args)
        return b'{"id":%d,"budget":%d%b%b}}' % (rid, budget, head, args)

    def call_head(self, msg: dict[str, Any]) -> bytes:
        """``,"msg":{"namespace":…,"serverType":…,"service":…,"method":…,"args":`` of
        call ``msg``'s route (made by the owner's ``_call_head`` the first time)."""
        ns = msg["namespace"]
        server_type = msg.get("server_type")
        service = msg["service"]
        method = msg["method"]
        if (method is self.last_method and service is self.last_service
                and ns is self.last_ns and server_type is self.last_type):
            return self.last_head
        key = (ns, server_type, service, method)
        try:
            head: bytes = self.heads[key]
        except (KeyError, TypeError):
            head = self.owner._call_head(key)       # (not kept here: see ``_call_head``)
            return head
        self.last_ns = ns
        self.last_type = server_type
        self.last_service = service
        self.last_method = method
        self.last_head = head
        return head

    def send_call(self, rid: int, msg: dict[str, Any], budget: int | None) -> None:
        """Write call ``rid``'s request, framed in one piece."""
        if not self.plain_calls:
            self.owner._send_call(rid, msg, budget)
            return
        head = self.call_head(msg)
        if self.pinus:
            frame = pinus_encode_call(rid, budget, head, msg["args"], self.codec)
        else:
            frame = mqtt_encode_call(rid, budget, head, msg["args"], self.codec)
        if len(frame) > self.pkg_size:
            self.check_size(frame, msg)
        self.writer.write(frame)
