"""Axes, strides, out=, in-place, 0-d, empty and 64-bit-offset inputs, each against a plain float64 NumPy
reference of the same values.

Rules encoded here:

* axis: int (negative allowed), tuple of ints (the joint slice, as scipy.special.softmax), None (all elements);
  () makes every element its own slice.
* Any input strides (transposed, sliced, negative steps, Fortran order, broadcast, unaligned).
* The result is a new C-contiguous array unless out= is given; out= may have any strides, may be x itself, and
  is returned. The input is never modified otherwise.
* 0-d input is one element; empty input gives an empty result of the same shape.
* Offsets beyond 2**31 elements are addressed correctly (64-bit indexing).
"""
import sys

import numpy as np
import pytest
from numpy.exceptions import AxisError
from numpy.lib.stride_tricks import as_strided
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax import _api, log_softmax, softmax

pytestmark = [pytest.mark.usefixtures("simd_level"), pytest.mark.filterwarnings("error")]

FORWARD = [pytest.param(softmax, id="softmax"), pytest.param(log_softmax, id="log_softmax")]
# (rtol, atol) per result dtype: softmax and log_softmax results (log_softmax near 0 has an absolute bound).
TOL = {
    (np.float32, "softmax"): (4e-6, 1e-37),
    (np.float32, "log_softmax"): (4e-6, 4e-6),
    (np.float64, "softmax"): (1e-13, 1e-300),
    (np.float64, "log_softmax"): (1e-13, 1e-15),
}


def reference(fn, x, axis):
    """float64 softmax / log_softmax of the values of x, written plainly."""
    x64 = np.array(x, dtype=np.float64)
    shifted = x64 - x64.max(axis, keepdims=True)
    if fn is softmax:
        e = np.exp(shifted)
        return e / e.sum(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


def assert_matches_reference(fn, y, x, axis):
    dtype = np.float32 if y.dtype == np.float32 else np.float64
    rtol, atol = TOL[dtype, fn.__name__]
    assert y.shape == np.shape(x)
    assert_allclose(y, reference(fn, x, axis), rtol=rtol, atol=atol)


def make_layout(rng, shape, layout, dtype):
    """An array of `shape` and `dtype` with the named memory layout (values standard normal)."""
    if layout == "contiguous":
        return rng.standard_normal(shape).astype(dtype)
    if layout == "fortran":
        return np.asfortranarray(rng.standard_normal(shape).astype(dtype))
    if layout == "transposed":  # reversed axes of a C array
        return rng.standard_normal(shape[::-1]).astype(dtype).T
    if layout == "sliced":  # every other element along every axis, from offset 1
        base = rng.standard_normal(tuple(2 * s + 1 for s in shape)).astype(dtype)
        return base[tuple(slice(1, 1 + 2 * s, 2) for s in shape)]
    if layout == "negative-steps":
        base = rng.standard_normal(shape).astype(dtype)
        return base[tuple(slice(None, None, -1) for _ in shape)]
    if layout == "padded-rows":  # contiguous last axis, rows further apart than their length
        base = rng.standard_normal(shape[:-1] + (shape[-1] + 5,)).astype(dtype)
        return base[..., 2:2 + shape[-1]]
    raise ValueError(layout)


LAYOUTS = ["contiguous", "fortran", "transposed", "sliced", "negative-steps", "padded-rows"]

SHAPE_AXES = [
    ((37,), 0), ((37,), -1), ((37,), None), ((37,), (0,)), ((37,), ()),
    ((9, 11), 0), ((9, 11), 1), ((9, 11), -2), ((9, 11), (0, 1)), ((9, 11), None),
    ((5, 6, 7), -1), ((5, 6, 7), 0), ((5, 6, 7), 1), ((5, 6, 7), -2), ((5, 6, 7), (0, 1)), ((5, 6, 7), (1, 2)),
    ((5, 6, 7), (0, 2)), ((5, 6, 7), (-1, 0)), ((5, 6, 7), (0, 1, 2)), ((5, 6, 7), None), ((5, 6, 7), ()),
    ((3, 4, 5, 6), 2), ((3, 4, 5, 6), (1, 3)), ((3, 4, 5, 6), (0, 2, 3)), ((3, 4, 5, 6), (-3, -2)),
    ((4, 10, 20), 1), ((2, 3, 10, 12), (1, 2)),
]


def case_id(shape, axis):
    return f"{'x'.join(map(str, shape))}-axis={axis}".replace(" ", "")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a)) for s, a in SHAPE_AXES])
