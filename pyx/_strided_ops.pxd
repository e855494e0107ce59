# Building blocks of the non-last-axis kernels. The data is a slab of K rows (the reduced axis, row stride in
# elements) by w contiguous columns; each column is one softmax slice. The column loop is innermost, so it is the
# vectorized one, and no transposed copy of a non-last axis is ever made (narrow last-axis rows are staged as
# columns on purpose, see _narrow_ops.pxd). Per-column state lives in stack arrays of the call, which makes it
# private to the calling thread without a malloc. Within the tiles every column's arithmetic is its own: the same
# bits whatever its neighbours, the tiling and the thread count. (A non-last axis whose inner block is narrower
# than 8 takes a transposed copy and the row kernels instead, whose narrow rows sum in double: the same column can
# come out with other bits there.)
from libc.math cimport INFINITY
from cython cimport floating
from _simd_math cimport exp_, exp_shifted_, exp_shifted_sel_, log_sum_, madd_, EXACT_RANGE
from _memory cimport prefetch

# A compile-time flag for strided_forward_tile, as a fused type of a dummy argument: Cython then emits one copy of
# the function per value, and the copy that does not prefetch is the plain function, compiled as it was without
# the prefetch (with a run-time flag, gcc compiled the in-cache path 9-14% slower, measured).
ctypedef signed char no_fetch
ctypedef unsigned char next_tile
# A third value: a tile of narrow rows (staged_rows, _narrow_ops.pxd), which does not prefetch and sums in double.
ctypedef short staged_rows
ctypedef fused tile_fetch:
    no_fetch
    next_tile
    staged_rows
# The type the exp terms are summed in (exp_tile_rows).
ctypedef fused sum_type:
    float
    double

cdef enum:
    TILE_MAX = 512   # columns per tile at most: 4 per-column arrays of up to 512 doubles = 16 KiB of stack
    # Strided tiles are never narrower than GROUP columns (an AVX-512 float32 vector), unless the slab is; a
    # partial last block of narrow rows can be.
    GROUP = 16
    K_BLOCK = 64     # float partial sums are flushed into double sums every K_BLOCK rows (accuracy for long K)


cdef inline void exp_tile_rows(const floating* xr, floating* orow, const floating* col_max, sum_type* part,
                               Py_ssize_t w, bint log_softmax) noexcept nogil:
    """One row k of a tile: part[j] += exp(x - col_max[j]), also stored for softmax."""
    cdef Py_ssize_t j
    cdef floating e
    if log_softmax:
        for j in range(w):
            part[j] += exp_shifted_(xr[j], col_max[j], False)
    else:
        for j in range(w):
            e = exp_shifted_(xr[j], col_max[j], False)
            orow[j] = e
            part[j] += e


cdef inline void exp_tile_rows_wide(const floating* xr, floating* orow, const floating* col_max,
                                    const floating* col_wide, sum_type* part, Py_ssize_t w,
                                    bint log_softmax) noexcept nogil:
    """exp_tile_rows for a tile with a wide column: each column j exact where col_wide[j] != 0, as a row kernel
    decides per row, so a column's arithmetic never depends on its neighbours (exp_shifted_sel_)."""
    cdef Py_ssize_t j
    cdef floating e
    if log_softmax:
        for j in range(w):
            part[j] += exp_shifted_sel_(xr[j], col_max[j], col_wide[j] != 0)
    else:
        for j in range(w):
            e = exp_shifted_sel_(xr[j], col_max[j], col_wide[j] != 0)
            orow[j] = e
            part[j] += e


cdef inline void fetch_tile_row(const floating* xr, const floating* orow, Py_ssize_t lines) noexcept nogil:
    """Prefetch `lines` cache lines from each of two arrays (x and out forward, g and y backward): one row of the
    next tile."""
    cdef Py_ssize_t j
    for j in range(lines):
        prefetch(<const char*>xr + 64 * j)
        prefetch(<const char*>orow + 64 * j)


