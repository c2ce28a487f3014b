"""Enrollments: seats of courses given to students, every row a function of its number.

Every course runs each term at its slot (slot = course row mod S, a cycle) and fills
`filled(c) = min(capacity(c) * fill(c), limit)` seats, the same every term. Row r is
(term, course, seat) in that order. The seats of one slot in one term are numbered
0..; seat j of slot s in term t goes to student `permute_{t,s}(j)`, a keyed bijection
of the students, so no student holds two seats of one slot in one term, and no course
has more seats than its capacity. `limit` keeps a slot's seats within the number of
students.

Finding row r's course needs the seats of the courses before it: courses are taken in
groups of G (a multiple of S), and per group the store keeps its seats, and its seats
per slot: C/G + C/G*S numbers, about C/8, computed once in chunks. A chunk of rows
then computes the seats of only the groups it falls in.
"""

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator import streams

# Courses per group: 8 rounds of every slot.
ROUNDS = 8
# Courses whose seats are computed at once when the groups are first summed.
SUM_CHUNK = 1 << 20
GRADE_WEIGHTS = [30.0, 35.0, 20.0, 10.0, 5.0]


class EnrollmentValues:
    def __init__(self, dataset, name: str):
        self.dataset = dataset
        self.name = name
        self.spec: s.Enrollments = dataset.spec.tables[name].enrollments
        courses_spec = dataset.spec.tables[self.spec.courses].columns
        self.slots = len(courses_spec[self.spec.slot].values)
        self.group = self.slots * ROUNDS
        self.courses = dataset.counts[self.spec.courses]
        self.students = dataset.counts[self.spec.students]
        per_slot = math.ceil(self.courses / self.slots)
        self.limit = max(1, self.students // per_slot)
        self._sum_groups()
        self.count = self.per_term * len(self.spec.terms)

    def key(self, *purpose: str) -> int:
        return streams.stream_key(self.dataset.seed, self.name, *purpose)

    # -- seats of courses --------------------------------------------------------------------

    def filled(self, courses: np.ndarray) -> np.ndarray:
        """Seats each course fills every term (0 for rows past the last course)."""
        valid = courses < self.courses
        table = self.dataset.table(self.spec.courses)
        capacity = table.column(self.spec.capacity, np.where(valid, courses, 0))
        capacity = capacity.to_numpy(zero_copy_only=False).astype(np.int64)
        low, high = self.spec.fill_min, self.spec.fill_max
        fill = low + streams.uniform(self.key("fill"), courses) * (high - low)
        # Bounded as floats first: a capacity near 2^63 would not convert back to int64.
        seats = np.minimum(np.floor(capacity * fill), float(self.limit)).astype(np.int64)
        return np.where(valid, np.maximum(seats, 0), 0)

    def _sum_groups(self) -> None:
        groups = math.ceil(self.courses / self.group)
        seats = np.zeros(groups, dtype=np.int64)
        by_slot = np.zeros((groups, self.slots), dtype=np.int64)
        for first in range(0, groups, max(1, SUM_CHUNK // self.group)):
            last = min(groups, first + max(1, SUM_CHUNK // self.group))
            block = self._group_seats(np.arange(first, last))
            seats[first:last] = block.sum(axis=(1, 2))
            by_slot[first:last] = block.sum(axis=1)
        self.group_start = np.concatenate([[0], np.cumsum(seats)])
        # Seats of each slot in the groups before: where a group's seats of a slot start.
        self.slot_start = np.vstack([np.zeros(self.slots, np.int64), np.cumsum(by_slot, axis=0)])
        self.per_term = int(self.group_start[-1])

    def _group_seats(self, groups: np.ndarray) -> np.ndarray:
        """Seats of every course of the groups, shaped (group, round, slot)."""
        courses = groups[:, None] * self.group + np.arange(self.group)[None, :]
        return self.filled(courses.ravel()).reshape(len(groups), ROUNDS, self.slots)

    # -- rows ----------------------------------------------------------------------------------

    def rows(self, start: int, count: int) -> pa.Table:
        return pa.table(self.values(np.arange(start, start + count, dtype=np.int64)))

    def column(self, name: str, rows: np.ndarray) -> pa.Array:
        return self.values(rows)[name]

    def values(self, rows: np.ndarray) -> dict[str, pa.Array]:
        term, within = np.divmod(rows, self.per_term)
        group = np.searchsorted(self.group_start, within, side="right") - 1
        course, seat_in_slot = self._locate(group, within)
        slot = course % self.slots
        students = np.empty(len(rows), dtype=np.int64)
        for t, sl in set(zip(term.tolist(), slot.tolist(), strict=True)):
            here = (term == t) & (slot == sl)
            key = self.key("seats", str(t), str(sl))
            students[here] = streams.permute(key, seat_in_slot[here], self.students)
        return {
            "enrollment_id": pa.array(rows + 1, type=pa.int64()),
            "student_id": self._parent_column(self.spec.students, self.spec.student_key, students),
            "course_id": self._parent_column(self.spec.courses, self.spec.course_key, course),
            "term": pa.array(self.spec.terms).take(term),
            "grade": self._grades(rows, term),
        }

    def _locate(self, group: np.ndarray, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's course, and its seat's number among its slot's seats of the term."""
        course = np.empty(len(within), dtype=np.int64)
        seat = np.empty(len(within), dtype=np.int64)
        for g in np.unique(group):
            here = group == g
            block = self._group_seats(np.array([g]))[0]  # (round, slot)
            flat = block.ravel()
            ends = np.cumsum(flat)
            offset = within[here] - self.group_start[g]
            position = np.searchsorted(ends, offset, side="right")
            course[here] = g * self.group + position
            seat_in_course = offset - (ends[position] - flat[position])
            # Seats of the same slot in the group's earlier rounds, then in earlier groups.
            earlier = np.cumsum(block, axis=0) - block
            rounds, slots = np.divmod(position, self.slots)
            seat[here] = self.slot_start[g, slots] + earlier[rounds, slots] + seat_in_course
        return course, seat

    def _parent_column(self, table: str, column: str, rows: np.ndarray) -> pa.Array:
        distinct, where = np.unique(rows, return_inverse=True)
        return self.dataset.table(table).column(column, distinct).take(where)

    def _grades(self, rows: np.ndarray, term: np.ndarray) -> pa.Array:
        weights = self.spec.grade_weights or GRADE_WEIGHTS[: len(self.spec.grades)]
        if len(weights) != len(self.spec.grades):
            weights = [1.0] * len(self.spec.grades)
        cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
        drawn = streams.uniform(self.key("grade"), rows) * cumulative[-1]
        index = np.minimum(np.searchsorted(cumulative, drawn, side="right"), len(weights) - 1)
        past = term < self.spec.terms.index(self.spec.current_term)
        grades = pa.array(self.spec.grades, type=pa.string()).take(index)
        return pc.if_else(pa.array(past), grades, pa.scalar(None, pa.string()))
