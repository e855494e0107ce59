"""Accuracy: fastsoftmax against float64 NumPy references, scipy's own mpmath-computed constants, and fresh
mpmath (50 digits) expectations.

Accuracy rules (from the specification):

* float32: every element above 1e-37 within 4e-6 relative of a float64 reference computed from the same inputs
  (also on rows of 200 000 elements); each slice sums to 1 within 5e-6.
* float64: within 1e-13 relative.
"""
import mpmath
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastsoftmax import log_softmax, softmax

from helpers import assert_rows_as_alone

pytestmark = [pytest.mark.usefixtures("simd_level"), pytest.mark.filterwarnings("error")]

F32_RTOL = 4e-6
F32_RTOL_FAR = F32_RTOL  # the library computes x - max exactly (TwoSum), so far elements meet 4e-6 too
F32_SUM_TOL = 5e-6
F64_RTOL = 1e-13
F32_TINY = 1e-37  # float32 elements below this (near or in the subnormal range) are not held to F32_RTOL


def ref_softmax(x, axis=-1):
    """Plain float64 softmax of the same input values."""
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def ref_log_softmax(x, axis=-1):
    x64 = np.asarray(x, dtype=np.float64)
    shifted = x64 - x64.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


def assert_f32_softmax_accurate(y, x, axis):
    """The float32 accuracy rule: relative error on elements above 1e-37, and slice sums.

    Elements 64 or more below their slice's maximum are the hard ones: rounding x - max to float32 alone would
    cost up to 2**-18 = 3.8e-6 (see test_float32_far_below_max_within_4e_6)."""
    assert y.dtype == np.float32
    ref = ref_softmax(x, axis)
    x64 = np.asarray(x, dtype=np.float64)
    gap = x64.max(axis, keepdims=True) - x64
    rtol = np.where(gap < 64, F32_RTOL, F32_RTOL_FAR)
    big = ref > F32_TINY
    rel = np.abs(y[big].astype(np.float64) - ref[big]) / ref[big]
    assert np.all(rel <= rtol[big]), f"max relative error {rel.max():.3g}"
    small = ~big  # tiny elements: only an absolute bound
    assert np.all(np.abs(y[small].astype(np.float64) - ref[small]) <= 1e-37)
    sums = y.astype(np.float64).sum(axis)
    assert np.abs(sums - 1).max() <= F32_SUM_TOL


def assert_log_softmax_accurate(y, ref, rtol):
    """log_softmax: relative accuracy on large outputs; near 0 an absolute bound of the same size (the last
    step, (x - max) - log(sum), cannot be relatively accurate when log(sum) is tiny)."""
    assert_allclose(y.astype(np.float64), ref, rtol=rtol, atol=rtol)


# ---------------------------------------------------------------------------------------------------------
# scipy.special's test-suite constants (computed there with mpmath), rtol 1e-13
# ---------------------------------------------------------------------------------------------------------

X_MIXED = np.array([[-25, 0, 25, 50], [1, 325, 749, 750]], dtype=np.float64)
EXPECTED_MIXED = np.array([[2.678636961770877e-33, 1.9287498479371314e-22, 1.3887943864771144e-11,
                            0.999999999986112],
                           [0.0, 1.9444526359919372e-185, 0.2689414213699951, 0.7310585786300049]])
EXPECTED_ARANGE4 = np.array([0.03205860328008499, 0.08714431874203256, 0.23688281808991013, 0.6439142598879722])

SCIPY_CASES = [
    pytest.param([1000.0, 0.0, 0.0, 0.0], -1, [1.0, 0.0, 0.0, 0.0], id="1000-0-0-0"),
    pytest.param([1.0, 1.0], -1, [0.5, 0.5], id="1-1"),
    pytest.param([0.0, 1.0], -1, np.array([1.0, np.e]) / (1.0 + np.e), id="0-1"),
    pytest.param(np.arange(4.0), -1, EXPECTED_ARANGE4, id="arange4"),
    pytest.param(np.arange(4.0) + 100, -1, EXPECTED_ARANGE4, id="arange4+100"),
    pytest.param(np.arange(4.0).reshape(2, 2), None, EXPECTED_ARANGE4.reshape(2, 2), id="arange4-2x2-axis=None"),
    pytest.param([[1000.0, 0.0], [1000.0, 0.0]], 0, [[0.5, 0.5], [0.5, 0.5]], id="1000-0-axis=0"),
    pytest.param([[1000.0, 0.0], [1000.0, 0.0]], 1, [[1.0, 0.0], [1.0, 0.0]], id="1000-0-axis=1"),
    pytest.param(X_MIXED, 1, EXPECTED_MIXED, id="mixed-axis=1"),
    pytest.param(X_MIXED.T, 0, EXPECTED_MIXED.T, id="mixed-T-axis=0"),
    pytest.param(X_MIXED.reshape(2, 2, 2), (1, 2), EXPECTED_MIXED.reshape(2, 2, 2), id="mixed-2x2x2-axis=(1,2)"),
]


