"""Backward passes and the explicit Jacobian.

* softmax_backward(g, y, axis)     == y * (g - sum(g * y, axis))      (vector-Jacobian product of softmax)
* log_softmax_backward(g, y, axis) == g - exp(y) * sum(g, axis)       (vector-Jacobian product of log_softmax)
* softmax_jacobian(y, axis)        == diag(y) - y y^T of each slice, shape (..., n, n): the other axes first, in
  order, then the slice (flattened in C order for a tuple of axes).
* grad_output and output must have the same shape and dtype (ValueError naming both); out= as in the forward
  functions (any strides, may alias an input, is returned).
* The gradients match central finite differences of a random linear loss.
"""
import numpy as np
import pytest
from numpy.exceptions import AxisError
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax import _api, log_softmax, log_softmax_backward, softmax, softmax_backward, softmax_jacobian

from helpers import assert_rows_as_alone, central_differences

pytestmark = [pytest.mark.usefixtures("simd_level"), pytest.mark.filterwarnings("error")]

BACKWARD = [pytest.param(softmax_backward, id="softmax_backward"),
            pytest.param(log_softmax_backward, id="log_softmax_backward")]
FORWARD_OF = {softmax_backward: softmax, log_softmax_backward: log_softmax}
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def reference_backward(fn, g, y, axis):
    """The two formulas, in float64, written plainly."""
    g64 = np.asarray(g, np.float64)
    y64 = np.asarray(y, np.float64)
    if fn is softmax_backward:
        return y64 * (g64 - (g64 * y64).sum(axis, keepdims=True))
    return g64 - np.exp(y64) * g64.sum(axis, keepdims=True)


def inputs(fn, shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return g, FORWARD_OF[fn](x, axis=axis)


CASES = [
    ((40,), -1), ((40,), None), ((7, 33), -1), ((7, 33), 0), ((7, 33), -2), ((5, 6, 20), 1), ((5, 40, 3), 1),
    ((5, 6, 7), (0, 2)), ((5, 6, 7), (1, 2)), ((5, 6, 7), None), ((5, 6, 7), ()), ((3, 4, 5, 6), (1, 3)),
    ((200, 300), -1), ((300, 200), 0), ((3, 70000), -1), ((2, 197, 1001), 1),
    ((9, 128), -1), ((4, 256), -1), ((4, 257), -1),  # the short-row dot product at and past its bound
]


def case_id(shape, axis):
    return f"{'x'.join(map(str, shape))}-axis={axis}".replace(" ", "")


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a)) for s, a in CASES])
def test_backward_formula(shape, axis, dtype, fn):
    g, y = inputs(fn, shape, axis, dtype)
    g_before, y_before = g.copy(), y.copy()
    result = fn(g, y, axis=axis)
    assert result.dtype == dtype and result.shape == shape and result.flags.c_contiguous
    assert_allclose(result, reference_backward(fn, g, y, axis), **TOL[dtype])
    assert_array_equal(g, g_before)
    assert_array_equal(y, y_before)


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("layout", ["transposed", "sliced", "negative-steps", "fortran"])
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), None], ids=lambda a: f"axis={a}")
def test_backward_strided_inputs(axis, layout, fn):
    shape = (6, 9, 10)
    g, y = inputs(fn, shape, axis, np.float64, seed=1)
    if layout == "transposed":
        g, y = np.ascontiguousarray(g.T).T, np.ascontiguousarray(y.T).T
    elif layout == "sliced":
        g = np.repeat(np.repeat(g, 2, axis=0), 3, axis=2)[::2, :, 1::3]
        y = np.repeat(y, 2, axis=1)[:, ::2, :]
    elif layout == "negative-steps":
        g = g[::-1, :, ::-1].copy()[::-1, :, ::-1]
        y = y[:, ::-1].copy()[:, ::-1]
    else:
        g, y = np.asfortranarray(g), np.asfortranarray(y)
    assert g.shape == y.shape == shape
    assert_allclose(fn(g, y, axis=axis), reference_backward(fn, g, y, axis), **TOL[np.float64])


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("target", ["grad_output", "output", "fresh", "transposed", "sliced"])
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a))
                                         for s, a in [((7, 33), -1), ((5, 6, 20), 1), ((5, 40, 3), 1),
                                                      ((5, 6, 7), (0, 2)), ((3, 70000), -1), ((300, 200), 0)]])
