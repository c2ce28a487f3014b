"""Numbers never mislead: sizes in one style, percentages that never round to all or none,
rates that never go negative. Each rule is tested with a generated table, and the messages
of bfd and bfctl are scanned for the forms the rules forbid."""

import ast
import io
import itertools
import random
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import make_dataset, manifest_rows, wait_until, write_manifest
from origin import Fault, FaultKind, Origin

from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.progress import Rates
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import (
    duration_text,
    number_text,
    parse_size,
    percent_text,
    rate_text,
    size_text,
    sizes_apart,
)

ROOT = Path(__file__).resolve().parent.parent
SHOWN_SIZE = re.compile(r"^(\d+) B$|^(\d+(?:\.\d+)?) ([kMGTPE])B$")
# A byte count people must count digits of, or a unit of another style, or a zero that is
# not one ("0.0 MB" of 40 kB). "(1,000,001 B)" right after a size is the exact form a
# mismatch adds where two sizes would read alike.
EXACT_AFTER_SIZE = re.compile(r"\d+(?:\.\d+)? [kMGTPE]B \(\d[\d,]* B\)")
RAW_COUNT = re.compile(r"\b(\d[\d,]*) (?:bytes|B)\b")
OTHER_STYLE = re.compile(r"\d\s?[KMGTPE]iB\b")
FALSE_ZERO = re.compile(r"\b0\.0+ [kMGTPE]?i?B\b")


def generated_sizes(count: int = 4000) -> list[int]:
    rng = random.Random(25)
    edges = [0, 1, 999, 1000, 1023, 1024, 9_994, 9_995, 9_999, 99_949, 99_950, 999_499]
    edges += [999_500, 999_999, 2 * 10**6, 2 * 2**20, 10**18, 10**21 - 1]
    edges += [10**k + d for k in range(1, 19) for d in (-1, 0, 1)]
    return edges + [int(10 ** rng.uniform(0, 19)) for _ in range(count)]


def test_a_size_reads_in_three_figures_of_one_decimal_unit_and_parses_back():
    for count in generated_sizes():
        check_size(count)


def check_size(count: int) -> None:
    text = size_text(count)
    match = SHOWN_SIZE.match(text)
    assert match, text
    if match[1] is not None:
        assert int(match[1]) == count and count < 1000, text
        return
    mantissa = float(match[2])
    assert 1 <= mantissa < 1000 or match[3] == "E", text
    assert len(match[2].replace(".", "").lstrip("0")) == 3 or match[3] == "E", text
    # What people read is what they may give back: the same decimal units, within rounding.
    assert abs(parse_size(text.replace(" ", "")) - count) <= 0.005 * count, text
    assert not FALSE_ZERO.search(text)


def test_sizes_that_would_read_alike_carry_their_exact_bytes():
    assert sizes_apart(2_000_000, 2_000_001) == ("2.00 MB (2,000,000 B)", "2.00 MB (2,000,001 B)")
    assert sizes_apart(2_000_000, 3_000_000) == ("2.00 MB", "3.00 MB")
    assert sizes_apart(512, 513) == ("512 B", "513 B")


@pytest.mark.parametrize("bytes_per_s", [-231_424.0, -1.0, 0.0, 0.4, 231_424.0])
def test_a_rate_is_never_negative(bytes_per_s):
    assert not rate_text(bytes_per_s).startswith("-")
    assert rate_text(bytes_per_s) == f"{size_text(max(0.0, bytes_per_s))}/s"


def percent_cases() -> list[tuple[int, int]]:
    rng = random.Random(99)
    cases = [(9998, 10000), (1, 10000), (99_999, 100_000), (1, 3), (2, 3), (0, 7), (7, 7)]
    for whole in (1, 2, 3, 999, 1000, 1001, 10_000, 12_345, 10**9, 10**15):
        cases += [(0, whole), (whole, whole), (1, whole), (whole - 1, whole)]
        cases += [(rng.randint(0, whole), whole) for _ in range(40)]
    return cases


