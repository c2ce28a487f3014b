"""Only regular files inside the input tree are read, whatever the input kind.

A table: {a symlink out of the root, a symlink to /dev/zero, a FIFO, a socket, a
character device, a directory} by {a clean job's zips, a download's --manifest, a
scenes job's --input (a directory, a file), bfctl's generate --spec}. Nothing hangs
(every wait is bounded) and each is refused by its reason: a failed zip whose error
class is the reason, or a refused submit naming the path and what it is.

A file named alone (a manifest, a scenes Parquet file, a spec) has no root: a symlink
to a regular file anywhere is followed, and only what it leads to is judged.
"""

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Daemon, unavailable

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from tests.binance_data import trade_lines, trades, trades_path, write_zip

DAY = date(2024, 3, 1)
ENDED = {"completed", "failed"}
SPEC = '[tables.t.columns]\nid = { kind = "sequence", primary_key = true }\n'


def symlink_out(path: Path, good: Path) -> None:
    path.symlink_to(good)


def symlink_to_zero(path: Path, good: Path) -> None:
    path.symlink_to("/dev/zero")


def fifo(path: Path, good: Path) -> None:
    os.mkfifo(path)


def unix_socket(path: Path, good: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))  # left bound (not listening): a socket file on disk
    SOCKETS.append(listener)