def test_backward_out(shape, axis, target, fn):
    g, y = inputs(fn, shape, axis, np.float32, seed=2)
    expected = reference_backward(fn, g, y, axis)
    if target == "grad_output":
        out = g
    elif target == "output":
        out = y
    elif target == "fresh":
        out = np.empty(shape, np.float32)
    elif target == "transposed":
        out = np.empty(shape[::-1], np.float32).T
    else:
        base = np.full(tuple(2 * s for s in shape), 7.0, np.float32)
        out = base[tuple(slice(None, None, 2) for _ in shape)]
    assert fn(g, y, axis=axis, out=out) is out
    assert_allclose(out, expected, **TOL[np.float32])
    if target == "sliced":
        assert np.count_nonzero(base == 7.0) >= base.size - out.size


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a))
                                         for s, a in [((30, 200), -1), ((30, 20, 10), 1), ((5, 6, 7), (0, 2))]])
def test_backward_with_one_array_as_grad_output_output_and_out(shape, axis, fn):
    a = FORWARD_OF[fn](np.random.default_rng(9).standard_normal(shape), axis=axis)
    expected = reference_backward(fn, a, a, axis)
    assert fn(a, a, axis=axis, out=a) is a
    assert_allclose(a, expected, **TOL[np.float64])


@pytest.mark.parametrize("fn", BACKWARD)
def test_backward_out_errors(fn):
    g, y = inputs(fn, (4, 5), -1, np.float64)
    with pytest.raises(ValueError):
        fn(g, y, out=np.empty((5, 4)))
    with pytest.raises(ValueError):
        fn(g, y, out=np.empty((4, 5), np.float32))
    with pytest.raises(TypeError):
        fn(g, y, out=g.tolist())
    read_only = np.empty((4, 5))
    read_only.setflags(write=False)
    with pytest.raises(ValueError):
        fn(g, y, out=read_only)


@pytest.mark.parametrize("fn", BACKWARD)
def test_mismatched_shapes_are_value_errors_naming_both(fn):
    g, y = np.zeros((3, 4)), np.full((3, 5), 0.2)
    with pytest.raises(ValueError) as excinfo:
        fn(g, y)
    message = str(excinfo.value)
    assert "grad_output" in message and "output" in message.replace("grad_output", "")
    assert "(3, 4)" in message and "(3, 5)" in message
    with pytest.raises(ValueError):
        fn(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        fn(np.zeros((1, 4)), np.zeros(4))  # broadcastable is not enough


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("g_dtype, y_dtype", [(np.float32, np.float64), (np.float64, np.float32),
                                              (np.float16, np.float32), (np.int64, np.float64)],
                         ids=["f32-f64", "f64-f32", "f16-f32", "i64-f64"])
def test_mismatched_dtypes_are_value_errors_naming_both(fn, g_dtype, y_dtype):
    g, y = np.zeros((3, 4), g_dtype), np.full((3, 4), 0.25, y_dtype)
    with pytest.raises(ValueError) as excinfo:
        fn(g, y)
    message = str(excinfo.value)
    assert "grad_output" in message and "output" in message.replace("grad_output", "")
    assert np.dtype(g_dtype).name in message and np.dtype(y_dtype).name in message


@pytest.mark.parametrize("fn", BACKWARD)
def test_backward_zero_dimensional_and_empty(fn):
    """A 0-d softmax output is 1 (log: 0) and its gradient 0; empty inputs give empty gradients."""
    y0 = softmax(np.float64(2.0)) if fn is softmax_backward else log_softmax(np.float64(2.0))
    result = fn(np.float64(3.0), y0)
    assert result.shape == () and result == 0.0
    out = np.empty(())
    assert fn(np.float64(3.0), y0, axis=None, out=out) is out and out == 0.0
    with pytest.raises(AxisError):
        fn(np.float64(3.0), y0, axis=1)
    for shape, axis in [((0,), -1), ((5, 0), 0), ((0, 3), -1), ((2, 0, 3), (0, 2))]:
        empty = np.zeros(shape, np.float32)
        assert fn(empty, empty, axis=axis).shape == shape
        with pytest.raises(AxisError):
            fn(empty, empty, axis=len(shape))


@pytest.mark.parametrize("fn", BACKWARD)
def test_backward_lists(fn):
    g, y = [[1.0, 0.0, -2.0]], [[0.2, 0.3, 0.5]]
    assert_allclose(fn(g, y), reference_backward(fn, g, y, -1), rtol=1e-15)


def test_backward_docstring_examples():
    assert_allclose(softmax_backward(np.array([1.0, 0.0]), softmax(np.array([0.0, 0.0]))), [0.25, -0.25])
    assert_allclose(log_softmax_backward(np.array([1.0, 0.0]), log_softmax(np.array([0.0, 0.0]))), [0.5, -0.5])


# ---------------------------------------------------------------------------------------------------------
# Finite differences of a random linear loss L(x) = sum(w * f(x)): dL/dx = backward(w, f(x))
# ---------------------------------------------------------------------------------------------------------



@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a))
                                         for s, a in [((6,), -1), ((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1),
                                                      ((2, 3, 4), (0, 2)), ((2, 3, 4), None), ((3, 4), ())]])