@pytest.mark.parametrize("digits", [0, 1, 2])
def test_a_percentage_is_all_or_none_only_when_exactly_so(digits):
    full, none = f"{100:.{digits}f}%", f"{0:.{digits}f}%"
    step = 10.0**-digits
    for part, whole in percent_cases():
        text = percent_text(part, whole, digits)
        assert (text == full) == (part == whole), (part, whole, text)
        assert (text == none) == (part == 0), (part, whole, text)
        shown = float(text.strip("<>%"))
        # Within one step of the truth, and on the side that is true for the bounds.
        assert abs(shown - 100 * part / whole) <= step, (part, whole, text)
        if text.startswith(">"):
            assert 100 * part / whole > shown
        if text.startswith("<"):
            assert 100 * part / whole < shown
    assert percent_text(9998, 10000) == ">99.9%"
    # Past all, or below none (a count that overshot): never shown as exactly either.
    assert percent_text(1_000_001, 1_000_000) == ">100.0%"
    assert percent_text(-1, 1_000_000) == "<0.0%"
    assert percent_text(5, 0) == "-"


# (seconds, bytes done, items finished) fed one by one; what each pace must say.
RESTART_TABLE = {
    "steady": ([(0, 0, 0), (1, 100, 1), (2, 200, 2)], [None, (100, 1, False), (100, 1, False)]),
    "an origin ignored Range: bytes fall back": (
        [(0, 0, 0), (1, 1_000_000, 0), (2, 231_424, 0), (3, 431_424, 0), (4, 631_424, 0)],
        [None, (1e6, 0, False), None, (200_000, 0, True), (200_000, 0, True)],
    ),
    "failed items queued again": (
        [(0, 0, 10), (1, 0, 4), (2, 0, 6)],
        [None, None, (0, 2, True)],
    ),
    "two resets in a row": (
        [(0, 500, 0), (1, 100, 0), (2, 50, 0), (3, 150, 0)],
        [None, None, None, (100, 0, True)],
    ),
    "no time passed": ([(5, 0, 0), (5, 10, 1)], [None, None]),
}


@pytest.mark.parametrize("name", RESTART_TABLE)
def test_rates_are_never_negative_and_a_fall_back_says_restarted(name):
    samples, expected = RESTART_TABLE[name]
    rates = Rates()
    for sample, want in zip(samples, expected, strict=True):
        pace = rates.add_sample(sample)
        if want is None:
            assert pace.bytes_per_s < 0 and pace.items_per_s < 0, (sample, pace)
            continue
        assert (pace.bytes_per_s, pace.items_per_s, pace.restarted) == pytest.approx(want)


def test_restarted_lasts_until_the_window_moves_past_the_restart():
    rates = Rates(window=3)
    seen = [rates.add_sample(s).restarted for s in [(0, 9, 0), (1, 1, 0), (2, 2, 0), (3, 3, 0)]]
    assert seen == [False, True, True, True]
    assert rates.add_sample((4, 4, 0)).restarted is False  # (1, 1, 0) left the window


def test_random_walks_of_samples_never_give_a_negative_rate():
    rng = random.Random(7)
    for _ in range(300):
        rates, done, items, now = Rates(window=rng.randint(2, 12)), 0, 0, 0.0
        for _ in range(60):
            done = max(0, done + rng.randint(-3_000_000, 5_000_000))
            items = max(0, items + rng.randint(-3, 5))
            now += rng.choice([0, 0.5, 1])
            pace = rates.add_sample((now, done, items))
            assert pace.bytes_per_s >= 0 or pace.bytes_per_s == -1.0
            assert pace.items_per_s >= 0 or pace.items_per_s == -1.0


# -- the messages themselves --------------------------------------------------------------------

# Byte lengths of names and keys: bounded well below 1 KiB, so their count is the clear form.
SMALL_BOUNDS = {"MAX_KEY_BYTES", "MAX_DEST_BYTES", "NAME_MAX", "MAX_COMPONENT_BYTES"}
# daemon/generator/ is another helper's this turn; its sizes (widths.py, kind.py) move to
# size_text when that work lands, and this exemption goes.
NOT_YET: tuple[str, ...] = ()


# A log line's or a %-format's placeholder before a unit: "{} bytes", "{:,} bytes", "%d bytes".
LOGGED_COUNT = re.compile(r"\{[^}]*\} (bytes|[KMGTPE]iB)\b|%d bytes")


