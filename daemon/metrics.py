"""Prometheus metrics: `bfd --metrics HOST:PORT` serves them as text (prometheus-client).

Names follow Prometheus conventions: the `bulkforge_` prefix, base units (`_bytes`,
`_seconds`, `_ratio`), `_total` for counters. Labels stay low-cardinality: job kind, item
and job state, outcome, step and error class; a job's name (`job_name`: Prometheus owns
`job` and `instance`, and would rename ours) appears only on the gauges of live jobs, at
most LIVE_JOBS_SHOWN of them. Every number is read at scrape time from what `bfctl status`,
`failures` and `system` read, so each is defined once; the store's commit latency is observed
as it happens (a histogram with buckets from 1 ms to ~8 s, as etcd keeps for its backend
commits), and the items and bytes finished are counters kept by `_Finished`."""

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from loguru import logger
from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bulkforge.daemon.control import Control
from bulkforge.daemon.governor import HOLD_REASONS, hold_reason
from bulkforge.daemon.jobs import JobView
from bulkforge.daemon.machines import Tone
from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.store import Store

COMMIT_BUCKETS = tuple(0.001 * 2**power for power in range(14))  # 1 ms … 8.192 s
LIVE_JOBS_SHOWN = 50
SCRAPE_WAIT_S = 10.0
# The metrics listener is TCP too: whatever reaches it, the socket and the jobs go on. A
# scraper needs one connection; more than this at once are closed as soon as accepted, and
# one silent for this long is closed (each holds a thread and a descriptor meanwhile).
METRICS_CONNECTIONS = 16
METRICS_TIMEOUT_S = 15.0
# An item has ended in a state of these tones; its outcome is that state (done: succeeded).
ENDED_TONES = (Tone.OK, Tone.BAD)
# A removed job is ignored this long in scrapes whose read began before its removal.
RETIRED_KEEP_S = 300.0


