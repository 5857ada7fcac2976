"""The scheduling policy of a server's event-loop thread: ``sched_batch``.

A backend server behind a pomelo connector is woken by every request. Under Linux's
default policy a thread woken on the CPU its sender runs on preempts the sender at
once: the Node connector writes a forwarded request in five pieces (pomelo-rpc's
mqtt client), so the server was woken by the first piece, read it, slept, and was
woken again by the next ones, a wake-up with cold caches each time. Under
``SCHED_BATCH`` a woken thread does not preempt: it runs when the sender yields the
CPU (its loop turn ends) and finds whole requests, several at a time. Any thread may
switch itself between the default policy and ``SCHED_BATCH`` (no privilege needed).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("pomelo_rpc.scheduling")


class _Held(threading.local):
    """Per thread: how many servers asked for SCHED_BATCH, and the policy it had."""

    count = 0
    previous: tuple[int, int] | None = None     # (policy, priority) to restore


_held = _Held()


def batch_on() -> bool:
    """Run the calling thread under ``SCHED_BATCH`` (Linux) until as many
    ``batch_off()`` calls as this one's; True if it does (else logged, nothing changed)."""
    if _held.count:
        _held.count += 1
        return True
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None:
        log.warning("sched_batch: this system has no SCHED_BATCH; the default policy stays")
        return False
    try:
        policy = os.sched_getscheduler(0)
        if policy != batch:
            priority = os.sched_getparam(0).sched_priority
            os.sched_setscheduler(0, batch, os.sched_param(0))
            _held.previous = (policy, priority)
    except OSError as exc:
        log.warning("sched_batch: the thread could not switch to SCHED_BATCH: %s", exc)
        return False
    _held.count = 1
    log.info("the event loop's thread runs under SCHED_BATCH")
    return True


def batch_off() -> None:
    """Undo one ``batch_on()``; the last one restores the thread's previous policy."""
    if not _held.count:
        return
    _held.count -= 1
    previous = _held.previous
    if _held.count or previous is None:
        return
    _held.previous = None
    try:
        os.sched_setscheduler(0, previous[0], os.sched_param(previous[1]))
    except OSError as exc:
        log.warning("sched_batch: the thread's policy %s could not be restored: %s",
                    previous[0], exc)
