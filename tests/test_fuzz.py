"""Fuzz one real bfd: every RPC's request, manifests, scenes inputs and generator specs.

What it holds bfd to, whatever the input (issue 16):
- no answer is INTERNAL or UNKNOWN, and bfd is alive after every request;
- a refusal carries a status of the contract (proto/bulkforge/v1/bulkforge.proto) and a
  message a person can act on, short enough to travel in a gRPC trailer (~2 KB);
- nothing is created outside the dests of accepted work, all inside the one data root bfd
  was given: `..`, a symlink leading out, /proc/self/cwd and system directories included.

One bfd serves the module, so an example costs a request, not a start. Examples are
derandomized (the same ones on every run); how many run per input kind is EXAMPLES. The jobs
the fuzz gets accepted are made up by it (`fz-…`) and cancelled at once; destructive verbs
meet only those and the seed jobs the module submits itself.
"""

import contextlib
import copy
import csv
import io
import itertools
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import AWS_ENV, FAST_RETRIES, Daemon, library_words
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulkforge.daemon.api.status import MAX_MESSAGE_BYTES
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import LIMITS

pytestmark = pytest.mark.slow

# Examples per RPC (each of the 18), per manifest format, and for scenes inputs and specs.
EXAMPLES = {"rpc": 40, "manifest": 80, "scenes": 80, "spec": 150}


def fuzz(kind: str) -> settings:
    return settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# Loopback port 9: nothing listens there, so whatever bfd accepts fails fast and stays local.
DEAD = "127.0.0.1:9"
SERVICE = pb.DESCRIPTOR.services_by_name["Bulkforge"]
# The verbs that end or forget jobs run last, so the others still meet the seed jobs.
LAST = ["Cancel", "Remove"]
METHODS = [m.name for m in SERVICE.methods if m.name not in LAST] + LAST
SEEDS = ("fz-download", "fz-batched", "fz-scenes", "fz-clean", "fz-generate")
# The statuses of the contract; anything else (INTERNAL, UNKNOWN, a transport's) fails.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
BAD_INPUT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
# What a refusal says past its bound: "… (1.23 MB, cut)".
MAX_DETAILS_BYTES = MAX_MESSAGE_BYTES + 40
# Words only a bug or the transport would put in a refusal.
NOT_FOR_PEOPLE = ("Traceback", "internal error", "errors.pydantic.dev", "Stream removed")
SYSTEM_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/etc", "/run", "/sys", "/")


# -- the sandbox and the daemon ----------------------------------------------------------------


class Sandbox:
    """The tree bfd is fuzzed in, what it held before, and the dests accepted work may fill."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.data = self.root / "data"  # bfd's only --data-root
        self.outside = self.root / "outside"  # beside it: reached by `..` and by data/link
        self.inputs = self.root / "inputs"  # what the test writes: manifests, inputs
        self.cwd = self.root / "cwd"  # bfd's working directory: what /proc/self/cwd names
        # The first name under a system directory that a fuzzed path names.
        self.marker = f"bf-fuzz-{os.getpid()}"
        for directory in (self.data, self.outside, self.inputs, self.cwd):
            directory.mkdir()
        (self.data / "link").symlink_to(self.outside)
        self.accepted: set[Path] = set()
        self.examples: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # "Submit INVALID_ARGUMENT": how many
        self._numbers = itertools.count()
        self._before: set[Path] = set()

    def baseline(self) -> None:
        """What is there before the fuzz: bfd's log and whatever it made at start."""
        self._before = self.tree()

    def tree(self) -> set[Path]:
        """Every path under the root but bfd's state and the test's own inputs."""
        found = set()
        for top, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if Path(top, d) not in (self.root / "state", self.inputs)]
            found.update(Path(top, name) for name in dirs + files)
        return found

    def allow(self, dest: str) -> None:
        self.accepted.add(Path(os.path.realpath(dest)))

    def escaped(self) -> list[str]:
        """Paths that appeared outside every accepted dest, and system dirs' marker paths.

        A dest's missing parents are made with it, so they count as its own. Each call
        looks only at what appeared since the last, so a failure names its own example.
        """
        now = self.tree()
        new, self._before = now - self._before, now
        outside = [
            str(path)
            for path in new
            if not any(
                path in (dest, *dest.parents) or dest in path.parents for dest in self.accepted
            )
        ]
        marked = [f"{d.rstrip('/')}/{self.marker}" for d in SYSTEM_DIRS]
        return sorted(outside + [path for path in marked if os.path.lexists(path)])

    def unique(self, what: str) -> str:
        return f"fz-{what}-{next(self._numbers)}"

    def fresh_dest(self) -> Path:
        return self.data / self.unique("dest")

    def write(self, suffix: str, content: bytes) -> Path:
        path = self.inputs / f"{self.unique('in')}{suffix}"
        path.write_bytes(content)
        return path


