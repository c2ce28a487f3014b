"""Scenes jobs end to end: a real bfd, a faulty loopback origin, shards read back by their readers.

Every test checks the promise the pipeline makes: the union of the shards'
successes and the recorded failures covers every input key exactly once, no
key is in two shards, and only failures are fetched again by a retry.
"""

import hashlib
import json
import random
import tarfile
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from conftest import FAST_RETRIES, Daemon, wait_until
from origin import Fault, Origin

from bulkforge.daemon.outputs import MARKER
from bulkforge.daemon.scenes.shards import safe_name
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

ENDED = {"completed", "failed", "cancelled"}


def item_bytes(number: int) -> bytes:
    return hashlib.sha256(str(number).encode()).digest() * (16 + number % 8)


def items(count: int) -> dict[str, bytes]:
    return {f"img/{n:05d}.jpg": item_bytes(n) for n in range(count)}


def write_input(path: Path, origin: Origin, names: list[str], **extra_columns) -> Path:
    table = {
        "key": [f"k{n:05d}" for n in range(len(names))],
        "url": [origin.url_for(name) for name in names],
        "caption": [f"caption {n}" for n in range(len(names))],
        **extra_columns,
    }
    pq.write_table(pa.table(table), path, row_group_size=max(1, len(names) // 4))
    return path


def submit(daemon: Daemon, name: str, input: Path, dest: Path, *flags: str) -> dict:
    return daemon.bfctl_json(
        "submit",
        "scenes",
        name,
        "--input",
        str(input),
        "--key",
        "key",
        "--url",
        "url",
        "--dest",
        str(dest),
        *flags,
    )


def shard_samples(dest: Path) -> Counter:
    """Key -> how many shards hold it as a sample (read with the webdataset package)."""
    seen: Counter = Counter()
    for tar in sorted(dest.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            assert sample["__key__"] == safe_name(meta["key"])
            seen[meta["key"]] += 1
    return seen


def index_rows(dest: Path) -> list[tuple]:
    """Every row of every shard index, read by DuckDB."""
    pattern = str(dest / "[0-9]*[0-9].parquet")
    return duckdb.sql(
        f"SELECT key, status, step, error_class, size, sha256 FROM read_parquet('{pattern}')"
    ).fetchall()


def failures(daemon: Daemon, name: str) -> dict:
    return daemon.bfctl_json("failures", name, "--limit", "10000")


def test_every_key_ends_once_in_a_shard_or_among_the_failures(daemon, tmp_path):
    data = items(600)
    names = list(data)
    faults = {
        names[3]: Fault("status_404"),
        names[4]: Fault("status_500"),
        names[5]: Fault("status_500", times=1),  # recovers on its second attempt
        names[6]: Fault("stall", after_bytes=10, seconds=30),
        names[7]: Fault("corrupt"),
    }
    digests = [hashlib.sha256(data[name]).hexdigest() for name in names]
    with Origin(data, faults) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names, sha256=digests)
        dest = tmp_path / "out"
        submitted = submit(
            daemon,
            "mix",
            source,
            dest,
            "--shard-size",
            "100",
            "--keep",
            "caption,sha256",
            "--steps",
            "fetch,verify",
            "--fetch-timeout",
            "2",
        )
        assert submitted["created"] is True
        job = daemon.wait_state("mix", ENDED, timeout=120)
    assert job.state == "failed" and dict(job.counts) == {"done": 596, "failed": 4}
    samples = shard_samples(dest)
    assert set(samples.values()) == {1}
    failed = {f["item"]: f for f in failures(daemon, "mix")["failures"]}
    assert set(samples) | set(failed) == {f"k{n:05d}" for n in range(600)}
    assert not set(samples) & set(failed)
    assert {key: (f["step"], f["error_class"]) for key, f in failed.items()} == {
        "k00003": ("fetch", "http_4xx"),
        "k00004": ("fetch", "http_5xx"),
        "k00006": ("fetch", "timeout"),
        "k00007": ("verify", "checksum"),
    }
    rows = index_rows(dest)
    assert len(rows) == 600 and len({row[0] for row in rows}) == 600
    ok = {row[0]: row for row in rows if row[1] == "success"}
    assert ok["k00010"][4] == len(data[names[10]]) and ok["k00010"][5] == digests[10]
    # The kept sha256 is indexed beside the content's, not in its place.
    ((kept,),) = duckdb.sql(
        f"SELECT input_sha256 FROM read_parquet('{dest}/00000.parquet') WHERE key = 'k00007'"
    ).fetchall()
    assert kept == digests[7]
    assert len(origin.requests(names[5])) == 2


def shard_files(dest: Path) -> dict[str, str]:
    """Each file under dest (the shards, their indexes, _stats/) by its path, with its digest."""
    return {
        str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dest.rglob("*"))
        if p.is_file()
    }


def test_retry_fetches_again_only_the_failures_it_names_into_new_shards(daemon, tmp_path):
    data = items(300)
    names = list(data)
    broken = {names[n]: Fault("status_500") for n in (10, 150, 299)}
    gone = {names[n]: Fault("status_404") for n in (20, 160)}
    with Origin(data, broken | gone) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names)
        dest = tmp_path / "out"
        submit(daemon, "again", source, dest, "--shard-size", "100")
        job = daemon.wait_state("again", ENDED)
        assert dict(job.counts) == {"done": 295, "failed": 5}
        listed = failures(daemon, "again")["groups"]
        groups = {(g["step"], g["error_class"]): g["count"] for g in listed}
        assert groups == {("fetch", "http_5xx"): 3, ("fetch", "http_4xx"): 2}
        before = shard_files(dest)
        origin.clear_faults()
        origin.log.clear()
        retried = daemon.bfctl_json("retry", "again", "--step", "fetch", "--error", "http_5xx")
        assert retried["retried"] == 3
        job = daemon.wait_state("again", ENDED)
        fetched = sorted(r.path for r in origin.log if r.method == "GET")
    assert fetched == sorted(broken)
    assert dict(job.counts) == {"done": 298, "failed": 2}
    after = shard_files(dest)
    assert {name: after[name] for name in before} == before  # old shards untouched
    assert sorted(set(after) - set(before)) == ["00003.parquet", "00003.tar", "_stats/00003.json"]
    samples = shard_samples(dest)
    assert set(samples.values()) == {1} and len(samples) == 298
    with tarfile.open(dest / "00003.tar") as tar:
        assert sorted(tar.getnames()) == sorted(
            f"k{n:05d}.{ext}" for n in (10, 150, 299) for ext in ("jpg", "json")
        )