def test_backward_matches_finite_differences(shape, axis, fn):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 2
    w = rng.standard_normal(shape)
    forward = FORWARD_OF[fn]

    def loss(z):
        return np.sum(w * forward(z, axis=axis))

    analytic = fn(w, forward(x, axis=axis), axis=axis)
    assert_allclose(analytic, central_differences(loss, x), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------------------
# softmax_jacobian
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis, expected_shape", [
    ((4,), -1, (4, 4)),
    ((2, 3, 4), -1, (2, 3, 4, 4)),
    ((2, 3, 4), 1, (2, 4, 3, 3)),
    ((2, 3, 4), 0, (3, 4, 2, 2)),
    ((2, 3, 4), (0, 2), (3, 8, 8)),
    ((2, 3, 4), (2, 0), (3, 8, 8)),
    ((2, 3, 4), None, (24, 24)),
    ((2, 3, 4), (), (2, 3, 4, 1, 1)),
    ((), -1, (1, 1)),
    ((5, 0), 0, (0, 5, 5)),
    ((0, 5), -1, (0, 5, 5)),
], ids=lambda v: str(v).replace(" ", ""))
def test_jacobian_shape(shape, axis, expected_shape):
    y = softmax(np.random.default_rng(4).standard_normal(shape), axis=axis)
    assert softmax_jacobian(y, axis=axis).shape == expected_shape


def explicit_jacobian(y_slice):
    """diag(y) - y y^T for one flattened slice, element by element."""
    n = y_slice.size
    jac = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            jac[i, j] = (y_slice[i] if i == j else 0.0) - y_slice[i] * y_slice[j]
    return jac


@pytest.mark.parametrize("shape, axis", [((5,), -1), ((2, 3, 4), 1), ((2, 3, 4), (0, 2)), ((2, 3, 4), None),
                                         ((3, 4), 0)], ids=lambda v: str(v).replace(" ", ""))
def test_jacobian_values(shape, axis):
    y = softmax(np.random.default_rng(5).standard_normal(shape), axis=axis)
    jac = softmax_jacobian(y, axis=axis)
    axes = tuple(range(len(shape))) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    axes = sorted(a % len(shape) for a in axes)
    others = [d for d in range(len(shape)) if d not in axes]
    moved = np.transpose(y, others + axes)  # the other axes first, in order; then the slice axes, in order
    for pos in np.ndindex(*moved.shape[:len(others)]):
        assert_allclose(jac[pos], explicit_jacobian(moved[pos].ravel()), rtol=1e-15, atol=1e-17)


@pytest.mark.parametrize("shape, axis", [((4,), -1), ((3, 4), 0), ((2, 3, 2), (0, 2))],
                         ids=lambda v: str(v).replace(" ", ""))
