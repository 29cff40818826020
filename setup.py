"""Build hooks: libbetadist.so from native/, and the gRPC modules from their .proto files.

libbetadist is a plain C shared library loaded with cffi in ABI mode (ffi.dlopen), not a
Python extension module. setuptools' build_ext already knows how to compile and link a
shared object on every path we need (``pip install .``, ``pip install -e .``, ``pip wheel``),
so we reuse it and only change the output name: no ABI tag, no PyInit symbol.

The Open Inference Protocol's gRPC messages (mlkube/serving/grpc/inference.proto) become
Python modules (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) at build time with
grpcio-tools, never committed: build_py writes them into the wheel, an editable install
(``pip install -e .``) and ``setup.py build_protos`` (what `make` runs) next to the .proto.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from setuptools import Command, Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

CFLAGS = ["-O3", "-std=c11", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror"]
PROTOS = ["mlkube/serving/grpc/inference.proto"]


class BuildSharedLibrary(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        package, _, name = fullname.rpartition(".")
        return os.path.join(*package.split("."), f"{name}.so")

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []


def generated_modules(proto: str) -> list[str]:
    """The files grpcio-tools writes for ``proto``, relative to the output directory."""
    stem = proto.removesuffix(".proto")
    return [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]


def generate_protos(out_dir: str) -> None:
    """Run protoc (bundled with grpcio-tools, a build-time requirement) on every .proto."""
    from grpc_tools import protoc  # only needed to build, never at run time

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        args = [
            "grpc_tools.protoc",
            "--proto_path=.",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            proto,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        private_pool(Path(out_dir) / generated_modules(proto)[0])


#: protoc's Python output registers its messages in protobuf's process-wide default pool.
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("


def private_pool(module: Path) -> None:
    """Register the messages in a pool of their own instead of the process-wide one.

    tritonclient and kserve ship their own copies of the same `inference` package; two copies
    in the default pool refuse to load in one process ("duplicate symbol"), so without this a
    program (or a custom model) could not import mlkube's gRPC modules beside either client.
    The wire format does not change: names stay `inference.*`, the field numbers are the
    .proto's, and the service is registered by its full name.
    """
    text = module.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"{module}: protoc's output changed; cannot move it to its own pool")
    module.write_text(text.replace(_DEFAULT_POOL, _PRIVATE_POOL))


class BuildPyWithProtos(build_py):
    """build_py, then the gRPC modules: into build_lib, or in place for an editable install."""

    def run(self) -> None:
        super().run()
        generate_protos("." if self.editable_mode else self.build_lib)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        generated = [os.path.join(self.build_lib, f) for p in PROTOS for f in generated_modules(p)]
        return [*super().get_outputs(include_bytecode), *generated]


class BuildProtos(Command):
    """`setup.py build_protos`: write the gRPC modules next to their .proto files."""

    description = "generate the gRPC modules in the source tree"
    user_options: ClassVar[list[tuple[str, str | None, str]]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        generate_protos(".")


setup(
    ext_modules=[
        Extension(
            "mlkube.libbetadist",
            sources=["native/betadist.c", "native/score.c"],
            include_dirs=["native"],
            extra_compile_args=CFLAGS,
            extra_link_args=["-lm"],
        )
    ],
    cmdclass={
        "build_ext": BuildSharedLibrary,
        "build_py": BuildPyWithProtos,
        "build_protos": BuildProtos,
    },
)
