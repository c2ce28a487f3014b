"""A bfd of bfctl's own, on a temporary socket and state dir: for the demo, and for the dry
runs (`plan`, `analyze`) when no bfd is running here. Nothing of it outlives the command."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from bulkforge.client import quiet
from bulkforge.client.api import Endpoint, socket_endpoint
from bulkforge.client.errors import ClientError, report

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20


@contextmanager
def running_daemon(workdir: Path) -> Iterator[Endpoint]:
    endpoint = socket_endpoint(workdir / "bfd.sock")
    log_path = workdir / "bfd.log"
    # An empty config of its own, so /etc/bulkforge/bfd.toml (a node's real settings: its
    # listen address, its limits) does not apply to the demo's private daemon.
    config = workdir / "bfd.toml"
    config.write_text("")
    command = [sys.executable, "-m", "bulkforge.daemon", "--config", str(config)]
    command += ["--state-dir", str(workdir / "state"), "--socket", str(endpoint.socket)]
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C on the terminal reaches bfctl, which then stops bfd
        # gracefully, instead of killing both at once.
        process = subprocess.Popen(
            command, stdout=log, stderr=log, env=daemon_environment(), start_new_session=True
        )
    try:
        wait_until_serving(process, endpoint, log_path)
        yield endpoint
    finally:
        stop_daemon(process, log_path)


def daemon_environment() -> dict[str, str]:
    """This environment minus what would tie the demo's bfd to the real one's settings or unit,
    and minus the silence bfctl imposed on gRPC's logs (bfd's log keeps them)."""
    dropped = {"NOTIFY_SOCKET", *([quiet.VERBOSITY_ENV] if quiet.set_by_bfctl else [])}
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BULKFORGE_") and key not in dropped
    }


def wait_until_serving(process: subprocess.Popen, endpoint: Endpoint, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClientError(
                f"bfd exited with code {process.returncode} before it was ready; "
                f"the end of {log_path}:\n{log_tail(log_path)}"
            )
        if endpoint.socket.exists() and is_serving(endpoint):
            return
        time.sleep(0.1)
    raise ClientError(
        f"bfd did not report SERVING within {READY_TIMEOUT_S:.0f} s; "
        f"the end of {log_path}:\n{log_tail(log_path)}"
    )


def is_serving(endpoint: Endpoint) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A fresh channel per try: one that failed to connect waits out a reconnect backoff.
    with grpc.insecure_channel(endpoint.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def log_tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines) or "(empty)"


def stop_daemon(process: subprocess.Popen, log_path: Path) -> None:
    if process.poll() is not None:
        return  # it died on its own, and wait_until_serving already showed why
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        report(f"bfd did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killing it")
        process.kill()
        process.wait()
    if process.returncode not in (0, -signal.SIGTERM):
        report(f"bfd exited with code {process.returncode}; the end of {log_path}:")
        print(log_tail(log_path), file=sys.stderr)
