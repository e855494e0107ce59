"""Threads.

* The thread count of a call is the num_threads= argument, else the set_num_threads value, else OpenMP's default
  (OMP_NUM_THREADS or the number of CPUs); arrays under PARALLEL_MIN_ELEMENTS run on one thread.
* num_threads=0 or negative is a ValueError, a non-integer a TypeError (also for set_num_threads).
* threadpoolctl sees fastsoftmax's OpenMP runtime and can limit it.
* Results with one thread and with all threads agree (bitwise for the last-axis kernels).
* Concurrent calls from several Python threads give correct results.

The conftest's autouse fixture restores the thread settings after every test.
"""
import concurrent.futures
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import threadpoolctl
from numpy.testing import assert_allclose, assert_array_equal

import fastsoftmax
from fastsoftmax import (get_num_threads, log_softmax, log_softmax_backward, set_num_threads, softmax,
                         softmax_backward)
from fastsoftmax import _dispatch, _threads

OPENMP = _dispatch.kernels.build_info()["openmp"]
needs_openmp = pytest.mark.skipif(not OPENMP, reason="fastsoftmax was built without OpenMP")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastsoftmax.__file__)))


def test_get_num_threads_is_a_positive_int():
    n = get_num_threads()
    assert isinstance(n, int) and n >= 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_set_num_threads_sets_the_default(n):
    assert set_num_threads(n) is None
    assert get_num_threads() == n


def test_set_num_threads_accepts_numpy_integers():
    set_num_threads(np.int64(1))
    assert get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_non_positive_thread_counts_are_value_errors(bad):
    before = get_num_threads()
    with pytest.raises(ValueError):
        set_num_threads(bad)
    assert get_num_threads() == before
    x = np.ones((100, 1000))
    for call in (lambda: softmax(x, num_threads=bad), lambda: log_softmax(x, num_threads=bad),
                 lambda: softmax_backward(x, x, num_threads=bad), lambda: log_softmax_backward(x, x, num_threads=bad),
                 lambda: softmax(np.ones(3), num_threads=bad),  # also below the parallel threshold
                 lambda: softmax(np.ones((0, 3)), num_threads=bad), lambda: softmax(np.float64(1), num_threads=bad)):
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", True, False, [2], np.float64(2)],
                         ids=["1.5", "2.0", "'2'", "True", "False", "[2]", "np.float64"])
def test_non_integer_thread_counts_are_type_errors(bad):
    with pytest.raises(TypeError):
        set_num_threads(bad)
    x = np.ones((100, 1000))
    for call in (lambda: softmax(x, num_threads=bad), lambda: log_softmax(np.ones(3), num_threads=bad),
                 lambda: softmax_backward(x, x, num_threads=bad)):
        with pytest.raises(TypeError):
            call()


def test_failed_set_num_threads_leaves_the_setting_unchanged():
    set_num_threads(1)
    with pytest.raises(ValueError, match="between 1 and"):
        set_num_threads(2**40)
    assert get_num_threads() == 1
    assert _threads._default == 1


def test_huge_num_threads_is_a_value_error():
    x = np.random.default_rng(0).standard_normal((100, 1000))
    with pytest.raises(ValueError, match="num_threads must be between 1 and"):
        softmax(x, num_threads=2**40)


# ---------------------------------------------------------------------------------------------------------
# threadpoolctl
# ---------------------------------------------------------------------------------------------------------

@needs_openmp
def test_threadpoolctl_lists_an_openmp_runtime():
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis


@needs_openmp
@pytest.mark.parametrize("kwargs", [{"limits": 1}, {"limits": 1, "user_api": "openmp"}, {"limits": {"openmp": 1}}],
                         ids=["limits=1", "user_api=openmp", "dict"])
def test_threadpool_limits_caps_get_num_threads(kwargs):
    set_num_threads(2)
    with threadpoolctl.threadpool_limits(**kwargs):
        assert get_num_threads() == 1
        x = np.random.default_rng(1).standard_normal((100, 1000))
        assert_array_equal(softmax(x), softmax(x, num_threads=1))
    assert get_num_threads() == 2


