# The kernel module body, compiled once per SIMD target (see the thin pyx/_kernels_<target>.pyx files and
# setup.py). Buffers in, buffers out: this code knows nothing of the Python API's argument rules; the caller
# (fastsoftmax/_api.py) has already validated dtypes and shapes. The layout (element strides, overlap, alignment)
# is worked out here, from the arrays' shapes and strides, in forward_axes / backward_axes.
#
# Every array is seen as (outer, K, inner) with the reduced axis K in the middle and `inner` contiguous:
#   inner == 1  -> row kernels: each of the outer rows is one contiguous slice of K elements;
#   inner  > 1  -> strided kernels: slabs of K rows x inner columns, each column one slice.
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport log
from libc.stdlib cimport free, malloc
from cpython.pyport cimport PY_SSIZE_T_MAX

from _openmp_helpers cimport FSM_OPENMP_VERSION, omp_get_max_threads
from _row_ops cimport (SHORT_ROW_F32, SHORT_SUM_F32, chunk_exp_sum, chunks_combine, exp_shifted_sum,
                       exp_shifted_sum_fetching, exp_sum_short_lanes, exp_sum_short_tailed, log_shift_row,
                       log_softmax_grad_row, log_softmax_grad_row_fetching, row_dot, row_dot_short, row_max, scale_row,
                       scale_row_fetching, short_steps_length, softmax_backward_short, softmax_grad_row, STEP_LINES,
                       row_max_pair, LINE_F32, DOT_FETCH)
from _simd_math cimport exp_, exp_shifted_
from _memory cimport (FETCH_AHEAD_BYTES, FETCH_DEEP_BYTES, FETCH_EXP, FETCH_MAX, FETCH_MIN_BYTES, FETCH_NONE,
                      LARGE_BYTES, STREAM_MIN_THREADS, STREAM_ROW_BYTES, fetch_line, fetch_line_w, stream_fence,
                      stream_row)
from _strided_ops cimport GROUP, TILE_MAX, next_tile, no_fetch, strided_backward_tile, strided_forward_tile
from _narrow_ops cimport (narrow_backward_block, narrow_backward_row, narrow_block_rows, narrow_forward_block,
                          narrow_row)

cnp.import_array()

cdef extern from *:
    """
    #if defined(__clang__)
    #define FSM_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FSM_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FSM_STR2(v) #v
    #define FSM_STR(v) FSM_STR2(v)
    #define FSM_COMPILER "msvc " FSM_STR(_MSC_VER)
    #else
    #define FSM_COMPILER "unknown"
    #endif
    """
    const char* FSM_COMPILER

cdef enum:
    # Rows longer than CHUNKED_MIN_COLS take the chunked two-pass kernel (see _row_ops.pxd): its phase 1 reads
    # each CHUNK from memory once and reuses it from L1, where the three-pass kernel would read the row from
    # memory a second and third time once x and out no longer fit in L2. MAX_CHUNKS bounds the per-row state on
    # the stack; longer rows use proportionally longer chunks.
    CHUNK = 2048
    CHUNKED_MIN_COLS = 16384
    MAX_CHUNKS = 256
    # Batches of fewer than SPLIT_MAX_ROWS chunked rows are split across threads by chunk, so e.g. 8 rows of
    # 150 000 can use 16 cores. Every chunked row goes through the same chunk arithmetic and the choices depend
    # on the shape only, never on the thread count, so results are bitwise identical at every thread count.
    SPLIT_MAX_ROWS = 16
    # Splitting rows costs two parallel regions and a malloc: at 2 threads (Zen 5) 1x16385 ran at 0.78x and
    # 1x32000 at 1.00x the speed of one thread, 2x20000 at 1.04-1.09x, 1x40000 at 1.14x. Fewer elements than
    # SPLIT_MIN_ELEMENTS run on one thread (forward_row_chunked: the same chunk arithmetic, the same bits).
    SPLIT_MIN_ELEMENTS = 32768
    # softmax_backward is two light passes per row (a dot product, a multiply): at 2 threads 8x1024 ran at 0.78x,
    # 16x1000 at 0.91x, 24x1000 at 1.03x, 32x1000 at 1.08x the speed of one thread, so it runs on one thread below
    # SOFTMAX_BACKWARD_PARALLEL_MIN elements. log_softmax_backward (an exp per element) breaks even at 8x1024, as
    # the forward kernels do (serial_limit).
    SOFTMAX_BACKWARD_PARALLEL_MIN = 24576
    # Strided tiles are sized so K rows of one tile, in and out, stay in a 512 KiB share of L2.
    TILE_BYTES = 512 * 1024
    # A non-last axis whose contiguous inner block is narrower than this goes through a transposed copy
    # instead (too few columns to fill a vector register); see fastsoftmax/_api.py.
    MIN_STRIDED_INNER = 8
    # Strided tiles of arrays from memory (which prefetch the next tile, one tile row per exp-pass row) are at
    # most this many bytes wide: a burst of prefetches per row that the core keeps in flight. Measured (Zen 5,
    # A/B, against 2 KiB for float32 and 4 KiB for float64, the widths TILE_MAX gave): 8x21x16384 over axis 1
    # float64 1.33x, float32 1.09-1.11x; 16x64x4096 1.34-1.40x; T=2 1.04-1.27x; log_softmax 1.07-1.17x; 4x150x4096
    # (already narrower) even. 512 bytes was 0.90-1.03x of 1024, 256 bytes 0.5-0.7x. Arrays in cache and the
    # backward passes keep the wider tiles (0.94-0.97x and 0.93x with them narrow).
    FETCH_TILE_ROW_BYTES = 1024
    # Short float32 rows go two at a time (three_pass_row_pairs) in blocks of at least this many rows: on 2-8
    # rows the pairs were 2-10% slower (Zen 5, A/B), from 16 on faster.
    PAIRS_MIN_ROWS = 16
    # float32 softmax rows of up to this many elements (8 cache lines) prefetch a later row from the max pass at
    # every array size (row_fetch), also from memory, where longer rows prefetch from the exp pass: with the row
    # pairs, the exp pass without per-line prefetch steps is the faster one there. Measured (Zen 5, A/B, against
    # the exp-pass prefetch, several runs): 24576x128 1.05-1.09x (T=2 1.05-1.11x), 65536x128 1.00-1.07x,
    # 32768x100, 50000x100 and 100000x32 1.00-1.05x, the streamed 131072x128 and 262144x64 1.05-1.14x. Rows of
    # 197-256 lost 4-7% (40000x197, 32768x200, 16384x256), and log_softmax, whose exp pass also prefetches the
    # result for writing, lost 9% on 65536x128.
    SHORT_FETCH_MAX_COLS = 128
    # Rows of up to NARROW_MAX_BYTES (40 float32, 20 float64) are computed across rows, in blocks staged as tiles
    # (forward_narrow_rows, _narrow_ops.pxd), each row alone with the same arithmetic in arrays of fewer than
    # NARROW_MIN_ROWS rows. Measured (Zen 5, T=1, A/B, against the row kernels): float32 100000x10 2.1-2.4x
    # faster (log_softmax 2.8-3.7x), 65536x2 4.9-7.4x (6.4-9.3x), 4096x16 2.5-2.8x (2.2-3.2x), 1000x7 3.9-5.8x,
    # 16x10 1.45x, 8192x17-8192x24 2.6-3.1x, 8192x32 1.15x, 4096x40 1.18-1.41x, 4096x48 0.96-1.00x and 4096x64
    # 0.58-0.66x (hence 160 bytes); T=2 1.2-6.5x; float64 100000x10 1.6x, 4096x16 1.9x, 8192x32 0.95-0.99x,
    # 4096x40 0.85x; the AVX2 build 1.07-6.4x. Arrays of 2-15 rows (one row at a time either way) 1.0-1.3x, but
    # 8x32 0.85x: its in-order sum is one long chain of dependent adds.
    NARROW_MAX_BYTES = 160
    NARROW_MIN_ROWS = 16
    # The backward passes take the narrow blocks for shorter rows only: three staging copies (g, y and the result)
    # against two, for lighter arithmetic. Measured (as above): log_softmax_backward 65536x2 3.8x, 100000x3 3.3x,
    # 65536x6 4.0x, 20000x10 1.7-2.2x, 40000x12 1.9-2.5x, but 4096x16 0.69-0.83x and 100000x10 (4 MB, which the
    # row kernel prefetches) 0.91-1.03x, float64 1.5-3.6x to 6 elements; softmax_backward 65536x2 1.6-1.9x,
    # 100000x3 1.6x, 1000x7 1.46x, but 65536x8 0.77-1.09x, 100000x10 0.45-0.58x and 4096x16 0.47-0.56x (the short
    # row kernel's one-vector dot product), float64 1.5-2.0x to 3 elements.
    NARROW_LOG_BACKWARD_MAX_BYTES = 48
    NARROW_BACKWARD_MAX_BYTES = 28

