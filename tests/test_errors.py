"""Argument errors: axis and out= (dtype errors are in test_dtypes.py, thread-count errors in test_threads.py,
backward shape/dtype mismatches in test_backward.py).

* A bad axis raises numpy.exceptions.AxisError; a repeated axis ValueError; a non-integer axis TypeError.
* out= must have exactly the result's shape and dtype (ValueError otherwise); a non-ndarray out is a TypeError;
  a read-only out a ValueError.
* A rejected call writes nothing into out.
"""
import numpy as np
import pytest
from numpy.exceptions import AxisError

from fastsoftmax import log_softmax, log_softmax_backward, softmax, softmax_backward, softmax_jacobian

X = np.random.default_rng(0).standard_normal((3, 4, 5))
Y = softmax(X)


def call_softmax(axis, **kw):
    return softmax(X, axis=axis, **kw)


def call_log_softmax(axis, **kw):
    return log_softmax(X, axis=axis, **kw)


def call_softmax_backward(axis, **kw):
    return softmax_backward(X, Y, axis=axis, **kw)


def call_log_softmax_backward(axis, **kw):
    return log_softmax_backward(X, Y, axis=axis, **kw)


def call_jacobian(axis, **kw):
    return softmax_jacobian(Y, axis=axis, **kw)


ALL = [pytest.param(f, id=f.__name__[5:]) for f in (call_softmax, call_log_softmax, call_softmax_backward,
                                                    call_log_softmax_backward, call_jacobian)]
WITH_OUT = ALL[:4]


@pytest.mark.parametrize("call", ALL)
@pytest.mark.parametrize("axis", [3, -4, 100, (0, 3), (-4,), (1, 2, 3)], ids=str)
def test_out_of_bounds_axis_is_axis_error(call, axis):
    with pytest.raises(AxisError):
        call(axis)


@pytest.mark.parametrize("call", ALL)
@pytest.mark.parametrize("axis", [(0, 0), (1, -2), (0, 1, 2, 0)], ids=str)
def test_repeated_axis_is_value_error(call, axis):
    with pytest.raises(ValueError, match="repeated axis") as excinfo:
        call(axis)
    assert not isinstance(excinfo.value, AxisError)


@pytest.mark.parametrize("call", ALL)
@pytest.mark.parametrize("axis", [1.0, "0", [0, 1], (0, 1.0), np.float64(1), (0, "1"), 1j],
                         ids=["1.0", "'0'", "[0,1]", "(0,1.0)", "np.float64", "(0,'1')", "1j"])
def test_non_integer_axis_is_type_error(call, axis):
    with pytest.raises(TypeError):
        call(axis)


@pytest.mark.parametrize("call", ALL)
@pytest.mark.parametrize("axis", [np.int64(1), np.int8(-1), (np.intp(0), 2)], ids=["int64", "int8", "tuple-intp"])
def test_numpy_integer_axes_are_accepted(call, axis):
    call(axis)


@pytest.mark.parametrize("axis", [True, (False,)], ids=["True", "(False,)"])
def test_bool_axis_is_type_error(axis):
    with pytest.raises(TypeError):
        softmax(np.ones((3, 3)), axis=axis)


@pytest.mark.parametrize("fn", [softmax, log_softmax, lambda x, axis: softmax_backward(x, x, axis=axis),
                                lambda x, axis: softmax_jacobian(x, axis=axis)],
                         ids=["softmax", "log_softmax", "softmax_backward", "softmax_jacobian"])
@pytest.mark.parametrize("axis", [0.0, "a"], ids=["0.0", "'a'"])
def test_zero_dimensional_non_integer_axis_is_type_error(fn, axis):
    with pytest.raises(TypeError):
        fn(np.array(1.0), axis=axis)


# ---------------------------------------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", WITH_OUT)
@pytest.mark.parametrize("out", [np.empty((3, 4)), np.empty((3, 4, 5, 1)), np.empty((5, 4, 3)), np.empty(60)],
                         ids=["3x4", "3x4x5x1", "5x4x3", "60"])
def test_out_of_wrong_shape_is_value_error(call, out):
    with pytest.raises(ValueError, match="shape"):
        call(-1, out=out)


@pytest.mark.parametrize("call", WITH_OUT)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.complex128, ">f8"],
                         ids=["float32", "float16", "int64", "complex128", "big-endian-float64"])
def test_out_of_wrong_dtype_is_value_error(call, dtype):
    with pytest.raises(ValueError, match="dtype"):
        call(-1, out=np.empty((3, 4, 5), dtype))


def test_out_dtype_follows_the_result_dtype():
    x32 = X.astype(np.float32)
    with pytest.raises(ValueError):
        softmax(x32, out=np.empty(x32.shape, np.float64))  # float32 input: float32 result
    with pytest.raises(ValueError):
        softmax(X.astype(np.int32), out=np.empty(X.shape, np.float32))  # integers: float64 result
    with pytest.raises(ValueError):
        softmax(X.astype(np.float16), out=np.empty(X.shape, np.float32))  # float16: float16 result


@pytest.mark.parametrize("call", WITH_OUT)
@pytest.mark.parametrize("out", [np.empty((3, 4, 5)).tolist(), memoryview(np.empty((3, 4, 5))), 1.0],
                         ids=["list", "memoryview", "float"])
def test_out_that_is_not_an_ndarray_is_type_error(call, out):
    with pytest.raises(TypeError):
        call(-1, out=out)


@pytest.mark.parametrize("call", WITH_OUT)
def test_read_only_out_is_value_error(call):
    out = np.zeros((3, 4, 5))
    out.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        call(-1, out=out)
    assert np.all(out == 0)


@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_read_only_input_as_out_is_value_error(fn):
    x = X.copy()
    x.setflags(write=False)
    with pytest.raises(ValueError):
        fn(x, out=x)


def test_zero_dimensional_out_errors():
    with pytest.raises(ValueError):
        softmax(np.array(1.0), out=np.empty(1))
    with pytest.raises(ValueError):
        softmax(np.array(1.0), out=np.empty((), np.float32))
    with pytest.raises(TypeError):
        softmax(np.array(1.0), out=[0.0])


@pytest.mark.parametrize("call", WITH_OUT)
@pytest.mark.parametrize("axis", [7, (0, 0), 1.5], ids=["bad-axis", "repeated", "float"])
def test_rejected_calls_do_not_write_into_out(call, axis):
    out = np.full((3, 4, 5), 42.0)
    with pytest.raises((TypeError, ValueError)):
        call(axis, out=out)
    assert np.all(out == 42.0)


def test_ragged_input_is_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="x"):
        softmax([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="grad_output"):
        softmax_backward([[1.0, 2.0], [3.0]], [[0.5, 0.5], [1.0, 0.0]])