@pytest.mark.parametrize("x, axis, expected", SCIPY_CASES)
def test_softmax_matches_scipy_constants(x, axis, expected):
    y = softmax(x, axis=axis)
    assert y.dtype == np.float64
    assert_allclose(y, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("x, axis, expected", SCIPY_CASES)
def test_log_softmax_is_log_of_scipy_constants(x, axis, expected):
    expected = np.asarray(expected)
    y = log_softmax(x, axis=axis)
    positive = expected > 0
    assert_allclose(y[positive], np.log(expected[positive]), rtol=1e-13, atol=1e-15)
    # Where scipy's softmax underflows to 0, log_softmax is still finite and below log(smallest subnormal).
    assert np.all(np.isfinite(y)) and np.all(y[~positive] < -744)


def test_log_softmax_scipy_constants():
    """From scipy's test_log_softmax: log_softmax([1000, 1]) and log_softmax(arange(4))."""
    assert_allclose(log_softmax([1000.0, 1.0]), [0.0, -999.0], rtol=1e-13, atol=0)
    expected = [-3.4401896985611953, -2.4401896985611953, -1.4401896985611953, -0.44018969856119533]
    assert_allclose(log_softmax(np.arange(4.0)), expected, rtol=1e-13, atol=0)
    assert_allclose(log_softmax(np.arange(4.0) + 100), expected, rtol=1e-13, atol=0)


# ---------------------------------------------------------------------------------------------------------
# Fresh mpmath expectations (50 significant digits) for log_softmax and float32 inputs
# ---------------------------------------------------------------------------------------------------------

def mp_softmax(values, log):
    """softmax / log_softmax of one slice in 50-digit arithmetic, from the exact values of the inputs."""
    with mpmath.workdps(50):
        xs = [mpmath.mpf(float(v)) for v in values]
        top = max(xs)
        total = mpmath.fsum(mpmath.exp(v - top) for v in xs)
        if log:
            return np.array([float(v - top - mpmath.log(total)) for v in xs])
        return np.array([float(mpmath.exp(v - top) / total) for v in xs])


MP_ROWS = [
    pytest.param([0.1, -2.5, 3.75, 700.0, 699.5], id="near-700"),
    pytest.param([-740.0, 0.0, -1.0e-3], id="subnormal-underflow"),
    pytest.param([1e-300, -1e-300, 0.0], id="tiny-equal"),
    pytest.param([-50.0, 0.0], id="tiny-second"),
    pytest.param([3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0, -11.0, -12.0,
                  -13.0, -14.0, -15.0, -16.0, -17.0], id="21-descending"),
    pytest.param(np.random.default_rng(7).standard_normal(37) * 30, id="random-37"),
]


@pytest.mark.parametrize("row", MP_ROWS)
def test_float64_against_mpmath(row):
    row = np.asarray(row, dtype=np.float64)
    expected = mp_softmax(row, log=False)
    y = softmax(row)
    normal = expected > np.finfo(np.float64).tiny
    assert_allclose(y[normal], expected[normal], rtol=F64_RTOL, atol=0)
    assert_allclose(y[~normal], expected[~normal], rtol=0, atol=2 * 5e-324)  # subnormal results: 2 ulp
    assert_allclose(log_softmax(row), mp_softmax(row, log=True), rtol=F64_RTOL, atol=1e-15)


@pytest.mark.parametrize("row", MP_ROWS[:1] + MP_ROWS[3:] + [
    pytest.param([88.0, 0.0, -10.5, 87.25], id="f32-near-88"),
    pytest.param([-60.0, 25.0, 24.999998], id="f32-ties"),
])
def test_float32_against_mpmath(row):
    row = np.asarray(row, dtype=np.float32)  # the expectation is for the rounded float32 values
    expected = mp_softmax(row, log=False)
    y = softmax(row)
    assert y.dtype == np.float32
    big = expected > F32_TINY
    assert_allclose(y[big], expected[big], rtol=F32_RTOL, atol=0)
    assert np.all(np.abs(y[~big] - expected[~big]) <= 1e-37)
    ly = log_softmax(row)
    assert ly.dtype == np.float32
    assert_log_softmax_accurate(ly, mp_softmax(row, log=True), rtol=F32_RTOL)


# ---------------------------------------------------------------------------------------------------------
# Random data against the float64 NumPy reference
# ---------------------------------------------------------------------------------------------------------

SHAPES_AXES = [
    pytest.param((1000,), -1, id="1000-axis=-1"),
    pytest.param((64, 33), -1, id="64x33-axis=-1"),
    pytest.param((64, 33), 0, id="64x33-axis=0"),
    pytest.param((40, 1000), -1, id="40x1000-axis=-1-parallel"),
    pytest.param((300, 130), 0, id="300x130-axis=0-parallel"),
    pytest.param((3, 70000), -1, id="3x70000-long-rows"),
    pytest.param((6, 50, 20), 1, id="6x50x20-axis=1"),
    pytest.param((6, 50, 3), 1, id="6x50x3-axis=1-inner<8"),
    pytest.param((6, 7, 8), (0, 2), id="6x7x8-axis=(0,2)"),
    pytest.param((6, 7, 8), None, id="6x7x8-axis=None"),
]


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["scale=1", "scale=30"])
def test_float32_softmax_accuracy(shape, axis, scale):
    x = (np.random.default_rng(1).standard_normal(shape) * scale).astype(np.float32)
    assert_f32_softmax_accurate(softmax(x, axis=axis), x, axis)


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
def test_float32_log_softmax_accuracy(shape, axis):
    x = (np.random.default_rng(2).standard_normal(shape) * 10).astype(np.float32)
    y = log_softmax(x, axis=axis)
    assert y.dtype == np.float32
    assert_log_softmax_accurate(y, ref_log_softmax(x, axis), rtol=F32_RTOL)


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
@pytest.mark.parametrize("scale", [1.0, 100.0], ids=["scale=1", "scale=100"])
def test_float64_accuracy(shape, axis, scale):
    x = np.random.default_rng(3).standard_normal(shape) * scale
    y = softmax(x, axis=axis)
    ref = ref_softmax(x, axis)
    normal = ref > 1e-300
    assert_allclose(y[normal], ref[normal], rtol=F64_RTOL, atol=0)
    assert np.all(np.abs(y[~normal] - ref[~normal]) <= 1e-300)
    assert_allclose(y.sum(axis), 1.0, rtol=0, atol=1e-13)
    assert_allclose(log_softmax(x, axis=axis), ref_log_softmax(x, axis), rtol=F64_RTOL, atol=1e-15)