# The thread policy's settings, pushed here by fastsoftmax._threads (see threads_for): arrays with fewer elements
# than serial_limit run on one thread; default_threads is set_num_threads' value (0: OpenMP's default);
# openmp_default is omp_get_max_threads() of a thread nobody has limited.
cdef Py_ssize_t serial_limit = 0
cdef int default_threads = 0
cdef int openmp_default = 1
# Results of result_cache_min bytes or more are allocated by result_empty(shape, typenum), fastsoftmax._buffers'
# cache of released results (pushed here by fastsoftmax._dispatch when the module is loaded); smaller ones, and
# all of them until then, by PyArray_EMPTY.
cdef object result_empty = None
cdef Py_ssize_t result_cache_min = PY_SSIZE_T_MAX


# ------------------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------------------

cdef inline Py_ssize_t chunk_length(Py_ssize_t n) noexcept nogil:
    """Chunk size for a chunked row of n elements: CHUNK, or longer (a multiple of 64) for rows of more than
    MAX_CHUNKS chunks."""
    cdef Py_ssize_t length = (n + MAX_CHUNKS - 1) // MAX_CHUNKS
    length = (length + 63) // 64 * 64
    return length if length > CHUNK else CHUNK


cdef inline void chunk_finish(const floating* x, floating* out, Py_ssize_t n, floating chunk_top,
                              floating row_top, double row_sum, bint log_softmax) noexcept nogil:
    """Phase 2 on one chunk of a chunked row. Float32 softmax in the AVX-512 build prefetches the result
    FETCH_AHEAD_BYTES ahead as it goes (scale_row_fetching): the next chunk, for chunks of CHUNK elements."""
    cdef floating factor
    if log_softmax:
        log_shift_row(x, out, n, row_top, <floating>log(row_sum))
    else:
        factor = <floating>(<double>exp_shifted_(chunk_top, row_top, True) / row_sum)
        # The AVX-512 build only (two-line steps): the AVX2 build's one-line steps lost 25-28% with it.
        if floating is float and STEP_LINES == 2:
            scale_row_fetching(out, n, factor)
        else:
            scale_row(out, n, factor)


cdef inline void forward_row_chunked(const floating* x, floating* out, Py_ssize_t n,
                                     bint log_softmax) noexcept nogil:
    cdef floating tops[MAX_CHUNKS]
    cdef double sums[MAX_CHUNKS]
    cdef Py_ssize_t length = chunk_length(n)
    cdef Py_ssize_t count = (n + length - 1) // length
    cdef Py_ssize_t c, start
    cdef floating row_top
    cdef double row_sum
    for c in range(count):
        start = c * length
        sums[c] = chunk_exp_sum(x + start, out + start, min(length, n - start), not log_softmax, &tops[c])
    row_sum = chunks_combine(tops, sums, count, &row_top)
    for c in range(count):
        start = c * length
        chunk_finish(x + start, out + start, min(length, n - start), tops[c], row_top, row_sum, log_softmax)


cdef inline double exp_sum_short_row(const float* x, float* dst, Py_ssize_t n, float row_top, bint store,
                                     bint exact, bint fetch) noexcept nogil:
    """exp_sum_pass for a float32 row of n <= SHORT_SUM_F32 in the AVX-512 build: exp_sum_short_lanes, or
    exp_sum_short_tailed where the row's part step is one more vector (the row pairs choose alike, so that a
    row's bits do not depend on its batch)."""
    if short_steps_length(n) < n:
        if fetch:
            return exp_sum_short_tailed(x, dst, n, row_top, store, exact, True)
        return exp_sum_short_tailed(x, dst, n, row_top, store, exact, False)
    if fetch:
        return exp_sum_short_lanes(x, dst, n, row_top, store, exact, True)
    return exp_sum_short_lanes(x, dst, n, row_top, store, exact, False)


cdef inline double exp_sum_pass(const floating* x, floating* dst, Py_ssize_t n, bint log_softmax, floating row_top,
                                bint wide, bint fetch) noexcept nogil:
    """The second pass of a row: sum(exp(x - row_top)), the terms stored to dst for softmax; with fetch,
    prefetching a later row as it goes (FETCH_EXP, see row_fetch)."""
    if floating is float:
        # The test on the constant first: builds with exp_sum_short compile this function as before.
        if SHORT_ROW_F32 == 0 and n <= SHORT_SUM_F32:
            return exp_sum_short_row(x, dst, n, row_top, not log_softmax, wide, fetch)
    if fetch:
        return exp_shifted_sum_fetching(x, dst, n, row_top, not log_softmax, wide)
    if log_softmax:
        return exp_shifted_sum(x, dst, n, row_top, False, wide)
    return exp_shifted_sum(x, dst, n, row_top, True, wide)


cdef inline void finish_pass(const floating* x, floating* dst, Py_ssize_t n, bint log_softmax, floating row_top,
                             double total) noexcept nogil:
    """The third pass of a row: scale the stored terms by 1 / total, or x - row_top - log(total)."""
    if log_softmax:
        log_shift_row(x, dst, n, row_top, <floating>log(total))
    else:
        scale_row(dst, n, <floating>(1.0 / total))


cdef inline void three_pass_row(const floating* x, floating* dst, Py_ssize_t n, bint log_softmax,
                                int fetch) noexcept nogil:
    """The three passes over one row that fits in cache (max; exp(x - max) stored for softmax and summed;
    scale or shift), the result written to dst. fetch: where to prefetch a later row (see row_fetch)."""
    cdef bint wide
    # float64 rounds x - max once, as any float64 reference does (<= 5.7e-14 of the 1e-13 budget): no range test
    cdef floating row_top = row_max(x, n, &wide, floating is float, fetch == FETCH_MAX)
    finish_pass(x, dst, n, log_softmax, row_top,
                exp_sum_pass(x, dst, n, log_softmax, row_top, wide, fetch == FETCH_EXP))


