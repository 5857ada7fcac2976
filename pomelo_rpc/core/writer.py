# cython: annotation_typing=False
"""Coalesced writes of one connection, for either side: one source for both cores.

Imported as it is for the pure-Python core; compiled with ``pomelo_rpc/_cy/writer.pxd``.

Two ways in. ``write(data)``: the first write of a loop turn goes out at once (no
added latency); the ones after it in the same turn are collected and go out every
``WRITE_CHUNK`` of them and at the end of the turn. ``queue(data)`` then ``flush()``:
a batch made in one callback (the answers to the requests of one read) goes out in
one ``writelines`` when the callback ends, or every ``WRITE_CHUNK`` answers.
``sent()`` is a future of the moment what was written so far reaches the transport
(a notify's awaitable).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ..errors import ConnectionLostError

if TYPE_CHECKING:
    import asyncio

#: Messages queued in one loop turn are written every WRITE_CHUNK of them, not all at
#: the end: the peer starts on the first ones while the rest are being made (with 100
#: calls in flight, writing a whole turn's messages at once left client and server
#: taking turns, each idle while the other worked).
WRITE_CHUNK = 32


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


class Writer:
    """The write side of one connection; see the module docstring."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: list[bytes] = []
        self._scheduled = False      # a flush at the end of this loop turn is due
        self.closed = False          # no more writes (EOF sent, or the connection closed)
        self._sent: asyncio.Future[None] | None = None     # see ``sent``: done
        self._flushed: asyncio.Future[None] | None = None  # ... and the next send's

    def attach(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        """Write to ``transport`` from now on."""
        self.transport = transport
        self._loop = loop
        self.closed = False

    def detach(self) -> None:
        """The connection is gone: drop what is queued, write nothing more."""
        self.transport = None
        self.closed = True
        self._out.clear()
        self._flushed_now(False)

    def sent(self) -> asyncio.Future[None]:
        """A future done once what was written so far has reached the transport (at
        once if it has), failed with ConnectionLostError if the connection goes first."""
        loop = self._loop
        assert loop is not None
        if self._out:
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
        """Send ``data`` now if it is the first of this loop turn, else with the turn's
        others (every WRITE_CHUNK of them, and at the end of the turn)."""
        if self.closed or self.transport is None:
            return
        if self._scheduled:
            out = self._out
            out.append(data)
            if len(out) >= WRITE_CHUNK:
                self._send()
        else:
            if self._out:
                self._out.append(data)
                self._send()
            else:
                self.transport.write(data)
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._end_of_turn)

    def queue(self, data: bytes) -> None:
        """Queue ``data`` for the next ``flush`` (sent at once past WRITE_CHUNK queued,
        unless the turn's flush is due anyway)."""
        out = self._out
        out.append(data)
        if len(out) >= WRITE_CHUNK and not self._scheduled:
            self._send()

    def flush(self) -> None:
        """Send what is queued, unless the end of this loop turn will."""
        if self._out and not self._scheduled:
            self._send()

    def flush_now(self) -> None:
        """Send what is queued now."""
        if self._out:
            self._send()

    def _end_of_turn(self) -> None:
        self._scheduled = False
        if self._out:
            self._send()

    def _send(self) -> None:
        out = self._out
        transport = self.transport
        if transport is not None and not self.closed:
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)
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