@pytest.mark.parametrize("n_cols", [4096, 256, 197, 7])
def test_float32_worst_case_gaps(n_cols):
    """Elements 64 to 85 below a non-integer maximum, where a float32 x - max would be rounded by up to 2**-18
    = 3.8e-6 relative (ulp 2**-17). The kernels compute it exactly (TwoSum), so only exp's and the scaling's
    rounding remain: measured 1e-7, asserted 1e-6 (on outputs above 1e-37), which a rounded x - max fails. Rows
    of up to 256 take the one-loop exp + sum (see _row_ops.pxd), with its own exact and tail code."""
    rng = np.random.default_rng(4)
    x = rng.uniform(-85.0, -64.0, size=(64, n_cols)).astype(np.float32)
    x[:, 0] = rng.uniform(0.0, 3.0, size=64).astype(np.float32)
    ref = ref_softmax(x, -1)
    big = ref > F32_TINY
    assert big.mean() > 0.9
    for y in (softmax(x), softmax(x.T, axis=0).T):
        assert_f32_softmax_accurate(y, x, -1)
        assert_allclose(y[big], ref[big], rtol=1e-6, atol=0)


def test_float32_within_4e_6_below_a_gap_of_64():
    """Spread under 64 (uniform in [-31, 31], max not an integer): the plain 4e-6 rule, every layout."""
    x = np.random.default_rng(9).uniform(-31.0, 31.0, size=(30, 40, 50)).astype(np.float32)
    for axis in (-1, 1, 0, (0, 2), None):
        y = softmax(x, axis=axis)
        ref = ref_softmax(x, axis)
        big = ref > F32_TINY
        assert_allclose(y[big], ref[big], rtol=F32_RTOL, atol=0)


