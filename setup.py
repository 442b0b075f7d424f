"""Builds the selection engine's optional native kernels (fsparse/_src/engine/kernels/).

Everything else is in pyproject.toml. The kernel is plain C loaded with ctypes (no
Python headers); where no C compiler is found the install goes on without it and the
engine runs its torch path, which gives the same masks bit for bit.
"""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fsparse._src.engine._kernels",
            sources=sorted(glob("fsparse/_src/engine/kernels/*.c")),
            depends=["fsparse/_src/engine/kernels/kernels.h"],
            extra_compile_args=["-O3", "-pthread", "-ffp-contract=off"],  # no FMA: exact sums
            extra_link_args=["-pthread"],
            optional=True,
        )
    ]
)
