# cython: annotation_typing=False
"""Coalesced writes of one connection, for either side: one source for both cores.

Imported as it is for the pure-Python core; compiled with ``pomelo_rpc/_cy/writer.pxd``.

Two ways in. ``write(data)``: the first write of a loop turn (on any connection of
the loop) goes out at once (no added latency); the writes after it are held, each
connection's together, and go out every ``WRITE_CHUNK`` writes the loop holds (so
the peers start on them while this loop makes the rest; later when they are spread
thinner than two per connection) and at the end of the turn: with many connections
each carrying a few calls, or calls spread over many servers, one write per
connection and chunk, not one per call. ``queue(data)`` then ``flush()``: a batch
made in one callback (the answers to the requests of one read) goes out in one
``writelines`` when the callback ends, or every ``WRITE_CHUNK`` answers. ``sent()``
is a future of the moment what was written so far reaches the transport (a notify's
awaitable).

The end of a loop turn is the loop's ``Turn``: one callback per turn for every
connection of the loop (and the servers' handler slices, which it ends, and any other
per-turn hook), never one per connection.
"""

from __future__ import annotations

import socket
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionLostError
from .clock import monotonic

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from .meter import Meter

#: Messages queued in one loop turn are written every WRITE_CHUNK of them, not all at
#: the end: the peer starts on the first ones while the rest are being made (with 100
#: calls in flight, writing a whole turn's messages at once left client and server
#: taking turns, each idle while the other worked).
WRITE_CHUNK = 32

#: ``sent()`` is done at once for this many writes held in a loop turn (on any
#: connection of the loop), then waits for the writes to go out: a producer of
#: notifies runs on without a task switch for each, and still yields to the loop
#: once per turn past this many.
EARLY_SENT = 128


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on the transport's socket (no 40 ms stalls)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


#: TCP_USER_TIMEOUT (Linux; the constant is missing from ``socket`` elsewhere)
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def set_user_timeout(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Drop the connection when data it sent stays unacknowledged for ``seconds``
    (TCP_USER_TIMEOUT): a peer cut off by the network is found in seconds, not after
    the kernel's many minutes of retransmissions. 0: the system's default."""
    sock = transport.get_extra_info("socket")
    if not seconds or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, max(1, int(seconds * 1000)))
    except OSError:      # not Linux
        pass


class Slice:
    """A server's slice of handler time per loop turn (its overload controller's,
    shared by its connections): ``end`` is the clock at which this turn's slice ends,
    0.0 until a request of the turn starts it (``Turn.start_slice``) and again once the
    turn ends. Plain fields, read by the compiled protocol without a Python lookup."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds      # the slice's length
        self.end = 0.0


class Turn:
    """The end of the loop turns of one event loop (``turn_of(loop)``): the writers
    holding writes, and the hooks that run when the turn ends, all from one callback
    per turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled = False      # the end of this turn is due (its callback is queued)
        self.wrote = False          # a write went out at once in this turn
        #: the writers holding writes made in this turn, and how many writes they hold
        self.pending: list[Writer] = []
        self.held = 0
        self.hooks: list[Callable[[], None]] = []
        #: the slices of handler time started in this turn (``start_slice``)
        self.slices: list[Slice] = []
        #: ``sent()`` futures still to be done at once in this turn (see EARLY_SENT)
        self.early = EARLY_SENT

    def schedule(self) -> None:
        """Make sure the end of this turn runs."""
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.end)

    def at_end(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` once, when this turn ends."""
        self.hooks.append(hook)
        self.schedule()

    def start_slice(self, turn_slice: Slice) -> float:
        """Start a server's slice of handler time in this turn: its ``end``, returned,
        is the clock ``turn_slice.seconds`` from now until the turn ends, then 0.0 (set
        here: no hook to call per server)."""
        end: float = monotonic() + turn_slice.seconds
        turn_slice.end = end
        self.slices.append(turn_slice)
        self.schedule()
        return end

    def hold(self, writer: Writer) -> None:
        """``writer`` holds one more write: all go out every WRITE_CHUNK of them (the
        peers start on them while this loop makes the rest), as long as they make two
        writes per connection on average (calls spread thin over many connections wait
        for more), and at the end of the turn."""
        pending = self.pending
        if not writer.held:
            writer.held = True
            pending.append(writer)
        self.held += 1
        if self.held >= WRITE_CHUNK and self.held >= 2 * len(pending):
            self.flush()

    def flush(self) -> None:
        """Send every write held."""
        self.held = 0
        pending = self.pending
        if pending:
            self.pending = []
            for writer in pending:
                writer.held = False
                writer._send()

    def end(self) -> None:
        """The turn ended: send what is held, run the hooks."""
        self.scheduled = False
        self.wrote = False
        self.early = EARLY_SENT
        self.flush()
        slices = self.slices
        if slices:
            self.slices = []
            for turn_slice in slices:
                turn_slice.end = 0.0
        hooks = self.hooks
        if hooks:
            self.hooks = []
            for hook in hooks:
                hook()


