"""Prometheus metrics: `bfd --metrics HOST:PORT` serves them as text (prometheus-client).

Names follow Prometheus conventions: the `bulkforge_` prefix, base units (`_bytes`,
`_seconds`, `_ratio`), `_total` for counters. Labels stay low-cardinality: job kind, item
and job state, step and error class; a job's name appears only on the gauges of live jobs,
at most LIVE_JOBS_SHOWN of them. Every number is read at scrape time from what `bfctl
status`, `failures` and `system` read, so each is defined once; only the store's commit
latency is observed as it happens (a histogram with buckets from 1 ms to ~8 s, as etcd
keeps for its backend commits).
"""

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from loguru import logger
from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bulkforge.daemon.control import Control
from bulkforge.daemon.governor import HOLD_REASONS, hold_reason
from bulkforge.daemon.machines.job import TERMINAL
from bulkforge.daemon.store import Store

COMMIT_BUCKETS = tuple(0.001 * 2**power for power in range(14))  # 1 ms … 8.192 s
LIVE_JOBS_SHOWN = 50
SCRAPE_WAIT_S = 10.0
# The metrics listener is TCP too: whatever reaches it, the socket and the jobs go on. A
# scraper needs one connection; more than this at once are closed as soon as accepted, and
# one silent for this long is closed (each holds a thread and a descriptor meanwhile).
METRICS_CONNECTIONS = 16
METRICS_TIMEOUT_S = 15.0


