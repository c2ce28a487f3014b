"""Scenes shards as their readers see them: webdataset, and the Parquet readers of a dest.

- Shards are img2dataset's: a kept caption column (`--keep caption`, or `--caption COL`)
  is each sample's `.txt`; `decode` puts width and height (and img2dataset's
  original_width/original_height) into the sample's `.json` and the shard index; tar
  members and a `files` shard's files carry the time their item was fetched.
  Checked with the real `webdataset` package decoding every sample, over a table of
  step configurations and formats.
- Nothing in a dest trips its readers: a `parquet` dest is read whole by
  pyarrow.dataset, pandas, polars and DuckDB with no options, and every shard index
  by a glob of `*.parquet`; the rows they count are the rows bfd's own stats count.
"""

import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from conftest import Daemon
from origin import Fault, Origin
from PIL import Image

from bulkforge.daemon.scenes.shards import SUCCESS, Outcome, ShardWriter, safe_name

ENDED = {"completed", "failed"}
ITEMS = 24
MISSING = (5, 17)  # served 404: they fail at fetch, and are rows of the index all the same
SIZE_FIELDS = ("width", "height", "original_width", "original_height")


def image(number: int) -> tuple[str, bytes, tuple[int, int]]:
    """An image of its own size, PNG or JPEG by turns: its name, bytes and (width, height)."""
    size = (7 + number % 5, 3 + number % 7)
    kind = ("PNG", "png") if number % 2 else ("JPEG", "jpg")
    out = io.BytesIO()
    Image.new("RGB", size, (number * 9 % 256, 80, 160)).save(out, format=kind[0])
    return f"img/{number:03d}.{kind[1]}", out.getvalue(), size


@dataclass(frozen=True)
class Corpus:
    origin: Origin
    input: Path
    sizes: dict[str, tuple[int, int]]  # key -> (width, height)


@pytest.fixture
def corpus(tmp_path: Path):
    made = [image(n) for n in range(ITEMS)]
    files = {name: data for n, (name, data, _) in enumerate(made) if n not in MISSING}
    faults = {made[n][0]: Fault("status_404") for n in MISSING}
    with Origin(files, faults) as origin:
        keys = [f"k{n:03d}" for n in range(ITEMS)]
        table = {
            "key": keys,
            "url": [origin.url_for(name) for name, _, _ in made],
            # A null caption is an empty .txt, as img2dataset writes it.
            "caption": [None if n == 3 else f"a picture, number {n}" for n in range(ITEMS)],
            "TEXT": [f"LAION-style text {n}" for n in range(ITEMS)],
        }
        source = tmp_path / "in.parquet"
        pq.write_table(pa.table(table), source)
        sizes = {key: size for key, (_, _, size) in zip(keys, made, strict=True)}
        yield Corpus(origin, source, sizes)


def caption_of(number: int, flags: tuple[str, ...]) -> str | None:
    """The caption a sample must carry under these flags; None: the sample has no .txt."""
    if "--caption" in flags:
        return f"LAION-style text {number}"
    kept = flags[flags.index("--keep") + 1].split(",") if "--keep" in flags else []
    if "caption" in kept:
        return "" if number == 3 else f"a picture, number {number}"
    return None


# (format, --steps, the rest of the flags): decode on and off, a caption kept or not.
CONFIGURATIONS = {
    "wds-fetch": ("webdataset", "fetch", ()),
    "wds-decode-keep-caption": ("webdataset", "fetch,decode", ("--keep", "caption")),
    "wds-decode-caption-col": ("webdataset", "fetch,verify,decode", ("--caption", "TEXT")),
    "wds-fetch-keep-caption": ("webdataset", "fetch", ("--keep", "caption,TEXT")),
    "files-decode-caption-col": ("files", "fetch,decode", ("--caption", "TEXT")),
    "files-fetch": ("files", "fetch", ()),
    "parquet-decode-caption-col": ("parquet", "fetch,decode", ("--caption", "TEXT")),
    "parquet-fetch": ("parquet", "fetch", ("--keep", "caption")),
}