class Fuzzed:
    """The module's bfd and its sandbox; every request goes through `call`."""

    def __init__(self, daemon: Daemon, box: Sandbox):
        self.daemon = daemon
        self.box = box
        self.limits: dict[str, str] = {}

    def call(
        self, method: str, request: Message, label: str = ""
    ) -> tuple[Message | None, grpc.RpcError | None]:
        """The answer or the refusal, checked against the rules; bfd must still be alive.

        Answers are counted by label (the method's name unless given) and status.
        """
        rpc = getattr(self.daemon.stub, method)
        answer, refusal = None, None
        try:
            if method == "Watch":
                stream = rpc(request, timeout=120)
                answer = next(stream)
                stream.cancel()
            else:
                answer = rpc(request, timeout=120)
        except grpc.RpcError as error:
            refusal = error
            check_refusal(method, error)
        assert self.daemon.proc is not None and self.daemon.proc.poll() is None, (
            f"bfd died answering {method}:\n{self.daemon.log_tail()}"
        )
        outcome = refusal.code().name if refusal is not None else "OK"
        self.box.outcomes[f"{label or method} {outcome}"] += 1
        if answer is not None:
            self._accepted(method, request)
        return answer, refusal

    def _accepted(self, method: str, request: Message) -> None:
        """Note where accepted work may write; stop a submitted job at once."""
        if method == "Submit":
            kind = request.WhichOneof("spec")
            self.box.allow(getattr(request, kind).dest)
            self.call("Cancel", pb.JobRef(name=request.name))
        elif method in ("Export", "Swap") and request.dest:
            self.box.allow(request.dest)
        elif method == "System" and request.set:
            # What the fuzz set stays between examples, but never many workers on 2 cores.
            self.daemon.stub.System(pb.SystemRequest(set=self.limits), timeout=60)

    def submit(self, label: str, **spec: Message) -> tuple[Message | None, grpc.RpcError | None]:
        request = pb.SubmitRequest(name=self.box.unique("job"), **spec)
        return self.call("Submit", request, label)

    def check_escapes(self, request: Message) -> None:
        escaped = self.box.escaped()
        assert not escaped, (
            f"bfd created paths outside every accepted dest: {escaped[:5]}, "
            f"answering {str(request)[:1000]}"
        )


def check_refusal(method: str, error: grpc.RpcError) -> None:
    code, details = error.code(), error.details() or ""
    assert code in REFUSALS, f"{method} answered {code}: {details[:500]}"
    assert details.strip(), f"{method} refused with {code} and no message"
    assert len(details.encode()) <= MAX_DETAILS_BYTES, (
        f"{method} refused with {len(details.encode()):,} bytes: {details[:200]}"
    )
    assert not any(words in details for words in NOT_FOR_PEOPLE), details[:500]
    assert not library_words(details), f"{library_words(details)}: {details[:500]}"


@pytest.fixture(scope="module")
def bfd(tmp_path_factory) -> Iterator[Fuzzed]:
    box = Sandbox(tmp_path_factory.mktemp("fuzz"))
    daemon = Daemon(box.root, [*FAST_RETRIES, "--data-root", str(box.data)])
    # Nothing the fuzz submits may reach a host but loopback: not S3's, not the hub's.
    env = {**AWS_ENV, "HF_ENDPOINT": f"http://{DEAD}"}
    with contextlib.chdir(box.cwd):
        daemon.start(env=env)
    box.baseline()
    fuzzed = Fuzzed(daemon, box)
    try:
        system = daemon.stub.System(pb.SystemRequest(), timeout=60)
        fuzzed.limits = {
            "cpu_workers": str(system.cpu_workers),
            "transfer_workers": str(system.transfer_workers),
        }
        submit_seeds(fuzzed)
        yield fuzzed
        print(f"\nfuzz examples per input kind: {dict(box.examples)}")
        print(f"answers: {dict(sorted(box.outcomes.items()))}")
        fuzzed.check_escapes(pb.SubmitRequest())
        assert daemon.stop() == 0, daemon.log_tail()
        assert_no_traceback(daemon.log.read_text().splitlines())
    finally:
        daemon.cleanup()


def assert_no_traceback(lines: list[str]) -> None:
    """A failure bfd did not expect is logged with its traceback: show the first one."""
    marks = ("Traceback", "internal error")
    first = next((at for at, line in enumerate(lines) if any(m in line for m in marks)), None)
    assert first is None, "\n".join(lines[max(0, first - 3) : first + 30])


def submit_seeds(fuzzed: Fuzzed) -> None:
    """A job of every kind, so verbs on a known name reach past the lookup."""
    box, url = fuzzed.box, f"http://{DEAD}/a.bin"
    scenes_input = box.write(".parquet", parquet_bytes(pa.table({"k": ["a"], "u": [url]})))
    (box.inputs / "zips").mkdir()
    manifest = box.write(".jsonl", json.dumps({"url": url, "size": 10}).encode())
    specs = {
        "fz-download": {"download": pb.DownloadSpec(urls=pb.UrlList(urls=[url]))},
        "fz-batched": {
            "download": pb.DownloadSpec(manifest=str(manifest), space="1GB", auto_proceed=True)
        },
        "fz-scenes": {"scenes": pb.ScenesSpec(input=str(scenes_input), key="k", url="u")},
        "fz-clean": {"clean": pb.CleanSpec(input=str(box.inputs / "zips"))},
        "fz-generate": {"generate": pb.GenerateSpec(preset="courses", rows=20)},
    }
    for name, spec in specs.items():
        ((_, message),) = spec.items()
        message.dest = str(box.data / name)
        box.allow(message.dest)
        fuzzed.daemon.stub.Submit(pb.SubmitRequest(name=name, **spec), timeout=120)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# -- strategies: values ------------------------------------------------------------------------

