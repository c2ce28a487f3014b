"""The settings model: documented fields, precedence of sources, refusal of bad values."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from bulkforge.daemon.settings import (
    TASK_MEMORY_FLOOR,
    Settings,
    UnknownVariable,
    check_environment,
    load_settings,
)
from bulkforge.proto.defaults import CLIENT_VARIABLES


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the environment they set: no BULKFORGE_* or systemd dirs of the caller."""
    for name in list(os.environ):
        if name.startswith("BULKFORGE_"):
            monkeypatch.delenv(name)
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bfd.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_field_has_a_description(name: str) -> None:
    description = Settings.model_fields[name].description
    assert description and description.strip(), f"setting {name!r} has no description"


def test_precedence_flags_over_env_over_toml_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_toml(
        tmp_path,
        """
        memory_cap = "1GiB"
        cpu_workers = 3
        max_connections = 7
        max_attempts = 9
        """,
    )
    monkeypatch.setenv("BULKFORGE_CPU_WORKERS", "4")
    monkeypatch.setenv("BULKFORGE_MAX_CONNECTIONS", "8")
    monkeypatch.setenv("BULKFORGE_BANDWIDTH", "5MB/s")

    settings = load_settings({"max_connections": 12, "bandwidth": None}, config)

    assert settings.max_connections == 12  # flag beats env and file
    assert settings.cpu_workers == 4  # env beats file
    assert settings.bandwidth == 5_000_000  # a flag given as None is not given
    assert settings.max_attempts == 9  # file beats default
    assert settings.memory_cap == 1024**3
    assert settings.retry_base_delay == Settings.model_fields["retry_base_delay"].default


def test_defaults_follow_systemd_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bfd.service gives the daemon $STATE_DIRECTORY and $RUNTIME_DIRECTORY.
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))

    settings = load_settings({}, write_toml(tmp_path, ""))

    assert settings.state_dir == tmp_path / "state"
    assert settings.socket == tmp_path / "run" / "bfd.sock"


def test_env_socket_names_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.setenv("BULKFORGE_SOCKET", str(tmp_path / "other.sock"))

    assert load_settings({}, write_toml(tmp_path, "")).socket == tmp_path / "other.sock"


@pytest.mark.parametrize("rate", ["100MB/s", "100 MB/s", "100MB", "100000000", 100_000_000])
def test_bandwidth_parses_rates(tmp_path: Path, rate: str | int) -> None:
    settings = load_settings({"bandwidth": rate}, write_toml(tmp_path, ""))
    assert settings.bandwidth == 100_000_000


def test_bandwidth_zero_means_no_cap(tmp_path: Path) -> None:
    assert load_settings({}, write_toml(tmp_path, 'bandwidth = "0"')).bandwidth == 0


@pytest.mark.parametrize(
    ("flags", "toml", "field"),
    [
        ({"disk_threshold": 1.5}, "", "disk_threshold"),
        ({"bandwidth": "fast"}, "", "bandwidth"),
        ({}, 'bandwidth = "fast"', "bandwidth"),
        ({}, "no_such_setting = 1", "no_such_setting"),
        ({"listen": "127.0.0.1:7411"}, "", "tls_cert"),
        ({"listen": "127.0.0.1:7411", "tls_cert": "/etc/bfd.crt"}, "", "tls_key"),
    ],
    ids=[
        "disk_threshold-1.5",
        "bandwidth-fast-flag",
        "bandwidth-fast-toml",
        "unknown-toml-key",
        "listen-without-tls",
        "listen-without-key",
    ],
)
def test_bad_values_are_refused(tmp_path: Path, flags: dict, toml: str, field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        load_settings(flags, write_toml(tmp_path, toml))
    assert field in str(excinfo.value)


def test_bad_env_value_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKFORGE_DISK_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="disk_threshold"):
        load_settings({}, write_toml(tmp_path, ""))


def test_listen_with_tls_is_accepted(tmp_path: Path) -> None:
    flags = {"listen": "127.0.0.1:7411", "tls_cert": "/etc/c.pem", "tls_key": "/etc/k.pem"}
    settings = load_settings(flags, write_toml(tmp_path, ""))
    assert settings.listen == "127.0.0.1:7411"
    assert settings.tls_key == Path("/etc/k.pem")


