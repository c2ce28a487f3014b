"""The layering ARCHITECTURE.md promises, checked by walking the imports with `ast`.

Job kinds are the packages under daemon/ that hold a `kind.py`. The core and the
shared modules import no kind; kinds do not import each other; only the registry
names them; and no module outside a kind compares anything with a kind's name.
The data side too: a kind's tables are in its package (tables.sql, migrations/), none
in the core's schema.sql, named in SQL by that kind alone; no CHECK lists the kinds.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from bulkforge.daemon import registry, store
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