CONTROL = st.characters(max_codepoint=0x1F) | st.just("\x7f")
huge_text = st.builds(
    lambda piece, times: piece * times,
    st.sampled_from(["a", "/", "\x00", "é", "../", "%"]),
    st.integers(2_000, 100_000),
)
text = st.one_of(
    st.text(max_size=30),
    st.text(CONTROL | st.sampled_from("./\\:%*?[]{}~ é@#"), max_size=20),
    huge_text,
)
# Text that cannot be a URL to anywhere: nothing the fuzz writes may leave loopback.
not_url = text.filter(lambda value: "://" not in value)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def integers(low: int, high: int, extremes: tuple[int, ...] = ()) -> st.SearchStrategy[int]:
    edges = [value for value in (0, 1, -1, low, high, *extremes) if low <= value <= high]
    return st.sampled_from(edges) | st.integers(low, high)


doubles = st.sampled_from([0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]) | (
    st.floats()
)
SIZES = ("auto", "0", "1", "-1", "10TB", "931GiB", "1e400", "nan", "inf", "1.5", " 5 GiB ",
         "99999999999999999999999999EiB", "0.0000001KB", "50MB/s", "1 2")  # fmt: skip
sizes = st.one_of(
    st.sampled_from(SIZES),
    st.from_regex(r"-?\d{1,30}(\.\d{1,5})?\s?[A-Za-z/]{0,6}", fullmatch=True),
    text,
)
names = st.one_of(
    st.sampled_from([*SEEDS, "fz-never-made"]),
    st.from_regex(r"fz-[a-z0-9._-]{1,8}", fullmatch=True),
    text,
)
url_strings = (
    st.builds(
        "{}://{}/{}".format,
        st.sampled_from(["http", "https", "HTTP", "ftp", "file"]),
        # Hosts on loopback only; an empty host or a bad port fails without a connection.
        st.sampled_from([DEAD, "[::1]:9", "localhost:9", "127.0.0.1:0", "127.0.0.1:99999", ""]),
        st.text(max_size=20) | huge_text,
    )
    | not_url
)
s3_strings = (
    st.builds("http://{}/{}".format, st.just(DEAD), text)
    | st.sampled_from(
        ["s3://bucket/x", f"http://{DEAD}/", f"http://{DEAD}/b?list", f"ftp://{DEAD}/b"]
    )
    | not_url
)


def path_tails() -> st.SearchStrategy[str]:
    segment = st.sampled_from(["..", ".", "", "a", "n" * 255, "n" * 256, "\x00", " ", "~", "state"])
    any_segment = st.text(st.characters(exclude_characters="/"), min_size=1, max_size=12)
    return st.lists(segment | any_segment, max_size=5).map("/".join)


def paths(box: Sandbox) -> st.SearchStrategy[str]:
    """Absolute paths in the data root and out of it by every way there is, and junk."""

    def under(base) -> st.SearchStrategy[str]:
        return path_tails().map(lambda tail: f"{base}/{tail}")

    system = st.sampled_from(SYSTEM_DIRS).flatmap(lambda d: under(f"{d.rstrip('/')}/{box.marker}"))
    return st.one_of(
        under(box.data),
        under(box.data / ".." / "outside"),
        under(box.data / "link"),
        under(box.root),
        under(f"/proc/self/cwd/{box.marker}"),
        system,
        st.integers(2, 3000).map(lambda depth: str(box.data) + "/d" * depth),
        path_tails(),
        text,
    )


def input_paths(box: Sandbox) -> st.SearchStrategy[str]:
    """What a request may name to read: the seeds' inputs, special files, any path."""
    fixed = [str(box.inputs), "/dev/zero", "/dev/null", "/proc/self/environ", "/etc/passwd"]
    return st.sampled_from(fixed) | paths(box)


def one_of_or_text(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values) | text


spec_names = one_of_or_text("s.toml", "s.json", "s.yaml", "s.yml", "s.txt", "s")


JOB_STATES = ("queued", "running", "paused", "awaiting_swap", "completed", "failed", "cancelled")


# String fields by name: the values that reach past the first check, among junk.
def string_fields(box: Sandbox) -> dict[str, st.SearchStrategy[str]]:
    return {
        "name": names,
        "after": names,
        "dest": paths(box),
        "manifest": input_paths(box),
        "input": input_paths(box),
        "urls": url_strings,
        "s3": s3_strings,
        "hf": one_of_or_text("datasets/acme/x", "acme/x@main", "spaces/a/b", "a/b@" + "f" * 40),
        "space": sizes,
        "max_size": sizes,
        "states": one_of_or_text(*JOB_STATES),
        "kind": one_of_or_text("download", "scenes", "clean", "generate"),
        "kinds": one_of_or_text("klines", "aggTrades", "trades"),
        "markets": one_of_or_text("spot", "um", "cm"),
        "step": one_of_or_text("fetch", "verify", "decode", "register", "install"),
        "steps": one_of_or_text("fetch", "verify", "decode", "os:system", "json:loads"),
        "format": one_of_or_text("files", "webdataset", "parquet", "csv", "jsonl", "sql"),
        "oversize": one_of_or_text("fail", "skip", "own-batch"),
        "preset": one_of_or_text("courses"),
        "sql_dialect": one_of_or_text("sqlite", "postgres", "mysql"),
        "spec_name": spec_names,
        "spec_text": spec_texts(),
        "key": one_of_or_text("k", "u", "missing"),
        "url": one_of_or_text("k", "u", "missing"),
        "keep": one_of_or_text("k", "u", "missing"),
    }


