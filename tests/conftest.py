"""Test harness: the real bfd as a subprocess on a temporary state dir, bfctl as a subprocess.

Nothing of ours is mocked: tests talk to the daemon through bfctl or the
generated stubs, and the daemon downloads from real servers on 127.0.0.1.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import boto3
import grpc
import psutil
import pytest
from botocore.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moto.server import ThreadedMotoServer

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

READY_TIMEOUT_S = 30.0
# Short backoffs and timeouts so fault tests finish in seconds, not minutes.
FAST_RETRIES = [
    "--retry-base-delay",
    "0.05",
    "--retry-max-delay",
    "0.3",
    "--read-timeout",
    "1.5",
    "--connect-timeout",
    "2",
    "--max-attempts",
    "4",
]


class Daemon:
    """One bfd process on its own state dir; can be killed and started again."""

    def __init__(self, root: Path, args: list[str] | None = None):
        self.root = root
        self.state_dir = root / "state"
        # Unix socket paths are limited to ~107 bytes; pytest's tmp paths can be long.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="bf-", dir="/tmp"))
        self.socket = self.socket_dir / "bfd.sock"
        self.log = root / "bfd.log"
        self.args = list(args or [])
        self.proc: subprocess.Popen | None = None
        self._channel: grpc.Channel | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bulkforge.daemon",
            "--state-dir",
            str(self.state_dir),
            "--socket",
            str(self.socket),
            "--log-format",
            "human",
            *self.args,
        ]

    def start(self, env: dict | None = None) -> "Daemon":
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"bfd exited with {self.proc.returncode} before ready:\n{self.log_tail()}"
                )
            if self.socket.exists() and self._serving():
                return
            time.sleep(0.05)
        raise AssertionError(f"bfd not ready after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def _serving(self) -> bool:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
            except grpc.RpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    @property
    def stub(self) -> pb_grpc.BulkforgeStub:
        if self._channel is None:
            channel = grpc.insecure_channel(f"unix:{self.socket}")
            self._channel = grpc.intercept_channel(channel, RefusalRecorder())
        return pb_grpc.BulkforgeStub(self._channel)

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def workers(self) -> list[int]:
        """The processes bfd started that run now (transfer and CPU workers): taken before a
        kill -9, to wait for them to end as orphans."""
        assert self.proc is not None
        return [child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._drop_channel()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        self._drop_channel()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"bfd did not stop within {timeout} s:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def submit(self, name: str, manifest: Path, dest: Path) -> pb.SubmitResponse:
        request = pb.DownloadSpec(manifest=str(manifest), dest=str(dest))
        return self.stub.Submit(pb.SubmitRequest(name=name, download=request), timeout=60)

    def bfctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_bfctl("--socket", str(self.socket), *args, timeout=timeout)

    def read_store(self) -> sqlite3.Connection:
        """The store, read-only, as a test checks what bfd recorded."""
        path = self.state_dir / "bulkforge.db"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def submit_batched(self, name: str, manifest: Path, dest: Path, space: int) -> None:
        """A download cut into batches of `space` bytes (margin 1) that go on by themselves."""
        done = self.bfctl(
            "submit", "download", name, "--manifest", str(manifest), "--dest", str(dest),
            "--space", str(space), "--safety-margin", "1", "--auto-proceed",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    def bfctl_json(self, *args: str) -> dict:
        done = self.bfctl("--json", *args)
        assert done.returncode == 0, f"bfctl {args} exited {done.returncode}: {done.stderr}"
        return json.loads(done.stdout)

    def wait_state(self, name: str, states: set[str], timeout: float = 60) -> pb.Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.stub.Status(pb.JobRef(name=name), timeout=10)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {name} still {job.state} {dict(job.counts)} after {timeout} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._drop_channel()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def run_bfctl(*args: str, timeout: float = 120, **how) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "bulkforge.client", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **how,
    )
    said(f"bfctl {' '.join(args)[:200]}", done.stderr)
    return done


# -- what a person reads: no library's words ---------------------------------------------------
#
# Every message bfctl prints on stderr and every refusal bfd sends a test's stub is kept for
# the test, and a test fails at teardown when one of them holds the words of a library
# (pydantic, argparse internals, gRPC's C core) instead of bulkforge's own (issue 25).

LIBRARY_WORDS = (
    "Input should",
    "Extra inputs",
    "Field required",
    "found using",
    "validation error",
    "pydantic",
    "Traceback",
    "Value error,",
    "String should",
    "List should",
    "Dictionary should",
    "Unable to extract tag",
    "should be a valid",
    "_InactiveRpcError",
    "debug_error_string",
    "StatusCode.",
    "absl::InitializeLog",
    "TSI_",
)
# A gRPC C-core log line: E1207 21:45:04.114263  1234 ssl_transport_security.cc:1234]
C_CORE_LINE = re.compile(r"(^|\n)[EWIF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")
_SAID: list[tuple[str, str]] = []


def said(where: str, text: str) -> None:
    """Keep a message a person would read, for the check at the test's teardown."""
    if text:
        _SAID.append((where, text))


def library_words(text: str) -> list[str]:
    found = [words for words in LIBRARY_WORDS if words in text]
    return found + (["a gRPC C-core log line"] if C_CORE_LINE.search(text) else [])