class Metrics:
    """The registry bfd serves, and the HTTP server that serves it."""

    def __init__(self, control: Control, store: Store, loop: asyncio.AbstractEventLoop):
        self.registry = CollectorRegistry()
        commits = Histogram(
            "bulkforge_store_commit_seconds",
            "Time of one group commit of the store's writer (BEGIN … COMMIT, fsync included).",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        store.writer.on_commit = commits.observe
        self.registry.register(_Snapshot(control, store, loop))
        self._server: WSGIServer | None = None

    def serve(self, address: str) -> str:
        """Start serving on HOST:PORT (port 0: any free one); returns the address bound."""
        host, _, port = address.rpartition(":")
        self._server = _serve(host.strip("[]"), int(port), make_wsgi_app(self.registry))
        bound = f"{host}:{self._server.server_port}"
        logger.info("metrics on http://{}/metrics", bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most METRICS_CONNECTIONS of them, each with a deadline."""

    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        self._slots = threading.BoundedSemaphore(METRICS_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        request.settimeout(METRICS_TIMEOUT_S)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        logger.debug("metrics: a connection from {} ended badly", client_address[0])


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        """Scrapes are not worth a line each."""


def _serve(host: str, port: int, app) -> WSGIServer:
    """app served on host:port (IPv4 or IPv6, as the host is) from a thread of its own."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("_Server", (_BoundedServer,), {"address_family": family})
    server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _Snapshot(Collector):
    """Everything but the commit latency, read from the daemon when Prometheus scrapes."""

    def __init__(self, control: Control, store: Store, loop: asyncio.AbstractEventLoop):
        self._control = control
        self._store = store
        self._loop = loop

    def _ask(self, coroutine):
        """Run one of Control's verbs on the event loop from the scrape's thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(SCRAPE_WAIT_S)

    def collect(self) -> Iterator[Metric]:
        views = self._ask(self._control.list([], ""))
        system = self._ask(self._control.system())
        yield from _job_metrics(views)
        yield from _failure_metrics(
            (view.job.kind, self._ask(self._control.failures(view.job.name, "", 0)))
            for view in views
        )
        yield from _governor_metrics(system)
        yield from _store_metrics(system, self._store)


def _job_metrics(views) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("bulkforge_jobs", "Jobs by kind and state.", labels=["kind", "state"])
    items = GaugeMetricFamily(
        "bulkforge_items", "Items of every job by kind and item state.", labels=["kind", "state"]
    )
    done = GaugeMetricFamily(
        "bulkforge_items_done_bytes", "Bytes of the items done, by job kind.", labels=["kind"]
    )
    live = GaugeMetricFamily(
        "bulkforge_live_job_items",
        f"Items of each live job by state (at most {LIVE_JOBS_SHOWN} jobs).",
        labels=["job", "kind", "state"],
    )
    job_counts, item_counts, done_bytes = Counter(), Counter(), Counter()
    for view in views:
        kind = view.job.kind
        job_counts[kind, str(view.job.state)] += 1
        done_bytes[kind] += view.bytes_done
        for state, count in view.counts.items():
            item_counts[kind, state] += count
    for (kind, state), count in sorted(job_counts.items()):
        jobs.add_metric([kind, state], count)
    for (kind, state), count in sorted(item_counts.items()):
        items.add_metric([kind, state], count)
    for kind, size in sorted(done_bytes.items()):
        done.add_metric([kind], size)
    running = [view for view in views if view.job.state not in TERMINAL][:LIVE_JOBS_SHOWN]
    for view in running:
        for state, count in sorted(view.counts.items()):
            live.add_metric([view.job.name, view.job.kind, state], count)
    yield from (jobs, items, done, live)


def _failure_metrics(reports) -> Iterator[Metric]:
    failed = GaugeMetricFamily(
        "bulkforge_failed_items",
        "Items failed now (retrying or for good) by job kind, step and error class.",
        labels=["kind", "step", "error_class"],
    )
    counts: Counter = Counter()
    for kind, report in reports:
        for group in report.groups:
            counts[kind, group.step, group.error_class] += group.count
    for labels, count in sorted(counts.items()):
        failed.add_metric(list(labels), count)
    yield failed


def _governor_metrics(system) -> Iterator[Metric]:
    in_flight = system.active_transfers
    yield _gauge("bulkforge_transfers_in_flight", "Requests on the network now.", in_flight)
    yield _gauge(
        "bulkforge_held_jobs",
        "Jobs the governor holds back now (memory, disk threshold, dying workers).",
        len(system.holds),
    )
    yield _held_by_reason(system.holds)
    yield _gauge("bulkforge_resident_memory_bytes", "RSS of bfd and its workers.", system.rss_bytes)
    limits = {
        "max_connections": system.max_connections,
        "per_host_connections": system.per_host_connections,
        "transfer_workers": system.transfer_workers,
        "cpu_workers": system.cpu_workers,
    }
    for name, value in limits.items():
        yield _gauge(f"bulkforge_limit_{name}", f"The governor's {name} now.", value)
    yield _gauge("bulkforge_limit_memory_bytes", "The memory cap (0: none).", system.memory_cap)
    yield _gauge(
        "bulkforge_limit_bandwidth_bytes_per_second", "Bandwidth cap (0: none).", system.bandwidth
    )
    yield _gauge(
        "bulkforge_limit_disk_threshold_ratio",
        "The fullest a destination filesystem may get.",
        system.disk_threshold,
    )


def _held_by_reason(holds: dict[str, str]) -> GaugeMetricFamily:
    """Every reason, 0 too: an alert on a failed disk needs its series before one fails."""
    held = GaugeMetricFamily(
        "bulkforge_held_jobs_by_reason",
        "Jobs held back now, by why: disk_failed (a data disk refused writes), disk_space, "
        "memory, transfer_workers.",
        labels=["reason"],
    )
    counts = Counter(hold_reason(why) for why in holds.values())
    for reason in HOLD_REASONS:
        held.add_metric([reason], counts[reason])
    return held


def _store_metrics(system, store: Store) -> Iterator[Metric]:
    commits = CounterMetricFamily("bulkforge_store_commits", "Group commits of the store's writer.")
    commits.add_metric([], store.writer.commits)
    yield commits
    yield _gauge(
        "bulkforge_store_writer_queue_depth",
        "Operations waiting for the store's writer.",
        store.writer.queue_depth,
    )
    yield _gauge("bulkforge_store_db_bytes", "Size of bulkforge.db.", system.db_bytes)
    yield _gauge("bulkforge_store_wal_bytes", "Size of its write-ahead log.", system.wal_bytes)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
