"""The layering ARCHITECTURE.md promises, checked by walking the imports with `ast`.

Job kinds are the packages under daemon/ that hold a `kind.py`. The core and the
shared modules import no kind; kinds do not import each other; only the registry
names them; and no module outside a kind compares anything with a kind's name.
The data side too: a kind's tables are in its package (tables.sql, migrations/), none
in the core's schema.sql, named in SQL by that kind alone; no CHECK lists the kinds.
"""

import ast
import importlib
import re
import subprocess
import sys
from enum import StrEnum
from pathlib import Path

import apsw
import pytest

from bulkforge.daemon import registry, store
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.machines import ITEM_TONES, IllegalTransition, Machine, Tone, item_machine
from bulkforge.daemon.pipeline import ItemRows
from bulkforge.daemon.registry import KINDS

DAEMON = Path(__file__).resolve().parent.parent / "daemon"
PREFIX = "bulkforge.daemon."
REGISTRY = DAEMON / "registry.py"
# The core: nothing here may know that any kind exists.
CORE = ("store", "machines", "jobs", "governor", "errors")


def kind_packages() -> list[str]:
    return sorted(p.parent.name for p in DAEMON.glob("*/kind.py"))


def daemon_modules() -> list[Path]:
    return sorted(DAEMON.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every bulkforge.daemon module path imports (module or package), by dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name.removeprefix(PREFIX) for name in names if name.startswith(PREFIX)}


def kinds_imported(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported(path)} & set(kind_packages())


def owner(path: Path) -> str:
    """The top-level part of daemon/ a module belongs to: a package name or a module name."""
    return path.relative_to(DAEMON).parts[0].removesuffix(".py")


def test_the_tree_has_kinds_to_check() -> None:
    assert {"downloader", "scenes"} <= set(kind_packages())


def test_core_modules_import_no_kind() -> None:
    offenders = {
        str(path.relative_to(DAEMON)): kinds_imported(path)
        for path in daemon_modules()
        if owner(path) in CORE and kinds_imported(path)
    }
    assert offenders == {}


def test_kinds_do_not_import_each_other() -> None:
    offenders = {
        str(path.relative_to(DAEMON)): kinds_imported(path) - {owner(path)}
        for path in daemon_modules()
        if owner(path) in kind_packages() and kinds_imported(path) - {owner(path)}
    }
    assert offenders == {}


def test_only_the_registry_imports_the_kinds() -> None:
    offenders = {
        str(path.relative_to(DAEMON)): kinds_imported(path)
        for path in daemon_modules()
        if owner(path) not in kind_packages() and path != REGISTRY and kinds_imported(path)
    }
    assert offenders == {}


def test_nothing_outside_a_kind_names_one() -> None:
    """A string equal to a kind's stored name ("download", "scenes") only inside that kind."""
    names = {kind.name for kind in KINDS}
    assert names >= {"download", "scenes"}
    offenders = []
    for path in daemon_modules():
        if owner(path) in kind_packages():
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(DAEMON)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The walker is not vacuous: an import of a kind from a core module is found."""
    planted = tmp_path / "jobs.py"
    planted.write_text(
        "from bulkforge.daemon.scenes import records\nimport bulkforge.daemon.downloader.files\n"
    )
    assert {name.split(".")[0] for name in imported(planted)} == {"scenes", "downloader"}


# The SQL an ItemTable holds for every kind (item_table.py), by what it does: a kind's
# module holding a statement like one of these is a copy of it.
SHARED_SQL = {
    "counts its items by state": re.compile(r"group\s+by\s+state\b|\bfrom\s+\w+_counts\b", re.I),
    "groups its failures": re.compile(
        r"error_class.*group\s+by|group\s+by.*error_class", re.I | re.S
    ),
    "lists its failed items": re.compile(
        r"coalesce\(error_class.*\battempts\b.*state\s*=\s*'failed'", re.I | re.S
    ),
    "buckets its throughput": re.compile(r"finished_at\s*/", re.I),
}
# The shared moves, by the core function an ItemTable calls for them.
SHARED_MOVES = ("requeue_failed", "repair_running")


def statements(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module with its line, f-strings with their holes as {}
    (adjacent literals are one constant already)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            found.append((node.lineno, "".join(map(str, parts))))
    return found


def item_table_copies(path: Path) -> list[str]:
    """What of the ItemTable's shared SQL the module writes again, or calls around it."""
    found = [
        f"{path.name}:{line} {what}"
        for line, text in statements(path)
        for what, pattern in SHARED_SQL.items()
        if pattern.search(text)
    ]
    found += [
        f"{path.name}:{node.lineno} calls {name}"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if (name := _called_name(node)) in SHARED_MOVES
    ]
    return found