# The specification asks 4e-6 for *every* float32 element above 1e-37. Elements 64 to 85 below their slice's
# maximum miss it: float32 x - max is rounded by up to 3.8e-6 relative there, and the strided kernel's float32
# partial sums (K_BLOCK rows) add a few ulp more. The row kernel stays just under 4e-6 on this column.
FAR_COLUMN = np.array([
    -1.5847193002700806, 42.64126968383789, -7.554105281829834, -4.2327165603637695, -22.802927017211914,
    7.658063888549805, -4.369765281677246, -51.38763427734375, -4.544475555419922, -56.41413879394531,
    -13.521702766418457, -21.78326416015625, -1.8283509016036987, -12.71684741973877, 14.957311630249023,
    -50.7978401184082, 47.70074462890625, -14.713146209716797, -37.05076217651367, -48.97880554199219,
    -14.933928489685059, -31.833921432495117, -4.78309965133667, 38.97655487060547, -0.47366946935653687,
    33.88428497314453, -1.8971171379089355, 10.536883354187012, 30.917613983154297, -28.97416114807129,
    30.187829971313477, -9.298148155212402, -16.662195205688477, 29.166336059570312, 17.219511032104492,
    12.7011079788208, 20.468931198120117, -44.24952697753906, 42.84703826904297, -18.42608642578125,
    -23.28738021850586, 18.244169235229492, -23.505611419677734, -4.062888145446777, 20.335594177246094,
    -26.541378021240234, 26.009605407714844, -43.04807662963867, -9.83691120147705, -32.04501724243164,
], dtype=np.float32)


def test_float32_far_below_max_within_4e_6():
    x = np.tile(FAR_COLUMN[:, None], (1, 8))  # 8 identical columns: the strided (non-last axis) kernel
    y = softmax(x, axis=0)
    ref = ref_softmax(x, 0)
    above = ref > F32_TINY  # the rule covers outputs above 1e-37
    assert above.sum() > 300
    assert_allclose(y[above], ref[above], rtol=F32_RTOL, atol=0)


@pytest.mark.parametrize("n_rows", [1, 3], ids=["1-row", "3-rows"])
def test_float32_rows_of_200000(n_rows):
    """Long float32 rows sum as accurately as short ones (one row: serial; three: split across threads)."""
    x = (np.random.default_rng(5).standard_normal((n_rows, 200_000)) * 4).astype(np.float32)
    assert_f32_softmax_accurate(softmax(x), x, -1)
    assert_log_softmax_accurate(log_softmax(x), ref_log_softmax(x, -1), rtol=F32_RTOL)


def test_float32_column_of_200000():
    """A long non-last axis (the strided kernel over K = 200 000)."""
    x = (np.random.default_rng(6).standard_normal((200_000, 8)) * 4).astype(np.float32)
    assert_f32_softmax_accurate(softmax(x, axis=0), x, 0)


