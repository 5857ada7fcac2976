# cython: annotation_typing=False
"""The server's side of one connection: one source for both cores.

Imported as it is for the pure-Python core; compiled with
``pomelo_rpc/_cy/server_protocol.pxd`` (an extension type calling the frame decoder,
the dispatcher, the encoders and the writer as C functions) for the Cython core.

``ServerProtocol`` is the asyncio protocol of one native server connection: it
decodes the requests of each read, admits them (the overload rules: max_in_flight,
deadlines, the handler slice), dispatches them, encodes the answers and writes them
in one flush at the end of the read. The connection that owns it
(``pomelo_rpc.acceptor.ServerConnection``) keeps the lifecycle: admission of the
connection, the auth_token handshake, the overload queue, the graceful stop.

An ``async def`` method runs eagerly: its first step runs at once, in a copy of the
current context (``run_coroutine``); one that finishes there is answered with no
Task and no extra loop turn, one that suspends goes on in a Task (``Resume``).

With ``read_coalesce`` (``ReadCoalescer``, ``pace``), while requests arrive fast a
connection's socket wakes the loop at most once per window, and one read serves what
arrived meanwhile; answers still go out at the end of their read.

A notify (a native notify frame; a transport's request that wants no answer) runs like
a call, under the same deadlines and admission rules, with ``None`` as its rid: nothing
is sent back, and what it raises is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import DispatchError, FrameError, error_fields
from ..overload import DEADLINE_PASSED, BadBudget
from .clock import monotonic
from .context import copy_current, reset_deadline, reset_trace, set_deadline, set_trace
from .coro import Suspended, step
from .dispatch import DONE, NOTIFY_RID, PENDING
from .frames import (NOTIFY_ID, NOTIFY_NAME, PING, PONG_FRAME, REQ_ID, REQ_NAME, FrameDecoder,
                     encode_error, encode_response)
from .writer import Slice, Writer

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator

    from ..acceptor import ServerConnection
    from ..overload import Entry, Overload
    from .meter import Meter
    from .sampling import Sampler, Served
    from .dispatch import Dispatcher

log = logging.getLogger("pomelo_rpc.server_protocol")

_CancelledError = asyncio.CancelledError


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """``(type_name, message, stack)`` of an exception, as sent to the caller."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return type(exc).__name__, str(exc), stack



class Resume:
    """The rest of a coroutine call whose first step suspended, as a coroutine for a
    Task: its first step hands the Task what the call yielded (the future it waits
    for), the next ones drive the call with ``send``/``throw``. Its StopIteration is
    the call's: the Task takes the call's return value from it."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded
        self.started = False       # the Task has had ``yielded``

    def send(self, value: Any) -> Any:
        """The Task's step: ``yielded`` first, then the call's next step."""
        if not self.started:
            self.started = True
            return self.yielded
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """The Task throws into the call (CancelledError at a deadline, or a stop)."""
        self.started = True
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)

    def close(self) -> None:
        """Close the call."""
        self.coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        """A coroutine's own iterator: itself."""
        return self

    def __iter__(self) -> Resume:
        """Itself (``__await__``)."""
        return self

    def __next__(self) -> Any:
        """``send(None)``."""
        return self.send(None)


#: ``read_coalesce``: a connection's reads are held only while its requests arrive at
#: least this many per window on average; after FRUITLESS holds in a row that each
#: gathered fewer (one client sending one request at a time gains nothing from a hold,
#: it only waits; many clients' requests seldom fall short three times running) the
#: holds stop for a while: BACKOFF_FIRST windows, twice as long each time again, up to
#: BACKOFF_MAX windows
COALESCE_MIN = 2.0
FRUITLESS = 3
BACKOFF_FIRST = 4.0
BACKOFF_MAX = 256.0
#: the weight of a read's gap between requests in that average
COALESCE_WEIGHT = 0.25
#: held, a connection's socket is readable only once this many bytes wait
#: (SO_RCVLOWAT): the kernel does not wake the loop for less, and wakes it for more
#: (bytes waiting stay bounded whatever the window)
HOLD_BYTES = 16384

