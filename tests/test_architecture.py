"""The layering ARCHITECTURE.md promises, checked by walking the imports with `ast`.

Job kinds are the packages under daemon/ that hold a `kind.py`. The core and the
shared modules import no kind; kinds do not import each other; only the registry
names them; and no module outside a kind compares anything with a kind's name.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bulkforge.daemon.item_table import ItemTable
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
