"""Pick the kernel module: the widest SIMD target this CPU supports, or a lower one forced by FASTSOFTMAX_SIMD.

The same kernel source is compiled once per target (setup.py). The probe in ``fastsoftmax._cpu`` is compiled for
the baseline target, so it is safe to ask it before importing a module built with wider instructions.
"""
import importlib
import importlib.util
import os
import warnings

try:
    from . import _buffers, _cpu
except ImportError as exc:  # the source tree, not an installed or built copy
    import os.path
    raise ImportError(
        f"fastsoftmax's compiled modules are missing in {os.path.dirname(__file__)}: this looks like the source "
        "tree. Install it (pip install .) and import it from outside the repository, or build in place with "
        "`python setup.py build_ext --inplace`.") from exc

LEVELS = ("baseline", "avx2", "avx512")  # narrowest first
ENV_VAR = "FASTSOFTMAX_SIMD"


def built_levels():
    """Levels compiled into this install (non-x86 builds have only the baseline)."""
    return [lv for lv in LEVELS if importlib.util.find_spec(f"fastsoftmax._kernels_{lv}") is not None]


def available_levels():
    """Levels both compiled into this install and supported by this CPU, narrowest first."""
    cpu = set(_cpu.supported_levels())
    return [lv for lv in built_levels() if lv in cpu]


def choose_level(requested):
    """The level to use for the FASTSOFTMAX_SIMD value `requested` (None or "" means the widest available).
    A value that names no level, or one this CPU cannot run, warns and falls back to the widest available."""
    available = available_levels()
    best = available[-1]
    if not requested:
        return best
    wanted = requested.strip().lower()
    if wanted not in LEVELS:
        warnings.warn(f"{ENV_VAR}={requested!r} is not one of {', '.join(LEVELS)}; using {best!r}",
                      RuntimeWarning, stacklevel=2)
        return best
    if wanted not in available:
        warnings.warn(f"{ENV_VAR}={requested!r} cannot run here (available: {', '.join(available)}); "
                      f"using {best!r}", RuntimeWarning, stacklevel=2)
        return best
    return wanted


def configure_results(module):
    """Let a kernel module allocate its large results through the cache of released ones (fastsoftmax._buffers)."""
    module.set_result_allocator(_buffers.empty, _buffers.min_bytes)


def load(level):
    """Import the kernel module compiled for `level`."""
    if level not in available_levels():
        raise ValueError(f"SIMD level {level!r} is not available here (available: {available_levels()})")
    module = importlib.import_module(f"fastsoftmax._kernels_{level}")
    configure_results(module)
    return module


level = choose_level(os.environ.get(ENV_VAR))
kernels = load(level)