_SOL_SOCKET = socket.SOL_SOCKET
_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", 18)


class ReadCoalescer:
    """``read_coalesce``, an acceptor's: its connections' held reads (see
    ``ServerProtocol.pace``), all released by one timer ``window`` s after the first of
    them was held, as a network card moderates its interrupts. A held connection's
    socket wakes the loop for nothing smaller than HOLD_BYTES until then; its answers
    are written as ever, at once."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.held: list[ServerProtocol] = []   # the connections holding their reads
        self.timer: asyncio.TimerHandle | None = None
        self.holds = 0                 # reads held so far (for the docs' figures)

    def hold(self, protocol: ServerProtocol) -> None:
        """Hold ``protocol``'s reads until the timer (started now if not running)."""
        if not protocol.hold_reads():
            return
        self.holds += 1
        self.held.append(protocol)
        if self.timer is None:
            loop = protocol.loop
            assert loop is not None
            self.timer = loop.call_later(self.window, self.release)

    def release(self) -> None:
        """The timer: every held connection reads again (what waits is read at once)."""
        self.timer = None
        held = self.held
        self.held = []
        for protocol in held:
            protocol.release_reads()

    def forget(self, protocol: ServerProtocol) -> None:
        """``protocol``'s connection closed while held: no timer left for it alone."""
        if protocol in self.held:
            self.held.remove(protocol)
        if not self.held and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        """The acceptor stops: every held connection reads again, the timer is off."""
        if self.timer is not None:
            self.timer.cancel()
        self.release()