def test_axes_and_strides(shape, axis, layout, dtype):
    x = make_layout(np.random.default_rng(len(shape) * 100 + 7), shape, layout, dtype)
    x_before = x.copy()
    for fn in (softmax, log_softmax):
        y = fn(x, axis=axis)
        assert y.dtype == dtype
        assert y.flags.c_contiguous and not np.shares_memory(y, x)
        assert_matches_reference(fn, y, x_before, axis)
    assert_array_equal(x, x_before)  # the input is never modified


def random_axis(rng, ndim):
    kind = rng.integers(4)
    if kind == 0:
        return int(rng.integers(-ndim, ndim))
    if kind == 1:
        return None
    k = int(rng.integers(0, ndim + 1))
    axes = [int(a) for a in rng.choice(ndim, size=k, replace=False)]
    return tuple(a - ndim if rng.random() < 0.3 else a for a in axes)  # unsorted, some negative


def random_view(rng, shape, dtype):
    """A random strided view: random axis order, random steps (some negative), random start offsets."""
    ndim = len(shape)
    perm = rng.permutation(ndim)
    steps = [int(rng.choice([1, 2, 3, -1, -2])) for _ in range(ndim)]
    base_shape = [abs(st) * shape[p] + 2 for st, p in zip(steps, perm)]
    base = rng.standard_normal(base_shape).astype(dtype)
    index = []
    for st, p in zip(steps, perm):
        n = shape[p]
        if st > 0:
            index.append(slice(1, 1 + st * n, st))
        else:
            index.append(slice(abs(st) * n, 0, st))
    view = base[tuple(index)]
    return np.transpose(view, np.argsort(perm))


@pytest.mark.parametrize("seed", range(30), ids=lambda s: f"seed={s}")
def test_random_shapes_axes_strides(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(s) for s in rng.integers(1, 10, size=ndim))
    dtype = [np.float32, np.float64][seed % 2]
    x = random_view(rng, shape, dtype)
    assert x.shape == shape
    axis = random_axis(rng, ndim)
    x_before = x.copy()
    fn = [softmax, log_softmax][(seed // 2) % 2]
    out_kind = seed % 3
    if out_kind == 0:
        y = fn(x, axis=axis)
    else:
        out = np.empty(shape, dtype) if out_kind == 1 else random_view(rng, shape, dtype)
        y = fn(x, axis=axis, out=out)
        assert y is out
    assert_matches_reference(fn, y, x_before, axis)
    assert_array_equal(x, x_before)


# ---------------------------------------------------------------------------------------------------------
# Kernel-shaped cases: segmentation maps, narrow inner blocks, long rows
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n, c, hw", [(2, 197, 1001), (1, 1001, 197), (3, 3, 1001), (2, 197, 3), (4, 1001, 1),
                                      (2, 1, 197), (1, 3, 1), (1, 1, 1)],
                         ids=lambda v: str(v))