# ---------------------------------------------------------------------------------------------------------
# Which thread count a call really uses: OpenMP worker threads appear in /proc/self/task when a parallel
# region first runs with more than one thread. Each case runs in a fresh interpreter.
# ---------------------------------------------------------------------------------------------------------

THREAD_PROBE = textwrap.dedent("""
    import os, sys
    import numpy as np
    import threadpoolctl
    import fastsoftmax as fsm

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    big = np.random.default_rng(0).standard_normal((256, 1000)).astype(np.float32)  # above the parallel threshold
    before = os_threads()
    exec(sys.argv[1])
    print("NEW_THREADS", os_threads() - before)
""")

PROBE_CASES = [
    pytest.param("fsm.softmax(big, num_threads=1)", {}, False, id="num_threads=1"),
    pytest.param("fsm.softmax(big, num_threads=2)", {}, True, id="num_threads=2"),
    pytest.param("fsm.log_softmax(big, axis=0, num_threads=2)", {}, True, id="num_threads=2-axis=0"),
    pytest.param("fsm.softmax(big.reshape(2, -1), num_threads=2)", {}, True, id="num_threads=2-long-rows"),
    pytest.param("fsm.softmax_backward(big, big, num_threads=2)", {}, True, id="num_threads=2-backward"),
    pytest.param("fsm.softmax(big.ravel()[:fsm._threads.PARALLEL_MIN_ELEMENTS - 1].reshape(1, -1), num_threads=2)",
                 {}, False, id="below-threshold-serial"),
    pytest.param("fsm.softmax(big.ravel()[:20000].reshape(1, -1), num_threads=2)", {}, False,
                 id="one-long-row-below-split-threshold-serial"),
    pytest.param("fsm.softmax(big.ravel()[:40000].reshape(1, -1), num_threads=2)", {}, True,
                 id="one-long-row-split"),
    pytest.param("fsm.softmax_backward(big[:16], big[:16], num_threads=2)", {}, False,
                 id="softmax_backward-below-its-threshold-serial"),
    pytest.param("fsm.log_softmax_backward(big[:16], big[:16], num_threads=2)", {}, True,
                 id="log_softmax_backward-16x1000-parallel"),
    pytest.param("fsm.set_num_threads(1); fsm.softmax(big)", {}, False, id="set_num_threads(1)"),
    pytest.param("fsm.set_num_threads(2); fsm.softmax(big)", {"OMP_NUM_THREADS": "1"}, True,
                 id="set_num_threads(2)-over-OMP_NUM_THREADS=1"),
    pytest.param("fsm.set_num_threads(1); fsm.softmax(big, num_threads=2)", {}, True, id="argument-wins"),
    pytest.param("fsm.softmax(big)", {"OMP_NUM_THREADS": "1"}, False, id="OMP_NUM_THREADS=1"),
    pytest.param("fsm.softmax(big)", {"OMP_NUM_THREADS": "2"}, True, id="OMP_NUM_THREADS=2"),
    pytest.param("with threadpoolctl.threadpool_limits(1): fsm.softmax(big)", {"OMP_NUM_THREADS": "2"}, False,
                 id="threadpool_limits(1)"),
]


@needs_openmp
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("code, env, expect_new_threads", PROBE_CASES)
def test_thread_count_actually_used(code, env, expect_new_threads):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                       OPENBLAS_NUM_THREADS="1")
    environment.pop("OMP_NUM_THREADS", None)
    environment.update(env)
    proc = subprocess.run([sys.executable, "-c", THREAD_PROBE, code], env=environment, capture_output=True, cwd=ROOT,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    new_threads = int(proc.stdout.split("NEW_THREADS")[1])
    assert (new_threads > 0) == expect_new_threads, proc.stdout


def test_default_is_openmp_default_from_omp_num_threads():
    code = "import fastsoftmax as f; print(f.get_num_threads())"
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                       OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, cwd=ROOT,
                         timeout=60, check=True).stdout
    assert int(out) == (3 if OPENMP else 1)


# ---------------------------------------------------------------------------------------------------------
# One thread and all threads agree
# ---------------------------------------------------------------------------------------------------------

