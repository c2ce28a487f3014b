"""A scenes job as submitted: what to read, how to process each item, where shards go."""

from dataclasses import dataclass
from pathlib import Path

from bulkforge.daemon.scenes.items import Columns

DEFAULT_SHARD_SIZE = 10_000
DEFAULT_FORMAT = "webdataset"
DEFAULT_MAX_SIZE = 64 * 1024**2
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ScenesRequest:
    name: str
    input: Path
    columns: Columns
    dest: Path
    shard_size: int = DEFAULT_SHARD_SIZE
    format: str = DEFAULT_FORMAT
    steps: tuple[str, ...] = ("fetch",)
    max_size: int = DEFAULT_MAX_SIZE
    timeout_s: float = DEFAULT_TIMEOUT_S

    def spec(self) -> dict:
        """The canonical parameters: stored with the job, compared for idempotence."""
        return {
            "input": str(self.input),
            "key": self.columns.key,
            "url": self.columns.url,
            "keep": list(self.columns.keep),
            "dest": str(self.dest),
            "shard_size": self.shard_size,
            "format": self.format,
            "steps": list(self.steps),
            "max_size": self.max_size,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def of_spec(cls, name: str, spec: dict) -> "ScenesRequest":
        return cls(
            name=name,
            input=Path(spec["input"]),
            columns=Columns(spec["key"], spec["url"], tuple(spec["keep"])),
            dest=Path(spec["dest"]),
            shard_size=spec["shard_size"],
            format=spec["format"],
            steps=tuple(spec["steps"]),
            max_size=spec["max_size"],
            timeout_s=spec["timeout_s"],
        )
