# Narrow rows: last-axis rows too short to fill the row kernels' vectors (up to 40 float32 elements), computed
# across rows instead. A block of such rows is copied into an L1 buffer as the columns of a tile, whose passes
# (strided_forward_tile, strided_backward_tile in _strided_ops.pxd) run across rows, 16 per float32 vector in the
# AVX-512 build, with one vector division (or vectorized log) per vector of rows, and the result is copied back. In a row kernel such a row
# is mostly per-row latency (a max and its fold, a sum and its fold, a division or a libm log) and scalar tails:
# 100000x10 ran at 0.64x of ONNX Runtime, 65536x2 at 0.71x, log_softmax on 4096x16 at 0.46x of torch.
# Arrays of fewer rows than a block fills compute each row alone with the same operations in the same order
# (narrow_row, narrow_backward_row), so that a row's bits never depend on the rows that came with it.
from libc.math cimport INFINITY
from cython cimport floating
from _simd_math cimport exp_, exp_shifted_sel_, log_sum_, madd_, EXACT_RANGE
from _strided_ops cimport GROUP, K_BLOCK, TILE_MAX, no_fetch, staged_rows, strided_backward_tile, strided_forward_tile

cdef enum:
    # Bytes of a block of rows, in each staging buffer (in or out): the two or three of a block stay in L1.
    NARROW_BYTES = 8192
    # Elements of a staging buffer: a float32 block fills it; float64 blocks use half (the buffers are declared
    # once for both dtypes).
    NARROW_BUF = NARROW_BYTES // 4
    # Rows copied at a time by the staging copies. Measured (Zen 5, T=1, A/B, against one row at a time, each
    # order of the two loops): 1.25-1.45x faster on 100000x10, 65536x2, 4096x16, 1000x7 (4 and 8 alike, 16 no
    # better).
    UNROLL = 8


