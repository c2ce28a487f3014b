"""A clean job as submitted: which zips (a directory, or a download job's), which of them, where."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from bulkforge.daemon.cleaner.layout import KINDS, MARKETS
from bulkforge.daemon.validation import JobName
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

Kind = Literal["klines", "aggTrades", "trades"]
Market = Literal["spot", "um", "cm"]
assert set(Kind.__args__) == set(KINDS) and set(Market.__args__) == set(MARKETS.values())


@dataclass(frozen=True)
class CleanRequest:
    name: str
    dest: Path
    # Exactly one of the two: a directory in the Binance layout, or a download job's name.
    input: Path | None
    after: str | None
    kinds: tuple[str, ...] = KINDS
    markets: tuple[str, ...] = tuple(MARKETS.values())

    def spec(self) -> dict:
        return {
            "input": str(self.input) if self.input else None,
            "after": self.after,
            "dest": str(self.dest),
            "kinds": list(self.kinds),
            "markets": list(self.markets),
        }

    @classmethod
    def of_spec(cls, name: str, spec: dict) -> "CleanRequest":
        return cls(
            name=name,
            dest=Path(spec["dest"]),
            input=Path(spec["input"]) if spec["input"] else None,
            after=spec["after"],
            kinds=tuple(spec["kinds"]),
            markets=tuple(spec["markets"]),
        )

    def wants(self, market: str, kind: str) -> bool:
        return market in self.markets and kind in self.kinds


class SubmitClean(BaseModel):
    """A clean job as the request gives it, checked before anything is read."""

    name: JobName
    input: str = ""
    after: Annotated[str, StringConstraints(max_length=128)] = ""
    dest: Annotated[str, StringConstraints(min_length=1)]
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS))
    markets: list[Market] = Field(default_factory=lambda: list(MARKETS.values()))

    @classmethod
    def of(cls, name: str, spec: pb.CleanSpec) -> "SubmitClean":
        given: dict = {"name": name, "input": spec.input, "after": spec.after, "dest": spec.dest}
        if spec.kinds:
            given["kinds"] = list(spec.kinds)
        if spec.markets:
            given["markets"] = list(spec.markets)
        return cls.model_validate(given)

    @model_validator(mode="after")
    def _consistent(self) -> "SubmitClean":
        if bool(self.input) == bool(self.after):
            raise ValueError("give exactly one of input (a directory) and after (a download job)")
        for what, path in (("input", self.input), ("dest", self.dest)):
            if path and not os.path.isabs(path):
                raise ValueError(f"{what} {path!r} must be an absolute path")
        if self.input and _inside(Path(self.dest), Path(self.input)):
            raise ValueError("dest must not be inside input: the output is not input")
        return self

    def request(self) -> CleanRequest:
        # Sorted and unique: the same filters given in another order are the same job.
        return CleanRequest(
            name=self.name,
            dest=Path(self.dest),
            input=Path(self.input) if self.input else None,
            after=self.after or None,
            kinds=tuple(kind for kind in KINDS if kind in self.kinds),
            markets=tuple(market for market in MARKETS.values() if market in self.markets),
        )


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents
