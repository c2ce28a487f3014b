"""A download as the request gives it: one source, a dest, maybe disk batching, validated."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from bulkforge.daemon import errors
from bulkforge.daemon.downloader.listing import Batching, DownloadRequest, Source
from bulkforge.daemon.downloader.planner import Oversize
from bulkforge.daemon.validation import JobName
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import parse_size

Glob = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SourceSpec(BaseModel):
    """Exactly one source of files, validated at the boundary."""

    manifest: str | None = None
    urls: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    s3: Annotated[str, StringConstraints(max_length=4096)] | None = None
    hf: Annotated[str, StringConstraints(max_length=512)] | None = None
    include: list[Glob] = Field(default_factory=list, max_length=1000)
    exclude: list[Glob] = Field(default_factory=list, max_length=1000)

    @classmethod
    def of(cls, spec: pb.DownloadSpec) -> "SourceSpec":
        return cls(
            manifest=spec.manifest or None,
            urls=list(spec.urls.urls),
            s3=spec.s3 or None,
            hf=spec.hf or None,
            include=list(spec.include),
            exclude=list(spec.exclude),
        )

    @model_validator(mode="after")
    def _one_source(self) -> "SourceSpec":
        given = [bool(self.manifest), bool(self.urls), bool(self.s3), bool(self.hf)]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one source: a manifest, URLs, an S3 listing or an HF repo"
            )
        if self.manifest and not os.path.isabs(self.manifest):
            raise ValueError(f"{self.manifest!r} must be an absolute path")
        return self

    def source(self) -> Source:
        return Source(
            manifest=Path(self.manifest) if self.manifest else None,
            urls=tuple(self.urls),
            s3=self.s3,
            hf=self.hf,
            include=tuple(self.include),
            exclude=tuple(self.exclude),
        )


class PlanArgs(BaseModel):
    """How to cut a source into batches: the space of one disk, the margin, oversize files."""

    space: int | Literal["auto"]
    safety_margin: float = 0.9
    oversize: Oversize = Oversize.FAIL

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, value: str) -> int | str:
        if value == "auto":
            return value
        if not isinstance(value, str):
            raise ValueError("give a size such as 10TB, or auto")
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, or auto") from None

    @field_validator("safety_margin")
    @classmethod
    def _margin(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], not {value:g}")
        return value

    @classmethod
    def parse(cls, space: str, margin: float | None, oversize: str) -> "PlanArgs":
        if not space:
            raise errors.InvalidArgument("give space: BYTES (e.g. 10TB) or auto")
        given: dict = {"space": space.strip(), "oversize": oversize or "fail"}
        if margin is not None:
            given["safety_margin"] = margin
        return cls.model_validate(given)

    @classmethod
    def of(cls, request: pb.PlanRequest | pb.DownloadSpec | pb.AnalyzeRequest) -> "PlanArgs":
        """From any request carrying space, an optional safety_margin and maybe oversize."""
        margin = request.safety_margin if request.HasField("safety_margin") else None
        return cls.parse(request.space, margin, getattr(request, "oversize", ""))


class SubmitDownload(BaseModel):
    name: JobName
    dest: Annotated[str, StringConstraints(min_length=1)]
    source: SourceSpec
    batching: PlanArgs | None = None
    auto_proceed: bool = False

    @classmethod
    def of(cls, name: str, spec: pb.DownloadSpec) -> "SubmitDownload":
        batching = None
        if spec.space:
            batching = PlanArgs.of(spec)
        elif spec.HasField("safety_margin") or spec.oversize:
            raise errors.InvalidArgument("safety_margin and oversize need space")
        return cls(
            name=name,
            dest=spec.dest,
            source=SourceSpec.of(spec),
            batching=batching,
            auto_proceed=spec.auto_proceed,
        )

    @model_validator(mode="after")
    def _consistent(self) -> "SubmitDownload":
        if not os.path.isabs(self.dest):
            raise ValueError(f"dest {self.dest!r} must be an absolute path")
        if self.auto_proceed and self.batching is None:
            raise ValueError("auto_proceed needs space: without it there is one batch")
        return self

    def request(self) -> DownloadRequest:
        batching = None
        if self.batching is not None:
            batching = Batching(
                space=self.batching.space,
                margin=self.batching.safety_margin,
                oversize=str(self.batching.oversize),
                auto_proceed=self.auto_proceed,
            )
        return DownloadRequest(
            name=self.name, dest=Path(self.dest), source=self.source.source(), batching=batching
        )