# Numeric fields by name, where any value of the type could start heavy work.
NUMBER_FIELDS = {
    "rows": integers(-2, 500, (10**10, 10**10 + 1, INT64[0], INT64[1])),
    "chunk_rows": integers(-2, 10**5, (10**8, 10**8 + 1, INT64[1])),
}
LIMIT_VALUES = sizes | st.sampled_from(["0", "1", "2", "0.5", "1.01", "-3", "1025", "99999"])


# -- strategies: any request message, from its descriptor ---------------------------------------


def message(descriptor: Descriptor, box: Sandbox) -> st.SearchStrategy[Message]:
    """Messages of the type with any subset of fields set, at most one member of a oneof."""
    oneofs = [o for o in descriptor.oneofs if len(o.fields) > 1]  # not proto3 `optional`
    members = {f.name for o in oneofs for f in o.fields}
    plain = {f.name: field_value(f, box) for f in descriptor.fields if f.name not in members}
    chosen = [
        st.one_of(
            st.just({}), *[field_value(f, box).map(lambda v, f=f: {f.name: v}) for f in o.fields]
        )
        for o in oneofs
    ]
    cls = GetMessageClass(descriptor)
    given = st.tuples(st.fixed_dictionaries({}, optional=plain), *chosen)
    return given.map(lambda parts: build(cls, {k: v for part in parts for k, v in part.items()}))


def build(cls, values: dict) -> Message:
    made = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if is_map(field):
            getattr(made, name).update(value)
        elif field.is_repeated:
            getattr(made, name).extend(value)
        elif field.message_type is not None:
            getattr(made, name).CopyFrom(value)
        else:
            setattr(made, name, value)
    return made


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def field_value(field: FieldDescriptor, box: Sandbox) -> st.SearchStrategy:
    if is_map(field):  # SystemRequest.set: the limits bfd has, and others
        keys = st.sampled_from(list(LIMITS)) | text
        return st.dictionaries(keys, LIMIT_VALUES, max_size=3)
    one = scalar(field, box)
    return st.lists(one, max_size=3) if field.is_repeated else one


def scalar(field: FieldDescriptor, box: Sandbox) -> st.SearchStrategy:
    kinds = FieldDescriptor
    if field.type == kinds.TYPE_MESSAGE:
        return message(field.message_type, box)
    if field.type == kinds.TYPE_STRING:
        return string_fields(box).get(field.name, text)
    if field.name in NUMBER_FIELDS:
        return NUMBER_FIELDS[field.name]
    if field.type == kinds.TYPE_INT32:
        return integers(*INT32)
    if field.type == kinds.TYPE_INT64:
        return integers(*INT64, extremes=(10**10, 2**53))
    if field.type == kinds.TYPE_DOUBLE:
        return doubles
    if field.type == kinds.TYPE_BOOL:
        return st.booleans()
    raise AssertionError(f"no strategy for {field.full_name} (type {field.type})")


def request_of(method: str, box: Sandbox) -> st.SearchStrategy[Message]:
    return message(SERVICE.methods_by_name[method].input_type, box)


# -- strategies: manifests ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ODD_PATHS = ("/abs/x", "../up", "a/../../b", ".", "", "dir/", "a\\b", "n" * 250, "x.partial",
             "a//b", "\x00")  # fmt: skip
