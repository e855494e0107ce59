"""Special values, as scipy.special and torch treat them, on every kernel path, without NumPy RuntimeWarnings.

* A slice containing NaN is all NaN.
* A slice of only -inf is all NaN.
* A slice containing +inf is all NaN.
* -inf entries next to a finite maximum give exactly 0 (log_softmax: -inf); the other entries are the softmax
  of the finite ones.
* Large finite magnitudes (+-1e30 in float32, +-1e300 in float64) are handled.
"""
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax import log_softmax, softmax

pytestmark = [pytest.mark.usefixtures("simd_level"), pytest.mark.filterwarnings("error")]

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
FORWARD = [pytest.param(softmax, id="softmax"), pytest.param(log_softmax, id="log_softmax")]

# One case per kernel path: (shape, axis). Slices are taken along `axis`; the special values are put into
# chosen slices and the other slices must be unaffected.
PATHS = [
    pytest.param((6, 37), -1, id="rows"),
    pytest.param((3, 40000), -1, id="long-rows"),
    pytest.param((5, 37, 16), 1, id="strided"),
    pytest.param((4, 37, 3), 1, id="narrow-inner"),
    pytest.param((37, 20), 0, id="first-axis"),
    pytest.param((6, 5, 8), (0, 2), id="joint-axes"),
]


def slices(shape, axis):
    """Index tuples selecting each slice (all of `axis` at one position of the other axes)."""
    axes = (axis,) if isinstance(axis, int) else axis
    axes = tuple(a % len(shape) for a in axes)
    others = [d for d in range(len(shape)) if d not in axes]
    result = []
    for pos in np.ndindex(*[shape[d] for d in others]):
        index = [slice(None)] * len(shape)
        for d, p in zip(others, pos):
            index[d] = p
        result.append(tuple(index))
    return result


def finite_reference(fn, values):
    """float64 softmax / log_softmax of one slice (flattened), -inf entries allowed next to a finite max."""
    v = np.asarray(values, np.float64).ravel()
    finite = np.isfinite(v)
    shifted = v[finite] - v[finite].max()
    lse = np.log(np.exp(shifted).sum())
    out = np.full(v.shape, 0.0 if fn is softmax else -np.inf)
    out[finite] = np.exp(shifted - lse) if fn is softmax else shifted - lse
    return out


def check_other_slices(fn, x, y, special_slices, axis, dtype):
    for index in slices(x.shape, axis):
        if index in special_slices:
            continue
        tol = 4e-6 if dtype == np.float32 else 1e-13
        assert_allclose(y[index].ravel(), finite_reference(fn, x[index]), rtol=tol, atol=tol)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", PATHS)