def test_segmentation_class_axis(n, c, hw, dtype, fn):
    """(N, C, H*W) with the softmax over the class axis 1, odd sizes."""
    x = (np.random.default_rng(c * hw).standard_normal((n, c, hw)) * 3).astype(dtype)
    assert_matches_reference(fn, fn(x, axis=1), x, 1)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_segmentation_arrays_that_prefetch(dtype, fn):
    """A class axis over an array of 8 MB or more, whose tiles prefetch the next one (in x and out, past the end
    of the last): every slice against the reference, and the same columns computed in a small array alike."""
    n_hw = 8 * 1000 * 1000 // (2 * 21 * np.dtype(dtype).itemsize) + 5   # odd: a narrower last tile
    x = (np.random.default_rng(21).standard_normal((2, 21, n_hw)) * 4).astype(dtype)
    y = fn(x, axis=1)
    assert_matches_reference(fn, y, x, 1)
    assert_array_equal(fn(np.ascontiguousarray(x[:, :, -700:]), axis=1), y[:, :, -700:])


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("inner", [1, 2, 3, 7, 8, 9, 16])
def test_middle_axis_with_narrow_inner_block(inner, fn):
    """(4, 100, inner) over axis 1: inner < 8 goes through a transposed copy, inner >= 8 strided in place."""
    x = np.random.default_rng(inner).standard_normal((4, 100, inner)).astype(np.float32)
    x_before = x.copy()
    assert_matches_reference(fn, fn(x, axis=1), x_before, 1)
    out = np.empty((4, inner, 100), np.float32).transpose(0, 2, 1)  # non-contiguous out
    assert fn(x, axis=1, out=out) is out
    assert_matches_reference(fn, out, x_before, 1)
    assert_array_equal(x, x_before)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("shape", [(1, 16384), (2, 16385), (1, 32768), (3, 70000), (15, 33000), (16, 33000),
                                   (2, 100003), (1, 2048 * 256 + 77)],
                         ids=lambda s: "x".join(map(str, s)))
def test_long_rows(shape, fn):
    """Long rows (more than 16384 columns) take the chunked two-pass kernel; fewer than 16 of them are split into
    chunks shared by threads. Shapes on both sides of those limits."""
    x = (np.random.default_rng(shape[1]).standard_normal(shape) * 5).astype(np.float32)
    assert_matches_reference(fn, fn(x), x, -1)
    assert_matches_reference(fn, fn(x[:, ::-1]), x[:, ::-1], -1)


# ---------------------------------------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------------------------------------

OUT_CASES = [((6, 40), -1), ((6, 40), 0), ((5, 6, 20), 1), ((4, 30, 3), 1), ((5, 6, 7), (0, 2)),
             ((5, 6, 7), None), ((3, 70000), -1)]


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("out_layout", ["c", "fortran", "transposed", "sliced", "negative-steps"])
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a)) for s, a in OUT_CASES])
def test_out_with_any_strides(shape, axis, out_layout, fn):
    """out= of the exact shape and dtype, any strides: written in full, returned, and nothing around it touched."""
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    sentinel = np.float32(123.25)
    if out_layout == "c":
        base = out = np.full(shape, sentinel, np.float32)
    elif out_layout == "fortran":
        base = out = np.full(shape, sentinel, np.float32, order="F")
    elif out_layout == "transposed":
        base = np.full(shape[::-1], sentinel, np.float32)
        out = base.T
    elif out_layout == "sliced":
        base = np.full(tuple(2 * s + 1 for s in shape), sentinel, np.float32)
        out = base[tuple(slice(1, None, 2) for _ in shape)]
    else:
        base = np.full(tuple(s + 1 for s in shape), sentinel, np.float32)
        out = base[tuple(slice(-1, 0, -1) for _ in shape)]
    assert out.shape == shape
    result = fn(x, axis=axis, out=out)
    assert result is out
    assert_matches_reference(fn, out, x, axis)
    outside = np.ones(base.shape, bool)
    if out_layout == "sliced":
        outside[tuple(slice(1, None, 2) for _ in shape)] = False
    elif out_layout == "negative-steps":
        outside[tuple(slice(1, None) for _ in shape)] = False
    else:
        outside[...] = False
    assert np.all(base[outside] == sentinel)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "negative-steps", "padded-rows"])
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a)) for s, a in OUT_CASES])
def test_in_place(shape, axis, layout, fn):
    """out=x: the result overwrites the input."""
    x = make_layout(np.random.default_rng(12), shape, layout, np.float64)
    x_before = x.copy()
    assert fn(x, axis=axis, out=x) is x
    assert_matches_reference(fn, x, x_before, axis)


