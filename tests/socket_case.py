"""One case of tests/test_finding_bfd.py, run in a mount namespace of its own with a fresh
tmpfs on /run, so that real bfds may listen on /run/bulkforge and /run/user/0 (where the
packaged unit and a login shell put them) without touching the machine's /run.

    unshare --mount --propagation private python3 tests/socket_case.py WORKDIR CASE_JSON

CASE_JSON: {"bfds": {place: how}, "stale": [place], "env": {VAR: place}, "named": place}.
A place is a name in PLACES; `how` says how that bfd is told where to listen: "unit"
(RUNTIME_DIRECTORY, as bfd.service does), "login" (XDG_RUNTIME_DIR, as a login shell has)
or "flag" (--socket). Prints one JSON object: what bfctl and `Client()` found.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PLACES = {
    "packaged": "/run/bulkforge/bfd.sock",
    "login": "/run/user/0/bulkforge/bfd.sock",
    "named": "/run/named/bfd.sock",
}
READY_TIMEOUT_S = 60.0
CLEAN = ("BULKFORGE_", "XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY", "NOTIFY_SOCKET")


def clean_environment(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(CLEAN)}
    return {**base, **extra}


def start_bfd(work: Path, place: str, how: str) -> subprocess.Popen:
    path = Path(PLACES[place])
    config = work / "empty.toml"
    config.write_text("")
    command = [sys.executable, "-m", "bulkforge.daemon", "--config", str(config)]
    command += ["--state-dir", str(work / f"state-{place}"), "--log-format", "human"]
    if how == "unit":
        path.parent.mkdir(parents=True, exist_ok=True)  # systemd makes RuntimeDirectory=
        env = clean_environment(RUNTIME_DIRECTORY=str(path.parent))
    elif how == "login":
        env = clean_environment(XDG_RUNTIME_DIR=str(path.parent.parent))
    else:
        env = clean_environment()
        command += ["--socket", str(path)]
    log = (work / f"bfd-{place}.log").open("ab")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    wait_listening(process, path, work / f"bfd-{place}.log")
    return process


def wait_listening(process: subprocess.Popen, path: Path, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bfd at {path} exited {process.returncode}:\n{log.read_text()}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise SystemExit(f"bfd never listened at {path}:\n{log.read_text()}")


def leave_stale_socket(place: str) -> None:
    """What a bfd killed with -9 leaves: a socket file nobody listens on."""
    path = Path(PLACES[place])
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))


def ask_bfctl(env: dict[str, str], named: str | None) -> dict:
    flags = ["--socket", PLACES[named]] if named else []
    done = subprocess.run(
        [sys.executable, "-m", "bulkforge.client", *flags, "--timeout", "20", "--json", "system"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = json.loads(done.stdout)["socket"] if done.returncode == 0 else None
    return {"exit": done.returncode, "socket": found, "stderr": done.stderr}


def ask_client(env: dict[str, str], named: str | None) -> dict:
    os.environ.clear()
    os.environ.update(env)
    from bulkforge.client.api import BulkforgeError, Client

    try:
        with Client(PLACES[named] if named else None) as bfd:
            return {"socket": bfd.system(timeout=20).socket, "error": None}
    except BulkforgeError as exc:
        return {"socket": None, "error": type(exc).__name__, "message": exc.message}


def main() -> None:
    work, case = Path(sys.argv[1]), json.loads(sys.argv[2])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    for place in case.get("stale", []):
        leave_stale_socket(place)
    bfds = [start_bfd(work, place, how) for place, how in case.get("bfds", {}).items()]
    try:
        env = clean_environment(**{var: value for var, value in case.get("env", {}).items()})
        answer = {
            "bfctl": ask_bfctl(env, case.get("named")),
            "client": ask_client(env, case.get("named")),
        }
    finally:
        for process in bfds:
            process.terminate()
        for process in bfds:
            process.wait(60)
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