PLUGIN = """
def picky(data, meta):
    if meta["key"].endswith("7"):
        raise ValueError("no sevens")
    if meta["key"] == "k00013":
        raise SystemExit(3)  # must fail this item, not stop bfd
    if meta["key"] == "k00014":
        return data, None  # not a dict
    return data[::-1], {**meta, "reversed": True}
"""


def test_a_plugin_step_that_raises_fails_those_items_under_its_name(make_daemon, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "bf_picky.py").write_text(PLUGIN)
    daemon = make_daemon("--plugin-step", "bf_picky:picky").start(env={"PYTHONPATH": str(plugins)})
    data = items(50)
    names = list(data)
    with Origin(data) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names)
        dest = tmp_path / "out"
        submit(daemon, "plug", source, dest, "--steps", "fetch,bf_picky:picky", "--format", "files")
        job = daemon.wait_state("plug", ENDED)
    assert dict(job.counts) == {"done": 43, "failed": 7}
    listed = failures(daemon, "plug")
    assert {(f["step"], f["error_class"]) for f in listed["failures"]} == {
        ("bf_picky:picky", "plugin")
    }
    errors = {f["item"]: f["error"] for f in listed["failures"]}
    assert all("no sevens" in errors[f"k000{n}7"] for n in range(5))
    assert "SystemExit" in errors["k00013"] and "TypeError" in errors["k00014"]
    folder = dest / "00000"
    assert (folder / "k00001.jpg").read_bytes() == data[names[1]][::-1]
    assert json.loads((folder / "k00001.json").read_text())["reversed"] is True
    assert not (folder / "k00007.jpg").exists()
    assert daemon.stop() == 0


