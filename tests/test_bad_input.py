"""Bad input gets a clear refusal (gRPC status, bfctl exit 1 or 2), never a traceback,
and the daemon keeps serving."""

import os
from pathlib import Path

import grpc
import psutil
import pytest
from conftest import Daemon, wait_until, write_manifest
from origin import Fault, FaultKind, Origin

from bulkforge.daemon.downloader.manifest import MAX_LINE_BYTES
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import size_text

URL = "http://127.0.0.1:9/a.bin"


def refuse(daemon: Daemon, *args: str, code: int = 1) -> str:
    done = daemon.bfctl(*args)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    return done.stderr


def submit_manifest(daemon: Daemon, manifest: Path, dest: Path, name: str = "bad") -> str:
    return refuse(
        daemon, "submit", "download", name, "--manifest", str(manifest), "--dest", str(dest)
    )


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("m.jsonl", f'{{"url": "{URL}"}}\n{{"url": \n', "row 2: not valid JSON"),
        ("m.jsonl", '{"path": "a.bin"}\n', "url: missing"),
        ("m.jsonl", f'{{"url": "{URL}", "size": -5}}\n', "size"),
        ("m.jsonl", f'{{"url": "{URL}", "path": "../../etc/passwd"}}\n', "escapes"),
        ("m.jsonl", f'{{"url": "{URL}", "path": "/etc/passwd"}}\n', "absolute"),
        ("m.jsonl", f'{{"url": "{URL}", "path": "ok/../../x"}}\n', "escapes"),
        ("m.jsonl", '{"url": "file:///etc/passwd"}\n', "url"),
        ("m.jsonl", f'{{"url": "{URL}", "sha256": "abc"}}\n', "sha256"),
        ("m.jsonl", f'[1, 2]\n{{"url": "{URL}"}}\n', "row 1"),
        ("m.jsonl", "", "no rows"),
        ("m.csv", "path,size\na.bin,1\n", "no 'url' column"),
        ("m.parquet", "this is not parquet", "not a readable Parquet"),
        ("m.txt", URL, "unknown format"),
        (
            "m.jsonl",
            f'{{"url": "{URL}", "path": "x"}}\n{{"url": "{URL}2", "path": "x"}}\n',
            f"2 entries (the URLs '{URL}' and '{URL}2' among them) would all be written to 'x'",
        ),
    ],
)
def test_malformed_manifests_are_refused_whole(daemon, tmp_path, filename, content, expected):
    manifest = tmp_path / filename
    manifest.write_text(content)
    message = submit_manifest(daemon, manifest, tmp_path / "dest")
    assert "invalid argument" in message.lower()
    assert expected in message
    # Nothing of a refused manifest is kept, and the daemon still answers.
    assert daemon.bfctl_json("list") == {"jobs": []}
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
@pytest.mark.parametrize("good_lines", [0, 2])
def test_a_manifest_line_past_the_bound_is_refused_without_reading_it_whole(
    daemon, tmp_path, suffix, good_lines
):
    """400 MB of one line (a sparse file: NUL bytes, no newline) after a few good lines."""
    manifest = tmp_path / f"m.{suffix}"
    head = "url,path\n" if suffix == "csv" else ""
    rows = [f"{URL}{i},f{i}\n" if suffix == "csv" else f'{{"url": "{URL}{i}"}}\n'
            for i in range(good_lines)]  # fmt: skip
    manifest.write_text(head + "".join(rows))
    with manifest.open("r+b") as grown:
        grown.truncate(manifest.stat().st_size + 400 * 1024 * 1024)
    message = submit_manifest(daemon, manifest, tmp_path / "dest")
    line = good_lines + (2 if suffix == "csv" else 1)
    assert f"line {line:,} is longer than {size_text(MAX_LINE_BYTES)}" in message, message
    # bfd idles at ~110 MB; reading the line whole took it past 1.3 GB.
    assert psutil.Process(daemon.proc.pid).memory_info().rss < 300 * 1024 * 1024
    assert daemon.bfctl_json("list") == {"jobs": []}


def test_manifest_errors_name_up_to_ten_rows(daemon, tmp_path):
    rows = "".join('{"size": -1}\n' for _ in range(50))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(rows)
    message = submit_manifest(daemon, manifest, tmp_path / "dest")
    assert "row 10:" in message and "row 11:" not in message


