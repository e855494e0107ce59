# Per-row building blocks of the last-axis kernels: one contiguous row in, one contiguous row out.
#
# The reductions keep LANES independent partial results in a small array updated elementwise and combine them at
# the end. gcc does not vectorize a single-accumulator float max or sum without -ffast-math (it may not reorder
# them), but it does vectorize this lane-wise form, which is a reordering we chose explicitly.
from libc.math cimport INFINITY
from cython cimport floating
from _simd_math cimport exp_, LANES_F32, LANES_F64, SUM_BLOCK

cdef enum:
    LANES = 32  # max lanes of either dtype; each specialization uses its own count (LANES_F32 / LANES_F64)


cdef inline floating row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    """Largest element of x[:n]; -inf for n == 0. NaN elements are skipped here: they reach the result through
    exp(NaN - max) = NaN in the sum, which makes the whole slice NaN as scipy and torch do."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef floating best = -INFINITY
    cdef Py_ssize_t i, j, n_main = n - n % lanes
    for j in range(lanes):
        acc[j] = -INFINITY
    for i in range(0, n_main // lanes):
        for j in range(lanes):
            acc[j] = x[i * lanes + j] if x[i * lanes + j] > acc[j] else acc[j]
    for j in range(lanes):
        best = acc[j] if acc[j] > best else best
    for i in range(n_main, n):
        best = x[i] if x[i] > best else best
    return best


cdef inline double exp_shifted_sum(const floating* x, floating* out, Py_ssize_t n, floating shift,
                                   bint store) noexcept nogil:
    """Sum of exp(x[i] - shift), accumulated lane-wise and flushed to a double every SUM_BLOCK elements.
    With store, exp(x[i] - shift) is also written to out[i] (out may be x: each element is read before it is
    written)."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef double total = 0.0
    cdef floating e
    cdef Py_ssize_t i, j, k, blk, start, stop, n_main = n - n % lanes
    for blk in range((n_main + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        stop = min(start + SUM_BLOCK, n_main)
        for j in range(lanes):
            acc[j] = 0
        if store:
            for k in range(start // lanes, stop // lanes):
                i = k * lanes
                for j in range(lanes):
                    e = exp_(x[i + j] - shift)
                    out[i + j] = e
                    acc[j] += e
        else:
            for k in range(start // lanes, stop // lanes):
                i = k * lanes
                for j in range(lanes):
                    acc[j] += exp_(x[i + j] - shift)
        for j in range(lanes):
            total += acc[j]
    for i in range(n_main, n):
        e = exp_(x[i] - shift)
        if store:
            out[i] = e
        total += e
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
        for j in range(lanes):
            total += acc[j]
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
