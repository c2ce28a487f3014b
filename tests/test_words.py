"""bfctl's own words (issue 25): no library wording reaches a person, and every name a flag
or a request field takes is checked, with the known ones and the nearest named.

- every pydantic error type, and every field of every model, worded by `describe` with
  the field's path and none of pydantic's phrases (generated from pydantic-core's list of
  error types and from the models themselves);
- every enumerated flag of every bfctl verb (found by walking its parser) refuses a
  misspelt value before bfd is asked (exit 2), naming the flag and the nearest value;
- bfd refuses the same misspellings from any API caller (INVALID_ARGUMENT), in its words;
- the examples of the issue, end to end: a spec, a manifest, bfd.toml, the typed client.

conftest's `no_library_words` fixture scans what every test of the suite reads besides.
"""

import argparse
import ast
import datetime as dt
import importlib
import json
import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path

import grpc
import pydantic
import pydantic_core
import pytest
from conftest import LIBRARY_WORDS, library_words, said, write_manifest
from pydantic import BaseModel, ValidationError
from pydantic_core.core_schema import ErrorType

import bulkforge.daemon
from bulkforge.client.api import Client, InvalidArgument
from bulkforge.daemon.generator import spec as generator_spec
from bulkforge.daemon.validation import describe
from bulkforge.proto import choices
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.text import did_you_mean

EXIT_USAGE = 2


def assert_plain(text: str) -> None:
    assert text.strip(), "no words at all"
    assert not library_words(text), f"library words {library_words(text)} in: {text}"


def misspelt(name: str) -> str:
    """A typo of a name: its last two letters swapped, or a letter doubled."""
    if len(name) >= 4 and name[-1] != name[-2]:
        return name[:-2] + name[-1] + name[-2]
    return name + name[-1]


# -- describe: every error type, every model ---------------------------------------------------

# Enough context for pydantic-core to render any error type's own message.
CONTEXT = {
    "gt": 0, "ge": 0, "lt": 9, "le": 9, "multiple_of": 2, "min_length": 1, "max_length": 3,
    "actual_length": 5, "field_type": "List", "pattern": "^a$", "expected": "'a' or 'b'",
    "error": "a reason", "discriminator": "'kind'", "tag": "sequnce",
    "expected_tags": "'sequence', 'integer'", "class_name": "Model", "max_digits": 3,
    "decimal_places": 2, "whole_digits": 1, "expected_schemes": "'http'", "max_length_url": 9,
    "tz_expected": 0, "tz_actual": 1, "expected_version": 4, "attribute": "x",
    "class": "Model", "type_name": "int", "method_name": "f", "expected_plural": "items",
    "context": "", "expected_type": "int", "reason": "a reason", "url_scheme": "http",
    "argument": "x", "missing_field": "x", "name": "x", "encoding": "base64",
    "encoding_error": "bad",
}  # fmt: skip


def every_error_type() -> list[str]:
    return list(typing.get_args(ErrorType))


@pytest.mark.parametrize("error_type", every_error_type())
def test_every_pydantic_error_type_is_worded_plainly(error_type: str) -> None:
    try:
        raised = ValidationError.from_exception_data(
            "Model",
            [{"type": error_type, "loc": ("tables", "t", "rows"), "input": "x", "ctx": CONTEXT}],
        )
    except (TypeError, KeyError, pydantic_core.SchemaError) as exc:  # a type with other ctx
        pytest.fail(f"{error_type}: cannot be raised with the test's context: {exc}")
    words = describe(raised)
    assert_plain(words)
    # the field's path; an unknown one is named at its parent's
    assert words.startswith(("tables.t.rows: ", "tables.t: unknown field 'rows'")), words


def models() -> list[type[BaseModel]]:
    """Every pydantic model bfd defines (every module under bulkforge.daemon imported)."""
    for module in pkgutil.walk_packages(bulkforge.daemon.__path__, "bulkforge.daemon."):
        if not module.name.endswith(("__main__", "cpu_worker", "worker")):
            importlib.import_module(module.name)
    found, pending = set(), [BaseModel]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("bulkforge.") and not sub.__name__.startswith("_"):
                found.add(sub)
    return sorted(found, key=lambda model: f"{model.__module__}.{model.__name__}")


MODELS = models()
WRONG = {"list": [[1]], "table": {"a": 1}, "text": "x" * 3, "number": -(2**70), "null": None}


def test_the_models_are_found() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"Spec", "Table", "ManifestRow", "SubmitClean", "SubmitScenes", "Settings"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_field_of_every_model_is_refused_in_words_naming_it(model) -> None:
    """Each field given each wrong kind of value: the words name the field, never pydantic's."""
    forbids_extra = model.model_config.get("extra") == "forbid"
    for field in model.model_fields:
        for label, value in WRONG.items():
            try:
                model.model_validate({field: value})
            except ValidationError as exc:
                words = describe(exc)
                assert_plain(words)
                if any(error["loc"][:1] == (field,) for error in exc.errors()):
                    assert field in words, (field, label, words)
        if forbids_extra and len(field) >= 4:
            typo = misspelt(field)
            if typo in model.model_fields:
                continue
            with pytest.raises(ValidationError) as refused:
                model.model_validate({typo: 1})
            words = describe(refused.value)
            assert_plain(words)
            assert f"unknown field {typo!r}" in words, words
            if did_you_mean(typo, model.model_fields):
                assert "did you mean" in words, words


