"""Regenerate the committed Python stubs from the .proto sources.

    python -m bulkforge.proto.generate [OUT_DIR]

The sources live at proto/bulkforge/v1/*.proto and install as
bulkforge.proto.bulkforge.v1; the include root is mapped to that import path so
the generated modules import each other by their installed names.
"""

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

VIRTUAL_ROOT = "bulkforge/proto"


def generate(out_dir: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto into out_dir."""
    source_root = Path(__file__).resolve().parent
    protos = sorted((source_root / "bulkforge" / "v1").glob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{VIRTUAL_ROOT}={source_root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(f"{VIRTUAL_ROOT}/{p.relative_to(source_root)}" for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = Path(tmp) / VIRTUAL_ROOT / "bulkforge" / "v1"
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted(generated.glob("*_pb2*")):
            shutil.copyfile(path, out_dir / path.name)
            written.append(out_dir / path.name)
        return written


def main() -> None:
    default = Path(__file__).resolve().parent / "bulkforge" / "v1"
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    for path in generate(out_dir):
        print(path)


if __name__ == "__main__":
    main()