cdef void three_pass_row_pairs(const float* x, float* out, Py_ssize_t first, Py_ssize_t stop,
                               Py_ssize_t n, Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax,
                               int fetch) noexcept nogil:
    """three_pass_rows for float32 rows short enough for exp_sum_short_lanes (the AVX-512 build), two rows at a
    time: both rows' exp passes are issued before either row's last pass, and the next two rows' max passes
    between them. A row of 128 is mostly latency (the max and its fold, the sum and its fold, the division)
    that the rest of its own row cannot hide; the other row's work can. Each row's arithmetic is the same as
    alone. Measured (Zen 5, A/B, against three_pass_rows): softmax 1024x128 1.10-1.17x, 24576x128 1.06-1.10x
    (T=2 1.03-1.08x, with out= 1.10x), 256x197 and 256x200 1.04-1.08x, 16x128 1.05x; log_softmax 1.06-1.21x.
    How it is written is measured too: calling exp_sum_pass (as three_pass_rows does) it cost rows of 197 and
    200 8-16%, and written inside three_pass_rows arrays of 2-8 rows lost 4-7% (gcc compiled the shared passes
    differently); hence a function of its own, calling exp_sum_short_lanes (or _tailed) directly. Rows of 1000
    and float64 rows lost 2-16% in pairs (they have enough independent work within a row); the AVX2 build's
    short rows (exp_sum_short) gained nothing measurable. Each pair's two max passes are one loop
    (row_max_pair)."""
    cdef bint wide, next_wide, wide1, next_wide1
    cdef float top, next_top, top1, next_top1
    cdef double total, total1
    cdef Py_ssize_t r
    cdef bint in_max = fetch == FETCH_MAX
    cdef bint in_exp = fetch == FETCH_EXP
    cdef bint tailed = short_steps_length(n) < n
    r = first
    if r + 1 < stop:
        row_max_pair(x + r * x_rs, x + (r + 1) * x_rs, n, &next_top, &next_top1, &next_wide, &next_wide1, in_max)
    while r + 1 < stop:
        top = next_top
        wide = next_wide
        top1 = next_top1
        wide1 = next_wide1
        if tailed:
            total = exp_sum_short_tailed(x + r * x_rs, out + r * o_rs, n, top, not log_softmax, wide, in_exp)
            total1 = exp_sum_short_tailed(x + (r + 1) * x_rs, out + (r + 1) * o_rs, n, top1, not log_softmax,
                                          wide1, in_exp)
        else:
            total = exp_sum_short_lanes(x + r * x_rs, out + r * o_rs, n, top, not log_softmax, wide, in_exp)
            total1 = exp_sum_short_lanes(x + (r + 1) * x_rs, out + (r + 1) * o_rs, n, top1, not log_softmax,
                                         wide1, in_exp)
        if r + 3 < stop:
            row_max_pair(x + (r + 2) * x_rs, x + (r + 3) * x_rs, n, &next_top, &next_top1, &next_wide, &next_wide1,
                         in_max)
        finish_pass(x + r * x_rs, out + r * o_rs, n, log_softmax, top, total)
        finish_pass(x + (r + 1) * x_rs, out + (r + 1) * o_rs, n, log_softmax, top1, total1)
        r += 2
    if r < stop:
        three_pass_row(x + r * x_rs, out + r * o_rs, n, log_softmax, fetch)


cdef inline void three_pass_rows(const floating* x, floating* out, Py_ssize_t first, Py_ssize_t stop,
                                 Py_ssize_t n, Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax,
                                 int fetch) noexcept nogil:
    """Rows first..stop-1 by three_pass_row's passes, software-pipelined: the next row's max pass is issued
    before this row's last pass, which waits on the sum, its fold and a division (or log). fetch: where to
    prefetch a later row (see row_fetch)."""
    cdef bint wide, next_wide
    cdef floating top, next_top
    cdef double total
    cdef Py_ssize_t r
    cdef bint in_max = fetch == FETCH_MAX
    cdef bint in_exp = fetch == FETCH_EXP
    if first >= stop:
        return
    next_top = row_max(x + first * x_rs, n, &next_wide, floating is float, in_max)
    for r in range(first, stop):
        top = next_top
        wide = next_wide
        total = exp_sum_pass(x + r * x_rs, out + r * o_rs, n, log_softmax, top, wide, in_exp)
        if r + 1 < stop:
            next_top = row_max(x + (r + 1) * x_rs, n, &next_wide, floating is float, in_max)
        finish_pass(x + r * x_rs, out + r * o_rs, n, log_softmax, top, total)


cdef inline void rows_in_cache(const floating* x, floating* out, Py_ssize_t first, Py_ssize_t stop,
                               Py_ssize_t n, Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax,
                               int fetch) noexcept nogil:
    """Rows first..stop-1 whose results are not streamed (forward_row_block), computed in place in out: short
    float32 rows in pairs (three_pass_row_pairs), the others one at a time (three_pass_rows)."""
    if floating is float:
        if SHORT_ROW_F32 == 0 and n <= SHORT_SUM_F32 and stop - first >= PAIRS_MIN_ROWS:
            three_pass_row_pairs(x, out, first, stop, n, x_rs, o_rs, log_softmax, fetch)
            return
    three_pass_rows(x, out, first, stop, n, x_rs, o_rs, log_softmax, fetch)


cdef void forward_row_block(const floating* x, floating* out, Py_ssize_t first, Py_ssize_t stop,
                            Py_ssize_t n_cols, Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax, int fetch,
                            bint stream) noexcept nogil:
    """Rows first..stop-1 of rows that fit in cache: one thread's share. With stream (arrays of LARGE_BYTES or
    more, see _memory.pxd), rows of up to STREAM_ROW_BYTES are computed into an L1 buffer and streamed to out,
    which is then written once and never read; otherwise (or out of memory for the buffer) rows_in_cache."""
    cdef Py_ssize_t row_bytes = n_cols * <Py_ssize_t>sizeof(floating)
    cdef floating* buf = NULL
    cdef Py_ssize_t r
    if stream and row_bytes <= STREAM_ROW_BYTES:
        buf = <floating*>malloc(row_bytes)
    if buf == NULL:
        rows_in_cache(x, out, first, stop, n_cols, x_rs, o_rs, log_softmax, fetch)
        return
    for r in range(first, stop):
        three_pass_row(x + r * x_rs, buf, n_cols, log_softmax, fetch)
        stream_row(out + r * o_rs, buf, n_cols)
    stream_fence()
    free(buf)


cdef inline int row_fetch(const floating* x, Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t x_rs,
                          bint log_softmax) noexcept nogil:
    """Where the row kernels prefetch a later row of x (x: for its dtype; see _memory.pxd), by the array's size:
    * FETCH_NONE: arrays under FETCH_MIN_BYTES (they stay in L2), arrays whose rows are not back to back, and rows
      longer than FETCH_AHEAD_BYTES (they would prefetch within themselves; see below);
    * FETCH_MAX, from the max pass: arrays that the last-level cache holds, and float32 rows short enough for
      exp_sum_short (its exp loop has no per-line step; a short row's prefetches are few enough to be issued
      at once; there are none in the AVX-512 build, see SHORT_ROW_F32); in the AVX-512 build, float32 softmax
      rows of up to SHORT_FETCH_MAX_COLS at every size (see there);
    * FETCH_EXP, from the exp pass: arrays of FETCH_DEEP_BYTES or more, which come from memory. There a max
      pass issued a row's worth of prefetches in one burst, more than the core keeps in flight; spread over the
      exp pass, most of a row's time, they all are. Measured at T=1, time max / exp (benchmarks/RESULTS.md,
      "Prefetch from the exp pass"): 4096x1000 float32 1.08-1.17x faster, 2048x2000 1.16-1.28x, 12 MB 1.22x,
      8 MB 0.99-1.10x, float64 1.08-1.14x, log_softmax 1.21x; T=2 1.04-1.20x; 256 MB with out= 1.05x (T=1) and
      1.12x (T=2). On arrays the last-level cache holds the burst was better (6 MB: 0.94x, 4 MB: 0.84-0.91x).
    Rows longer than FETCH_AHEAD_BYTES measured 1.12-1.27x faster with the exp-pass prefetch too (a row ahead),
    but every way of adding them changed how gcc compiled the passes of all other arrays (rows in cache 4-16%
    slower, at equal instruction counts), so they do not prefetch. Chunked rows (longer than CHUNKED_MIN_COLS)
    prefetch from each chunk's max pass, FETCH_AHEAD_BYTES (the next chunk) ahead, and log_softmax's chunks from
    their exp pass too: see chunk_exp_sum."""
    cdef Py_ssize_t n_bytes = n_rows * n_cols * <Py_ssize_t>sizeof(floating)
    if x_rs != n_cols or n_cols * <Py_ssize_t>sizeof(floating) > FETCH_AHEAD_BYTES or n_bytes < FETCH_MIN_BYTES:
        return FETCH_NONE
    if floating is float:
        if n_cols <= SHORT_ROW_F32 or (n_cols <= SHORT_FETCH_MAX_COLS and not log_softmax):
            return FETCH_MAX
    return FETCH_EXP if n_bytes >= FETCH_DEEP_BYTES else FETCH_MAX


