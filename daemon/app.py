"""bfd as a library: `run(settings)` owns the lock, the store, the pipelines and the API.

Exit codes: 0 after a clean stop, 1 when startup is refused (another bfd holds
the state dir or the socket, a port taken), 78 (EX_CONFIG) when the configuration
cannot work until someone changes it (a bad setting, a credential file too open or
malformed), 74 (EX_IOERR) after an I/O error of the store (its state dir): the daemon
never carries on past one. A data disk that fails holds only the jobs writing to it
(daemon/diskholds.py).
"""

import asyncio
import contextlib
import fcntl
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import apsw
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from loguru import logger

from bulkforge.daemon import jobs, registry
from bulkforge.daemon.api import listener, reflection
from bulkforge.daemon.api.access import BearerToken
from bulkforge.daemon.api.servicer import Servicer, version
from bulkforge.daemon.control import Control
from bulkforge.daemon.diskholds import DiskHolds
from bulkforge.daemon.disks import missing_parts, remove_empty
from bulkforge.daemon.errors import Refused
from bulkforge.daemon.governor import Governor, use_lean_memory
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.notify import Notifier
from bulkforge.daemon.pipeline import Kinds, Services
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.store import ForeignKeysBroken, SchemaTooNew, Store, StoreFatal
from bulkforge.daemon.transfer.engine import Engine
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # prometheus-client is imported only when metrics are served
    from bulkforge.daemon.metrics import Metrics

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CONFIG = 78
EXIT_IO_ERROR = 74
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Bulkforge"].full_name
MAX_SOCKET_PATH = 104
MAX_REQUEST_BYTES = 4 * 2**20
STATUS_EVERY_S = 10.0


class StartupRefused(Exception):
    """bfd will not start; the message says why and what to do."""


class Lifecycle:
    """The one stop switch: signals, fatal errors from any thread, and the exit code."""

    def __init__(self) -> None:
        self.exit_code = EXIT_OK
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._early = threading.Event()
        self._fatal_lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        self._loop, self._stop = loop, asyncio.Event()
        if self._early.is_set():
            self._stop.set()
        return self._stop

    def request_stop(self) -> None:
        self._early.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def fatal(self, exc: BaseException) -> None:
        """Called from any thread when storage can no longer be trusted.

        The first fault is the operator's one critical line; those that follow it (every
        transfer of a dead disk, every commit after a failed one) are its echoes.
        """
        with self._fatal_lock:
            first, self.exit_code = self.exit_code != EXIT_IO_ERROR, EXIT_IO_ERROR
        if first:
            logger.critical("stopping after an I/O error: {}", exc)
        else:
            logger.debug("also, while stopping: {}", exc)
        self.request_stop()

    def store_failed(self, db_path: Path) -> Callable[[BaseException], None]:
        """fatal, for the store's writer: its errors (apsw's) do not say which file failed."""
        return lambda exc: self.fatal(StoreFatal(f"the state store {db_path}: {exc}"))


