"""Builds the Cython kernels in src/smg/_ext.

Build switches (environment variables):
  SMG_DEBUG=1  annotate, line tracing and C asserts for profiling/debugging.
"""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("SMG_DEBUG") == "1"
ext_dir = Path("src/smg/_ext")
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "cdivision": True,
    "initializedcheck": debug,
    "embedsignature": True,
    "linetrace": debug,
}
macros = [("CYTHON_TRACE_NOGIL", "1")] if debug else []

extensions = [
    Extension(
        f"smg._ext.{pyx.stem}",
        [str(pyx)],
        # Listing the .pxd and C headers makes edits to them rebuild the kernel.
        depends=[str(p) for p in (*ext_dir.glob("*.pxd"), *ext_dir.glob("*.h"))],
        define_macros=macros,
        # (no fused multiply-adds: resampling coefficients round as Pillow's do, on every CPU)
        extra_compile_args=["-O3", "-ffp-contract=off"] if not debug else ["-O0", "-g"],
    )
    for pyx in sorted(ext_dir.glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=debug))