cdef void forward_rows(const floating* x, floating* out, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax, int n_threads) noexcept nogil:
    cdef Py_ssize_t r, t, per
    cdef Py_ssize_t n_bytes = n_rows * n_cols * <Py_ssize_t>sizeof(floating)
    # Streaming stores only where memory is the bottleneck (see _memory.pxd).
    cdef bint stream = n_bytes >= LARGE_BYTES and n_threads >= STREAM_MIN_THREADS and FSM_OPENMP_VERSION != 0
    cdef int fetch = row_fetch(x, n_rows, n_cols, x_rs, log_softmax)
    if n_cols > CHUNKED_MIN_COLS:
        # The chunked two passes (they prefetch within the row, see chunk_exp_sum).
        if n_threads <= 1:
            for r in range(n_rows):
                forward_row_chunked(x + r * x_rs, out + r * o_rs, n_cols, log_softmax)
        else:
            for r in prange(n_rows, schedule='static', num_threads=n_threads):
                forward_row_chunked(x + r * x_rs, out + r * o_rs, n_cols, log_softmax)
    elif n_threads <= 1:
        # The test on the constant first: builds that never stream on one thread compile this branch as before.
        if STREAM_MIN_THREADS == 1 and stream:
            forward_row_block(x, out, 0, n_rows, n_cols, x_rs, o_rs, log_softmax, fetch, True)
        else:
            rows_in_cache(x, out, 0, n_rows, n_cols, x_rs, o_rs, log_softmax, fetch)
    else:
        # One contiguous block of rows per thread (what schedule='static' gives): the rows of a block are
        # pipelined (rows_in_cache), and a streaming block fences once.
        per = (n_rows + n_threads - 1) // n_threads
        for t in prange(n_threads, schedule='static', num_threads=n_threads):
            forward_row_block(x, out, min(t * per, n_rows), min(t * per + per, n_rows), n_cols, x_rs, o_rs,
                              log_softmax, fetch, stream)


cdef int forward_split_rows(const floating* x, floating* out, Py_ssize_t n_rows, Py_ssize_t n_cols,
                            Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax, int n_threads) noexcept nogil:
    """Few long rows: the chunked two passes with (row, chunk) work items shared by all threads: an `omp for`
    per phase, the same static schedule in both, so a thread finds its own chunks still in its cache. The chunk
    arithmetic and combination order are those of forward_row_chunked. Returns -1 if out of memory."""
    cdef Py_ssize_t length = chunk_length(n_cols)
    cdef Py_ssize_t per_row = (n_cols + length - 1) // length
    cdef Py_ssize_t n_items = n_rows * per_row
    cdef floating* tops = <floating*>malloc(n_items * sizeof(floating))
    cdef double* sums = <double*>malloc(n_items * sizeof(double))
    cdef floating* row_tops = <floating*>malloc(n_rows * sizeof(floating))
    cdef double* row_sums = <double*>malloc(n_rows * sizeof(double))
    cdef Py_ssize_t it, r, start
    if tops == NULL or sums == NULL or row_tops == NULL or row_sums == NULL:
        free(tops)
        free(sums)
        free(row_tops)
        free(row_sums)
        return -1
    if n_threads > n_items:
        n_threads = <int>n_items
    # Three parallel regions, not three loops in one: each phase reads what every thread wrote in the previous
    # one, and the end of a region is a guaranteed barrier (Cython emits its loops in a region as `omp for nowait`).
    for it in prange(n_items, schedule='static', num_threads=n_threads):
        r = it // per_row
        start = (it % per_row) * length
        sums[it] = chunk_exp_sum(x + r * x_rs + start, out + r * o_rs + start, min(length, n_cols - start),
                                 not log_softmax, &tops[it])
    for r in prange(n_rows, schedule='static', num_threads=min(n_threads, n_rows)):
        row_sums[r] = chunks_combine(tops + r * per_row, sums + r * per_row, per_row, &row_tops[r])
    for it in prange(n_items, schedule='static', num_threads=n_threads):
        r = it // per_row
        start = (it % per_row) * length
        chunk_finish(x + r * x_rs + start, out + r * o_rs + start, min(length, n_cols - start), tops[it],
                     row_tops[r], row_sums[r], log_softmax)
    free(tops)
    free(sums)
    free(row_tops)
    free(row_sums)
    return 0