def test_unknown_jobs_and_illegal_moves(daemon, tmp_path):
    assert "not found" in refuse(daemon, "status", "nope")
    assert "no job named 'nope'" in refuse(daemon, "pause", "nope")
    with Origin({"a.bin": b"a" * 10}) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", [{"url": origin.url_for("a.bin")}])
        assert (
            daemon.bfctl(
                "submit",
                "download",
                "one",
                "--manifest",
                str(manifest),
                "--dest",
                str(tmp_path / "d"),
            ).returncode
            == 0
        )
        daemon.wait_state("one", {"completed"})
    assert "cannot resume job 'one': it has completed" in refuse(daemon, "resume", "one")
    assert "cannot pause job 'one'" in refuse(daemon, "pause", "one")
    assert "failed precondition" in refuse(daemon, "cancel", "one").lower()
    assert daemon.bfctl_json("retry", "one")["retried"] == 0
    assert daemon.bfctl_json("status", "one")["state"] == "completed"


def test_cancelled_job_cannot_be_resumed_or_retried(patient_daemon, tmp_path):
    daemon = patient_daemon
    stall = {"x.bin": Fault(FaultKind.STALL, after_bytes=10, seconds=3600)}
    with Origin({"x.bin": b"x" * 1000}, stall) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", [{"url": origin.url_for("x.bin")}])
        submitted = daemon.bfctl(
            "submit", "download", "gone", "--manifest", str(manifest), "--dest", str(tmp_path / "d")
        )
        assert submitted.returncode == 0
        wait_until(lambda: origin.requests("x.bin"), what="a request")
        cancelled = daemon.bfctl_json("cancel", "gone")
    assert cancelled["state"] == "cancelled"
    assert "cancelled" in refuse(daemon, "resume", "gone")
    assert "cancelled" in refuse(daemon, "retry", "gone")
    wait_until(lambda: daemon.bfctl_json("status", "gone")["counts"] == {"pending": 1})


def test_usage_errors_exit_2(daemon, tmp_path):
    refuse(daemon, "submit", "download", "x", "--dest", str(tmp_path), code=2)
    refuse(daemon, "submit", "download", "x", "--manifest", str(tmp_path / "none.jsonl"),
           "--dest", str(tmp_path), code=2)  # fmt: skip
    refuse(daemon, "frobnicate", code=2)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (pb.SubmitRequest(name="x"), "no job spec"),
        (pb.SubmitRequest(name="bad name!", download=pb.DownloadSpec(urls=pb.UrlList(urls=[URL]), dest="/tmp/x")), "name"),  # noqa: E501
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(urls=pb.UrlList(urls=[URL]), dest="rel/dir")), "absolute"),  # noqa: E501
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(manifest="m.jsonl", dest="/tmp/x")), "absolute"),  # noqa: E501
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(dest="/tmp/x")), "exactly one source"),
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(urls=pb.UrlList(urls=["http://h/"]), dest="/tmp/x")), "give it a path"),  # noqa: E501
        # What bfctl refuses before calling, bfd refuses too, in the same words.
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(urls=pb.UrlList(urls=[URL]), dest="/tmp/x", space="0")), "positive"),  # noqa: E501
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(urls=pb.UrlList(urls=[URL]), dest="/tmp/x", space="-1")), "'-1' is negative"),  # noqa: E501
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(urls=pb.UrlList(urls=[URL]), dest="/tmp/x", space="1XB")), "'1XB' is not a size"),  # noqa: E501
        (pb.SubmitRequest(name="x", download=pb.DownloadSpec(urls=pb.UrlList(urls=[URL]), dest="/tmp/x", space="1TB", safety_margin=0)), "(0, 1]"),  # noqa: E501
    ],
)  # fmt: skip
def test_malformed_grpc_requests_get_invalid_argument(daemon, request_, expected):
    with pytest.raises(grpc.RpcError) as refused:
        daemon.stub.Submit(request_, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in refused.value.details()
    assert daemon.stub.List(pb.ListRequest(), timeout=5).jobs == []


def test_a_symlink_inside_dest_cannot_carry_a_file_outside(daemon, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "link")
    with Origin({"f.bin": b"secret" * 10}) as origin:
        manifest = write_manifest(
            tmp_path / "m.jsonl", [{"url": origin.url_for("f.bin"), "path": "link/f.bin"}]
        )
        assert (
            daemon.bfctl(
                "submit", "download", "sym", "--manifest", str(manifest), "--dest", str(dest)
            ).returncode
            == 0
        )
        job = daemon.wait_state("sym", {"completed", "failed"})
    assert job.state == "failed"
    (failure,) = daemon.bfctl_json("failures", "sym")["failures"]
    assert failure["error_class"] == "path" and "outside" in failure["error"]
    assert list(outside.iterdir()) == []


def test_daemon_log_has_no_traceback_after_bad_input(daemon, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{not json\n")
    assert "not valid JSON" in submit_manifest(daemon, manifest, tmp_path / "dest")
    # bfd logged the refusal (so the log is not empty by chance) and no traceback.
    log = daemon.log.read_text()
    assert "refused Submit of job 'bad'" in log and "Traceback" not in log