def test_jacobian_matches_finite_differences(shape, axis):
    """J[..., i, j] = d y_i / d x_j."""
    x = np.random.default_rng(6).standard_normal(shape)
    jac = softmax_jacobian(softmax(x, axis=axis), axis=axis)
    axes = sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis))
    others = [d for d in range(len(shape)) if d not in axes]
    h = 1e-6
    for j_index in np.ndindex(*shape):
        step = np.zeros(shape)
        step[j_index] = h
        dy = (softmax(x + step, axis=axis) - softmax(x - step, axis=axis)) / (2 * h)
        moved = np.transpose(dy, others + axes)
        pos = tuple(j_index[d] for d in others)
        j_flat = np.ravel_multi_index(tuple(j_index[d] for d in axes), [shape[d] for d in axes])
        assert_allclose(jac[pos][:, j_flat], moved[pos].ravel(), rtol=1e-6, atol=1e-9)


def test_jacobian_docstring_example_and_dtypes():
    assert_array_equal(softmax_jacobian(np.array([0.5, 0.5])), [[0.25, -0.25], [-0.25, 0.25]])
    assert_array_equal(softmax_jacobian(np.float64(1.0)), [[0.0]])
    y32 = softmax(np.arange(3, dtype=np.float32))
    assert softmax_jacobian(y32).dtype == np.float32
    assert softmax_jacobian(y32.astype(np.float16)).dtype == np.float16
    assert softmax_jacobian(np.array([1, 0])).dtype == np.float64


@pytest.mark.parametrize("shape, axis", [((6,), -1), ((3, 5), 0), ((2, 3, 4), 1), ((2, 3, 4), (0, 2)),
                                         ((2, 3, 4), None)], ids=lambda v: str(v).replace(" ", ""))
def test_softmax_backward_is_the_jacobian_product(shape, axis):
    rng = np.random.default_rng(7)
    y = softmax(rng.standard_normal(shape), axis=axis)
    g = rng.standard_normal(shape)
    jac = softmax_jacobian(y, axis=axis)
    axes = tuple(range(len(shape))) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    axes = sorted(a % len(shape) for a in axes)
    others = [d for d in range(len(shape)) if d not in axes]
    g_moved = np.transpose(g, others + axes).reshape(jac.shape[:-1])
    vjp = np.einsum("...ij,...i->...j", jac, g_moved)  # dL/dx_j = sum_i g_i dy_i/dx_j
    expected = np.transpose(vjp.reshape([shape[d] for d in others + axes]), np.argsort(others + axes))
    assert_allclose(softmax_backward(g, y, axis=axis), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(600, 1001), (5000, 128)], ids=["600x1001", "5000x128"])
def test_log_softmax_backward_from_memory(shape, dtype):
    """Arrays of 2 MiB or more take log_softmax_backward's prefetching pass: the same bits as rows that do not
    (a slice of 10 rows is under the threshold), and within a rounding bound of the float64 formula. The bound
    scales with sum(|g|) of the row: sum(g) is rounded to the dtype before it multiplies exp(y)."""
    g, y = inputs(log_softmax_backward, shape, -1, dtype)
    result = log_softmax_backward(g, y)
    assert_array_equal(result[:10], log_softmax_backward(g[:10], y[:10]))
    eps = np.finfo(dtype).eps
    g64, y64 = g.astype(np.float64), y.astype(np.float64)
    bound = 8 * eps * (np.abs(g64) + np.exp(y64) * np.abs(g64).sum(-1, keepdims=True))
    assert np.all(np.abs(result - reference_backward(log_softmax_backward, g, y, -1)) <= bound)


