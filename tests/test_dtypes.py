"""dtype rules.

* float32 and float64 are computed natively and returned as such.
* float16 is computed in float32 and returned as float16.
* bool and integer inputs are computed and returned as float64 (as scipy.special.softmax).
* dtype= forces float32 or float64 for the computation AND the result; any other dtype= is a TypeError.
* complex, object, string, datetime, timedelta (and structured) inputs raise TypeError naming the dtype;
  longdouble raises TypeError unless dtype= is given.
* Non-native byte order and read-only inputs work.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax import log_softmax, log_softmax_backward, softmax, softmax_backward, softmax_jacobian

pytestmark = pytest.mark.filterwarnings("error")

FORWARD = [pytest.param(softmax, id="softmax"), pytest.param(log_softmax, id="log_softmax")]


def logits(shape=(7, 33), seed=0):
    return np.random.default_rng(seed).standard_normal(shape) * 3


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_float32_and_float64_are_native(dtype, fn):
    x = logits().astype(dtype)
    y = fn(x)
    assert y.dtype == dtype
    assert fn(x, axis=0).dtype == dtype
    assert fn(x, axis=None, num_threads=1).dtype == dtype


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("axis", [-1, 0, None], ids=lambda a: f"axis={a}")
def test_float16_is_computed_in_float32(fn, axis):
    x16 = logits().astype(np.float16)
    y = fn(x16, axis=axis)
    assert y.dtype == np.float16
    assert_array_equal(y, fn(x16.astype(np.float32), axis=axis).astype(np.float16))
    out = np.empty(x16.shape, np.float16)
    assert fn(x16, axis=axis, out=out) is out
    assert_array_equal(out, y)


@pytest.mark.parametrize("fn", FORWARD)
def test_float16_is_not_computed_in_float64(fn):
    """On 100 000 elements, rounding a float32 result to float16 differs from rounding a float64 result in a
    few places; fastsoftmax's float16 result is the float32 one."""
    x16 = logits((100, 1000)).astype(np.float16)
    y = fn(x16)
    via_float32 = fn(x16.astype(np.float32)).astype(np.float16)
    via_float64 = fn(x16.astype(np.float64)).astype(np.float16)
    assert np.count_nonzero(via_float32 != via_float64) > 0  # the data can tell the two apart
    assert_array_equal(y, via_float32)


def test_float16_in_place():
    x16 = logits().astype(np.float16)
    expected = softmax(x16)
    assert softmax(x16, out=x16) is x16
    assert_array_equal(x16, expected)


INT_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bool_and_integers_become_float64(dtype, fn):
    x = np.random.default_rng(1).integers(0, 2 if dtype is np.bool_ else 100, size=(6, 9)).astype(dtype)
    y = fn(x)
    assert y.dtype == np.float64
    assert_array_equal(y, fn(x.astype(np.float64)))
    assert_array_equal(fn(x, axis=0), fn(x.astype(np.float64), axis=0))


def test_bool_values():
    assert_allclose(softmax([True, False]), [np.e / (1 + np.e), 1 / (1 + np.e)], rtol=1e-15)


def test_python_lists_of_ints_and_floats_are_float64():
    assert softmax([1, 2, 3]).dtype == np.float64
    assert softmax([1.0, 2.0]).dtype == np.float64


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("requested", [np.float32, "float32", np.dtype("float32"), "f4"],
                         ids=["np.float32", "'float32'", "dtype", "'f4'"])