# pydantic's ByteSize shows this pattern in its schema; bfd parses sizes before it applies.
BYTE_SIZE = r"^\s*(\d*\.?\d+)\s*(\w+)?"


def patterns(schema: object) -> set[str]:
    """The patterns of a JSON Schema (not a field named pattern: its $ref)."""
    if isinstance(schema, dict):
        pattern = schema.get("pattern")
        found = {pattern} if isinstance(pattern, str) and pattern[:2] != "#/" else set()
        return found.union(*(patterns(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(patterns(value) for value in schema))
    return set()


def test_every_pattern_of_every_model_has_words() -> None:
    """A value a pattern refuses is told what the pattern wants, in words."""
    from bulkforge.daemon.worded import PATTERNS

    used = set()
    for model in MODELS:
        try:
            used |= patterns(model.model_json_schema())
        except Exception:  # a type JSON Schema cannot show (a callable default): its fields
            for field in model.model_fields.values():
                used |= {m.pattern for m in field.metadata if getattr(m, "pattern", None)}
    assert len(used) >= 5, used
    assert used - {BYTE_SIZE} <= set(PATTERNS), used - set(PATTERNS)


SPEC_CASES = [
    ({"id": {"kind": "sequnce"}}, "tables.t.columns.id: unknown kind 'sequnce'; did you mean "
     "'sequence'?"),
    ({"id": {"kind": "sequence", "stpe": 2}}, "tables.t.columns.id: unknown field 'stpe'; did "
     "you mean 'step'?"),
    ({"id": {"kind": "integer", "min": "x", "max": 3}}, "tables.t.columns.id.min: should be a "
     "whole number, not 'x'"),
    ({"id": {"kind": "integer", "min": 0}}, "tables.t.columns.id.max: missing"),
    ({"id": {"kind": "integer", "min": 0, "max": 9, "distribution": "normall"}},
     "'normall' is not one of uniform, normal, lognormal, zipf; did you mean 'normal'?"),
    ({"id": {"kind": "choice", "values": []}}, "tables.t.columns.id.values: must not be empty"),
    ({"id": {"kind": "choice", "values": [[1]]}}, "tables.t.columns.id.values[0]: should be "
     "text, a whole number, a number or true/false, not a list"),
    ({"id": {"kind": "boolean", "p": 2}}, "tables.t.columns.id.p: should be at most 1, not 2"),
    ({"id": {}}, "tables.t.columns.id: give its kind (one of"),
    ({"id": 3}, "tables.t.columns.id: should be a table of fields, not 3"),
    ({"id": {"kind": "boolean"}, "x": 3}, "tables.t.columns.x: should be a table of fields, not 3"),
]  # fmt: skip


@pytest.mark.parametrize(("columns", "words"), SPEC_CASES)
def test_spec_errors_name_the_field_and_the_nearest_name(columns, words) -> None:
    document = {"tables": {"t": {"rows": 5, "columns": columns}}}
    with pytest.raises(ValidationError) as refused:
        generator_spec.Spec.model_validate(document)
    described = describe(refused.value)
    assert_plain(described)
    assert words in described, described


def test_a_misspelt_table_field_and_a_bad_row_count() -> None:
    text = '[tables.t]\nrows = "x"\ncolums = {id = {kind = "sequence"}}\n'
    with pytest.raises(Exception) as refused:
        generator_spec.load(text, "s.toml")
    words = str(refused.value)
    assert_plain(words)
    assert "s.toml: tables.t.rows: should be a whole number, not 'x'" in words, words
    assert "tables.t: unknown field 'colums'; did you mean 'columns'?" in words, words


# -- bfctl: every enumerated flag of every verb -------------------------------------------------


def named_flags(parser: argparse.ArgumentParser, path=()) -> list[tuple]:
    """(command words, option, known values, plugin) of every flag that takes names."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += named_flags(sub, (*path, name))
        elif action.option_strings and hasattr(action.type, "known"):
            found.append((path, action.option_strings[-1], action.type.known, action.type.plugin))
        elif action.option_strings and action.choices:
            found.append((path, action.option_strings[-1], tuple(action.choices), False))
    return found


def build_parser() -> argparse.ArgumentParser:
    from bulkforge.client.__main__ import build_parser

    return build_parser()


NAMED_FLAGS = named_flags(build_parser())
# Every flag of names bfctl has today; a new one joins the table by itself (it is walked), and
# this list fails if one is lost.
EXPECTED_NAMED = {
    (("list",), "--state"),
    (("list",), "--kind"),
    (("failures",), "--step"),
    (("retry",), "--step"),
    (("submit", "clean"), "--kinds"),
    (("submit", "clean"), "--markets"),
    (("submit", "scenes"), "--steps"),
    (("submit", "scenes"), "--format"),
    (("submit", "generate"), "--format"),
    (("submit", "generate"), "--sql-dialect"),
    (("submit", "generate"), "--preset"),
    (("submit", "download"), "--oversize"),
    (("plan",), "--oversize"),
}


def test_the_walk_finds_every_flag_of_names() -> None:
    found = {(path, flag) for path, flag, _, _ in NAMED_FLAGS}
    assert found >= EXPECTED_NAMED, EXPECTED_NAMED - found


CASES = [
    (path, flag, value, typo)
    for path, flag, known, _ in NAMED_FLAGS
    for value in known
    for typo in [misspelt(value)]
    if typo not in known
]


@pytest.mark.parametrize(("path", "flag", "value", "typo"), CASES)
def test_a_misspelt_name_is_refused_naming_the_known_ones(path, flag, value, typo, capsys):
    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args([*path, f"{flag}={typo}"])
    err = capsys.readouterr().err
    said(f"bfctl {flag}={typo}", err)
    assert ended.value.code == EXIT_USAGE
    assert f"argument {flag}" in err and repr(typo) in err, err
    assert f"did you mean {value!r}" in err, err
    assert_plain(err)


@pytest.mark.parametrize(("path", "flag", "known", "plugin"), NAMED_FLAGS)
def test_an_unknown_name_exits_2_before_bfd_is_asked(path, flag, known, plugin, tmp_path):
    """As a subprocess, against a socket nobody listens on: asking bfd would exit 3."""
    argv = ["--socket", str(tmp_path / "none.sock"), *path]
    if path and path[0] in ("failures", "retry", "submit") and path != ("submit",):
        argv.append("j")
    done = subprocess.run(
        [sys.executable, "-m", "bulkforge.client", *argv, f"{flag}=no-such-thing"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said(f"bfctl {flag}", done.stderr)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "'no-such-thing'" in done.stderr and known[0] in done.stderr, done.stderr
    assert_plain(done.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["failures", "j", "--step", "my.steps:resize"],
        ["list", "--state", "running,failed", "--state", "completed", "--kind", "clean"],
        ["submit", "clean", "j", "--input", "/i", "--dest", "/d", "--kinds", "klines,trades"],
        ["submit", "clean", "j", "--input", "/i", "--dest", "/d", "--markets", "spot, um"],
        ["submit", "scenes", "j", "--input", "/i", "--key", "k", "--url", "u", "--dest", "/d",
         "--steps", "fetch,verify,my.steps:resize"],
    ],
)  # fmt: skip
def test_known_names_and_plugin_steps_pass(argv) -> None:
    build_parser().parse_args(argv)


def list_flags(parser: argparse.ArgumentParser, path=()) -> list[tuple]:
    """(command words, option) of every flag that takes a comma-separated list."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += list_flags(sub, (*path, name))
        elif action.option_strings and getattr(action.type, "listing", False):
            found.append((path, action.option_strings[-1]))
    return found


LIST_FLAGS = list_flags(build_parser())


def test_the_walk_finds_every_list_flag() -> None:
    expected = {
        (("list",), "--state"),
        (("submit", "clean"), "--kinds"),
        (("submit", "clean"), "--markets"),
        (("submit", "scenes"), "--steps"),
        (("submit", "scenes"), "--keep"),
    }
    assert set(LIST_FLAGS) >= expected, expected - set(LIST_FLAGS)


@pytest.mark.parametrize("empty", ["", ",", " , ,"])
@pytest.mark.parametrize(("path", "flag"), LIST_FLAGS)
def test_an_empty_list_is_a_usage_error_naming_the_flag(path, flag, empty, capsys) -> None:
    """`--kinds ,` is no filter that means all: exit 2, naming the flag."""
    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args([*path, f"{flag}={empty}"])
    err = capsys.readouterr().err
    said(f"bfctl {flag}={empty}", err)
    assert ended.value.code == EXIT_USAGE
    assert f"argument {flag}: {empty!r} names no " in err, err
    assert_plain(err)


def test_a_market_by_its_layout_name_says_which() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'um' .* or 'cm'"):
        choices.check("market", "futures", choices.CLEAN_MARKETS)


# -- the names bfctl knows are the ones bfd takes -----------------------------------------------


def test_bfctl_knows_the_names_bfd_takes() -> None:
    from bulkforge.daemon.cleaner import request as clean_request
    from bulkforge.daemon.downloader.planner import Oversize
    from bulkforge.daemon.generator import request as generate_request
    from bulkforge.daemon.machines.job import JobState
    from bulkforge.daemon.registry import KINDS
    from bulkforge.daemon.scenes import request as scenes_request
    from bulkforge.daemon.scenes.steps import BUILT_IN

    assert tuple(JobState) == choices.JOB_STATES
    assert set(choices.JOB_KINDS) == {kind.name for kind in KINDS}
    assert set(choices.FAILURE_STEPS) == {step for kind in KINDS for step in kind.failure_steps}
    assert typing.get_args(clean_request.Kind) == choices.CLEAN_KINDS
    assert typing.get_args(clean_request.Market) == choices.CLEAN_MARKETS
    formats = scenes_request.SubmitScenes.model_fields["format"].annotation
    assert typing.get_args(formats) == choices.SCENES_FORMATS
    assert tuple(BUILT_IN) == choices.SCENES_STEPS
    assert choices.GENERATE_FORMATS == generate_request.FORMATS
    assert choices.SQL_DIALECTS == generate_request.DIALECTS
    assert choices.PRESETS == generate_request.PRESETS
    assert tuple(Oversize) == choices.OVERSIZE


# The constructors a failure's step is the first argument of, and the keyword that names it.
_FAILURE_CALL = re.compile(r"^(fail|Miss|Failure|FailureGroupRow|\w*Failed)$")


def _constants(tree: ast.Module) -> dict[str, str]:
    """A module's top-level NAME = "text" constants."""
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def written_steps() -> dict[str, set[str]]:
    """{module path: the steps its code writes into failure rows}: the first argument of a
    failure's constructor (Failure, Miss, StepFailed, CleanFailed, fail, FailureGroupRow) and
    every step= keyword, as text or a module constant (FETCH)."""
    root = Path(bulkforge.daemon.__file__).parent
    trees = {path: ast.parse(path.read_text()) for path in root.rglob("*.py")}
    constants: dict[str, str] = {}
    for tree in trees.values():
        constants |= _constants(tree)
    found: dict[str, set[str]] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            given = [k.value for k in node.keywords if k.arg == "step"]
            if _FAILURE_CALL.match(callee) and node.args:
                given.append(node.args[0])
            for value in given:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.setdefault(str(path.relative_to(root)), set()).add(value.value)
                elif isinstance(value, ast.Name) and value.id in constants:
                    found.setdefault(str(path.relative_to(root)), set()).add(constants[value.id])
    return found


# A kind's package, by the kind's name.
PACKAGES = {
    "download": "downloader",
    "scenes": "scenes",
    "clean": "cleaner",
    "generate": "generator",
}


def test_bfctl_knows_every_step_bfd_writes() -> None:
    """The steps bfctl takes are every kind's failure_steps, and those are every step the
    daemon's code writes into a failure row: a kind's own in its package, the shared ones
    (transfer) in the kinds that use them."""
    from bulkforge.daemon.registry import KINDS

    written = written_steps()
    everywhere = set().union(*written.values())
    declared = {step for kind in KINDS for step in kind.failure_steps}
    assert {"plan", "register", "connect", "write", "fetch"} <= everywhere, written  # not vacuous
    assert everywhere <= declared, f"written, in no kind's failure_steps: {everywhere - declared}"
    assert declared <= everywhere, f"declared, never written: {declared - everywhere}"
    assert set(choices.FAILURE_STEPS) == declared
    for kind in KINDS:
        own = {
            step
            for path, steps in written.items()
            if path.startswith(PACKAGES[kind.name] + "/")
            for step in steps
        }
        assert own <= set(kind.failure_steps), (kind.name, own - set(kind.failure_steps))


@pytest.mark.parametrize("step", choices.FAILURE_STEPS)
def test_bfctl_takes_every_step_bfd_writes(step) -> None:
    for verb in ("failures", "retry"):
        assert build_parser().parse_args([verb, "j", "--step", step]).step == step


# -- bfd refuses them too, for any API caller --------------------------------------------------


@pytest.fixture(scope="module")
def bfd(tmp_path_factory):
    from conftest import FAST_RETRIES, Daemon

    root = tmp_path_factory.mktemp("words")
    daemon = Daemon(root, [*FAST_RETRIES, "--max-attempts", "1"])
    daemon.start()
    manifest = write_manifest(root / "m.jsonl", [{"url": "http://127.0.0.1:9/a.bin"}])
    daemon.submit("failing", manifest, root / "dest")
    daemon.wait_state("failing", {"failed"})
    yield daemon
    assert daemon.stop() == 0, daemon.log_tail()
    daemon.cleanup()


def submit(bfd, root: Path, **spec) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        bfd.stub.Submit(pb.SubmitRequest(name="refused", **spec), timeout=60)
    return refused.value


def bfd_cases(root: Path) -> list[tuple[str, object, str]]:
    """(label, a call of the stub, the words bfd answers with)."""
    dest = str(root / "out")
    scenes = dict(input=str(root / "m.jsonl"), key="k", url="u", dest=dest)
    return [
        ("list state", lambda s: s.List(pb.ListRequest(states=["runing"])), "'running'?"),
        ("list kind", lambda s: s.List(pb.ListRequest(kind="downlod")), "did you mean 'download'"),
        ("failures step", lambda s: s.Failures(pb.FailuresRequest(name="failing", step="conect")),
         "job 'failing': unknown step 'conect'; did you mean 'connect'?"),
        ("failures unknown step", lambda s: s.Failures(
            pb.FailuresRequest(name="failing", step="no-such-step")),
         "unknown step 'no-such-step' (known: plan, connect, transfer, verify"),
        ("retry step", lambda s: s.Retry(pb.RetryRequest(name="failing", step="verfy")),
         "did you mean 'verify'?"),
        ("clean kinds", lambda s: s.Submit(pb.SubmitRequest(name="c", clean=pb.CleanSpec(
            input=str(root), dest=dest, kinds=["trade"]))),
         "kinds[0]: 'trade' is not one of klines, aggTrades, trades; did you mean 'trades'?"),
        ("clean markets", lambda s: s.Submit(pb.SubmitRequest(name="c", clean=pb.CleanSpec(
            input=str(root), dest=dest, markets=["spott"]))), "did you mean 'spot'?"),
        ("scenes format", lambda s: s.Submit(pb.SubmitRequest(name="s", scenes=pb.ScenesSpec(
            **scenes, format="webdatset"))), "format: 'webdatset' is not one of"),
        ("scenes steps", lambda s: s.Submit(pb.SubmitRequest(name="s", scenes=pb.ScenesSpec(
            **scenes, steps=["fetch", "verfy"]))), "did you mean 'verify'?"),
        ("generate format", lambda s: s.Submit(pb.SubmitRequest(name="g", generate=pb.GenerateSpec(
            preset="courses", rows=5, dest=dest, format="cvs"))), "did you mean 'csv'?"),
        ("generate dialect", lambda s: s.Submit(pb.SubmitRequest(name="g", generate=pb.GenerateSpec(
            preset="courses", rows=5, dest=dest, sql_dialect="postgress"))),
         "did you mean 'postgres'?"),
        ("generate preset", lambda s: s.Submit(pb.SubmitRequest(name="g", generate=pb.GenerateSpec(
            preset="course", rows=5, dest=dest))), "did you mean 'courses'?"),
        ("download oversize", lambda s: s.Submit(pb.SubmitRequest(name="d",
            download=pb.DownloadSpec(manifest=str(root / "m.jsonl"), dest=dest, space="1GB",
                                     oversize="skp"))),
         "did you mean 'skip'?"),
        ("system limit", lambda s: s.System(pb.SystemRequest(set={"bandwith": "1MB/s"})),
         "did you mean 'bandwidth'?"),
        ("empty name", lambda s: s.Status(pb.JobRef(name="")), "name: "),
        ("scenes empty dest", lambda s: s.Submit(pb.SubmitRequest(name="s", scenes=pb.ScenesSpec(
            input=str(root / "m.jsonl"), key="k", url="u"))), "dest: must not be empty"),
    ]  # fmt: skip


def refusals_not_as_told(stub, cases, wrong_words, what: str) -> list[str]:
    """Each case's call must be refused (INVALID_ARGUMENT) with its words and none of the
    wrong ones: what did otherwise, one line each."""
    problems = []
    for label, call, words in cases:
        try:
            call(stub)
        except grpc.RpcError as refused:
            details = refused.details() or ""
            if refused.code() != grpc.StatusCode.INVALID_ARGUMENT or words not in details:
                problems.append(f"{label}: {refused.code().name}: {details}")
            elif wrong_words(details):
                problems.append(f"{label}: {what}: {details}")
        else:
            problems.append(f"{label}: accepted")
    return problems


def test_bfd_refuses_every_unknown_name_in_its_words(bfd) -> None:
    problems = refusals_not_as_told(bfd.stub, bfd_cases(bfd.root), library_words, "library words")
    assert not problems, "\n".join(problems)


def field_cases(root: Path) -> list[tuple[str, object, str]]:
    """(label, a call of the stub, bfd's words): refusals that name the request's fields, as
    an API caller wrote them, never bfctl's flags."""
    dest = str(root / "out")
    url = pb.UrlList(urls=["http://127.0.0.1:9/a.bin"])
    inside = str(root / "in" / "out")

    def generate(**given):
        spec = {"preset": "courses", "rows": 5, "dest": dest, **given}
        return lambda s: s.Submit(pb.SubmitRequest(name="g", generate=pb.GenerateSpec(**spec)))

    def download(**given):
        spec = {"dest": dest, **given}
        return lambda s: s.Submit(pb.SubmitRequest(name="d", download=pb.DownloadSpec(**spec)))

    def clean(**given):
        spec = {"dest": dest, **given}
        return lambda s: s.Submit(pb.SubmitRequest(name="c", clean=pb.CleanSpec(**spec)))

    return [
        ("sql_dialect", generate(format="csv", sql_dialect="mysql"),
         "sql_dialect 'mysql' is for format 'sql' only (this job's format is 'csv')"),
        ("spec and preset", generate(spec_text="x", spec_name="s.toml"),
         "give exactly one of spec_text (a spec file's text, with its spec_name) and preset"),
        ("neither", generate(preset=""), "give exactly one of spec_text"),
        ("relative dest", generate(dest="out"), "dest 'out' must be an absolute path"),
        ("empty spec", generate(preset="", spec_name="empty.toml"),
         "empty.toml: the file is empty: it defines no tables"),
        ("comments only", generate(preset="", spec_name="c.toml", spec_text="# none\n"),
         "c.toml: it defines no tables"),
        ("no tables in JSON", generate(preset="", spec_name="c.json", spec_text="{}"),
         "c.json: it defines no tables"),
        ("clean source", clean(), "give exactly one of input (a directory) and after"),
        ("clean dest inside", clean(input=str(root / "in"), dest=inside),
         "dest must not be inside input"),
        ("download source", download(), "give exactly one source: a manifest, URLs, an S3"),
        ("download margin", download(urls=url, safety_margin=0.5),
         "safety_margin and oversize need space"),
        ("download proceed", download(urls=url, auto_proceed=True), "auto_proceed needs space"),
        ("download include", download(urls=url, include=["*.csv"]),
         "include and exclude filter the s3 and hf listings only"),
        ("download s3", download(s3="s3://bucket/key"), "s3 's3://bucket/key': s3:// names"),
        ("verify batch", lambda s: s.Verify(pb.VerifyRequest(name="failing", batch=-1)),
         "batch must not be negative"),
        ("scenes keep", lambda s: s.Submit(pb.SubmitRequest(name="s", scenes=pb.ScenesSpec(
            input=str(root / "m.parquet"), key="k", url="u", dest=dest, keep=["a", "a"]))),
         "keep names a column twice"),
    ]  # fmt: skip


def test_bfd_names_the_request_fields_not_bfctl_flags(bfd) -> None:
    def flag_or_library_words(details: str) -> bool:
        return bool(re.search(r"(?<![\w-])--[a-z]", details)) or bool(library_words(details))

    problems = refusals_not_as_told(
        bfd.stub, field_cases(bfd.root), flag_or_library_words, "flag or library words"
    )
    assert not problems, "\n".join(problems)


def _flag_words(node: ast.AST) -> str:
    """The text of a string or an f-string, its placeholders as {}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_flag_words(part) if isinstance(part, ast.Constant) else "{}"
                       for part in node.values)  # fmt: skip
    return ""


def test_bfd_speaks_of_flags_only_of_its_own_or_in_advice_of_a_bfctl_command() -> None:
    """Every string of the daemon (not a docstring) that names a --flag names one of bfd's
    own command line, or follows `bfctl` (advice: `bfctl remove J --delete-output`): what
    answers a request names its fields."""
    own = {option for action in bfd_parser()._actions for option in action.option_strings}
    root = Path(bulkforge.daemon.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__main__.py":  # bfd's own flags, parsed there
            continue
        tree = ast.parse(path.read_text())
        documents = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                 for part in node.values}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in documents or id(node) in parts:
                continue
            text = _flag_words(node)
            for flag in re.finditer(r"(?<![\w-])--[a-z][\w-]*", text):
                if flag.group() not in own and "bfctl " not in text[: flag.start()]:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {flag.group()}")
    assert not found, found


def test_a_step_that_exists_is_answered(bfd) -> None:
    report = bfd.stub.Failures(pb.FailuresRequest(name="failing", step="connect"), timeout=60)
    assert sum(group.count for group in report.groups) == 1
    empty = bfd.stub.Failures(pb.FailuresRequest(name="failing", step="verify"), timeout=60)
    assert list(empty.groups) == []


def test_the_typed_client_hears_bfd_words(bfd) -> None:
    with Client(socket=bfd.socket) as client:
        for call in (
            lambda: client.status(""),
            lambda: client.submit("x", pb.ScenesSpec(input="/i", key="k", url="u")),
            lambda: client.failures("failing", step="conect"),
        ):
            with pytest.raises(InvalidArgument) as refused:
                call()
            assert_plain(refused.value.message)


# -- the examples end to end -----------------------------------------------------------


def test_a_manifest_row_out_of_range_is_worded(bfd, tmp_path) -> None:
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"url": "http://127.0.0.1:9/a", "size": -5, "colour": "red"}]
    )
    done = bfd.bfctl(
        "submit", "download", "rows", "--manifest", str(manifest), "--dest", str(tmp_path / "d")
    )
    assert done.returncode == 1
    assert "row 1: size: should be at least 0, not -5" in done.stderr, done.stderr
    assert_plain(done.stderr)


def test_a_misspelt_spec_through_bfctl(bfd, tmp_path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('[tables.t]\nrows = 3\ncolumns = {id = {kind = "sequnce"}}\n')
    done = bfd.bfctl(
        "submit", "generate", "g", "--spec", str(spec), "--rows", "3", "--dest", str(tmp_path / "d")
    )
    assert done.returncode == 1
    assert "unknown kind 'sequnce'; did you mean 'sequence'?" in done.stderr, done.stderr
    assert_plain(done.stderr)


@pytest.mark.parametrize(
    ("toml", "env", "words"),
    [
        ('bandwith = "5MB/s"\n', {}, "unknown setting 'bandwith'; did you mean 'bandwidth'?"),
        ("max_watches = -1\n", {}, "max_watches: should be at least 1, not -1"),
        ('log_level = "debug"\n', {}, "did you mean 'DEBUG'?"),
        ("", {"BULKFORGE_MAX_WATCHES": "many"}, "max_watches: should be a whole number, not"),
    ],
)
def test_bad_settings_are_worded_naming_the_file(tmp_path, toml, env, words) -> None:
    config = tmp_path / "bfd.toml"
    config.write_text(toml)
    done = subprocess.run(
        [sys.executable, "-m", "bulkforge.daemon", "--config", str(config),
         "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "s.sock")],
        capture_output=True, text=True, timeout=60, env={**_environment(), **env},
    )  # fmt: skip
    said("bfd", done.stderr)
    assert done.returncode == 78, done.stderr
    assert words in done.stderr and str(config) in done.stderr, done.stderr
    assert_plain(done.stderr)


def _environment() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("BULKFORGE_")}


def test_the_scan_knows_the_words_it_looks_for() -> None:
    """The fixture that scans every test's messages is not vacuous."""
    with pytest.raises(ValidationError) as raw:
        generator_spec.Spec.model_validate({"tables": {"t": {"rows": "x", "x": 1}}})
    assert library_words(str(raw.value))  # pydantic's own text is caught…
    assert not library_words(describe(raw.value))  # …and bfd's words are not
    assert "Input should" in LIBRARY_WORDS
    grpc_log = "E1207 21:45:04.114263  1234 ssl_transport_security.cc:1234] Handshake failed"
    assert library_words(f"bfctl: cannot reach bfd\n{grpc_log}")
    json.dumps(LIBRARY_WORDS)


# -- argparse in bulkforge's words, for bfctl and bfd ------------------------------------------


def bfd_parser() -> argparse.ArgumentParser:
    from bulkforge.daemon.__main__ import parser

    return parser()


def number_flags() -> list[tuple[str, str, str]]:
    """(program, flag, what it wants) of every int or float flag of bfd's parser."""
    wanted = {int: "a whole number", float: "a number"}
    return [
        ("bfd", action.option_strings[-1], wanted[action.type])
        for action in bfd_parser()._actions
        if action.type in wanted
    ]


ARGPARSE_CASES = [
    ("bfctl", ["list", "--sate", "running"], "unknown flag '--sate'; did you mean '--state'?"),
    ("bfctl", ["lsit"], "unknown 'lsit'; did you mean 'list'?"),
    ("bfctl", ["list", "extra"], "unexpected 'extra'"),
    ("bfd", ["--log-level", "debug"], "unknown 'debug'; did you mean 'DEBUG'?"),
    ("bfd", ["--bandwith", "3"], "unknown flag '--bandwith'; did you mean '--bandwidth'?"),
    *((program, [flag, "x"], f"argument {flag}: 'x' is not {wanted}")
      for program, flag, wanted in number_flags()),
]  # fmt: skip


def test_bfd_has_number_flags_to_check() -> None:
    assert len(number_flags()) >= 5


@pytest.mark.parametrize(("program", "argv", "words"), ARGPARSE_CASES)
def test_argparse_speaks_our_words(program, argv, words, capsys) -> None:
    parser = build_parser() if program == "bfctl" else bfd_parser()
    with pytest.raises(SystemExit) as ended:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    said(program, err)
    assert ended.value.code == EXIT_USAGE
    assert words in err, err
    assert "invalid" not in err and "unrecognized" not in err, err


def test_the_scan_hears_what_bfd_and_bfctl_say(bfd) -> None:
    """conftest keeps every refusal a test's stub hears and everything bfctl prints on
    stderr, so its check at teardown sees them."""
    import conftest

    with pytest.raises(grpc.RpcError):
        bfd.stub.Status(pb.JobRef(name="nope-stub"), timeout=60)
    stream = bfd.stub.Watch(pb.WatchRequest(name="nope-watch"), timeout=60)
    with pytest.raises(grpc.RpcError):
        next(stream)
    bfd.bfctl("status", "nope-bfctl")
    heard = " ".join(text for _, text in conftest._SAID)
    assert all(name in heard for name in ("nope-stub", "nope-watch", "nope-bfctl")), heard


def test_a_test_whose_messages_hold_library_words_fails(tmp_path) -> None:
    """The check at teardown is not vacuous: a test that hears pydantic's words fails."""
    import shutil

    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_leak.py").write_text(
        "from conftest import said\n\n"
        "def test_plain():\n    said('bfd', 'rows: should be a whole number')\n\n"
        "def test_leak():\n    said('bfd', 'rows: Input should be a valid integer')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "2 passed, 1 error" in done.stdout, done.stdout  # the leak fails at teardown
    assert "ERROR test_leak.py::test_leak" in done.stdout, done.stdout


PARENT = '[tables.students.columns]\nid = {kind = "sequence", primary_key = true}\n'


@pytest.mark.parametrize(
    ("columns", "words"),
    [
        ('sid = {kind = "foreign_key", table = "studnets", column = "id"}',
         "tables.e.columns.sid: foreign key to a missing table 'studnets'; did you mean "
         "'students'?"),
        ('sid = {kind = "foreign_key", table = "students", column = "idd"}',
         "foreign key to a missing column students.idd; did you mean 'id'?"),
    ],
)  # fmt: skip
def test_a_misspelt_reference_gets_the_nearest_name(columns, words) -> None:
    text = PARENT + "[tables.e.columns]\n" + columns + "\n"
    with pytest.raises(ValueError) as refused:
        generator_spec.load(text, "s.toml").check(10)
    assert words in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- 1", "s.yaml: should be a table (fields: tables), not a list"),
        ("tables: {t: 3}", "s.yaml: tables.t: should be a table (fields: rows, scale, columns"),
    ],
)
def test_a_document_of_the_wrong_shape_says_what_it_should_hold(text, words) -> None:
    with pytest.raises(Exception) as refused:
        generator_spec.load(text, "s.yaml")
    assert words in str(refused.value), str(refused.value)
    assert_plain(str(refused.value))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"url": "http://127.0.0.1:9/a"}\n{"url": \n', "row 2: not valid JSON at column 9: "
         "a value is missing"),
        ('{"url": "http://127.0.0.1:9/a"} {"url": "x"}\n', "row 1: not valid JSON at column 33: "
         "more after the end of the value (one object per line)"),
        ('{"url": "http://127.0.0.1:9/a", "size": "big"}\n', "row 1: size: should be a whole "
         "number, not 'big'"),
    ],
)  # fmt: skip
def test_a_manifest_row_that_cannot_be_read_says_where(bfd, tmp_path, content, words) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(content)
    done = bfd.bfctl(
        "submit", "download", "rows", "--manifest", str(manifest), "--dest", str(tmp_path / "d")
    )
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert "Expecting" not in done.stderr


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_spec_file_is_a_usage_error_naming_it(tmp_path, content) -> None:
    """bfctl can know a spec file of nothing defines no tables: exit 2 before bfd is asked
    (a socket nobody listens on would exit 3). A spec of comments only bfd refuses alike."""
    spec = tmp_path / "empty.toml"
    spec.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "bulkforge.client", "--socket", str(tmp_path / "none.sock"),
         "submit", "generate", "g", "--spec", str(spec), "--rows", "10", "--dest", "/d"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    said("bfctl --spec", done.stderr)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"--spec {spec}: the file is empty: it defines no tables" in done.stderr, done.stderr


