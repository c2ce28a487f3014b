"""bfctl and the typed client find bfd by one rule (proto/defaults.py), and bfd's own default
is the first place of it: the socket named (--socket, `Client(path)`), else
$BULKFORGE_SOCKET, else the first of $RUNTIME_DIRECTORY/bfd.sock,
$XDG_RUNTIME_DIR/bulkforge/bfd.sock, /run/bulkforge/bfd.sock that answers; none answering,
an error naming every place tried.

A table of environments (variables set or not, bfds running or not, a stale socket), each
run with real bfds in a mount namespace of its own (tests/socket_case.py): the packaged one
started as bfd.service starts it (RUNTIME_DIRECTORY=/run/bulkforge), a user's as from a
login shell (XDG_RUNTIME_DIR=/run/user/0), and bfctl and `Client()` asked from a shell.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unavailable

from bulkforge.proto.defaults import default_socket, probe, socket_candidates

CASE = Path(__file__).parent / "socket_case.py"
PACKAGED = "/run/bulkforge/bfd.sock"
LOGIN = "/run/user/0/bulkforge/bfd.sock"
NAMED = "/run/named/bfd.sock"
NAMESPACE = ("unshare", "--mount", "--propagation", "private")
SHELL = {"XDG_RUNTIME_DIR": "/run/user/0"}  # every login shell has it (pam_systemd)

# (case, what bfctl and Client() must reach: a socket, or None and the paths the error names)
CASES = {
    "an operator's shell finds the packaged unit's bfd": (
        {"bfds": {"packaged": "unit"}, "env": SHELL},
        PACKAGED,
    ),
    "a shell without XDG_RUNTIME_DIR finds it too": (
        {"bfds": {"packaged": "unit"}},
        PACKAGED,
    ),
    "a user's own bfd, started from the same shell, comes first": (
        {"bfds": {"packaged": "unit", "login": "login"}, "env": SHELL},
        LOGIN,
    ),
    "a user's own bfd alone": (
        {"bfds": {"login": "login"}, "env": SHELL},
        LOGIN,
    ),
    "a stale socket in the shell's runtime dir is passed over": (
        {"bfds": {"packaged": "unit"}, "stale": ["login"], "env": SHELL},
        PACKAGED,
    ),
    "BULKFORGE_SOCKET beats every default place": (
        {
            "bfds": {"packaged": "unit", "login": "login", "named": "flag"},
            "env": {**SHELL, "BULKFORGE_SOCKET": NAMED},
        },
        NAMED,
    ),
    "--socket and Client(path) beat BULKFORGE_SOCKET": (
        {
            "bfds": {"packaged": "unit", "named": "flag"},
            "env": {**SHELL, "BULKFORGE_SOCKET": NAMED},
            "named": "packaged",
        },
        PACKAGED,
    ),
    "BULKFORGE_SOCKET where no bfd is: no second guess": (
        {"bfds": {"packaged": "unit"}, "env": {**SHELL, "BULKFORGE_SOCKET": NAMED}},
        (None, [NAMED]),
    ),
    "no bfd anywhere: the error names every place tried": (
        {"env": SHELL},
        (None, [LOGIN, PACKAGED]),
    ),
    "only stale sockets: each named, with what is wrong there": (
        {"stale": ["login", "packaged"], "env": SHELL},
        (None, [LOGIN, PACKAGED]),
    ),
}


def run_case(tmp_path: Path, case: dict) -> dict:
    if shutil.which("unshare") is None:
        unavailable("unshare is not installed: /run/bulkforge cannot be made private")
    done = subprocess.run(
        [*NAMESPACE, sys.executable, str(CASE), str(tmp_path), json.dumps(case)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        unavailable(f"no mount namespace here (unshare: {done.stderr.strip()})")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("case, expected", CASES.values(), ids=CASES.keys())
def test_bfctl_and_the_client_find_bfd_by_one_rule(tmp_path: Path, case, expected) -> None:
    answer = run_case(tmp_path, case)
    bfctl, client = answer["bfctl"], answer["client"]
    if isinstance(expected, str):
        assert bfctl["exit"] == 0 and bfctl["socket"] == expected, bfctl
        assert client["socket"] == expected, client
        return
    _, named = expected
    assert bfctl["exit"] == 3, bfctl
    assert client["error"] == "ConnectionFailed", client
    for path in named:
        assert path in bfctl["stderr"] and path in client["message"], (path, answer)
    if len(named) > 1:  # found by search: each place says what is there, and how to name one
        for words in (bfctl["stderr"], client["message"]):
            assert "BULKFORGE_SOCKET" in words, words
        assert "--socket" in bfctl["stderr"] and "socket" in client["message"]
        stale = case.get("stale", [])
        assert bfctl["stderr"].count("nobody listens there") == len(stale), bfctl
        assert bfctl["stderr"].count("no such socket") == len(named) - len(stale), bfctl
    assert "Traceback" not in bfctl["stderr"]


HOME_RUNTIME = "/run/user/1000/bulkforge/bfd.sock"
# (effective uid, variables set, the places in order; bfd listens on the first)
PLACES = {
    "root, no variable": (0, {}, [PACKAGED]),
    "root in a login shell": (0, SHELL, [LOGIN, PACKAGED]),
    "the packaged unit": (0, {"RUNTIME_DIRECTORY": "/run/bulkforge"}, [PACKAGED]),
    "a unit with two runtime dirs": (0, {"RUNTIME_DIRECTORY": "/run/a:/run/b"},
                                     ["/run/a/bfd.sock", PACKAGED]),
    "a user without a runtime dir": (1000, {}, ["/tmp/bulkforge-1000/bfd.sock", PACKAGED]),
    "a user in a login shell": (1000, {"XDG_RUNTIME_DIR": "/run/user/1000"},
                                [HOME_RUNTIME, "/tmp/bulkforge-1000/bfd.sock", PACKAGED]),
}  # fmt: skip


@pytest.mark.parametrize("euid, env, expected", PLACES.values(), ids=PLACES.keys())
def test_the_places_bfd_listens_and_clients_look_in_order(monkeypatch, euid, env, expected):
    for name in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert socket_candidates() == [Path(place) for place in expected]
    assert default_socket() == Path(expected[0])


def test_a_socket_under_tmp_is_trusted_only_in_a_directory_of_ones_own(monkeypatch):
    """Anyone may make /tmp/bulkforge-UID first and listen there: a client of user UID
    takes that socket only when the directory is UID's and no one else may write in it."""
    uid = 40_000 + os.getpid() % 20_000  # nobody's: this machine has no such user
    directory = Path(f"/tmp/bulkforge-{uid}")
    directory.mkdir(mode=0o700)
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(directory / "bfd.sock"))
            listener.listen()
            monkeypatch.setattr(os, "geteuid", lambda: uid)
            os.chown(directory, 65534, 65534)  # a squatter's
            assert (
                probe(directory / "bfd.sock") == "its directory is not yours, so it is not trusted"
            )
            os.chown(directory, uid, uid)
            directory.chmod(0o777)  # the user's, but anyone may put a socket in it
            assert probe(directory / "bfd.sock") is not None
            directory.chmod(0o700)
            assert probe(directory / "bfd.sock") is None  # answers: taken
    finally:
        shutil.rmtree(directory)
