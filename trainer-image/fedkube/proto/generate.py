"""Regenerates the committed protobuf and gRPC code from fedkube.proto.

    python -m fedkube.proto.generate [OUT_DIR]

A test runs it into a temporary folder and fails when the committed files differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # test-only dependency: grpcio-tools

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{HERE}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(HERE / "fedkube.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on fedkube.proto")
    grpc_file = out_dir / "fedkube_pb2_grpc.py"
    # protoc writes a top-level import; the package lives under fedkube.proto.
    text = grpc_file.read_text().replace(
        "import fedkube_pb2 as fedkube__pb2",
        "from fedkube.proto import fedkube_pb2 as fedkube__pb2",
    )
    grpc_file.write_text(text)
    return [out_dir / n for n in ("fedkube_pb2.py", "fedkube_pb2.pyi", "fedkube_pb2_grpc.py")]


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