cdef Py_ssize_t tile_width(Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner, Py_ssize_t itemsize,
                           int n_threads, Py_ssize_t max_row_bytes) noexcept nogil:
    """Columns per strided tile (a power of two): as wide as TILE_MAX allows while K rows of a tile (in and out)
    fit TILE_BYTES and a tile's row is at most max_row_bytes, then narrower until there are a few tiles per
    thread. The tiling never changes the arithmetic of a column (each column's passes are its own, exactness
    included, see strided_forward_tile)."""
    cdef Py_ssize_t tile = TILE_MAX
    # Never narrower than GROUP, one float32 vector.
    while tile > GROUP and (2 * K * tile * itemsize > TILE_BYTES or tile * itemsize > max_row_bytes):
        tile //= 2
    if n_threads > 1:
        while tile > GROUP and outer * ((inner + tile - 1) // tile) < 4 * n_threads:
            tile //= 2
    return tile


cdef void forward_strided(const floating* x, floating* out, Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner,
                          Py_ssize_t x_so, Py_ssize_t x_sk, Py_ssize_t o_so, Py_ssize_t o_sk,
                          bint log_softmax, int n_threads) noexcept nogil:
    # Prefetch the next tile where the array comes from memory (see strided_forward_tile), and then keep a
    # tile's row to FETCH_TILE_ROW_BYTES.
    cdef bint fetch = outer * K * inner * <Py_ssize_t>sizeof(floating) >= FETCH_DEEP_BYTES
    cdef Py_ssize_t tile = tile_width(outer, K, inner, sizeof(floating), n_threads,
                                      FETCH_TILE_ROW_BYTES if fetch else PY_SSIZE_T_MAX)
    cdef Py_ssize_t n_tiles = (inner + tile - 1) // tile
    cdef Py_ssize_t n_items = outer * n_tiles
    cdef Py_ssize_t it, o, j0
    if n_threads > n_items:
        n_threads = <int>n_items
    if n_threads <= 1:
        for it in range(n_items):
            o = it // n_tiles
            j0 = (it % n_tiles) * tile
            if fetch:
                strided_forward_tile(x + o * x_so + j0, out + o * o_so + j0, K, min(tile, inner - j0),
                                     x_sk, o_sk, log_softmax, <next_tile>0)
            else:
                strided_forward_tile(x + o * x_so + j0, out + o * o_so + j0, K, min(tile, inner - j0),
                                     x_sk, o_sk, log_softmax, <no_fetch>0)
    else:
        for it in prange(n_items, schedule='static', num_threads=n_threads):
            o = it // n_tiles
            j0 = (it % n_tiles) * tile
            if fetch:
                strided_forward_tile(x + o * x_so + j0, out + o * o_so + j0, K, min(tile, inner - j0),
                                     x_sk, o_sk, log_softmax, <next_tile>0)
            else:
                strided_forward_tile(x + o * x_so + j0, out + o * o_so + j0, K, min(tile, inner - j0),
                                     x_sk, o_sk, log_softmax, <no_fetch>0)


cdef void forward_narrow_rows(const floating* x, floating* out, Py_ssize_t n_rows, Py_ssize_t n_cols,
                              Py_ssize_t x_rs, Py_ssize_t o_rs, bint log_softmax, int n_threads) noexcept nogil:
    """Rows of up to NARROW_MAX_BYTES, computed across rows in blocks staged as tiles, the blocks split across
    threads; fewer rows than NARROW_MIN_ROWS one at a time (see _narrow_ops.pxd)."""
    cdef Py_ssize_t width = narrow_block_rows(n_cols, sizeof(floating))
    cdef Py_ssize_t n_blocks = (n_rows + width - 1) // width
    cdef Py_ssize_t b
    if n_rows < NARROW_MIN_ROWS:
        for b in range(n_rows):
            narrow_row(x + b * x_rs, out + b * o_rs, n_cols, log_softmax)
        return
    if n_threads > n_blocks:
        n_threads = <int>n_blocks
    if n_threads <= 1:
        for b in range(n_blocks):
            narrow_forward_block(x + b * width * x_rs, out + b * width * o_rs, min(width, n_rows - b * width),
                                 n_cols, x_rs, o_rs, width, log_softmax)
    else:
        for b in prange(n_blocks, schedule='static', num_threads=n_threads):
            narrow_forward_block(x + b * width * x_rs, out + b * width * o_rs, min(width, n_rows - b * width),
                                 n_cols, x_rs, o_rs, width, log_softmax)


cdef int forward_any(const floating* x, floating* out, Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner,
                     Py_ssize_t x_so, Py_ssize_t x_sk, Py_ssize_t o_so, Py_ssize_t o_sk,
                     bint log_softmax, int n_threads) noexcept nogil:
    if inner == 1:
        if K > CHUNKED_MIN_COLS and outer < SPLIT_MAX_ROWS and n_threads > 1:
            if outer * K >= SPLIT_MIN_ELEMENTS:
                return forward_split_rows(x, out, outer, K, x_so, o_so, log_softmax, n_threads)
            n_threads = 1
        if 0 < K and K * <Py_ssize_t>sizeof(floating) <= NARROW_MAX_BYTES:
            forward_narrow_rows(x, out, outer, K, x_so, o_so, log_softmax, n_threads)
            return 0
        if n_threads > outer:
            n_threads = <int>outer
        forward_rows(x, out, outer, K, x_so, o_so, log_softmax, n_threads)
    else:
        forward_strided(x, out, outer, K, inner, x_so, x_sk, o_so, o_sk, log_softmax, n_threads)
    return 0


# ------------------------------------------------------------------------------------------------------------
# Backward
# ------------------------------------------------------------------------------------------------------------

cdef inline void backward_row(const floating* g, const floating* y, floating* out, Py_ssize_t n,
                              bint log_softmax) noexcept nogil:
    if floating is float:
        # Short float32 rows: the 16-lane dot product (row_dot_short; row_dot's 32 lanes leave rows under 32
        # to its scalar tail).
        if n <= SHORT_SUM_F32:
            if log_softmax:
                log_softmax_grad_row(g, y, out, n, <float>row_dot_short(g, <const float*>NULL, n, False))
            else:
                softmax_grad_row(g, y, out, n, <float>row_dot_short(g, y, n, True))
            return
    if log_softmax:
        log_softmax_grad_row(g, y, out, n, <floating>row_dot(g, <const floating*>NULL, n))
    else:
        softmax_grad_row(g, y, out, n, <floating>row_dot(g, y, n))


cdef inline void log_backward_row_fetching(const floating* g, const floating* y, floating* out,
                                           Py_ssize_t n) noexcept nogil:
    """backward_row of log_softmax_backward for rows that come from memory (log_softmax_grad_row_fetching). A
    function of its own, so that backward_row (and softmax_backward) compiles as before: with a fetch flag,
    softmax_backward on short rows was 3-6% slower."""
    cdef floating total
    if floating is float and n <= SHORT_SUM_F32:
        total = <floating>row_dot_short(g, <const float*>NULL, n, False)
    else:
        total = <floating>row_dot(g, <const floating*>NULL, n)
    log_softmax_grad_row_fetching(g, y, out, n, total)


cdef inline void backward_tile(const floating* g, const floating* y, floating* out, Py_ssize_t it,
                               Py_ssize_t n_tiles, Py_ssize_t tile, Py_ssize_t K, Py_ssize_t inner,
                               Py_ssize_t g_so, Py_ssize_t g_sk, Py_ssize_t y_so, Py_ssize_t y_sk, Py_ssize_t o_so,
                               Py_ssize_t o_sk, bint log_softmax, bint fetch) noexcept nogil:
    """Work item `it` of the strided backward pass: tile it % n_tiles of slab it // n_tiles."""
    cdef Py_ssize_t o = it // n_tiles
    cdef Py_ssize_t j0 = (it % n_tiles) * tile
    if fetch:
        strided_backward_tile(g + o * g_so + j0, y + o * y_so + j0, out + o * o_so + j0, K, min(tile, inner - j0),
                              g_sk, y_sk, o_sk, True, <next_tile>0)
    else:
        strided_backward_tile(g + o * g_so + j0, y + o * y_so + j0, out + o * o_so + j0, K, min(tile, inner - j0),
                              g_sk, y_sk, o_sk, log_softmax, <no_fetch>0)


cdef void softmax_backward_rows_short(const float* g, const float* y, float* out, Py_ssize_t outer,
                                     Py_ssize_t n, Py_ssize_t g_rs, Py_ssize_t y_rs, Py_ssize_t o_rs,
                                     int n_threads, bint fetch) noexcept nogil:
    """softmax_backward over float32 rows of up to SHORT_SUM_F32 (softmax_backward_short):
    the row loop and the row's passes inlined together, the dot product without a prefetch inside it. With fetch
    (rows of up to SHORT_FETCH_MAX_COLS that come from memory), each row first prefetches the lines
    FETCH_AHEAD_BYTES ahead of its g and y in one burst, as the forward max pass does for such rows. The literal
    flags keep both loops free of a test per row."""
    cdef Py_ssize_t r
    if fetch:
        if n_threads <= 1:
            for r in range(outer):
                softmax_backward_short(g + r * g_rs, y + r * y_rs, out + r * o_rs, n, True)
        else:
            for r in prange(outer, schedule='static', num_threads=n_threads):
                softmax_backward_short(g + r * g_rs, y + r * y_rs, out + r * o_rs, n, True)
    elif n_threads <= 1:
        for r in range(outer):
            softmax_backward_short(g + r * g_rs, y + r * y_rs, out + r * o_rs, n, False)
    else:
        for r in prange(outer, schedule='static', num_threads=n_threads):
            softmax_backward_short(g + r * g_rs, y + r * y_rs, out + r * o_rs, n, False)


# log_softmax_backward over float32 rows of 13-63 elements (narrower rows take the staged
# blocks, backward_narrow_rows) goes a block of rows at a time: exp(y) of the whole block in one loop into an L1
# buffer, then each row's sum(g) and g - exp(y) * sum. Row by row, each row's exp loop paid its own setup and
# an element-wise tail (a row of 31 took three times a row of 32). The same operations on each element as
# backward_row's: a row's bits do not depend on its block. Measured (Zen 5, A/B, against backward_row): 8192x13
# 1.9-2.0x faster, 8192x20 1.5-1.7x, 8192x31 and 8192x28 1.5x, 4096x16 1.15-1.45x, 4096x33 1.05-1.3x, 4096x48
# 0.96-1.2x, 4096x63 1.27-1.35x; from memory (with the prefetch below) 65536x16 1.02x at T=1 and 1.4x at T=2,
# 65536x48 1.08-1.10x, 65536x63 1.35-1.50x. Rows of 64 and more stay with backward_row: 24576x128 0.64x,
# 4096x256 0.8-0.9x this way. First taken in the AVX-512 build only; the AVX2 build on Zen 3 (A/B, against
# backward_row) measured 8192x13 1.31x, 8192x20 1.46x, 4096x31 1.51x, 4096x63 1.71x, 65536x31-65536x63
# 1.63-1.71x (T=2 1.67x), and the baseline build 1.14-1.25x.
cdef enum:
    # Elements of y per block: the exp buffer (8 KiB) stays in L1.
    LOG_BACKWARD_BLOCK = 2048
    LOG_BLOCK_MAX_COLS = 63


cdef inline void log_backward_block(const float* g, const float* y, float* out, Py_ssize_t rows, Py_ssize_t n,
                                    Py_ssize_t g_rs, Py_ssize_t y_rs, Py_ssize_t o_rs, bint fetch) noexcept nogil:
    """log_softmax_backward of `rows` rows of n (rows * n <= LOG_BACKWARD_BLOCK): exp(y) of all of them first
    (one loop where the rows are back to back, else one per row), then row by row. out may be g or y (a row's g
    is read before its result is written; y is read first). With fetch (rows back to back, from
    FETCH_MIN_BYTES), the exp loop prefetches g, y and (for writing) out FETCH_AHEAD_BYTES ahead, about a
    block's length (a block is at most 8 KiB of y), as log_softmax_grad_row_fetching does for a row."""
    cdef float e[LOG_BACKWARD_BLOCK]
    cdef float total
    cdef Py_ssize_t per = LINE_F32 * STEP_LINES
    cdef Py_ssize_t size = rows * n
    cdef Py_ssize_t done = size - size % per
    cdef Py_ssize_t r, j, k, l
    if fetch:
        for k in range(done // per):
            for l in range(STEP_LINES):
                fetch_line(y + k * per + l * LINE_F32)
                fetch_line(g + k * per + l * LINE_F32)
                fetch_line_w(out + k * per + l * LINE_F32)
            for j in range(per):
                e[k * per + j] = exp_(y[k * per + j])
        for j in range(done, size):
            e[j] = exp_(y[j])
    elif y_rs == n:
        for j in range(size):
            e[j] = exp_(y[j])
    else:
        for r in range(rows):
            for j in range(n):
                e[r * n + j] = exp_(y[r * y_rs + j])
    for r in range(rows):
        total = <float>row_dot_short(g + r * g_rs, <const float*>NULL, n, False)
        for j in range(n):
            out[r * o_rs + j] = g[r * g_rs + j] - e[r * n + j] * total


cdef void log_backward_rows_blocked(const float* g, const float* y, float* out, Py_ssize_t outer, Py_ssize_t n,
                                    Py_ssize_t g_rs, Py_ssize_t y_rs, Py_ssize_t o_rs, int n_threads,
                                    bint fetch) noexcept nogil:
    """log_softmax_backward over rows of up to LOG_BLOCK_MAX_COLS, in blocks of rows (log_backward_block) split
    across threads. fetch: rows back to back from FETCH_MIN_BYTES (see backward_any)."""
    cdef Py_ssize_t per = LOG_BACKWARD_BLOCK // n
    cdef Py_ssize_t n_blocks = (outer + per - 1) // per
    cdef Py_ssize_t b
    if n_threads > n_blocks:
        n_threads = <int>n_blocks
    # Literal flags: each loop without a test per block.
    if n_threads <= 1:
        if fetch:
            for b in range(n_blocks):
                log_backward_block(g + b * per * g_rs, y + b * per * y_rs, out + b * per * o_rs,
                                   min(per, outer - b * per), n, g_rs, y_rs, o_rs, True)
        else:
            for b in range(n_blocks):
                log_backward_block(g + b * per * g_rs, y + b * per * y_rs, out + b * per * o_rs,
                                   min(per, outer - b * per), n, g_rs, y_rs, o_rs, False)
    elif fetch:
        for b in prange(n_blocks, schedule='static', num_threads=n_threads):
            log_backward_block(g + b * per * g_rs, y + b * per * y_rs, out + b * per * o_rs,
                               min(per, outer - b * per), n, g_rs, y_rs, o_rs, True)
    else:
        for b in prange(n_blocks, schedule='static', num_threads=n_threads):
            log_backward_block(g + b * per * g_rs, y + b * per * y_rs, out + b * per * o_rs,
                               min(per, outer - b * per), n, g_rs, y_rs, o_rs, False)


cdef void backward_narrow_rows(const floating* g, const floating* y, floating* out, Py_ssize_t n_rows,
                               Py_ssize_t n_cols, Py_ssize_t g_rs, Py_ssize_t y_rs, Py_ssize_t o_rs, bint log_softmax,
                               int n_threads) noexcept nogil:
    """The backward passes over narrow rows (NARROW_BACKWARD_MAX_BYTES, NARROW_LOG_BACKWARD_MAX_BYTES), as
    forward_narrow_rows."""
    cdef Py_ssize_t width = narrow_block_rows(n_cols, sizeof(floating))
    cdef Py_ssize_t n_blocks = (n_rows + width - 1) // width
    cdef Py_ssize_t b
    if n_rows < NARROW_MIN_ROWS:
        for b in range(n_rows):
            narrow_backward_row(g + b * g_rs, y + b * y_rs, out + b * o_rs, n_cols, log_softmax)
        return
    if n_threads > n_blocks:
        n_threads = <int>n_blocks
    if n_threads <= 1:
        for b in range(n_blocks):
            narrow_backward_block(g + b * width * g_rs, y + b * width * y_rs, out + b * width * o_rs,
                                  min(width, n_rows - b * width), n_cols, g_rs, y_rs, o_rs, width, log_softmax)
    else:
        for b in prange(n_blocks, schedule='static', num_threads=n_threads):
            narrow_backward_block(g + b * width * g_rs, y + b * width * y_rs, out + b * width * o_rs,
                                  min(width, n_rows - b * width), n_cols, g_rs, y_rs, o_rs, width, log_softmax)


cdef void backward_any(const floating* g, const floating* y, floating* out, Py_ssize_t outer, Py_ssize_t K,
                       Py_ssize_t inner, Py_ssize_t g_so, Py_ssize_t g_sk, Py_ssize_t y_so, Py_ssize_t y_sk,
                       Py_ssize_t o_so, Py_ssize_t o_sk, bint log_softmax, int n_threads) noexcept nogil:
    cdef Py_ssize_t r, it, tile, n_tiles, n_items
    cdef bint fetch, short_fetch
    if not log_softmax and outer * K * inner < SOFTMAX_BACKWARD_PARALLEL_MIN:
        n_threads = 1
    if inner == 1:
        # Rows back to back, from FETCH_MIN_BYTES up: log_softmax_backward prefetches (log_softmax_grad_row_fetching).
        fetch = (log_softmax and g_so == K and y_so == K and o_so == K
                 and outer * K * <Py_ssize_t>sizeof(floating) >= FETCH_MIN_BYTES)
        if 0 < K and K * <Py_ssize_t>sizeof(floating) <= (
                NARROW_LOG_BACKWARD_MAX_BYTES if log_softmax else NARROW_BACKWARD_MAX_BYTES):
            backward_narrow_rows(g, y, out, outer, K, g_so, y_so, o_so, log_softmax, n_threads)
            return
        if n_threads > outer:
            n_threads = <int>outer
        if floating is float:
            if K <= LOG_BLOCK_MAX_COLS and log_softmax:
                log_backward_rows_blocked(g, y, out, outer, K, g_so, y_so, o_so, n_threads, fetch)
                return
            if K <= SHORT_SUM_F32 and not log_softmax:
                # Short float32 rows of softmax_backward (see softmax_backward_rows_short). Against backward_row
                # (row_dot's 32 lanes, a scalar tail) on Zen 3, T=1, A/B: the AVX2 build 4096x16 1.94x, 4096x48
                # 2.5x, 4096x63 1.65x, 1024x128 1.33x, 256x197 1.42x, 4096x256 1.35x, 65536x31 1.32x (T=2
                # 1.1-1.36x); the baseline build 1.2-2.4x. The AVX-512 build (DOT_FETCH) prefetches from
                # FETCH_DEEP_BYTES (arrays from memory) at every thread count; the AVX2 build lost 11-19% with
                # that burst (24576x128, 65536x128) and does not (0.96-1.00x of backward_row there). From
                # FETCH_MIN_BYTES at two threads, as it was, the AVX-512 build ran 4096x128-8192x128 1.25-1.45x
                # slower in `fastsoftmax bench` (no out=, torch interleaved; 0.72-0.80x of torch there against
                # 0.97-1.02x without), though 0.95-1.01x with out= in a plain A/B loop.
                short_fetch = (DOT_FETCH and g_so == K and y_so == K
                               and outer * K * <Py_ssize_t>sizeof(floating) >= FETCH_DEEP_BYTES)
                if not short_fetch or K <= SHORT_FETCH_MAX_COLS:
                    softmax_backward_rows_short(g, y, out, outer, K, g_so, y_so, o_so, n_threads, short_fetch)
                    return
        if fetch:
            for r in prange(outer, schedule='static', num_threads=n_threads):
                log_backward_row_fetching(g + r * g_so, y + r * y_so, out + r * o_so, K)
        elif n_threads <= 1:
            for r in range(outer):
                backward_row(g + r * g_so, y + r * y_so, out + r * o_so, K, log_softmax)
        else:
            for r in prange(outer, schedule='static', num_threads=n_threads):
                backward_row(g + r * g_so, y + r * y_so, out + r * o_so, K, log_softmax)
        return
    tile = tile_width(outer, K, inner, sizeof(floating), n_threads, PY_SSIZE_T_MAX)
    n_tiles = (inner + tile - 1) // tile
    n_items = outer * n_tiles
    if n_threads > n_items:
        n_threads = <int>n_items
    # log_softmax_backward on arrays from memory prefetches the next tile (see strided_backward_tile).
    fetch = log_softmax and outer * K * inner * <Py_ssize_t>sizeof(floating) >= FETCH_DEEP_BYTES
    if n_threads <= 1:
        for it in range(n_items):
            backward_tile(g, y, out, it, n_tiles, tile, K, inner, g_so, g_sk, y_so, y_sk, o_so, o_sk, log_softmax,
                          fetch)
    else:
        for it in prange(n_items, schedule='static', num_threads=n_threads):
            backward_tile(g, y, out, it, n_tiles, tile, K, inner, g_so, g_sk, y_so, y_sk, o_so, o_sk, log_softmax,
                          fetch)


# ------------------------------------------------------------------------------------------------------------
# Layout: an array and a run of axes as (outer, K, inner), computed from shape and strides in C (per-call cost
# matters: doing this with np.reshape and np.may_share_memory in Python took ~5 us per call)
# ------------------------------------------------------------------------------------------------------------

cdef struct Layout:
    Py_ssize_t outer, K, inner   # extents
    Py_ssize_t so, sk            # element strides of the outer and reduced axes (inner is contiguous)
    char* lo                     # the byte range the array touches, for the overlap check
    char* hi


cdef bint collapse_dims(cnp.ndarray a, int first, int stop, Py_ssize_t* extent, Py_ssize_t* stride) noexcept:
    """Merge dims first..stop-1 of a into one axis: False if their strides do not allow it without a copy."""
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(a)
    cdef Py_ssize_t n = 1, st = 0, expected = 0
    cdef int d
    for d in range(stop - 1, first - 1, -1):
        if shape[d] == 1:
            continue
        if n == 1:
            st = strides[d]
        elif strides[d] != expected:
            return False
        n *= shape[d]
        expected = st * n
    extent[0] = n
    stride[0] = st
    return True


cdef bint layout_of(cnp.ndarray a, int first, int last, Layout* lay) noexcept:
    """lay = a seen as (outer, K, inner) over axes first..last, inner contiguous. False when that needs a copy,
    when the strides are not whole elements, or when 1 < inner < MIN_STRIDED_INNER (too narrow to vectorize)."""
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a), so, sk, si, d_lo = 0, d_hi = 0
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(a)
    cdef int d
    if not (collapse_dims(a, 0, first, &lay.outer, &so) and collapse_dims(a, first, last + 1, &lay.K, &sk)
            and collapse_dims(a, last + 1, nd, &lay.inner, &si)):
        return False
    if lay.inner > 1 and (si != item or lay.inner < MIN_STRIDED_INNER):
        return False
    if lay.inner == 1 and lay.K > 1 and sk != item:
        return False
    if so % item or sk % item:
        return False
    lay.so = so // item
    lay.sk = sk // item
    for d in range(nd):
        if shape[d] > 1:
            if strides[d] < 0:
                d_lo += strides[d] * (shape[d] - 1)
            else:
                d_hi += strides[d] * (shape[d] - 1)
    lay.lo = <char*>cnp.PyArray_DATA(a) + d_lo
    lay.hi = <char*>cnp.PyArray_DATA(a) + d_hi + item
    return True


cdef bint writable_alongside(Layout* dst, cnp.ndarray out, Layout* src, cnp.ndarray x) noexcept:
    """out may be written while x is read: disjoint memory, or exactly the same elements (in place)."""
    if not cnp.PyArray_ISALIGNED(out):   # a misaligned float pointer is undefined behaviour in C: copy instead
        return False
    if dst.hi <= src.lo or src.hi <= dst.lo:
        return True
    return (cnp.PyArray_DATA(out) == cnp.PyArray_DATA(x) and dst.so == src.so and dst.sk == src.sk
            and dst.outer == src.outer and dst.K == src.K and dst.inner == src.inner)


# ------------------------------------------------------------------------------------------------------------
# Entry points for fastsoftmax._api (Python objects in, GIL released around all numeric work)
# ------------------------------------------------------------------------------------------------------------

def forward_axes(cnp.ndarray x, cnp.ndarray out, int first, int last, bint log_softmax, int num_threads):
    """softmax / log_softmax of x over axes first..last into out, straight from their strides. x and out: the
    same shape and the same aligned, native float32/float64 dtype (checked by the caller); num_threads: a
    validated count, or 0 for the default (see threads_for). Returns False, having done nothing, when a layout
    needs a copy or out partly overlaps x; the caller then copies."""
    cdef Layout lx, lo
    if not (layout_of(x, first, last, &lx) and layout_of(out, first, last, &lo)
            and writable_alongside(&lo, out, &lx, x)):
        return False
    forward_arrays(x, out, lx.outer, lx.K, lx.inner, lx.so, lx.sk, lo.so, lo.sk, log_softmax,
                   threads_for(cnp.PyArray_SIZE(x), num_threads))
    return True


def backward_axes(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, int first, int last, bint log_softmax,
                  int num_threads):
    """The vector-Jacobian product over axes first..last, straight from the strides; False as forward_axes."""
    cdef Layout lg, ly, lo
    if not (layout_of(g, first, last, &lg) and layout_of(y, first, last, &ly) and layout_of(out, first, last, &lo)
            and writable_alongside(&lo, out, &lg, g) and writable_alongside(&lo, out, &ly, y)):
        return False
    backward_arrays(g, y, out, lg.outer, lg.K, lg.inner, lg.so, lg.sk, ly.so, ly.sk, lo.so, lo.sk, log_softmax,
                    threads_for(cnp.PyArray_SIZE(g), num_threads))
    return True


cdef int forward_arrays(cnp.ndarray x, cnp.ndarray out, Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner,
                       Py_ssize_t x_so, Py_ssize_t x_sk, Py_ssize_t o_so, Py_ssize_t o_sk, bint log_softmax,
                       int n_threads) except -1:
    """softmax / log_softmax of x into out. x, out: aligned, native float32 or float64 arrays of one dtype
    (checked by the caller), laid out as (outer, K, inner) with the given element strides, inner contiguous."""
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef int rc
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* op = cnp.PyArray_DATA(out)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            rc = forward_any(<const float*>xp, <float*>op, outer, K, inner, x_so, x_sk, o_so, o_sk,
                             log_softmax, n_threads)
        else:
            rc = forward_any(<const double*>xp, <double*>op, outer, K, inner, x_so, x_sk, o_so, o_sk,
                             log_softmax, n_threads)
    if rc != 0:
        raise MemoryError("fastsoftmax: could not allocate the per-chunk buffers")
    return 0


cdef void backward_arrays(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, Py_ssize_t outer, Py_ssize_t K,
                          Py_ssize_t inner, Py_ssize_t g_so, Py_ssize_t g_sk, Py_ssize_t y_so, Py_ssize_t y_sk,
                          Py_ssize_t o_so, Py_ssize_t o_sk, bint log_softmax, int n_threads) noexcept:
    """Vector-Jacobian product of softmax / log_softmax into out; same layout contract as `forward`."""
    cdef int typenum = cnp.PyArray_TYPE(g)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* op = cnp.PyArray_DATA(out)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            backward_any(<const float*>gp, <const float*>yp, <float*>op, outer, K, inner, g_so, g_sk, y_so, y_sk,
                         o_so, o_sk, log_softmax, n_threads)
        else:
            backward_any(<const double*>gp, <const double*>yp, <double*>op, outer, K, inner, g_so, g_sk, y_so,
                         y_sk, o_so, o_sk, log_softmax, n_threads)


# ------------------------------------------------------------------------------------------------------------
# Threads and the per-call fast paths
# ------------------------------------------------------------------------------------------------------------

cdef int default_thread_count() noexcept:
    """Threads a large call uses by default: set_num_threads' value, else OpenMP's default; a lower
    omp_get_max_threads() in the calling thread (a threadpoolctl limit) caps either."""
    cdef int omp = omp_get_max_threads()
    if default_threads == 0:
        return omp
    return min(default_threads, omp) if omp < openmp_default else default_threads


cdef int threads_for(Py_ssize_t size, int requested) noexcept:
    """Threads for one call on `size` elements: 1 below serial_limit, else `requested` (a num_threads= already
    validated by the caller) or, for 0, the default. The kernels further clamp it to their work items, and run
    split long rows under SPLIT_MIN_ELEMENTS and softmax_backward under SOFTMAX_BACKWARD_PARALLEL_MIN on one
    thread."""
    if size < serial_limit:
        return 1
    return requested if requested > 0 else default_thread_count()


cdef cnp.ndarray new_result(cnp.ndarray like):
    """An uninitialized C-ordered array of like's shape and dtype (the fast paths' result)."""
    if cnp.PyArray_NBYTES(like) >= result_cache_min and result_empty is not None:
        return <cnp.ndarray>result_empty((<object>like).shape, (<object>like).dtype)
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(like), cnp.PyArray_DIMS(like), cnp.PyArray_TYPE(like), 0)