class _Times(BaseModel):
    day: dt.date | None = None
    moment: dt.datetime | None = None
    clock: dt.time | None = None
    span: dt.timedelta | None = None


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("day", "2020-13-01", "day: should be a date (YYYY-MM-DD), not '2020-13-01' (its month "
         "is not 1 to 12)"),
        ("day", "2020-02-30", "should be a date (YYYY-MM-DD), not '2020-02-30' (no such day"),
        ("day", "yesterday", "should be a date (YYYY-MM-DD), not 'yesterday'"),
        ("moment", "2020-13-01T00:00", "moment: should be a date and time (ISO 8601"),
        ("moment", "soon", "moment: should be a date and time (ISO 8601"),
        ("clock", "25:00", "clock: should be a time of day (HH:MM[:SS]), not '25:00' (its hour "
         "is not 0 to 23)"),
        ("span", "long", "span: should be a duration"),
    ],
)  # fmt: skip
def test_a_date_or_time_says_what_it_should_look_like(field, value, words) -> None:
    """By pydantic's error type for dates, times and datetimes: never "not a value bfd can
    take here"."""
    with pytest.raises(ValidationError) as refused:
        _Times.model_validate({field: value})
    described = describe(refused.value, model=_Times)
    assert words in described, described
    assert "can take here" not in described
    assert_plain(described)