def per_loop(registry: weakref.WeakKeyDictionary[Any, weakref.ref[Any]],
             loop: asyncio.AbstractEventLoop, make: Callable[[Any], Any]) -> Any:
    """The object ``make(loop)`` made for ``loop`` in ``registry``, made again once
    nothing holds it: the registry holds neither the loop nor the object (which holds
    its loop), so a closed loop and what was made for it go when their users do."""
    ref = registry.get(loop)
    made = ref() if ref is not None else None
    if made is None:
        made = make(loop)
        registry[loop] = weakref.ref(made)
    return made


#: the ``Turn`` of each loop, held by the writers and servers using it
_turns: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()


def turn_of(loop: asyncio.AbstractEventLoop) -> Turn:
    """The ``Turn`` of ``loop`` (made on first use)."""
    turn: Turn = per_loop(_turns, loop, Turn)
    return turn


class Writer:
    """The write side of one connection; see the module docstring."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._turn: Turn | None = None
        self._out: list[bytes] = []
        self.closed = False          # no more writes (EOF sent, or the connection closed)
        self.held = False            # in its turn's writers holding writes
        #: metrics: the bytes written are counted there (None: not counted)
        self.meter: Meter | None = None
        self._sent: asyncio.Future[None] | None = None     # see ``sent``: done
        self._flushed: asyncio.Future[None] | None = None  # ... and the next send's

    def attach(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        """Write to ``transport`` from now on."""
        self.transport = transport
        self._turn = turn_of(loop)
        self.closed = False

    def turn(self) -> Turn:
        """The ``Turn`` of this connection's loop (attached)."""
        turn = self._turn
        assert turn is not None
        return turn

    def detach(self) -> None:
        """The connection is gone: drop what is queued, write nothing more."""
        self.transport = None
        self.closed = True
        self._out.clear()
        self._flushed_now(False)

    def sent(self) -> asyncio.Future[None]:
        """A future done once what was written so far has reached the transport (at
        once if it has), failed with ConnectionLostError if the connection goes first;
        done at once, too, for the first EARLY_SENT writes held in a loop turn (they go
        out with the turn's, at its end at the latest)."""
        turn = self._turn
        assert turn is not None
        loop = turn.loop
        if self._out:
            if turn.early > 0:
                turn.early -= 1
            else:
                fut = self._flushed
                if fut is None:
                    fut = self._flushed = loop.create_future()
                return fut
        done = self._sent
        if done is None:
            done = self._sent = loop.create_future()
            done.set_result(None)
        return done

    @property
    def queued(self) -> int:
        """Messages queued and not yet written."""
        return len(self._out)

    def write(self, data: bytes) -> None:
        """Send ``data`` now if it is the first write of this loop turn, else with this
        connection's next ones (see the module docstring)."""
        if self.closed or self.transport is None:
            return
        turn = self._turn
        assert turn is not None
        self._out.append(data)
        if not turn.wrote:              # the turn's first write: at once
            turn.wrote = True
            turn.schedule()
            self._send()
        else:
            turn.hold(self)

    def queue(self, data: bytes) -> None:
        """Queue ``data`` for the next ``flush`` (sent at once past WRITE_CHUNK queued)."""
        out = self._out
        out.append(data)
        if len(out) >= WRITE_CHUNK:
            self._send()

    def flush(self) -> None:
        """Send what is queued (with the writes this connection holds, if any)."""
        if self._out:
            self._send()

    def flush_now(self) -> None:
        """Send what is queued now."""
        if self._out:
            self._send()

    def direct(self, data: bytes) -> None:
        """Write ``data`` at once, whatever is queued (a handshake frame, a greeting)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)
            if self.meter is not None:
                self.meter.sent += len(data)

    def _send(self) -> None:
        out = self._out
        if not out:
            return
        transport = self.transport
        if transport is not None and not self.closed:
            meter = self.meter
            if len(out) == 1:
                transport.write(out[0])
                if meter is not None:
                    meter.sent += len(out[0])
            else:
                transport.writelines(out)
                if meter is not None:
                    for data in out:
                        meter.sent += len(data)
            if self._flushed is not None:
                self._flushed_now(True)
        elif self._flushed is not None:
            self._flushed_now(False)
        out.clear()

    def _flushed_now(self, written: bool) -> None:
        """The writes ``sent()`` waited for went out (or never will)."""
        flushed = self._flushed
        self._flushed = None
        if flushed is not None and not flushed.done():
            if written:
                flushed.set_result(None)
            else:
                flushed.set_exception(ConnectionLostError(
                    "the connection closed before the write went out"))
