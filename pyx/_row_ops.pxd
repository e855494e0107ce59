# Per-row building blocks of the last-axis kernels: one contiguous row in, one contiguous row out.
#
# The reductions keep LANES independent partial results in a small array updated elementwise and combine them at
# the end. gcc does not vectorize a single-accumulator float max or sum without -ffast-math (it may not reorder
# them), but it does vectorize this lane-wise form, which is a reordering we chose explicitly.
from libc.math cimport INFINITY
from cython cimport floating
from _simd_math cimport exp_, exp_shifted_, LANES_F32, LANES_F64, SUM_BLOCK

cdef enum:
    LANES = 32  # max lanes of either dtype; each specialization uses its own count (LANES_F32 / LANES_F64)


cdef inline floating fold_max(floating* acc) noexcept nogil:
    """Max of the LANES_F32 (float) or LANES_F64 (double) partial maxima, folding halves. The loop bounds are
    literals so gcc unrolls each fold into a vector operation; a generic halving loop compiled into versioned
    loops with epilogues and cost ~250 instructions per row, as much as a 128-element row itself."""
    cdef Py_ssize_t j
    if floating is float:
        for j in range(16):
            acc[j] = acc[j + 16] if acc[j + 16] > acc[j] else acc[j]
    for j in range(8):
        acc[j] = acc[j + 8] if acc[j + 8] > acc[j] else acc[j]
    for j in range(4):
        acc[j] = acc[j + 4] if acc[j + 4] > acc[j] else acc[j]
    for j in range(2):
        acc[j] = acc[j + 2] if acc[j + 2] > acc[j] else acc[j]
    return acc[1] if acc[1] > acc[0] else acc[0]


cdef inline floating fold_sum(floating* acc) noexcept nogil:
    """Sum of the partial sums, folding halves like fold_max (pairwise: also the accurate order)."""
    cdef Py_ssize_t j
    if floating is float:
        for j in range(16):
            acc[j] = acc[j] + acc[j + 16]
    for j in range(8):
        acc[j] = acc[j] + acc[j + 8]
    for j in range(4):
        acc[j] = acc[j] + acc[j + 4]
    for j in range(2):
        acc[j] = acc[j] + acc[j + 2]
    return acc[0] + acc[1]


cdef inline floating row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    """Largest element of x[:n]; -inf for n == 0. NaN elements are skipped here: they reach the result through
    exp(NaN - max) = NaN in the sum, which makes the whole slice NaN as scipy and torch do."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef floating best
    cdef Py_ssize_t i, j, n_main = n - n % lanes
    for j in range(lanes):
        acc[j] = -INFINITY
    for i in range(0, n_main // lanes):
        for j in range(lanes):
            acc[j] = x[i * lanes + j] if x[i * lanes + j] > acc[j] else acc[j]
    best = fold_max(acc)
    for i in range(n_main, n):
        best = x[i] if x[i] > best else best
    return best


cdef inline void exp_shifted_block(const floating* x, floating* dst, Py_ssize_t n,
                                   floating shift) noexcept nogil:
    """dst = exp(x - shift) for n <= SUM_BLOCK elements. A plain loop on purpose: it is the form gcc vectorizes
    with every constant of exp hoisted into registers (a loop nest over lanes re-broadcasts them per step)."""
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = exp_shifted_(x[i], shift)


cdef inline double lane_sum(const floating* v, floating* out, Py_ssize_t n) noexcept nogil:
    """sum(v[:n]) lane-wise; with out != NULL, v is also copied to out (fused: v is read once, from L1)."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef double total = 0.0
    cdef Py_ssize_t i, j, k, n_main = n - n % lanes
    for j in range(lanes):
        acc[j] = 0
    if out != NULL:
        for k in range(n_main // lanes):
            i = k * lanes
            for j in range(lanes):
                out[i + j] = v[i + j]
                acc[j] += v[i + j]
        for i in range(n_main, n):
            out[i] = v[i]
    else:
        for k in range(n_main // lanes):
            i = k * lanes
            for j in range(lanes):
                acc[j] += v[i + j]
    total = fold_sum(acc)
    for i in range(n_main, n):
        total += v[i]
    return total


cdef inline double exp_shifted_sum(const floating* x, floating* out, Py_ssize_t n, floating shift,
                                   bint store) noexcept nogil:
    """Sum of exp(x[i] - shift) (every x[i] - shift <= 0 or NaN), in SUM_BLOCK pieces whose lane-wise sums are
    flushed into a double (so 200 000-element float32 rows stay accurate). With store, exp(x[i] - shift) is also
    written to out[i]. exp goes straight to out when out is a different buffer; in place (out == x) and for
    log_softmax it goes to an L1 stack buffer first, because gcc's vectorized loop needs non-overlapping
    pointers (its runtime alias check would send an in-place row down the scalar path)."""
    cdef floating buf[SUM_BLOCK]
    cdef double total = 0.0
    cdef Py_ssize_t blk, start, length
    cdef bint direct = store and <const floating*>out != x
    for blk in range((n + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        length = min(SUM_BLOCK, n - start)
        if direct:
            exp_shifted_block(x + start, out + start, length, shift)
            total += lane_sum(out + start, NULL, length)
        else:
            exp_shifted_block(x + start, buf, length, shift)
            total += lane_sum(buf, out + start if store else NULL, length)
    return total


cdef inline void scale_row(floating* out, Py_ssize_t n, floating factor) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = out[i] * factor


cdef inline void log_shift_row(const floating* x, floating* out, Py_ssize_t n, floating shift,
                               floating log_sum) noexcept nogil:
    """out = (x - shift) - log_sum: subtracting the max first keeps log_sum's bits when the max is large."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = (x[i] - shift) - log_sum


cdef inline double row_dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """sum(a * b), lane-wise with double flushes like exp_shifted_sum; b may be NULL to mean sum(a)."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef double total = 0.0
    cdef Py_ssize_t i, j, k, blk, start, stop, n_main = n - n % lanes
    for blk in range((n_main + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        stop = min(start + SUM_BLOCK, n_main)
        for j in range(lanes):
            acc[j] = 0
        if b != NULL:
            for k in range(start // lanes, stop // lanes):
                i = k * lanes
                for j in range(lanes):
                    acc[j] += a[i + j] * b[i + j]
        else:
            for k in range(start // lanes, stop // lanes):
                i = k * lanes
                for j in range(lanes):
                    acc[j] += a[i + j]
        total += fold_sum(acc)
    for i in range(n_main, n):
        total += a[i] * b[i] if b != NULL else a[i]
    return total


cdef inline void softmax_grad_row(const floating* g, const floating* y, floating* out, Py_ssize_t n,
                                  floating dot) noexcept nogil:
    """out = y * (g - dot): the softmax vector-Jacobian product, given dot = sum(g * y)."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = y[i] * (g[i] - dot)


cdef inline void log_softmax_grad_row(const floating* g, const floating* y, floating* out, Py_ssize_t n,
                                      floating total) noexcept nogil:
    """out = g - exp(y) * total: the log-softmax vector-Jacobian product, given total = sum(g)."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = g[i] - exp_(y[i]) * total