@pytest.mark.parametrize("source", [np.float64, np.float16, np.int32, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_dtype_float32_forces_computation_and_result(source, requested, fn):
    x = (logits() * 5).astype(source)
    y = fn(x, dtype=requested)
    assert y.dtype == np.float32
    assert_array_equal(y, fn(x.astype(np.float32)))


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("source", [np.float32, np.float16, np.int8], ids=lambda d: np.dtype(d).name)
def test_dtype_float64_forces_computation_and_result(source, fn):
    x = (logits() * 5).astype(source)
    y = fn(x, dtype=np.float64)
    assert y.dtype == np.float64
    assert_array_equal(y, fn(x.astype(np.float64)))


def test_dtype_float64_is_more_accurate_than_float32():
    """Proof that dtype= changes the computation, not only the result's dtype."""
    x = np.array([0.0, 1e-7, -1e-7, 3e-8], np.float32)
    exact = softmax(x.astype(np.float64))
    assert np.abs(softmax(x, dtype=np.float64) - exact).max() == 0
    assert np.abs(softmax(x).astype(np.float64) - exact).max() > 1e-10


def test_dtype_with_out():
    x = logits()
    out = np.empty(x.shape, np.float32)
    assert softmax(x, dtype=np.float32, out=out) is out
    assert_array_equal(out, softmax(x.astype(np.float32)))
    with pytest.raises(ValueError):
        softmax(x, dtype=np.float32, out=np.empty(x.shape, np.float64))


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("requested", [np.float16, np.int32, np.complex128, np.longdouble, object, "not-a-dtype",
                                       np.bool_],
                         ids=["float16", "int32", "complex128", "longdouble", "object", "not-a-dtype", "bool"])
def test_other_dtype_arguments_are_type_errors(requested, fn):
    if requested is np.longdouble and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 here")
    with pytest.raises(TypeError):
        fn(logits(), dtype=requested)


UNSUPPORTED = [
    np.array([1 + 2j, 3 - 1j], np.complex64),
    np.array([1 + 2j, 3 - 1j], np.complex128),
    np.array([1.0, 2.0], dtype=object),
    np.array(["a", "b"]),
    np.array([b"a", b"b"]),
    np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]"),
    np.array([1, 2], dtype="timedelta64[s]"),
    np.zeros(2, dtype=[("a", np.float64), ("b", np.float64)]),
]
UNSUPPORTED_IDS = ["complex64", "complex128", "object", "unicode", "bytes", "datetime64", "timedelta64",
                   "structured"]


@pytest.mark.parametrize("x", UNSUPPORTED, ids=UNSUPPORTED_IDS)
def test_unsupported_input_dtypes_are_type_errors_naming_the_dtype(x):
    for call in (lambda: softmax(x), lambda: log_softmax(x, axis=0), lambda: softmax(x, dtype=np.float64),
                 lambda: softmax_backward(x, x), lambda: log_softmax_backward(x, x), lambda: softmax_jacobian(x)):
        with pytest.raises(TypeError) as excinfo:
            call()
        assert str(x.dtype) in str(excinfo.value)


def test_complex_python_list_is_a_type_error():
    with pytest.raises(TypeError, match="complex128"):
        softmax([1j, 2.0])


longdouble_only = pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8,
                                     reason="longdouble is float64 on this platform")


@longdouble_only
@pytest.mark.parametrize("fn", FORWARD)
def test_longdouble_is_a_type_error(fn):
    x = logits().astype(np.longdouble)
    with pytest.raises(TypeError, match="float128|longdouble|float96"):
        fn(x)
    with pytest.raises(TypeError):
        softmax_backward(x, x)


@longdouble_only
@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("requested", [np.float64, np.float32], ids=["float64", "float32"])
def test_longdouble_with_dtype_is_accepted(requested, fn):
    x = logits().astype(np.longdouble)
    y = fn(x, dtype=requested)
    assert y.dtype == requested
    assert_array_equal(y, fn(x.astype(requested)))


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", ">i4", "<f4", "<f8"])
def test_non_native_byte_order(dtype, fn):
    native = np.dtype(dtype).newbyteorder("=")
    x_native = (logits() * 4).astype(native)
    x = x_native.astype(dtype)
    assert x.dtype == np.dtype(dtype)
    y = fn(x)
    assert y.dtype.isnative
    assert_array_equal(y, fn(x_native))
    assert_array_equal(fn(x, axis=0), fn(x_native, axis=0))


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64],
                         ids=lambda d: np.dtype(d).name)
def test_read_only_input(dtype, fn):
    x = (logits((50, 800)) * 4).astype(dtype)
    expected = fn(x.copy())
    x.setflags(write=False)
    for kwargs in ({}, {"axis": 0}, {"axis": None}, {"num_threads": 2}):
        assert_array_equal(fn(x, **kwargs), fn(x.copy(), **kwargs))
    assert_array_equal(fn(x), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_backward_keeps_the_floating_dtype(dtype):
    y = softmax(logits().astype(dtype))
    g = logits(seed=1).astype(dtype)
    assert softmax_backward(g, y).dtype == dtype
    assert log_softmax_backward(g, log_softmax(logits().astype(dtype))).dtype == dtype
    assert softmax_jacobian(y).dtype == dtype


def test_float16_backward_is_computed_in_float32():
    y16 = softmax(logits().astype(np.float16))
    g16 = logits(seed=1).astype(np.float16)
    assert_array_equal(softmax_backward(g16, y16),
                       softmax_backward(g16.astype(np.float32), y16.astype(np.float32)).astype(np.float16))


def test_backward_accepts_mixed_byte_order_of_the_same_dtype():
    y = softmax(logits())
    g = logits(seed=1)
    expected = softmax_backward(g, y)
    assert_array_equal(softmax_backward(g.astype(">f8"), y), expected)
    assert_array_equal(softmax_backward(g, y.astype(">f8")), expected)


def test_integer_backward_inputs_become_float64():
    g = np.array([[1, 0, 2]], np.int32)
    y = np.array([[0, 1, 0]], np.int32)
    assert softmax_backward(g, y).dtype == np.float64
    assert_array_equal(softmax_backward(g, y), softmax_backward(g.astype(float), y.astype(float)))


def test_float16_large_magnitudes_emit_no_warning():
    """The float16 analogue of the 1e30 / 1e300 rule: the result may round to -inf, but silently."""
    x = np.array([60000.0, -60000.0], np.float16)
    assert_array_equal(softmax(x), np.array([1.0, 0.0], np.float16))  # fine: softmax stays in [0, 1]
    y = log_softmax(x)
    assert y[0] == 0 and y[1] == -np.inf
