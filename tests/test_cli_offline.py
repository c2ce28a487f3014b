"""bfctl without a daemon: usage errors exit 2, an unreachable daemon exits 3, stdout stays clean.

bfctl runs as a real subprocess, so these tests see exactly what a shell or a script would.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def bfctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bulkforge.client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def missing_socket(tmp_path: Path) -> str:
    return str(tmp_path / "no-bfd-here.sock")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ((), "required: COMMAND"),
        (("no-such-command",), "invalid choice"),
        (("submit",), "required: KIND"),
        (("submit", "download", "job1", "--dest", "out"), "one of the arguments"),
        (
            ("submit", "download", "job1", "--manifest", "m.jsonl", "--url", "http://x/a"),
            "not allowed with",
        ),
        (("status",), "required: NAME"),
        (("failures", "job1", "--limit", "many"), "invalid int value"),
        (("--socket", "a.sock", "--target", "h:1", "list"), "not allowed with"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], complaint: str) -> None:
    result = bfctl(*args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert complaint in result.stderr
    assert result.stdout == ""


def test_missing_manifest_is_a_usage_error_before_connecting(
    tmp_path: Path, missing_socket: str
) -> None:
    manifest = tmp_path / "absent.jsonl"
    result = bfctl(
        "--socket", missing_socket, "submit", "download", "job1",
        "--manifest", str(manifest), "--dest", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"--manifest {manifest}: no such file" in result.stderr
    assert "cannot reach" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("status", "job1"),
        ("watch", "job1"),
        ("system",),
        ("submit", "download", "job1", "--url", "http://127.0.0.1/a", "--dest", "out"),
    ],
)
def test_missing_socket_exits_3_with_a_hint(args: tuple[str, ...], missing_socket: str) -> None:
    result = bfctl("--socket", missing_socket, *args)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert f"cannot reach bfd at {missing_socket}" in result.stderr
    assert "Is it running?" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_with_unreachable_daemon_prints_nothing_on_stdout(
    where: str, missing_socket: str
) -> None:
    args = ["--json", "status", "job1"] if where == "before" else ["status", "job1", "--json"]
    result = bfctl("--socket", missing_socket, *args)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert "cannot reach bfd" in result.stderr
    assert result.stdout == ""


def test_socket_from_environment(missing_socket: str) -> None:
    env = {**os.environ, "BULKFORGE_SOCKET": missing_socket}
    result = bfctl("list", env=env)
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert f"cannot reach bfd at {missing_socket}" in result.stderr


def test_a_path_that_is_not_a_socket_is_unreachable(tmp_path: Path) -> None:
    not_a_socket = tmp_path / "plain-file"
    not_a_socket.write_text("")
    result = bfctl("--socket", str(not_a_socket), "list")
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert "not a socket" in result.stderr


def test_refused_connection_on_a_stale_socket_exits_3(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    # A socket file nobody listens on: what a daemon killed with -9 leaves behind.
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(stale))
    result = bfctl("--socket", str(stale), "--timeout", "5", "list")
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert f"cannot reach bfd at {stale}" in result.stderr
    assert result.stdout == ""
