# cython: annotation_typing=False
"""What ``metrics=True`` counts, counted inside the protocol classes: one source for
both cores (compiled with ``pomelo_rpc/_cy/meter.pxd``: plain C fields).

A ``Series`` holds the calls of one (route, server): the calls by outcome and a
duration histogram, as fields (C arrays in the compiled core) that the protocol
classes add to with no Python step; ``pomelo_rpc.metrics`` reads them when Prometheus
scrapes. A ``Meter`` is what one peer's connections count into: the bytes read and
written, and the series of each route, found through a cache in front of the
metrics module's route resolution (``routes``: ``lookup(msg)``, ``record(msg, error,
seconds)`` for the outcomes that need a closer look).
"""

from __future__ import annotations

from typing import Any

#: Upper bounds (seconds) of the duration histograms' buckets: sub-millisecond calls
#: (a loopback call is ~100 µs, a plain method runs in a few µs) to the 10 s default
#: timeout.
BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
           0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Outcomes of a call (``Series.counts`` by index). ``busy`` (refused by the server's
#: admission control) and ``expired`` (its deadline passed before it ran) are counted
#: for errors whose class sets ``metrics_outcome`` to them; ``cancelled``: the caller
#: gave up on the call; ``notify``: a notify (one-way call) written by the client, run
#: without error by the server (one that fails counts as the calls do).
OUTCOMES = ("ok", "error", "timeout", "busy", "expired", "connection_lost", "cancelled",
            "notify")
OK = 0
CANCELLED = 6
NOTIFY = 7

_OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
_MAX_CACHED = 1000              # routes a client meter keeps by method name
_BOUNDS = list(BUCKETS)         # compiled: a C array of the bounds
_NBOUNDS = 19                   # len(BUCKETS)


class Series:
    """The calls of one (route, server): a duration histogram, which counts every call,
    and the calls that failed by outcome (``counts[i]`` for ``OUTCOMES[i]``; ok calls
    are the histogram's total less the others, one addition fewer per call)."""

    def __init__(self) -> None:
        self.counts = [0] * 8            # counts[0], ok, stays 0: see by_outcome
        self.buckets = [0] * 20          # the last one is +Inf
        self.seconds = 0.0

    def add(self, outcome: str, seconds: float) -> None:
        """Count one call that took ``seconds`` and ended with ``outcome``."""
        self.add_index(_OUTCOME_INDEX[outcome], seconds)

    def add_index(self, index: int, seconds: float) -> None:
        """``add`` by the outcome's index in OUTCOMES."""
        if index:
            self.counts[index] += 1
        i = 0
        while i < _NBOUNDS and _BOUNDS[i] < seconds:     # bisect_left(BUCKETS, seconds)
            i += 1
        self.buckets[i] += 1
        self.seconds += seconds

    def bucket_counts(self) -> list[int]:
        """Calls per bucket, the last one +Inf (not cumulative)."""
        return list(self.buckets)

    def by_outcome(self) -> list[int]:
        """Calls by outcome, in the order of ``OUTCOMES``."""
        counts = list(self.counts)
        counts[0] = max(0, sum(list(self.buckets)) - sum(counts))
        return counts

    def merge(self, other: Series) -> None:
        """Add ``other``'s calls to these."""
        for i in range(8):
            self.counts[i] += other.counts[i]
        for i in range(20):
            self.buckets[i] += other.buckets[i]
        self.seconds += other.seconds


class Meter:
    """What the connections of one peer count into; see the module docstring.

    ``routes`` resolves a message's series (``lookup``) and records the outcomes the
    fast paths leave to it (``record``: errors, whose outcome and route need a closer
    look); its ``cache`` holds the series by route key: ``server_key`` of a request
    (``server`` True), else ``client_key`` of a call message."""

    def __init__(self, routes: Any, server: bool) -> None:
        self.routes = routes
        self.cache: dict[Any, Series] = routes.cache
        self.server = server
        self.sent = 0                # bytes written
        self.received = 0            # bytes read
        #: client: the series by method name, then ``(namespace, service, series)``: no
        #: tuple to make and hash per call (``call_series``)
        self.by_method: dict[str, list[tuple[str, str, Series]]] = {}
        self.by_method_size = 0

    def known(self, msg: dict[str, Any]) -> Series | None:
        """The series of call message ``msg``'s route if it has been answered before
        (client side), else None: the call's outcome tells more (a route the server does
        not know counts as ``unknown``, never under its own name)."""
        method = msg.get("method")
        if type(method) is str:
            found = self.by_method.get(method)
            if found is not None:
                namespace = msg.get("namespace")
                service = msg.get("service")
                for entry in found:
                    if entry[0] == namespace and entry[1] == service:
                        return entry[2]
        return None

    def call_series(self, msg: dict[str, Any]) -> Series:
        """The series of call message ``msg``'s route (client side), made if need be."""
        found = self.known(msg)
        if found is not None:
            return found
        method = msg.get("method")
        namespace = msg.get("namespace")
        service = msg.get("service")
        series: Series = self.routes.lookup(msg)
        if (type(method) is str and type(namespace) is str and type(service) is str
                and self.by_method_size < _MAX_CACHED):
            self.by_method.setdefault(method, []).append((namespace, service, series))
            self.by_method_size += 1
        return series

    def series(self, msg: Any) -> Series:
        """The series of ``msg``'s route (from the cache, else resolved)."""
        if not self.server:
            return self.call_series(msg)
        try:
            found = self.cache.get(server_key(msg))
        except (TypeError, KeyError, IndexError):   # no route: unhashable or missing names
            found = None
        if found is None:
            resolved: Series = self.routes.lookup(msg)
            return resolved
        return found

    def ok(self, msg: Any, seconds: float) -> None:
        """Count a call of ``msg`` answered after ``seconds``."""
        self.series(msg).add_index(OK, seconds)

    def notified(self, msg: Any, seconds: float) -> None:
        """Count a notify of ``msg`` run without error in ``seconds`` (server side)."""
        self.series(msg).add_index(NOTIFY, seconds)

    def cancelled(self, msg: Any, seconds: float) -> None:
        """Count a call of ``msg`` its caller gave up after ``seconds``."""
        self.series(msg).add_index(CANCELLED, seconds)

    def failed(self, msg: Any, error: BaseException, seconds: float) -> None:
        """Count a call of ``msg`` that failed with ``error`` after ``seconds``."""
        self.routes.record(msg, error, seconds)


def client_key(msg: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A call message's route key: its names."""
    return msg["namespace"], msg["service"], msg["method"]


def server_key(msg: Any) -> Any:
    """A request's route key: its method id, or its names (kinds 1 and 2)."""
    return msg[2] if msg[0] == 1 else (msg[2], msg[3], msg[4])
