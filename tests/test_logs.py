"""bfd's log as a machine reads it: one JSON object per line (--log-format json, or under
systemd), and every failure, refusal and repair names its job and kind as fields."""

import json

from conftest import wait_until, write_manifest
from origin import Fault, FaultKind, Origin

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def records(daemon) -> list[dict]:
    lines = [line for line in daemon.log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    return [entry["record"] for entry in parsed]


def about(entries: list[dict], start: str) -> list[dict]:
    return [entry for entry in entries if entry["message"].startswith(start)]


def test_failures_refusals_and_repairs_name_their_job_and_kind(make_daemon, tmp_path):
    daemon = make_daemon("--log-format", "json", "--max-attempts", "1").start()
    faults = {
        "gone.bin": Fault(FaultKind.STATUS_404),
        "slow.bin": Fault(FaultKind.STALL, after_bytes=10, seconds=60),
    }
    with Origin({"slow.bin": b"s" * 1000}, faults) as origin:
        gone = write_manifest(tmp_path / "g.jsonl", [{"url": origin.url_for("gone.bin")}])
        daemon.submit("logged", gone, tmp_path / "a")
        daemon.wait_state("logged", {"failed"})
        refused = daemon.bfctl("submit", "download", "bad", "--url", "ftp://x/y", "--dest",
                               str(tmp_path / "b"))  # fmt: skip
        assert refused.returncode == 1
        slow = write_manifest(tmp_path / "s.jsonl", [{"url": origin.url_for("slow.bin")}])
        daemon.submit("cut", slow, tmp_path / "c")
        wait_until(lambda: origin.requests("slow.bin"), what="the slow request")
        daemon.kill9()
        daemon.start()
        entries = records(daemon)
        daemon.stub.Pause(pb.JobRef(name="cut"), timeout=10)
    assert daemon.stop() == 0

    [failed] = about(entries, "file gone.bin failed")
    assert failed["extra"] == {"job": "logged", "kind": "download"}
    [refusal] = about(entries, "refused Submit of job 'bad'")
    assert refusal["extra"] == {"job": "bad", "kind": "download"}
    assert "only http and https" in refusal["message"]
    [repair] = about(entries, "repair: job cut file slow.bin")
    assert repair["extra"] == {"job": "cut", "kind": "download"}
    [ended] = about(entries, "job logged failed")
    assert ended["extra"] == {"job": "logged", "kind": "download"}
    [submitted] = about(entries, "job cut submitted")
    assert submitted["extra"] == {"job": "cut", "kind": "download"}
    [continues] = about(entries, "job cut was running at shutdown")
    assert continues["extra"] == {"job": "cut", "kind": "download"}


def test_a_clients_text_cannot_forge_a_line_of_the_human_log(make_daemon, tmp_path):
    """A refusal quotes what the client sent (here a column name holding a newline and the
    look of a log line): in the human log it stays one line, its control characters escaped."""
    daemon = make_daemon("--log-format", "human").start()
    forged = "2026-01-01 00:00:00.000 CRITICAL forged by a client"
    spec = tmp_path / "spec.json"
    column = f"a\n{forged}\u2028b"
    spec.write_text(json.dumps({"tables": {"t": {"rows": 5, "columns": {
        column: {"kind": "no such kind"}}}}}))  # fmt: skip
    refused = daemon.bfctl("submit", "generate", "forge", "--spec", str(spec), "--rows", "5",
                           "--dest", str(tmp_path / "out"))  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    wait_until(lambda: "refused Submit" in daemon.log.read_text(), what="the refusal logged")
    lines = daemon.log.read_text().splitlines()
    assert not [line for line in lines if line.startswith(forged)], lines
    assert [line for line in lines if "refused Submit" in line and "a\\n2026" in line], lines
    # bfctl shows the refusal on one line too: the terminal is told nothing.
    assert len(refused.stderr.strip().splitlines()) == 1 and "a\\n2026" in refused.stderr
    assert "\u2028" not in refused.stderr and "\\u2028" in refused.stderr
