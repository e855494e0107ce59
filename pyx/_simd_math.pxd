# Vectorizable elementwise math shared by every kernel: exp for float32 and float64, and the lane counts the
# reductions use. Everything here is `cdef inline` so that each kernel module compiles it with its own SIMD
# flags; gcc turns the loops that call these into packed (xmm/ymm/zmm) code.
#
# Why not libm's exp: glibc's scalar exp does not vectorize without -ffast-math, and -ffast-math is not
# acceptable here (it breaks -inf masks and NaN propagation, which the softmax semantics rely on).
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from cython cimport floating

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* Bit casts through memcpy: defined behaviour under strict aliasing, and gcc compiles them to nothing. */
    static inline uint32_t fsm_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
    static inline float fsm_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
    static inline uint64_t fsm_f64_bits(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }
    static inline double fsm_f64_from_bits(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }
    """
    uint32_t f32_bits "fsm_f32_bits"(float) noexcept nogil
    float f32_from_bits "fsm_f32_from_bits"(uint32_t) noexcept nogil
    uint64_t f64_bits "fsm_f64_bits"(double) noexcept nogil
    double f64_from_bits "fsm_f64_from_bits"(uint64_t) noexcept nogil

# a * b + c with one rounding where the target has a fused multiply-add instruction, two where it has not: what
# gcc and clang make of `c + a * b` in a vectorized loop, where they contract the two operations. Written out
# where a sum must come out bitwise alike from a vector loop and from a scalar one (narrow_backward_row): gcc
# vectorizes the products of an in-order scalar sum as a separate multiply and contracts the leftover iterations,
# a mix of both roundings. __FP_FAST_FMAF / __FP_FAST_FMA: defined by gcc and clang wherever fma is an
# instruction (x86 with -mfma, aarch64, ppc64le, ...), not only on x86 as __FMA__ is.
cdef extern from *:
    """
    #if defined(__FP_FAST_FMAF) && defined(__FP_FAST_FMA) && (defined(__GNUC__) || defined(__clang__))
    #define fsm_madd_f32(a, b, c) __builtin_fmaf((a), (b), (c))
    #define fsm_madd_f64(a, b, c) __builtin_fma((a), (b), (c))
    #else
    #define fsm_madd_f32(a, b, c) ((a) * (b) + (c))
    #define fsm_madd_f64(a, b, c) ((a) * (b) + (c))
    #endif
    """
    float madd_f32 "fsm_madd_f32"(float, float, float) noexcept nogil
    double madd_f64 "fsm_madd_f64"(double, double, double) noexcept nogil


cdef inline floating madd_(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return madd_f32(a, b, c)
    else:
        return madd_f64(a, b, c)


# Number of independent partial results a reduction keeps. 32 floats / 16 doubles is 4 ymm or 2 zmm registers:
# enough independent add/max chains to hide the FP latency, and a multiple of every vector width we target.
# A slice whose max - min is below this needs no exact x - max: |x - max| < 64 rounds with an error of at most
# 2**-19 = 1.9e-6 relative in exp for float32 (room is left in the 4e-6 budget) and 7e-15 for float64. Wider
# slices carry the rounding error of x - max into exp (TwoSum), so their small outputs keep full accuracy.
cdef enum:
    EXACT_RANGE = 64
    LANES_F32 = 32
    LANES_F64 = 16
    # The max (and min) pass keeps 32 partial results for both dtypes. With 16 doubles, gcc unrolled its lane loop
    # completely (16 iterations is its limit) and then left the 16 compare-selects scalar, because it does not
    # vectorize selects that carry a value from one iteration of the outer loop to the next; a 32-iteration
    # loop stays a loop, which it vectorizes as it does the float one (float64 rows of 1000: the max pass was
    # scalar vmaxsd code, about a fifth of the row's time). fold_max and fold_min (_row_ops.pxd) fold exactly 32.
    EXTREMA_LANES = 32
    # Partial sums are flushed into a double accumulator every SUM_BLOCK elements, so a float32 row of 200 000
    # elements sums as accurately as a short one (single-accumulator float sums lose ~1e-5 relative there).
    # It is also the length of the stack buffer exp is computed into (4 KiB / 8 KiB: stays in L1).
    SUM_BLOCK = 1024


# expm1(r) on the reduced range |r| <= ln2/2 as r + r^2 g(r), g a Chebyshev fit (mpmath) of (expm1(r) - r) / r^2:
# degree 4 for float32 (exp within 1.003 ulp over [-104, 0], emulated), degree 9 for float64 (measured 1.0 ulp
# against mpmath; tests/test_values.py asserts 2 ulp for both).
cdef inline float expm1_reduced_f32(float r) noexcept nogil:
    cdef float g = <float>1.392617589e-03
    g = g * r + <float>8.363173343e-03
    g = g * r + <float>4.166655615e-02
    g = g * r + <float>1.666657776e-01
    g = g * r + <float>0.5
    return (r * r) * g + r


cdef inline double expm1_reduced_f64(double r) noexcept nogil:
    # Estrin's scheme rather than Horner's: the same 9 FMAs plus one multiply (r**4), but 4 dependent steps
    # instead of 9. A 9-FMA Horner chain is ~40 cycles of latency per vector, more than the out-of-order window
    # overlaps across iterations, so the float64 exp loop ran below its FMA throughput. Measured: 3-7% faster on
    # float64 rows in cache, unchanged on arrays bound by memory.
    cdef double r2 = r * r
    cdef double r4 = r2 * r2
    cdef double p01 = 0.16666666666666669 * r + 0.5000000000000001
    cdef double p23 = 0.008333333333330065 * r + 0.041666666666624164
    cdef double p45 = 0.00019841269863040545 * r + 0.0013888888917196719
    cdef double p67 = 2.7557268480310024e-06 * r + 2.4801521322368692e-05
    cdef double p89 = 2.5100375832561234e-08 * r + 2.7620075879983367e-07
    cdef double g = (p01 + r2 * p23) + r4 * ((p45 + r2 * p67) + r4 * p89)
    return r2 * g + r


# exp(x) for float32, within ~1 ulp (1.003 ulp max over [-104, 0] against float64, emulated in NumPy float32
# arithmetic without FMA contraction). exp(-inf) = 0 exactly, exp(NaN) = NaN, results in the subnormal range are
# correctly scaled and everything below half the smallest subnormal is exactly 0; above ~88.72 the result is +inf.
cdef inline float exp_f32(float x) noexcept nogil:
    # Clamp without losing NaN: a comparison with NaN is false, so NaN passes both lines unchanged.
    # exp(-104) is below half the smallest subnormal (so the result rounds to exactly 0) and exp(89) overflows.
    x = <float>-104.0 if x < <float>-104.0 else x
    x = <float>89.0 if x > <float>89.0 else x
    # n = round(x / ln2). Adding 1.5 * 2**23 rounds to an integer in the current (nearest) rounding mode and
    # leaves that integer in the low mantissa bits; this avoids a float->int conversion (undefined for NaN).
    cdef float t = x * <float>1.44269504088896341 + <float>12582912.0
    cdef int32_t n = <int32_t>(f32_bits(t) - <uint32_t>0x4B400000)
    cdef float nf = t - <float>12582912.0
    # Cody-Waite reduction: ln2 split into a part with trailing zero bits (exact product) and the rest.
    cdef float r = x - nf * <float>0.693145751953125
    r = r - nf * <float>1.428606765330187045e-06
    cdef float p = <float>1.0 + expm1_reduced_f32(r)
    # 2**n as two normal factors: keeps every intermediate normal so results in the subnormal range are
    # rounded once, correctly, and -104 * log2(e) = -150 still has both halves representable.
    cdef int32_t n1 = n >> 1
    cdef int32_t n2 = n - n1
    cdef float s1 = f32_from_bits(<uint32_t>(n1 + 127) << 23)
    cdef float s2 = f32_from_bits(<uint32_t>(n2 + 127) << 23)
    return (p * s1) * s2


# exp(x) for float64, within ~1 ulp: same scheme, degree-11 polynomial
# (g of degree 9, fitted like the float32 one). exp(-746) rounds to exactly 0,
# exp(710) to +inf; subnormal results (down to exp(-745)) are correctly scaled.
cdef inline double exp_f64(double x) noexcept nogil:
    x = -746.0 if x < -746.0 else x
    x = 710.0 if x > 710.0 else x
    cdef double t = x * 1.4426950408889634074 + 6755399441055744.0  # 1.5 * 2**52
    cdef int64_t n = <int64_t>(f64_bits(t) - <uint64_t>0x4338000000000000)
    cdef double nf = t - 6755399441055744.0
    cdef double r = x - nf * 6.93147180369123816490e-01   # ln2 high part: 32 significant bits, exact product
    r = r - nf * 1.90821492927058770002e-10
    cdef double p = 1.0 + expm1_reduced_f64(r)
    cdef int64_t n1 = n >> 1
    cdef int64_t n2 = n - n1
    cdef double s1 = f64_from_bits(<uint64_t>(n1 + 1023) << 52)
    cdef double s2 = f64_from_bits(<uint64_t>(n2 + 1023) << 52)
    return (p * s1) * s2


cdef inline floating exp_(floating x) noexcept nogil:
    if floating is float:
        return exp_f32(x)
    else:
        return exp_f64(x)


# exp(d - neg_err) for d <= 0 or NaN and a tiny correction neg_err: what softmax needs, since x - max(x) is never
# positive. Cheaper than exp_ because nothing can overflow: the exponent bias is folded into the magic constant, so
# 2**n comes from one shift, and the result is s + s*q with one fused rounding (q = expm1(r) from the polynomial).
# Below the range, a select gives exactly 0, which also covers -inf; NaN fails the comparison and propagates.
# neg_err is 0 for a plain exp (gcc folds r - 0.0 away: x - (+0) == x in IEEE arithmetic) and the negated rounding
# error of d = x - shift for the exact variant (TwoSum, in exp_shifted_sel_).
#
# float32 results smaller than the smallest normal (1.18e-38) are flushed to 0: that keeps 2**n a single
# normal power of two and costs ~15 vector operations per 8 elements (ONNX Runtime and XNNPACK flush the
# same way). Softmax accuracy is specified for outputs above 1e-37, which this keeps within 1.05 ulp of exp.
cdef inline float exp_reduced_f32(float d, float neg_err) noexcept nogil:
    # 1.5 * 2**23 + 127: after the add, the low mantissa bits hold round(d / ln2) + 127, the biased exponent of
    # 2**n; shifting them into the exponent field gives that power of two.
    cdef float t = d * <float>1.44269504088896341 + <float>12583039.0
    cdef float s = f32_from_bits(f32_bits(t) << 23)
    cdef float nf = t - <float>12583039.0
    cdef float r = d - nf * <float>0.693145751953125
    r = (r - neg_err) - nf * <float>1.428606765330187045e-06
    cdef float q = expm1_reduced_f32(r)
    # ln(2**-126): below it 2**n would leave the normal range (see the note on flushing above).
    return <float>0.0 if d < <float>-87.3365447505531 else q * s + s


# float64 keeps subnormal results (scipy's expectations include exact underflow): the result is computed as
# (S + S*q) * 2**-54 with S = 2**(n+54), always normal, so only the last multiplication meets the subnormal
# range and results there are within one subnormal ulp; below half the smallest subnormal they are exactly 0.
cdef inline double exp_reduced_f64(double d, double neg_err) noexcept nogil:
    cdef double t = d * 1.4426950408889634074 + 6755399441056821.0   # 1.5 * 2**52 + 1023 + 54
    cdef double s = f64_from_bits(f64_bits(t) << 52)                   # 2**(n + 54)
    cdef double nf = t - 6755399441056821.0
    cdef double r = d - nf * 6.93147180369123816490e-01
    r = (r - neg_err) - nf * 1.90821492927058770002e-10
    cdef double q = expm1_reduced_f64(r)
    return 0.0 if d < -745.13321910194122 else (q * s + s) * 5.5511151231257827e-17   # ln(2**-1075); 2**-54


# exp(x - shift) without rounding the difference first. Rounding d = x - shift is an error of up to 2**-18 = 3.8e-6
# relative in float32 when d is near -80 (most of the 4e-6 budget for outputs above 1e-37) and 5.7e-14 in float64
# (chunked rows would round twice: x - m_c, then m_c - M). TwoSum gives the exact rounding error of the
# subtraction with 6 IEEE additions, which the build keeps unreassociated; its negation goes to exp_reduced.
cdef inline floating exp_shifted_sel_(floating x, floating shift, bint exact) noexcept nogil:
    """exp(x - shift), with exact the TwoSum error of x - shift carried into exp_reduced, else 0 there (the
    plain exp of the rounded difference). A select, not a branch: called with exact varying per element (a
    tile's columns, narrow_row), gcc vectorizes it with the error computed always and kept where exact; with a
    literal flag (exp_shifted_) the other half folds away."""
    cdef floating d = x - shift
    cdef floating bv = d - x
    cdef floating err = ((d - bv) - x) + (bv + shift)   # NaN for infinite inputs: selected away or NaN
    if floating is float:
        return exp_reduced_f32(d, err if exact else <float>0.0)
    else:
        return exp_reduced_f64(d, err if exact else 0.0)


cdef inline floating exp_shifted_(floating x, floating shift, bint exact) noexcept nogil:
    """exp(x - shift) for shift >= x (a slice or chunk max; x - shift <= 0 or NaN). With exact, the rounding
    error of x - shift is carried into the argument: element loops ask for it for slices whose range is
    EXACT_RANGE or more; the chunked rows' per-chunk factors always do. exp_shifted_sel_ with the flag as a
    branch: loops choose their variant once, outside."""
    if floating is float:
        return exp_shifted_sel_(x, shift, True) if exact else exp_reduced_f32(x - shift, 0.0)
    else:
        return exp_shifted_sel_(x, shift, True) if exact else exp_reduced_f64(x - shift, 0.0)


# log(t) of a softmax sum t (a sum of exp(x - max) terms, so 1 <= t <= the slice length, or NaN) for
# log_softmax over a non-last axis, which takes one per column: glibc's log is a call the column loop cannot
# vectorize, one per K elements. Measured (Zen 5, A/B), float32: 8x21x16384, 8x21x4096, 16x19x1025 over axis 1
# 1.47-1.62x faster, 4x150x4096 1.07-1.09x, 300x1000 over axis 0 1.06x; float64 1.20-1.29x. For the row kernels
# (one log per row, off the vector loops) it was 0.87-0.89x glibc's: they keep log.
# t = m 2**e with m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s) with s = (m - 1) / (m + 1) (|s| < 0.172; m - 1
# is exact) as an odd series: to s**13 for float32, whose log_softmax rounds log(t) to float32 (1.3e-12 relative
# error at most; emulated in NumPy over 300 000 sums in [1, 9e6] it rounds to the same float32 as glibc's log on
# every one), to s**19 for float64 (3 ulp at most against mpmath over 10 000 sums, 4.4e-16 relative, where the
# float64 bound is 1e-13). NaN propagates through (t - t).
cdef inline double log_sum_(double t, bint double_precision) noexcept nogil:
    cdef uint64_t bits = f64_bits(t)
    cdef int64_t e = <int64_t>((bits >> 52) & 0x7FF) - 1023
    cdef double m = f64_from_bits((bits & <uint64_t>0x000FFFFFFFFFFFFF) | <uint64_t>0x3FF0000000000000)
    cdef double s, s2, p
    if m > 1.4142135623730951:
        m = m * 0.5
        e = e + 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    if double_precision:
        p = 2.0 / 19.0
        p = p * s2 + 2.0 / 17.0
        p = p * s2 + 2.0 / 15.0
        p = p * s2 + 2.0 / 13.0
    else:
        p = 2.0 / 13.0
    p = p * s2 + 2.0 / 11.0
    p = p * s2 + 2.0 / 9.0
    p = p * s2 + 2.0 / 7.0
    p = p * s2 + 2.0 / 5.0
    p = p * s2 + 2.0 / 3.0
    p = p * s2 + 2.0
    return (<double>e * 0.6931471805599453 + s * p) + (t - t)