manifest_paths = st.one_of(
    path_tails(),
    st.sampled_from(ODD_PATHS),
    st.integers(2, 5000).map(lambda depth: "d/" * depth + "f"),
    json_values,
)
manifest_sizes = st.one_of(
    integers(*INT64, extremes=(2**53, 10**12)),
    st.sampled_from([2**63, 2**64, 10**30, -(10**30), 1.5, math.nan, math.inf, "10", "1GB", True]),
    json_values,
)
hexes = st.text("0123456789abcdefABCDEFg ", min_size=0, max_size=70) | json_values
# Rows with every column any JSON value: bad in most ways a row can be.
manifest_rows = st.fixed_dictionaries(
    {},
    optional={
        "url": url_strings | json_values,
        "path": manifest_paths,
        "size": manifest_sizes,
        "sha256": hexes,
        "md5": hexes,
        "etag": text | json_values,
        "extra": json_values,
    },
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """good four times in five: one bad row refuses a whole file, so most rows must be good."""
    return st.integers(0, 4).flatmap(lambda roll: bad if roll == 0 else good)


good_urls = st.text("abcxyz/._-", min_size=1, max_size=10).map(f"http://{DEAD}/{{}}".format)
good_paths = st.lists(
    st.text("abcxyz019._-", min_size=1, max_size=8).filter(lambda name: name not in (".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)
good_sizes = st.integers(0, 10**6)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
GOOD_COLUMNS = {
    "url": (good_urls, pa.string()),
    "path": (good_paths, pa.string()),
    "size": (good_sizes, pa.int64()),
    "sha256": (hex64, pa.string()),
    "md5": (hex32, pa.string()),
    "etag": (st.text("abc-", max_size=8), pa.string()),
}
good_rows = st.fixed_dictionaries(
    {"url": good_urls},
    optional={name: values for name, (values, _) in GOOD_COLUMNS.items() if name != "url"},
)
deep_json = st.integers(10, 200_000).map(lambda depth: "[" * depth + "]" * depth)
bad_lines = st.one_of(
    manifest_rows.map(json.dumps),
    good_rows.map(lambda row: json.dumps(row)[:-1]),  # cut short
    json_values.map(json.dumps),
    deep_json,
    text,
)
jsonl_files = mostly(
    st.lists(mostly(good_rows.map(json.dumps), bad_lines), min_size=1, max_size=4).map(
        lambda lines: "\n".join(lines).encode()
    ),
    st.binary(max_size=200),
)
COLUMN_NAMES = tuple(GOOD_COLUMNS)
column_names = st.sampled_from(COLUMN_NAMES) | st.text(max_size=8)
csv_cells = st.one_of(
    url_strings,
    manifest_paths.map(str),
    st.text(max_size=10) | st.sampled_from(['"', ",", "\n", "\r", "\x00", "-1", "1e999"]),
    st.integers(131_000, 300_000).map(lambda n: "c" * n),  # past csv's field limit
)


@st.composite
def csv_files(draw) -> bytes:
    """A header with url first (mostly), and rows of good cells among bad ones."""
    others = st.lists(st.sampled_from(COLUMN_NAMES[1:]), unique=True, max_size=5)
    header = draw(mostly(others.map(lambda rest: ["url", *rest]), st.lists(column_names)))
    good_cell = {name: values.map(str) for name, (values, _) in GOOD_COLUMNS.items()}
    rows = [
        draw(
            mostly(
                st.tuples(*[mostly(good_cell.get(n, text), csv_cells) for n in header]),
                st.lists(csv_cells, max_size=7),
            )
        )
        for _ in range(draw(st.integers(1, 4)))
    ]
    out = io.StringIO()
    quoting = draw(mostly(st.just(csv.QUOTE_MINIMAL), st.just(csv.QUOTE_NONE)))
    writer = csv.writer(out, quoting=quoting, escapechar="\\")
    with contextlib.suppress(csv.Error):  # a cell QUOTE_NONE cannot write: the rest stays
        writer.writerow(header)
        writer.writerows(rows)
    return out.getvalue().encode()


def typed_column(count: int, strings: st.SearchStrategy[str]) -> st.SearchStrategy[pa.Array]:
    """A column of one Arrow type, nulls among the values."""

    def of(values: st.SearchStrategy, kind: pa.DataType) -> st.SearchStrategy[pa.Array]:
        listed = st.lists(values | st.none(), min_size=count, max_size=count)
        return listed.map(lambda v: pa.array(v, kind))

    return st.one_of(
        of(strings, pa.string()),
        of(st.integers(*INT64), pa.int64()),
        of(st.integers(0, 2**64 - 1), pa.uint64()),
        of(st.floats(), pa.float64()),
        of(st.binary(max_size=12), pa.binary()),
        of(st.booleans(), pa.bool_()),
        of(st.lists(st.integers(0, 9), max_size=3), pa.list_(pa.int64())),
    )


@st.composite
def parquet_files(draw, good: dict, required: tuple, strings: st.SearchStrategy[str]) -> bytes:
    """A table of mostly good columns (`good`: name -> values, Arrow type), maybe damaged.

    The required columns are there most of the time; the first one's values are unique.
    """
    count = draw(mostly(st.integers(1, 5), st.just(0)))
    names = draw(st.lists(st.sampled_from(sorted(good)), unique=True, max_size=len(good)))
    names = draw(mostly(st.just([*required, *names]), st.just(names)))
    names += draw(st.lists(st.text(max_size=8), max_size=2))
    columns = {}
    for name in dict.fromkeys(names):
        values, kind = good.get(name, (strings, pa.string()))
        unique = name == required[0]  # a key, or a manifest's URL
        right = st.lists(values, min_size=count, max_size=count, unique=unique)
        columns[name] = draw(
            mostly(right.map(lambda v, k=kind: pa.array(v, k)), typed_column(count, strings))
        )
    data = parquet_bytes(pa.table(columns or {"x": pa.array([], pa.int8())}))
    damage = draw(mostly(st.just("none"), st.sampled_from(["cut", "flip"])))
    if damage == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    if damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


MANIFESTS = {
    "jsonl": jsonl_files,
    "csv": mostly(csv_files(), st.binary(max_size=200)),
    "parquet": parquet_files(GOOD_COLUMNS, ("url",), url_strings | manifest_paths.map(str)),
}


# -- strategies: generator specs ---------------------------------------------------------------

COLUMN_KINDS = ("sequence", "integer", "float", "choice", "cycle", "boolean", "date", "timestamp",
                "first_name", "last_name", "city", "street", "word", "full_name", "address",
                "phone", "email", "pattern", "foreign_key", "lookup")  # fmt: skip
TEMPLATES = (
    {"kind": "sequence"},
    {"kind": "integer", "min": 0, "max": 100},
    {"kind": "float", "min": 0.0, "max": 1.0, "distribution": "normal", "sd": 0.5},
    {"kind": "choice", "values": ["a", "b"], "weights": [1.0, 2.0]},
    {"kind": "cycle", "values": [1, 2], "repeat": 2},
    {"kind": "boolean", "p": 0.3},
    {"kind": "date", "start": date(2020, 1, 1), "end": date(2021, 1, 1)},
    {"kind": "timestamp", "start": datetime(2020, 1, 1), "end": datetime(2021, 1, 1)},
    {"kind": "first_name", "unique": True},
    {"kind": "full_name"},
    {"kind": "email", "first": "c", "last": "c"},
    {"kind": "pattern", "pattern": "[A-Z]{3}\\d{2}"},
    {"kind": "foreign_key", "table": "t", "column": "c"},
    {"kind": "lookup", "via": "c", "column": "c"},
)
PARAMETERS = ("kind", "min", "max", "start", "end", "step", "values", "weights", "null", "unique",
              "primary_key", "pattern", "distribution", "sd", "a", "mean", "digits", "table",
              "column", "via", "first", "last", "domains", "repeat", "p", "junk")  # fmt: skip
UTC_PLUS_5 = timezone(timedelta(hours=5))
parameter_values = st.one_of(
    integers(*INT64, extremes=(2**53,)),
    st.sampled_from([10**30, -(10**30)]),
    doubles,
    st.booleans(),
    st.sampled_from(COLUMN_KINDS) | st.sampled_from(["t", "c", "uniform", "zipf"]) | text,
    st.dates(),
    st.datetimes(timezones=st.sampled_from([None, UTC, UTC_PLUS_5])),
    st.lists(st.integers(-5, 5) | st.text(max_size=4) | doubles, max_size=4),
    st.sampled_from(["[\x00-\U0010ffff]{9}", "x{999}" * 30, "[z-a]", "\\", "[", "a{0}"]),
    # What issue 24 found: a newline in a domain, a count past the limit, regex syntax.
    st.sampled_from([["x.org\nEVIL"], "[A-Z]{99999}", "[A-Z]{2,5}", "[^a]", "\\w", 1e308]),
)
columns = st.one_of(
    st.sampled_from(TEMPLATES),
    st.builds(
        lambda template, key, value: {**template, key: value},
        st.sampled_from(TEMPLATES),
        st.sampled_from(PARAMETERS),
        parameter_values,
    ),
    st.dictionaries(st.sampled_from(PARAMETERS), parameter_values, max_size=5),
)
column_names_of_specs = st.sampled_from(["c", "d"]) | st.text(max_size=6)
table_names = st.sampled_from(["t", "u", "students", "courses"]) | st.text(max_size=8)
tables = st.fixed_dictionaries(
    {"columns": st.dictionaries(column_names_of_specs, columns, max_size=3)},
    optional={
        "rows": integers(-1, 10**4, (10**10, 10**11)),
        "scale": doubles,
        "enrollments": st.dictionaries(st.text(max_size=8), parameter_values, max_size=3),
    },
)
random_documents = st.fixed_dictionaries(
    {"tables": st.dictionaries(table_names, tables, max_size=3)}
)
REFERENCES = ("email", "foreign_key", "lookup")
PLAIN = [template for template in TEMPLATES if template["kind"] not in REFERENCES]
CHILD = {
    "c": {"kind": "foreign_key", "table": "t", "column": "c"},
    "d": {"kind": "lookup", "via": "c", "column": "c"},
    "f": {"kind": "first_name"},
    "l": {"kind": "last_name"},
    "e": {"kind": "email", "first": "f", "last": "l"},
}


@st.composite
def good_documents(draw) -> dict:
    """A spec that holds together: a parent table, maybe a child keyed into it."""
    extra = draw(st.lists(st.sampled_from(PLAIN), max_size=3))
    parent = {"c": {"kind": "sequence", "primary_key": True}}
    parent.update({f"p{index}": column for index, column in enumerate(extra)})
    document = {"tables": {"t": {"columns": parent}}}
    if draw(st.booleans()):
        document["tables"]["u"] = {"scale": draw(st.floats(0.1, 3)), "columns": CHILD}
    return document


def mutated(document: dict, table: str, column: str, key: str, value) -> dict:
    """The document with one parameter of one table or column set to value."""
    changed = copy.deepcopy(document)
    target = changed["tables"].get(table, {})
    target = target.get("columns", {}).get(column, target)
    target[key] = value
    return changed


spec_documents = st.one_of(
    good_documents(),
    st.builds(
        mutated,
        good_documents(),
        st.sampled_from(["t", "u"]),
        st.sampled_from(["c", "d", "p0", "table"]),
        st.sampled_from(PARAMETERS) | st.sampled_from(["rows", "scale", "enrollments"]),
        parameter_values,
    ),
    random_documents,
)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):  # datetimes too: TOML writes both as ISO 8601
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)  # JSON's escapes are TOML's


def toml_key(key) -> str:
    return json.dumps(str(key), ensure_ascii=False)


def to_toml(document: dict) -> str:
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items())


SERIALIZE = {
    "toml": to_toml,
    "json": lambda document: json.dumps(document, default=lambda value: value.isoformat()),
    "yaml": lambda document: yaml.safe_dump(document, allow_unicode=True),
}


def spec_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(sorted(SERIALIZE)).flatmap(lambda fmt: spec_documents.map(SERIALIZE[fmt])),
        deep_json,
        st.integers(10, 100_000).map(lambda depth: "a = " + "[" * depth + "]" * depth),
        text,
    )


