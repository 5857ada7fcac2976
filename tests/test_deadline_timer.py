"""The deadline timer never spins, whatever the loop clock's granularity or value.

Deterministic, no wall clock: a stub loop whose clock moves in whole milliseconds (as
uvloop's does) from a large start (10^6 s, 10^9 s: game servers run for weeks, and a
loop clock may count from boot), firing timers the way uvloop does (the delay rounded
to whole milliseconds). It drives the request table and a mailbox, and counts how
often the timer runs and is armed per deadline slot. Both cores.
"""

import asyncio
import heapq
import math
import os

import pytest
from conftest import REMOTE

from pomelo_rpc import client, server
from pomelo_rpc import core as _core
from pomelo_rpc.errors import RpcTimeoutError
from pomelo_rpc.mailbox import OPEN, Mailbox
from pomelo_rpc.options import CLIENT_DEFAULTS

RESOLUTION = 0.005          # the table's default slot width
BASES = [1e6, 1e9 + 0.0004]  # loop clock at the start, in seconds


class _Handle:
    def __init__(self, due_ms, seq, callback):
        self.due_ms, self.seq, self.callback = due_ms, seq, callback
        self.cancelled = False

    def __lt__(self, other):
        return (self.due_ms, self.seq) < (other.due_ms, other.seq)

    def cancel(self):
        self.cancelled = True


class MillisecondLoop:
    """The parts of an event loop the mailbox's timers use, on a millisecond clock."""

    def __init__(self, start, early_ms=0):
        self.now_ms = math.floor(start * 1000)
        self.early_ms = early_ms    # fire timers this much before their rounded due time
        self.timers = []
        self.armed = 0
        self.fired = 0      # timer callbacks run (the only timer here: the deadline one)
        self._seq = 0
        self._futures = asyncio.new_event_loop()   # never run: futures only

    def time(self):
        return self.now_ms / 1000

    def call_at(self, when, callback):
        self.armed += 1
        delay_ms = max(0, round((when - self.time()) * 1000) - self.early_ms)
        self._seq += 1
        handle = _Handle(self.now_ms + delay_ms, self._seq, callback)
        heapq.heappush(self.timers, handle)
        return handle

    def create_future(self):
        return self._futures.create_future()

    def live_timers(self):
        return sum(1 for h in self.timers if not h.cancelled)

    def advance(self, ms=1):
        """Move the clock ``ms`` milliseconds, running each timer that falls due."""
        for _ in range(ms):
            self.now_ms += 1
            runs = 0
            while self.timers and self.timers[0].due_ms <= self.now_ms:
                handle = heapq.heappop(self.timers)
                if not handle.cancelled:
                    runs += 1
                    self.fired += 1
                    assert runs <= 100, f"timers spin: {runs} runs within one millisecond"
                    handle.callback()

    def close(self):
        self._futures.close()


class RecordingMailbox(Mailbox):
    """A mailbox on an open connection that sends nothing: it records the calls its
    protocol (the core's, with the table and the deadline timer) hands it to send."""

    def __init__(self, loop, core):
        opts = dict(CLIENT_DEFAULTS)
        super().__init__({"id": "srv", "host": "127.0.0.1", "port": 1}, opts,
                         _core.select(core))
        self._loop = self.protocol.loop = loop
        self.state = OPEN
        self.protocol.open = True
        self.sent = []          # rids, in the order sent

    def _make_protocol(self, opts):
        return self.core.client_protocol.ForwardingClientProtocol(self, self.server_id,
                                                                  self._pkg_size)

    def _send_call(self, rid, msg, budget=None):
        self.sent.append(rid)


MSG = {"namespace": "user", "service": "s", "method": "m", "args": []}


def _slot(deadline):
    return math.ceil(deadline / RESOLUTION)


def _run(core, start, early_ms, answer_every):
    """Send 3 calls a millisecond for 2 s with a 0.5 s timeout; answer each
    ``answer_every``-th 100 ms after it was sent (0: none). Return the mailbox, the
    loop and the deadline slots that held calls never answered."""
    loop = MillisecondLoop(start, early_ms)
    box = RecordingMailbox(loop, core)
    calls = {}          # rid -> (future, deadline)
    unanswered_slots = set()
    try:
        for ms in range(2000):
            if answer_every and ms >= 100:
                box.protocol.received()      # data arrives, then its answers resolve
                for rid in box.sent[(ms - 100) * 3:(ms - 99) * 3]:
                    if rid % answer_every == 0:
                        box.protocol.table.resolve(rid, "ok")
            for _ in range(3):
                fut = box.send(MSG, timeout=0.5)
                rid = box.sent[-1]
                deadline = loop.time() + 0.5
                calls[rid] = (fut, deadline)
                if not answer_every or rid % answer_every:
                    unanswered_slots.add(_slot(deadline))
            loop.advance()
            _check_expired(loop, calls)
        for _ in range(1000):
            loop.advance()
            _check_expired(loop, calls)
        assert not calls, f"{len(calls)} calls never ended"
        return box, loop, unanswered_slots
    finally:
        loop.close()