def run_job(daemon: Daemon, corpus: Corpus, dest: Path, name: str, fmt, steps, flags):
    """Submit, wait for the end; the job, and the seconds (floor, ceiling) it ran within."""
    started = time.time()
    submitted = daemon.bfctl(
        "submit", "scenes", name, "--input", str(corpus.input), "--key", "key", "--url", "url",
        "--dest", str(dest), "--format", fmt, "--steps", steps, "--shard-size", "10", *flags,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = daemon.wait_state(name, ENDED, timeout=120)
    return job, (int(started), int(time.time()) + 1)


def bfd_counts(daemon: Daemon, name: str, dest: Path) -> tuple[int, int]:
    """(items, successes) as bfd counts them: its shards' stats files and `bfctl stats`."""
    files = [json.loads(p.read_text()) for p in sorted((dest / "_stats").glob("*.json"))]
    stats = daemon.bfctl_json("stats", name)
    assert sum(s["count"] for s in files) == sum(s["items"] for s in stats["shards"])
    return sum(s["count"] for s in files), sum(s["successes"] for s in files)


@pytest.mark.parametrize("config", CONFIGURATIONS)
def test_shards_are_what_img2dataset_users_read(daemon, corpus, tmp_path, config):
    fmt, steps, flags = CONFIGURATIONS[config]
    dest = tmp_path / "out"
    job, (floor, ceiling) = run_job(daemon, corpus, dest, "j", fmt, steps, flags)
    assert job.state == "failed" and dict(job.counts) == {"done": ITEMS - 2, "failed": 2}
    items, successes = bfd_counts(daemon, "j", dest)
    assert (items, successes) == (ITEMS, ITEMS - 2)
    decoded = "decode" in steps
    samples = {
        "webdataset": webdataset_samples,
        "files": folder_samples,
        "parquet": parquet_samples,
    }[fmt](dest)
    assert set(samples) == {f"k{n:03d}" for n in range(ITEMS) if n not in MISSING}
    for key, sample in samples.items():
        number = int(key[1:])
        meta = sample["json"]
        assert meta["key"] == key and meta["url"].endswith(f"{number:03d}.{sample['ext']}")
        assert sample["image"].size == corpus.sizes[key]  # the bytes decode as the image
        size = corpus.sizes[key]
        if decoded:
            assert [meta[f] for f in SIZE_FIELDS] == [*size, *size], key
        else:
            assert not set(SIZE_FIELDS) & set(meta), key
        caption = caption_of(number, flags)
        assert sample.get("txt") == caption, key
        if caption is not None:
            assert meta["caption"] == (None if caption == "" else caption)
        assert all(floor <= mtime <= ceiling for mtime in sample["mtimes"]), (key, floor, ceiling)
    assert_indexes_read_by_every_reader(dest, fmt, items, successes, decoded)


def webdataset_samples(dest: Path) -> dict[str, dict]:
    """Every sample of the tars, decoded by the webdataset package (images by PIL)."""
    tars = sorted(str(p) for p in dest.glob("*.tar"))
    mtimes = {}
    for tar in tars:
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                mtimes.setdefault(member.name.split(".")[0], []).append(member.mtime)
    samples = {}
    for sample in wds.WebDataset(tars, shardshuffle=False).decode("pil"):
        ext = "png" if "png" in sample else "jpg"
        samples[sample["json"]["key"]] = {
            "json": sample["json"],
            "image": sample[ext],
            "ext": ext,
            "txt": sample.get("txt"),
            "mtimes": mtimes[sample["__key__"]],
        }
    return samples


def folder_samples(dest: Path) -> dict[str, dict]:
    """Every sample of the shard folders: `<key>.<ext>`, `<key>.json`, `<key>.txt`."""
    samples = {}
    for folder in sorted(p for p in dest.iterdir() if p.is_dir() and p.name.isdigit()):
        for meta_file in folder.glob("*.json"):
            members = {p.suffix[1:]: p for p in folder.glob(f"{meta_file.stem}.*")}
            ext = "png" if "png" in members else "jpg"
            text = members.get("txt")
            samples[meta_file.stem] = {
                "json": json.loads(meta_file.read_text()),
                "image": Image.open(members[ext]),
                "ext": ext,
                "txt": None if text is None else text.read_text(),
                "mtimes": [int(p.stat().st_mtime) for p in members.values()],
            }
    return samples


def parquet_samples(dest: Path) -> dict[str, dict]:
    """Every success of a parquet dest: its row's columns stand for the sample's JSON."""
    samples = {}
    for row in ds.dataset(dest).to_table().to_pylist():
        if row["status"] != SUCCESS:
            continue
        data = row.pop("data")
        ext = "png" if data.startswith(b"\x89PNG") else "jpg"
        meta = {k: v for k, v in row.items() if v is not None or k == "caption"}
        meta["url"] = f"{row['key'][1:]}.{ext}"  # the index keeps no URL
        samples[row["key"]] = {
            "json": meta,
            "image": Image.open(io.BytesIO(data)),
            "ext": ext,
            "txt": None if "caption" not in row else row["caption"] or "",
            "mtimes": [],
        }
    return samples


def assert_indexes_read_by_every_reader(
    dest: Path, fmt: str, items: int, successes: int, decoded: bool
) -> None:
    """Each reader, as its users call it, counts bfd's rows; a parquet dest is read whole."""
    pattern = f"{dest}/*.parquet"
    counted = {
        "duckdb": duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall()[0][0],
        "polars": pl.scan_parquet(pattern).select(pl.len()).collect().item(),
        "pyarrow": ds.dataset(sorted(dest.glob("*.parquet"))).count_rows(),
    }
    if fmt == "parquet":
        counted |= {
            "pyarrow.dataset(dir)": ds.dataset(dest, partitioning="hive").count_rows(),
            "pandas(dir)": len(pd.read_parquet(dest)),
            "polars(dir/**/*.parquet)": pl.read_parquet(f"{dest}/**/*.parquet").height,
            "duckdb(dir/**/*.parquet)": duckdb.sql(
                f"SELECT count(*) FROM read_parquet('{dest}/**/*.parquet')"
            ).fetchall()[0][0],
        }
    assert counted == dict.fromkeys(counted, items)
    ok = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{pattern}') WHERE status = 'success'"
    ).fetchall()[0][0]
    assert ok == successes
    columns = pq.read_schema(sorted(dest.glob("*.parquet"))[0]).names
    assert (set(SIZE_FIELDS) <= set(columns)) == decoded
    # No sidecar where a reader of the dest looks: stats under _stats/, the marker dotted.
    loose = [p.name for p in dest.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert all(name.endswith((".parquet", ".tar")) for name in loose), loose


def test_an_older_bfds_stats_beside_a_shard_go_when_the_shard_is_written_again(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    legacy = dest / "00002_stats.json"
    legacy.write_text("{}")
    writer = ShardWriter(dest, 2, "parquet")
    writer.add([Outcome("a", {}, SUCCESS, data=b"x", extension="bin")])
    writer.finish()
    assert not legacy.exists()
    assert json.loads((dest / "_stats" / "00002.json").read_text())["count"] == 1
    assert ds.dataset(dest).count_rows() == 1 and len(pd.read_parquet(dest)) == 1


@pytest.mark.parametrize("fmt", ["webdataset", "files"])
def test_an_item_fetched_as_txt_beside_a_caption_keeps_both(tmp_path, fmt):
    """`<key>.txt` is the caption: content whose extension is txt is stored as .bin."""
    kept = pa.schema([("caption", pa.string())])
    writer = ShardWriter(tmp_path / "out", 0, fmt, kept)
    fetched_at = 1_700_000_000.5
    writer.add(
        [
            Outcome(
                "n", {"caption": "cap"}, SUCCESS, data=b"body", extension="txt",
                fetched_at=fetched_at,
            )
        ]
    )  # fmt: skip
    writer.finish()
    if fmt == "webdataset":
        with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
            members = {m.name: (tar.extractfile(m).read(), m.mtime) for m in tar.getmembers()}
    else:
        folder = tmp_path / "out" / "00000"
        members = {p.name: (p.read_bytes(), int(p.stat().st_mtime)) for p in folder.iterdir()}
    name = safe_name("n")
    assert members[f"{name}.txt"] == (b"cap", int(fetched_at))
    assert members[f"{name}.bin"] == (b"body", int(fetched_at))
    assert set(members) == {f"{name}.txt", f"{name}.bin", f"{name}.json"}


def test_caption_flag_refused_beside_another_column_kept_as_caption(daemon, corpus, tmp_path):
    done = daemon.bfctl(
        "submit", "scenes", "x", "--input", str(corpus.input), "--key", "key", "--url", "url",
        "--dest", str(tmp_path / "out"), "--caption", "TEXT", "--keep", "caption",
    )  # fmt: skip
    assert done.returncode != 0
    assert "caption 'TEXT'" in done.stderr and "Traceback" not in done.stderr
    missing = daemon.bfctl(
        "submit", "scenes", "y", "--input", str(corpus.input), "--key", "key", "--url", "url",
        "--dest", str(tmp_path / "out"), "--caption", "NOPE",
    )  # fmt: skip
    assert missing.returncode != 0 and "'NOPE'" in missing.stderr, missing.stderr
    long = daemon.bfctl(
        "submit", "scenes", "z", "--input", str(corpus.input), "--key", "key", "--url", "url",
        "--dest", str(tmp_path / "out"), "--caption", "x" * 300,
    )  # fmt: skip
    assert long.returncode != 0 and "caption" in long.stderr, long.stderr
    assert "Traceback" not in long.stderr
    assert not os.path.exists(tmp_path / "out" / "00000.tar")


def test_an_export_into_the_shards_folder_is_refused(daemon, corpus, tmp_path):
    dest = tmp_path / "out"
    run_job(daemon, corpus, dest, "e", "parquet", "fetch", ())
    for inside in (dest, dest / "_export", dest / "reports"):
        refused = daemon.bfctl("export", "e", "--dest", str(inside))
        assert refused.returncode != 0 and "export beside it" in refused.stderr, refused.stderr
    assert not (dest / "successful_tokens.parquet").exists() and not (dest / "_export").exists()
    beside = tmp_path / "out-export"
    exported = daemon.bfctl_json("export", "e", "--dest", str(beside))
    assert exported["total"] == ITEMS and (beside / "progress.json").is_file()
    glob = f"{dest}/**/*.parquet"  # the dataset still reads whole
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(ITEMS,)]
    assert len(pd.read_parquet(dest)) == ITEMS