def _called_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return getattr(node.func, "id", "") or getattr(node.func, "attr", "")
    return ""


def test_no_kind_writes_the_item_tables_shared_sql_again() -> None:
    """Counts by state, failures grouped and listed, throughput buckets, retry and repair
    are written once, in item_table.py: a kind declares its ItemTable instead."""
    offenders = [
        f"{path.relative_to(DAEMON).parent}/{copy}"
        for path in daemon_modules()
        if owner(path) in kind_packages()
        for copy in item_table_copies(path)
    ]
    assert offenders == []


def test_every_item_rows_kind_declares_an_item_table() -> None:
    item_kinds = [kind for kind in KINDS if issubclass(kind, ItemRows)]
    assert {kind.name for kind in item_kinds} >= {"scenes", "clean", "generate"}
    assert {
        kind.name: type(kind.item_table).__name__
        for kind in item_kinds
        if not isinstance(kind.item_table, ItemTable)
    } == {}


# What the kinds' records modules held before item_table.py: each one must be found.
COPIES = {
    "counts its items by state": (
        '"SELECT state, count(*), sum(size) FROM clean_zips WHERE job_id = ? GROUP BY state"'
    ),
    "counts its items by state ": '"SELECT state, items, bytes FROM scene_counts WHERE job_id = ?"',
    "groups its failures": (
        "f\"SELECT step, error_class, count(*) FROM {table} WHERE state = 'failed' \"\n"
        '"GROUP BY 1, 2"'
    ),
    "lists its failed items": (
        "\"SELECT path, '', coalesce(step, ''), coalesce(error_class, ''), \"\n"
        "\"coalesce(error, ''), attempts FROM clean_zips WHERE job_id = ? \"\n"
        "\"AND state = 'failed' ORDER BY path LIMIT ?\""
    ),
    "buckets its throughput": (
        '"SELECT finished_at / ?1 * ?1, count(*) FROM scenes WHERE job_id = ?2 GROUP BY 1"'
    ),
    "calls requeue_failed": "requeue_failed(conn, 'scenes', moves, job_id, step, error)",
    "calls repair_running": "jobs.repair_running(conn, 'parts', moves)",
}


@pytest.mark.parametrize("what", sorted(COPIES))
def test_the_copy_check_sees_a_copy(tmp_path: Path, what: str) -> None:
    """The check is not vacuous: each statement the kinds once wrote three times is found."""
    planted = tmp_path / "records.py"
    planted.write_text(f"QUERY = (\n{COPIES[what]}\n)\n")
    assert [copy.split(" ", 1)[1] for copy in item_table_copies(planted)] == [what.strip()]


def test_architecture_md_names_every_part_of_the_daemon() -> None:
    """The code map stays true: each module and package of daemon/ is named in it."""
    text = (DAEMON.parent / "ARCHITECTURE.md").read_text()
    parts = [f"{p.name}/" for p in DAEMON.iterdir() if (p / "__init__.py").exists()]
    parts += [p.name for p in DAEMON.glob("*.py") if p.name != "__init__.py"]
    assert sorted(part for part in parts if part not in text) == []


@pytest.mark.parametrize(
    "module", ["bulkforge.daemon.cleaner.kind", "bulkforge.daemon.generator.kind"]
)
def test_a_kind_leaves_what_only_its_work_needs_to_the_workers(module: str) -> None:
    """bfd imports the kind; pyarrow and numpy are imported by the worker doing the work."""
    code = f"import sys, {module}; print(sorted({{'pyarrow', 'numpy'}} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def test_an_idle_daemon_has_loaded_no_pipeline_library(daemon) -> None:
    """pyarrow and numpy are loaded by the first job that needs them; pycurl only by workers."""
    daemon.bfctl_json("list")
    maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
    loaded = {name for name in ("pyarrow", "numpy", "pycurl") if f"/{name}" in maps}
    assert loaded == set()


# -- where state machines live -----------------------------------------------------------------

MACHINES = DAEMON / "machines"


def users_of(module: str) -> set[str]:
    """The parts of daemon/ (owners) that import a module, the module's own package aside."""
    own = module.split(".")[0]
    return {
        owner(path)
        for path in daemon_modules()
        if owner(path) != own and any(name == module for name in imported(path))
    }