def test_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        load_settings({}, missing)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", 512), ("1KB", 1000), ("1kib", 1024), ("1.5GB", 1_500_000_000), (" 10 TB ", 10**13)],
)
def test_sizes_read_the_same_in_bfd_settings_and_bfctl(text: str, expected: int) -> None:
    from bulkforge.client.flags import size
    from bulkforge.proto.units import parse_rate

    assert Settings(memory_cap=text).memory_cap == expected
    assert size()(text) == expected
    assert parse_rate(f"{text}/s") == expected


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1:7411", True),
        ("127.8.9.10:0", True),
        ("[::1]:7411", True),
        ("localhost:7411", True),
        ("0.0.0.0:7411", False),
        ("[::]:7411", False),
        ("10.0.0.7:7411", False),
        ("[fe80::1]:7411", False),
        ("node7:7411", False),
        ("localhost.example:7411", False),
        ("127.0.0.1.nip.io:7411", False),
    ],
)
def test_listen_beyond_loopback_needs_something_that_authenticates(
    tmp_path: Path, address: str, local: bool
) -> None:
    """A name is never resolved: only a loopback IP or localhost counts as this host."""
    tls = {"listen": address, "tls_cert": "/etc/c.pem", "tls_key": "/etc/k.pem"}
    for guard in ({"token_file": "/etc/t"}, {"tls_client_ca": "/etc/ca.pem"}):
        assert load_settings({**tls, **guard}, write_toml(tmp_path, "")).listen == address
    allowed = load_settings({**tls, "allow_unauthenticated": True}, write_toml(tmp_path, ""))
    assert allowed.allow_unauthenticated
    if local:
        assert load_settings(tls, write_toml(tmp_path, "")).listen == address
    else:
        with pytest.raises(ValidationError, match="is not a loopback address"):
            load_settings(tls, write_toml(tmp_path, ""))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("listen_max_connections", 0),
        ("listen_max_connections", 65_537),
        ("listen_handshake_timeout", 0),
        ("listen_handshake_timeout", 301),
    ],
)
def test_listener_bounds_are_bounded(tmp_path: Path, field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings({field: value}, write_toml(tmp_path, ""))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b"listen = [\n", "not valid TOML"),
        (b'listen = "\xff"\n', "cannot be read ('utf-8' codec can't decode"),
        (b"disk_threshold = 1.5\n", "bfd.toml, BULKFORGE_* variables or flags): disk_threshold:"),
        (b"nosuch = 1\n", "unknown setting 'nosuch' (known: state_dir"),
        (None, "config file not found"),
    ],
    ids=["broken-toml", "not-utf8", "bad-value", "unknown-key", "missing"],
)
def test_a_config_that_cannot_work_refuses_the_start_with_exit_78(
    make_daemon, tmp_path: Path, text: bytes | None, words: str
) -> None:
    """EX_CONFIG, one line naming what is wrong, never a traceback: bfd.service does not
    restart on 78, as only an edit can help."""
    config = tmp_path / "bfd.toml"
    if text is not None:
        config.write_bytes(text)
    daemon = make_daemon("--config", str(config))
    done = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, (done.returncode, done.stderr)
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("memory_cap", "given", "expected"),
    [
        ("2GiB", None, min(os.cpu_count() or 1, 2)),
        ("1GiB", None, 1),
        ("512MiB", None, 1),  # never none, however small the cap
        ("1TiB", None, os.cpu_count() or 1),  # never more than the cores
        ("0", None, os.cpu_count() or 1),  # no cap: one per core
        ("2GiB", 8, 8),  # an operator's number stands
    ],
)
def test_cpu_workers_left_to_bfd_leave_each_task_a_gib_of_the_cap(
    tmp_path: Path, memory_cap: str, given: int | None, expected: int
) -> None:
    flags = {"state_dir": tmp_path, "memory_cap": memory_cap}
    if given is not None:
        flags["cpu_workers"] = given
    settings = load_settings(flags, write_toml(tmp_path, ""))
    assert settings.cpu_workers == expected
    if settings.memory_cap and given is None and expected > 1:
        assert settings.memory_cap // settings.cpu_workers >= TASK_MEMORY_FLOOR


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1", ":80",
                                     "127.0.0.1:-1", "127.0.0.1:http", "[::1]:70000"])  # fmt: skip
