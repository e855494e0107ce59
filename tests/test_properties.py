"""Mathematical properties, checked on Hypothesis-generated arrays and axes (profiles in conftest.py: "ci" when
the CI environment variable is set, else "dev").

* softmax sums to 1 over each slice;
* softmax is invariant to adding a constant to each slice;
* log_softmax == log(softmax) where softmax is a normal number;
* the backward functions equal central finite differences of a random linear loss;
* softmax_backward equals the product with softmax_jacobian;
* log_softmax_backward and softmax_backward agree through the chain rule (d log y = dy / y).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from fastsoftmax import log_softmax, log_softmax_backward, softmax, softmax_backward, softmax_jacobian

from helpers import central_differences

pytestmark = [pytest.mark.usefixtures("simd_level"), pytest.mark.filterwarnings("error")]


@st.composite
def axes(draw, ndim):
    """An axis argument for `ndim` dimensions: an int (maybe negative), None, or a tuple of distinct axes in any
    order (maybe negative, maybe empty)."""
    kind = draw(st.sampled_from(["int", "none", "tuple"]))
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    if kind == "none":
        return None
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    negate = draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
    return tuple(a - ndim if neg else a for a, neg in zip(chosen, negate))


@st.composite
def logits_and_axis(draw, dtype=np.float64, bound=50.0, max_dims=3, max_side=6):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=max_side))
    width = 32 if dtype == np.float32 else 64
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(-bound, bound, width=width)))
    return x, draw(axes(len(shape)))


def keepdims_shape(shape, axis):
    """The shape of a per-slice quantity (size 1 along the reduced axes)."""
    if axis is None:
        return (1,) * len(shape)
    reduced = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
    return tuple(1 if d in reduced else s for d, s in enumerate(shape))


@given(logits_and_axis(np.float64))
def test_softmax_sums_to_one_float64(case):
    x, axis = case
    y = softmax(x, axis=axis)
    assert np.all(y >= 0) and np.all(y <= 1)
    assert_allclose(y.sum(axis=axis), 1.0, rtol=0, atol=1e-13)


@given(logits_and_axis(np.float32, bound=80.0))
def test_softmax_sums_to_one_float32(case):
    x, axis = case
    y = softmax(x, axis=axis)
    assert y.dtype == np.float32
    assert_allclose(y.astype(np.float64).sum(axis=axis), 1.0, rtol=0, atol=5e-6)


@given(st.data())
def test_invariant_to_a_constant_per_slice(data):
    x, axis = data.draw(logits_and_axis(np.float64))
    c = data.draw(hnp.arrays(np.float64, keepdims_shape(x.shape, axis), elements=st.floats(-100, 100)))
    y = softmax(x, axis=axis)
    assert_allclose(softmax(x + c, axis=axis), y, rtol=1e-11, atol=1e-15)
    assert_allclose(log_softmax(x + c, axis=axis), log_softmax(x, axis=axis), rtol=1e-11, atol=1e-12)


@given(logits_and_axis(np.float64))
def test_log_softmax_is_log_of_softmax(case):
    x, axis = case
    y = softmax(x, axis=axis)
    normal = y > np.finfo(np.float64).tiny
    assert_allclose(log_softmax(x, axis=axis)[normal], np.log(y[normal]), rtol=1e-12, atol=1e-13)


@given(logits_and_axis(np.float32, bound=40.0))
def test_log_softmax_is_log_of_softmax_float32(case):
    x, axis = case
    y = softmax(x, axis=axis).astype(np.float64)
    normal = y > 1e-37
    assert_allclose(log_softmax(x, axis=axis)[normal], np.log(y[normal]), rtol=1e-6, atol=4e-6)




@pytest.mark.parametrize("forward, backward", [(softmax, softmax_backward), (log_softmax, log_softmax_backward)],
                         ids=["softmax", "log_softmax"])
@given(data=st.data())
def test_backward_equals_finite_differences(forward, backward, data):
    x, axis = data.draw(logits_and_axis(np.float64, bound=5.0, max_side=4))
    w = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(-1, 1)))

    def loss(z):
        return np.sum(w * forward(z, axis=axis))

    analytic = backward(w, forward(x, axis=axis), axis=axis)
    assert_allclose(analytic, central_differences(loss, x), rtol=1e-5, atol=1e-7)


@given(data=st.data())
def test_softmax_backward_equals_jacobian_product(data):
    x, axis = data.draw(logits_and_axis(np.float64, bound=10.0, max_side=5))
    g = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(-10, 10)))
    y = softmax(x, axis=axis)
    ndim = x.ndim
    reduced = list(range(ndim)) if axis is None else sorted({a % ndim for a in
                                                             ((axis,) if isinstance(axis, int) else axis)})
    others = [d for d in range(ndim) if d not in reduced]
    order = others + reduced
    jac = softmax_jacobian(y, axis=axis)  # (*others, n, n)
    g_moved = np.transpose(g, order).reshape(jac.shape[:-1])
    vjp = np.einsum("...ij,...i->...j", jac, g_moved)
    expected = np.transpose(vjp.reshape([x.shape[d] for d in order]), np.argsort(order))
    assert_allclose(softmax_backward(g, y, axis=axis), expected, rtol=1e-10, atol=1e-12)


@given(data=st.data())
def test_log_softmax_backward_chain_rule(data):
    """L(x) = sum(w * log(softmax(x))): dL/dy = w / y, so log_softmax_backward(w, log y) == softmax_backward(w / y, y);
    and conversely softmax_backward(g, y) == log_softmax_backward(g * y, log y)."""
    x, axis = data.draw(logits_and_axis(np.float64, bound=5.0))
    w = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(-10, 10)))
    y = softmax(x, axis=axis)
    log_y = log_softmax(x, axis=axis)
    assert_allclose(log_softmax_backward(w, log_y, axis=axis), softmax_backward(w / y, y, axis=axis),
                    rtol=1e-9, atol=1e-11)
    assert_allclose(softmax_backward(w, y, axis=axis), log_softmax_backward(w * y, log_y, axis=axis),
                    rtol=1e-9, atol=1e-12)