cdef cnp.ndarray plain_lastaxis(object x, object axis):
    """x itself if it is what the fast paths take: a plain, C-contiguous, aligned, native float32 or float64
    ndarray of one or more dimensions, with axis the last one as a plain int; else None."""
    if type(x) is not cnp.ndarray or type(axis) is not int:
        return None
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(a)
    cdef int nd = cnp.PyArray_NDIM(a)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64) or nd == 0:
        return None
    if axis != -1 and axis != nd - 1:
        return None
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)):
        return None
    return a


cdef bint same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    """a and b have one dtype (type number) and one shape."""
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef int d
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(b) or cnp.PyArray_NDIM(b) != nd:
        return False
    for d in range(nd):
        if cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d]:
            return False
    return True


cdef bint same_or_disjoint(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Two C-contiguous arrays of one dtype and shape are the same memory exactly or share none of it (the fast
    paths' version of writable_alongside: for such arrays a common start means the same elements)."""
    cdef char* a_lo = <char*>cnp.PyArray_DATA(a)
    cdef char* b_lo = <char*>cnp.PyArray_DATA(b)
    cdef Py_ssize_t n_bytes = cnp.PyArray_NBYTES(a)
    return a_lo == b_lo or a_lo + n_bytes <= b_lo or b_lo + n_bytes <= a_lo


cdef bint plain_out(object out, cnp.ndarray like) noexcept:
    """out can take a fast path's result for `like` as it is: a plain, writeable, C-contiguous, aligned, native
    ndarray of like's dtype and shape that either is like's memory exactly (in place) or shares none of it.
    Anything else (a mismatch, which the general path reports; a partial overlap, which it copies) is False."""
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    return (same_shape(o, like) and cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISALIGNED(o)
            and cnp.PyArray_ISNOTSWAPPED(o) and cnp.PyArray_ISWRITEABLE(o) and same_or_disjoint(o, like))


def lastaxis(object x, object out, object axis, bint log_softmax, int num_threads):
    """The per-call fast path: softmax / log_softmax over the last axis of a plain array (see plain_lastaxis)
    into a new array, or into `out` when it takes the result as it is (plain_out; None: a new array), with
    num_threads threads (0: the default). Returns None for anything else, and the caller takes the general path.
    Skips the general path's Python-level argument handling, memoryview acquisition and allocation: that is
    most of a call on 1000 elements, and 2-4 us on any size (with out=, about 1.7 us of a 2.8 us call)."""
    cdef cnp.ndarray a = plain_lastaxis(x, axis)
    if a is None:
        return None
    if out is not None and not plain_out(out, a):
        return None
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef cnp.ndarray result = new_result(a) if out is None else <cnp.ndarray>out
    cdef Py_ssize_t size = cnp.PyArray_SIZE(a)
    cdef Py_ssize_t n_cols = cnp.PyArray_DIMS(a)[nd - 1]
    if size == 0:
        return result
    forward_arrays(a, result, size // n_cols, n_cols, 1, n_cols, 1, n_cols, 1, log_softmax,
                   threads_for(size, num_threads))
    return result


def lastaxis_backward(object g, object y, object out, object axis, bint log_softmax, int num_threads):
    """The backward passes' fast path, on the same terms as lastaxis: g and y plain arrays of one float dtype
    and one shape, out None or taking the result as it is for both (plain_out: g's or y's memory exactly, or
    neither's). Returns None for anything else (including mismatches, which the general path reports)."""
    cdef cnp.ndarray a = plain_lastaxis(g, axis)
    cdef cnp.ndarray b = plain_lastaxis(y, axis)
    if a is None or b is None or not same_shape(a, b):
        return None
    if out is not None and not (plain_out(out, a) and same_or_disjoint(<cnp.ndarray>out, b)):
        return None
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef cnp.ndarray result = new_result(a) if out is None else <cnp.ndarray>out
    cdef Py_ssize_t size = cnp.PyArray_SIZE(a)
    cdef Py_ssize_t n_cols = cnp.PyArray_DIMS(a)[nd - 1]
    if size == 0:
        return result
    backward_arrays(a, b, result, size // n_cols, n_cols, 1, n_cols, 1, n_cols, 1, n_cols, 1, log_softmax,
                    threads_for(size, num_threads))
    return result


def set_thread_settings(Py_ssize_t parallel_min_elements, int default, int omp_default):
    """Called by fastsoftmax._threads whenever a setting changes and when a kernel module is loaded."""
    global serial_limit, default_threads, openmp_default
    serial_limit = parallel_min_elements
    default_threads = default
    openmp_default = omp_default


def set_result_allocator(empty, Py_ssize_t min_bytes):
    """Called by fastsoftmax._dispatch: results of min_bytes or more are allocated by empty(shape, dtype)."""
    global result_empty, result_cache_min
    result_empty = empty
    result_cache_min = min_bytes


def default_threads_now():
    """default_thread_count() for the calling thread (fastsoftmax.get_num_threads)."""
    return default_thread_count()


def build_info():
    """Facts fixed when this module was compiled."""
    return {
        "compiler": FSM_COMPILER.decode("ascii", "replace"),
        "openmp": FSM_OPENMP_VERSION != 0,
        "openmp_version": FSM_OPENMP_VERSION,
        # results of this many bytes or more are written with streaming stores by calls on stream_min_threads
        # threads or more
        "large_bytes": LARGE_BYTES,
        "stream_min_threads": STREAM_MIN_THREADS,
    }


def openmp_max_threads():
    """omp_get_max_threads() of the calling thread (1 without OpenMP): honours OMP_NUM_THREADS and
    threadpoolctl's limits."""
    return omp_get_max_threads()