def kernel_exp(d, lower):
    """exp(d) as the kernels compute it, read through softmax: rows of [0, d_1 .. d_63] (the main vector loops, not
    only their tails), every d <= lower. The row sum is taken in double; with lower = -24 (float32) the float32 scale
    1 / sum rounds to exactly 1 (63 exp(d) < 2**-25), with lower = -45 (float64) the double sum itself is exactly 1
    (63 exp(d) < 2**-54). Either way the outputs after the first are exp(d) times exactly 1."""
    assert d.max() <= lower and d.size % 63 == 0
    x = np.zeros((d.size // 63, 64), dtype=d.dtype)
    x[:, 1:] = d.reshape(-1, 63)
    return softmax(x)[:, 1:].ravel()


def ulp_error(y, exact, dtype):
    """|y - exact| in units of the spacing at exact (rounded to dtype)."""
    return np.abs(y.astype(np.float64) - exact) / np.spacing(exact.astype(dtype)).astype(np.float64)


def test_float32_exp_within_2_ulp():
    """The float32 exp the kernels use is within 2 ulp (measured: 1.02-1.05). About a million arguments evenly
    spread over the float32 bit patterns of [-87, -24], which covers the reduced range |r| <= ln2/2 thousands of
    times over (2**n scaling is exact); float64 exp is the reference (~1e-16, far below a float32 ulp). Rows whose
    minimum is below -64 take the exact (TwoSum) path, the others the plain one."""
    bits = np.linspace(np.float32(-24.0).view(np.uint32), np.float32(-87.0).view(np.uint32), 63 * 16_000)
    d = bits.astype(np.uint32).view(np.float32)
    err = ulp_error(kernel_exp(d, -24.0), np.exp(d.astype(np.float64)), np.float32)
    assert err.max() <= 2.0, (err.max(), d[err.argmax()])


def test_float64_exp_within_2_ulp():
    """The float64 exp against 50-digit mpmath on [-708, -45] (normal results; measured: 1.0 ulp)."""
    d = np.random.default_rng(12).uniform(-708.0, -45.0, 63 * 48)
    with mpmath.workdps(50):
        exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in d])
    err = ulp_error(kernel_exp(d, -45.0), exact, np.float64)
    assert err.max() <= 2.0, (err.max(), d[err.argmax()])


def test_equal_logits_give_one_over_n():
    """n equal float32 logits give 1/n each, rounded to float32, for many n (short, long, odd lengths)."""
    for n in [1, 2, 3, 7, 31, 32, 33, 1000, 4097, 40000]:
        y = softmax(np.full(n, 2.5, np.float32))
        assert_array_equal(y, np.full(n, np.float32(1.0 / n)))
        assert_allclose(log_softmax(np.full(n, -7.0, np.float32)), -np.log(n), rtol=F32_RTOL)


