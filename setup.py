"""Build the Cython kernels in ext/ into the detectors package (detectors._kernels, ...)."""
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# ext/*.h are the C helpers the kernels include: listed as dependencies so that editing one
# rebuilds the extension and the sdist ships it. -ffp-contract=off: no fused multiply-adds, so
# the kernels' vectorized whole-tick passes and their per-sample loops round identically on
# FMA hardware too (AArch64 fuses by default; x86-64 without -march has no FMA anyway).
extensions = [
    Extension(
        f"detectors.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include(), "ext"],
        depends=[str(h) for h in sorted(Path("ext").glob("*.h"))],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
