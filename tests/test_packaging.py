"""packaging/: the example config matches the settings model, the unit matches the daemon."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import unavailable

from bulkforge.daemon.settings import Settings, load_settings

ROOT = Path(__file__).parents[1]
PACKAGING = ROOT / "packaging"
EXAMPLE_CONFIG = PACKAGING / "bfd.toml"
UNIT = PACKAGING / "bfd.service"
# Off by default, so the example shows them commented out rather than set.
# Opt-in listeners: shown commented out, never on by default.
COMMENTED_OUT = {"listen", "tls_cert", "tls_key", "tls_client_ca", "token_file", "metrics"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example must load on its own, whatever BULKFORGE_* the caller has set."""
    for name in list(os.environ):
        if name.startswith("BULKFORGE_"):
            monkeypatch.delenv(name)


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: setting outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not a KEY=VALUE line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(timespan: str) -> float:
    """A systemd time span such as 60, 60s, 1min 30s or 2m, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", timespan)
    assert parts and all(unit in units for _, unit in parts), f"unparsed time span {timespan!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT)["Service"]


def test_example_config_loads_as_written() -> None:
    """What the example sets is what bfd runs with (read, not replaced by defaults)."""
    written = tomllib.loads(EXAMPLE_CONFIG.read_text())
    loaded = load_settings({}, EXAMPLE_CONFIG)
    parsed = Settings.model_validate(written)
    assert {key: getattr(loaded, key) for key in written} == parsed.model_dump(include=set(written))
    # The example differs from the defaults somewhere, or the comparison proves nothing.
    assert loaded.data_roots != Settings.model_fields["data_roots"].default_factory()


def test_example_config_sets_every_setting() -> None:
    keys = set(tomllib.loads(EXAMPLE_CONFIG.read_text()))
    fields = set(Settings.model_fields)
    assert keys <= fields, f"unknown keys in bfd.toml: {sorted(keys - fields)}"
    missing = fields - COMMENTED_OUT - keys
    assert not missing, f"settings missing from bfd.toml: {sorted(missing)}"
    assert not keys & COMMENTED_OUT, "listen, tls_* and metrics must stay commented out"


def test_example_config_shows_commented_out_tls() -> None:
    text = EXAMPLE_CONFIG.read_text()
    for key in sorted(COMMENTED_OUT):
        assert re.search(rf"^#\s*{key}\s*=", text, re.MULTILINE), f"no '# {key} = …' in bfd.toml"


def test_example_config_with_tls_uncommented_loads(tmp_path: Path) -> None:
    # The commented-out lines are valid settings, not stale prose.
    pattern = rf"^#\s*((?:{'|'.join(sorted(COMMENTED_OUT))})\s*=)"
    text = re.sub(pattern, r"\1", EXAMPLE_CONFIG.read_text(), flags=re.MULTILINE)
    config = tmp_path / "bfd.toml"
    config.write_text(text)
    settings = load_settings({}, config)
    assert settings.listen and settings.tls_cert and settings.tls_key


def test_stop_timeout_outlasts_drain() -> None:
    drain = load_settings({}, EXAMPLE_CONFIG).drain_timeout
    (timeout,) = service()["TimeoutStopSec"]
    assert seconds(timeout) > drain, (
        f"TimeoutStopSec={timeout} must be longer than drain_timeout={drain}s, "
        "or systemd SIGKILLs bfd mid-drain"
    )


def test_stop_timeout_outlasts_default_drain() -> None:
    (timeout,) = service()["TimeoutStopSec"]
    assert seconds(timeout) > Settings.model_fields["drain_timeout"].default


def test_unit_has_the_settings_the_daemon_relies_on() -> None:
    unit = service()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert seconds(unit["WatchdogSec"][0]) > 0
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["bulkforge"]
    assert unit["RuntimeDirectory"] == ["bulkforge"]
    assert unit["KillSignal"] == ["SIGTERM"]
    # A configuration bfd refuses (exit 78) is not retried every RestartSec.
    assert unit["RestartPreventExitStatus"] == ["78"]
    assert unit["User"] == ["bulkforge"] and unit["Group"] == ["bulkforge"]
    (exec_start,) = unit["ExecStart"]
    assert exec_start.split()[0].endswith("/bfd")
    assert "--config /etc/bulkforge/bfd.toml" in exec_start
    assert parse_unit(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_paths_match_example_config() -> None:
    settings = load_settings({}, EXAMPLE_CONFIG)
    unit = service()
    assert settings.state_dir == Path("/var/lib") / unit["StateDirectory"][0]
    assert settings.socket.parent == Path("/run") / unit["RuntimeDirectory"][0]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is not installed: the unit cannot be verified")
    # verify checks that ExecStart's binary exists: point it at a real one.
    binary = shutil.which("bfd") or sys.executable
    text = re.sub(
        r"^ExecStart=\S+", lambda _: f"ExecStart={binary}", UNIT.read_text(), flags=re.MULTILINE
    )
    unit = tmp_path / "bfd.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    about_us = [line for line in output.splitlines() if "bfd.service" in line]
    assert result.returncode == 0 and not about_us, output


def test_systemd_analyze_security_exposure_is_at_most_1_5() -> None:
    if shutil.which("systemd-analyze") is None:
        # The figure is systemd's own rating: without the tool there is nothing to rate it.
        unavailable("systemd-analyze is not installed: the exposure can only be rated by it")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for bfd.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= 1.5, result.stdout


def run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{argv[0]} failed:\n{result.stdout}{result.stderr}"


def create_user(root: Path) -> None:
    """systemd-sysusers on an alternate root: the host's user database is never touched."""
    (root / "etc").mkdir(exist_ok=True)
    run(["systemd-sysusers", f"--root={root}", str(PACKAGING / "bulkforge.sysusers")])


def test_sysusers_creates_user_and_group(tmp_path: Path) -> None:
    if shutil.which("systemd-sysusers") is None:
        unavailable("systemd-sysusers is not installed")
    create_user(tmp_path)
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    (user,) = [line.split(":") for line in passwd if line.startswith("bulkforge:")]
    assert user[5] == "/var/lib/bulkforge"
    assert any(line.startswith("bulkforge:") for line in (tmp_path / "etc" / "group").open())


def test_tmpfiles_creates_directories(tmp_path: Path) -> None:
    if shutil.which("systemd-tmpfiles") is None or shutil.which("systemd-sysusers") is None:
        unavailable("systemd-tmpfiles and systemd-sysusers are not both installed")
    # The owner must exist in the alternate root first, as on a node.
    create_user(tmp_path)
    tmpfiles = PACKAGING / "bulkforge.tmpfiles"
    run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(tmpfiles)])
    modes = {
        "etc/bulkforge": 0o755,
        "var/lib/bulkforge": 0o750,
        "run/bulkforge": 0o750,
    }
    for path, mode in modes.items():
        assert (tmp_path / path).stat().st_mode & 0o7777 == mode, path
