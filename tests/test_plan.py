"""Batch planning: the planner's invariants, and `bfctl plan` against the real daemon."""

import random
import re

import numpy as np
import pytest
from conftest import write_manifest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bulkforge.daemon.downloader.planner import FileSizes, Oversize, capacity, plan
from bulkforge.daemon.errors import InvalidArgument

URL = "http://127.0.0.1:9/"

files_strategy = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 400)), min_size=1, max_size=200
)


def gather(files: list[tuple[str, int]], space: int, margin: float) -> FileSizes:
    sizes = FileSizes(capacity(space, margin))
    for path, size in files:
        sizes.add(path, size)
    return sizes


@settings(max_examples=200, deadline=None)
@given(files_strategy, st.integers(100, 2000), st.sampled_from([0.5, 0.9, 1.0]))
def test_every_file_lands_in_exactly_one_batch_that_fits(spec, space, margin):
    files = [(f"d{d}/f{i}", size) for i, (d, size) in enumerate(spec)]
    limit = capacity(space, margin)
    assume(min(size for _, size in files) <= limit)  # else refused: its own test
    result = plan(gather(files, space, margin), space, margin)
    sizes = np.array([size for _, size in files])
    for batch in result.batches:
        members = result.assignment == batch.index
        assert members.sum() == batch.files > 0
        assert sizes[members].sum() == batch.bytes <= limit
    oversize = sizes > limit
    assert (result.assignment[oversize] == -1).all()
    assert (result.assignment[~oversize] >= 0).all()
    assert result.oversize_files == oversize.sum()
    assert result.peak_bytes == max((b.bytes for b in result.batches), default=0)
    # Directories go in name order: a later batch never holds an earlier directory only.
    dirs = [int(path[1]) for path, _ in files]
    last_dir_of = [
        max(d for d, a in zip(dirs, result.assignment, strict=True) if a == b.index)
        for b in result.batches
    ]
    assert last_dir_of == sorted(last_dir_of)


def test_a_directory_is_kept_whole_when_closing_the_batch_costs_little():
    # 96 bytes of a 100-byte batch are used; the next directory (20) would not fit,
    # and closing early wastes 4% (< 5%): it moves whole to the next batch.
    files = [("a/1", 96), ("b/1", 10), ("b/2", 10)]
    result = plan(gather(files, 100, 1.0), 100, 1.0)
    assert [(b.files, b.bytes, b.split_directories) for b in result.batches] == [
        (1, 96, 0),
        (2, 20, 0),
    ]


def test_a_directory_is_split_when_keeping_it_whole_would_waste_a_disk():
    files = [("a/1", 50), ("b/1", 30), ("b/2", 30), ("b/3", 30)]
    result = plan(gather(files, 100, 1.0), 100, 1.0)
    assert [(b.files, b.bytes) for b in result.batches] == [(2, 80), (2, 60)]
    assert [b.split_directories for b in result.batches] == [1, 1]


def test_oversize_files_are_listed_apart_or_get_their_own_batch():
    files = [("a/small", 10), ("a/huge", 500), ("b/bigger", 900)]
    failing = plan(gather(files, 100, 0.9), 100, 0.9)
    assert [b.files for b in failing.batches] == [1]
    assert failing.oversize_listed == [(900, "b/bigger"), (500, "a/huge")]
    own = plan(gather(files, 100, 0.9), 100, 0.9, Oversize.OWN_BATCH)
    assert [(b.bytes, b.oversize) for b in own.batches] == [(10, False), (500, True), (900, True)]
    assert (own.assignment >= 0).all()


@pytest.mark.parametrize(
    ("space", "margin", "expected"),
    [
        (0, 0.9, "positive"),
        (-5, 0.9, "positive"),
        (100, 0.0, "(0, 1]"),
        (100, 1.5, "(0, 1]"),
        (10, 0.9, "smaller than the smallest file"),
    ],
)
def test_spaces_and_margins_that_make_no_batch_are_refused(space, margin, expected):
    sizes = gather([("a", 50), ("b", 60)], 10, 0.9)
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        plan(sizes, space, margin)


def test_a_million_files_plan_in_seconds():
    rng = random.Random(5)
    sizes = FileSizes(capacity(10**12, 0.9))
    for i in range(1_000_000):
        sizes.add(f"part{i % 40}/sub{i % 1000}/f{i}", rng.randrange(1, 10**7))
    result = plan(sizes, 10**12, 0.9)
    assert sum(b.files for b in result.batches) == 1_000_000


# -- through bfctl and the daemon ------------------------------------------------------------