@st.composite
def spec_files(draw) -> tuple[str, str]:
    """(spec text, its file name): mostly a document in the format its name says."""
    fmt = draw(st.sampled_from(sorted(SERIALIZE)))
    name = draw(mostly(st.just(f"s.{fmt}"), spec_names))
    body = draw(mostly(spec_documents.map(SERIALIZE[fmt]), spec_texts()))
    return body, name


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@fuzz("rpc")
@given(data=st.data())
def test_no_request_gets_internal_or_writes_outside_the_data_root(bfd, method, data):
    request = data.draw(request_of(method, bfd.box), label=method)
    assume(request.ByteSize() < 3 * 1024**2)  # past 4 MiB the transport refuses it whole
    bfd.box.examples[f"rpc {method}"] += 1
    bfd.call(method, request)
    bfd.check_escapes(request)


def refused_as_bad_input(refusal: grpc.RpcError | None, words: tuple[str, ...]) -> None:
    """A refusal of bad input says so and names what it refuses."""
    if refusal is None:
        return
    details = refusal.details()
    assert refusal.code() in BAD_INPUT, (refusal.code(), details[:500])
    assert any(word in details for word in words), f"names none of {words}: {details[:500]}"


@pytest.mark.parametrize("fmt", sorted(MANIFESTS))
@fuzz("manifest")
@given(data=st.data())
def test_manifests_are_taken_or_refused_saying_which_row(bfd, fmt, data):
    manifest = bfd.box.write(f".{fmt}", data.draw(MANIFESTS[fmt], label="manifest"))
    bfd.box.examples[f"manifest {fmt}"] += 1
    dest = bfd.box.fresh_dest()
    spec = pb.DownloadSpec(manifest=str(manifest), dest=str(dest))
    _, refusal = bfd.submit(f"manifest {fmt}", download=spec)
    refused_as_bad_input(refusal, ("manifest", "entries"))
    if refusal is not None:
        assert not dest.exists(), "a refused download left its dest behind"
    bfd.check_escapes(spec)


