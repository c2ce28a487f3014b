"""The committed gRPC stubs are exactly what proto/generate.py makes from the .proto sources."""

import difflib
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from bulkforge.proto import generate

REPO = Path(__file__).resolve().parents[1]
STUBS = REPO / "proto" / "bulkforge" / "v1"
FIX = "run `python proto/generate.py` and commit the regenerated stubs"
RPCS = {
    "Submit",
    "List",
    "Status",
    "Pause",
    "Resume",
    "Cancel",
    "Remove",
    "Retry",
    "Failures",
    "Stats",
    "System",
    "Analyze",
    "Plan",
    "Continue",
    "Swap",
    "Verify",
    "Export",
    "Watch",
}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    written = generate.generate(out)
    assert written, "generate() wrote nothing"
    return out


def committed_stubs() -> list[str]:
    return sorted(p.name for p in STUBS.glob("*_pb2*.py*"))


def test_generator_writes_the_committed_set_of_files(regenerated: Path) -> None:
    fresh = sorted(p.name for p in regenerated.iterdir())
    assert fresh == committed_stubs(), (
        f"proto/bulkforge/v1 holds {committed_stubs()}, the generator writes {fresh}; {FIX}"
    )
    for proto in STUBS.glob("*.proto"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (STUBS / f"{proto.stem}{suffix}").exists(), (
                f"{proto.stem}{suffix} missing; {FIX}"
            )


@pytest.mark.parametrize("name", committed_stubs())
def test_committed_stub_is_byte_identical_to_a_fresh_one(regenerated: Path, name: str) -> None:
    committed = (STUBS / name).read_bytes()
    fresh = (regenerated / name).read_bytes()
    if committed != fresh:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.decode(errors="replace").splitlines(keepends=True),
                    fresh.decode(errors="replace").splitlines(keepends=True),
                    f"committed/{name}",
                    f"regenerated/{name}",
                )
            )[:40]
        )
        pytest.fail(f"proto/bulkforge/v1/{name} is stale or hand-edited; {FIX}\n{diff}")


def test_the_generator_script_runs_as_documented(tmp_path: Path) -> None:
    """`python proto/generate.py OUT` is the command the failures above ask for."""
    done = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == committed_stubs()


def test_stubs_import_cleanly_in_a_fresh_interpreter() -> None:
    """No warnings (e.g. a protobuf runtime older than the generator) and no errors."""
    code = (
        "import warnings; warnings.simplefilter('error');"
        "from bulkforge.proto.bulkforge.v1 import bulkforge_pb2, bulkforge_pb2_grpc"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_service_has_every_rpc() -> None:
    pb = importlib.import_module("bulkforge.proto.bulkforge.v1.bulkforge_pb2")
    pb_grpc = importlib.import_module("bulkforge.proto.bulkforge.v1.bulkforge_pb2_grpc")
    service = pb.DESCRIPTOR.services_by_name["Bulkforge"]
    assert service.full_name == "bulkforge.v1.Bulkforge"
    methods = {method.name: method for method in service.methods}
    assert set(methods) == RPCS
    streaming = {name for name, m in methods.items() if m.server_streaming or m.client_streaming}
    assert streaming == {"Watch"}
    assert methods["Watch"].server_streaming and not methods["Watch"].client_streaming
    for name in RPCS:
        assert callable(getattr(pb_grpc.BulkforgeServicer, name)), name
    assert hasattr(pb_grpc, "BulkforgeStub")
    assert callable(pb_grpc.add_BulkforgeServicer_to_server)