@pytest.mark.usefixtures("simd_level")
@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 128, 197, 256, 257, 1000])
def test_in_place_float32_rows(n, fn):
    """out=x on float32 rows at every SIMD level: short rows sum through a buffer of their own when out is x."""
    x = (np.random.default_rng(n).standard_normal((5, n)) * 4).astype(np.float32)
    x_before = x.copy()
    assert fn(x, out=x) is x
    assert_matches_reference(fn, x, x_before, -1)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_partially_overlapping_input(axis, fn):
    """out shifted one column against x in the same buffer: the result is as if x had been copied first."""
    buf = np.random.default_rng(13).standard_normal((40, 1001)).astype(np.float32)
    x, out = buf[:, :-1], buf[:, 1:]
    x_before = x.copy()
    assert fn(x, axis=axis, out=out) is out
    assert_matches_reference(fn, out, x_before, axis)


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1000), (37, 129), (3, 70000), (0, 5)], ids=lambda s: "x".join(map(str, s)))
def test_plain_out_gives_the_bits_of_a_new_result(shape, dtype, fn):
    """A C-contiguous out= of the result's dtype and shape takes the per-call fast path: the same bits as the
    new array the call returns without out=, into out itself, in place too."""
    x = (np.random.default_rng(shape[-1]).standard_normal(shape) * 4).astype(dtype)
    expected = fn(x)
    out = np.full(shape, np.nan, dtype)
    assert fn(x, out=out) is out
    assert_array_equal(out, expected)
    inplace = x.copy()
    assert fn(inplace, out=inplace) is inplace
    assert_array_equal(inplace, expected)


def test_which_out_takes_the_fast_path():
    """The kernels' fast path takes an out= only as it is (plain_out): a plain writeable C-contiguous aligned
    native ndarray of the input's dtype and shape, the input's memory exactly or none of it. Everything else is
    refused (None) and left to the general path, which checks it, and copies for overlaps (the tests above)."""
    x = np.random.default_rng(18).standard_normal((8, 64)).astype(np.float32)
    def fast(out, inp=x):
        return _api._k.lastaxis(inp, out, -1, False, 0)
    out = np.empty_like(x)
    assert fast(out) is out
    inplace = x.copy()
    assert fast(inplace, inplace) is inplace
    buf = np.empty(2 * x.size, np.float32)
    assert fast(buf[x.size:].reshape(x.shape), buf[:x.size].reshape(x.shape)) is not None  # abutting: disjoint
    read_only = np.empty_like(x)
    read_only.setflags(write=False)
    misaligned = np.frombuffer(bytearray(x.nbytes + 1), np.float32, count=x.size, offset=1).reshape(x.shape)
    overlap = np.empty(x.size + 16, np.float32)
    refused = [np.empty_like(x).view(np.matrix), read_only, np.empty(x.shape, ">f4"), misaligned,
               np.empty(x.shape, np.float32, order="F"), np.empty((8, 65), np.float32)[:, :64],
               np.empty((64, 8), np.float32), np.empty_like(x, np.float64), x.tolist()]
    for bad in refused:
        assert fast(bad) is None, bad
    shifted = overlap[16:].reshape(x.shape)
    assert fast(shifted, overlap[:x.size].reshape(x.shape)) is None


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("shift", [16, -16, 1], ids=["out-after-x", "out-before-x", "out-one-element-after"])
def test_contiguous_out_partially_overlapping_input(shift, fn):
    """x and out both C-contiguous in one buffer, one line (or one element) apart: not the fast path, which
    would read elements it has already overwritten; the result is as if x had been copied first."""
    n_rows, n_cols = 30, 200
    buf = np.random.default_rng(17).standard_normal(n_rows * n_cols + abs(shift)).astype(np.float32)
    x_at, out_at = (0, shift) if shift > 0 else (-shift, 0)
    x = buf[x_at:x_at + n_rows * n_cols].reshape(n_rows, n_cols)
    out = buf[out_at:out_at + n_rows * n_cols].reshape(n_rows, n_cols)
    x_before = x.copy()
    assert fn(x, out=out) is out
    assert_array_equal(out, fn(x_before))