def test_a_parquet_shard_carries_the_bytes_and_duckdb_reads_it(daemon, tmp_path):
    data = items(40)
    names = list(data)
    with Origin(data) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names)
        dest = tmp_path / "out"
        submit(daemon, "pq", source, dest, "--format", "parquet", "--keep", "caption")
        daemon.wait_state("pq", {"completed"})
    rows = duckdb.sql(
        f"SELECT key, caption, status, data FROM read_parquet('{dest}/00000.parquet') ORDER BY key"
    ).fetchall()
    assert [row[0] for row in rows] == [f"k{n:05d}" for n in range(40)]
    assert rows[5][1] == "caption 5" and rows[5][2] == "success" and rows[5][3] == data[names[5]]
    stats = json.loads((dest / "_stats" / "00000.json").read_text())
    assert stats["count"] == 40 and stats["successes"] == 40 and stats["failures"] == 0


def test_export_writes_the_layout_teams_use_and_stats_count_per_shard(daemon, tmp_path):
    data = items(120)
    names = list(data)
    with Origin(data, {names[n]: Fault("status_404") for n in (1, 61)}) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names)
        submit(daemon, "exp", source, tmp_path / "out", "--shard-size", "60")
        daemon.wait_state("exp", ENDED)
    out = tmp_path / "export"
    exported = daemon.bfctl_json("export", "exp", "--dest", str(out))
    assert (exported["total"], exported["successful"], exported["failed"]) == (120, 118, 2)
    assert exported.keys() == {"paths", "total", "successful", "failed", "seconds"}
    files = ("successful_tokens.parquet", "failed_tokens.parquet", "progress.json")
    assert sorted(exported["paths"]) == sorted(str(out / name) for name in files)
    assert exported["seconds"] >= 0
    ok = pq.read_table(out / "successful_tokens.parquet")
    assert ok.column_names == ["scene_token", "processed_at", "batch_num"] and ok.num_rows == 118
    bad = pq.read_table(out / "failed_tokens.parquet").to_pylist()
    assert [(r["scene_token"], r["batch_num"], r["step"]) for r in bad] == [
        ("k00001", 0, "fetch"),
        ("k00061", 1, "fetch"),
    ]
    assert "404" in bad[0]["error_msg"] and bad[0]["failed_at"] is not None
    progress = json.loads((out / "progress.json").read_text())
    assert {k: progress[k] for k in ("total_scenes", "processed_scenes", "successful_count")} == {
        "total_scenes": 120,
        "processed_scenes": 120,
        "successful_count": 118,
    }
    assert progress["failed_count"] == 2 and progress["current_batch"] == 1
    assert not list(out.glob(".*"))
    stats = daemon.bfctl_json("stats", "exp")
    assert [(s["shard"], s["items"], s["failures"]) for s in stats["shards"]] == [
        (0, 60, 1),
        (1, 60, 1),
    ]
    assert stats["success_rate"] == pytest.approx(118 / 120)
    assert sum(bucket["items"] for bucket in stats["throughput"]) == 120
    text = daemon.bfctl("stats", "exp")
    assert text.returncode == 0 and "shards" in text.stdout and "items/s" in text.stdout


def test_kill_9_at_random_moments_changes_nothing_in_the_outcome(make_daemon, tmp_path):
    """The successful keys equal an undisturbed run's; no key in two shards; every file valid."""
    rng = random.Random(6)
    data = items(3000)
    names = list(data)
    faults = {names[n]: Fault("status_404") for n in range(0, 3000, 97)}
    # Every other item pauses mid-body, so the job lasts long enough to be killed often.
    faults["*"] = Fault("stall", after_bytes=1, seconds=0.05)
    expected_ok = {f"k{n:05d}" for n in range(3000) if n % 97}
    daemon = make_daemon(*FAST_RETRIES)
    dest = tmp_path / "out"
    with Origin(data, faults) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names)
        daemon.start()
        submit(daemon, "crashy", source, dest, "--shard-size", "128", "--keep", "caption")
        kills = 0
        while kills < 5:
            time.sleep(rng.uniform(0.2, 1.2))
            if daemon.stub.Status(pb.JobRef(name="crashy"), timeout=10).state in ENDED:
                break
            daemon.kill9()
            kills += 1
            daemon.start()
        job = daemon.wait_state("crashy", ENDED, timeout=180)
    assert kills >= 2, "the job ended before it could be interrupted twice"
    assert dict(job.counts) == {"done": len(expected_ok), "failed": 3000 - len(expected_ok)}
    samples = shard_samples(dest)
    assert set(samples) == expected_ok and set(samples.values()) == {1}
    for tar in dest.glob("*.tar"):
        with tarfile.open(tar) as opened:
            for member in opened:
                assert len(opened.extractfile(member).read()) == member.size
    rows = index_rows(dest)
    assert sorted(row[0] for row in rows) == sorted(f"k{n:05d}" for n in range(3000))
    assert {row[0] for row in rows if row[1] == "success"} == expected_ok
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == [MARKER]
    assert daemon.stop() == 0


