"""Regressions found in review: each test is the reproducer of a bug that was fixed."""
import warnings

import numpy as np
import pytest
from numpy.exceptions import AxisError
from numpy.testing import assert_array_equal

import fastsoftmax as fs
from fastsoftmax import _threads


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("fn", [fs.softmax, fs.log_softmax], ids=["softmax", "log_softmax"])
def test_strided_results_do_not_depend_on_thread_count(fn, dtype):
    """One wide column (range >= 64) must not change how its neighbours are computed when the tiling changes
    with the thread count."""
    x = np.random.default_rng(0).standard_normal((64, 1024)).astype(dtype)
    x[0, 0] = -100
    assert_array_equal(fn(x, axis=0, num_threads=1), fn(x, axis=0, num_threads=2))


def test_float64_smallest_subnormal_result():
    """exp(-745.13...) is the smallest subnormal, not 0 (the 2**-54 scaling used to round s to 0 first)."""
    x = np.array([0.0, -745.1326482254007])
    assert fs.softmax(x)[1] == np.exp(x[1]) == 5e-324


def test_forced_narrow_dtype_casts_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fs.softmax(np.array([1e300, 0.0]), dtype=np.float32)  # 1e300 -> inf in float32: a NaN slice
    assert y.dtype == np.float32 and np.all(np.isnan(y))


def test_dtype_with_explicit_byte_order_is_accepted():
    y = fs.softmax(np.array([1.0, 2.0], np.float32), dtype=">f8")
    assert y.dtype == np.float64 and y.dtype.isnative


def test_jacobian_of_non_probabilities_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fs.softmax_jacobian(np.array([1e200, 1.0]))
        fs.softmax_jacobian(np.array([np.inf, 0.0]))


def test_huge_thread_count_is_refused_not_fatal():
    with pytest.raises(ValueError, match=f"between 1 and {_threads.MAX_THREADS}"):
        fs.softmax(np.zeros((40000, 2)), num_threads=40000)
    with pytest.raises(ValueError):
        fs.set_num_threads(40000)


def test_zero_d_axis_error_names_zero_dimensions():
    with pytest.raises(AxisError, match="0-dimensional"):
        fs.softmax(np.float64(3), axis=1)


@pytest.mark.parametrize("fn", [fs.softmax, fs.log_softmax], ids=["softmax", "log_softmax"])
def test_misaligned_out_goes_through_a_buffer(fn):
    x = np.random.default_rng(1).standard_normal((7, 33))
    raw = np.zeros(8 * x.size + 1, np.uint8)
    out = raw[1:].view(np.float64).reshape(x.shape)
    assert not out.flags.aligned
    result = fn(x, out=out)
    assert result is out
    assert_array_equal(out, fn(x))
