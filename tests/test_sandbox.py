"""The unit's sandbox matches what bfd calls: bfd and every kind of worker it starts (CPU
workers with numpy and pyarrow, transfer workers with libcurl) run a job of each kind under
packaging/bfd.service's exact SystemCallFilter=, and strace shows no call it denies.

The filter is the unit's own: its SystemCallFilter= lines read with systemd's rules (the
first an allow list, with @default; `~` lines take away, later lines add back), each @group
expanded by `systemd-analyze syscall-filter` (this systemd's own lists), installed with
libseccomp (tests/seccomp_exec.py) with the unit's SystemCallErrorNumber=. strace -f on top
records every call of every process; a call outside the allow list fails the test by name
(as `mbind`, which numpy's and Arrow's allocators make, did under `~@resources`).
"""

import ctypes.util
import functools
import re
import shutil
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import psutil
import pytest
from conftest import Daemon, unavailable
from origin import Origin
from test_packaging import service

from tests.binance_data import trades_path, write_trades_zip

SECCOMP_EXEC = Path(__file__).parent / "seccomp_exec.py"
# SQLite gives its -wal and -journal files the database's owner with fchown, only when it
# runs as root (os_unix.c, robustFchown), and ignores a refusal. The unit runs bfd as user
# bulkforge, never root; the tests run as root, so this call is theirs, not the unit's.
ROOT_ONLY = {"fchown"}
ENDED = {"completed", "failed", "cancelled"}
FILTER_LOADED = re.compile(r"seccomp\(SECCOMP_SET_MODE_FILTER, .*\) = 0$")


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    """A systemd syscall group, nested groups expanded, as this systemd defines it."""
    listed = subprocess.run(
        ["systemd-analyze", "syscall-filter", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()[1:]
    calls: set[str] = set()
    for line in listed:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= syscall_group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def expand(items: list[str]) -> set[str]:
    calls: set[str] = set()
    for item in items:
        calls |= syscall_group(item) if item.startswith("@") else {item}
    return calls


def unit_allow_list(lines: list[str]) -> set[str]:
    """What SystemCallFilter= lines allow, by systemd.exec(5): the first line is an allow
    list (systemd adds @default to it), a later `~` line removes its calls, a later plain
    line adds its calls back."""
    allowed: set[str] | None = None
    for line in lines:
        denied = line.startswith("~")
        calls = expand(line.removeprefix("~").split())
        if allowed is None:
            assert not denied, "bfd.service's filter must start as an allow list"
            allowed = set(syscall_group("@default")) | calls
        elif denied:
            allowed -= calls
        else:
            allowed |= calls
    assert allowed, "bfd.service has no SystemCallFilter="
    return allowed


def calls_made(trace: Path) -> set[str]:
    """Every system call strace -f saw once the filter was in force, by name (a call's
    resumed half is not counted). The launcher loads it before bfd exists: what comes
    before (the loading itself) is the launcher's, not bfd's."""
    lines = trace.read_text().splitlines()
    loaded = [i for i, line in enumerate(lines) if FILTER_LOADED.search(line)]
    assert loaded, "the launcher never loaded the filter"
    called = re.compile(r"^\d+\s+([a-z0-9_]+)\(")
    return {m[1] for line in lines[loaded[0] + 1 :] if (m := called.match(line))}


def require_tools() -> None:
    for tool in ("systemd-analyze", "strace"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed: the unit's filter cannot be checked")
    if ctypes.util.find_library("seccomp") is None:
        unavailable("libseccomp is not installed: the unit's filter cannot be applied")


def sandboxed(daemon: Daemon, allowed: set[str], trace: Path) -> None:
    """Start `daemon` under the unit's filter, strace -f recording every call."""
    allow_file = daemon.root / "allowed-syscalls"
    allow_file.write_text("\n".join(sorted(allowed)))
    (errno_name,) = service()["SystemCallErrorNumber"]
    inner = daemon.command
    launcher = [sys.executable, str(SECCOMP_EXEC), str(allow_file), errno_name, "--"]
    daemon.command = lambda: ["strace", "-f", "-qq", "-o", str(trace), *launcher, *inner()]


def stop_traced(daemon: Daemon) -> int:
    """SIGTERM to bfd itself (strace's child), then bfd's exit code, which strace returns."""
    assert daemon.proc is not None
    (bfd,) = psutil.Process(daemon.proc.pid).children()
    bfd.send_signal(signal.SIGTERM)
    return daemon.proc.wait(120)


def run_a_job_of_each_kind(daemon: Daemon, root: Path) -> dict[str, tuple[str, dict]]:
    ended = {}
    data = {f"f{i}.bin": bytes([i]) * 300_000 for i in range(4)}
    with Origin(data) as origin:
        urls = [arg for name in data for arg in ("--url", origin.url_for(name))]
        submitted = daemon.bfctl(
            "submit", "download", "dl", *urls, "--dest", str(root / "dl")
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        ended["dl"] = daemon.wait_state("dl", ENDED, timeout=240)
    zips = root / "zips"
    day = date(2024, 3, 1)
    write_trades_zip(zips, "spot", "BTCUSDT", day, 1, 20_000)
    assert (zips / trades_path("spot", "BTCUSDT", day)).exists()
    jobs = {
        "clean": ("clean", "--input", str(zips), "--dest", str(root / "clean")),
        "gen": ("generate", "--preset", "courses", "--rows", "3000", "--dest", str(root / "gen")),
    }
    for name, (kind, *args) in jobs.items():
        submitted = daemon.bfctl("submit", kind, name, *args)
        assert submitted.returncode == 0, submitted.stderr
        ended[name] = daemon.wait_state(name, ENDED, timeout=240)
    return {name: (job.state, dict(job.counts)) for name, job in ended.items()}


@pytest.mark.slow
def test_bfd_and_its_workers_run_under_the_units_filter_and_call_nothing_it_denies(
    make_daemon, tmp_path: Path
) -> None:
    require_tools()
    allowed = unit_allow_list(service()["SystemCallFilter"])
    trace = tmp_path / "strace.log"
    daemon = make_daemon()
    sandboxed(daemon, allowed, trace)
    daemon.start()
    ended = run_a_job_of_each_kind(daemon, tmp_path)
    assert {name: state for name, (state, _) in ended.items()} == dict.fromkeys(
        ("dl", "clean", "gen"), "completed"
    ), ended
    assert stop_traced(daemon) == 0, daemon.log_tail()
    made = calls_made(trace)
    # Each kind of process was there: CPU workers and transfer workers were traced too.
    log = trace.read_text()
    assert "bulkforge.daemon.cpu_worker" in log and "bulkforge.daemon.transfer.worker" in log
    denied = made - allowed - ROOT_ONLY
    assert not denied, (
        f"bfd called {sorted(denied)}, which bfd.service's SystemCallFilter= denies "
        "(EPERM): allow them in the unit, with the reason"
    )


def test_the_launcher_applies_the_units_filter(tmp_path: Path) -> None:
    """The check above is only as good as its filter: a call of @resources that the unit
    still denies (setpriority) fails with the unit's errno, one it allows (getpid) works."""
    require_tools()
    allow_file = tmp_path / "allowed"
    allow_file.write_text("\n".join(sorted(unit_allow_list(service()["SystemCallFilter"]))))
    (errno_name,) = service()["SystemCallErrorNumber"]
    probe = (
        "import errno, os\n"
        "os.getpid()\n"
        "try:\n"
        "    os.setpriority(os.PRIO_PROCESS, 0, 5)\n"
        "except OSError as exc:\n"
        "    print(errno.errorcode[exc.errno])\n"
    )
    launcher = [sys.executable, str(SECCOMP_EXEC), str(allow_file), errno_name, "--"]
    launched = subprocess.run(
        [*launcher, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launched.returncode == 0, launched.stderr
    assert launched.stdout.strip() == errno_name