@pytest.fixture(autouse=True)
def no_library_words() -> Iterator[None]:
    _SAID.clear()
    yield
    offending = [(where, text) for where, text in _SAID if library_words(text)]
    _SAID.clear()
    if offending:
        where, text = offending[0]
        pytest.fail(
            f"{len(offending)} message(s) in a library's words {library_words(text)}; "
            f"the first, from {where}:\n{text[:1500]}"
        )


class _RecordedStream:
    """A server stream whose refusal, when it comes, is kept."""

    def __init__(self, call, method: str):
        self._call, self._method = call, method

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._call)
        except grpc.RpcError as error:
            said(self._method, error.details() or "")
            raise

    def __getattr__(self, name):
        return getattr(self._call, name)


class RefusalRecorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Keeps what bfd says when it refuses a call of a test's stub."""

    def intercept_unary_unary(self, continuation, details, request):
        outcome = continuation(details, request)
        if outcome.code() not in (grpc.StatusCode.OK, None):
            said(details.method, outcome.details() or "")
        return outcome

    def intercept_unary_stream(self, continuation, details, request):
        return _RecordedStream(continuation(details, request), details.method)


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator:
    """Build daemons on temporary state dirs; each is killed at teardown if still running."""
    made: list[Daemon] = []

    def make(*args: str, root: Path | None = None) -> Daemon:
        daemon = Daemon(root or tmp_path / f"d{len(made)}", list(args))
        daemon.root.mkdir(parents=True, exist_ok=True)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


@pytest.fixture
def daemon(make_daemon) -> Iterator[Daemon]:
    """A running bfd with fast retries; at teardown it must stop cleanly with exit 0."""
    running = make_daemon(*FAST_RETRIES).start()
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture
def patient_daemon(make_daemon) -> Iterator[Daemon]:
    """The `daemon`, except that it never gives up on a silent origin: a stall lasts until
    the test acts on it, however slowly a loaded machine lets the test get there."""
    running = make_daemon(*FAST_RETRIES, "--read-timeout", "3600").start()
    yield running
    assert running.stop() == 0, running.log_tail()


@dataclass(frozen=True)
class Dataset:
    files: dict[str, bytes]

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()


def make_dataset(count: int, size: int, seed: int = 7, vary: int = 0) -> Dataset:
    """`count` files of about `size` bytes, pseudo-random and reproducible."""
    import random

    rng = random.Random(seed)
    files = {}
    for index in range(count):
        length = size + (rng.randrange(vary) if vary else 0)
        files[f"set/{index % 10}/file-{index:05d}.bin"] = rng.randbytes(length)
    return Dataset(files)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def manifest_rows(origin, dataset: Dataset, with_sha: bool = True) -> list[dict]:
    rows = []
    for name, data in dataset.files.items():
        row = {"url": origin.url_for(name), "path": name, "size": len(data)}
        if with_sha:
            row["sha256"] = hashlib.sha256(data).hexdigest()
        rows.append(row)
    return rows


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wait_until(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never met within {timeout} s"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """No such process, or only its zombie (nothing of it runs)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 implementation (moto) on 127.0.0.1, shared by the session."""
    # werkzeug logs every request at INFO; thousands of lines only slow the fill down.
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug.setLevel(level)


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def admin_client(endpoint: str):
    """The tests' own client, with explicit dummy keys so it never depends on the env."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=8, request_checksum_calculation="when_required"),
    )


def public_bucket(endpoint: str, objects: dict[str, bytes]) -> str:
    """A bucket whose objects anyone may GET, as data.binance.vision's are."""
    client = admin_client(endpoint)
    name = f"pub-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    for key, data in objects.items():
        client.put_object(Bucket=name, Key=key, Body=data, ACL="public-read")
    return name


def sha256sum_line(data: bytes, name: str) -> bytes:
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()


def unavailable(reason: str) -> NoReturn:
    """This test needs something the machine lacks: a skip that says why, except under CI.

    CI runs as root with systemd's tools installed, so there a missing capability means
    the run proves less than it claims: with CI=true it fails instead of skipping.
    """
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, yet {reason}", pytrace=False)
    pytest.skip(reason)


class Tmpfs:
    """Small tmpfs filesystems that play real disks (CI runs as root).

    Calling it mounts one (where mounting is refused, the test is `unavailable`); `swap`
    puts a fresh empty filesystem in place of one, as an operator swapping a disk would.
    Every mount is lazily unmounted at teardown.
    """

    def __init__(self, root: Path):
        self._root = root
        self.mounts: list[Path] = []

    def __call__(self, name: str, size: str) -> Path:
        point = self._root / name
        point.mkdir(exist_ok=True)
        if os.geteuid() != 0 or not shutil.which("mount"):
            unavailable("mounting a tmpfs needs root and mount(8); this run has neither")
        self._mount(point, size)
        return point

    def _mount(self, point: Path, size: str) -> None:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            unavailable(f"mounting a tmpfs was refused here: {done.stderr.strip()}")
        self.mounts.append(point)

    def swap(self, point: Path, size: str) -> None:
        subprocess.run(["umount", str(point)], check=True)
        self.mounts.remove(point)
        self._mount(point, size)

    def unmount_all(self) -> None:
        for point in self.mounts:
            subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    mounts = Tmpfs(tmp_path)
    yield mounts
    mounts.unmount_all()