class ServerProtocol:
    """The asyncio protocol of one native server connection; see the module docstring.

    ``owner`` (its ServerConnection) gets ``_connection_made(transport)``,
    ``_connection_lost(exc)``, the handshake bytes (``_on_handshake``), the requests
    read while it stops (``_refuse``) and the aborts (``_abort``). ``dispatch`` is the
    dispatcher's, or what an observer (metrics, tracing) put in its place. A transport
    speaking another protocol subclasses it (``pomelo_rpc.mqtt_acceptor``) with its own
    ``data_received``, ``encode_result``, ``encode_failure``, ``respond`` and ``send``.
    """

    def __init__(self, owner: ServerConnection, dispatcher: Dispatcher, overload: Overload,
                 max_frame: int) -> None:
        self.owner = owner
        self.writer = Writer()
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.decoder = FrameDecoder(max_frame)
        self.dispatcher = dispatcher
        self.own_dispatch: Callable[[object], tuple[Any, int, Any]] = dispatcher.dispatch
        #: what runs a request: the dispatcher's, or an observer's wrapper of it
        self.dispatch: Callable[[object], tuple[Any, int, Any]] = self.own_dispatch
        self.overload = overload
        # the overload options the reads look at (fixed for an acceptor's life)
        self.cap = -1 if overload.max_in_flight is None else overload.max_in_flight
        self.plain = not overload.deadlines
        #: the acceptor's slice of handler time in this turn (``core.writer.Slice``)
        self.turn_slice: Slice = overload.turn_slice
        self.no_default = overload.default_budget is None
        self.queue = owner._queue       # requests waiting for a later turn (the owner's)
        self.tasks: set[asyncio.Future[Any]] = set()   # coroutine calls still running
        self.stopping: float | None = None   # the stop grace, once the stop has begun
        self.handshaking = False      # the auth_token is not proven yet: bytes go to the owner
        self.aborted = False
        self.tracing = False          # requests carry a trace context (an observer reads it)
        self.reading_paused = False
        #: reads of this connection so far: the acceptor's idle sweep compares it from
        #: one sweep to the next (cheaper than a clock read per read)
        self.reads = 0
        #: metrics: where the calls and the bytes are counted (None: not counted)
        self.meter: Meter | None = None
        #: tracing: decides each request's sampling (a ``core.sampling.Sampler``; None:
        #: no tracing here, or ``dispatch`` is an observer's for every request); a
        #: sampled request runs through ``traced_dispatch`` (which makes its span), an
        #: unsampled one with its traceparent current (``pomelo_rpc.tracing``)
        self.tracer: Sampler | None = None
        #: tracing: the trace context of the requests a read runs (a
        #: ``core.sampling.Served`` of ``tracer``'s, or None)
        self.served: Served | None = None
        self.traced_dispatch: Callable[[object], tuple[Any, int, Any]] = self.own_dispatch
        #: ``accept``'s deadline current in the context during a read (0.0: none), and
        #: the token of the read's first ``set_deadline`` (``end_read`` restores it)
        self.read_deadline = 0.0
        self.read_token: Any = None
        #: ``read_coalesce`` (None: off): the acceptor's ``ReadCoalescer``; the gap
        #: between this connection's requests, averaged; the clock at its last read of
        #: requests; its reads held now; its socket's ``setsockopt``
        self.coalescer: ReadCoalescer | None = None
        self.read_gap = 0.0
        self.last_read = 0.0
        self.held = False
        self.setsockopt: Callable[..., Any] | None = None
        #: the next read is the first since a hold: it says what the hold gathered;
        #: holds stop for ``backoff`` s, until ``quiet_until``, after one that gathered
        #: too little
        self.judging = False
        self.fruitless = 0
        self.backoff = 0.0
        self.quiet_until = 0.0

    # asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        """asyncio: connected; the owner admits the connection (or aborts it)."""
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.writer.attach(transport, self.loop)
        coalescer = self.coalescer
        if coalescer is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.setsockopt = sock.setsockopt
            self.read_gap = coalescer.window
        self.owner._connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection closed; calls still running are cancelled."""
        for task in self.tasks:
            task.cancel()
        if self.held:
            self.held = False
            if self.coalescer is not None:
                self.coalescer.forget(self)
        self.writer.detach()
        self.transport = None
        owner = self.owner
        # the connection is over: the owner is forgotten, so that the two (which refer
        # to each other) are freed at once, not at the cycle collector's next full pass
        self.owner = None  # type: ignore[assignment]
        owner._connection_lost(exc)

    def eof_received(self) -> bool | None:
        """asyncio: the peer closed its side; the transport closes ours."""
        return None

    def pause_writing(self) -> None:
        """asyncio: the peer does not read its answers; stop reading and running its
        requests until it does (those already read wait in the connection's queue), so
        that a stuck or hostile client cannot grow the write buffer forever."""
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
            self.owner._paused()

    def resume_writing(self) -> None:
        """asyncio: the answers drained; read requests again."""
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
            self.owner._resumed()

    def read(self, data: bytes) -> list[Any] | None:
        """The messages of ``data`` to run, or None when the owner has them instead: the
        handshake's bytes, a stream that cannot be decoded (the connection is aborted),
        requests arriving while the server stops (refused)."""
        self.reads += 1
        if self.meter is not None:
            self.meter.received += len(data)
        if self.handshaking:
            self.owner._on_handshake(data)
            return None
        try:
            msgs = self.decode(data)
        except FrameError as exc:
            self.owner._abort(exc)
            return None
        if self.stopping is not None:
            self.owner._refuse(msgs)
            return None
        if self.coalescer is not None and msgs and not self.held:
            self.pace(len(msgs))
        return msgs

    def pace(self, n: int) -> None:
        """``read_coalesce``: a read brought ``n`` messages. Hold the next reads for the
        window (``ReadCoalescer``) while requests arrive at least COALESCE_MIN per window
        on average, unless holds that gathered fewer stopped them for a while (see
        FRUITLESS); else read on as ever. A request waits at most about the window."""
        coalescer = self.coalescer
        assert coalescer is not None
        window = coalescer.window
        now = monotonic()
        if self.judging:
            self.judging = False
            if n >= COALESCE_MIN:
                self.fruitless = 0
                self.backoff = 0.0
            else:
                self.fruitless += 1
            if self.fruitless >= FRUITLESS:
                self.fruitless = 0
                backoff = self.backoff * 2.0
                if backoff < window * BACKOFF_FIRST:
                    backoff = window * BACKOFF_FIRST
                elif backoff > window * BACKOFF_MAX:
                    backoff = window * BACKOFF_MAX
                self.backoff = backoff
                self.quiet_until = now + backoff
        gap = (now - self.last_read) / n
        self.last_read = now
        if gap > window:
            gap = window
        self.read_gap += (gap - self.read_gap) * COALESCE_WEIGHT
        if self.read_gap * COALESCE_MIN <= window and now >= self.quiet_until:
            coalescer.hold(self)

    def hold_reads(self) -> bool:
        """Make the socket wake the loop only for HOLD_BYTES or more (or its close);
        False if it cannot (no socket option here: the reads go on as ever)."""
        setsockopt = self.setsockopt
        if setsockopt is None or self.transport is None:
            return False
        try:
            setsockopt(_SOL_SOCKET, _SO_RCVLOWAT, HOLD_BYTES)
        except OSError as exc:
            log.warning("read_coalesce: SO_RCVLOWAT cannot be set here (%s): reads not held",
                        exc)
            self.setsockopt = None
            return False
        self.held = True
        return True

    def release_reads(self) -> None:
        """The window ended: the socket wakes the loop for any byte again (Linux signals
        what waits at once)."""
        if not self.held:
            return
        self.held = False
        self.judging = True
        setsockopt = self.setsockopt
        if setsockopt is not None and self.transport is not None:
            try:
                setsockopt(_SOL_SOCKET, _SO_RCVLOWAT, 1)
            except OSError:
                pass      # closing: its close is being read

    def decode(self, data: bytes) -> list[Any]:
        """The messages ``data`` completes (a transport's subclass decodes its own)."""
        return self.decoder.feed(data)

    def data_received(self, data: bytes) -> None:
        """asyncio: decode frames, run the requests, write the answers ready now at once."""
        msgs = self.read(data)
        if msgs is None:
            return
        arrived = monotonic()
        overload = self.overload
        queue = self.queue
        cap = self.cap
        # no deadline for a request without a budget (and no default_budget), nor with
        # deadlines off
        plain = self.plain
        no_default = self.no_default
        # the deadline the handler reads (and a coroutine's task keeps): set for each
        # request that has one, cleared for one without, and the context restored as
        # it was once, at the end of the batch (not a set and a reset per request)
        token = None
        live = False
        last = 0.0        # the deadline set, while ``live``
        deadline = None   # it, as the float handed on
        # tracing: the trace context of each request that has one (not sampled) made
        # current likewise, cleared for one without, restored once at the end of the
        # batch (``served``)
        served = self.served
        # this turn's slice of handler time: read once per read, and again after a
        # request ``submit`` took (which starts the slice when none has started)
        turn_slice = self.turn_slice
        end: float = turn_slice.end
        started = end != 0.0
        try:
            for msg in msgs:
                if type(msg) is not list or len(msg) < 2 or type(msg[1]) is not int:
                    # a notify frame: run as the request it is made, with no rid (the
                    # common one made here, as ``notify_request`` makes it)
                    n = len(msg) if type(msg) is list else 0
                    if 4 <= n <= 6 and msg[1] is None and msg[0] == NOTIFY_ID:
                        msg[0] = REQ_ID
                        msg[1] = NOTIFY_RID
                    elif not self.notify_request(msg):
                        if self.is_ping(msg):
                            self.respond_pong()
                            continue
                        self.owner._abort(FrameError(f"malformed request frame: {msg!r:.80}"))
                        return
                    rid = None
                else:
                    rid = msg[1]
                n = len(msg)      # the budget field, if any (see core.frames)
                budget = (msg[5] if n == 6 and msg[0] == 1 else
                          msg[7] if n == 8 and msg[0] == 2 else None)
                # the common cases inline (``submit`` in full for the others): this
                # turn's slice not started (the request starts it, as ``submit``'s
                # ``spent`` would) or not spent, nothing queued here, the peer reading
                # its answers, room to hold it, no budget or a live one
                inline = (not queue and not self.reading_paused
                          and (cap < 0 or overload.held < cap)
                          and (not started or monotonic() < end))
                timed = False
                if inline and not (plain or budget is None and no_default):
                    # (compiled: a C integer, no float object made; a budget of 2**31
                    # ms or more takes ``submit``'s way)
                    ms = budget if type(budget) is int and 0 < budget < 0x7FFFFFFF else 0
                    if ms > 0:
                        timed = True
                        at = arrived + ms * 0.001
                        # requests a client sent in one loop turn mostly carry one
                        # budget: the context changes only when the deadline does
                        if not live or at != last:
                            deadline = at
                            set_token = set_deadline(deadline)
                            if token is None:
                                token = set_token
                            live = True
                            last = at
                    else:
                        inline = False
                if not timed and live:
                    set_deadline(None)
                    live = False
                if inline:
                    if not started:
                        # the turn's first request here: with many servers on one loop,
                        # most reads are (a slice per acceptor), so not ``submit``'s way
                        end = self.writer.turn().start_slice(turn_slice)
                        started = True
                    self.run_accepted(msg, rid, deadline if timed else None)
                else:
                    if served is not None:      # ``run_request`` sets its own
                        served.clear()
                    self.submit(msg, rid, budget, arrived)
                    end = turn_slice.end
                    started = end != 0.0
                if self.aborted:
                    return
        finally:
            if token is not None:
                reset_deadline(token)
            if served is not None:
                served.leave()
        self.writer.flush()

    # requests ------------------------------------------------------------

    def notify_request(self, msg: Any) -> bool:
        """Make a native notify frame (see ``core.frames``) the request it is laid out
        as, in place, with ``NOTIFY_RID`` for its rid; False if ``msg`` is none."""
        if type(msg) is not list or len(msg) < 4 or msg[1] is not None:
            return False
        kind = msg[0]
        n = len(msg)
        if kind == NOTIFY_ID and n <= 6:
            msg[0] = REQ_ID
        elif kind == NOTIFY_NAME and 6 <= n <= 8:
            msg[0] = REQ_NAME
        else:
            return False
        msg[1] = NOTIFY_RID
        return True

    def accept(self, request: Any, rid: Any, budget: Any, arrived: float) -> None:
        """A request of another protocol's read (mqtt's), one at a time: run now in the
        common case (as ``data_received`` runs a native one), else ``submit``. The read
        ends with ``end_read``: as in ``data_received``, the deadline set in the context
        stays there for the read's next requests with the same one (requests a client
        sent in one turn mostly share it), cleared for one without."""
        overload = self.overload
        slice_end = self.turn_slice.end
        if slice_end == 0.0 and not self.queue and not self.reading_paused:
            # the turn's first request starts its slice (as ``submit`` would)
            slice_end = self.writer.turn().start_slice(self.turn_slice)
        if (slice_end != 0.0 and not self.queue and not self.reading_paused
                and (self.cap < 0 or overload.held < self.cap) and monotonic() < slice_end):
            if self.plain or (budget is None and self.no_default):
                if self.read_deadline != 0.0:
                    self.clear_deadline()
                self.run_accepted(request, rid, None)
                return
            if type(budget) is int and budget > 0:
                deadline = arrived + budget * 0.001
                if deadline != self.read_deadline:
                    token = set_deadline(deadline)
                    if self.read_token is None:
                        self.read_token = token
                    self.read_deadline = deadline
                self.run_accepted(request, rid, deadline)
                return
        if self.read_deadline != 0.0:
            self.clear_deadline()       # ``submit`` sets its own
        if self.served is not None:     # ``run_request`` sets its own
            self.served.clear()
        self.submit(request, rid, budget, arrived)

    def run_accepted(self, request: Any, rid: Any, deadline: float | None) -> None:
        """``run_request`` of a request a read runs now (``data_received``, ``accept``):
        traced, its trace context made current through the connection's ``served`` (no
        context-variable set per request where the compiled core can avoid it; the
        read's end leaves it)."""
        served = self.served
        if served is None:              # not traced (no ``tracer`` either)
            self.run_dispatched(request, rid, deadline, self.dispatch)
        elif served.enter(self.trace_field(request)):
            self.run_dispatched(request, rid, deadline, self.dispatch)
            served.settle()
        else:                           # sampled: its span, with the SDK
            self.run_dispatched(request, rid, deadline, self.traced_dispatch)

    def clear_deadline(self) -> None:
        """No deadline current for ``accept``'s next request."""
        set_deadline(None)
        self.read_deadline = 0.0

    def end_read(self) -> None:
        """The end of a read whose requests ``accept`` ran: the context as it was."""
        token = self.read_token
        if token is not None:
            self.read_token = None
            self.read_deadline = 0.0
            reset_deadline(token)
        if self.served is not None:
            self.served.leave()

    def submit(self, request: Any, rid: Any, budget: Any, arrived: float) -> None:
        """Run a request now, or queue it for a later turn (this connection has queued
        requests, or the turn's handler slice is spent), or refuse it (busy). ``rid``
        None: a notify, which is never answered."""
        overload = self.overload
        cap = overload.max_in_flight
        if cap is not None and overload.held >= cap:      # overload.full
            overload.refused(self.owner, request, "busy")
            if rid is None:
                self.notify_failed(request, None, "refused: " + overload.busy_text)
            else:
                self.respond(self.encode_busy(rid))
            return
        deadline: float | None
        if type(budget) is int and budget >= 0 and overload.deadlines:
            deadline = arrived + budget * 0.001   # overload.deadline's case
        elif self.plain or (budget is None and self.no_default):
            deadline = None                       # overload.deadline's too, no call
        else:
            try:
                deadline = overload.deadline(budget, arrived)
            except BadBudget as exc:
                self.fail(request, rid, DispatchError(str(exc)))
                return
        end = self.turn_slice.end     # overload.spent(), without its call
        if end == 0.0 and not self.queue and not self.reading_paused:
            # the turn's first request starts its slice (as ``spent`` would): not spent
            self.writer.turn().start_slice(self.turn_slice)
            end = -1.0
        if (self.queue or self.reading_paused
                or (end > 0.0 and monotonic() >= end)):
            overload.enqueue(self.owner, (request, rid, deadline))
        else:
            self.run_entry((request, rid, deadline), None)

    def run_entry(self, entry: Entry, now: float | None = None) -> None:
        """Run a request unless its deadline has passed (then it is counted, not
        answered); with a deadline, ``time_remaining()`` reads it in the handler.
        ``now``: the clock as the caller read it just before, if it did."""
        if self.transport is None or self.aborted:
            return
        request, rid, deadline = entry
        if deadline is None:
            self.run_request(request, rid, None)
            return
        if deadline <= (monotonic() if now is None else now):
            self.overload.refused(self.owner, request, "expired")
            return
        token = set_deadline(deadline)
        try:
            self.run_request(request, rid, deadline)
        finally:
            reset_deadline(token)

    def run_request(self, request: Any, rid: Any, deadline: float | None) -> None:
        """Dispatch a request and answer it (a coroutine's answer when it finishes);
        a notify (``rid`` None) is not answered; metered, counted as it ends; traced, in
        its trace context."""
        if self.tracer is None:
            self.run_dispatched(request, rid, deadline, self.dispatch)
            return
        traced = self.incoming(request)
        if traced is None:              # sampled: its span, with the SDK
            self.run_dispatched(request, rid, deadline, self.traced_dispatch)
            return
        token = set_trace(traced)
        try:
            self.run_dispatched(request, rid, deadline, self.dispatch)
        finally:
            reset_trace(token)

    def incoming(self, request: Any) -> str | None:
        """The trace context to make current while ``request`` runs (its tracer's
        ``incoming`` of its trace field), or None when it is sampled (its span is made)."""
        tracer = self.tracer
        assert tracer is not None
        return tracer.incoming(self.trace_field(request))

    def trace_field(self, request: list[Any]) -> Any:
        """The trace field of ``request`` (a request frame's list; see ``core.frames``),
        or None."""
        n = len(request)
        kind = request[0]
        return (request[4] if kind == 1 and n >= 5 else
                request[6] if kind == 2 and n >= 7 else None)

    def run_dispatched(self, request: Any, rid: Any, deadline: float | None,
                       dispatch: Callable[[object], tuple[Any, int, Any]]) -> None:
        """``run_request`` with ``dispatch`` (the dispatcher's, or a wrapper of it)."""
        meter = self.meter
        start = 0.0
        if meter is not None:
            start = monotonic()
        try:
            if dispatch is self.own_dispatch:
                dispatcher = self.dispatcher
                outcome = dispatcher.run(request)
                state = dispatcher.state
            else:
                _rid, state, outcome = dispatch(request)
        except FrameError as exc:
            self.owner._abort(exc)
            return
        if state == DONE:
            if rid is not None:
                self.respond(self.encode_result(rid, outcome))
                if meter is not None:
                    meter.ok(request, monotonic() - start)
            elif meter is not None:
                meter.notified(request, monotonic() - start)
        elif state == PENDING:
            self.run_coroutine(rid, outcome, deadline, request, start)
        else:
            self.fail(request, rid, outcome)
            if meter is not None:
                meter.failed(request, outcome, monotonic() - start)

    def fail(self, request: Any, rid: Any, exc: BaseException) -> None:
        """Answer call ``rid`` with the error ``exc``; a notify's is logged."""
        if rid is None:
            self.notify_failed(request, exc)
        else:
            self.respond(self.encode_failure(rid, exc))

    def notify_failed(self, request: Any, exc: BaseException | None, why: str = "") -> None:
        """A notify failed, or was refused (``why``): logged, as nobody is told."""
        info = self.dispatcher.describe(request)
        route = info[1] if info is not None else None
        if exc is None:
            log.warning("notify %s not run: %s", route, why)
        else:
            log.error("notify %s failed: %s: %s", route, type(exc).__name__, exc,
                      exc_info=exc)

    def run_coroutine(self, rid: Any, coro: Coroutine[Any, Any, Any],
                      deadline: float | None, request: Any = None, start: float = 0.0) -> None:
        """Run an ``async def`` call eagerly: its first step now, in a copy of the
        current context; answered now if it finishes there, else it goes on in a Task
        (in that context), cancelled at ``deadline`` (unanswered) or at the stop.
        ``request`` and ``start`` (the clock when it began): for metrics."""
        meter = self.meter
        ctx = copy_current()
        try:
            outcome = step(coro, ctx)
            if self.served is not None:
                self.served.stepped(ctx)
        except _CancelledError as exc:
            self.fail(request, rid, _CancelledError(self.cancel_reason()))
            if meter is not None:
                meter.failed(request, exc, monotonic() - start)
            return
        except (KeyboardInterrupt, SystemExit):
            raise      # as a Task would: out of the loop
        except BaseException as exc:
            self.fail(request, rid, exc)
            if meter is not None:
                meter.failed(request, exc, monotonic() - start)
            return
        if type(outcome) is not Suspended:      # it returned ``outcome``
            if rid is not None:
                self.respond(self.encode_result(rid, outcome))
                if meter is not None:
                    meter.ok(request, monotonic() - start)
            elif meter is not None:
                meter.notified(request, monotonic() - start)
            return
        suspended = outcome
        loop = self.loop
        assert loop is not None
        # (typeshed's AbstractEventLoop.create_task lacks ``context``, 3.11's loops have it)
        task: asyncio.Task[Any] = loop.create_task(  # type: ignore[call-arg]
            Resume(coro, suspended.value), context=ctx)
        self.tasks.add(task)
        tid = self.overload.started(task, deadline)
        if rid is None:
            if meter is None:
                task.add_done_callback(partial(self.notify_done, request, tid))
            else:
                task.add_done_callback(partial(self.metered_task_done, None, tid, request,
                                               start))
        elif meter is None:
            task.add_done_callback(partial(self.task_done, rid, tid))
        else:
            task.add_done_callback(partial(self.metered_task_done, rid, tid, request, start))

    def notify_done(self, request: Any, tid: int | None, task: asyncio.Future[Any]) -> None:
        """A notify's coroutine that suspended ended: what it raised is logged."""
        self.tasks.discard(task)
        if self.overload.finished(task, tid) or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.notify_failed(request, exc)

    def metered_task_done(self, rid: Any, tid: int | None, request: Any, start: float,
                          task: asyncio.Future[Any]) -> None:
        """``task_done`` (``notify_done`` for a notify, ``rid`` None), the call counted
        first (``request`` began at ``start``)."""
        meter = self.meter
        if meter is not None:
            seconds = monotonic() - start
            if tid is not None and self.overload.is_cut(task):
                meter.failed(request, _CancelledError(DEADLINE_PASSED), seconds)
            elif task.cancelled():
                meter.failed(request, _CancelledError(), seconds)
            else:
                error = task.exception()
                if error is not None:
                    meter.failed(request, error, seconds)
                elif rid is None:
                    meter.notified(request, seconds)
                else:
                    meter.ok(request, seconds)
        if rid is None:
            self.notify_done(request, tid, task)
        else:
            self.task_done(rid, tid, task)

    def task_done(self, rid: Any, tid: int | None, task: asyncio.Future[Any]) -> None:
        """A coroutine call that suspended ended: send its answer (not if it was cut
        at its deadline: its caller has had its timeout)."""
        self.tasks.discard(task)
        if self.overload.finished(task, tid):
            return
        if self.transport is None:
            return
        if task.cancelled():
            answer = self.encode_failure(rid, _CancelledError(self.cancel_reason()))
        else:
            exc = task.exception()
            if exc is not None:
                answer = self.encode_failure(rid, exc)
            else:
                answer = self.encode_result(rid, task.result())
        # the first answer of a loop turn goes out at once; the ones after it in the
        # same turn go out together at the end of the turn
        self.send(answer)

    def cancel_reason(self) -> str:
        """The message of the CancelledError a cancelled call is answered with."""
        if self.stopping is not None:
            return (f"the server stopped before the call finished "
                    f"(stop grace {self.stopping:g} s)")
        return "the call was cancelled"

    # answers -------------------------------------------------------------

    def respond(self, data: bytes) -> None:
        """Queue an answer for the flush at the end of this read (or turn)."""
        self.writer.queue(data)

    def send(self, data: bytes) -> None:
        """Send an answer made outside a read: at once if it is the turn's first."""
        self.writer.write(data)

    def send_hello(self, frame: bytes) -> None:
        """Send a new HELLO (the method table grew: ``reload_remotes``), after the
        answers already queued; a connection still proving its auth_token gets none."""
        if self.transport is None or self.writer.closed or self.handshaking:
            return
        self.writer.queue(frame)
        self.writer.flush()

    def is_ping(self, msg: Any) -> bool:
        """True if ``msg`` (a decoded frame) is a keepalive ping."""
        return type(msg) is list and len(msg) == 1 and msg[0] == PING

    def respond_pong(self) -> None:
        """Queue the answer to a ping."""
        self.writer.queue(PONG_FRAME)

    def encode_result(self, rid: Any, result: Any) -> bytes:
        """The answer to call ``rid`` that returned ``result``."""
        try:
            return encode_response(rid, result)
        except Exception as exc:  # the result cannot be packed
            return self.encode_failure(rid, TypeError(f"result cannot be serialized: {exc}"))

    def encode_failure(self, rid: Any, exc: BaseException) -> bytes:
        """The answer to call ``rid`` that failed with ``exc``."""
        log.debug("remote call %s failed: %r", rid, exc)
        type_name, message, stack = describe_error(exc)
        return encode_error(rid, type_name, message, stack, error_fields(exc))

    def encode_busy(self, rid: Any) -> bytes:
        """The answer refusing call ``rid`` past ``max_in_flight`` (no stack to format:
        a refusal under load must cost next to nothing)."""
        return encode_error(rid, "ServerBusyError", self.overload.busy_text, None)