@pytest.mark.parametrize("setting", ["listen", "metrics"])
def test_an_address_past_the_port_range_or_without_one_is_refused(
    tmp_path: Path, setting: str, address: str
) -> None:
    with pytest.raises(ValidationError, match="HOST:PORT with a port from 0 to 65535"):
        Settings(state_dir=tmp_path, **{setting: address})


@pytest.mark.parametrize("address", ["127.0.0.1:0", "127.0.0.1:65535", "[::1]:9100"])
def test_an_address_in_the_port_range_is_taken(tmp_path: Path, address: str) -> None:
    assert Settings(state_dir=tmp_path, metrics=address).metrics == address


# -- BULKFORGE_* variables: each names a setting or a client's, else bfd refuses to start ----


def _swapped(name: str) -> str:
    """A typo: the last two letters swapped (or the last doubled)."""
    return name[:-2] + name[-1] + name[-2] if name[-1] != name[-2] else name + name[-1]


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_a_misspelt_variable_of_every_setting_names_the_setting(name: str) -> None:
    variable = "BULKFORGE_" + _swapped(name).upper()
    with pytest.raises(UnknownVariable) as refused:
        check_environment({variable: "1"})
    assert str(refused.value).startswith(f"unknown setting variable {variable}"), refused.value
    assert f"did you mean BULKFORGE_{name.upper()}?" in str(refused.value), refused.value


def test_the_variables_a_client_reads_stay_allowed() -> None:
    """Every BULKFORGE_* name in client/ and proto/ is one bfd lets be."""
    root = Path(__file__).resolve().parent.parent
    read = {
        found
        for folder in ("client", "proto")
        for path in (root / folder).rglob("*.py")
        for found in re.findall(r"BULKFORGE_[A-Z_]*[A-Z]", path.read_text())
    }
    assert {"BULKFORGE_SOCKET", "BULKFORGE_DEBUG", "BULKFORGE_TLS_CA"} <= read, read
    assert read <= set(CLIENT_VARIABLES), read - set(CLIENT_VARIABLES)
    check_environment(dict.fromkeys(CLIENT_VARIABLES, "x"))  # accepted
    check_environment({"BULKFORGE_bandwidth": "1", "OTHER_BANDWITH": "1"})  # a setting; not ours


@pytest.mark.parametrize(
    ("variable", "words"),
    [
        ("BULKFORGE_BANDWITH", "unknown setting variable BULKFORGE_BANDWITH; did you mean "
         "BULKFORGE_BANDWIDTH?"),
        ("BULKFORGE_MAX_WATCH", "did you mean BULKFORGE_MAX_WATCHES?"),
        ("BULKFORGE_ZZZ", "unknown setting variable BULKFORGE_ZZZ (a setting's is BULKFORGE_ and "
         "its name"),
    ],
)  # fmt: skip
def test_bfd_refuses_an_unknown_variable_with_exit_78(
    make_daemon, variable: str, words: str
) -> None:
    """A real bfd, as bfd.toml's misspelt key is refused: EX_CONFIG, one line, no traceback."""
    daemon = make_daemon()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULKFORGE_")}
    done = subprocess.run(
        daemon.command(),
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, variable: "5"},
    )
    assert done.returncode == 78, (done.returncode, done.stderr)
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_bfd_starts_beside_the_variables_of_a_client(make_daemon, tmp_path: Path) -> None:
    """A shell that set bfctl's variables can start bfd (those bfd also reads as its own
    settings, tls_cert and friends, are left out: they would configure it)."""
    daemon = make_daemon()
    allowed = {"BULKFORGE_DEBUG": "1", "BULKFORGE_TLS_CA": str(tmp_path / "ca.pem")}
    allowed["BULKFORGE_SOCKET"] = str(tmp_path / "elsewhere.sock")  # --socket wins
    daemon.start(env=allowed)
    assert daemon.bfctl("list").returncode == 0, daemon.log_tail()
    assert daemon.stop() == 0, daemon.log_tail()