def only_kinds_use(users: set[str]) -> bool:
    """A machine only one kind uses is that kind's: its place is in the kind's package."""
    return len(users) <= 1 and users <= set(kind_packages())


@pytest.mark.parametrize(
    ("users", "kinds_own_it"),
    [
        ({"scenes"}, True),
        (set(), True),
        ({"jobs", "scenes"}, False),
        ({"downloader", "scenes"}, False),
        ({"api"}, False),
    ],
)
def test_the_machine_placement_rule_sees_a_kinds_machine(users: set[str], kinds_own_it) -> None:
    assert only_kinds_use(users) is kinds_own_it


def test_the_cores_machines_are_kind_neutral() -> None:
    """daemon/machines/ holds the factory and the machines the core or several kinds use."""
    modules = [f"machines.{p.stem}" for p in sorted(MACHINES.glob("*.py")) if p.stem != "__init__"]
    assert {"machines.job", "machines.batch"} <= set(modules)
    kinds_own = {module: users_of(module) for module in modules if only_kinds_use(users_of(module))}
    assert kinds_own == {}


def test_each_kind_declares_its_item_machine_in_its_package() -> None:
    """kind.item_machine is a machines.Machine whose states live in the kind's machine.py."""
    for kind in KINDS:
        package = kind.__module__.removeprefix(PREFIX).split(".")[0]
        module = importlib.import_module(f"{PREFIX}{package}.machine")
        assert isinstance(kind.item_machine, Machine), kind.name
        assert module.MACHINE is kind.item_machine, kind.name
        assert kind.item_machine.states.__module__ == module.__name__, kind.name


@pytest.mark.parametrize("package", kind_packages())
def test_a_kinds_machine_is_a_declaration_not_a_copy(package: str) -> None:
    """Its machine.py declares states and hands them to the factory: no move checking of its
    own, and an item machine of the shared shape is built by `item_machine`."""
    path = DAEMON / package / "machine.py"
    tree = ast.parse(path.read_text(), str(path))
    functions = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert functions == [], f"{path.relative_to(DAEMON)} defines {functions}"
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert calls & {"Machine", "item_machine"}, f"{path.relative_to(DAEMON)} declares no machine"
    module = importlib.import_module(f"{PREFIX}{package}.machine")
    if {state.value for state in module.MACHINE.states} == set(ITEM_TONES):
        assert "item_machine" in calls, f"{path.relative_to(DAEMON)} copies the item shape"


def test_the_recipe_names_every_module_each_kind_has() -> None:
    """What every kind's package holds (kind.py, machine.py, …) the recipe for a kind names."""
    text = (DAEMON.parent / "ARCHITECTURE.md").read_text()
    recipe = text[text.index("## Adding a job kind") :]
    common = set.intersection(
        *({p.name for p in (DAEMON / package).glob("*.py")} for package in kind_packages())
    )
    assert sorted(name for name in common - {"__init__.py"} if f"`{name}`" not in recipe) == []


class _Light(StrEnum):
    ON = "on"
    OFF = "off"


