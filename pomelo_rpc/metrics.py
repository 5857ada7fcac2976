"""``metrics=True``: Prometheus metrics of calls, through prometheus_client
(the optional extra ``pomelo-rpc[metrics]``).

Calls are counted inside the protocol classes of the core (``pomelo_rpc.core.meter``:
per route, the calls by outcome and a duration histogram as plain fields, C arrays in
the compiled core; a clock read at each end of a call, a dict lookup, a few
additions) and turned into metric families only when the registry is scraped, by one
collector per ``CollectorRegistry``:

- ``pomelo_rpc_{client,server}_calls_total{route, server, outcome}``: ``route`` is
  ``namespace.service.method``; ``server`` is the peer on the client and this server's
  own id on the server (the native protocol does not name the caller); ``outcome`` is
  one of ``OUTCOMES``. A call the server could not dispatch (unknown route, wrong
  argument count, removed method) counts under ``route="unknown"``, so garbage names
  never become series; past ``MAX_ROUTES`` distinct routes the rest count as ``other``.
- ``pomelo_rpc_{client,server}_call_duration_seconds{route, server}``: histograms with
  ``BUCKETS`` (from 10 µs).
- gauges ``pomelo_rpc_client_calls_in_flight``, ``pomelo_rpc_client_pending_calls``
  (waiting for their connection to open), ``pomelo_rpc_client_connections``,
  ``pomelo_rpc_server_calls_in_flight``, ``pomelo_rpc_server_connections``, read from
  the live mailboxes and acceptors at scrape time;
- counters ``pomelo_rpc_client_reconnects_total`` and
  ``pomelo_rpc_{client,server}_{sent,received}_bytes_total``;
- health (docs/liveness.md): gauges ``pomelo_rpc_client_server_available{server}``
  (1, or 0 while the server is down) and
  ``pomelo_rpc_client_server_availability_changed_timestamp_seconds{server}``, the
  counter ``pomelo_rpc_client_dead_connections_total{server}`` (connections declared
  dead), and on the server ``pomelo_rpc_server_paused_reads_total`` (a connection
  stopped reading because its peer did not read its answers) and
  ``pomelo_rpc_server_idle_closed_total`` (connections closed for idleness).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import core as _core
from .core import meter as _meter
from .errors import ConnectionLostError, RpcTimeoutError

try:
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                        HistogramMetricFamily, Metric)
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("metrics=True needs prometheus_client: "
                      "pip install 'pomelo-rpc[metrics]'") from exc

if TYPE_CHECKING:
    from .acceptor import BaseAcceptor
    from .core import Core
    from .core.meter import Meter, Series
    from .mailbox import Mailbox
    from .station import MailStation

#: Upper bounds (seconds) of the duration histograms' buckets, and the outcomes of a
#: call: see ``pomelo_rpc.core.meter``.
BUCKETS = _meter.BUCKETS
OUTCOMES = _meter.OUTCOMES

#: Distinct route labels kept per side of a registry; later routes count as ``other``.
MAX_ROUTES = 1000

UNKNOWN_ROUTE = "unknown"

_LE = [repr(b) for b in BUCKETS] + ["+Inf"]    # the buckets' ``le`` labels


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` label of a call that failed with ``exc``."""
    if isinstance(exc, (RpcTimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionLostError):
        return "connection_lost"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    outcome = getattr(exc, "metrics_outcome", None)
    return outcome if outcome in OUTCOMES else "error"


def _series_class() -> Any:
    """The compiled ``Series`` where the compiled core exists (the compiled protocols
    count into it with C calls; the pure ones call its methods), else the pure one."""
    try:
        return _core.select("cython").meter.Series
    except ImportError:
        return _core.select("python").meter.Series


if not TYPE_CHECKING:
    #: What a (route, server) counts into (one class per process: ``_series_class``).
    Series = _series_class()


def cumulative(series: Series) -> list[tuple[str, float]]:
    """``[(le, calls at most that long), ..., ("+Inf", all calls)]`` of ``series``."""
    out = []
    total = 0
    for bound, n in zip(_LE, series.bucket_counts()):
        total += n
        out.append((bound, float(total)))
    return out


class Side:
    """The series and counters of one side (client or server) of a registry."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}
        self.routes: set[str] = set()
        #: ``(server id, meter)`` of every meter counting into this side (its bytes)
        self.meters: list[tuple[str, Meter]] = []
        self._client_meters: dict[tuple[str, str], Meter] = {}
        self.reconnects: dict[str, int] = {}
        self.connected: set[str] = set()   # servers this process has connected to

    def add_meter(self, server_id: str, meter: Meter) -> None:
        """Count ``meter``'s bytes under ``server_id`` (as long as this side lives)."""
        self.meters.append((server_id, meter))

    def client_meter(self, core: Core, server_id: str,
                     routes: Callable[[], Any]) -> Meter:
        """The meter of the calls to ``server_id`` (one per core, shared by the mailboxes
        of every client of this registry; ``routes()`` makes its route resolution)."""
        key = (core.name, server_id)
        meter = self._client_meters.get(key)
        if meter is None:
            meter = self._client_meters[key] = core.meter.Meter(routes(), False)
            self.add_meter(server_id, meter)
        return meter

    def bytes(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(sent, received)``: bytes by server id."""
        sent: dict[str, int] = {}
        received: dict[str, int] = {}
        for server_id, meter in list(self.meters):
            sent[server_id] = sent.get(server_id, 0) + meter.sent
            received[server_id] = received.get(server_id, 0) + meter.received
        return sent, received

    def get(self, route: str, server: str) -> Series:
        """The series of ``(route, server)``, made on first use (routes bounded)."""
        series = self.series.get((route, server))
        if series is None:
            if route not in self.routes:
                if len(self.routes) >= MAX_ROUTES:
                    return self.get("other", server)
                self.routes.add(route)
            series = self.series[(route, server)] = Series()
        return series


def _families(prefix: str, side: Side) -> Iterator[Metric]:
    calls = CounterMetricFamily(f"{prefix}_calls", "Calls by route, server and outcome",
                                labels=["route", "server", "outcome"])
    durations = HistogramMetricFamily(f"{prefix}_call_duration_seconds",
                                      "Call durations by route and server",
                                      labels=["route", "server"])
    for (route, server), series in list(side.series.items()):
        for outcome, n in zip(OUTCOMES, series.by_outcome()):
            calls.add_metric([route, server, outcome], n)
        buckets = cumulative(series)
        durations.add_metric([route, server], buckets, series.seconds)
    yield calls
    yield durations
    sent, received = side.bytes()
    for name, doc, table in (("sent_bytes", "Bytes written", sent),
                             ("received_bytes", "Bytes read", received)):
        family = CounterMetricFamily(f"{prefix}_{name}", doc, labels=["server"])
        for server, n in list(table.items()):
            family.add_metric([server], n)
        yield family


def _gauge(name: str, doc: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["server"])
    for server, n in values.items():
        family.add_metric([server], n)
    return family


def _tally(items: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in items:
        out[key] = out.get(key, 0) + n
    return out


class Metrics:
    """The metrics of one registry: a prometheus_client collector."""

    def __init__(self) -> None:
        self.client = Side()
        self.server = Side()
        self._lock = threading.Lock()      # the scrape runs in the HTTP server's thread
        self._mailboxes: weakref.WeakSet[Mailbox] = weakref.WeakSet()
        self._stations: weakref.WeakSet[MailStation] = weakref.WeakSet()
        self._acceptors: weakref.WeakValueDictionary[int, BaseAcceptor] = (
            weakref.WeakValueDictionary())
        self._acceptor_ids: dict[int, str] = {}
        self._client_used = self._server_used = False

    def add_mailbox(self, mailbox: Mailbox) -> None:
        """Count ``mailbox`` in the client gauges while it lives."""
        with self._lock:
            self._mailboxes.add(mailbox)
            self._client_used = True

    def add_station(self, station: MailStation) -> None:
        """Count the health of ``station``'s servers in the client gauges while it lives."""
        with self._lock:
            self._stations.add(station)
            self._client_used = True

    def add_acceptor(self, acceptor: BaseAcceptor, server_id: str) -> None:
        """Count ``acceptor``'s connections and calls in the server gauges while it lives."""
        with self._lock:
            self._acceptors[id(acceptor)] = acceptor
            self._acceptor_ids[id(acceptor)] = server_id
            self._server_used = True

    def describe(self) -> list[Metric]:
        """prometheus_client: no fixed names to check at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        """prometheus_client: every family of the sides in use (a server process shows
        no client families until it makes a call), read now."""
        with self._lock:
            mailboxes = [m for m in list(self._mailboxes) if m.state != "closed"]
            stations = list(self._stations)
            acceptors = [(self._acceptor_ids[k], a) for k, a in list(self._acceptors.items())]
            client_used, server_used = self._client_used, self._server_used
        if client_used:
            yield from self._client_families(mailboxes)
            yield from self._health_families(stations)
        if server_used:
            yield from self._server_families(acceptors)

    def _client_families(self, mailboxes: list[Mailbox]) -> Iterator[Metric]:
        yield from _families("pomelo_rpc_client", self.client)
        yield _gauge("pomelo_rpc_client_calls_in_flight", "Calls sent or queued, not answered",
                     _tally((m.server_id, m.in_flight) for m in mailboxes))
        yield _gauge("pomelo_rpc_client_pending_calls",
                     "Calls waiting for their connection to open",
                     _tally((m.server_id, m.waiting) for m in mailboxes))
        yield _gauge("pomelo_rpc_client_connections", "Open connections to servers",
                     _tally((m.server_id, int(m.state == "open")) for m in mailboxes))
        reconnects = CounterMetricFamily("pomelo_rpc_client_reconnects",
                                         "Connections opened again after one was lost",
                                         labels=["server"])
        for server, n in list(self.client.reconnects.items()):
            reconnects.add_metric([server], n)
        yield reconnects

    def _health_families(self, stations: list[MailStation]) -> Iterator[Metric]:
        available = GaugeMetricFamily("pomelo_rpc_client_server_available",
                                      "1 while the server is available, 0 while it is down",
                                      labels=["server"])
        changed = GaugeMetricFamily(
            "pomelo_rpc_client_server_availability_changed_timestamp_seconds",
            "When the server's availability last changed (Unix time)", labels=["server"])
        dead = CounterMetricFamily("pomelo_rpc_client_dead_connections",
                                   "Connections declared dead (silent under load or idle)",
                                   labels=["server"])
        for station in stations:
            health = station.health
            for sid in list(station.servers):
                available.add_metric([sid], 0 if sid in health.down else 1)
            for sid, when in list(health.changed.items()):
                changed.add_metric([sid], when)
            for sid, n in list(health.dead.items()):
                dead.add_metric([sid], n)
        yield available
        yield changed
        yield dead

    def _server_families(self, acceptors: list[tuple[str, BaseAcceptor]]) -> Iterator[Metric]:
        yield from _families("pomelo_rpc_server", self.server)
        yield _gauge("pomelo_rpc_server_calls_in_flight", "Coroutine calls running",
                     _tally((sid, sum(c.running for c in list(a.connections)))
                            for sid, a in acceptors))
        yield _gauge("pomelo_rpc_server_connections", "Client connections",
                     _tally((sid, len(a.connections)) for sid, a in acceptors))
        for name, doc, attr in (
                ("pomelo_rpc_server_paused_reads", "Times a connection stopped reading its "
                 "requests because its peer did not read its answers", "paused"),
                ("pomelo_rpc_server_idle_closed", "Connections closed after idle_timeout s "
                 "with nothing received", "idle_closed")):
            family = CounterMetricFamily(name, doc, labels=["server"])
            for sid, n in _tally((sid, getattr(a, attr, 0)) for sid, a in acceptors).items():
                family.add_metric([sid], n)
            yield family


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()


def for_registry(registry: CollectorRegistry | None = None) -> Metrics:
    """The metrics of ``registry`` (prometheus_client's global one when None),
    registered in it on first use."""
    if registry is None:
        registry = REGISTRY
    metrics = _by_registry.get(registry)
    if metrics is None:
        metrics = _by_registry[registry] = Metrics()
        registry.register(metrics)
    return metrics


def serve(port: int, host: str = "127.0.0.1",
          registry: CollectorRegistry | None = None) -> int:
    """Serve ``/metrics`` of ``registry`` over HTTP in a daemon thread; return the port."""
    httpd, _thread = start_http_server(port, addr=host,
                                       registry=REGISTRY if registry is None else registry)
    return int(httpd.server_port)


def quantile(series: Series, q: float) -> float:
    """The ``q`` quantile (0..1) of a series' durations, interpolated in its bucket
    as Prometheus' ``histogram_quantile`` does; 0.0 without calls."""
    counts = series.bucket_counts()
    total = sum(counts)
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, n in zip((*BUCKETS, BUCKETS[-1]), counts):
        if n and seen + n >= rank:
            return lower + (bound - lower) * (rank - seen) / n
        seen += n
        lower = bound
    return BUCKETS[-1]


def merged(series: Iterable[Series]) -> Series:
    """One series adding up ``series`` (e.g. a route over every server)."""
    out = Series()
    for s in series:
        out.merge(s)
    return out


def client_summary(registry: CollectorRegistry | None = None) -> dict[str, tuple[int, float, float]]:
    """``{server: (calls, p50 s, p99 s)}`` of the calls this process's clients made
    (every route and outcome), from the duration histograms of ``registry``."""
    by_server: dict[str, list[Series]] = {}
    for (_route, server), series in list(for_registry(registry).client.series.items()):
        by_server.setdefault(server, []).append(series)
    out = {}
    for server, group in sorted(by_server.items()):
        total = merged(group)
        out[server] = (sum(total.bucket_counts()), quantile(total, 0.5),
                       quantile(total, 0.99))
    return out