scene_steps = one_of_or_text("fetch", "verify", "decode", "os:system")
scene_columns = st.sampled_from(["k", "u", "meta"]) | st.text(max_size=6)
SCENE_COLUMNS = {
    "k": (st.text(min_size=1, max_size=12), pa.string()),
    "u": (good_urls, pa.string()),
    "meta": (st.text(max_size=10), pa.string()),
}
scene_tables = parquet_files(SCENE_COLUMNS, ("k", "u"), url_strings | st.text(max_size=300))


@st.composite
def scenes_inputs(draw, box: Sandbox) -> str:
    """A Parquet file, a directory of them (and maybe something else), or any path."""
    shape = draw(mostly(st.just("file"), st.sampled_from(["directory", "path"])))
    if shape == "file":
        return str(box.write(".parquet", draw(scene_tables)))
    if shape == "path":
        return draw(input_paths(box))
    directory = box.inputs / box.unique("dir")
    directory.mkdir()
    for index in range(draw(st.integers(0, 3))):
        (directory / f"part-{index}.parquet").write_bytes(draw(scene_tables))
    if draw(st.booleans()):
        (directory / "notes.txt").write_text("not parquet")
    return str(directory)


@fuzz("scenes")
@given(data=st.data())
def test_scenes_inputs_are_taken_or_refused_plainly(bfd, data):
    box = bfd.box

    def draw(good: list, bad: st.SearchStrategy, label: str):
        return data.draw(mostly(st.sampled_from(good), bad), label=label)

    spec = pb.ScenesSpec(
        input=data.draw(scenes_inputs(box), label="input"),
        key=draw(["k"], scene_columns, "key"),
        url=draw(["u"], scene_columns, "url"),
        keep=draw([[], ["meta"]], st.lists(scene_columns, max_size=3), "keep"),
        dest=str(box.fresh_dest()),
        shard_size=draw([0, 1, 100], integers(*INT32), "shard_size"),
        format=draw(["", "files", "webdataset", "parquet"], text, "format"),
        steps=draw(
            [[], ["fetch"], ["fetch", "verify"]], st.lists(scene_steps, max_size=3), "steps"
        ),
        max_size=draw(["", "1MiB"], sizes, "max_size"),
        timeout_s=draw([0.0, 2.5], doubles, "timeout_s"),
    )
    box.examples["scenes input"] += 1  # counted once every draw is done: a request sent
    _, refusal = bfd.submit("scenes input", scenes=spec)
    words = (
        "input",
        "key",
        "url",
        "keep",
        "dest",
        "shard_size",
        "format",
        "step",
        "max",
        "timeout",
        "column",
        "Parquet",
        "parquet",
    )
    refused_as_bad_input(refusal, words)
    bfd.check_escapes(spec)


@fuzz("spec")
@given(data=st.data())
def test_generator_specs_are_taken_or_refused_naming_the_field(bfd, data):
    box = bfd.box
    body, name = data.draw(spec_files(), label="spec")

    def draw(good: st.SearchStrategy, bad: st.SearchStrategy, label: str):
        return data.draw(mostly(good, bad), label=label)

    spec = pb.GenerateSpec(
        spec_text=body,
        spec_name=name,
        rows=draw(st.integers(1, 300), NUMBER_FIELDS["rows"], "rows"),
        seed=draw(st.integers(0, 2**32), integers(*INT64), "seed"),
        format=draw(st.sampled_from(["", "parquet", "csv", "jsonl", "sql"]), text, "format"),
        sql_dialect=draw(st.sampled_from(["", "sqlite", "postgres", "mysql"]), text, "dialect"),
        dest=str(box.fresh_dest()),
        chunk_rows=draw(st.sampled_from([0, 7, 100]), NUMBER_FIELDS["chunk_rows"], "chunk_rows"),
    )
    assume(spec.ByteSize() < 3 * 1024**2)
    box.examples["generator spec"] += 1
    _, refusal = bfd.submit("generator spec", generate=spec)
    words = (name, "spec", "rows", "seed", "format", "sql_dialect", "dest", "chunk_rows", "parts")
    refused_as_bad_input(refusal, tuple(word for word in words if word))
    bfd.check_escapes(spec)