cdef inline Py_ssize_t narrow_block_rows(Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """Rows per staged block of rows of n elements: as many as NARROW_BYTES hold (never more, so a block fits
    its buffers for any row of up to NARROW_BYTES), in whole float32 vectors (GROUP) where there is room for
    one, at most TILE_MAX (the tile's per-column arrays)."""
    cdef Py_ssize_t rows = NARROW_BYTES // (n * itemsize)
    if rows >= GROUP:
        rows -= rows % GROUP
    return min(max(rows, 1), TILE_MAX)


cdef inline void rows_to_columns(const floating* x, floating* buf, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t x_rs,
                                 Py_ssize_t width) noexcept nogil:
    """buf[j * width + r] = x[r * x_rs + j] for r < rows, j < n: UNROLL rows at a time, whose elements j are
    stored next to each other (gcc packs them into one vector store). rows and n are at least 1."""
    cdef Py_ssize_t r, j, q, k, done = rows - rows % UNROLL
    buf[0] = x[0]   # written below too; said first so that gcc sees the buffer written (-Wmaybe-uninitialized)
    for k in range(done // UNROLL):
        r = k * UNROLL
        for j in range(n):
            for q in range(UNROLL):
                buf[j * width + r + q] = x[(r + q) * x_rs + j]
    for r in range(done, rows):
        for j in range(n):
            buf[j * width + r] = x[r * x_rs + j]


cdef inline void columns_to_rows(const floating* buf, floating* out, Py_ssize_t rows, Py_ssize_t n,
                                 Py_ssize_t o_rs, Py_ssize_t width) noexcept nogil:
    """out[r * o_rs + j] = buf[j * width + r]: rows_to_columns' inverse."""
    cdef Py_ssize_t r, j, q, k, done = rows - rows % UNROLL
    for k in range(done // UNROLL):
        r = k * UNROLL
        for j in range(n):
            for q in range(UNROLL):
                out[(r + q) * o_rs + j] = buf[j * width + r + q]
    for r in range(done, rows):
        for j in range(n):
            out[r * o_rs + j] = buf[j * width + r]


cdef inline void narrow_forward_block(const floating* x, floating* out, Py_ssize_t rows, Py_ssize_t n,
                                      Py_ssize_t x_rs, Py_ssize_t o_rs, Py_ssize_t width,
                                      bint log_softmax) noexcept nogil:
    """softmax (or log_softmax) of `rows` <= width rows of n elements, through two staging buffers. out may be x
    itself: the block is read whole before any of it is written."""
    cdef floating bx[NARROW_BUF]
    cdef floating bo[NARROW_BUF]
    rows_to_columns(x, bx, rows, n, x_rs, width)
    strided_forward_tile(bx, bo, n, rows, width, width, log_softmax, <staged_rows>0)
    columns_to_rows(bo, out, rows, n, o_rs, width)


cdef inline void narrow_backward_block(const floating* g, const floating* y, floating* out, Py_ssize_t rows,
                                       Py_ssize_t n, Py_ssize_t g_rs, Py_ssize_t y_rs, Py_ssize_t o_rs,
                                       Py_ssize_t width, bint log_softmax) noexcept nogil:
    """The vector-Jacobian product of `rows` <= width rows of n elements, as narrow_forward_block."""
    cdef floating bg[NARROW_BUF]
    cdef floating by[NARROW_BUF]
    cdef floating bo[NARROW_BUF]
    rows_to_columns(g, bg, rows, n, g_rs, width)
    rows_to_columns(y, by, rows, n, y_rs, width)
    strided_backward_tile(bg, by, bo, n, rows, width, width, width, log_softmax, <no_fetch>0)
    columns_to_rows(bo, out, rows, n, o_rs, width)


cdef inline void narrow_row(const floating* x, floating* out, Py_ssize_t n, bint log_softmax) noexcept nogil:
    """One narrow row computed as a tile column is (strided_forward_tile, a column of its own), the same
    operations in the same order: for arrays of too few rows to fill a staged block, so that a row's bits do
    not depend on how many rows came with it. out may be x."""
    cdef floating top = -INFINITY
    cdef floating low = INFINITY
    cdef floating buf[K_BLOCK]
    cdef floating factor
    cdef double total = 0.0
    cdef bint wide = False
    cdef Py_ssize_t k, blk, k0, k1
    for k in range(n):
        top = x[k] if x[k] > top else top
        low = x[k] if x[k] < low else low
    if floating is float:
        wide = not (top - low < EXACT_RANGE)
    for blk in range((n + K_BLOCK - 1) // K_BLOCK):
        k0 = blk * K_BLOCK
        k1 = min(k0 + K_BLOCK, n)
        # exp into a buffer first, a loop gcc vectorizes; then the sum in the column's order
        for k in range(k0, k1):
            buf[k - k0] = exp_shifted_sel_(x[k], top, wide)
        for k in range(k1 - k0):
            total += buf[k]
        if not log_softmax:
            for k in range(k0, k1):
                out[k] = buf[k - k0]
    if log_softmax:
        factor = <floating>log_sum_(total, floating is double)
        for k in range(n):
            out[k] = (x[k] - top) - factor
    else:
        factor = <floating>(1.0 / total)
        for k in range(n):
            out[k] = out[k] * factor


cdef inline void narrow_backward_row(const floating* g, const floating* y, floating* out, Py_ssize_t n,
                                     bint log_softmax) noexcept nogil:
    """One narrow row of the backward passes computed as a tile column is (strided_backward_tile), as
    narrow_row."""
    cdef floating part, total_f
    cdef double total = 0.0
    cdef Py_ssize_t k, blk, k0, k1
    for blk in range((n + K_BLOCK - 1) // K_BLOCK):
        k0 = blk * K_BLOCK
        k1 = min(k0 + K_BLOCK, n)
        part = 0
        if log_softmax:
            for k in range(k0, k1):
                part += g[k]
        else:
            for k in range(k0, k1):
                part = madd_(g[k], y[k], part)
        total += part
    total_f = <floating>total
    if log_softmax:
        for k in range(n):
            out[k] = g[k] - exp_(y[k]) * total_f
    else:
        for k in range(n):
            out[k] = y[k] * (g[k] - total_f)