def test_bad_input_is_refused_at_submit_with_a_reason_and_bfd_carries_on(daemon, tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"key": ["a", "b"], "url": ["http://127.0.0.1:9/a", None]}), good)
    cases = {
        "nokey": (pa.table({"id": ["a"], "url": ["http://x/"]}), "no column 'key'"),
        "dupes": (
            pa.table({"key": ["a", "b", "a"], "url": ["u"] * 3}),
            "rows 1 and 3 have the same key 'a'",
        ),
        "nullkey": (pa.table({"key": ["a", None], "url": ["u"] * 2}), "row 2: no key"),
    }
    for name, (table, expected) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        refused = daemon.bfctl("submit", "scenes", name, "--input", str(path), "--key", "key",
                               "--url", "url", "--dest", str(tmp_path / name))  # fmt: skip
        assert refused.returncode == 1 and expected in refused.stderr, (name, refused.stderr)
    (tmp_path / "text.parquet").write_text("key,url\na,b\n")
    refusals = {
        "text": (["--input", str(tmp_path / "text.parquet")], "not a readable Parquet file"),
        "noimport": (
            ["--steps", "fetch,no_such_module_xyz:run"],
            "'no_such_module_xyz:run' is not one bfd offers",
        ),
        "notfirst": (["--steps", "verify,fetch"], "the first step must be 'fetch'"),
        "format": (["--format", "zip"], "unknown 'zip'"),
    }
    for name, (flags, expected) in refusals.items():
        args = ["submit", "scenes", name, "--input", str(good), "--key", "key", "--url", "url",
                "--dest", str(tmp_path / name), *flags]  # fmt: skip
        refused = daemon.bfctl(*args)
        assert refused.returncode in (1, 2) and expected in refused.stderr, (name, refused.stderr)
        assert "Traceback" not in refused.stderr
    # A null URL is the item's own failure, found where the operator looks for failures.
    submit(daemon, "nullurl", good, tmp_path / "nullurl")
    shared = daemon.bfctl("submit", "scenes", "second", "--input", str(good), "--key", "key",
                          "--url", "url", "--dest", str(tmp_path / "nullurl"))  # fmt: skip
    assert shared.returncode == 1 and "'nullurl'" in shared.stderr
    assert "Choose another dest" in shared.stderr  # whether it has written a shard yet or not
    job = daemon.wait_state("nullurl", ENDED)
    listed = failures(daemon, "nullurl")["failures"]
    assert dict(job.counts) == {"failed": 2}
    assert {(f["item"], f["error_class"]) for f in listed} == {("a", "connect"), ("b", "no_url")}
    # Still serving, and no refused submit left a job behind.
    assert [job["name"] for job in daemon.bfctl_json("list")["jobs"]] == ["nullurl"]


def test_duplicates_found_after_the_start_are_skipped_and_reported(daemon, tmp_path):
    """Past the first chunk the job is already working: a repeated key is skipped, not fatal."""
    count = 20_000
    keys = [f"k{n:05d}" for n in range(count)] + ["k00003", "k19999"]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": keys, "url": [None] * len(keys)}), path)
    submit(daemon, "late", path, tmp_path / "out", "--shard-size", "5000")
    job = daemon.wait_state("late", ENDED, timeout=120)
    assert job.items_total == count and dict(job.counts) == {"failed": count}
    assert job.registration.rejected == 2 and "k00003" in job.registration.first_rejected
    groups = {g["error_class"]: g for g in failures(daemon, "late")["groups"]}
    assert groups["rejected_row"]["count"] == 2 and groups["no_url"]["count"] == count
    assert "row 20001" in groups["rejected_row"]["sample"]


