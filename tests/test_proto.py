"""The committed gRPC stubs are exactly what proto/generate.py makes from the .proto sources,
and every part of the contract carries a comment, since other languages generate from it."""

import difflib
import importlib
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FileDescriptorProto,
    FileDescriptorSet,
)
from grpc_tools import protoc

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


# Field numbers of descriptor.proto, which SourceCodeInfo paths are made of.
FILE_MESSAGES, FILE_ENUMS, FILE_SERVICES = 4, 5, 6
MESSAGE_FIELDS, MESSAGE_NESTED, MESSAGE_ENUMS, MESSAGE_ONEOFS = 2, 3, 4, 8
ENUM_VALUES, SERVICE_METHODS = 2, 2


Element = tuple[str, str, tuple[int, ...]]


def compiled(include: str, protos: list[str], out: Path) -> FileDescriptorSet:
    """The protos as protoc parsed them, with their comments (SourceCodeInfo); include is
    an -I argument (DIR, or VIRTUAL=DIR as proto/generate.py maps the sources)."""
    descriptors = out / "contract.desc"
    args = [
        "grpc_tools.protoc",
        f"-I{include}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
        "--include_source_info",
        f"--descriptor_set_out={descriptors}",
        *protos,
    ]
    assert protoc.main(args) == 0, f"protoc failed on {protos}"
    return FileDescriptorSet.FromString(descriptors.read_bytes())


def uncommented(descriptors: FileDescriptorSet) -> list[str]:
    """Each service, RPC, message, field, oneof, enum and enum value without a leading or
    trailing comment, as "what full.name"."""
    missing = []
    for file in descriptors.file:
        comments = {
            tuple(at.path): (at.leading_comments + at.trailing_comments).strip()
            for at in file.source_code_info.location
        }
        for what, name, path in _elements(file):
            if not comments.get(path):
                missing.append(f"{what} {name}")
    return missing


def _elements(file: FileDescriptorProto) -> Iterator[Element]:
    """(what, full name, SourceCodeInfo path) of every part of a file a reader needs explained."""
    package = f"{file.package}." if file.package else ""
    for i, message in enumerate(file.message_type):
        yield from _message(message, package + message.name, (FILE_MESSAGES, i))
    for i, enum in enumerate(file.enum_type):
        yield from _enum(enum, package + enum.name, (FILE_ENUMS, i))
    for i, service in enumerate(file.service):
        name = package + service.name
        yield "service", name, (FILE_SERVICES, i)
        for j, method in enumerate(service.method):
            yield "rpc", f"{name}.{method.name}", (FILE_SERVICES, i, SERVICE_METHODS, j)


def _message(message: DescriptorProto, name: str, path: tuple[int, ...]) -> Iterator[Element]:
    if message.options.map_entry:
        return  # protoc's own entry type of a map field; the field carries the comment
    yield "message", name, path
    for i, field in enumerate(message.field):
        yield "field", f"{name}.{field.name}", (*path, MESSAGE_FIELDS, i)
    synthetic = {f.oneof_index for f in message.field if f.proto3_optional}
    for i, oneof in enumerate(message.oneof_decl):
        if i not in synthetic:  # the hidden oneof of a proto3 `optional` field
            yield "oneof", f"{name}.{oneof.name}", (*path, MESSAGE_ONEOFS, i)
    for i, nested in enumerate(message.nested_type):
        yield from _message(nested, f"{name}.{nested.name}", (*path, MESSAGE_NESTED, i))
    for i, enum in enumerate(message.enum_type):
        yield from _enum(enum, f"{name}.{enum.name}", (*path, MESSAGE_ENUMS, i))


def _enum(enum: EnumDescriptorProto, name: str, path: tuple[int, ...]) -> Iterator[Element]:
    yield "enum", name, path
    for i, value in enumerate(enum.value):
        yield "enum value", f"{name}.{value.name}", (*path, ENUM_VALUES, i)


def test_every_part_of_the_contract_is_commented(tmp_path: Path) -> None:
    root = REPO / "proto"
    protos = sorted(f"{generate.VIRTUAL_ROOT}/{p.relative_to(root)}" for p in STUBS.glob("*.proto"))
    missing = uncommented(compiled(f"{generate.VIRTUAL_ROOT}={root}", protos, tmp_path))
    assert not missing, (
        f"{len(missing)} part(s) of the gRPC contract have no comment; say what each means to a "
        "caller in another language (units, what 0 or empty means, accepted values):\n"
        + "\n".join(missing)
    )


def test_the_comment_check_finds_each_kind_of_uncommented_part(tmp_path: Path) -> None:
    """The check above sees leading and trailing comments and misses nothing uncommented."""
    (tmp_path / "probe.proto").write_text(
        """syntax = "proto3";
package probe;
// Commented.
service Probe {
  rpc Bare(Outer) returns (Outer);
  rpc Said(Outer) returns (Outer);  // Trailing.
}
// Commented.
message Outer {
  // Commented.
  string said = 1;
  string bare = 2;
  map<string, int64> counts = 3;  // Trailing.
  optional int32 maybe = 4;  // Trailing.
  oneof choice {
    string left = 5;  // Trailing.
  }
  message Inner {}
  // Commented.
  enum Colour {
    COLOUR_UNSPECIFIED = 0;  // Trailing.
    RED = 1;
  }
}
enum Loose {
  // Commented.
  LOOSE_UNSPECIFIED = 0;
}
"""
    )
    out = tmp_path / "out"
    out.mkdir()
    assert uncommented(compiled(str(tmp_path), ["probe.proto"], out)) == [
        "field probe.Outer.bare",
        "oneof probe.Outer.choice",
        "message probe.Outer.Inner",
        "enum value probe.Outer.Colour.RED",
        "enum probe.Loose",
        "rpc probe.Probe.Bare",
    ]