@pytest.mark.parametrize("fn", BACKWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_plain_out_gives_the_bits_of_a_new_result(dtype, fn):
    """A C-contiguous out= takes the per-call fast path: the bits of the new result, in out, also when out is
    g or y (in place); out partly overlapping g (one row apart in one buffer) gives the same as from copies."""
    g, y = inputs(fn, (25, 300), -1, dtype)
    expected = fn(g, y)
    out = np.full(g.shape, np.nan, dtype)
    assert fn(g, y, out=out) is out
    assert_array_equal(out, expected)
    for which in ("g", "y"):
        gg, yy = g.copy(), y.copy()
        target = gg if which == "g" else yy
        assert fn(gg, yy, out=target) is target
        assert_array_equal(target, expected)
    assert _api._k.lastaxis_backward(g, y, out, -1, fn is log_softmax_backward, 0) is out  # the fast path
    for which in ("g", "y"):  # out one row past g (or y) in one buffer: refused by the fast path, copied
        buf = np.empty(26 * 300, dtype)
        shifted_in, shifted_out = buf[:25 * 300].reshape(25, 300), buf[300:].reshape(25, 300)
        shifted_in[...] = g if which == "g" else y
        gg, yy = (shifted_in, y) if which == "g" else (g, shifted_in)
        assert _api._k.lastaxis_backward(gg, yy, shifted_out, -1, fn is log_softmax_backward, 0) is None
        assert fn(gg, yy, out=shifted_out) is shifted_out
        assert_array_equal(shifted_out, expected)


@pytest.mark.parametrize("shape", [(16500, 128), (5000, 128), (8200, 256), (100, 197), (40, 33)],
                         ids=["8MB-128", "2.5MB-128", "8MB-256", "in-cache-197", "in-cache-33"])
def test_softmax_backward_short_rows_match_single_rows(shape):
    """float32 rows of up to 256 (the short-row kernel, every build): in the AVX-512 build, from memory, rows of
    up to 128 prefetch in a burst per row (from 8 MB), longer ones inside the dot product, rows under 8 MB not at
    all; none of it may change the bits. Every sampled row must equal the row computed alone, at one
    thread and two and with out=g, and stay within a rounding bound of the float64 formula."""
    g, y = inputs(softmax_backward, shape, -1, np.float32)
    inplace = assert_rows_as_alone(softmax_backward, [g, y], [0, 1, shape[0] // 2, shape[0] - 2, shape[0] - 1])
    eps = np.finfo(np.float32).eps
    g64, y64 = g.astype(np.float64), y.astype(np.float64)
    bound = 8 * eps * (np.abs(g64 * y64) + y64 * np.abs(g64 * y64).sum(-1, keepdims=True))
    assert np.all(np.abs(inplace - reference_backward(softmax_backward, g, y, -1)) <= bound)


SHORT_WIDTHS = list(range(8, 72)) + [96, 100, 111, 127, 128, 129, 144, 197, 200, 255, 256]


@pytest.mark.parametrize("n", SHORT_WIDTHS)
def test_softmax_backward_short_rows_of_every_width(n):
    """float32 rows of 8 to 256, every width to 71 (each n % 8 and n % 16: the builds without AVX-512 sum a row
    in steps of 16 and 8 and its last n % 8 products one by one, the AVX-512 build in steps of 16): within a
    rounding bound of the float64 formula, every row as computed alone."""
    g, y = inputs(softmax_backward, (40, n), -1, np.float32, seed=n)
    inplace = assert_rows_as_alone(softmax_backward, [g, y], [0, 1, 20, 39])
    eps = np.finfo(np.float32).eps
    g64, y64 = g.astype(np.float64), y.astype(np.float64)
    bound = 8 * eps * (np.abs(g64 * y64) + y64 * np.abs(g64 * y64).sum(-1, keepdims=True))
    assert np.all(np.abs(inplace - reference_backward(softmax_backward, g, y, -1)) <= bound)


@pytest.mark.parametrize("n", [8, 16, 31, 33, 63, 100, 256])
def test_softmax_backward_short_rows_carry_infinities_and_nan(n):
    """A non-finite grad_output entry, first, in the middle or last in its row (the last ones fall in the part
    of a row summed one by one), gives the float64 formula's infinities and NaNs: +inf in g makes the dot
    product +inf, so the row is -inf (NaN where g is inf itself); NaN, or +inf with -inf, makes the row NaN; the
    rows without one stay finite."""
    g, y = inputs(softmax_backward, (8, n), -1, np.float32, seed=1)
    g[0, 0] = g[1, n // 2] = g[2, n - 1] = np.inf
    g[3, n - 1] = -np.inf
    g[4, n - 1] = np.nan
    g[5, 0], g[5, n - 1] = np.inf, -np.inf
    with np.errstate(invalid="ignore"):   # numpy warns of inf - inf; fastsoftmax never warns
        expected = reference_backward(softmax_backward, g, y, -1).astype(np.float32)
    got = softmax_backward(g, y)
    assert not np.isfinite(expected[:6]).any()
    assert_array_equal(got[:6], expected[:6])
    assert_allclose(got[6:], expected[6:], **TOL[np.float32])
    assert np.isneginf(got[0, 1:]).all() and np.isnan(got[0, 0]) and np.isnan(got[4]).all()


@pytest.mark.parametrize("dtype, shape", [(np.float32, (4, 21, 32768)), (np.float64, (2, 21, 32768))],
                         ids=["float32", "float64"])
def test_log_softmax_backward_from_memory_over_an_inner_axis(shape, dtype):
    """Over a non-last axis, arrays of 8 MB or more prefetch the next tile: the same bits as a slab computed
    alone (under the threshold), and within a rounding bound of the float64 formula."""
    g, y = inputs(log_softmax_backward, shape, 1, dtype)
    result = log_softmax_backward(g, y, axis=1)
    assert_array_equal(result[:1], log_softmax_backward(g[:1], y[:1], axis=1))
    eps = np.finfo(dtype).eps
    g64, y64 = g.astype(np.float64), y.astype(np.float64)
    bound = 8 * eps * (np.abs(g64) + np.exp(y64) * np.abs(g64).sum(1, keepdims=True))
    assert np.all(np.abs(result - reference_backward(log_softmax_backward, g, y, 1)) <= bound)


NARROW_BACKWARD = [pytest.param(softmax_backward, np.float32, n, id=f"softmax_backward-float32-{n}")
                   for n in (1, 2, 3, 7, 8)]
NARROW_BACKWARD += [pytest.param(softmax_backward, np.float64, n, id=f"softmax_backward-float64-{n}")
                    for n in (1, 3, 4)]
NARROW_BACKWARD += [pytest.param(log_softmax_backward, np.float32, n, id=f"log_softmax_backward-float32-{n}")
                    for n in (1, 2, 5, 12, 13, 31, 63, 64)]
NARROW_BACKWARD += [pytest.param(log_softmax_backward, np.float64, n, id=f"log_softmax_backward-float64-{n}")
                    for n in (1, 6, 7)]


@pytest.mark.usefixtures("threads_from_two_elements")
@pytest.mark.parametrize("fn, dtype, n", NARROW_BACKWARD)
@pytest.mark.parametrize("n_rows", [15, 16, 1100, 25000])
def test_narrow_backward_rows_match_single_rows(n_rows, fn, dtype, n):
    """Rows of up to 28 bytes (softmax_backward: 7 float32, 3 float64) or 48 bytes (log_softmax_backward: 12
    float32, 6 float64) go through staged blocks of rows, 16 or more at a time, or one by one with the same
    arithmetic (backward_narrow_rows in pyx/_kernels.pxi): every row must equal the row computed alone, at one
    thread and two (the thread rule's minimum size lowered; softmax_backward's own minimum of 24 576 elements is
    a constant of the kernels, hence 25 000 rows), with out=g, and from and into rows with a stride; and match
    the float64 formula. The largest n of each kind is the first past its bound (the row kernels); float32
    log_softmax_backward rows of 13-63 go through blocks of rows, in every build (log_backward_rows_blocked,
    whose blocks hold 2048 // n rows: 1100 rows make several, and 25 000 rows of 31 and 63 prefetch), 64 is past
    them."""
    g, y = inputs(fn, (n_rows, n), -1, dtype, seed=n)
    inplace = assert_rows_as_alone(fn, [g, y], sorted({0, 1, 14, n_rows // 2, n_rows - 1}))
    padded_g = np.zeros((n_rows, n + 3), dtype)
    padded_g[:, :n] = g
    padded_y = np.zeros((n_rows, n + 1), dtype)
    padded_y[:, :n] = y
    out = np.full((n_rows, n + 5), 9.0, dtype)
    fn(padded_g[:, :n], padded_y[:, :n], out=out[:, :n], num_threads=2)
    assert_array_equal(out[:, :n], inplace)
    assert (out[:, n:] == 9.0).all()
    assert_allclose(inplace, reference_backward(fn, g, y, -1), **TOL[dtype])
