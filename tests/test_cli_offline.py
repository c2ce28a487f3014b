"""bfctl without a daemon: usage errors exit 2, an unreachable daemon exits 3, stdout stays clean.

bfctl runs as a real subprocess, so these tests see exactly what a shell or a script would.
"""

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import run_bfctl, said

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def bfctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_bfctl(*args, timeout=60, env=env)  # its stderr is scanned for library words


@pytest.fixture
def missing_socket(tmp_path: Path) -> str:
    return str(tmp_path / "no-bfd-here.sock")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ((), "required: COMMAND"),
        (("no-such-command",), "unknown 'no-such-command'"),
        (("lsit",), "unknown 'lsit'; did you mean 'list'?"),
        (("submit", "scens"), "did you mean 'scenes'?"),
        (("submit",), "required: KIND"),
        (("submit", "download", "job1", "--dest", "out"), "one of the arguments"),
        (
            ("submit", "download", "job1", "--manifest", "m.jsonl", "--url", "http://x/a"),
            "not allowed with",
        ),
        (("status",), "required: NAME"),
        (("failures", "job1", "--limit", "many"), "'many' is not a whole number"),
        (("--socket", "a.sock", "--target", "h:1", "list"), "not allowed with"),
        # A target bfctl could never reach (a port past 65535 would wrap around).
        *(
            (("--target", target, "list"), "is not HOST:PORT with a port from 1 to 65535")
            for target in (
                "[::1]:99999",
                "127.0.0.1:65536",
                "127.0.0.1",
                "h:port",
                ":7000",
                "127.0.0.1:0",
            )  # a server listens on no port 0
        ),
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


# Every flag with a unit or a range: (the command before the flag, the flag, bad values).
# bfctl refuses each before it connects: exit 2, the flag named, nothing on stdout.
_DOWNLOAD = ("submit", "download", "j", "--manifest", "/m.jsonl", "--dest", "/d")
_SCENES = ("submit", "scenes", "j", "--input", "/i", "--key", "k", "--url", "u", "--dest", "/d")
_GENERATE = ("submit", "generate", "j", "--preset", "courses", "--dest", "/d")
SIZES = ["0x", "abc", "1XB", "-1", "1.5.5GB", "5GB/s", ""]
SPACES = [*SIZES, "0", "0GB"]
FRACTIONS = ["0", "-0.1", "1.01", "x", "nan", ""]
BAD_VALUES = {
    ((), "--timeout"): ["-1", "x", "nan", "inf"],
    (("analyze", "--manifest", "/m.jsonl"), "--largest"): ["0", "-1", "x", "1.5", "10001"],
    (("analyze", "--manifest", "/m.jsonl"), "--space"): SPACES,
    (("analyze", "--manifest", "/m.jsonl"), "--safety-margin"): FRACTIONS,
    (("plan", "--manifest", "/m.jsonl"), "--space"): SPACES,
    (("plan", "--manifest", "/m.jsonl", "--space", "1TB"), "--safety-margin"): FRACTIONS,
    (_DOWNLOAD, "--space"): SPACES,
    (_DOWNLOAD, "--safety-margin"): FRACTIONS,
    (_SCENES, "--shard-size"): ["0", "-1", "x", "1000001"],
    (_SCENES, "--max-size"): [*SIZES, "0", "3GiB"],
    (_SCENES, "--fetch-timeout"): ["0", "-1", "x", "3601", "nan"],
    (_SCENES, "--keep"): ["", ",", " , "],
    (_GENERATE, "--rows"): ["0", "-1", "x", "1e3", "10000000001"],
    ((*_GENERATE, "--rows", "10"), "--seed"): ["-1", "x", str(2**63)],
    ((*_GENERATE, "--rows", "10"), "--chunk-rows"): ["0", "x", "100000001"],
    (("verify", "j"), "--batch"): ["-1", "x"],
    (("failures", "j"), "--limit"): ["0", "-1", "x", "10001"],
    (("watch", "j"), "--interval"): ["0", "-1", "x", "inf"],
    (("demo",), "--files"): ["0", "-1", "x"],
    (("demo",), "--size"): SIZES,
    (("system",), "--set"): [
        "foo=1",
        "=1",
        "bandwidth",
        "bandwidth=fast",
        "memory_cap=-1",
        "disk_threshold=0",
        "disk_threshold=2",
        "cpu_workers=0",
        "max_connections=x",
        "per_host_connections=1025",
        "transfer_workers=65",
    ],
}


