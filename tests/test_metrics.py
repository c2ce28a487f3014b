"""bfd --metrics: Prometheus text named by convention, numbers equal to what bfctl says, and
a Grafana dashboard built on exactly the names served."""

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import make_dataset, manifest_rows, write_manifest
from origin import Fault, FaultKind, Origin
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[1] / "packaging" / "grafana-dashboard.json"


def scrape(address: str) -> dict:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict, name: str, **labels) -> float:
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_say_what_bfctl_says_by_prometheus_conventions(make_daemon, tmp_path):
    daemon = make_daemon("--metrics", "127.0.0.1:0", "--max-connections", "7").start()
    address = daemon.bfctl_json("system")["metrics_address"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address) and not address.endswith(":0")
    dataset = make_dataset(5, 3000, seed=51)
    missing = sorted(dataset.files)[0]
    with Origin(dataset.files, {missing: Fault(FaultKind.STATUS_404)}) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.submit("met", manifest, tmp_path / "d")
        daemon.wait_state("met", {"failed"})
    status = daemon.bfctl_json("status", "met")
    families = scrape(address)

    for name, family in families.items():
        assert name.startswith("bulkforge_"), name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
    assert value(families, "bulkforge_items", kind="download", state="done") == 4
    assert value(families, "bulkforge_items", kind="download", state="failed") == 1
    assert value(families, "bulkforge_items_done_bytes", kind="download") == status["bytes_done"]
    assert value(families, "bulkforge_jobs", kind="download", state="failed") == 1
    # What ended since bfd started, as counters by kind and outcome.
    finished = "bulkforge_items_finished_total"
    assert value(families, finished, kind="download", outcome="succeeded") == 4
    assert value(families, finished, kind="download", outcome="failed") == 1
    assert value(families, finished, kind="download", outcome="skipped") == 0
    assert value(families, finished, kind="generate", outcome="succeeded") == 0
    done = value(families, "bulkforge_bytes_done_total", kind="download")
    assert done == status["bytes_done"]
    failed = dict(kind="download", step="connect", error_class="http_4xx")
    assert value(families, "bulkforge_failed_items", **failed) == 1
    assert value(families, "bulkforge_limit_max_connections") == 7
    assert value(families, "bulkforge_transfers_in_flight") == 0
    assert value(families, "bulkforge_held_jobs") == 0
    assert value(families, "bulkforge_resident_memory_bytes") > 10 * 2**20
    # The job has ended: no per-job gauge names it.
    assert not [s for s in families["bulkforge_live_job_items"].samples]
    # Store commits, observed as they happen, in buckets from 1 ms to ~8 s.
    commits = families["bulkforge_store_commit_seconds"]
    bounds = sorted(float(s.labels["le"]) for s in commits.samples if s.name.endswith("_bucket"))
    assert bounds[0] == 0.001 and 8 <= bounds[-2] <= 8.2 and bounds[-1] == float("inf")
    observed = value(families, "bulkforge_store_commit_seconds_count")
    assert observed >= 3 and value(families, "bulkforge_store_commits_total") >= observed
    # Nothing is left for the writer once the job has ended.
    assert value(families, "bulkforge_store_writer_queue_depth") == 0

    # Every name the dashboard queries is one bfd serves.
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
             for t in panel["targets"]]  # fmt: skip
    queried = {re.sub(r"_(bucket|count|sum|total)$", "", name)
               for expr in exprs for name in re.findall(r"bulkforge_[a-z_]+", expr)}  # fmt: skip
    assert queried and not queried - set(families), sorted(queried - set(families))
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("address", "code", "said"),
    [
        # No address of this host (TEST-NET-1): the bind fails at once, nothing is sent.
        ("192.0.2.1:9100", 1, "cannot serve metrics on 192.0.2.1:9100"),
        # Not an address at all: a setting to change, exit 78 (systemd does not restart).
        ("127.0.0.1:notaport", 78, "is not HOST:PORT with a port from 0 to 65535"),
    ],
)
def test_an_address_metrics_cannot_serve_on_refuses_the_start(
    make_daemon, tmp_path, address, code, said
):
    daemon = make_daemon("--metrics", address)
    done = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == code and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