@pytest.mark.parametrize("special", [np.nan, np.inf], ids=["nan", "+inf"])
def test_slice_with_nan_or_plus_inf_is_all_nan(shape, axis, dtype, fn, special):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    all_slices = slices(shape, axis)
    chosen = [all_slices[0], all_slices[-1]]
    for k, index in enumerate(chosen):
        part = x[index].copy()
        flat = part.reshape(-1)
        if k == 0:
            flat[flat.size // 2] = special  # one special value in the middle of the first slice
        else:
            flat[-1] = special  # and at the end of the last slice, next to a -inf
            flat[3] = -np.inf
        x[index] = part
    x_before = x.copy()
    y = fn(x, axis=axis)
    for index in chosen:
        assert np.all(np.isnan(y[index]))
    check_other_slices(fn, x, y, chosen, axis, dtype)
    assert_array_equal(x, x_before)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", PATHS)
def test_slice_of_only_minus_inf_is_all_nan(shape, axis, dtype, fn):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    all_slices = slices(shape, axis)
    chosen = [all_slices[len(all_slices) // 2]]
    x[chosen[0]] = -np.inf
    y = fn(x, axis=axis)
    assert np.all(np.isnan(y[chosen[0]]))
    check_other_slices(fn, x, y, chosen, axis, dtype)
    assert np.all(np.isnan(fn(np.full(shape, -np.inf, dtype), axis=axis)))


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", PATHS)
def test_minus_inf_next_to_finite_max_is_exactly_zero(shape, axis, dtype, fn):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.4] = -np.inf  # many -inf entries everywhere...
    for index in slices(shape, axis):  # ...but every slice keeps a finite maximum
        part = x[index].copy()
        part.reshape(-1)[1] = 0.5
        x[index] = part
    y = fn(x, axis=axis)
    minus_inf = np.isneginf(x)
    if fn is softmax:
        assert np.all(y[minus_inf] == 0.0)
        assert np.all(y[~minus_inf] > 0.0)
    else:
        assert np.all(np.isneginf(y[minus_inf]))
        assert np.all(np.isfinite(y[~minus_inf]))
    check_other_slices(fn, x, y, [], axis, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_examples(dtype):
    x = np.array([-np.inf, 0.0, -np.inf, np.log(3.0)], dtype)
    assert_allclose(softmax(x), [0.0, 0.25, 0.0, 0.75], rtol=1e-6, atol=0)
    assert softmax(x)[0] == 0.0 and softmax(x)[2] == 0.0
    ly = log_softmax(x)
    assert ly[0] == -np.inf and ly[2] == -np.inf
    assert_allclose(ly[[1, 3]], np.log([0.25, 0.75]), rtol=1e-6)
    assert_array_equal(softmax(np.array([-np.inf, 5.0], dtype)), [0.0, 1.0])


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("x", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
def test_zero_dimensional_special_values_are_nan(x, fn):
    assert np.isnan(fn(np.float64(x)))
    assert np.isnan(fn(np.float32(x)))


@pytest.mark.parametrize("fn", FORWARD)
def test_axis_empty_tuple_makes_each_element_a_slice(fn):
    x = np.array([[1.0, -np.inf, np.nan], [np.inf, -1e300, 3.0]])
    y = fn(x, axis=())
    one = 1.0 if fn is softmax else 0.0
    expected = np.array([[one, np.nan, np.nan], [np.nan, one, one]])
    assert_array_equal(y, expected)


LARGE = [
    pytest.param(np.float32, 1e30, id="float32-1e30"),
    pytest.param(np.float32, 3e38, id="float32-3e38"),
    pytest.param(np.float64, 1e300, id="float64-1e300"),
    pytest.param(np.float64, 1.7e308, id="float64-1.7e308"),
]


@pytest.mark.parametrize("dtype, big", LARGE)
@pytest.mark.parametrize("shape, axis", PATHS)
def test_large_finite_magnitudes(shape, axis, dtype, big):
    rng = np.random.default_rng(3)
    pattern = rng.choice([big, -big, 0.0], size=shape).astype(dtype)
    for index in slices(shape, axis):  # at least one +big per slice
        part = pattern[index].copy()
        part.reshape(-1)[0] = big
        pattern[index] = part
    y = softmax(pattern, axis=axis)
    is_top = pattern == dtype(big)
    n_top = is_top.sum(axis=axis, keepdims=True)
    assert_allclose(y, np.where(is_top, 1.0 / n_top, 0.0), rtol=1e-6, atol=0)
    ly = log_softmax(pattern, axis=axis)
    assert_allclose(ly[is_top], np.broadcast_to(-np.log(n_top), y.shape)[is_top], rtol=1e-6, atol=0)
    below = ~is_top
    # x - max: about -big (0 entries) or -2 big (-big entries); -2 big may round to -inf where it overflows.
    with np.errstate(over="ignore"):
        assert np.all(ly[below] <= np.asarray(-big, dtype) * 0.999)
        exact = (pattern.astype(np.float64) - big - np.log(np.broadcast_to(n_top, y.shape)))[below]
        assert_allclose(ly[below], exact.astype(dtype), rtol=1e-6)


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e30), (np.float64, 1e300)], ids=["float32", "float64"])
def test_large_magnitude_examples(dtype, big):
    x = np.array([big, -big], dtype)
    assert_array_equal(softmax(x), [1.0, 0.0])
    assert_allclose(log_softmax(x), [0.0, -2 * big], rtol=1e-6)
    x = np.array([big, big, -big], dtype)
    assert_array_equal(softmax(x), [0.5, 0.5, 0.0])
    assert_array_equal(softmax(np.array([-big, -big], dtype)), [0.5, 0.5])


def test_subnormal_results():
    """float64: results in the subnormal range are correct to a couple of subnormal ulps, then exactly 0.
    float32: results below the smallest normal (1.18e-38) are flushed to exactly 0 (documented; the accuracy
    rule covers outputs above 1e-37), and results just above it are still accurate."""
    assert_allclose(softmax(np.array([0.0, -740.0]))[1], np.exp(-740.0), rtol=0, atol=2 * 5e-324)
    assert_allclose(softmax(np.array([0.0, -720.0]))[1], np.exp(-720.0), rtol=1e-3)
    assert softmax(np.array([0.0, -746.0]))[1] == 0.0
    assert softmax(np.array([0.0, -88.0], np.float32))[1] == 0.0
    assert softmax(np.array([0.0, -100.0], np.float32))[1] == 0.0
    assert softmax(np.array([0.0, -104.0], np.float32))[1] == 0.0
    assert_allclose(softmax(np.array([0.0, -85.0], np.float32))[1], np.exp(-85.0) / (1 + np.exp(-85.0)), rtol=4e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_emit_no_warnings_with_out(dtype):
    """Same special inputs through out= and a float16 result path, under warnings-as-errors."""
    x = np.array([[np.nan, 1.0], [np.inf, 1.0], [-np.inf, -np.inf], [-np.inf, 1.0]], dtype)
    out = np.empty_like(x)
    softmax(x, out=out)
    assert_array_equal(np.isnan(out), [[True, True], [True, True], [True, True], [False, False]])
    log_softmax(x.astype(np.float16), axis=1)


# Rows longer than 16384 elements are processed chunk by chunk (2048 elements): a chunk whose maximum is -inf
# (only -inf and NaN in it) cannot be shifted by its own maximum and takes its own branch.
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("num_threads", [1, 2], ids=["1-thread", "2-threads"])
def test_long_rows_with_whole_chunks_of_special_values(dtype, num_threads):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 40000)).astype(dtype)
    x[0, :5000] = -np.inf          # whole chunks of -inf next to finite values: exactly 0 / -inf there
    x[1, 10000:12100] = -np.inf
    x[1, 11000] = np.nan           # a NaN inside a chunk of -inf: the whole row is NaN
    x[2, :] = -np.inf              # a row of only -inf: NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = softmax(x, num_threads=num_threads)
        ly = log_softmax(x, num_threads=num_threads)
    assert np.all(y[0, :5000] == 0) and np.all(ly[0, :5000] == -np.inf)
    finite = x[0, 5000:].astype(np.float64)
    e = np.exp(finite - finite.max())
    assert_allclose(y[0, 5000:], e / e.sum(), rtol=4e-6 if dtype == np.float32 else 1e-13)
    assert_allclose(ly[0, 5000:], (finite - finite.max()) - np.log(e.sum()),
                    rtol=4e-6 if dtype == np.float32 else 1e-13, atol=1e-6 if dtype == np.float32 else 1e-13)
    assert np.all(np.isnan(y[1])) and np.all(np.isnan(ly[1]))
    assert np.all(np.isnan(y[2])) and np.all(np.isnan(ly[2]))