def test_unaligned_input_and_out():
    """Arrays at an odd byte offset (np.frombuffer) in, and as out=."""
    x_aligned = np.random.default_rng(14).standard_normal((50, 40))
    raw = bytearray(x_aligned.nbytes + 1)
    x = np.frombuffer(raw, np.float64, count=x_aligned.size, offset=1).reshape(50, 40)
    x[...] = x_aligned
    assert not x.flags.aligned
    for axis in (-1, 0):
        assert_matches_reference(softmax, softmax(x, axis=axis), x_aligned, axis)
        out = np.frombuffer(bytearray(x_aligned.nbytes + 1), np.float64, count=x_aligned.size,
                            offset=1).reshape(50, 40)
        assert softmax(x_aligned, axis=axis, out=out) is out
        assert_matches_reference(softmax, out, x_aligned, axis)


def test_broadcast_input_with_zero_strides():
    row = np.random.default_rng(15).standard_normal(300).astype(np.float32)
    x = np.broadcast_to(row, (200, 300))  # read-only, row stride 0
    assert_matches_reference(softmax, softmax(x), x, -1)
    assert_matches_reference(softmax, softmax(x, axis=0), x, 0)
    col = np.broadcast_to(row[:, None], (300, 40))  # column stride 0
    assert_matches_reference(log_softmax, log_softmax(col, axis=0), col, 0)


def test_array_likes():
    """Anything np.asarray accepts: lists, tuples, nested lists, scalars, objects with __array__."""
    class Wrapper:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.a, dtype=dtype)

    nested = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    expected = reference(softmax, np.array(nested), -1)
    for x in (nested, tuple(map(tuple, nested)), Wrapper(np.array(nested))):
        y = softmax(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.float64
        assert_allclose(y, expected, rtol=1e-13)
    assert_allclose(softmax([[1, 2, 3]], axis=0), np.ones((1, 3)))


# ---------------------------------------------------------------------------------------------------------
# 0-d and empty arrays
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 0, None, (), (0,), (-1,)])
@pytest.mark.parametrize("x", [np.float64(3.5), np.array(-2.0), np.array(7.0, np.float32), 5],
                         ids=["float64-scalar", "0d-float64", "0d-float32", "python-int"])
def test_zero_dimensional_input_is_one_element(x, axis):
    y = softmax(x, axis=axis)
    assert isinstance(y, np.ndarray) and y.shape == ()
    assert y.dtype == (np.float32 if np.asarray(x).dtype == np.float32 else np.float64)
    assert y == 1.0
    ly = log_softmax(x, axis=axis)
    assert ly.shape == () and ly == 0.0


def test_zero_dimensional_out():
    out = np.full((), 5.0)
    assert softmax(np.array(2.0), out=out) is out and out == 1.0
    assert log_softmax(np.array(2.0), axis=None, out=out) is out and out == 0.0


@pytest.mark.parametrize("axis", [1, -2, 2, (0, 1), (1,)])
def test_zero_dimensional_input_rejects_other_axes(axis):
    for fn in (softmax, log_softmax):
        with pytest.raises(AxisError):
            fn(np.array(1.0), axis=axis)


EMPTY_CASES = [((0,), -1), ((0,), None), ((0, 5), -1), ((0, 5), 0), ((5, 0), -1), ((5, 0), 0), ((5, 0), None),
               ((3, 0, 4), 1), ((3, 0, 4), (0, 2)), ((3, 0, 4), -1), ((2, 3, 0), ()), ((0, 40000), -1)]