AGREEMENT_CASES = [
    pytest.param((300, 1000), -1, True, id="rows-300x1000"),
    pytest.param((3, 70000), -1, True, id="long-rows-3x70000"),
    pytest.param((1, 200000), -1, True, id="one-long-row"),
    pytest.param((40, 40, 41), (1, 2), True, id="trailing-axes-(1,2)"),
    pytest.param((100, 1000), 0, False, id="axis=0-100x1000"),
    pytest.param((20, 300, 77), 1, False, id="axis=1-20x300x77"),
    pytest.param((4, 5000, 3), 1, False, id="axis=1-inner=3"),
    pytest.param((40, 30, 50), (0, 2), False, id="axes-(0,2)"),
    pytest.param((300, 333), None, False, id="axis=None"),
]


@pytest.mark.usefixtures("simd_level")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, axis, last_axis", AGREEMENT_CASES)
def test_one_thread_and_all_threads_agree(shape, axis, last_axis, dtype):
    assert np.prod(shape) > _threads.PARALLEL_MIN_ELEMENTS
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    all_threads = max(2, os.cpu_count() or 1)
    for fn, args in [(softmax, (x,)), (log_softmax, (x,)), (softmax_backward, (g, softmax(x, axis=axis))),
                     (log_softmax_backward, (g, log_softmax(x, axis=axis)))]:
        one = fn(*args, axis=axis, num_threads=1)
        for n in sorted({all_threads, 3}):
            many = fn(*args, axis=axis, num_threads=n)
            if last_axis:
                assert_array_equal(one, many, err_msg=f"{fn.__name__}, num_threads={n}")
            else:
                assert_allclose(one, many, rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny,
                                err_msg=f"{fn.__name__}, num_threads={n}")
        set_num_threads(all_threads)
        default = fn(*args, axis=axis)
        if last_axis:
            assert_array_equal(one, default)
        else:
            assert_allclose(one, default, rtol=4 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)