def test_registration_killed_midway_resumes_where_it_stopped(make_daemon, tmp_path):
    """Each chunk and its progress commit together: no row twice, none lost, after kill -9."""
    count = 200_000
    path = tmp_path / "in.parquet"
    keys = [f"s{n:07d}" for n in range(count)]
    pq.write_table(pa.table({"key": keys, "url": [None] * count}), path, row_group_size=30_000)
    daemon = make_daemon().start()
    submit(daemon, "big", path, tmp_path / "out", "--shard-size", "50000")
    wait_until_registering = time.monotonic() + 30
    while (
        job := daemon.stub.Status(pb.JobRef(name="big"), timeout=10)
    ).registration.rows_read < 40_000:
        assert time.monotonic() < wait_until_registering, daemon.log_tail()
        time.sleep(0.02)
    assert not job.registration.done, "registered whole before it could be interrupted"
    daemon.kill9()
    daemon.start()
    job = daemon.wait_state("big", ENDED, timeout=120)
    assert job.registration.done and job.registration.rows_read == count
    assert dict(job.counts) == {"failed": count} and job.registration.rejected == 0
    rows = index_rows(tmp_path / "out")
    assert sorted(row[0] for row in rows) == keys
    assert daemon.stop() == 0


def test_keys_and_kept_values_of_any_text_are_registered_exactly(daemon, tmp_path):
    """Registration hands SQLite a chunk as JSON: quotes, backslashes, accents, emoji and
    control characters must come back byte for byte, in the shard and in the store."""
    odd = ['clé "quoted"', "back\\slash", "emoji 😀 k", "tab\tnew\nline", "null\x00byte"]
    data = items(len(odd))
    with Origin(data) as origin:
        urls = [origin.url_for(name) for name in data]
        table = {"key": odd, "url": urls, "caption": [f"«{key}»" for key in odd]}
        path = tmp_path / "in.parquet"
        pq.write_table(pa.table(table), path)
        submit(daemon, "odd", path, tmp_path / "out", "--keep", "caption")
        job = daemon.wait_state("odd", ENDED)
    assert job.state == "completed", job.message
    metas = {}
    for tar in sorted((tmp_path / "out").glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            metas[meta["key"]] = meta["caption"]
    assert metas == {key: f"«{key}»" for key in odd}
    exported = daemon.bfctl_json("export", "odd", "--dest", str(tmp_path / "export"))
    assert exported["successful"] == len(odd)
    tokens = pq.read_table(tmp_path / "export" / "successful_tokens.parquet")
    assert sorted(tokens.column("scene_token").to_pylist()) == sorted(odd)


def test_a_cancelled_jobs_shards_end_with_it_in_status_and_in_the_store(daemon, tmp_path):
    data = items(40)
    names = list(data)
    # Every item stalls mid-body: shards are claimed and stay in flight until the cancel.
    with Origin(data, {"*": Fault("stall", after_bytes=1, seconds=3600)}) as origin:
        source = write_input(tmp_path / "in.parquet", origin, names)
        submit(daemon, "dropped", source, tmp_path / "out", "--shard-size", "8")
        wait_until(
            lambda: any(
                b["state"] == "active" for b in daemon.bfctl_json("status", "dropped")["batches"]
            ),
            what="a shard in flight",
        )
        assert daemon.bfctl_json("cancel", "dropped")["state"] == "cancelled"
        shards = daemon.bfctl_json("status", "dropped")["batches"]
    assert shards and {shard["state"] for shard in shards} == {"cancelled"}, shards
    stored = daemon.read_store().execute(
        "SELECT DISTINCT batches.state FROM batches JOIN jobs ON jobs.id = batches.job_id "
        "WHERE jobs.name = 'dropped'"
    )
    assert {state for (state,) in stored} == {"cancelled"}