# -- what the fuzz found, kept as plain examples -----------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def damaged_parquet(columns: dict) -> bytes:
    """A Parquet file whose footer reads well and whose first page header is garbage."""
    data = parquet_bytes(pa.table(columns))
    return data[:4] + b"\xff" * 16 + data[20:]


@pytest.mark.parametrize(
    ("suffix", "content", "words"),
    [
        (".jsonl", DEEP, "nested too deeply"),
        (".csv", "url\n" + "c" * 200_000 + "\n", "not a CSV file bfd can read"),
        (".jsonl", json.dumps({"url": f"http://{DEAD}/café"}), "percent-encode"),
        (".parquet", damaged_parquet({"url": [f"http://{DEAD}/a"]}), "not a readable Parquet"),
    ],
    ids=["deep-jsonl", "huge-csv-field", "non-ascii-url", "damaged-page"],  # ids go in the env
)
def test_manifests_the_fuzz_found_are_refused_plainly(bfd, suffix, content, words):
    manifest = bfd.box.write(suffix, content if isinstance(content, bytes) else content.encode())
    spec = pb.DownloadSpec(manifest=str(manifest), dest=str(bfd.box.fresh_dest()))
    _, refusal = bfd.submit("found", download=spec)
    assert refusal is not None and refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refusal.details(), refusal.details()


TIMESTAMPS = 'c = {kind = "timestamp", start = 2020-01-01T00:00:00Z, end = 2021-01-01T00:00:00}'


@pytest.mark.parametrize(
    ("name", "text", "rows", "words"),
    [
        ("s.json", DEEP, 10, "nested too deeply"),
        ("s.toml", "a = " + DEEP, 10, "nested too deeply"),
        ("s.yaml", DEEP, 10, "nested too deeply"),
        ("s.toml", f"[tables.t.columns]\n{TIMESTAMPS}\n", 10, "both with a time zone"),
        ("s.toml", '[tables.t]\nscale = inf\ncolumns = {c = {kind = "sequence"}}', 10, "scale"),
        ("s.toml", '[tables.t]\nscale = 1e9\ncolumns = {c = {kind = "sequence"}}', 10**10,
         "rows, more than"),
    ],
    ids=["deep-json", "deep-toml", "deep-yaml", "mixed-time-zones", "scale-inf", "rows-overflow"],
)  # fmt: skip
def test_specs_the_fuzz_found_are_refused_naming_the_field(bfd, name, text, rows, words):
    spec = pb.GenerateSpec(
        spec_text=text, spec_name=name, rows=rows, dest=str(bfd.box.fresh_dest())
    )
    _, refusal = bfd.submit("found", generate=spec)
    assert refusal is not None and refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refusal.details(), refusal.details()


def test_a_scenes_url_libcurl_cannot_take_fails_its_item_not_a_worker(bfd):
    url = f"http://{DEAD}/café"
    table = pa.table({"k": ["a"], "u": [url]})
    spec = pb.ScenesSpec(
        input=str(bfd.box.write(".parquet", parquet_bytes(table))),
        key="k",
        url="u",
        dest=str(bfd.box.fresh_dest()),
    )
    name = bfd.box.unique("job")
    bfd.box.allow(spec.dest)
    bfd.daemon.stub.Submit(pb.SubmitRequest(name=name, scenes=spec), timeout=60)
    assert bfd.daemon.wait_state(name, {"failed", "completed"}).state == "failed"
    failures = bfd.daemon.stub.Failures(pb.FailuresRequest(name=name), timeout=60)
    assert [f.error_class for f in failures.failures] == ["bad_url"]
    assert "percent-encode" in failures.failures[0].error
    assert "died" not in bfd.daemon.log.read_text()  # no transfer worker fell over it


def test_a_job_cancelled_as_it_starts_leaves_no_failed_scheduling_pass(bfd):
    # A race: the runner read the job queued, the cancel moved it before the runner's
    # start did. The fuzz met it in about one accepted submit in four.
    for _ in range(15):
        spec = pb.GenerateSpec(preset="courses", rows=5, dest=str(bfd.box.fresh_dest()))
        answer, refusal = bfd.submit("found", generate=spec)  # cancelled at once
        assert refusal is None and answer.job.name
    assert "scheduling pass failed" not in bfd.daemon.log.read_text()


def test_a_damaged_scenes_input_is_refused_plainly(bfd):
    spec = pb.ScenesSpec(
        input=str(bfd.box.write(".parquet", damaged_parquet({"k": ["a"], "u": ["x"]}))),
        key="k",
        url="u",
        dest=str(bfd.box.fresh_dest()),
    )
    _, refusal = bfd.submit("found", scenes=spec)
    assert refusal is not None and refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a readable Parquet file" in refusal.details(), refusal.details()