def test_a_bad_date_in_a_spec_says_a_date_is_expected() -> None:
    text = '[tables.t]\nrows = 3\n[tables.t.columns]\nd = {kind = "date", start = "2020-13-01", '
    text += 'end = "2021-01-01"}\n'
    with pytest.raises(Exception) as refused:
        generator_spec.load(text, "s.toml")
    assert "tables.t.columns.d.start: should be a date (YYYY-MM-DD), not '2020-13-01'" in str(
        refused.value
    ), refused.value


@pytest.mark.parametrize(
    ("value", "written"),
    [(1e9, "1,000,000,000"), (10**10, "10,000,000,000"), (0.5, "0.5"), (1e-5, "0.00001"),
     (3600.0, "3,600"), (0, "0"), (2.5e10, "25,000,000,000")],
)  # fmt: skip
def test_bounds_are_printed_as_people_write_them(value, written) -> None:
    from bulkforge.proto.text import number

    assert number(value) == written


def test_bfd_bounds_are_printed_as_people_write_them() -> None:
    class _Bounded(BaseModel):
        wait: float = pydantic.Field(default=1, le=1e9)
        share: float = pydantic.Field(default=1, ge=1e-5)

    for field, value, words in (("wait", 2e9, "at most 1,000,000,000"),
                                ("share", 0, "at least 0.00001")):  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            _Bounded.model_validate({field: value})
        assert words in describe(refused.value, model=_Bounded), describe(refused.value)


