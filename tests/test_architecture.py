"""The layering ARCHITECTURE.md promises, checked by walking the imports with `ast`.

Job kinds are the packages under daemon/ that hold a `kind.py`. The core and the
shared modules import no kind; kinds do not import each other; only the registry
names them; and no module outside a kind compares anything with a kind's name.
"""

import ast
import importlib
import subprocess
import sys
from enum import StrEnum
from pathlib import Path

import pytest

from bulkforge.daemon.machines import ITEM_TONES, IllegalTransition, Machine, Tone, item_machine
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