@needs_openmp
@pytest.mark.usefixtures("simd_level")
@pytest.mark.parametrize("dtype, n_cols", [(np.float32, 1001), (np.float64, 333)], ids=["float32", "float64"])
def test_streamed_results_match_one_thread(dtype, n_cols):
    """Large results written by several threads (and by one in the AVX-512 build, see stream_min_threads) take
    the streaming-store path (rows staged in an L1 buffer, unaligned row starts included): the values must be
    those of the plain path, which rows computed as a small array take, also in place and into a strided out=."""
    n_rows = _dispatch.kernels.build_info()["large_bytes"] // (n_cols * np.dtype(dtype).itemsize) + 5
    x = (np.random.default_rng(9).standard_normal((n_rows, n_cols)) * 4).astype(dtype)
    for fn in (softmax, log_softmax):
        one = fn(x, num_threads=1)
        for start in (0, 1, n_rows // 2, n_rows - 7):   # rows of a small array: neither streamed nor threaded
            assert_array_equal(fn(x[start:start + 7], num_threads=1), one[start:start + 7], err_msg=fn.__name__)
        assert_array_equal(fn(x, num_threads=2), one, err_msg=fn.__name__)
        inplace = x.copy()
        fn(inplace, out=inplace, num_threads=2)
        assert_array_equal(inplace, one, err_msg=f"{fn.__name__} in place")
        wide = np.zeros((n_rows, n_cols + 3), dtype)
        fn(x, out=wide[:, 1:n_cols + 1], num_threads=2)
        assert_array_equal(wide[:, 1:n_cols + 1], one, err_msg=f"{fn.__name__} into a strided out=")
        assert not wide[:, 0].any() and not wide[:, n_cols + 1:].any()
    rows = slice(0, None, 997)  # a sample against the float64 reference
    assert_allclose(softmax(x, num_threads=2)[rows], reference("softmax", x[rows], -1), rtol=4e-6 if dtype ==
                    np.float32 else 1e-13, atol=0)



@pytest.mark.parametrize("num_threads", [1, 2])
def test_large_arrays_with_zero_or_negative_row_strides(num_threads):
    """Arrays past the large-array threshold, with a broadcast input (stride 0) or a reversed one (negative
    stride), must compute correctly (an earlier per-row prefetch divided by the row stride and crashed the
    process with SIGFPE; prefetching now applies to contiguous rows only)."""
    n_cols = 1000
    n_rows = _dispatch.kernels.build_info()["large_bytes"] // (n_cols * 4) + 7
    row = (np.random.default_rng(10).standard_normal(n_cols) * 4).astype(np.float32)
    expected = reference("softmax", row[None, :], -1)[0]
    broadcast = np.broadcast_to(row, (n_rows, n_cols))
    result = softmax(broadcast, num_threads=num_threads)
    assert_allclose(result[::max(1, n_rows // 50)], np.broadcast_to(expected, result[::max(1, n_rows // 50)].shape),
                    rtol=4e-6, atol=0)
    assert (result == result[0]).all()
    x = np.empty((n_rows, n_cols), np.float32)
    x[:] = row
    x[1::2] = row[::-1]
    reversed_rows = x[::-1]
    result = log_softmax(reversed_rows, num_threads=num_threads)
    assert_array_equal(result, log_softmax(np.ascontiguousarray(reversed_rows), num_threads=num_threads))


# ---------------------------------------------------------------------------------------------------------
# Concurrent calls from Python threads
# ---------------------------------------------------------------------------------------------------------

def reference(kind, x, axis, g=None):
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis, keepdims=True))
    if kind == "softmax":
        return np.exp(shifted - lse)
    if kind == "log_softmax":
        return shifted - lse
    y = np.exp(shifted - lse)
    return y * (g - (g * y).sum(axis, keepdims=True))


def test_concurrent_calls_from_python_threads():
    """4 workers x 20 calls on mixed shapes, axes, dtypes and functions, against float64 references."""
    rng = np.random.default_rng(9)
    shapes = [((50, 100), -1), ((300, 1000), -1), ((2, 70000), -1), ((200, 300), 0), ((10, 50, 80), 1),
              ((6, 7, 8), (0, 2)), ((4, 500, 3), 1), ((1000,), None)]
    jobs = []
    for k in range(80):
        shape, axis = shapes[k % len(shapes)]
        dtype = np.float32 if k % 3 else np.float64
        kind = ["softmax", "log_softmax", "softmax_backward"][k % 3 if k % 5 else 0]
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        num_threads = [None, 1, 2][k % 3]
        jobs.append((kind, x, g, axis, num_threads))

    def run(job):
        kind, x, g, axis, num_threads = job
        if kind == "softmax":
            return softmax(x, axis=axis, num_threads=num_threads)
        if kind == "log_softmax":
            return log_softmax(x, axis=axis, num_threads=num_threads)
        return softmax_backward(g, softmax(x, axis=axis, num_threads=num_threads), axis=axis,
                                num_threads=num_threads)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    for (kind, x, g, axis, _), result in zip(jobs, results):
        tol = 2e-5 if x.dtype == np.float32 else 1e-12
        assert result.dtype == x.dtype
        assert_allclose(result, reference(kind, x, axis, g.astype(np.float64)), rtol=tol, atol=tol)
        if axis == -1 and kind != "softmax_backward":
            assert_array_equal(result, run((kind, x, g, axis, 1)))  # same bits as a lone, serial call


def test_concurrent_in_place_calls_on_disjoint_slices():
    """Threads writing in place into disjoint row blocks of one shared array."""
    x = np.random.default_rng(10).standard_normal((400, 1000))
    expected = reference("softmax", x, -1)
    blocks = [x[i:i + 50] for i in range(0, 400, 50)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda b: softmax(b, out=b), blocks))
    assert_allclose(x, expected, rtol=1e-13)


def test_set_num_threads_is_process_wide():
    n = _dispatch.kernels.openmp_max_threads() + 2
    set_num_threads(n)
    assert get_num_threads() == n
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(get_num_threads).result() == n


def test_settings_follow_a_switch_of_kernel_module():
    """The kernel modules apply the thread rule themselves (the fast paths), so every module loaded later (a
    SIMD level switch) must receive the current settings."""
    from fastsoftmax import _api
    original = _dispatch.level
    n = _dispatch.kernels.openmp_max_threads() + 1
    set_num_threads(n)
    try:
        for level in _dispatch.available_levels():
            _api._use_level(level)
            assert get_num_threads() == n, level
    finally:
        _api._use_level(original)
    assert get_num_threads() == n
