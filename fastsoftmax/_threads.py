"""The thread settings. The rule for a call's thread count is applied by the kernel module, in C (`threads_for` in
pyx/_kernels.pxi), from the settings `configure` pushes into it, so that the per-call fast paths need no Python."""
import operator

from . import _dispatch

# Arrays with fewer elements than this run on one thread whatever the settings: below it, waking a second
# thread costs more than it saves. Measured on 2 cores (AMD EPYC, AVX2), float32 softmax, quiet machine:
# 2 threads were 1.14x (rows of 1000) and 1.44x (rows of 128) faster than 1 at 8 000 elements, 1.4-1.7x at
# 16 000 (benchmarks/RESULTS.md, "Parallel break-even"); the break-even lies below 8 000.
PARALLEL_MIN_ELEMENTS = 8192

# A thread count above this is refused: OpenMP would try to start that many threads, and libgomp aborts the
# process when the system refuses them (seen with 40 000).
MAX_THREADS = 1024

_default = None  # set by set_num_threads; None means "OpenMP's default"
# omp_get_max_threads() of a thread nobody has limited (OMP_NUM_THREADS, else the CPU count). A thread whose
# value is lower has been limited, e.g. by threadpoolctl.threadpool_limits, and that limit caps the default.
_OPENMP_DEFAULT = _dispatch.kernels.openmp_max_threads()


def configure(kernels):
    """Push the settings into a kernel module, which applies them per call (its `threads_for`, in C, so that
    the per-call fast paths need no Python); called when a setting changes and when a module is loaded."""
    kernels.set_thread_settings(PARALLEL_MIN_ELEMENTS, _default or 0, _OPENMP_DEFAULT)


def _set_default(n):
    """set_num_threads without validation; None restores OpenMP's default (used by the tests)."""
    global _default
    _default = n
    configure(_dispatch.kernels)


def check_count(n, name):
    """n as an int if it is a valid thread count, else TypeError / ValueError naming `name`."""
    if isinstance(n, bool):
        raise TypeError(f"{name} must be a positive integer, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got {type(n).__name__} {n!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{name} must be between 1 and {MAX_THREADS}, got {n}")
    return n


def set_num_threads(n):
    """Set the number of threads fastsoftmax uses by default.

    Parameters
    ----------
    n : int
        A positive number of threads. Calls on small arrays still run on one thread.

    Notes
    -----
    The setting is process-wide: it applies to calls from every Python thread. While
    ``threadpoolctl.threadpool_limits`` lowers OpenMP's thread count in a thread, calls from that thread
    use at most that many. A ``num_threads=`` argument to a single call takes precedence over both.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.set_num_threads(1)
    >>> fastsoftmax.get_num_threads()
    1
    """
    _set_default(check_count(n, "n"))


def get_num_threads():
    """Return the number of threads a large call would use by default.

    This is the value given to `set_num_threads`, or else OpenMP's default (``OMP_NUM_THREADS`` or the
    number of CPUs), capped by a ``threadpoolctl`` limit active in the calling thread. It is 1 when
    fastsoftmax was built without OpenMP.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.get_num_threads() >= 1
    True
    """
    return _dispatch.kernels.default_threads_now()


def requested(num_threads):
    """A call's num_threads= argument as the kernels take it: 0 for None (the default), else a validated count.
    The kernels turn it into the call's thread count (threads_for in pyx/_kernels.pxi): 1 below
    PARALLEL_MIN_ELEMENTS, else the argument or the default, clamped to the number of independent work items (and
    1 below two higher thresholds of their own: split long rows, softmax_backward; see pyx/_kernels.pxi)."""
    return 0 if num_threads is None else check_count(num_threads, "num_threads")


configure(_dispatch.kernels)