class Metrics:
    """The registry bfd serves, and the HTTP server that serves it."""

    def __init__(
        self,
        control: Control,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        at_start: list[JobView],
    ):
        """at_start: every job's view before the runners start (what they finished then
        is not counted again)."""
        # No `_created` series: they double every counter and histogram with a timestamp
        # nobody queries (Prometheus 2.42 ignores them), and the README lists what is served.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        commits = Histogram(
            "bulkforge_store_commit_seconds",
            "Time of one group commit of the store's writer (BEGIN … COMMIT, fsync included).",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        store.writer.on_commit = commits.observe
        finished = _Finished(control.item_tones(), at_start)
        control.on_remove = finished.retire
        self.registry.register(_Snapshot(control, store, loop, finished))
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

    def __init__(
        self,
        control: Control,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        finished: "_Finished",
    ):
        self._control = control
        self._store = store
        self._loop = loop
        self._finished = finished
        # Scrapes read and count one at a time, so the counters see the views in order.
        self._one_scrape = threading.Lock()

    def _ask(self, coroutine):
        """Run one of Control's verbs on the event loop from the scrape's thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(SCRAPE_WAIT_S)

    def collect(self) -> Iterator[Metric]:
        with self._one_scrape:
            views = self._ask(self._control.list([], ""))
            self._finished.observe(views)
        system = self._ask(self._control.system())
        yield from _job_metrics(views)
        yield from self._finished.metrics()
        yield from _failure_metrics(
            (view.job.kind, self._ask(self._control.failures(view.job.name, "", 0)))
            for view in views
        )
        yield from _governor_metrics(system)
        yield from _store_metrics(system, self._store)


class _Finished:
    """Items finished (by kind and outcome) and bytes done (by kind), as counters that only
    grow while this bfd runs.

    Each job's ended items and bytes done are read at every scrape and when it is removed;
    only their rises are added. So a removal, failed items sent back by `retry` (they count
    again if they fail again) or a restart (the counters start at 0, as Prometheus expects of
    a new process) never lowers them, and `rate()` holds across all three. Jobs there at start
    are taken as they are then; a job submitted since counts from nothing.
    """

    def __init__(self, tones: Mapping[str, Mapping[str, Tone]], at_start: Iterable[JobView]):
        self._lock = threading.Lock()
        # Every series from the start, at 0: rate() sees the first item that ends.
        self._items = Counter(
            {(kind, _outcome(state)): 0 for kind in tones for state in _ended_states(tones[kind])}
        )
        self._bytes = Counter(dict.fromkeys(tones, 0))
        self._seen = {view.job.id: _ended(view) for view in at_start}
        self._retired: dict[int, float] = {}

    def observe(self, views: list[JobView]) -> None:
        """A scrape's views, of every job: their rises are counted."""
        with self._lock:
            now = time.monotonic()
            self._retired = {i: t for i, t in self._retired.items() if now - t < RETIRED_KEEP_S}
            views = [view for view in views if view.job.id not in self._retired]
            for view in views:
                self._note(view)
            listed = {view.job.id for view in views}
            for gone in self._seen.keys() - listed:  # removed without a word: not kept
                del self._seen[gone]

    def retire(self, view: JobView) -> None:
        """A job removed, with its last view: what it finished since the last scrape counts."""
        with self._lock:
            self._note(view)
            del self._seen[view.job.id]
            self._retired[view.job.id] = time.monotonic()

    def metrics(self) -> Iterator[Metric]:
        items = CounterMetricFamily(
            "bulkforge_items_finished",
            f"Items that ended, by job kind and outcome ({', '.join(self._outcomes())}), "
            "since bfd started.",
            labels=["kind", "outcome"],
        )
        done = CounterMetricFamily(
            "bulkforge_bytes_done",
            "Bytes of items done (and of transfers under way), by job kind, since bfd started.",
            labels=["kind"],
        )
        with self._lock:
            for (kind, outcome), count in sorted(self._items.items()):
                items.add_metric([kind, outcome], count)
            for kind, size in sorted(self._bytes.items()):
                done.add_metric([kind], size)
        yield from (items, done)

    def _outcomes(self) -> list[str]:
        """Every outcome a series has, in a stable order: the help text names them all."""
        return sorted({outcome for _, outcome in self._items}, key=lambda o: (o != "succeeded", o))

    def _note(self, view: JobView) -> None:
        ended, size = _ended(view)
        before, size_before = self._seen.get(view.job.id, (Counter(), 0))
        for outcome, count in ended.items():
            self._items[view.job.kind, outcome] += max(0, count - before[outcome])
        # Bytes under way may fall back (a transfer restarted): count only past the most seen.
        self._bytes[view.job.kind] += max(0, size - size_before)
        self._seen[view.job.id] = (ended, max(size, size_before))


def _ended_states(tones: Mapping[str, Tone]) -> list[str]:
    return [state for state, tone in tones.items() if tone in ENDED_TONES]


def _outcome(state: str) -> str:
    """An ended item's outcome: its state, where `done` reads as `succeeded`."""
    return "succeeded" if state == "done" else state


def _ended(view: JobView) -> tuple[Counter, int]:
    """The job's items by outcome, of those that ended, and its bytes done."""
    ended = Counter({_outcome(s): view.counts.get(s, 0) for s in _ended_states(view.item_tones)})
    return ended, view.bytes_done


def _job_metrics(views) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "bulkforge_jobs",
        f"Jobs by kind and state ({', '.join(JobState)}).",
        labels=["kind", "state"],
    )
    items = GaugeMetricFamily(
        "bulkforge_items", "Items of every job by kind and item state.", labels=["kind", "state"]
    )
    done = GaugeMetricFamily(
        "bulkforge_items_done_bytes", "Bytes of the items done, by job kind.", labels=["kind"]
    )
    live = GaugeMetricFamily(
        "bulkforge_live_job_items",
        f"Items of each live job by state (at most {LIVE_JOBS_SHOWN} jobs).",
        labels=["job_name", "kind", "state"],
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
        f"Jobs held back now, by why: {', '.join(HOLD_REASONS)} (disk_failed: a data disk "
        "refused writes; other: a hold of no reason listed).",
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