class _Item(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class _NotItem(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"


LIGHT_TONE = {_Light.ON: Tone.ACTIVE, _Light.OFF: Tone.IDLE}
SWITCH = frozenset({(_Light.ON, _Light.OFF), (_Light.OFF, _Light.ON)})


@pytest.mark.parametrize(
    "declare",
    [
        pytest.param(lambda: Machine("light", _Light, {_Light.ON: Tone.OK}, SWITCH), id="untoned"),
        pytest.param(
            lambda: Machine("light", _Light, LIGHT_TONE, SWITCH | {(_Light.ON, _Item.DONE)}),
            id="a move to another machine's state",
        ),
        pytest.param(
            lambda: Machine("light", _Light, {**LIGHT_TONE, _Item.DONE: Tone.OK}, SWITCH),
            id="a tone of another machine's state",
        ),
        pytest.param(lambda: Machine("light", _Light, LIGHT_TONE, frozenset()), id="no moves"),
        pytest.param(lambda: item_machine("thing", _NotItem), id="not the item states"),
        pytest.param(lambda: item_machine("light", _Light), id="two states"),
    ],
)
def test_a_bad_machine_declaration_is_refused_when_declared(declare) -> None:
    with pytest.raises(ValueError, match=r"machine (light|thing)"):
        declare()


def test_an_item_machine_is_the_shared_shape_plus_the_kinds_moves() -> None:
    base = item_machine("thing", _Item)
    assert list(base.tone.items()) == [(_Item(s), tone) for s, tone in ITEM_TONES.items()]
    more = item_machine("thing", _Item, also={(_Item.DONE, _Item.PENDING)})
    assert more.moves == base.moves | {(_Item.DONE, _Item.PENDING)}
    more.check_transition(_Item.DONE, _Item.PENDING)
    with pytest.raises(IllegalTransition, match="thing: done -> pending"):
        base.check_transition(_Item.DONE, _Item.PENDING)


def test_the_schema_leaves_the_set_of_kinds_to_the_registry(tmp_path: Path) -> None:
    """No CHECK on jobs.kind: a new kind must not mean rebuilding jobs, every table's parent."""
    conn = store.open_connection(tmp_path / "state.db")
    store.apply_schema(conn)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()
    kind = next(line for line in sql.splitlines() if line.strip().startswith("kind "))
    assert "CHECK" not in kind.upper(), f"jobs.kind is checked in the schema: {kind.strip()}"
    quoted = set(re.findall(r"'([^']*)'", sql))
    assert not {k.name for k in KINDS} & quoted, f"the jobs table names a kind: {sql}"


def package_of(kind: type) -> str:
    return kind.__module__.split(".")[2]


def objects_made(sql: str, before: str = "") -> set[tuple[str, str]]:
    """The (type, name) of every table, index and trigger `sql` makes on top of `before`."""
    conn = apsw.Connection(":memory:")
    conn.execute(before)
    had = set(conn.execute("SELECT type, name FROM sqlite_master"))
    try:
        conn.execute(sql)
    except apsw.SQLError as exc:
        pytest.fail(f"{exc}: does schema.sql make what a kind's tables.sql makes?\n{sql[:300]}")
    return set(conn.execute("SELECT type, name FROM sqlite_master")) - had


def kind_tables() -> dict[str, set[str]]:
    """Each kind's package -> the tables its tables.sql makes on top of the core's."""
    return {
        package_of(kind): {
            name for type_, name in objects_made(kind.tables().sql, store.schema_sql())
            if type_ == "table"
        }
        for kind in KINDS
    }  # fmt: skip


def test_every_kind_owns_its_tables_and_the_registry_hands_them_over_in_order() -> None:
    """tables.sql and migrations/0001_baseline.sql in each kind's package, each made on the
    core's tables alone; registry.schemas() hands them to the store in the registry's order."""
    for kind in KINDS:
        package = DAEMON / package_of(kind)
        assert (package / "tables.sql").is_file(), f"{package.name}/ has no tables.sql"
        assert (package / "migrations" / "0001_baseline.sql").is_file(), package.name
    assert [name for name, _ in registry.schemas()] == [kind.name for kind in KINDS]
    assert all(kind_tables().values()), "a kind's tables.sql makes no table"


def test_no_kinds_table_index_or_trigger_in_the_core_schema() -> None:
    """The core's schema.sql makes none of what a kind's tables.sql makes, and its tables'
    foreign keys point at core tables only."""
    core = objects_made(store.schema_sql())
    for kind in KINDS:
        theirs = objects_made(kind.tables().sql, store.schema_sql())
        assert core.isdisjoint(theirs), f"schema.sql makes {kind.name}'s {core & theirs}"
    conn = apsw.Connection(":memory:")
    conn.execute(store.schema_sql())
    core_tables = {name for type_, name in core if type_ == "table"}
    for table in core_tables:
        parents = {row[2] for row in conn.execute(f"PRAGMA foreign_key_list({table})")}
        assert parents <= core_tables, f"core table {table} references {parents - core_tables}"


def sql_naming(table: str) -> re.Pattern:
    return re.compile(rf"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|ON)\s+{table}\b")


def test_a_kinds_tables_are_queried_by_that_kind_alone() -> None:
    """No core module and no other kind writes SQL naming a kind's table."""
    owners = {table: package for package, tables in kind_tables().items() for table in tables}
    offenders = [
        f"{path.relative_to(DAEMON)} names {table} ({package}'s)"
        for path in daemon_modules()
        for table, package in owners.items()
        if owner(path) != package and sql_naming(table).search(path.read_text())
    ]
    assert offenders == []
    assert sql_naming("files").search("SELECT id FROM files WHERE job_id = ?")