def char_device(path: Path, good: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError:
        unavailable("mknod needs CAP_MKNOD")


def directory(path: Path, good: Path) -> None:
    path.mkdir()


SOCKETS: list[socket.socket] = []
# case -> (make it at a path, given a good file outside the root; the reason inside a
# root; the reason for a file named alone, None when it is accepted; words in a refusal)
CASES: dict[str, tuple[Callable, str, str | None, str]] = {
    "symlink out of root": (symlink_out, "outside_root", None, "leads out of the input root"),
    "symlink to /dev/zero": (symlink_to_zero, "outside_root", "char_device", "character device"),
    "fifo": (fifo, "fifo", "fifo", "a FIFO"),
    "socket": (unix_socket, "socket", "socket", "a socket"),
    "char device": (char_device, "char_device", "char_device", "a character device"),
    "directory": (directory, "directory", "directory", "a directory"),
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Under /tmp: a unix socket's path must stay under ~107 bytes."""
    made = Path(tempfile.mkdtemp(prefix="bf-in-", dir="/tmp"))
    yield made
    for listener in SOCKETS:
        listener.close()
    SOCKETS.clear()
    shutil.rmtree(made, ignore_errors=True)


def refusal(daemon: Daemon, request: pb.SubmitRequest) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        daemon.stub.Submit(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    return refused.value.details()


def test_a_clean_job_fails_each_unsafe_zip_by_its_reason_and_cleans_the_rest(
    daemon: Daemon, short_dir: Path
) -> None:
    root, outside = short_dir / "in", short_dir / "outside"
    good = write_zip(outside, "elsewhere.zip", trade_lines(trades(DAY, 1, 10), "spot"))
    write_zip(root, trades_path("spot", "BTCUSDT", DAY), trade_lines(trades(DAY, 1, 50), "spot"))
    expected = {}
    for n, (make, reason, _, _) in enumerate(dict(sorted(CASES.items())).values(), start=1):
        relative = trades_path("spot", "BTCUSDT", DAY + timedelta(days=n))
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        make(root / relative, good)
        expected[relative] = reason
    submitted = daemon.bfctl(
        "submit", "clean", "c", "--input", str(root), "--dest", str(short_dir / "out")
    )
    assert submitted.returncode == 0, submitted.stderr
    job = daemon.wait_state("c", ENDED, timeout=120)
    assert dict(job.counts) == {"done": 1, "failed": len(CASES)}, daemon.log_tail()
    failures = daemon.bfctl_json("failures", "c")["failures"]
    assert {f["item"]: (f["step"], f["error_class"]) for f in failures} == {
        path: ("open", reason) for path, reason in expected.items()
    }
    assert all(f["item"] in f["error"] for f in failures)
    assert "Traceback" not in daemon.log.read_text()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_manifest_that_is_no_regular_file_is_refused_naming_it(
    daemon: Daemon, short_dir: Path, suffix: str
) -> None:
    good = short_dir / f"good{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"url": ["http://127.0.0.1:9/x"]}), good)
    elif suffix == ".csv":
        good.write_text("url\nhttp://127.0.0.1:9/x\n")
    else:
        good.write_text(json.dumps({"url": "http://127.0.0.1:9/x"}) + "\n")
    for n, (name, (make, _, reason, words)) in enumerate(sorted(CASES.items())):
        path = short_dir / f"m{n}{suffix}"
        make(path, good)
        request = pb.SubmitRequest(
            name=f"d{n}",
            download=pb.DownloadSpec(manifest=str(path), dest=str(short_dir / f"o{n}")),
        )
        if reason is None:  # a manifest named alone has no root: the symlink is followed
            assert daemon.stub.Submit(request, timeout=60).job.name == f"d{n}"
            continue
        details = refusal(daemon, request)
        assert str(path) in details and words in details, (name, details)
        # bfctl checks by the same rule on its own node before calling bfd.
        done = daemon.bfctl(
            "submit", "download", f"x{n}", "--manifest", str(path), "--dest", str(short_dir / "x")
        )
        assert done.returncode == 2 and words in done.stderr, (name, done.stderr)


def test_a_scenes_input_that_is_no_regular_file_is_refused_naming_it(
    daemon: Daemon, short_dir: Path
) -> None:
    outside = short_dir / "outside.parquet"
    pq.write_table(pa.table({"key": ["a"], "url": ["http://127.0.0.1:9/a"]}), outside)
    for n, (name, (make, in_root, alone, words)) in enumerate(sorted(CASES.items())):
        # In an input directory beside a good file: the directory is the root.
        folder = short_dir / f"dir{n}"
        folder.mkdir()
        shutil.copy(outside, folder / "good.parquet")
        make(folder / "hostile.parquet", outside)
        spec = pb.ScenesSpec(input=str(folder), key="key", url="url", dest=str(short_dir / f"s{n}"))
        details = refusal(daemon, pb.SubmitRequest(name=f"sd{n}", scenes=spec))
        assert str(folder / "hostile.parquet") in details, (name, details)
        assert (words if in_root != "outside_root" else "leads out of the input root") in details
        # Named alone.
        path = short_dir / f"alone{n}.parquet"
        make(path, outside)
        spec = pb.ScenesSpec(input=str(path), key="key", url="url", dest=str(short_dir / f"a{n}"))
        request = pb.SubmitRequest(name=f"sa{n}", scenes=spec)
        if alone is None:
            assert daemon.stub.Submit(request, timeout=60).job.name == f"sa{n}"
            continue
        if name == "directory":  # a directory named alone is an input directory: of no *.parquet
            assert "holds no *.parquet file" in refusal(daemon, request)
            continue
        details = refusal(daemon, request)
        assert str(path) in details and words in details, (name, details)


def test_a_generate_spec_that_is_no_regular_file_is_refused_by_bfctl(
    daemon: Daemon, short_dir: Path
) -> None:
    good = short_dir / "good.toml"
    good.write_text(SPEC)
    for n, (name, (make, _, reason, words)) in enumerate(sorted(CASES.items())):
        path = short_dir / f"spec{n}.toml"
        make(path, good)
        done = daemon.bfctl(
            "submit", "generate", f"g{n}", "--spec", str(path), "--rows", "10",
            "--dest", str(short_dir / f"g{n}"), timeout=60,
        )  # fmt: skip
        if reason is None:
            assert done.returncode == 0, (name, done.stderr)
            continue
        assert done.returncode == 2, (name, done.stderr)
        assert str(path) in done.stderr and words in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