def _check_expired(loop, calls):
    """Each call that ended now timed out neither early nor late (slot width + 2 ms)."""
    now = loop.time()
    for rid, (fut, deadline) in list(calls.items()):
        if fut.done():
            del calls[rid]
            if fut.exception() is None:
                continue
            assert isinstance(fut.exception(), RpcTimeoutError)
            assert now >= deadline, f"call {rid} expired {deadline - now:.6f}s early"
            assert now <= deadline + RESOLUTION + 0.002, f"call {rid} expired late"


@pytest.mark.parametrize("start", BASES)
@pytest.mark.parametrize("early_ms", [0, 1])
def test_timer_runs_once_per_slot_when_every_call_times_out(core, start, early_ms):
    box, loop, slots = _run(core, start, early_ms, answer_every=0)
    # the timer alone expires everything: one run per slot, plus a constant
    assert len(slots) <= loop.fired <= len(slots) + 2, (loop.fired, len(slots))
    assert loop.armed <= len(slots) + 2
    assert box.protocol.deadlines.handle is None and box.protocol.table.slot_count == 0
    assert loop.live_timers() == 0


@pytest.mark.parametrize("start", BASES)
def test_expiry_from_received_data_never_starts_a_second_timer(core, start):
    # answers keep arriving, so expiry mostly runs from data_received; the timer it
    # stands in for must be cancelled, not left to start a chain of its own
    box, loop, slots = _run(core, start, early_ms=0, answer_every=3)
    assert loop.fired <= len(slots) + 2, (loop.fired, len(slots))
    # armed at most once per slot of the 2 s of sends (400 slots of 5 ms)
    assert loop.armed <= 400 + 3, loop.armed
    assert loop.live_timers() == 0 and box.protocol.deadlines.handle is None


@pytest.mark.parametrize("start", BASES)
def test_table_expire_at_next_deadline_always_empties_that_slot(core, start):
    table = _core.select(core).pending.PendingTable(RESOLUTION)
    fut_loop = asyncio.new_event_loop()
    step = 0.000713
    try:
        for i in range(5000):
            table.add(fut_loop.create_future(), start + i * step)
        slots = expired = 0
        while True:
            nxt = table.next_deadline()
            if nxt is None:
                break
            slots += 1
            expired += len(table.expire(nxt))   # the slot's own time empties it
            after = table.next_deadline()
            assert after is None or after > nxt
        assert expired == 5000 and len(table) == 0 and table.slot_count == 0
        # one slot per 5 ms of deadlines spanned, give or take the two ends
        assert abs(slots - 5000 * step / RESOLUTION) <= 2, slots
    finally:
        fut_loop.close()


def test_a_slot_pinned_by_one_slow_call_stays_small_and_still_expires_it(core):
    # calls answered in time leave their slot's id list; one call never answered keeps
    # the slot alive, and the list stays within a small bound of what is pending
    table = _core.select(core).pending.PendingTable(RESOLUTION)
    fut_loop = asyncio.new_event_loop()
    try:
        slow = fut_loop.create_future()
        slow_rid = table.add(slow, 1.0)
        for _ in range(10_000):
            table.take(table.add(fut_loop.create_future(), 1.0))
        probe = table.take(table.add(fut_loop.create_future(), 1.0))
        assert probe is not None and len(probe.slot.rids) <= 2 + 64 + 1
        assert table.expire(0.999) == [] and len(table) == 1
        assert table.expire(1.0) == [(slow, None)] and len(table) == 0
        assert table.slot_count == 0 and slow_rid not in table
    finally:
        fut_loop.close()


# request ids: a server up for weeks makes more than 2**31 calls ---------------------

ID_LIMIT = 0x7FFFFFFF


def test_request_ids_wrap_to_zero_after_the_largest(core):
    table = _core.select(core).pending.PendingTable(first_id=ID_LIMIT - 1)
    fut_loop = asyncio.new_event_loop()
    try:
        ids = [table.add(fut_loop.create_future()) for _ in range(4)]
        assert ids == [ID_LIMIT - 1, ID_LIMIT, 0, 1]
        assert len(table) == 4 and all(rid in table for rid in ids)
    finally:
        fut_loop.close()


@pytest.mark.parametrize("transport", ["native", "mqtt"])
async def test_calls_across_the_id_wrap_reach_the_server_and_back(core, transport):
    remote = os.path.join(REMOTE, "test")
    gw = server.create(paths=[{"namespace": "user", "path": remote}], transport=transport,
                       core=core)
    await gw.start()
    cli = client.create(transport=transport, core=core)
    try:
        cli.add_proxies([{"namespace": "user", "server_type": "test", "path": remote}])
        cli.add_servers([{"id": "s", "server_type": "test", "port": gw.port}])
        await cli.start()
        mailbox = cli._station.mailbox("s")
        mailbox.protocol.table = mailbox.core.pending.PendingTable(first_id=ID_LIMIT - 20)
        echo = cli.proxies.user.test.service.echo.to_server
        answers = await asyncio.gather(*(echo("s", i) for i in range(50)))
        assert answers == list(range(50))
        assert len(mailbox.protocol.table) == 0
    finally:
        await cli.stop()
        await gw.stop()