def _lock(path: Path, what: str) -> int:
    """Hold an exclusive flock on path for the life of the process; refuse if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupRefused(
            f"another bfd (pid {holder}) already uses {what}; stop it first "
            f"(systemctl stop bfd) or give this one another --state-dir and --socket"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _take_ownership(settings: Settings) -> list[int]:
    """Lock the state dir, then the socket; only then is a stale socket ours to remove."""
    if len(str(settings.socket)) > MAX_SOCKET_PATH:
        raise StartupRefused(f"socket path {settings.socket} is too long for a unix socket")
    # A refused start leaves nothing behind: what it made for itself goes again.
    made = missing_parts(settings.state_dir) + missing_parts(settings.socket.parent)
    state_lock = settings.state_dir / "bfd.lock"
    lock_was_there = state_lock.exists()
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        settings.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        remove_empty(made)
        raise StartupRefused(f"cannot create {exc.filename}: {exc.strerror}") from None
    locks = [_lock(state_lock, f"state dir {settings.state_dir}")]
    try:
        locks.append(_lock(Path(f"{settings.socket}.lock"), f"socket {settings.socket}"))
    except StartupRefused:
        if not lock_was_there:
            state_lock.unlink()  # ours alone: we hold its flock
        os.close(locks[0])
        remove_empty(made)
        raise
    with contextlib.suppress(FileNotFoundError):
        settings.socket.unlink()
    return locks


def _boot_repair(conn: apsw.Connection, kinds: Kinds) -> None:
    """Every row a crash left in flight moves to a defined state, one log line each."""
    for kind in kinds:
        kind.repair(conn)
    for job in jobs.jobs_in_states(conn, (JobState.RUNNING,)):
        jobs.log_about(job).info("job {} was running at shutdown; it continues", job.name)


def run(settings: Settings) -> int:
    """Run bfd until SIGTERM/SIGINT or a fatal error; returns the exit code."""
    lifecycle = Lifecycle()
    use_lean_memory()
    try:
        tcp = listener.load(settings, listener.raise_open_files_limit())
    except listener.ListenerRefused as exc:
        logger.error("refusing to start: {}", exc)
        return EXIT_CONFIG
    try:
        locks = _take_ownership(settings)
    except StartupRefused as exc:
        logger.error("{}", exc)
        return EXIT_REFUSED
    try:
        try:
            store = Store(
                settings.db_path,
                lifecycle.store_failed(settings.db_path),
                kinds=registry.schemas(),
            )
        except (SchemaTooNew, ForeignKeysBroken) as exc:
            logger.error("refusing the state store {}: {}", settings.db_path, exc)
            return EXIT_REFUSED
        except (apsw.Error, StoreFatal) as exc:
            logger.error("cannot open the state store {}: {}", settings.db_path, exc)
            return EXIT_IO_ERROR
        store.start()
        try:
            asyncio.run(_serve(settings, store, lifecycle, tcp))
        except StoreFatal as exc:
            lifecycle.fatal(exc)
        finally:
            store.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            settings.socket.unlink()
        for fd in locks:
            os.close(fd)
    logger.info("bfd stopped (exit {})", lifecycle.exit_code)
    return lifecycle.exit_code


async def _serve(
    settings: Settings, store: Store, lifecycle: Lifecycle, tcp: listener.Listener | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = lifecycle.attach(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lifecycle.request_stop)
    notifier = Notifier()
    governor = Governor(
        int(settings.bandwidth),
        settings.disk_threshold,
        int(settings.memory_cap),
        settings.cpu_workers,
        settings.max_connections,
        settings.per_host_connections,
        settings.transfer_workers,
    )
    transfers = Engine(settings, governor)
    kinds = registry.build(Services(settings, store, governor, transfers))
    await store.writer.call(lambda conn: _boot_repair(conn, kinds))
    disk_holds = DiskHolds(store, governor, kinds)
    control = Control(store, kinds, governor, settings, transfers)
    metrics = await _serve_metrics(settings, control, store)
    if settings.metrics and metrics is None:
        lifecycle.exit_code = EXIT_REFUSED
        return
    try:
        servers, health_servicer = await _start_servers(settings, control, tcp)
    except (OSError, RuntimeError, Refused) as exc:  # a port taken, a file unreadable
        logger.error("cannot serve the API: {}", exc)
        lifecycle.exit_code = EXIT_REFUSED
        if metrics is not None:
            await asyncio.to_thread(metrics.close)
        return
    runners = [asyncio.create_task(kind.runner.run(), name=kind.name) for kind in kinds]
    keepalive = asyncio.create_task(_report(notifier, store, control), name="sd_notify")
    probes = asyncio.create_task(disk_holds.run(), name="disk holds")
    logger.info(
        "bfd {} ready on {} (state {}, pid {})",
        version(),
        settings.socket,
        settings.state_dir,
        os.getpid(),
    )
    notifier.ready(f"serving on {settings.socket}")
    await stop.wait()

    logger.info("stopping: draining transfers (up to {} s)", settings.drain_timeout)
    notifier.stopping("draining")
    await health_servicer.enter_graceful_shutdown()
    await asyncio.gather(*(kind.runner.drain(settings.drain_timeout) for kind in kinds))
    await disk_holds.close()
    for task in (*runners, keepalive, probes):
        task.cancel()
    await asyncio.gather(*runners, keepalive, probes, return_exceptions=True)
    await transfers.close()
    await asyncio.gather(*(server.stop(grace=1.0) for server in servers))
    if metrics is not None:
        await asyncio.to_thread(metrics.close)
    await asyncio.to_thread(governor.close)


async def _serve_metrics(settings: Settings, control: Control, store: Store) -> "Metrics | None":
    """The metrics server when asked for (None also when its address cannot be bound)."""
    if not settings.metrics:
        return None
    from bulkforge.daemon.metrics import Metrics  # prometheus-client: only when served

    # Before the runners start: what the jobs had finished then is not counted as new.
    at_start = await control.list([], "")
    metrics = Metrics(control, store, asyncio.get_running_loop(), at_start)
    try:
        control.metrics_address = await asyncio.to_thread(metrics.serve, settings.metrics)
    except (OSError, ValueError) as exc:
        logger.error("cannot serve metrics on {}: {}", settings.metrics, exc)
        return None
    return metrics


async def _start_servers(
    settings: Settings, control: Control, tcp: listener.Listener | None
) -> tuple[list[grpc.aio.Server], health.aio.HealthServicer]:
    """The unix socket's server, and with --listen a TLS one (token and client CA if set).

    Each is its own gRPC server: the TCP one's connection cap and deadlines are its own, so
    nothing that reaches it can take the unix socket's connections.
    """
    health_servicer = health.aio.HealthServicer()
    servicer = Servicer(control, settings.max_watches)
    local = _server(servicer, health_servicer, [])
    local.add_insecure_port(f"unix:{settings.socket}")
    servers = [local]
    if settings.listen and tcp is not None:
        interceptors = [BearerToken(tcp.token)] if tcp.token else []
        remote = _server(servicer, health_servicer, interceptors, tcp.options)
        bound = remote.add_secure_port(settings.listen, _tls(tcp))
        control.listen_address = f"{settings.listen.rpartition(':')[0]}:{bound}"
        servers.append(remote)
        if settings.allow_unauthenticated and not (tcp.token or tcp.client_ca):
            logger.warning(
                "allow_unauthenticated: anyone who reaches {} may call every verb",
                control.listen_address,
            )
    for server in servers:
        await server.start()
    # Group members (operators) may connect; nobody else.
    os.chmod(settings.socket, 0o660)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servers, health_servicer


def _server(
    servicer: Servicer,
    health_servicer: health.aio.HealthServicer,
    interceptors: list,
    bounds: list[tuple[str, int]] | None = None,
) -> grpc.aio.Server:
    # A request is small (a manifest travels by path): the largest is a list of URLs.
    options = [("grpc.max_receive_message_length", MAX_REQUEST_BYTES), *(bounds or [])]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    pb_grpc.add_BulkforgeServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable(server, [SERVICE_NAME, health.SERVICE_NAME])
    return server


def _tls(tcp: listener.Listener) -> grpc.ServerCredentials:
    """bfd's certificate; a client certificate of tls_client_ca demanded when it is set."""
    pair = [(tcp.key, tcp.cert)]
    if tcp.client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=tcp.client_ca, require_client_auth=True
    )


async def _report(notifier: Notifier, store: Store, control: Control) -> None:
    """Ping the watchdog while the store's writer is alive, and keep STATUS current."""
    interval = notifier.watchdog_interval or STATUS_EVERY_S
    since_status = 0.0
    while True:
        if notifier.watchdog_interval and store.writer.alive:
            notifier.watchdog()
        since_status += interval
        if since_status >= STATUS_EVERY_S:
            since_status = 0.0
            notifier.status(f"{control.active_transfers} transfers; {store.writer.commits} commits")
        await asyncio.sleep(min(interval, STATUS_EVERY_S))
