"""The native acceptor: a TCP listener whose connections decode requests, dispatch
them and send the responses back, coalescing the writes of one loop turn."""

import asyncio
import logging
import socket
import traceback

from .errors import FrameError

log = logging.getLogger("pomelo_rpc.acceptor")


def set_nodelay(transport):
    """Turn Nagle's algorithm off on the transport's socket (no 40 ms stalls)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def describe_error(exc):
    """``(type_name, message, stack)`` of an exception, as sent to the caller."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return type(exc).__name__, str(exc), stack


class _Connection(asyncio.Protocol):
    """One client connection of the native acceptor."""

    def __init__(self, acceptor):
        self._acceptor = acceptor
        core = acceptor.core
        self._frames = core.frames
        self._decoder = core.frames.FrameDecoder(acceptor.pkg_size)
        self._dispatch = acceptor.dispatcher.dispatch
        self._done_state = core.dispatch.DONE
        self._pending_state = core.dispatch.PENDING
        self._ping = core.frames.PING
        self._transport = None
        self._out = []
        self._flush_scheduled = False
        self._tasks = set()
        self._peer = None
        self.closed = asyncio.get_running_loop().create_future()

    # asyncio callbacks -------------------------------------------------

    def connection_made(self, transport):
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        set_nodelay(transport)
        self._acceptor.connections.add(self)
        transport.write(self._frames.encode_hello(self._acceptor.dispatcher.table))

    def connection_lost(self, exc):
        self._acceptor.connections.discard(self)
        for task in self._tasks:
            task.cancel()
        self._out.clear()
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        try:
            msgs = self._decoder.feed(data)
        except FrameError as exc:
            self._abort(exc)
            return
        frames = self._frames
        out = []
        for msg in msgs:
            try:
                rid, state, outcome = self._dispatch(msg)
            except FrameError as exc:
                if type(msg) is list and len(msg) == 1 and msg[0] == self._ping:
                    out.append(frames.PONG_FRAME)
                    continue
                self._abort(exc)
                return
            if state == self._done_state:
                out.append(self._encode_result(rid, outcome))
            elif state == self._pending_state:
                task = asyncio.ensure_future(outcome)
                self._tasks.add(task)
                task.add_done_callback(lambda t, rid=rid: self._task_done(rid, t))
            else:
                out.append(self._encode_failure(rid, outcome))
        if out:
            if self._out:
                self._out.extend(out)
            else:
                self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    # responses ---------------------------------------------------------

    def _encode_result(self, rid, result):
        try:
            return self._frames.encode_response(rid, result)
        except Exception as exc:  # the result cannot be packed
            return self._encode_failure(rid, TypeError(f"result cannot be serialized: {exc}"))

    def _encode_failure(self, rid, exc):
        log.debug("remote call %s failed: %r", rid, exc)
        type_name, message, stack = describe_error(exc)
        return self._frames.encode_error(rid, type_name, message, stack)

    def _task_done(self, rid, task):
        self._tasks.discard(task)
        if self._transport is None:
            return
        if task.cancelled():
            frame = self._encode_failure(rid, asyncio.CancelledError("the call was cancelled"))
        elif task.exception() is not None:
            frame = self._encode_failure(rid, task.exception())
        else:
            frame = self._encode_result(rid, task.result())
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self):
        self._flush_scheduled = False
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    # closing -----------------------------------------------------------

    def _abort(self, exc):
        log.warning("closing connection from %s: %s", self._peer, exc)
        if self._transport is not None:
            self._transport.abort()

    async def drain_and_close(self, grace):
        """Wait up to ``grace`` s for calls in flight, send their answers, then close."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        self._flush()
        if self._transport is not None:
            self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout=max(grace, 0.1))
        except asyncio.TimeoutError:
            if self._transport is not None:
                self._transport.abort()


class NativeAcceptor:
    """Listens on a TCP port and serves the native protocol with ``dispatcher``."""

    def __init__(self, opts, dispatcher, core):
        self.dispatcher = dispatcher
        self.core = core
        self.pkg_size = opts["pkg_size"]
        self.connections = set()
        self._server = None

    @property
    def port(self):
        """The bound port (after ``listen``)."""
        return self._server.sockets[0].getsockname()[1] if self._server else None

    async def listen(self, host, port):
        """Start listening."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                reuse_address=True)
        log.info("native acceptor listening on %s:%s", host, self.port)

    async def close(self, grace=5.0):
        """Stop accepting, answer the calls already received (up to ``grace`` s), close."""
        if self._server is None:
            return
        self._server.close()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.drain_and_close(grace) for c in conns))
        await self._server.wait_closed()
        self._server = None
