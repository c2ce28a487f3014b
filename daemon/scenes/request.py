"""A scenes job as submitted: what to read, how to process each item, where shards go."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from bulkforge.daemon.validation import JobName, parse_size
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import MAX_FETCH_TIMEOUT_S, MAX_ITEM_SIZE, MAX_SHARD_SIZE

DEFAULT_SHARD_SIZE = 10_000
DEFAULT_FORMAT = "webdataset"
DEFAULT_MAX_SIZE = 64 * 1024**2
DEFAULT_TIMEOUT_S = 30.0


# The name a caption is kept under (img2dataset's): its value is each sample's `.txt`.
CAPTION = "caption"


@dataclass(frozen=True)
class Columns:
    """The input's columns an item is made of: its key, its URL, those kept beside it,
    and the caption column (kept as `caption`, whatever its name in the input)."""

    key: str
    url: str
    keep: tuple[str, ...] = ()
    caption: str | None = None

    def wanted(self) -> list[str]:
        return list(dict.fromkeys([self.key, self.url, *(name for name, _ in self.kept())]))

    def kept(self) -> list[tuple[str, str]]:
        """(input column, name it is kept under) of every kept column, the caption last."""
        pairs = [(name, name) for name in self.keep]
        if self.caption is not None and CAPTION not in self.keep:
            pairs.append((self.caption, CAPTION))
        return pairs


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
        """The canonical parameters: stored with the job, compared for idempotence
        (the caption only when given: a job stored before it existed compares equal)."""
        caption = {} if self.columns.caption is None else {"caption": self.columns.caption}
        return caption | {
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
            columns=Columns(spec["key"], spec["url"], tuple(spec["keep"]), spec.get("caption")),
            dest=Path(spec["dest"]),
            shard_size=spec["shard_size"],
            format=spec["format"],
            steps=tuple(spec["steps"]),
            max_size=spec["max_size"],
            timeout_s=spec["timeout_s"],
        )


ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
StepName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SubmitScenes(BaseModel):
    """A scenes job as the request gives it, checked before anything is read."""

    name: JobName
    input: Annotated[str, StringConstraints(min_length=1)]
    key: ColumnName
    url: ColumnName
    keep: list[ColumnName] = Field(default_factory=list, max_length=256)
    caption: ColumnName | None = None
    dest: Annotated[str, StringConstraints(min_length=1)]
    shard_size: int = Field(default=DEFAULT_SHARD_SIZE, ge=1, le=MAX_SHARD_SIZE)
    format: Literal["files", "webdataset", "parquet"] = DEFAULT_FORMAT
    steps: list[StepName] = Field(default_factory=lambda: ["fetch"], max_length=32)
    max_size: int = Field(default=DEFAULT_MAX_SIZE, ge=1, le=MAX_ITEM_SIZE)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=MAX_FETCH_TIMEOUT_S)

    @classmethod
    def of(cls, name: str, spec: pb.ScenesSpec) -> "SubmitScenes":
        given: dict = {
            "name": name,
            "input": spec.input,
            "key": spec.key,
            "url": spec.url,
            "keep": list(spec.keep),
            "dest": spec.dest,
        }
        if spec.caption:
            given["caption"] = spec.caption
        if spec.shard_size:
            given["shard_size"] = spec.shard_size
        if spec.format:
            given["format"] = spec.format
        if spec.steps:
            given["steps"] = list(spec.steps)
        if spec.max_size:
            given["max_size"] = parse_size(spec.max_size, "max_size")
        if spec.timeout_s:
            given["timeout_s"] = spec.timeout_s
        return cls.model_validate(given)

    @model_validator(mode="after")
    def _consistent(self) -> "SubmitScenes":
        for what, path in (("input", self.input), ("dest", self.dest)):
            if not os.path.isabs(path):
                raise ValueError(f"{what} {path!r} must be an absolute path")
        if len(set(self.keep)) != len(self.keep):
            raise ValueError("keep names a column twice")
        if self.caption not in (None, CAPTION) and CAPTION in self.keep:
            raise ValueError(
                f"caption {self.caption!r} is kept as {CAPTION!r}, and keep names another "
                f"column {CAPTION!r}: keep that one under another name, or make it the caption"
            )
        return self

    def request(self) -> ScenesRequest:
        return ScenesRequest(
            name=self.name,
            input=Path(self.input),
            columns=Columns(self.key, self.url, tuple(self.keep), self.caption),
            dest=Path(self.dest),
            shard_size=self.shard_size,
            format=self.format,
            steps=tuple(self.steps),
            max_size=self.max_size,
            timeout_s=self.timeout_s,
        )
