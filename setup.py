"""Build hook: compile native/betadist.c and native/score.c into mlkube/libbetadist.so.

libbetadist is a plain C shared library loaded with cffi in ABI mode (ffi.dlopen), not a
Python extension module. setuptools' build_ext already knows how to compile and link a
shared object on every path we need (``pip install .``, ``pip install -e .``, ``pip wheel``),
so we reuse it and only change the output name: no ABI tag, no PyInit symbol.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CFLAGS = ["-O3", "-std=c11", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror"]


class BuildSharedLibrary(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        package, _, name = fullname.rpartition(".")
        return os.path.join(*package.split("."), f"{name}.so")

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []


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
    cmdclass={"build_ext": BuildSharedLibrary},
)
