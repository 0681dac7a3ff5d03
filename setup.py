"""Build the Cython kernels in ext/ into the detectors package (detectors._kernels, ...)."""
from pathlib import Path

import Cython
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# One extension per ext/*.pyx. The univariate kernels are one module, detectors._kernels: its
# family groups (ext/_*.pxi) are included into ext/_kernels.pyx behind the declarations of
# ext/_common.pxd rather than built as modules of their own, because ext is not a package (a
# module cimporting another's .pxd would import it by a top-level name that does not exist at
# run time), and because the generic loops must see every family's step to inline it.
# _common.pxd declares only types and inline functions, so cimporting it imports nothing.
# ext/*.h, .pxd and .pxi are listed as dependencies so that editing one rebuilds the extension
# and the sdist ships it. -ffp-contract=off: no fused multiply-adds, so the kernels' vectorized
# whole-tick passes and their per-sample loops round identically on FMA hardware too (AArch64
# fuses by default; x86-64 without -march has no FMA anyway).
# The Cython, numpy and flags of the build go into each module as macros (ext/_build.pxi makes
# them its BUILD, which `plantwatch --version` prints).
CFLAGS = ["-O3", "-ffp-contract=off"]
SHARED = sorted(str(p) for pattern in ("*.h", "*.pxd", "*.pxi") for p in Path("ext").glob(pattern))

extensions = [
    Extension(
        f"detectors.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include(), "ext"],
        depends=SHARED,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("PLANTWATCH_CYTHON", f'"{Cython.__version__}"'), ("PLANTWATCH_NUMPY", f'"{np.__version__}"'),
                       ("PLANTWATCH_CFLAGS", f'"{" ".join(CFLAGS)}"')],
        extra_compile_args=CFLAGS,
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