def sized_manifest(path, count: int, size: int, dirs: int = 4):
    rows = [
        {"url": f"{URL}d{i % dirs}/f{i}.bin", "path": f"d{i % dirs}/f{i}.bin", "size": size}
        for i in range(count)
    ]
    return write_manifest(path, rows)


def test_bfctl_plan_json_cuts_batches_that_fit(daemon, tmp_path):
    manifest = sized_manifest(tmp_path / "m.jsonl", 40, 100_000)
    plan_doc = daemon.bfctl_json(
        "plan", "--manifest", str(manifest), "--space", "1MB", "--safety-margin", "0.8"
    )
    assert plan_doc["batch_limit"] == 800_000
    assert plan_doc["files"] == 40 and plan_doc["bytes"] == 4_000_000
    batches = plan_doc["batches"]
    assert len(batches) == 5
    assert all(b["bytes"] <= 800_000 for b in batches)
    assert batches[-1]["cumulative_files"] == 40
    assert batches[-1]["cumulative_bytes"] == 4_000_000
    assert plan_doc["peak_bytes"] == 800_000
    assert plan_doc["oversize"]["files"] == 0


def test_bfctl_plan_auto_measures_the_destination(daemon, tmp_path, tmpfs):
    dest = tmpfs("disk", "2m")
    manifest = sized_manifest(tmp_path / "m.jsonl", 30, 200_000)
    flags = ("plan", "--manifest", str(manifest), "--space", "auto", "--dest", str(dest))
    plan_doc = daemon.bfctl_json(*flags)
    assert 0 < plan_doc["space"] <= 2 * 1024**2
    assert str(dest) in plan_doc["space_from"]
    assert sum(b["files"] for b in plan_doc["batches"]) == 30
    human = daemon.bfctl(
        "plan", "--manifest", str(manifest), "--space", "auto", "--dest", str(dest)
    )
    assert human.returncode == 0, human.stderr
    assert "timeline" in human.stdout and "peak disk use" in human.stdout


def test_bfctl_plan_names_oversize_files_and_the_choices(daemon, tmp_path):
    rows = [
        {"url": f"{URL}a", "path": "a", "size": 10},
        {"url": f"{URL}huge", "path": "huge", "size": 5_000},
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    done = daemon.bfctl("plan", "--manifest", str(manifest), "--space", "1000")
    assert done.returncode == 0, done.stderr
    assert "huge" in done.stdout and "--oversize" in done.stdout
    own = daemon.bfctl_json(
        "plan", "--manifest", str(manifest), "--space", "1000", "--oversize", "own-batch"
    )
    assert [b["oversize"] for b in own["batches"]] == [False, True]


@pytest.mark.parametrize(
    ("flags", "code", "expected"),
    [
        (["--space", "5"], 1, "smaller than the smallest file"),
        # bfctl knows this one before bfd is asked: a usage error, in flag words.
        (["--space", "auto"], 2, "--space auto measures the free space of --dest: give --dest"),
    ],
)
def test_bfctl_plan_refuses_bad_space_and_margin(daemon, tmp_path, flags, code, expected):
    manifest = sized_manifest(tmp_path / "m.jsonl", 3, 100)
    done = daemon.bfctl("plan", "--manifest", str(manifest), *flags)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_bfctl_plan_refuses_files_without_a_size(daemon, tmp_path):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"url": f"{URL}a", "path": "a"}])
    done = daemon.bfctl("plan", "--manifest", str(manifest), "--space", "1GB")
    assert done.returncode == 1
    assert "no size" in done.stderr


def test_bfctl_analyze_with_a_space_names_the_files_no_disk_could_hold(daemon, tmp_path):
    rows = [
        {"url": f"{URL}a", "path": "a", "size": 10},
        {"url": f"{URL}b/huge", "path": "b/huge", "size": 5_000},
        {"url": f"{URL}c", "path": "c", "size": 950},
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    report = daemon.bfctl_json("analyze", "--manifest", str(manifest), "--space", "1000")
    assert report["batch_limit"] == 900
    assert report["oversize"]["files"] == 2 and report["oversize"]["bytes"] == 5_950
    assert [f["path"] for f in report["oversize"]["largest"]] == ["b/huge", "c"]
    plain = daemon.bfctl_json("analyze", "--manifest", str(manifest))
    assert plain["batch_limit"] is None and plain["oversize"]["files"] == 0
    human = daemon.bfctl("analyze", "--manifest", str(manifest), "--space", "1000")
    assert "larger than one batch" in human.stdout
