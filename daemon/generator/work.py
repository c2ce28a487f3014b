"""What making a part takes and gives back: plain data between bfd and a worker.

Kept apart from parts.py so that bfd, which only hands out parts, never imports what
making them needs (numpy, pyarrow).
"""

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class PartTask:
    # The job's spec document (spec, rows, seed …) as stored: plain data for a worker.
    job_spec: str
    table: str
    index: int
    start: int
    rows: int

    @property
    def stored(self) -> dict:
        return json.loads(self.job_spec)


@dataclass(frozen=True)
class PartWritten:
    path: str
    size: int
    sha256: str
