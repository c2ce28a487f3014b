"""The one settings model of bfd: flags > BULKFORGE_* environment > TOML file > defaults."""

import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ByteSize, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bulkforge.proto.defaults import CLIENT_VARIABLES, default_socket
from bulkforge.proto.text import did_you_mean
from bulkforge.proto.units import host_port, parse_rate, parse_size

DEFAULT_CONFIG = Path("/etc/bulkforge/bfd.toml")
ENV_PREFIX = "BULKFORGE_"


class UnknownVariable(ValueError):
    """A BULKFORGE_* variable that names no setting: refused as a misspelt key of bfd.toml is."""


def _parsed(parse: Callable[[str], int]):
    """Strings go through the one parser bfctl uses too; numbers pass as they are."""
    return lambda value: parse(value) if isinstance(value, str) else value


def default_state_dir() -> Path:
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/bulkforge")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bulkforge"


# What a CPU task gets of the memory cap at least, when cpu_workers is left to bfd: a
# clean series or a default generate part fits, where 2 GiB over 64 cores would not.
TASK_MEMORY_FLOOR = 1024**3


def default_cpu_workers(memory_cap: int) -> int:
    """One worker per core, as long as each task's share of the cap stays >= the floor."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, memory_cap // TASK_MEMORY_FLOOR)) if memory_cap else cores


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names only this host: a loopback IP, or localhost.

    A name is not resolved: whatever else it resolves to (now or later) may be reachable.
    """
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Size = Annotated[ByteSize, BeforeValidator(_parsed(parse_size))]
Rate = Annotated[ByteSize, BeforeValidator(_parsed(parse_rate))]
Address = Annotated[str, AfterValidator(host_port)]


class Settings(BaseSettings):
    """Everything bfd can be told. Every field carries a description; a test holds us to it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Directory of the state database, its WAL and the lock file. "
        "Keep it on a small fast disk, apart from the data.",
    )
    socket: Path = Field(
        default_factory=default_socket,
        description="Unix socket of the gRPC API (created mode 0660). Default: "
        "$RUNTIME_DIRECTORY/bfd.sock under systemd, else $XDG_RUNTIME_DIR/bulkforge/bfd.sock, "
        "else /tmp/bulkforge-UID/bfd.sock (not root), else /run/bulkforge/bfd.sock; bfctl "
        "looks in the same places.",
    )
    listen: Address | None = Field(
        default=None,
        description="Also serve gRPC on HOST:PORT over TLS (needs tls_cert and tls_key). "
        "Off by default.",
    )
    metrics: Address | None = Field(
        default=None,
        description="Serve Prometheus metrics on HOST:PORT (http://HOST:PORT/metrics); off by "
        "default. They carry no secrets but job names: bind to loopback or a private network.",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate for --listen.")
    tls_key: Path | None = Field(default=None, description="PEM private key for --listen.")
    max_watches: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Watch streams open at once, across every client; one more is refused "
        "(RESOURCE_EXHAUSTED).",
    )
    tls_client_ca: Path | None = Field(
        default=None,
        description="With --listen: demand a client certificate signed by this CA (PEM).",
    )
    token_file: Path | None = Field(
        default=None,
        description="With --listen: a file holding the bearer token every RPC over TCP must "
        "carry (health checks excepted): one line of printable ASCII (one trailing newline is "
        "dropped), readable by bfd's user only (chmod 600), or bfd refuses to start. The unix "
        "socket is guarded by its mode (0660).",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Let --listen on an address other than loopback serve without a token_file "
        "or a tls_client_ca: anyone who reaches it may then run every verb. Without this, bfd "
        "refuses to start so. Logged at start and shown by `bfctl system`.",
    )
    listen_max_connections: int = Field(
        default=256,
        ge=1,
        le=65_536,
        description="TCP connections --listen holds at once, authenticated or not; one more "
        "is closed as soon as it is accepted. At most a quarter of bfd's open-file limit, so "
        "the unix socket, the store and the jobs always keep the rest.",
    )
    listen_handshake_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a new TCP connection to --listen has to finish its TLS handshake "
        "and HTTP/2 greeting; bfd closes it then.",
    )
    data_roots: list[Path] = Field(
        default_factory=lambda: [Path("/")],
        description="Directories under which job destinations and exports may be "
        "(repeatable flag --data-root); /proc, /sys, /dev, /etc, /usr, /boot, /run and the "
        "state dir never. Confine a node to its data disks, e.g. /srv and /mnt.",
    )
    plugin_steps: list[str] = Field(
        default_factory=list,
        description="Plug-in steps scenes jobs may name, as MODULE:FUNCTION (repeatable flag "
        "--plugin-step); bfd imports nothing else a request names.",
    )
    memory_cap: Size = Field(
        default=ByteSize(2 * 1024**3),
        description="RSS the daemon and its workers may use together (e.g. 2GiB); above it "
        "no new work starts until they use less; each CPU task may take memory_cap / "
        "cpu_workers, or fails as `memory` (0: no cap, no limit).",
    )
    cpu_workers: int = Field(
        default=0,
        ge=0,
        description="Worker processes (fresh interpreters, never forks) for CPU-heavy work, "
        "one task each: cleaning, generating and `bfctl verify`'s re-hashing (0: one per "
        "core, but no more than leave each task at least 1 GiB of memory_cap).",
    )
    disk_threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Stop taking downloads before a destination filesystem would be fuller "
        "than this fraction (counting bytes promised to transfers in flight); they go on by "
        "themselves once space is freed.",
    )
    bandwidth: Rate = Field(
        default=ByteSize(0),
        description="Download bandwidth cap in bytes per second, e.g. 100MB/s; 0 means no cap.",
    )
    max_connections: int = Field(
        default=16, ge=1, le=1024, description="Concurrent transfers across all jobs."
    )
    per_host_connections: int = Field(
        default=16, ge=1, le=1024, description="Concurrent transfers to any one origin host."
    )
    transfer_workers: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=1,
        le=64,
        description="Processes that carry the bytes of every transfer (each a libcurl multi "
        "handle); started with the first transfer.",
    )
    segment_size: Size = Field(
        default=ByteSize(32 * 1024**2),
        ge=1024**2,
        description="Files of at least twice this size are fetched as parallel byte ranges "
        "of this size, each resumable on its own (e.g. 32MiB).",
    )
    segments_per_file: int = Field(
        default=8, ge=1, le=1024, description="Byte ranges of one large file fetched at once."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Attempts per file before it stays failed until `bfctl retry`.",
    )
    retry_base_delay: float = Field(
        default=1.0,
        ge=0,
        description="Seconds of the first retry backoff; doubles per attempt, with full jitter.",
    )
    retry_max_delay: float = Field(
        default=60.0, ge=0, description="Upper bound in seconds of one retry backoff."
    )
    retry_after_max: float = Field(
        default=300.0,
        ge=0,
        description="Longest Retry-After in seconds a server may impose before we retry anyway.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to establish a connection to an origin."
    )
    read_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an origin may stay silent during a transfer before the "
        "attempt fails as a timeout.",
    )
    drain_timeout: float = Field(
        default=20.0,
        ge=0,
        description="Seconds SIGTERM waits for in-flight work to record its state before exit. "
        "The systemd unit's TimeoutStopSec must be longer.",
    )
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe log level written."
    )
    log_format: Literal["auto", "human", "json"] = Field(
        default="auto",
        description="human lines, or one JSON object per line; auto picks JSON under systemd.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.listen and not (self.tls_cert and self.tls_key):
            raise ValueError("listen needs both tls_cert and tls_key: bfd serves TCP only over TLS")
        if (self.tls_client_ca or self.token_file or self.allow_unauthenticated) and not (
            self.listen
        ):
            raise ValueError(
                "tls_client_ca, token_file and allow_unauthenticated guard --listen: give it too"
            )
        if self.listen and not self._authenticated_or_local():
            raise ValueError(
                f"listen {self.listen} is not a loopback address and nothing authenticates its "
                "callers: give token_file or tls_client_ca (or allow_unauthenticated, to let "
                "anyone who reaches it in)"
            )
        if not self.data_roots or not all(root.is_absolute() for root in self.data_roots):
            raise ValueError("data_roots must be absolute paths (at least one)")
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("retry_max_delay must not be smaller than retry_base_delay")
        if not self.cpu_workers:
            self.cpu_workers = default_cpu_workers(self.memory_cap)
        return self

    def _authenticated_or_local(self) -> bool:
        assert self.listen
        if self.token_file or self.tls_client_ca or self.allow_unauthenticated:
            return True
        return is_loopback(self.listen)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "bulkforge.db"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(flags: dict[str, Any], config: Path | None = None) -> Settings:
    """Build settings from flags that were given (None = not given) and the config file.

    An explicit --config must exist; the default one is read only when present.
    """
    if config is not None and not config.is_file():
        raise FileNotFoundError(f"config file not found: {config}")
    toml_file = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    check_environment(os.environ)
    given = {key: value for key, value in flags.items() if value is not None}
    return Settings.model_validate(_FromFile(**given).model_dump())


def setting_variables() -> tuple[str, ...]:
    """The BULKFORGE_* variable of each setting, and those a client reads."""
    return (*(ENV_PREFIX + name.upper() for name in Settings.model_fields), *CLIENT_VARIABLES)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a BULKFORGE_* variable that names no setting (BULKFORGE_BANDWITH): pydantic-
    settings would ignore it, and the operator would run with the default unawares. Names
    are matched without case, as the settings read them."""
    known = setting_variables()
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            # the part after the prefix, or every name would be near every other
            near = did_you_mean(upper[len(ENV_PREFIX) :], [k[len(ENV_PREFIX) :] for k in known])
            hint = near.replace("did you mean '", f"did you mean {ENV_PREFIX}").replace("'?", "?")
            # no near name: how a setting's variable is spelt
            hint = hint or f" (a setting's is {ENV_PREFIX} and its name, e.g. BULKFORGE_BANDWIDTH)"
            raise UnknownVariable(f"unknown setting variable {name}{hint}")