def _argv(before: tuple[str, ...], flag: str, value: str) -> list[str]:
    if not before:  # a global flag goes before the command
        return [f"{flag}={value}", "list"]
    return [*before, f"{flag}={value}"]


@pytest.mark.parametrize(
    ("before", "flag", "value"),
    [(before, flag, value) for (before, flag), values in BAD_VALUES.items() for value in values],
)
def test_a_bad_value_of_a_numeric_or_size_flag_is_a_usage_error(
    before: tuple[str, ...], flag: str, value: str, capsys
) -> None:
    from bulkforge.client.__main__ import build_parser

    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args(_argv(before, flag, value))
    captured = capsys.readouterr()
    said(f"bfctl {flag}={value}", captured.err)
    assert ended.value.code == EXIT_USAGE
    assert f"argument {flag}" in captured.err and captured.out == ""
    assert "Traceback" not in captured.err
    # bounds as people write them: 1,000,000,000, never 1e+09
    assert not re.search(r"\de[+-]?\d", captured.err.replace(value, "")), captured.err


def _flags_with_a_type(parser, path=()) -> set[tuple[tuple[str, ...], str]]:
    """(command words, option) of every option that converts its value, in every command."""
    import argparse

    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _flags_with_a_type(sub, (*path, name))
        elif action.type is not None and action.option_strings and not _names(action):
            found.add((path, action.option_strings[-1]))
    return found


def _names(action) -> bool:
    """A flag of names (--step, --markets): tests/test_words.py tables those (and every list
    flag's empty list)."""
    return hasattr(action.type, "known")


def test_the_table_of_bad_values_covers_every_flag_with_a_type() -> None:
    from bulkforge.client.__main__ import build_parser

    tabled = {(_command(before), flag) for before, flag in BAD_VALUES}
    typed = _flags_with_a_type(build_parser())
    assert len(typed) >= 15, typed
    missing = typed - tabled
    assert not missing, f"flags with a type but no bad values in the table: {missing}"


def _command(before: tuple[str, ...]) -> tuple[str, ...]:
    """The command words of an argv: up to the job name or the first option."""
    words = []
    for word in before:
        if word == "j" or word.startswith("-"):
            break
        words.append(word)
    return tuple(words)


@pytest.mark.parametrize(
    "argv",
    [
        ["--timeout", "0", "list"],
        ["plan", "--manifest", "/m", "--space", "931GiB", "--safety-margin", "1"],
        ["plan", "--manifest", "/m", "--space", "auto", "--dest", "/d"],
        ["demo", "--size", "1GB", "--files", "1"],
        [*_SCENES, "--max-size", "64MiB", "--shard-size", "1000000", "--fetch-timeout", "0.5"],
        ["system", "--set", "bandwidth=400Mbit/s", "--set", "disk_threshold=0.8"],
        ["system", "--set", "memory_cap=0"],
    ],
)
def test_good_values_pass_the_same_checks(argv: list[str]) -> None:
    from bulkforge.client.__main__ import build_parser

    build_parser().parse_args(argv)  # raises SystemExit when refused


def test_plan_and_analyze_need_no_running_bfd(tmp_path: Path, missing_socket: str) -> None:
    rows = [
        {"url": f"http://127.0.0.1:9/d{i % 3}/f{i}.bin", "path": f"d{i % 3}/f{i}.bin", "size": 400}
        for i in range(9)
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    planned = bfctl("--socket", missing_socket, "--json", "plan", "--manifest", str(manifest),
                    "--space", "1000", "--safety-margin", "1")  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert "no bfd answers at" in planned.stderr and "nothing kept" in planned.stderr
    plan = json.loads(planned.stdout)
    assert sum(batch["files"] for batch in plan["batches"]) == 9
    assert all(batch["bytes"] <= 1000 for batch in plan["batches"])
    analyzed = bfctl("--socket", missing_socket, "--json", "analyze", "--manifest", str(manifest))
    assert analyzed.returncode == 0, analyzed.stderr
    assert json.loads(analyzed.stdout)["files"] == 9
    # Commands that change state still need the real bfd.
    listed = bfctl("--socket", missing_socket, "list")
    assert listed.returncode == EXIT_UNREACHABLE
