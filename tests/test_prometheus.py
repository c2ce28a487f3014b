"""A real Prometheus (2.42, /usr/bin/prometheus) scraping a real bfd: every query of the Grafana
dashboard and of the README returns data, no series of ours is relabelled by Prometheus, and
the counters of finished items only grow across a `bfctl remove`, where the gauges fall."""

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST_RETRIES, unavailable, wait_until
from test_metrics import two_jobs

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "packaging" / "grafana-dashboard.json"
README = ROOT / "README.md"
SCRAPE_S = 1
# For Grafana's $__rate_interval (at least four scrapes; more for a longer time range): a
# window that holds all of this test's work, so a rate of it is a number, however slow the run.
RATE_INTERVAL = "5m"


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def readme_exprs() -> list[str]:
    blocks = re.findall(r"```promql\n(.*?)```", README.read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


class Prometheus:
    """One Prometheus on 127.0.0.1 with its own temp dir, scraping bfd every second."""

    def __init__(self, root: Path, target: str):
        self.root = root
        self.target = target
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self) -> "Prometheus":
        config = self.root / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}\n"
            "scrape_configs:\n"
            "  - job_name: bfd\n"
            f"    static_configs: [{{targets: ['{self.target}']}}]\n"
        )
        # Prometheus cannot tell the port 0 picked: take a free one, and again if lost meanwhile.
        for _ in range(5):
            self.address = f"127.0.0.1:{free_port()}"
            log = (self.root / "prometheus.log").open("ab")
            self.proc = subprocess.Popen(
                [
                    shutil.which("prometheus") or "/usr/bin/prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
            )
            log.close()
            if self._ready():
                return self
        raise AssertionError(f"Prometheus did not start:\n{self.log_tail()}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"Prometheus not ready after 60 s:\n{self.log_tail()}")

    def query(self, expr: str) -> list[dict]:
        """The instant vector of expr now (a scalar as one sample), as the HTTP API gives it."""
        url = f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        assert body["status"] == "success", (expr, body)
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(expr)]

    def log_tail(self) -> str:
        path = self.root / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        unavailable("Prometheus is not installed (Debian: apt-get install prometheus)")
    return found


@pytest.mark.slow
def test_a_real_prometheus_runs_every_query_and_rates_hold_across_remove(
    prometheus_binary, make_daemon, tmp_path
):
    daemon = make_daemon("--metrics", "127.0.0.1:0", *FAST_RETRIES, "--read-timeout", "3600")
    daemon.start()
    target = daemon.bfctl_json("system")["metrics_address"]
    prometheus = Prometheus(tmp_path / "prometheus", target)
    prometheus.root.mkdir()
    try:
        prometheus.start()
        wait_until(lambda: prometheus.values('up{job="bfd"}') == [1.0], 60, "bfd scraped")
        run_jobs_and_check(daemon, prometheus, target, tmp_path)
    finally:
        prometheus.stop()
    assert daemon.stop() == 0, daemon.log_tail()


def run_jobs_and_check(daemon, prometheus: Prometheus, target: str, tmp_path: Path) -> None:
    """An ended job (4 done, 1 failed) and a live one (1 done), the first then removed."""
    two_jobs(daemon, tmp_path)
    finished = 'bulkforge_items_finished_total{kind="download",outcome="succeeded"}'
    wait_until(lambda: prometheus.values(finished) == [5.0], 60, "5 items seen finished")
    wait_until(lambda: prometheus.values("bulkforge_live_job_items"), 60, "a live job seen")

    # Every query of the dashboard (Grafana's variables as Grafana would put them) and of the
    # README returns data, and some of it a number.
    # (Grafana escapes a multi-value variable's regex characters, doubled in a PromQL string.)
    instance = re.escape(target).replace("\\", "\\\\")
    queries = [
        expr.replace("$instance", instance).replace("$__rate_interval", RATE_INTERVAL)
        for expr in dashboard_exprs()
    ] + readme_exprs()
    assert len(queries) >= 25 and not [q for q in queries if "$" in q]
    for expr in queries:
        values = prometheus.values(expr)
        assert values, f"no data for {expr}"
        assert any(math.isfinite(v) for v in values), f"{expr}: only {values}"
    # No series of ours was given Prometheus's exported_ labels: none is named job or instance.
    relabelled = '{__name__=~"bulkforge_.+", exported_job!=""} or {exported_instance!=""}'
    assert prometheus.query(relabelled) == []
    assert prometheus.values('count(bulkforge_live_job_items{job_name="live"})')[0] > 0

    # Remove the ended job: its items leave the gauges, while the counters keep what it did.
    # (A series no longer scraped is stale at once: the sum of none is nothing, hence or 0.)
    done_now = 'sum(bulkforge_items{kind="download",state="done"}) or vector(0)'
    assert prometheus.values(done_now) == [5.0]
    removed_at = time.time()
    assert daemon.bfctl("remove", "ended").returncode == 0, daemon.log_tail()
    wait_until(lambda: prometheus.values(done_now) == [1.0], 60, "the removal scraped")
    wait_until(lambda: time.time() > removed_at + 3 * SCRAPE_S, 30, "scrapes after it")
    # The gauges fell (so a deriv() of them went below 0, as the issue saw) …
    assert min(prometheus.values('deriv(bulkforge_items{state="done"}[5m])')) < 0
    # … and the counters did not: no reset, no negative rate, and still 5 succeeded.
    for counter in ("bulkforge_items_finished_total", "bulkforge_bytes_done_total"):
        assert prometheus.values(f"sum(resets({counter}[5m]))") == [0.0], counter
        assert min(prometheus.values(f"rate({counter}[5m])")) >= 0, counter
        assert min(prometheus.values(f"deriv({counter}[5m])")) >= 0, counter
    assert prometheus.values(finished) == [5.0]
    assert prometheus.values(finished.replace("succeeded", "failed")) == [1.0]
    increase = f"sum(increase({finished}[5m]))"
    assert prometheus.values(increase)[0] >= 4.9  # extrapolated: about 5, never negative