def message_sources() -> list[Path]:
    files = sorted([*(ROOT / "daemon").rglob("*.py"), *(ROOT / "client").rglob("*.py")])
    return [f for f in files if not str(f.relative_to(ROOT)).startswith(NOT_YET)]


def raw_counts_in(path: Path) -> list[str]:
    """Places that put a number straight before 'bytes' or a unit in a string people read."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for value, after in itertools.pairwise(parts):
                if not (isinstance(value, ast.FormattedValue) and isinstance(after, ast.Constant)):
                    continue
                expression = ast.unparse(value.value)
                unit_after = re.match(r"\s*(bytes|B|[KMGTPE]i?B)\b", str(after.value))
                if unit_after and expression not in SMALL_BOUNDS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {expression}")
        elif isinstance(node, ast.Constant) and LOGGED_COUNT.search(str(node.value)):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    return found


def test_no_message_of_bfd_or_bfctl_formats_a_size_but_through_size_text():
    found = [place for path in message_sources() for place in raw_counts_in(path)]
    assert not found, "\n".join(found)


# A share formatted in place ("{x:.1%}", "{100 * x:.1f}%"): it would round 99.98% up to 100.0%.
SHARE_IN_PLACE = re.compile(r"\{[^{}]*:[^{}]*%\}|\{[^{}]*:[^{}]*f\}%")


def test_no_message_formats_a_percentage_but_through_percent_text():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in message_sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SHARE_IN_PLACE.search(line)
    ]
    assert not found, "\n".join(found)


# A number formatted in place, fixed-point or whole, without thousands ('{rate:.1f}', '{n:d}'):
# it reads '201396.1'. Counts, rates and durations go through proto/units.py instead.
FIXED_IN_PLACE = re.compile(r"^\d*(\.\d+)?[fd]$")


def numbers_formatted_in_place(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.FormattedValue) or node.format_spec is None:
            continue
        spec = ast.unparse(node.format_spec).removeprefix("f").strip("'\"")
        expression = ast.unparse(node.value)
        # Constants (a timeout in a message) and zero-padded names (f00001.bin) are no count.
        if FIXED_IN_PLACE.match(spec) and not expression.isupper() and not spec.startswith("0"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {{{expression}:{spec}}}")
    return found


def test_no_rendering_of_bfctl_formats_a_number_in_place():
    found = [
        hit
        for path in sorted((ROOT / "client").rglob("*.py"))
        for hit in numbers_formatted_in_place(path)
    ]
    assert not found, "\n".join(found)


def check_readable(text: str) -> None:
    cleared = EXACT_AFTER_SIZE.sub("", text)
    for match in RAW_COUNT.finditer(cleared):
        assert int(match[1].replace(",", "")) <= 1024, (match[0], text)
    assert not OTHER_STYLE.search(cleared), text
    assert not FALSE_ZERO.search(cleared), text


def rendered(show, *args) -> str:
    """What a bfctl rendering prints, wide enough that rich wraps nothing."""
    from rich.console import Console

    from bulkforge.client import render

    out = io.StringIO()
    console = render.console
    render.console = lambda stderr=False: Console(file=out, width=300, highlight=False)
    try:
        with redirect_stdout(out):
            show(*args)
    finally:
        render.console = console
    return out.getvalue()


def live(view) -> str:
    """The live view of `watch` on a terminal, as text."""
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=300, highlight=False).print(view)
    return out.getvalue()


def sample_job(rng: random.Random) -> pb.Job:
    total = rng.choice([2_000_000, 10**9 + 7, 1_999_999, 40_000])
    done = rng.choice([0, 1, total - 1, total, rng.randint(0, total)])
    job = pb.Job(name="j", kind="download", state="running", tone="active", dest="/d")
    job.bytes_done, job.bytes_total, job.bytes_total_known = done, total, True
    job.items_total, job.succeeded, job.failed = 10_000, 9_998, 2
    job.finished = 10_000
    for index in range(3):
        job.batches.add(index=index, state="active", tone="active", files=3, bytes=done + index)
    return job


@pytest.mark.parametrize("seed", range(40))
def test_bfctl_renderings_show_sizes_rates_and_shares_in_one_readable_style(seed):
    from bulkforge.client import progress, render

    rng = random.Random(seed)
    job = sample_job(rng)
    space = rng.choice([2_000_000, 931 * 2**30, 10**13])
    plan = pb.PlanResponse(files=10, bytes=space * 3 - 1, batch_limit=int(space * 0.9), space=space)
    plan.space_from = "--space"
    plan.safety_margin = 0.9
    plan.peak_bytes = space - 1
    plan.batches.add(index=0, files=5, bytes=space - 1, cumulative_files=5, cumulative_bytes=space)
    stats = pb.StatsResponse(job=job, elapsed_s=12.0, items_per_s=3.5, bytes_per_s=space / 7)
    stats.throughput.add(start_ms=0, items=3, bytes=rng.randint(0, 10**9), items_per_s=1.0)
    system = pb.SystemResponse(rss_bytes=rng.randint(0, 10**10), memory_cap=2 * 2**30)
    system.bandwidth, system.disk_threshold = rng.randint(0, 10**9), 0.9999
    system.commits, system.commit_p99_ms = rng.randint(0, 10**8), rng.uniform(0, 9000)
    system.pid, system.uptime_s = rng.randint(1000, 4 * 10**6), rng.uniform(0, 10**6)
    system.active_transfers, system.max_connections = rng.randint(0, 5000), 1024
    system.disks.add(path="/d", total_bytes=space, free_bytes=rng.choice([0, 1, space // 3]))
    analysis = pb.AnalyzeResponse(files=3, bytes=space, batch_limit=space // 2)
    event = pb.WatchEvent(job=job, bytes_per_s=231_424, items_per_s=1.5, eta_s=3, restarted=True)
    outputs = [
        rendered(render.print_job, job),
        rendered(render.print_plan, plan),
        rendered(render.print_stats, stats),
        rendered(render.print_system, system),
        rendered(render.print_analysis, analysis),
        live(progress.live_view(event)),
        progress.plain_line(event),
    ]
    for text in outputs:
        check_readable(text)
        check_counts(text)
    # Only all of the bytes is 100.0%: 9,998 of 10,000 items, one byte short, is not.
    assert ("(100.0%)" in outputs[0]) == (job.bytes_done == job.bytes_total), outputs[0]
    assert "100.0% succeeded" not in outputs[2] and ">99.9% succeeded" in outputs[2]
    assert "restarted" in outputs[-1] and "restarted" in outputs[-2]
    assert "2MB" not in outputs[1] and ("2.00 MB" in outputs[1]) == (space == 2_000_000)


# -- counts, rates and durations: separated, three figures, named by their unit ------------------

# A number in a rendering: digits (maybe comma-grouped), maybe a fraction. Not part of a word,
# a path or a clock (those are stripped first).
NUMBER = re.compile(r"(?<![\w.,/:-])(\d[\d,]*)(?:\.(\d+))?(?![\w])(%?)")
CLOCKS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\b\d\d:\d\d:\d\d\b|\d+(?:\.\d+){3}(?::\d+)?")


def check_counts(text: str) -> None:
    """Every number people read is thousands-separated from 1,000 and carries at most three
    figures when it has a fraction ('201,396', never '201396.1'; '6.40', never '100200.0').
    A pid is an identifier, not a count: its line is left out."""
    text = CLOCKS.sub("", "\n".join(line for line in text.splitlines() if "pid" not in line))
    for match in NUMBER.finditer(text):
        whole, fraction, percent = match.groups()
        if "," in whole:
            assert re.fullmatch(r"\d{1,3}(,\d{3})+", whole), (match[0], text)
        else:
            assert int(whole) < 1000, (f"{match[0]} has no thousands separator", text)
        if fraction and not percent:  # percent_text has its own rule: 100.0% is exactly all
            figures = (whole.replace(",", "") + fraction).lstrip("0")
            assert len(figures) <= 3, (f"{match[0]} has more than three figures", text)


def test_the_count_check_catches_what_it_names():
    for bad in ("on average 201396.1 items/s", "10020 | 100200.0", "items 7000/7000"):
        with pytest.raises(AssertionError):
            check_counts(bad)
    check_counts("2026-12-07 22:48:19  201,396 rows/s  6.40 parts/s  99.9%  100.0%  127.0.0.1:80")


def generated_rates(count: int = 3000) -> list[float]:
    rng = random.Random(31)
    edges = [0.0, 1e-9, 0.004, 0.005, 0.0051, 0.4, 6.4, 9.994, 9.996, 18.0, 99.94, 99.96]
    edges += [100200.0, 201396.1, 999.5, 1e6 - 0.5, 1e12 + 0.3]
    return edges + [10 ** rng.uniform(-4, 13) for _ in range(count)]


def test_a_rate_reads_in_three_figures_thousands_separated_and_within_rounding():
    for value in generated_rates():
        text = number_text(value)
        check_counts(text.removeprefix("<"))
        if text == "<0.01":
            assert 0 < value < 0.005, value
            continue
        shown_value = float(text.replace(",", ""))
        assert abs(shown_value - value) <= max(0.005, 0.005 * value), (value, text)
        if value >= 0.005:
            assert shown_value > 0, (value, text)  # nothing that moved reads as none
    assert number_text(0) == number_text(-3) == "0"


def generated_durations(count: int = 2000) -> list[float]:
    rng = random.Random(32)
    edges = [0.0, 0.04, 0.05, 0.4, 0.49, 0.5, 9.94, 9.96, 59.4, 59.6, 3599.4, 3599.6, 86_400]
    return edges + [10 ** rng.uniform(-3, 6) for _ in range(count)]


DURATION = re.compile(r"(\d+\.\d) s|(\d+) s|(\d+)m(\d\d)s|(\d+)h(\d\d)m")


def test_a_duration_reads_within_its_rounding_and_a_short_one_is_never_zero():
    for seconds in generated_durations():
        text = duration_text(seconds)
        match = DURATION.fullmatch(text)
        assert match, (seconds, text)
        tenths, whole, minutes, secs, hours, hour_minutes = match.groups()
        if tenths is not None:
            shown_s, step = float(tenths), 0.05
        elif whole is not None:
            shown_s, step = int(whole), 0.5
            assert 10 <= shown_s < 60, (seconds, text)
        elif minutes is not None:
            shown_s, step = int(minutes) * 60 + int(secs), 0.5
            assert 1 <= int(minutes) < 60 and int(secs) < 60, (seconds, text)
        else:
            shown_s, step = int(hours) * 3600 + int(hour_minutes) * 60, 30.5
            assert int(hour_minutes) < 60, (seconds, text)
        assert abs(shown_s - seconds) <= step + 1e-9, (seconds, text)
        if seconds >= 0.05:
            assert shown_s > 0, (seconds, text)
    assert duration_text(0.4) == "0.4 s" and duration_text(-1) == "?"


# Each kind: what its items are, and what its stats' throughput counts.
KIND_UNITS = {
    "download": ("files", "files"),
    "scenes": ("items", "items"),
    "clean": ("zips", "zips"),
    "generate": ("parts", "rows"),
}
ITEM_WORDS = {"files", "items", "zips", "parts"}


def kind_job(kind: str, state: str = "running") -> pb.Job:
    unit = KIND_UNITS[kind][0]
    job = pb.Job(name="j", kind=kind, state=state, tone="active", dest="/d", item_unit=unit)
    job.ended = state in TERMINAL
    job.items_total, job.finished, job.succeeded, job.failed = 65_536, 12_345, 12_340, 5
    job.retrying, job.bytes_done = 3, 635_000
    job.states.add(state="done", count=12_340, tone="ok")
    job.states.add(state="failed", count=5, tone="bad")
    if kind == "generate":
        job.tables.add(name="t", rows_done=655_360, rows_total=1_310_720, parts_done=35)
        job.tables[0].parts_total, job.tables[0].rows_per_s = 70, 201_396.1
    if kind == "scenes":
        job.batch_unit = "shard"
        job.batches.add(index=0, state="written", tone="ok", files=10_020, bytes=10**8)
        job.batches[0].settled, job.batches[0].started_at_ms = True, 1_000
        job.batches[0].finished_at_ms = 1_100
    return job


@pytest.mark.parametrize("kind", KIND_UNITS)
def test_every_rendering_names_the_kinds_unit_and_separates_its_numbers(kind):
    """The trial's case: a generate job read 'items 70/70' in status, '18 items/s' in watch and
    '201396.1 items/s' in stats. Each number now names its own unit, the same per kind."""
    from bulkforge.client import progress, render

    unit, counted = KIND_UNITS[kind]
    job = kind_job(kind)
    stats = pb.StatsResponse(job=job, elapsed_s=3.25, items_per_s=201_396.1, unit=counted)
    stats.bytes_per_s, stats.bucket_s = 19_100_000, 1
    stats.throughput.add(start_ms=0, items=10_020, bytes=10**6, items_per_s=100_200.0)
    stats.throughput.add(start_ms=1000, items=207_280, bytes=10**7, items_per_s=207_280.0)
    failures = pb.FailuresResponse(total=12_345, item_unit=unit)
    failures.groups.add(step="fetch", error_class="http_5xx", count=12_345, sample="503")
    failures.failures.add(item="x", step="fetch", error_class="http_5xx", attempts=3)
    event = pb.WatchEvent(job=job, bytes_per_s=231_424, items_per_s=18.04, eta_s=4000)
    outputs = {
        "status": rendered(render.print_job, job),
        "list": rendered(render.print_jobs, [job]),
        "stats": rendered(render.print_stats, stats),
        "failures": rendered(render.print_failures, failures, "j"),
        "watch": live(progress.live_view(event)),
        "watch, plain": progress.plain_line(event),
    }
    for name, text in outputs.items():
        check_counts(text)
        check_readable(text)
        words = set(re.findall(r"[a-z]+", text))
        assert unit in words, (name, text)
        assert not (ITEM_WORDS - {unit}) & words, (name, text)
    assert f"{unit}/s" in outputs["watch"] and f"{unit}/s" in outputs["watch, plain"]
    assert f"on average 201,396 {counted}/s" in outputs["stats"], outputs["stats"]
    assert "100,200" in outputs["stats"] and "207,280" in outputs["stats"]
    assert f"12,345/65,536 {unit}" in outputs["list"]


def test_a_short_jobs_stats_show_its_sub_second_elapsed_time():
    from bulkforge.client import render

    job = kind_job("download", "completed")
    stats = pb.StatsResponse(job=job, elapsed_s=0.4, items_per_s=2.5, bytes_per_s=7.6e6)
    stats.unit = "files"
    text = rendered(render.print_stats, stats)
    assert "elapsed 0.4 s, on average 2.50 files/s   7.60 MB/s" in text, text


@pytest.mark.parametrize("state", list(JobState))
def test_so_far_only_while_a_job_can_still_grow(state):
    """A size without a known total is 'so far' while more may come; an ended job's bytes are
    all it wrote (the trial saw completed jobs listed as '635 kB so far')."""
    from bulkforge.client import render

    for kind in KIND_UNITS:
        job = kind_job(kind, state)
        for text in (rendered(render.print_jobs, [job]), rendered(render.print_job, job)):
            assert "635 kB" in text, text
            assert ("so far" in text) == (state not in TERMINAL), (state, text)


def test_a_plan_for_space_2mb_speaks_in_the_units_it_was_given():
    from bulkforge.client import render

    plan = pb.PlanResponse(files=1, bytes=900_000, batch_limit=1_800_000, space=2_000_000)
    plan.space_from, plan.safety_margin = "--space", 0.9
    text = rendered(render.print_plan, plan)
    assert "of at most 1.80 MB (0.9 of 2.00 MB, --space)" in text, text
    assert "MiB" not in text


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# -- a watch across a restart, with the real bfd and an origin that ignores Range ---------------


def test_a_resume_answered_from_zero_watches_as_restarted_and_never_negative(
    patient_daemon, tmp_path
):
    daemon = patient_daemon
    dataset = make_dataset(1, 2_000_000, seed=5)
    data = dataset.files
    (name,) = data
    partial = tmp_path / "dest" / f"{name}.partial"
    stall = Fault(FaultKind.STALL, after_bytes=1_000_000, seconds=3600)
    with Origin(data, {name: stall}) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.submit("norange", manifest, tmp_path / "dest")
        wait_until(lambda: partial.exists() and partial.stat().st_size >= 1_000_000)
        assert daemon.bfctl("pause", "norange").returncode == 0
        origin.set_fault(name, Fault(FaultKind.IGNORE_RANGE))
        # Slow enough that the fall from the kept 1 MB to the first bytes again is seen.
        daemon.bfctl_json("system", "--set", "bandwidth=400kB/s")
        stream = daemon.stub.Watch(pb.WatchRequest(name="norange", interval_s=0.1))
        assert next(stream).job.state == "paused"
        assert daemon.bfctl("resume", "norange").returncode == 0
        events = []
        for event in stream:
            events.append(event)
            if event.final:
                break
    assert events[-1].job.state == "completed", events[-1]
    for event in events:
        # Measured rates are never below zero; -1 is the "not measured yet" of the wire.
        assert event.bytes_per_s >= 0 or event.bytes_per_s == -1.0, event
        assert event.items_per_s >= 0 or event.items_per_s == -1.0, event
    assert any(event.restarted for event in events), [e.job.bytes_done for e in events]
    assert "restarted from zero" in daemon.log_tail(200)


def test_bfctl_plan_and_its_refusals_speak_in_the_units_space_was_given_in(daemon, tmp_path):
    """The issue's case: `--space 2MB` read back as "0.9 of 1.9 MiB". Now the flag's units."""
    rows = [
        {"url": f"http://127.0.0.1:9/f{i}", "path": f"f{i}", "size": 300_000 + i} for i in range(9)
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    done = daemon.bfctl("plan", "--manifest", str(manifest), "--space", "2MB")
    assert done.returncode == 0, done.stderr
    assert "at most 1.80 MB (0.9 of 2.00 MB, given)" in done.stdout, done.stdout
    check_readable(done.stdout)
    small = daemon.bfctl("plan", "--manifest", str(manifest), "--space", "200kB")
    assert small.returncode == 1, small.stdout
    assert "200 kB x margin 0.9 = 180 kB per batch" in small.stderr, small.stderr
    assert "(300 kB)" in small.stderr
    check_readable(small.stderr)


GENERATE_SPEC = """
[tables.t]
scale = 1.0
[tables.t.columns]
id = { kind = "sequence", primary_key = true }
word = { kind = "word" }
"""


def test_a_generate_job_reads_in_parts_and_rows_through_the_real_bfd(daemon, tmp_path):
    """status, list and stats of a finished generate job as bfctl prints them: its items are
    parts, its throughput rows, every count separated, no 'so far', no '0s' elapsed."""
    spec = tmp_path / "t.toml"
    spec.write_text(GENERATE_SPEC)
    submitted = daemon.bfctl(
        "submit", "generate", "g", "--spec", str(spec), "--rows", "24000",
        "--chunk-rows", "2000", "--dest", str(tmp_path / "out"),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert daemon.wait_state("g", {"completed", "failed"}, timeout=180).state == "completed"
    status = daemon.bfctl_json("status", "g")
    assert (status["item_unit"], status["ended"], status["items_total"]) == ("parts", True, 12)
    stats = daemon.bfctl_json("stats", "g")
    assert stats["unit"] == "rows" and sum(b["items"] for b in stats["throughput"]) == 24_000
    # The average is over the real elapsed time, not one rounded to whole seconds.
    assert stats["items_per_s"] * stats["elapsed_s"] == pytest.approx(24_000)
    texts = {verb: daemon.bfctl(verb, *(["g"] if verb != "list" else [])) for verb in VERBS}
    for verb, done in texts.items():
        assert done.returncode == 0, (verb, done.stderr)
        check_counts(done.stdout)
        check_readable(done.stdout)
        assert "so far" not in done.stdout, (verb, done.stdout)
        assert not re.search(r"\bitems\b", done.stdout), (verb, done.stdout)
    assert "12/12 finished" in texts["status"].stdout and "12/12 parts" in texts["list"].stdout
    assert "24,000" in texts["stats"].stdout and " rows/s" in texts["stats"].stdout
    assert not re.search(r"elapsed 0\.0 s|elapsed 0s", texts["stats"].stdout), texts["stats"].stdout
    removed = daemon.bfctl("remove", "g")
    assert removed.returncode == 0 and "(completed, 12 parts)" in removed.stdout, removed


VERBS = ("status", "list", "stats")