@pytest.mark.parametrize("target", ["127.0.0.1:0", "[::1]:0", "127.0.0.1:65536"])
def test_a_target_needs_a_port_a_server_listens_on(target, capsys) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bulkforge.client", "--target", target, "list"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE, done.stderr
    assert f"target {target!r} is not HOST:PORT with a port from 1 to 65535" in done.stderr


def test_a_step_only_planning_writes_is_asked_for_through_bfctl(bfd, tmp_path) -> None:
    """A file larger than --space fails at step plan (error oversize): bfctl takes the step
    for failures and retry (it refused it, exit 2, before)."""
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [{"url": "http://127.0.0.1:9/small", "size": 10},
         {"url": "http://127.0.0.1:9/big", "size": 5000}],
    )  # fmt: skip
    submitted = bfd.bfctl(
        "submit", "download", "oversized", "--manifest", str(manifest),
        "--dest", str(tmp_path / "d"), "--space", "1000",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    failures = bfd.bfctl_json("failures", "oversized", "--step", "plan")
    groups = [(g["step"], g["error_class"], g["count"]) for g in failures["groups"]]
    assert groups == [("plan", "oversize", 1)], failures
    retried = bfd.bfctl("retry", "oversized", "--step", "plan")
    assert retried.returncode == 0, retried.stderr
    bfd.bfctl("cancel", "oversized")
