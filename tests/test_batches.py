"""Datasets larger than the disk: batches fill a small filesystem, wait for a swap, go on.

The disks are real tmpfs mounts (CI runs as root). A plain directory cannot stand in for
one: bfd waits for a swap only when the next batch does not fit in what the filesystem has
free, and a directory on the host's disk always has room. Where mounting is refused these
tests skip, saying why (and fail under CI=true); the batch tests that need no disk of their
own use plain directories.
"""

import hashlib
import json
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    FAST_RETRIES,
    Tmpfs,
    make_dataset,
    manifest_rows,
    wait_until,
    write_manifest,
)
from origin import Fault, FaultKind, Origin

MID_BATCH_KILLS = 6
DISK = "2m"
DISK_BYTES = 2 * 1024 * 1024
MARGIN = 0.9


class Disks:
    """One mount point whose disk is replaced between batches."""

    def __init__(self, tmpfs: Tmpfs):
        self.point = tmpfs("disk", DISK)
        self._tmpfs = tmpfs
        self.taken: list[Path] = []

    def take_away(self, root: Path) -> Path:
        """Keep what the disk holds (as the operator's shelf would), then put in an empty one."""
        shelf = root / f"shelf-{len(self.taken)}"
        shutil.copytree(self.point, shelf)
        self._tmpfs.swap(self.point, DISK)
        self.taken.append(shelf)
        return shelf


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".bulkforge" not in path.parts
    }


# "needs 1.23 MB and /mnt/x has 456 kB free": the sizes of a swap's message and refusal.
SWAP_SIZES = re.compile(r"needs \d+(\.\d+)? [kMGT]?B and .+ has \d+(\.\d+)? [kMGT]?B free")


