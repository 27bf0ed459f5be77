"""The checked-in generated code matches proto/ (run `make proto` after editing a .proto)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "services" / "common" / "pb"


def test_generated_code_is_current(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in GENERATED.glob("*_pb2.py*"))
    for name in fresh:
        assert (tmp_path / name).read_text() == (GENERATED / name).read_text(), f"{name} is stale: run `make proto`"
