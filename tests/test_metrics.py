"""bfd --metrics: Prometheus text named by convention, numbers equal to what bfctl says, and
a Grafana dashboard built on exactly the names served."""

import itertools
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    FAST_RETRIES,
    make_dataset,
    manifest_rows,
    unavailable,
    wait_until,
    write_manifest,
)
from origin import Fault, FaultKind, Origin
from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from bulkforge.daemon.downloader import machine as file_machine
from bulkforge.daemon.generator import machine as part_machine
from bulkforge.daemon.jobs import JobRow, JobView
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.metrics import _Finished
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

DASHBOARD = Path(__file__).resolve().parents[1] / "packaging" / "grafana-dashboard.json"


# What Prometheus 2.42 asks for first, and the plain text format promtool reads.
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TEXT = "text/plain; version=0.0.4"
# Prometheus sets these on every series it scrapes, and renames ours (exported_job …).
PROMETHEUS_LABELS = {"job", "instance"}


def scrape_text(address: str, accept: str = TEXT) -> str:
    request = urllib.request.Request(f"http://{address}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.headers["Content-Type"].split(";")[0] == accept.split(";")[0]
        return answer.read().decode()


def scrape(address: str) -> dict:
    text = scrape_text(address)
    return {family.name: family for family in text_string_to_metric_families(text)}


def two_jobs(daemon, tmp_path: Path) -> None:
    """Give daemon an ended download ("ended": 4 files done, one 404 failed for good) and a
    live one ("live": one file done, one stalled, then paused), so that every family of
    /metrics has samples, the per-job ones too."""
    dataset = make_dataset(5, 3000, seed=61)
    stalled = make_dataset(2, 3000, seed=62)
    missing, stuck = sorted(dataset.files)[0], sorted(stalled.files)[0]
    with Origin(dataset.files, {missing: Fault(FaultKind.STATUS_404)}) as origin:
        ended = write_manifest(tmp_path / "ended.jsonl", manifest_rows(origin, dataset))
        daemon.submit("ended", ended, tmp_path / "ended")
        daemon.wait_state("ended", {"failed"})
    with Origin(stalled.files, {stuck: Fault(FaultKind.STALL, seconds=3600)}) as origin:
        live = write_manifest(tmp_path / "live.jsonl", manifest_rows(origin, stalled))
        daemon.submit("live", live, tmp_path / "live")
        wait_until(lambda: done_of(daemon, "live") == 1, 60, "the live job's other file done")
        assert daemon.bfctl("pause", "live").returncode == 0
        daemon.wait_state("live", {"paused"})


def done_of(daemon, name: str) -> int:
    return daemon.stub.Status(pb.JobRef(name=name), timeout=10).counts["done"]


SUFFIXES = ("", "_total", "_created", "_bucket", "_count", "_sum")
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')


def rule_breaches(text: str) -> list[str]:
    """What breaks the exposition's rules, read from the raw text (a client's parser renames a
    counter's samples to _total itself): HELP and TYPE for every family, no label Prometheus
    owns, every counter's samples named _total (or its _created)."""
    helps = set(re.findall(r"^# HELP (\S+)", text, flags=re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)", text, flags=re.M))
    breaches = [f"{name}: TYPE without HELP" for name in types.keys() - helps]
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, labels = SAMPLE.fullmatch(line.strip()).groups()
        family = next((name.removesuffix(x) for x in SUFFIXES if name.removesuffix(x) in types), "")
        if not family:
            breaches.append(f"{name}: no TYPE")
        if owned := PROMETHEUS_LABELS & set(LABEL.findall(labels or "")):
            breaches.append(f"{name}: label {sorted(owned)}")
        if types.get(family) == "counter" and not name.endswith(("_total", "_created")):
            breaches.append(f"{name}: a counter not named _total")
    return breaches


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

    # A restart: the counters start again at 0 (what Prometheus takes for a new process), and
    # what the job had finished before is not counted again; the gauges still show it.
    assert daemon.stop() == 0
    daemon.start()
    families = scrape(daemon.bfctl_json("system")["metrics_address"])
    assert value(families, "bulkforge_items", kind="download", state="done") == 4
    assert value(families, finished, kind="download", outcome="succeeded") == 0
    assert value(families, "bulkforge_bytes_done_total", kind="download") == 0
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


def test_the_exposition_keeps_prometheus_rules_in_both_formats(make_daemon, tmp_path):
    daemon = make_daemon("--metrics", "127.0.0.1:0", *FAST_RETRIES, "--read-timeout", "3600")
    daemon.start()
    two_jobs(daemon, tmp_path)
    address = daemon.bfctl_json("system")["metrics_address"]
    parsers = {
        TEXT: text_string_to_metric_families,
        OPENMETRICS: openmetrics.text_string_to_metric_families,
    }
    for accept, parse in parsers.items():
        text = scrape_text(address, accept)
        assert rule_breaches(text) == [], accept
        families = list(parse(text))
        assert len(families) >= 20, accept
        assert "_created" not in text, accept
        for family in families:
            assert not unlisted_label_values(family), (family.name, unlisted_label_values(family))
        live = next(f for f in families if f.name == "bulkforge_live_job_items")
        assert {s.labels["job_name"] for s in live.samples} == {"live"}, accept
        counters = {f.name for f in families if f.type == "counter"}
        assert {"bulkforge_items_finished", "bulkforge_bytes_done"} <= {
            re.sub("_total$", "", name) for name in counters
        }, accept
    served = set(re.findall(r"^# TYPE (\S+)", scrape_text(address), flags=re.M))
    assert readme_metrics() == served, (readme_metrics() - served, served - readme_metrics())
    assert daemon.stop() == 0


README = Path(__file__).resolve().parents[1] / "README.md"
# Labels whose values are a closed set the code chooses: the help text names each.
ENUMERATED = {"bulkforge_held_jobs_by_reason": "reason", "bulkforge_items_finished": "outcome"}
ENUMERATED["bulkforge_jobs"] = "state"


def unlisted_label_values(family) -> set[str]:
    label = ENUMERATED.get(family.name)
    if label is None:
        return set()
    values = {sample.labels[label] for sample in family.samples}
    assert values, family.name  # every value has its series, 0 too: the check can fail
    return {value for value in values if not re.search(rf"\b{value}\b", family.documentation)}


def readme_metrics() -> set[str]:
    """The metric names of the README's table (its first column), labels left off."""
    section = README.read_text().split("### Metrics", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `bulkforge_")]
    return {
        name for row in rows for name in re.findall(r"`(bulkforge_[a-z_]+)", row.split(" | ")[0])
    }


def test_a_help_text_that_leaves_out_a_label_value_is_caught():
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(
        "bulkforge_held_jobs_by_reason", "By why: memory.", labels=["reason"]
    )
    for reason in ("memory", "other"):
        family.add_metric([reason], 0)
    assert unlisted_label_values(family) == {"other"}


@pytest.mark.parametrize(
    ("exposition", "breach"),
    [
        ('# HELP a_total A.\n# TYPE a_total counter\na_total{job="x"} 1\n', "label ['job']"),
        ('# HELP a A.\n# TYPE a gauge\na{instance="x"} 1\n', "label ['instance']"),
        ("# HELP a A.\n# TYPE a counter\na 1\n", "a counter not named _total"),
        ("a 1\n", "a: no TYPE"),
        ("# TYPE a gauge\na 1\n", "a: TYPE without HELP"),
        ("# HELP a A.\n# TYPE a counter\na_total 1\na_created 2\n", None),
        ('# HELP a_total A.\n# TYPE a_total counter\na_total{job_name="x"} 1\n', None),
    ],
)
def test_the_rules_catch_what_they_name(exposition, breach):
    breaches = rule_breaches(exposition)
    if breach is None:
        assert breaches == []
    else:
        assert any(breach in said for said in breaches), breaches


def test_promtool_passes_a_real_scrape(make_daemon, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian: apt-get install prometheus)")
    daemon = make_daemon("--metrics", "127.0.0.1:0", *FAST_RETRIES, "--read-timeout", "3600")
    daemon.start()
    two_jobs(daemon, tmp_path)
    text = scrape_text(daemon.bfctl_json("system")["metrics_address"])
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stdout + checked.stderr, checked
    # promtool would say it of a counter without _total (so the check can fail).
    bad = text.replace("bulkforge_items_finished_total", "bulkforge_items_finished")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode != 0 and "_total" in checked.stdout + checked.stderr, checked
    assert daemon.stop() == 0


def test_every_dashboard_query_picks_the_instance_and_has_a_legend():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["instance"]["type"] == "query"
    assert "instance" in variables["instance"]["query"]["query"]
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    targets = [(panel["title"], t) for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(targets) >= 22
    for title, target in targets:
        assert target["legendFormat"].strip(), title
        # Every series selected is selected by the variable: bulkforge_… always followed by it.
        selectors = re.findall(r"bulkforge_[a-z_]+(\{[^}]*\})?", target["expr"])
        assert selectors and all('instance=~"$instance"' in s for s in selectors), target["expr"]
        assert not re.search(r"\bjob\b|exported_", target["expr"]), target["expr"]


# -- the counters' rule, case by case: they only grow within a bfd, whatever happens to jobs --


def view(job_id: int, kind: str = "download", bytes_done: int = 0, **counts: int) -> JobView:
    tones = {"download": file_machine.TONE, "generate": part_machine.TONE}[kind]
    row = JobRow(job_id, f"j{job_id}", kind, JobState.RUNNING, "{}", "/d", "", 0, 0)
    return JobView(row, counts=dict(counts), bytes_done=bytes_done, item_tones=dict(tones))


COUNTER_CASES = {
    # What a job had finished when bfd started was counted by the bfd that ran it.
    "jobs at start are not counted again": (
        [view(1, done=4, failed=1, bytes_done=400)],
        [("scrape", [view(1, done=6, failed=1, bytes_done=600)])],
        {("download", "succeeded"): 2},
        {"download": 200},
    ),
    "a job submitted and ended between scrapes counts whole": (
        [],
        [("scrape", [view(2, "generate", done=3, failed=1, bytes_done=30)])],
        {("generate", "succeeded"): 3, ("generate", "failed"): 1},
        {"generate": 30},
    ),
    "a removal keeps what the job did, also since the last scrape": (
        [],
        [("scrape", [view(3, done=2)]), ("remove", view(3, done=5, failed=1)), ("scrape", [])],
        {("download", "succeeded"): 5, ("download", "failed"): 1},
        {},
    ),
    "a scrape read before a removal does not count the job again": (
        [],
        [("remove", view(4, done=5)), ("scrape", [view(4, done=5)]), ("scrape", [])],
        {("download", "succeeded"): 5},
        {},
    ),
    "retried items count again when they end again": (
        [],
        [
            ("scrape", [view(5, done=1, failed=3)]),
            ("scrape", [view(5, done=1, queued=3)]),  # bfctl retry
            ("scrape", [view(5, done=3, failed=1)]),
        ],
        {("download", "succeeded"): 3, ("download", "failed"): 4},
        {},
    ),
    "bytes under way that fall back are not counted twice": (
        [],
        [
            ("scrape", [view(6, bytes_done=500)]),
            ("scrape", [view(6, bytes_done=100)]),  # a transfer restarted
            ("scrape", [view(6, bytes_done=700)]),
        ],
        {},
        {"download": 700},
    ),
    "skipped items are their own outcome": (
        [],
        [("scrape", [view(7, done=1, skipped=2)])],
        {("download", "succeeded"): 1, ("download", "skipped"): 2},
        {},
    ),
}


@pytest.mark.parametrize(("at_start", "events", "items", "done_bytes"),
                         COUNTER_CASES.values(), ids=COUNTER_CASES.keys())  # fmt: skip
def test_the_counters_only_grow(at_start, events, items, done_bytes):
    tones = {"download": file_machine.TONE, "generate": part_machine.TONE}
    finished = _Finished(tones, at_start)
    seen = []
    for what, given in events:
        if what == "scrape":
            finished.observe(given)
        else:
            finished.retire(given)
        seen.append(samples(finished))
    # Every series from the start (at 0 where nothing ended), none ever lower than before.
    expected = {("bulkforge_items_finished_total", k, o): 0 for k, o in
                [("download", "succeeded"), ("download", "skipped"), ("download", "failed"),
                 ("generate", "succeeded"), ("generate", "failed")]}  # fmt: skip
    expected |= {("bulkforge_bytes_done_total", kind, ""): 0 for kind in tones}
    expected |= {("bulkforge_items_finished_total", k, o): n for (k, o), n in items.items()}
    expected |= {("bulkforge_bytes_done_total", k, ""): n for k, n in done_bytes.items()}
    assert seen[-1] == expected
    for before, after in itertools.pairwise(seen):
        assert all(after[key] >= count for key, count in before.items())


def samples(finished: "_Finished") -> dict:
    return {(s.name, s.labels["kind"], s.labels.get("outcome", "")): s.value
            for family in finished.metrics() for s in family.samples}  # fmt: skip