def test_a_dataset_three_times_the_disk_lands_batch_by_batch_with_swaps(daemon, tmp_path, tmpfs):
    dataset = make_dataset(27, 200 * 1024, seed=21)
    disks = Disks(tmpfs)
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        submitted = daemon.bfctl(
            "submit", "download", "big", "--manifest", str(manifest),
            "--dest", str(disks.point), "--space", "auto", "--safety-margin", str(MARGIN),
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        for _ in range(10):
            job = daemon.wait_state("big", {"awaiting_swap", "completed", "failed"}, timeout=90)
            if job.state != "awaiting_swap":
                break
            status = daemon.bfctl_json("status", "big")
            complete = [b for b in status["batches"] if b["state"] == "complete"]
            assert len(complete) == 1
            on_disk = sum(len(data) for data in files_under(disks.point).values())
            assert on_disk == complete[0]["bytes"] <= DISK_BYTES * MARGIN
            assert "bfctl swap big" in status["message"]
            # Sizes as people read them, never raw byte counts.
            assert SWAP_SIZES.search(status["message"]), status["message"]
            disks.take_away(tmp_path)
            swapped = daemon.bfctl_json("swap", "big")
            assert swapped.keys() == {"job", "archived", "disk", "new_disk", "note"}
            assert swapped["job"]["name"] == "big" and swapped["disk"]["mount"]
            assert swapped["archived"] == [complete[0]["index"]]
            assert swapped["new_disk"] is True
        assert job.state == "completed", job.message
    status = daemon.bfctl_json("status", "big")
    assert len(status["batches"]) >= 3
    peak = max(b["bytes"] for b in status["batches"]) / DISK_BYTES
    print(f"peak disk use {peak:.1%} of a {DISK_BYTES:,}-byte disk (margin {MARGIN})")
    assert all(b["disk_info"] and b["disk_info"]["mount"] for b in status["batches"])
    fsids = {b["disk_info"]["fsid"] for b in status["batches"]}
    assert len(fsids) == len(status["batches"])  # every batch on its own disk
    # Every file on exactly one disk, byte for byte; each disk carries its batch manifest.
    seen: dict[str, bytes] = {}
    for disk in [*disks.taken, disks.point]:
        found = files_under(disk)
        assert not seen.keys() & found.keys()
        seen |= found
        check_batch_manifest(disk, found)
    assert seen == dataset.files


def check_batch_manifest(disk: Path, found: dict[str, bytes]) -> None:
    (manifest,) = (disk / ".bulkforge").glob("big.batch-*.jsonl")
    header, *rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert header["files"] == len(rows) == len(found)
    # The disk is an object a reader indexes (jq .disk.uuid), not JSON inside a string.
    assert isinstance(header["disk"], dict), header["disk"]
    fields = {"mount", "device", "fsid", "fstype", "uuid", "label"}
    assert header["disk"].keys() == fields and header["disk"]["fstype"] == "tmpfs", header
    for row in rows:
        data = found[row["path"]]
        assert row["size"] == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()


def test_continue_refuses_a_disk_without_room_and_changes_nothing(daemon, tmp_path, tmpfs):
    dataset = make_dataset(18, 200 * 1024, seed=22)
    disks = Disks(tmpfs)
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.bfctl(
            "submit", "download", "cont", "--manifest", str(manifest),
            "--dest", str(disks.point), "--space", "auto",
        )  # fmt: skip
        daemon.wait_state("cont", {"awaiting_swap"}, timeout=90)
        before = daemon.bfctl_json("status", "cont")
        refused = daemon.bfctl("continue", "cont")
        assert refused.returncode == 1
        assert SWAP_SIZES.search(" ".join(refused.stderr.split())), refused.stderr
        assert daemon.bfctl_json("status", "cont")["batches"] == before["batches"]
        # Freeing the space (the operator moved the files away) lets it go on.
        for child in disks.point.iterdir():
            if child.name != ".bulkforge":
                shutil.rmtree(child)
        assert daemon.bfctl("continue", "cont").returncode == 0
        daemon.wait_state("cont", {"awaiting_swap", "completed"}, timeout=90)
        # The next batch landed on the same disk, beside the first one's record.
        after = daemon.bfctl_json("status", "cont")["batches"]
        assert [b["state"] for b in after][:2] == ["complete", "complete"]
        assert sum(map(len, files_under(disks.point).values())) == after[1]["bytes"]


@pytest.mark.parametrize(
    ("flags", "code", "expected"),
    [
        # bfd's refusal (it knows the files' sizes) …
        (["--space", "100"], 1, "smaller than the smallest file"),
        # … and bfctl's, before bfd is asked (flags that need --space), in flag words.
        (["--safety-margin", "0.5"], 2, "--safety-margin and --oversize need --space"),
        (["--oversize", "skip"], 2, "--safety-margin and --oversize need --space"),
        (["--auto-proceed"], 2, "--auto-proceed needs --space"),
    ],
)
def test_bad_batching_flags_are_refused_and_nothing_is_stored(
    daemon, tmp_path, flags, code, expected
):
    dataset = make_dataset(3, 1000, seed=23)
    rows = [{"url": f"http://127.0.0.1:9/{p}", "path": p, "size": len(d)} for p, d in
            dataset.files.items()]  # fmt: skip
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    done = daemon.bfctl(
        "submit", "download", "bad", "--manifest", str(manifest),
        "--dest", str(tmp_path / "dest"), *flags,
    )  # fmt: skip
    assert done.returncode == code, (done.stdout, done.stderr)
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert daemon.bfctl_json("list")["jobs"] == []


@pytest.mark.slow
def test_kill_9_mid_batch_and_while_awaiting_a_swap_loses_and_repeats_nothing(
    make_daemon, tmp_path, tmpfs
):
    dataset = make_dataset(27, 200 * 1024, seed=24)
    disks = Disks(tmpfs)
    rng = random.Random(7)
    # Every GET stalls for longer than a status check takes on a loaded machine, so kills
    # land with transfers in flight.
    slow = {"*": Fault(FaultKind.STALL, times=None, seconds=1.0)}
    daemon = make_daemon(*FAST_RETRIES, "--max-connections", "4")
    shelved_at: dict[str, float] = {}
    with Origin(dataset.files, slow) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.start()
        daemon.bfctl(
            "submit", "download", "crashy", "--manifest", str(manifest),
            "--dest", str(disks.point), "--space", "auto",
        )  # fmt: skip
        kills = 0
        while True:
            time.sleep(rng.uniform(0.2, 0.8))
            # A bounded number of kills mid-batch: a slow machine must still finish.
            if (
                kills < MID_BATCH_KILLS
                and daemon.bfctl_json("status", "crashy")["state"] == "running"
            ):
                daemon.kill9()
                kills += 1
                daemon.start()
                continue
            job = daemon.wait_state("crashy", {"awaiting_swap", "completed"}, timeout=120)
            if job.state == "completed":
                break
            daemon.kill9()  # in awaiting_swap: the wait survives a crash
            daemon.start()
            assert daemon.bfctl_json("status", "crashy")["state"] == "awaiting_swap"
            shelf = disks.take_away(tmp_path)
            shelved_at |= {name: time.monotonic() for name in files_under(shelf)}
            assert daemon.bfctl("swap", "crashy").returncode == 0
        assert kills >= 3, f"only {kills} kills landed mid-batch; slow the origin down"
        # No file of a shelved batch was fetched again after its disk was taken away.
        for name, when in shelved_at.items():
            assert all(r.at < when for r in origin.requests(name)), name
    seen: dict[str, bytes] = {}
    for disk in [*disks.taken, disks.point]:
        found = files_under(disk)
        assert not seen.keys() & found.keys(), "a file landed on two disks"
        assert not list(disk.rglob("*.partial"))
        seen |= found
    assert seen == dataset.files


def test_oversize_files_fail_with_their_reason_or_are_skipped_as_chosen(daemon, tmp_path):
    files = {"small/a.bin": b"a" * 1000, "small/b.bin": b"b" * 1000, "huge.bin": b"h" * 50_000}
    with Origin(files) as origin:
        rows = [
            {"url": origin.url_for(name), "path": name, "size": len(data)}
            for name, data in files.items()
        ]
        manifest = write_manifest(tmp_path / "m.jsonl", rows)
        for name, extra, final in (
            ("fails", [], "failed"),
            ("skips", ["--oversize", "skip"], "completed"),
        ):
            dest = tmp_path / name
            done = daemon.bfctl(
                "submit", "download", name, "--manifest", str(manifest), "--dest", str(dest),
                "--space", "10000", "--auto-proceed", *extra,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert daemon.wait_state(name, {"completed", "failed"}).state == final
        failures = daemon.bfctl_json("failures", "fails")
        assert [(g["step"], g["error_class"], g["count"]) for g in failures["groups"]] == [
            ("plan", "oversize", 1)
        ]
        assert daemon.bfctl_json("status", "skips")["counts"] == {"done": 2, "skipped": 1}
        assert not (tmp_path / "skips" / "huge.bin").exists()
        # The oversize file was never requested, by either job.
        assert origin.requests("huge.bin") == []


def test_disk_threshold_holds_downloads_and_lets_them_go_on_when_space_is_freed(
    make_daemon, tmp_path, tmpfs
):
    disk = tmpfs("threshold", "8m")
    limit = 0.5 * 8 * 1024 * 1024
    dataset = make_dataset(24, 100 * 1024, seed=25)
    slow = {"*": Fault(FaultKind.STALL, times=1, seconds=0.15)}
    daemon = make_daemon(*FAST_RETRIES, "--max-connections", "2", "--disk-threshold", "0.5")
    with Origin(dataset.files, slow) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.start()
        daemon.submit("held", manifest, disk)
        wait_until(lambda: daemon.bfctl_json("status", "held")["counts"].get("done", 0) >= 4)
        # Another process fills the disk past the threshold on its own (4.25 of 8 MiB).
        filler = disk / "filler.bin"
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={filler}", "bs=64k", "count=68", "conv=fsync"],
            check=True,
            capture_output=True,
        )
        filled = shutil.disk_usage(disk)
        wait_until(lambda: daemon.bfctl_json("status", "held")["message"].startswith("waiting"))
        held = daemon.bfctl_json("status", "held")
        assert held["state"] == "running"
        assert "threshold 0.5" in held["message"]
        assert [h["job"] for h in daemon.bfctl_json("system")["holds"]] == ["held"]
        # Transfers in flight finish; nothing new starts.
        wait_until(
            lambda: not {"downloading", "verifying"} & file_states(daemon, "held"),
            what="the transfers in flight to finish",
        )
        assert daemon.bfctl_json("status", "held")["counts"].get("done", 0) < len(dataset.files)
        # Once the disk was past the threshold only what was already claimed landed: at
        # most two files per connection (one receiving, one ready for the next slot).
        grew = filled.free - shutil.disk_usage(disk).free
        assert filled.total - filled.free > limit
        assert grew <= 2 * 2 * 100 * 1024
        for path, data in files_under(disk).items():  # no torn file
            if path != "filler.bin":
                assert data == dataset.files[path], path
        filler.unlink()
        freed = time.monotonic()
        wait_until(lambda: not daemon.bfctl_json("status", "held")["message"])
        print(f"the governor saw the freed space after {time.monotonic() - freed:.2f} s")
        job = daemon.wait_state("held", {"completed", "failed"}, timeout=60)
    assert job.state == "completed"
    assert files_under(disk) == dataset.files
    assert daemon.bfctl_json("system")["holds"] == []


def file_states(daemon, name: str) -> set[str]:
    """The states the job's files are in now."""
    return set(daemon.bfctl_json("status", name)["counts"])


def test_verify_finds_a_flipped_byte_a_missing_file_and_an_extra_file(daemon, tmp_path):
    dataset = make_dataset(12, 5000, seed=26)
    dest = tmp_path / "dest"
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.bfctl(
            "submit", "download", "ver", "--manifest", str(manifest), "--dest", str(dest),
            "--space", "20000", "--auto-proceed",
        )  # fmt: skip
        assert daemon.wait_state("ver", {"completed", "failed"}).state == "completed"
    clean = daemon.bfctl_json("verify", "ver")
    assert clean["ok"] and clean["extra_count"] == 0 and clean["extra"] == []
    assert clean.keys() == {"ok", "dest", "mounted", "batches", "extra_count", "extra", "seconds"}
    assert clean["dest"] == str(dest) and clean["mounted"]["mount"] and clean["seconds"] >= 0
    for batch in clean["batches"]:
        assert batch.keys() == {
            "index", "went_to", "on_this_disk", "checked", "missing_count", "missing",
            "changed_count", "changed",
        }  # fmt: skip
        assert batch["on_this_disk"] and batch["went_to"] and batch["missing_count"] == 0
        assert batch["missing"] == [] and batch["changed"] == [] and batch["changed_count"] == 0
    assert sum(b["checked"] for b in clean["batches"]) == len(dataset.files)
    names = sorted(dataset.files)
    flipped, gone = dest / names[0], dest / names[1]
    data = bytearray(flipped.read_bytes())
    data[100] ^= 0x01
    flipped.write_bytes(bytes(data))
    gone.unlink()
    (dest / "set" / "stray.bin").write_bytes(b"not ours")
    done = daemon.bfctl("--json", "verify", "ver")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert not report["ok"]
    changed = [c for b in report["batches"] for c in b["changed"]]
    missing = [m for b in report["batches"] for m in b["missing"]]
    assert [c["path"] for c in changed] == [names[0]] and "sha256" in changed[0]["problem"]
    assert missing == [names[1]]
    assert report["extra"] == ["set/stray.bin"]
    # One batch at a time: batch 0 alone, and a batch that does not exist.
    first = json.loads(daemon.bfctl("--json", "verify", "ver", "--batch", "0").stdout)
    assert [b["index"] for b in first["batches"]] == [0]
    nosuch = daemon.bfctl("verify", "ver", "--batch", "99")
    assert nosuch.returncode == 1 and "no batch 99" in nosuch.stderr


def test_swap_onto_a_disk_too_small_for_the_next_batch_is_refused_and_changes_nothing(
    daemon, tmp_path, tmpfs
):
    dataset = make_dataset(18, 200 * 1024, seed=27)
    disk = tmpfs("disk", DISK)
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.bfctl(
            "submit", "download", "small", "--manifest", str(manifest),
            "--dest", str(disk), "--space", "auto",
        )  # fmt: skip
        daemon.wait_state("small", {"awaiting_swap"}, timeout=90)
        before = daemon.bfctl_json("status", "small")
        tmpfs.swap(disk, "256k")  # the operator put in a disk far too small
        refused = daemon.bfctl("swap", "small")
        assert refused.returncode == 1
        assert "needs" in refused.stderr and "larger disk" in refused.stderr
        after = daemon.bfctl_json("status", "small")
        assert after["state"] == "awaiting_swap" and after["batches"] == before["batches"]
        tmpfs.swap(disk, DISK)
        assert daemon.bfctl_json("swap", "small")["archived"] == [0]
        daemon.wait_state("small", {"awaiting_swap", "completed"}, timeout=90)
        # The next batch landed on the disk that was put in.
        after = daemon.bfctl_json("status", "small")["batches"]
        assert [b["state"] for b in after][:2] == ["archived", "complete"]
        assert sum(map(len, files_under(disk).values())) == after[1]["bytes"]


def test_swap_makes_the_dest_on_the_new_disk_as_submit_does_and_refuses_an_unusable_one(
    daemon, tmp_path, tmpfs
):
    """The dest is a directory of the disk; the new disk is empty, so it is made there.

    A dest that cannot be one (a file, a read-only filesystem, below a file) is refused
    naming it and why, and the job still awaits its swap.
    """
    dataset = make_dataset(24, 200 * 1024, seed=31)  # three batches
    disk = tmpfs("disk", DISK)
    dest = disk / "sub" / "data"
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"not a directory")
    read_only = tmpfs("ro", "1m")
    subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
    unusable = {
        str(a_file): "is not a directory",
        str(a_file / "below"): "Not a directory",
        str(read_only): "read-only filesystem",
        str(read_only / "new"): "Read-only file system",
    }
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.bfctl(
            "submit", "download", "moved", "--manifest", str(manifest),
            "--dest", str(dest), "--space", "auto",
        )  # fmt: skip
        daemon.wait_state("moved", {"awaiting_swap"}, timeout=90)
        for given, why in unusable.items():
            refused = daemon.bfctl("swap", "moved", "--dest", given)
            assert refused.returncode == 1, (given, refused.stdout)
            assert given in refused.stderr and why in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr
            assert daemon.bfctl_json("status", "moved")["state"] == "awaiting_swap"
        tmpfs.swap(disk, DISK)  # an empty disk: dest's directories are not on it
        assert not dest.exists()
        swapped = daemon.bfctl_json("swap", "moved")
        assert swapped["archived"] == [0] and swapped["new_disk"]
        daemon.wait_state("moved", {"awaiting_swap"}, timeout=90)
        landed = daemon.bfctl_json("status", "moved")["batches"][1]
        assert landed["state"] == "complete"
        assert sum(map(len, files_under(dest).values())) == landed["bytes"]
        # Onto another new disk at another mount point, whose dest is not there either.
        other = tmpfs("other", DISK)
        moved = daemon.bfctl_json("swap", "moved", "--dest", str(other / "data"))
        assert moved["archived"] == [1] and (other / "data").is_dir()
        daemon.wait_state("moved", {"completed"}, timeout=90)
        last = daemon.bfctl_json("status", "moved")["batches"][2]
        assert sum(map(len, files_under(other / "data").values())) == last["bytes"]
