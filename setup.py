"""Build script: the Extension list and the flags, readable top to bottom.

Layout of the compiled part:

* ``fastsoftmax._cpu``: baseline-compiled CPU feature probe (``__builtin_cpu_supports``). It must run on
  every x86-64 CPU, because it is what decides which kernel module is safe to import.
* ``fastsoftmax._buffers``: the cache of released large results (a NumPy memory handler), baseline-compiled.
* ``fastsoftmax._kernels_<target>``: the same kernel source (``pyx/_kernels.pxi``) compiled once per SIMD
  target. Each target gets its own module name so all of them can live in one wheel; the package imports the
  widest one the running CPU supports (``fastsoftmax/_dispatch.py``). No target uses ``-march=native``, so a
  wheel built here runs on any x86-64.

Environment switches:

* ``FASTSOFTMAX_NO_OPENMP=1``: build without OpenMP (serial kernels).
* ``FASTSOFTMAX_CYTHON_DEBUG=1``: bounds checks back on, for a checking build.
"""
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
IS_MSVC = sys.platform == "win32"

# Per-target flags. IEEE values everywhere: no -ffast-math / -ffinite-math-only, because the kernels rely on -inf
# and NaN propagating (see pyx/_simd_math.pxd). Two narrow relaxations:
# * -fno-trapping-math: FP exception *flags* are not observable side effects. Without it gcc 12 refuses to
#   if-convert the NaN-preserving clamps in exp (`x = lo if x < lo else x`), and no exp loop vectorizes
#   (checked with -fopt-info-vec). Values are unchanged; it is clang's default. The kernels never read the flags
#   (NumPy keeps trapping math only because its ufuncs turn flags into RuntimeWarnings).
# * -fno-math-errno: lets the few libm calls (log of a row sum) inline; errno is never read.
COMMON_FLAGS = [] if IS_MSVC else ["-O3", "-fno-math-errno", "-fno-trapping-math"]
# The kernels' loops vectorize only if exp and the other small `inline` math functions are inlined into them.
# gcc stops inlining once inlining has grown a file by 40% (--param inline-unit-growth), and a kernel module
# (every pass, for float and double) is past that: when one more driver was added, exp was left as an out-of-line
# call in its own loops, which went scalar, 3-4x slower. A larger budget keeps them inlined however the module
# grows (timings unchanged otherwise, measured); tests/test_simd.py checks that no out-of-line copy is left.
INLINE_FLAGS = ["--param=inline-unit-growth=1000"]
# Every loop starts on a 64-byte boundary (a cache line; decoded-op caches fetch in 32- or 64-byte windows). The
# float32 loops are short, so where they start decides how many lines each iteration is fetched from; with gcc's default
# (pad only up to 10 bytes) an edit to the float64 code alone moved them and made float32 rows 4-12% slower
# (A/B of identical float32 instructions). With 64-byte alignment that build measured as fast as before.
LAYOUT_FLAGS = ["-falign-loops=64"]
TARGETS = {"baseline": []}
if IS_X86_64 and not IS_MSVC:
    TARGETS["avx2"] = ["-mavx2", "-mfma"]
    # gcc's generic tuning prefers 256-bit vectors even with AVX-512 enabled; the kernels are long FMA chains
    # that gain from full-width zmm registers, so ask for 512 explicitly.
    TARGETS["avx512"] = ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
                         "-mprefer-vector-width=512"]


def c_compiler():
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def compiles(cmd):
    """True if the compiler command succeeds (False if it fails or there is no compiler, e.g. for an sdist)."""
    try:
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False


def openmp_flags():
    """Return (compile, link) flags for OpenMP, or None when the compiler has no OpenMP."""
    if os.environ.get("FASTSOFTMAX_NO_OPENMP"):
        return None
    if IS_MSVC:
        return ["/openmp"], []
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    src = "#include <omp.h>\nint main(void){\n#pragma omp parallel\n{}\nreturn omp_get_max_threads() < 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(src)
        for cflags, ldflags in candidates:
            if compiles(c_compiler() + cflags + [path, "-o", os.path.join(tmp, "probe")] + ldflags):
                return cflags, ldflags
    return None


def accepted(flags):
    """The subset of `flags` the C compiler accepts (gcc's --param options are unknown to clang; older compilers may
    not know -falign-loops)."""
    if IS_MSVC:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write("int main(void) { return 0; }\n")
        return [flag for flag in flags
                if compiles(c_compiler() + ["-Werror", flag, "-c", path, "-o", os.path.join(tmp, "probe.o")])]


KERNEL_FLAGS = COMMON_FLAGS + accepted(INLINE_FLAGS + LAYOUT_FLAGS)
OPENMP = openmp_flags()
if OPENMP is None:
    why = ("FASTSOFTMAX_NO_OPENMP is set" if os.environ.get("FASTSOFTMAX_NO_OPENMP")
           else "the C compiler has no usable OpenMP")
    warnings.warn(f"fastsoftmax: {why}; building serial kernels (every call will run on one thread).")
    OMP_CFLAGS, OMP_LDFLAGS = [], []
else:
    OMP_CFLAGS, OMP_LDFLAGS = OPENMP

DEBUG = bool(os.environ.get("FASTSOFTMAX_CYTHON_DEBUG"))
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": False,
    "nonecheck": False,
    "cdivision": True,
    "embedsignature": True,
}
NUMPY_MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

extensions = [
    Extension("fastsoftmax._cpu", ["pyx/_cpu.pyx"], extra_compile_args=COMMON_FLAGS,
              define_macros=NUMPY_MACROS),
    # The cache of released large results (a NumPy memory handler); no kernel code, so baseline flags.
    Extension("fastsoftmax._buffers", ["pyx/_buffers.pyx"], include_dirs=[np.get_include()],
              extra_compile_args=COMMON_FLAGS, define_macros=NUMPY_MACROS),
]
for target, flags in TARGETS.items():
    extensions.append(Extension(
        f"fastsoftmax._kernels_{target}",
        [f"pyx/_kernels_{target}.pyx"],
        include_dirs=[np.get_include(), "pyx"],
        define_macros=NUMPY_MACROS,
        extra_compile_args=KERNEL_FLAGS + flags + OMP_CFLAGS,
        extra_link_args=OMP_LDFLAGS,
    ))

setup(
    ext_modules=cythonize(extensions, include_path=["pyx"], compiler_directives=DIRECTIVES,
                          compile_time_env={}),
)
