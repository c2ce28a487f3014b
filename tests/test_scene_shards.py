"""Shards: each format readable, an index of every item, stats, safe names, atomic rewrites."""

import hashlib
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulkforge.daemon.scenes.shards import FAILED, SUCCESS, Outcome, ShardWriter, safe_name

ITEMS = {"scene-001": b"\x89PNG one", "a/../b": b"two", "caf\u00e9 3": b"three"}
KEPT = pa.schema([("caption", pa.string())])


def filled(tmp_path, fmt: str) -> ShardWriter:
    shard = ShardWriter(tmp_path / "out", 7, fmt, KEPT)
    outcomes = [
        Outcome(key, {"caption": f"c{number}"}, SUCCESS, data=data, extension="jpg")
        for number, (key, data) in enumerate(ITEMS.items())
    ]
    shard.add(outcomes[:2])
    failure = Outcome("scene-404", {"caption": "gone"}, FAILED, step="fetch", error="HTTP 404")
    shard.add([outcomes[2], failure])
    return shard


def check_index(path, with_data: bool) -> None:
    index = pq.read_table(path).to_pylist()
    assert [row["key"] for row in index] == [*ITEMS, "scene-404"]
    assert [row["status"] for row in index] == ["success"] * 3 + ["failed"]
    assert index[-1]["step"] == "fetch" and "404" in index[-1]["error"]
    assert index[-1]["size"] is None and index[-1]["sha256"] is None
    for row, data in zip(index, ITEMS.values(), strict=False):
        assert row["size"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["caption"].startswith("c")
        assert (row["data"] == data) if with_data else ("data" not in row)


def check_stats(path) -> None:
    stats = json.loads(path.read_text())
    assert stats["count"] == 4 and stats["successes"] == 3
    assert stats["failures_by_step"] == {"fetch": 1}


def test_a_webdataset_shard_is_a_tar_of_the_successes_with_an_index_and_stats(tmp_path):
    filled(tmp_path, "webdataset").finish()
    out = tmp_path / "out"
    with tarfile.open(out / "00007.tar") as tar:
        names = tar.getnames()
        meta = json.load(tar.extractfile(f"{safe_name('a/../b')}.json"))
        assert tar.extractfile("scene-001.jpg").read() == ITEMS["scene-001"]
        caption = tar.extractfile(f"{safe_name('a/../b')}.txt").read()
    # The kept caption column is each sample's .txt (img2dataset's members).
    assert len(names) == 9 and all("/" not in name for name in names)
    assert all(name.count(".") == 1 for name in names)  # webdataset groups at the first dot
    assert meta == {"key": "a/../b", "caption": "c1"} and caption == b"c1"
    check_index(out / "00007.parquet", with_data=False)
    check_stats(out / "_stats" / "00007.json")
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*_stats.json"))


def test_a_files_shard_is_a_directory_and_a_parquet_shard_carries_the_bytes(tmp_path):
    filled(tmp_path, "files").finish()
    folder = tmp_path / "out" / "00007"
    assert (folder / "scene-001.jpg").read_bytes() == ITEMS["scene-001"]
    assert (folder / "scene-001.txt").read_text() == "c0"
    assert len(list(folder.iterdir())) == 9
    check_index(tmp_path / "out" / "00007.parquet", with_data=False)
    parquet_dir = tmp_path / "p"
    parquet_dir.mkdir()
    filled(parquet_dir, "parquet").finish()
    check_index(parquet_dir / "out" / "00007.parquet", with_data=True)


def test_rewriting_a_shard_replaces_it_whole(tmp_path):
    filled(tmp_path, "files").finish()
    again = ShardWriter(tmp_path / "out", 7, "files")
    again.add([Outcome("only", {}, SUCCESS, data=b"x", extension="txt")])
    again.finish()
    assert sorted(p.name for p in (tmp_path / "out" / "00007").iterdir()) == [
        "only.json",
        "only.txt",
    ]
    assert pq.read_table(tmp_path / "out" / "00007.parquet").column("key").to_pylist() == ["only"]


@pytest.mark.parametrize("key", ["../etc/passwd", "a/b", ".hidden", "", "x" * 500, "caf\u00e9"])
def test_unsafe_keys_become_safe_distinct_names(key):
    name = safe_name(key)
    assert "/" not in name and not name.startswith(".") and 0 < len(name) <= 200
    assert name.isascii()
    assert safe_name(key) == name  # stable
    assert safe_name(key + "?") != name


def test_distinct_keys_never_share_a_name():
    keys = ["a/b", "a_b", "a?b", "a b", "A/B"]
    assert len({safe_name(k) for k in keys}) == len(keys)