@pytest.mark.parametrize("fn", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64], ids=["float32", "float64", "int64"])
@pytest.mark.parametrize("shape, axis", [pytest.param(s, a, id=case_id(s, a)) for s, a in EMPTY_CASES])
def test_empty_input_gives_empty_result(shape, axis, dtype, fn):
    x = np.zeros(shape, dtype)
    y = fn(x, axis=axis)
    assert y.shape == shape
    assert y.dtype == (np.float32 if dtype == np.float32 else np.float64)
    out = np.empty(shape, y.dtype)
    assert fn(x, axis=axis, out=out) is out


@pytest.mark.parametrize("shape", [(0,), (5, 0), (3, 0, 4)], ids=lambda s: "x".join(map(str, s)))
def test_empty_input_still_checks_axis(shape):
    for axis in (len(shape), -len(shape) - 1, (0, len(shape))):
        with pytest.raises(AxisError):
            softmax(np.zeros(shape), axis=axis)
        with pytest.raises(AxisError):
            log_softmax(np.zeros(shape, np.float32), axis=axis)


# ---------------------------------------------------------------------------------------------------------
# 64-bit indexing: a zero-copy view whose second row starts at element 2**31
# ---------------------------------------------------------------------------------------------------------

BIG = 2**31


@pytest.fixture(scope="module")
def huge_float32_buffers():
    """Two calloc'ed float32 buffers of 2**31 + 4096 elements (8 GiB of address space each, no RAM until
    written); random values in the first and last 4096 elements of the first."""
    if sys.maxsize < 2**40:
        pytest.skip("needs a 64-bit address space")
    try:
        big = np.zeros(BIG + 4096, np.float32)
        big_out = np.zeros(BIG + 4096, np.float32)
    except MemoryError:
        pytest.skip("cannot reserve 2 x 8 GiB of address space")
    rng = np.random.default_rng(16)
    big[:4096] = rng.standard_normal(4096) * 3
    big[BIG:] = rng.standard_normal(4096) * 3
    yield big, big_out
    del big, big_out


@pytest.mark.parametrize("fn", FORWARD)
def test_row_beyond_2_31_elements(huge_float32_buffers, fn):
    big, big_out = huge_float32_buffers
    x = as_strided(big, shape=(2, 1024), strides=(BIG * 4, 4))
    assert x[1, 0] == big[BIG] and x[1, -1] == big[BIG + 1023]
    small = np.array(x)  # the same 2 x 1024 values, compact
    assert_matches_reference(fn, fn(x), small, -1)
    out = as_strided(big_out, shape=(2, 1024), strides=(BIG * 4, 4))
    assert fn(x, out=out) is out
    assert_matches_reference(fn, big_out[BIG:BIG + 1024], small[1], -1)
    assert_matches_reference(fn, big_out[:1024], small[0], -1)


@pytest.mark.parametrize("fn", FORWARD)
def test_strided_axis_beyond_2_31_elements(huge_float32_buffers, fn):
    big, big_out = huge_float32_buffers
    # Softmax over the axis of stride 2**31 elements (each slice has one element on each side of 2**31).
    x = as_strided(big, shape=(2, 1024), strides=(BIG * 4, 4))
    assert_matches_reference(fn, fn(x, axis=0), np.array(x), 0)
    # Slabs of 8 x 128 whose second one starts at element 2**31, softmax over the middle axis.
    x3 = as_strided(big, shape=(2, 8, 128), strides=(BIG * 4, 128 * 4, 4))
    assert_matches_reference(fn, fn(x3, axis=1), np.array(x3), 1)
    out3 = as_strided(big_out, shape=(2, 8, 128), strides=(BIG * 4, 128 * 4, 4))
    assert fn(x3, axis=1, out=out3) is out3
    assert_matches_reference(fn, big_out[BIG:BIG + 1024].reshape(8, 128), np.array(x3[1]), 0)