cdef inline void exp_tile_block(const floating* x, floating* out, Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t w,
                                Py_ssize_t xs, Py_ssize_t os, const floating* col_max, const floating* col_wide,
                                sum_type* part, bint exact, bint log_softmax, tile_fetch fetch,
                                Py_ssize_t fetch_lines) noexcept nogil:
    """Rows k0..k1-1 of a tile through exp_tile_rows (or exp_tile_rows_wide where exact: a wide column in the
    tile), the terms summed into part; with fetch of type next_tile, each row prefetches the next tile's."""
    cdef Py_ssize_t k
    if not exact:   # the common case: no wide column in the tile, one fast loop over all its columns
        for k in range(k0, k1):
            if tile_fetch is next_tile:   # the next tile's part of this row, in and out
                fetch_tile_row(x + k * xs + w, out + k * os + w, fetch_lines)
            exp_tile_rows(x + k * xs, out + k * os, col_max, part, w, log_softmax)
    else:
        for k in range(k0, k1):
            if tile_fetch is next_tile:
                fetch_tile_row(x + k * xs + w, out + k * os + w, fetch_lines)
            exp_tile_rows_wide(x + k * xs, out + k * os, col_max, col_wide, part, w, log_softmax)


cdef inline void strided_forward_tile(const floating* x, floating* out, Py_ssize_t K, Py_ssize_t w,
                                      Py_ssize_t xs, Py_ssize_t os, bint log_softmax, tile_fetch fetch) noexcept nogil:
    """softmax (or log_softmax) over k of x[k * xs + j], for every column j < w <= TILE_MAX.

    With fetch of type next_tile (arrays that come from memory), the exp pass prefetches, row by row, the w
    columns to the right of the tile in x and out: the next tile of the slab. A tile's row is only w elements of a
    long row, too short for the hardware prefetchers to get ahead of, and out is read for ownership before the exp
    pass's stores. Measured (Zen 5, A/B): issued from the max pass, 8x21x16384 float32 over axis 1 (11 MB) was
    1.27-1.31x faster at one and two threads (the AVX2 build 1.24x) and 8x21x4096 (2.75 MB, in cache) 0.81x, so
    arrays in cache do not prefetch. Moved to the exp pass, most of a tile's time, where the prefetches are spread
    over the compute instead of issued next to a pass that only loads: another 1.06-1.16x on 8x21x16384 (T=1; T=2
    1.10-1.13x; AVX2 1.17x), 1.13-1.22x on 4x19x32768, 1.16-1.37x on 16x64x4096, 1.19x on 8x1000x512, log_softmax
    1.08-1.19x, float64 1.15x. Prefetching x alone lost 4-12% against x and out."""
    cdef floating col_max[TILE_MAX]
    cdef floating col_min[TILE_MAX]
    cdef floating part[TILE_MAX]
    cdef double col_sum[TILE_MAX]
    cdef Py_ssize_t k, j, blk, k0, k1
    cdef const floating* xr
    cdef floating* orow
    cdef bint exact = False
    cdef Py_ssize_t fetch_lines = (w * <Py_ssize_t>sizeof(floating) + 63) // 64
    for j in range(w):
        col_max[j] = -INFINITY
        col_min[j] = INFINITY   # for float32's exactness test (see row_max in _row_ops.pxd)
        col_sum[j] = 0.0
    for k in range(K):
        xr = x + k * xs
        if floating is float:
            for j in range(w):
                col_max[j] = xr[j] if xr[j] > col_max[j] else col_max[j]
                col_min[j] = xr[j] if xr[j] < col_min[j] else col_min[j]
        else:
            for j in range(w):
                col_max[j] = xr[j] if xr[j] > col_max[j] else col_max[j]
    if floating is float:  # float64 rounds x - max once, like any float64 reference: no range test needed
        for j in range(w):
            exact = exact or not (col_max[j] - col_min[j] < EXACT_RANGE)
        if exact:
            for j in range(w):
                # col_min becomes the column's exactness flag (1 or 0), which exp_tile_rows_wide reads
                col_min[j] = 0 if col_max[j] - col_min[j] < EXACT_RANGE else 1   # NaN and inf ranges: exact
    if tile_fetch is staged_rows:
        # Narrow rows: the terms summed in double, as the row kernels' shortest rows did, so that -log(sum) of
        # log_softmax keeps its relative accuracy where one term dominates (a float sum 1 + e rounds e to 6e-8,
        # 1e-4 relative on log_softmax of a confident 2-class row). Here it costs 5-10%; in the strided tiles,
        # summed in float, it measured 10-20% (Zen 5, A/B).
        exp_tile_block(x, out, 0, K, w, xs, os, col_max, col_min, col_sum, exact, log_softmax, fetch, fetch_lines)
    else:
        for blk in range((K + K_BLOCK - 1) // K_BLOCK):
            k0 = blk * K_BLOCK
            k1 = min(k0 + K_BLOCK, K)
            for j in range(w):
                part[j] = 0
            exp_tile_block(x, out, k0, k1, w, xs, os, col_max, col_min, part, exact, log_softmax, fetch,
                           fetch_lines)
            for j in range(w):
                col_sum[j] += part[j]
    if log_softmax:
        for j in range(w):
            part[j] = <floating>log_sum_(col_sum[j], floating is double)
        for k in range(K):
            xr = x + k * xs
            orow = out + k * os
            for j in range(w):
                orow[j] = (xr[j] - col_max[j]) - part[j]
    else:
        for j in range(w):
            part[j] = <floating>(1.0 / col_sum[j])
        for k in range(K):
            orow = out + k * os
            for j in range(w):
                orow[j] = orow[j] * part[j]


cdef inline void strided_backward_tile(const floating* g, const floating* y, floating* out, Py_ssize_t K,
                                       Py_ssize_t w, Py_ssize_t gs, Py_ssize_t ys, Py_ssize_t os,
                                       bint log_softmax, tile_fetch fetch) noexcept nogil:
    """Vector-Jacobian product over k for every column j < w: softmax: y * (g - sum_k g*y);
    log_softmax: g - exp(y) * sum_k g.
    With fetch of type next_tile (log_softmax on arrays from memory), the sum pass prefetches the next tile's
    rows of g and y, which the exp-heavy gradient pass then finds in cache: 1.12-1.47x on 8x21x16384 and
    16x64x4096 over axis 1 (Zen 5, A/B, T=1 and T=2). For softmax_backward, whose gradient pass is light, it was
    0.91-0.97x."""
    cdef floating part[TILE_MAX]
    cdef double col_sum[TILE_MAX]
    cdef Py_ssize_t k, j, blk, k0, k1
    cdef const floating* gr
    cdef const floating* yr
    cdef floating* orow
    for j in range(w):
        col_sum[j] = 0.0
    for blk in range((K + K_BLOCK - 1) // K_BLOCK):
        k0 = blk * K_BLOCK
        k1 = min(k0 + K_BLOCK, K)
        for j in range(w):
            part[j] = 0
        k = k0
        if tile_fetch is no_fetch:
            # Four rows per pass over part[] (a quarter of its loads and stores), each column's terms still
            # added in row order: the same bits as one row at a time. Measured (Zen 5, T=1, A/B, against one
            # row): softmax_backward over axis 1 4x150x4096 1.19x, 16x64x4096 1.18x, 4x19x32768 1.16x,
            # 16x19x1025 1.09x (two rows: 1.05-1.15x); log_softmax_backward 1.02-1.04x.
            while k + 3 < k1:
                gr = g + k * gs
                if log_softmax:
                    for j in range(w):
                        part[j] = (((part[j] + gr[j]) + gr[gs + j]) + gr[2 * gs + j]) + gr[3 * gs + j]
                else:
                    yr = y + k * ys
                    for j in range(w):
                        part[j] = madd_(gr[3 * gs + j], yr[3 * ys + j],
                                        madd_(gr[2 * gs + j], yr[2 * ys + j],
                                              madd_(gr[gs + j], yr[ys + j], madd_(gr[j], yr[j], part[j]))))
                k += 4
        while k < k1:
            gr = g + k * gs
            if tile_fetch is next_tile:   # the next tile's part of this row of g and y
                fetch_tile_row(gr + w, y + k * ys + w, (w * <Py_ssize_t>sizeof(floating) + 63) // 64)
            if log_softmax:
                for j in range(w):
                    part[j] += gr[j]
            else:
                yr = y + k * ys
                for j in range(w):
                    part[j] = madd_(gr[j], yr[j], part[j])
            k += 1
        for j in range(w):
            col_sum[j] += part[j]
    for j in range(w):
        part[j] = <floating>col_sum[j]
    for k in range(K):
        gr = g + k * gs
        yr = y + k * ys
        orow = out + k * os
        if log_softmax:
            for j in range(w):
                orow[j] = gr[j] - exp_(yr[j]) * part[j]
        else:
            for j in range(w):
                orow[j] = yr[j] * (gr[j] - part[j])
