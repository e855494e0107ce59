"""One place decides how many threads a call uses."""
import operator

from . import _dispatch

# Arrays with fewer elements than this run on one thread whatever the settings: below it, waking a second
# thread costs more than it saves. Measured on 2 cores (AMD EPYC, AVX2) with float32 softmax over rows of
# 1000: see benchmarks/RESULTS.md, "parallel break-even".
PARALLEL_MIN_ELEMENTS = 32768

_default = None  # set by set_num_threads; None means "OpenMP's default"


def _check_count(n, name):
    if isinstance(n, bool):
        raise TypeError(f"{name} must be a positive integer, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got {type(n).__name__} {n!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return n


def set_num_threads(n):
    """Set the number of threads fastsoftmax uses by default.

    Parameters
    ----------
    n : int
        A positive number of threads. Calls on small arrays still run on one thread.

    Notes
    -----
    The setting is process-wide. It is also passed to OpenMP for the calling thread, so
    ``threadpoolctl.threadpool_limits`` sees it and can lower it temporarily. A ``num_threads=`` argument
    to a single call takes precedence over both.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.set_num_threads(1)
    >>> fastsoftmax.get_num_threads()
    1
    """
    global _default
    n = _check_count(n, "n")
    _default = n
    _dispatch.kernels.openmp_set_num_threads(n)


def get_num_threads():
    """Return the number of threads a large call would use by default.

    This is the value given to `set_num_threads` (capped by an active ``threadpoolctl`` limit), or else
    OpenMP's default (``OMP_NUM_THREADS`` or the number of CPUs). It is 1 when fastsoftmax was built
    without OpenMP.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.get_num_threads() >= 1
    True
    """
    omp = _dispatch.kernels.openmp_max_threads()
    return omp if _default is None else min(_default, omp)


def resolve(num_threads, n_elements):
    """Threads for one call on `n_elements` elements: the argument if given, else the default; 1 below
    PARALLEL_MIN_ELEMENTS. The kernels further clamp it to the number of independent work items."""
    if num_threads is not None:
        num_threads = _check_count(num_threads, "num_threads")
    if n_elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return num_threads if num_threads is not None else get_num_threads()