@pytest.mark.parametrize("shape, min_bytes", [
    pytest.param((1100, 600), 2 * 1024 * 1024, id="2MiB-max-pass"),
    pytest.param((3600, 601), 8_000_000, id="8MB-exp-pass"),
    pytest.param((6000, 128), 2 * 1024 * 1024, id="3MB-short-rows"),
    pytest.param((16500, 128), 8_000_000, id="8MB-short-rows"),
    pytest.param((16000, 127), 8_000_000, id="8MB-short-rows-tail"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_arrays_that_prefetch_match_single_rows(dtype, fn, shape, min_bytes):
    """Contiguous arrays of 2 MiB or more prefetch a later row, from the max pass and from 8 MiB on from the exp
    pass, whose loop then runs a line at a time (row_fetch in pyx/_kernels.pxi): prefetching is only a hint and
    the loop's shape must not change the arithmetic, so every row must come out bitwise as the same row computed
    alone, at one thread and at two, and in place. Rows of 601 end in a partial line (the loop's tail); float32
    rows of 128 keep the max-pass prefetch at every size (log_softmax takes the exp pass's from 8 MB in the
    AVX-512 build), and in the AVX-512 build they go two rows at a time (three_pass_row_pairs)."""
    x = (np.random.default_rng(13).standard_normal(shape) * 4).astype(dtype)
    x[::2, 7] = -100.0  # every other row spans more than 64: the float32 min tracking and exact exp are checked too
    assert x.nbytes >= min_bytes
    assert_rows_as_alone(fn, [x], [0, 1, shape[0] // 2, shape[0] - 2, shape[0] - 1])


@pytest.mark.parametrize("n", [1, 15, 16, 17, 44, 63, 100, 111, 127, 128, 197, 256])
@pytest.mark.parametrize("n_rows", [16, 17, 34])
@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_short_float32_rows_in_pairs_match_single_rows(fn, n_rows, n):
    """Batches of 16 or more float32 rows of up to 256 go two rows at a time (three_pass_row_pairs in
    pyx/_kernels.pxi, the AVX-512 build): each row must come out bitwise as the same row computed alone (one row
    goes one at a time), an odd last row included, rows whose tails go element by element (100, 197) or as one
    more vector (44, 63, 111, 127: row_max's step over the last 32 elements, exp_tail_vector in
    pyx/_row_ops.pxd), with wide rows (the exact path) next to narrow ones, NaN,
    -inf and all-(-inf) rows, at one thread and two (34 rows and more: smaller arrays run on one thread), and in
    place; and within the float64 reference's bound. Arrays large enough to prefetch are in
    test_arrays_that_prefetch_match_single_rows."""
    x = (np.random.default_rng(n * 100 + n_rows).standard_normal((n_rows, n)) * 4).astype(np.float32)
    x[::3, 0] = -100.0  # wide rows (max - min >= 64) beside narrow ones, both in one pair
    x[4, -1] = np.nan
    x[7, 0] = -np.inf
    x[9] = -np.inf
    expected = np.stack([fn(row) for row in x])
    for threads in (1, 2):
        assert_array_equal(fn(x, num_threads=threads), expected)
    inplace = x.copy()
    assert fn(inplace, out=inplace, num_threads=1) is inplace
    assert_array_equal(inplace, expected)
    nan_rows = np.isnan(x).any(axis=1) | (x.max(axis=1) == -np.inf)  # rows 4 and 9 (and 7 when n == 1)
    assert np.isnan(expected[nan_rows]).all()
    if fn is softmax:
        assert_f32_softmax_accurate(expected[~nan_rows], x[~nan_rows], -1)
    else:
        assert_log_softmax_accurate(expected[~nan_rows], ref_log_softmax(x[~nan_rows]), F32_RTOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n", [44, 48, 57, 63, 100, 111, 127, 197, 1001])
def test_a_dominant_logit_anywhere_near_the_end_wins(n, dtype):
    """The max pass finishes a row's tail as one more step over its last 32 elements or element by element
    (row_max in pyx/_row_ops.pxd): a max it missed would leave exp(x - max) to overflow. Each row has one logit
    150 above the rest in one of its last 40 positions (a different one per row): softmax must be exactly
    one-hot there (exp(-150) underflows in float32, and is below float64's rounding of 1), log_softmax 0 there."""
    rows = min(n, 40)
    x = (np.random.default_rng(n).standard_normal((rows, n)) * 4).astype(dtype)
    where = np.arange(n - rows, n)
    x[np.arange(rows), where] = 150.0
    y = softmax(x)
    assert_array_equal(y[np.arange(rows), where], 1.0)
    assert (y.sum(axis=1) == 1.0).all()
    assert_array_equal(log_softmax(x)[np.arange(rows), where], 0.0)


def test_fast_path_and_general_path_agree_bitwise():
    """Small last-axis calls take a per-call fast path; the general path (taken with out=) gives the same bits."""
    x = np.random.default_rng(8).standard_normal((50, 123)).astype(np.float32)
    for fn in (softmax, log_softmax):
        assert_array_equal(fn(x), fn(x, out=np.empty_like(x)))
        assert_array_equal(fn(x), fn(x, num_threads=1))


NARROW = ([pytest.param(np.float32, n, id=f"float32-{n}") for n in (1, 2, 3, 7, 10, 16, 17, 31, 32, 33, 40, 41)]
          + [pytest.param(np.float64, n, id=f"float64-{n}") for n in (1, 2, 5, 16, 20, 21)])


@pytest.mark.usefixtures("threads_from_two_elements")
@pytest.mark.parametrize("dtype, n", NARROW)
@pytest.mark.parametrize("n_rows", [15, 16, 1100])
@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_narrow_rows_match_single_rows(fn, n_rows, n, dtype):
    """Rows of up to 160 bytes (40 float32, 20 float64) go through blocks of rows staged as the columns of a
    tile (forward_narrow_rows in pyx/_kernels.pxi), 16 or more rows at a time, or one by one with the same
    arithmetic (narrow_row): each row must come out bitwise as the same row computed alone, whatever its
    neighbours in the block (float32 wide rows, which take the exact path, beside narrow ones; NaN, -inf and
    all-(-inf) rows), across blocks and a partial last block (1100 rows), at one thread and two (small arrays
    too: the thread rule's minimum size is lowered), in place, and from and into rows with a stride; and within
    the float64 reference's bound. 41 and 21 are the first row lengths past the bound, which take the row
    kernels."""
    x = (np.random.default_rng(n * 1000 + n_rows).standard_normal((n_rows, n)) * 4).astype(dtype)
    x[::3, 0] = -100.0
    x[4, -1] = np.nan
    x[7, 0] = -np.inf
    x[9] = -np.inf
    rows = sorted({0, 1, 3, 4, 7, 9, 14, n_rows // 2, n_rows - 2, n_rows - 1})
    inplace = assert_rows_as_alone(fn, [x], rows)
    padded = np.full((n_rows, n + 3), 7.0, dtype)
    padded[:, :n] = x
    out = np.full((n_rows, n + 5), 9.0, dtype)
    fn(padded[:, :n], out=out[:, :n], num_threads=2)
    assert_array_equal(out[:, :n], inplace)
    assert (out[:, n:] == 9.0).all()
    finite = np.isfinite(x).all(axis=1)
    got = inplace[finite]
    if dtype == np.float64:
        ref = (ref_softmax if fn is softmax else ref_log_softmax)(x[finite])
        assert_allclose(got, ref, rtol=F64_RTOL, atol=F64_RTOL if fn is log_softmax else 0)
    elif fn is softmax:
        assert_f32_softmax_accurate(got, x[finite], -1)
    else:
        assert_log_softmax_accurate(got, ref_log_softmax(x[finite]), F32_RTOL)
    nan_rows = [4, 9]   # a NaN, and all -inf (exp(-inf - -inf) is NaN)
    assert np.isnan(inplace[nan_rows]).all()


@pytest.mark.parametrize("fn", [softmax, log_softmax])
@pytest.mark.parametrize("shape", [(2, 21, 64), (5, 37, 40)], ids=["2x21x64", "5x37x40"])
def test_column_bits_do_not_depend_on_neighbouring_columns(shape, fn):
    """In the strided tiles of a non-last axis the exact path (max - min >= 64: the rounding error of x - max
    carried into exp) is chosen per column, as the row kernels choose it per row: a column's result must not
    change, bit for bit, when its neighbours turn wide, or become copies of it. (Staged narrow rows run the same
    tile code; their own test is test_narrow_rows_match_single_rows.)"""
    x = (np.random.default_rng(5).standard_normal(shape) * 4).astype(np.float32)
    base = fn(x, axis=1)
    wide = x.copy()
    wide[:, 0, ::2] = -100.0   # every even column is wide now
    got = fn(wide, axis=1)
    assert_array_equal(got[..., 1::2], base[..., 1::2])
    for j in (0, 1, shape[-1] - 1):
        alone = np.repeat(wide[..., j:j + 1], 16, axis=-1)   # the column and copies of it
        assert_array_equal(got[..., j], fn(alone, axis=1)[..., 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(37, 1000), (5, 16385), (15, 33000), (17, 20000)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_rows_in_cache_and_long_rows_match_single_rows(fn, shape, dtype):
    """The row kernels the other tests of this kind leave out: rows of 1000 in cache, and long rows (chunked,
    fewer than 16 of them split into chunks shared by threads): each row bitwise as alone."""
    x = (np.random.default_rng(shape[1]).standard_normal(shape) * 4).astype(dtype)
    x[::2, 3] = -100.0
    assert_rows_as_alone(fn, [x], [0, 1, shape[0] // 2, shape[0] - 1])


@pytest.mark.parametrize("n_rows", [1, 15, 16, 1000])
@pytest.mark.parametrize("n", [2, 3, 10, 40])
def test_log_softmax_of_confident_narrow_rows_keeps_relative_accuracy(n, n_rows):
    """A confident classifier's row (one logit far above the others) has a log_softmax near 0 at its top class,
    -log(1 + e) with e small: a sum rounded to float32 (1 + e, 6e-8 absolute) would make that output 1e-4
    relative off. Narrow rows sum in double, as the float64 reference does: every output stays within 4e-6
    relative."""
    rng = np.random.default_rng(n * 7 + n_rows)
    x = (rng.standard_normal((n_rows, n)) * 0.5 - 9.0).astype(np.float32)
    x[:, 0] = rng.uniform(-1e-3, 1e-3, n_rows).astype(np.float32)   # the top class near 0, the rest near -9
    ref = ref_log_softmax(x)
    assert np.abs(ref[:, 0]).max() < 1e-2
    assert_allclose(log_softmax(x).astype(np.float64), ref, rtol=F32_RTOL, atol=0)
