# Per-row building blocks of the last-axis kernels: one contiguous row in, one contiguous row out.
#
# The reductions keep LANES independent partial results in a small array updated elementwise and combine them at
# the end. gcc does not vectorize a single-accumulator float max or sum without -ffast-math (it may not reorder
# them), but it does vectorize this lane-wise form, which is a reordering we chose explicitly.
from libc.math cimport INFINITY, NAN
from cython cimport floating
from _memory cimport fetch_ahead, fetch_line, fetch_line_w
from _simd_math cimport exp_, exp_shifted_, EXACT_RANGE, EXTREMA_LANES, LANES_F32, LANES_F64, SUM_BLOCK

cdef enum:
    # The size of every lane array: the most lanes any reduction uses (EXTREMA_LANES for the max pass, LANES_F32
    # or LANES_F64 for sums and dot products).
    LANES = 32

# Partial sums start at -0.0, the exact identity of IEEE addition (-0.0 + x == x for every x, +0.0 included).
# Not 0.0: gcc turns zero-filling the lane array into a call to memset (`rep stos`, tens of cycles to start),
# paid once per row.
cdef extern from *:
    """
    #define FSM_SUM_START (-0.0)
    """
    const double SUM_START "FSM_SUM_START"


# How fold_max and fold_min finish for rows (and chunks) of up to SHORT_SUM_F32 elements, of either dtype, in the
# AVX-512 build: from 8 partial results by halves into fresh arrays, 3 dependent steps instead of 7. The fold is
# on the critical path of a short row: with the row pairs (three_pass_row_pairs) 1.015-1.028x faster on float32
# 1024x128 and 24576x128 (T=1 and T=2), log_softmax 1.02x, float64 rows even (Zen 5, A/B). Longer rows fold one
# by one: with the tree on every row, the chunked rows (chunks of 2048) measured 0.97-0.98x, and the AVX2 build,
# which keeps the one-by-one fold, 0.95-0.97x on rows of 1000.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FSM_FOLD_TREE 1
    #else
    #define FSM_FOLD_TREE 0
    #endif
    """
    enum: FOLD_TREE "FSM_FOLD_TREE"


cdef inline floating fold_max(const floating* acc, bint tree) noexcept nogil:
    """Max of the EXTREMA_LANES partial maxima. The first fold goes to 8 lanes in one vector step into a fresh
    array (gcc vectorizes that form; folding in place stayed scalar), then the 8 by halves with tree (and
    FOLD_TREE), else one by one. Written for exactly 32 lanes, as fold_min is: EXTREMA_LANES must stay 32 (a
    generic halving fold measured slower)."""
    cdef floating v[8]
    cdef floating u[4]
    cdef floating t[2]
    cdef floating a, b
    cdef Py_ssize_t j
    for j in range(8):
        a = acc[j] if acc[j] > acc[j + 8] else acc[j + 8]
        b = acc[j + 16] if acc[j + 16] > acc[j + 24] else acc[j + 24]
        a = a if a > b else b
        v[j] = a
    if FOLD_TREE and tree:
        for j in range(4):
            u[j] = v[j] if v[j] > v[j + 4] else v[j + 4]
        for j in range(2):
            t[j] = u[j] if u[j] > u[j + 2] else u[j + 2]
        return t[0] if t[0] > t[1] else t[1]
    a = v[0]
    for j in range(1, 8):
        a = v[j] if v[j] > a else a
    return a


cdef inline floating fold_min(const floating* acc, bint tree) noexcept nogil:
    """Min of the partial minima, as fold_max."""
    cdef floating v[8]
    cdef floating u[4]
    cdef floating t[2]
    cdef floating a, b
    cdef Py_ssize_t j
    for j in range(8):
        a = acc[j] if acc[j] < acc[j + 8] else acc[j + 8]
        b = acc[j + 16] if acc[j + 16] < acc[j + 24] else acc[j + 24]
        a = a if a < b else b
        v[j] = a
    if FOLD_TREE and tree:
        for j in range(4):
            u[j] = v[j] if v[j] < v[j + 4] else v[j + 4]
        for j in range(2):
            t[j] = u[j] if u[j] < u[j + 2] else u[j + 2]
        return t[0] if t[0] < t[1] else t[1]
    a = v[0]
    for j in range(1, 8):
        a = v[j] if v[j] < a else a
    return a


cdef inline double fold_sum(const floating* acc) noexcept nogil:
    """Sum of the partial sums (pairwise), as fold_max; the last 8 are added in double."""
    cdef floating v[8]
    cdef double total = 0.0
    cdef Py_ssize_t j
    for j in range(8):
        if floating is float:
            v[j] = (acc[j] + acc[j + 8]) + (acc[j + 16] + acc[j + 24])
        else:
            v[j] = acc[j] + acc[j + 8]
    for j in range(8):
        total += v[j]
    return total


cdef inline void lane_extrema(const floating* x, Py_ssize_t steps, floating* acc, floating* low, bint want_range,
                              bint fetch) noexcept nogil:
    """The lane-wise max (and with want_range min) of x[:steps * EXTREMA_LANES] into acc (and low): row_max's
    loop."""
    cdef Py_ssize_t lanes = EXTREMA_LANES
    cdef Py_ssize_t i, j
    for i in range(steps):
        if fetch:
            fetch_ahead(x + i * lanes)
        for j in range(lanes):
            acc[j] = x[i * lanes + j] if x[i * lanes + j] > acc[j] else acc[j]
            if want_range:
                low[j] = x[i * lanes + j] if x[i * lanes + j] < low[j] else low[j]


cdef inline floating extrema_result(const floating* x, Py_ssize_t n_main, Py_ssize_t n, const floating* acc,
                                    const floating* low, bint tree, bint want_range, bint* wide) noexcept nogil:
    """How row_max (and row_max_pair) finish a row: its max from the lane maxima acc and the tail x[n_main:n];
    with want_range, *wide from the lane minima low too (else False). tree: fold_max's."""
    cdef floating best = fold_max(acc, tree)
    cdef floating least
    cdef Py_ssize_t i
    wide[0] = False
    if want_range:
        least = fold_min(low, tree)
        for i in range(n_main, n):   # one tail loop for both (two cost the row pairs 4-13% on rows of 197, 48)
            best = x[i] if x[i] > best else best
            least = x[i] if x[i] < least else least
        # NaN or infinite ranges compare False here: those slices come out NaN (or exact) either way.
        wide[0] = not (best - least < EXACT_RANGE)
    else:
        for i in range(n_main, n):
            best = x[i] if x[i] > best else best
    return best


# A max pass's tail of at least EXTREMA_TAIL_MIN elements, in a row of at least EXTREMA_LANES, is one more step
# over the last EXTREMA_LANES elements (the elements before it seen twice); shorter tails, and rows shorter than
# a step, go element by element. Measured (Zen 5, T=1, float32, A/B
# against element by element, with the row pairs): rows of 63 and 57 (31 and 25 left over) 1.22-1.23x faster, 48
# (16) 1.13x, 127 (31) 1.09x, 108-111 (12-15) 1.01-1.03x, 104 (8) 0.99x, 97-100 (1-4) 0.94-0.96x.
cdef enum:
    EXTREMA_TAIL_MIN = 8


cdef inline bint tail_as_step(Py_ssize_t n) noexcept nogil:
    """Whether the max pass (row_max, row_max_pair) finishes a row of n as one more step over its last
    EXTREMA_LANES elements (see EXTREMA_TAIL_MIN): a max and a min do not mind seeing an element twice."""
    return n % EXTREMA_LANES >= EXTREMA_TAIL_MIN and n >= EXTREMA_LANES


cdef inline floating row_max(const floating* x, Py_ssize_t n, bint* wide, bint want_range, bint fetch) noexcept nogil:
    """Largest element of x[:n]; -inf for n == 0. NaN elements are skipped here: they reach the result through
    exp(NaN - max) = NaN in the sum, which makes the whole slice NaN as scipy and torch do.
    With want_range, *wide tells whether max - min >= EXACT_RANGE (then exp needs the exact x - max, see
    _simd_math.pxd); the min rides along in the same pass for one extra vector op per load (1-10% of a row's
    time, measured). Without it, *wide is False. With fetch, the memory FETCH_AHEAD_BYTES ahead is prefetched as
    the pass goes (a later row of a contiguous array; see _memory.pxd)."""
    cdef Py_ssize_t lanes = EXTREMA_LANES
    cdef floating acc[LANES]
    cdef floating low[LANES]
    cdef Py_ssize_t j, n_main = n - n % lanes
    for j in range(lanes):
        acc[j] = -INFINITY
        low[j] = INFINITY
    # Two calls with literal flags: each inlined copy has its loop without a per-step test (gcc neither unswitched
    # nor unrolled the loop with a run-time `if fetch` inside; rows that do not fetch lost 3-5%).
    if fetch:
        lane_extrema(x, n_main // lanes, acc, low, want_range, True)
    else:
        lane_extrema(x, n_main // lanes, acc, low, want_range, False)
    if tail_as_step(n):
        lane_extrema(x + n - lanes, 1, acc, low, want_range, False)
        n_main = n
    return extrema_result(x, n_main, n, acc, low, n <= SHORT_SUM_F32, want_range, wide)


cdef inline void lane_extrema_pair(const float* x0, const float* x1, Py_ssize_t steps, float* acc0, float* low0,
                                   float* acc1, float* low1, bint fetch) noexcept nogil:
    """lane_extrema (with want_range) of two rows in one loop: row_max_pair's loop."""
    cdef Py_ssize_t lanes = EXTREMA_LANES
    cdef Py_ssize_t i, j
    for i in range(steps):
        if fetch:
            fetch_ahead(x0 + i * lanes)
            fetch_ahead(x1 + i * lanes)
        for j in range(lanes):
            acc0[j] = x0[i * lanes + j] if x0[i * lanes + j] > acc0[j] else acc0[j]
            low0[j] = x0[i * lanes + j] if x0[i * lanes + j] < low0[j] else low0[j]
            acc1[j] = x1[i * lanes + j] if x1[i * lanes + j] > acc1[j] else acc1[j]
            low1[j] = x1[i * lanes + j] if x1[i * lanes + j] < low1[j] else low1[j]


cdef inline void row_max_pair(const float* x0, const float* x1, Py_ssize_t n, float* top0, float* top1,
                              bint* wide0, bint* wide1, bint fetch) noexcept nogil:
    """row_max(x0) and row_max(x1), with want_range, for two float32 rows of n <= SHORT_SUM_F32 in one loop (the
    row pairs, three_pass_row_pairs in _kernels.pxi): one loop and one call instead of two, the two rows' compare
    chains side by side. The same maxima and flags as row_max (a max and a min do not depend on their order).
    Measured (Zen 5, A/B, against two row_max calls, three series): 24576x128 1.03-1.05x, 8192x128 1.03-1.04x,
    256x197 1.03x, 10000x48 1.13-1.17x, 65536x100 1.02x, 4096x64 0.96-1.04x, 1024x128 1.00x at T=1; 1.03-1.05x
    at T=2; log_softmax 1.00-1.02x."""
    cdef Py_ssize_t lanes = EXTREMA_LANES
    cdef float acc0[LANES]
    cdef float low0[LANES]
    cdef float acc1[LANES]
    cdef float low1[LANES]
    cdef Py_ssize_t j, n_main = n - n % lanes
    for j in range(lanes):
        acc0[j] = -INFINITY
        low0[j] = INFINITY
        acc1[j] = -INFINITY
        low1[j] = INFINITY
    # Two calls with literal flags, as row_max makes (no test per step inside the loop).
    if fetch:
        lane_extrema_pair(x0, x1, n_main // lanes, acc0, low0, acc1, low1, True)
    else:
        lane_extrema_pair(x0, x1, n_main // lanes, acc0, low0, acc1, low1, False)
    if tail_as_step(n):
        lane_extrema_pair(x0 + n - lanes, x1 + n - lanes, 1, acc0, low0, acc1, low1, False)
        n_main = n
    top0[0] = extrema_result(x0, n_main, n, acc0, low0, True, True, wide0)
    top1[0] = extrema_result(x1, n_main, n, acc1, low1, True, True, wide1)


# The step of exp_lines, in 64-byte cache lines: one, or two in the AVX-512 build. There one line is a single zmm
# vector, and gcc compiled a one-vector inner loop as straight-line code inside a scalar outer loop, re-broadcasting
# exp's 11 constants and re-checking x against dst for overlap on every step (39 instructions per vector instead
# of 22). Two lines make it a loop it vectorizes like the others: 1.07x faster on 8-16 MB float32 arrays, 1.04x
# float64, log_softmax 1.02x (Zen 5, T=1, A/B); four lines were as fast on softmax but lost 3-13% on log_softmax.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FSM_STEP_LINES 2
    #else
    #define FSM_STEP_LINES 1
    #endif
    """
    enum: STEP_LINES "FSM_STEP_LINES"

cdef enum:
    # Elements per 64-byte cache line.
    LINE_F32 = 16
    LINE_F64 = 8


cdef inline void exp_lines(const floating* x, floating* dst, Py_ssize_t steps, floating shift,
                           bint exact, const floating* row_out) noexcept nogil:
    """dst = exp(x - shift) over `steps` steps of STEP_LINES cache lines of x, each step prefetching the lines
    FETCH_AHEAD_BYTES ahead of x (a later row of a contiguous array, see _memory.pxd) and, for writing, of
    row_out (the row's result, where the later row's result goes). A step's elements are one inner loop that gcc
    unrolls into straight vector code (two AVX2 vectors, two AVX-512) with the constants kept in registers.
    Prefetching the result too: a result from memory is read for ownership before each store, and log_softmax
    stores only in its last pass, which has too little arithmetic to hide those misses. Measured (Zen 5, T=1,
    A/B, against x alone): log_softmax 4096x1000 float32 1.11-1.75x, 2048x2000 1.10-1.36x, 2048x1001 1.37-1.40x
    (T=2 1.30-1.59x; the AVX2 build 1.22-1.34x); softmax 1.19-1.40x (T=2 1.12-1.13x, AVX2 1.07x), float64
    1.05-1.12x; 24576x128 and 256 MB (streamed, row_out is then the L1 buffer) even."""
    cdef Py_ssize_t line = LINE_F32 if floating is float else LINE_F64
    cdef Py_ssize_t per = line * STEP_LINES
    cdef Py_ssize_t j, k, l
    for k in range(steps):
        for l in range(STEP_LINES):
            fetch_line(x + k * per + l * line)
            fetch_line_w(row_out + k * per + l * line)
        for j in range(per):
            dst[k * per + j] = exp_shifted_(x[k * per + j], shift, exact)


cdef inline void exp_shifted_block(const floating* x, floating* dst, Py_ssize_t n,
                                   floating shift, bint exact) noexcept nogil:
    """dst = exp(x - shift) for n <= SUM_BLOCK elements. A plain loop on purpose: it is the form gcc vectorizes
    with every constant of exp hoisted into registers (a nest over 32 lanes re-broadcast them per step)."""
    cdef Py_ssize_t i
    if exact:
        for i in range(n):
            dst[i] = exp_shifted_(x[i], shift, True)
    else:
        for i in range(n):
            dst[i] = exp_shifted_(x[i], shift, False)


cdef inline void exp_shifted_block_fetching(const floating* x, floating* dst, Py_ssize_t n,
                                            floating shift, bint exact, const floating* row_out) noexcept nogil:
    """exp_shifted_block, prefetching a line FETCH_AHEAD_BYTES ahead per line of x and of row_out (exp_lines): the
    exp pass is most of a row's time, so prefetches issued from it are spread thinly enough to all be in flight.
    Separate from exp_shifted_block so that the common path stays small enough for gcc to inline."""
    cdef Py_ssize_t i, per = (LINE_F32 if floating is float else LINE_F64) * STEP_LINES
    cdef Py_ssize_t done = n - n % per
    if exact:
        exp_lines(x, dst, done // per, shift, True, row_out)
        for i in range(done, n):
            dst[i] = exp_shifted_(x[i], shift, True)
    else:
        exp_lines(x, dst, done // per, shift, False, row_out)
        for i in range(done, n):
            dst[i] = exp_shifted_(x[i], shift, False)


cdef inline double lane_sum(const floating* v, floating* out, Py_ssize_t n) noexcept nogil:
    """sum(v[:n]) lane-wise; with out != NULL, v is also copied to out (fused: v is read once, from L1)."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef double total = 0.0
    cdef Py_ssize_t i, j, k, n_main = n - n % lanes
    for j in range(lanes):
        acc[j] = SUM_START
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


# float32 rows of up to SHORT_ROW_F32 elements compute exp and its sum in one loop, into SHORT_LANES_F32 partial
# sums (one AVX2 vector). Each partial sum adds at most 32 terms, as each of lane_sum's 32 lanes does over a
# SUM_BLOCK, so short rows are as accurate as long ones. Not in the AVX-512 build: there gcc runs this loop on
# ymm (with 8 lanes) or keeps the sums in memory (with 16): 0.6-0.94x the two zmm loops on Zen 5. That build sums
# short rows with exp_sum_short_lanes instead.
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FSM_SHORT_ROW_F32 0
    #else
    #define FSM_SHORT_ROW_F32 256
    #endif
    """
    enum: SHORT_ROW_F32 "FSM_SHORT_ROW_F32"

cdef enum:
    SHORT_LANES_F32 = 8


cdef inline void exp_into_lanes(const float* x, float* dst, Py_ssize_t steps, float shift, float* acc,
                                bint exact, bint store) noexcept nogil:
    """acc[j] += exp(x[k * SHORT_LANES_F32 + j] - shift) over k < steps, also written to dst with store:
    exp_sum_short's loop, inlined once per combination of literal flags (no test inside the loop)."""
    cdef float e
    cdef Py_ssize_t j, k
    for k in range(steps):
        for j in range(SHORT_LANES_F32):
            e = exp_shifted_(x[k * SHORT_LANES_F32 + j], shift, exact)
            if store:
                dst[k * SHORT_LANES_F32 + j] = e
            acc[j] += e


cdef inline double exp_sum_short(const float* x, float* dst, Py_ssize_t n, float shift, bint exact,
                                 bint store) noexcept nogil:
    """sum(exp(x - shift)) for a float32 row of n <= SHORT_ROW_F32 elements, with store also written to dst, in
    one pass instead of an exp loop and a summing pass over dst: 1.05-1.17x faster on rows of 128-256 (AVX2,
    T=1, A/B), and without the stores (log_softmax) 1.02-1.07x faster again."""
    cdef float acc[SHORT_LANES_F32]
    cdef float e
    cdef double total = 0.0
    cdef Py_ssize_t i, j, steps = n // SHORT_LANES_F32
    for j in range(SHORT_LANES_F32):
        acc[j] = SUM_START
    if exact:
        if store:
            exp_into_lanes(x, dst, steps, shift, acc, True, True)
        else:
            exp_into_lanes(x, dst, steps, shift, acc, True, False)
    else:
        if store:
            exp_into_lanes(x, dst, steps, shift, acc, False, True)
        else:
            exp_into_lanes(x, dst, steps, shift, acc, False, False)
    for j in range(SHORT_LANES_F32):
        total += acc[j]
    for i in range(steps * SHORT_LANES_F32, n):
        e = exp_shifted_(x[i], shift, exact)
        if store:
            dst[i] = e
        total += e
    return total


# float32 rows of up to SHORT_SUM_F32 elements in the AVX-512 build (which has no exp_sum_short, SHORT_ROW_F32 == 0)
# sum their exp terms into SHORT_SUM_LANES lanes, one zmm vector, folded as a tree in float: 32 lanes cost a
# scalar fold of 32 loads and 24 adds per row, about a fifth of a 128-element row's time (measured by leaving it
# out). Each lane adds at most 16 terms, and the tree 4 more roundings: well inside float32's error budget.
# Measured (Zen 5, A/B): softmax 24576x128, 1024x128, 256x197 1.09-1.12x faster at T=1 (with out= too), 1.05-1.12x
# at T=2; log_softmax 1.09-1.17x. Up to 1024 elements (with 16 or 32 lanes) was 0.97-1.05x: not taken.
cdef enum:
    SHORT_SUM_F32 = 256
    SHORT_SUM_LANES = 16


cdef inline double fold_sum_short(const float* acc) noexcept nogil:
    """Sum of SHORT_SUM_LANES partial sums, halving into fresh arrays (the form gcc vectorizes); the last two
    added in double."""
    cdef float w[8]
    cdef float u[4]
    cdef float t[2]
    cdef Py_ssize_t j
    for j in range(8):
        w[j] = acc[j] + acc[j + 8]
    for j in range(4):
        u[j] = w[j] + w[j + 4]
    for j in range(2):
        t[j] = u[j] + u[j + 2]
    return <double>t[0] + <double>t[1]


cdef inline double lane_sum_short(const float* v, Py_ssize_t n, const float* tail) noexcept nogil:
    """sum(v[:n]) for n <= SHORT_SUM_F32 in SHORT_SUM_LANES lanes, the lanes folded by halves into fresh arrays
    (the form gcc vectorizes). lane_sum's loop with other lanes and another fold, kept apart on purpose: chosen
    inside lane_sum, the branch made exp_shifted_sum too large for gcc to inline into the chunked kernel
    (32x128256 0.86x). tail, where not NULL: the lanes of a part step computed as one more vector (see
    exp_sum_short_tailed), added lane by lane before the fold; v[:n] then holds the whole steps only."""
    cdef float acc[SHORT_SUM_LANES]
    cdef double rest = 0.0
    cdef Py_ssize_t i, j, k, n_main = n - n % SHORT_SUM_LANES
    for j in range(SHORT_SUM_LANES):
        acc[j] = SUM_START
    for k in range(n_main // SHORT_SUM_LANES):
        i = k * SHORT_SUM_LANES
        for j in range(SHORT_SUM_LANES):
            acc[j] += v[i + j]
    if tail != NULL:
        for j in range(min(<Py_ssize_t>SHORT_SUM_LANES, n)):
            acc[j] += tail[j]
        return fold_sum_short(acc)
    # The part step in a sum of its own, added to the folded lanes last: a chain of dependent adds that runs
    # beside the lanes' adds and fold instead of after them.
    for i in range(n_main, n):
        rest += v[i]
    return fold_sum_short(acc) + rest


# A short row's last part step (exp_sum_short_lanes) of at least TAIL_VECTOR_MIN elements is computed as one more
# vector over the row's last SHORT_SUM_LANES elements; shorter part steps keep gcc's element-wise epilogue.
# Measured (Zen 5, T=1, against the epilogue): rows of 111, 127 and 63 (15 left over) 1.15-1.48x faster, 108-110
# and 60 (12-14) 1.09-1.14x, 107 (11) 1.05x, 105-106 and 121 (9-10) 0.96-1.01x, 97-104 (1-8) 0.82-0.93x: the
# vector costs about as much whatever its fill, the epilogue by element.
cdef enum:
    TAIL_VECTOR_MIN = 12


cdef inline Py_ssize_t short_steps_length(Py_ssize_t n) noexcept nogil:
    """How many of a short row's n elements go through the exp loop, the rest (n - this) through the tail
    vector (exp_tail_vector): the whole SHORT_SUM_LANES steps where the part step takes the vector
    (TAIL_VECTOR_MIN, rows of SHORT_SUM_LANES or more), else all n."""
    cdef Py_ssize_t n_main = n - n % SHORT_SUM_LANES
    if n < SHORT_SUM_LANES:   # no whole step for the tail vector to follow (rows this short are narrow rows)
        return n
    return n_main if n - n_main >= TAIL_VECTOR_MIN else n


cdef inline void exp_tail_vector(const float* x, float* tail, Py_ssize_t n, Py_ssize_t n_dst,
                                 float shift) noexcept nogil:
    """The part step of a short row of n >= SHORT_SUM_LANES (see short_steps_length) as one more vector:
    tail[:t] = exp(x[n - t:n] - shift), t = SHORT_SUM_LANES, the lanes that repeat elements before n_dst set to
    SUM_START (they add nothing to the sum). Always the exact exp (see row_max), so that one copy of the loop
    serves every row: with a copy per exp variant gcc stopped inlining exp_shifted_sum_fetching into the chunked
    kernel. A buffer of its own: written as a last vector of the row overlapping its previous one, the loads of
    the sum stalled on the overlapping stores (rows of 100 and 113 0.7x). t is written min(SHORT_SUM_LANES, n),
    not as the constant: a loop of constant trip count gcc unrolled completely and left scalar."""
    cdef Py_ssize_t t = min(<Py_ssize_t>SHORT_SUM_LANES, n)
    cdef Py_ssize_t base = n - t
    cdef Py_ssize_t j
    cdef float e
    for j in range(t):
        e = exp_shifted_(x[base + j], shift, True)
        tail[j] = e if base + j >= n_dst else SUM_START


cdef inline double exp_sum_short_lanes(const float* x, float* out, Py_ssize_t n, float shift, bint store,
                                       bint exact, bint fetch) noexcept nogil:
    """exp_shifted_sum (or _fetching) for a float32 row of n <= SHORT_SUM_F32 in the AVX-512 build: the terms go
    to out (softmax into another buffer) or to an L1 buffer (log_softmax, in place), and lane_sum_short sums
    them."""
    cdef float buf[SHORT_SUM_F32]
    cdef bint direct = store and <const float*>out != x
    cdef float* dst = out if direct else buf
    cdef Py_ssize_t i
    cdef double total
    if fetch:
        exp_shifted_block_fetching(x, dst, n, shift, exact, out)
    else:
        exp_shifted_block(x, dst, n, shift, exact)
    total = lane_sum_short(dst, n, NULL)
    if store and not direct:
        for i in range(n):
            out[i] = buf[i]
    return total


cdef inline double exp_sum_short_tailed(const float* x, float* out, Py_ssize_t n, float shift, bint store,
                                       bint exact, bint fetch) noexcept nogil:
    """exp_sum_short_lanes for the rows whose part step is computed as one more vector (short_steps_length(n)
    < n, exp_tail_vector): its terms are stored to the row after the sum. A function of its own: as a branch
    of exp_sum_short_lanes it made the other rows 1-9% slower (rows of 64, 96, 128; gcc spilled more around
    their loops)."""
    cdef float buf[SHORT_SUM_F32]
    cdef float tail[SHORT_SUM_LANES]
    cdef bint direct = store and <const float*>out != x
    cdef float* dst = out if direct else buf
    cdef Py_ssize_t n_dst = short_steps_length(n)
    cdef Py_ssize_t base = n - SHORT_SUM_LANES   # where tail[0] is (n >= SHORT_SUM_LANES here)
    cdef double total
    cdef Py_ssize_t i
    exp_tail_vector(x, tail, n, n_dst, shift)
    if fetch:
        exp_shifted_block_fetching(x, dst, n_dst, shift, exact, out)
    else:
        exp_shifted_block(x, dst, n_dst, shift, exact)
    total = lane_sum_short(dst, n_dst, tail)
    if store:
        for i in range(n_dst, n):
            dst[i] = tail[i - base]
        if not direct:
            for i in range(n):
                out[i] = buf[i]
    return total


cdef inline double exp_shifted_sum_buffered(const floating* x, floating* out, Py_ssize_t n, floating shift,
                                           bint store, bint exact, bint fetch) noexcept nogil:
    """exp_shifted_sum through an L1 stack buffer: for log_softmax (nothing stored) and in place (out == x),
    because gcc's vectorized loop needs non-overlapping pointers (its runtime alias check would send an in-place
    row down the scalar path). fetch: prefetch from the exp loop (see exp_shifted_sum_fetching)."""
    cdef floating buf[SUM_BLOCK]
    cdef double total = 0.0
    cdef Py_ssize_t blk, start, length, i
    if floating is float:
        if n <= SHORT_ROW_F32:
            if not store:
                return exp_sum_short(x, buf, n, shift, exact, False)
            total = exp_sum_short(x, buf, n, shift, exact, True)
            for i in range(n):
                out[i] = buf[i]
            return total
    for blk in range((n + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        length = min(SUM_BLOCK, n - start)
        if fetch:
            exp_shifted_block_fetching(x + start, buf, length, shift, exact, out + start)
        else:
            exp_shifted_block(x + start, buf, length, shift, exact)
        total += lane_sum(buf, out + start if store else NULL, length)
    return total


# gcc inlines exp_shifted_sum into the row loops only while they stay small (see its docstring). In the AVX2 and
# baseline builds an unrelated branch added to forward_rows (one-thread streaming, which only the AVX-512 build
# takes) tipped that decision: the float32 copy went out of line, a call per row, and float32 rows of 48-256 got
# 5-12% slower (Zen 3, AVX2, T=1, A/B: ns per row of 64 53.4 -> 48.6, 128 86.5 -> 77.6, 256 149 -> 142; 2048x2000
# 1.12x, 24576x128 1.08x). So it is asked for here by its C name (Cython's, for the float32 specialization;
# tests/test_simd.py fails if an out-of-line copy comes back). Not in the AVX-512 build: its short rows take the
# row pairs, and its longer rows were measured with this call out of line.
cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__AVX512F__)
    static __inline__ double __pyx_fuse_0__pyx_f_8_row_ops_exp_shifted_sum(float const *, float *, Py_ssize_t, float,
                                                                           int, int) __attribute__((always_inline));
    #endif
    """


cdef inline double exp_shifted_sum(const floating* x, floating* out, Py_ssize_t n, floating shift,
                                   bint store, bint exact) noexcept nogil:
    """Sum of exp(x[i] - shift) (every x[i] - shift <= 0 or NaN), in SUM_BLOCK pieces whose lane-wise sums are
    flushed into a double (so 200 000-element float32 rows stay accurate). With store, exp(x[i] - shift) is also
    written to out[i]. exact: carry x - shift's rounding error (see row_max). The common case (softmax into
    another buffer) writes exp straight to out and stays small enough for gcc to inline (5-10% on short rows,
    measured); the other cases go through exp_shifted_sum_buffered."""
    cdef double total = 0.0
    cdef Py_ssize_t blk, start, length
    if not store or <const floating*>out == x:
        return exp_shifted_sum_buffered(x, out, n, shift, store, exact, False)
    if floating is float:
        if n <= SHORT_ROW_F32:
            return exp_sum_short(x, out, n, shift, exact, True)
    for blk in range((n + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        length = min(SUM_BLOCK, n - start)
        exp_shifted_block(x + start, out + start, length, shift, exact)
        total += lane_sum(out + start, NULL, length)
    return total


cdef inline double exp_shifted_sum_fetching(const floating* x, floating* out, Py_ssize_t n, floating shift,
                                            bint store, bint exact) noexcept nogil:
    """exp_shifted_sum for rows of an array that comes from memory, prefetching FETCH_AHEAD_BYTES ahead from the exp
    loop, x and (for writing) out: a later row (see row_fetch in _kernels.pxi), or for log_softmax's chunks the next
    chunk (chunk_exp_sum). The arithmetic is exp_shifted_sum's for the rows it gets (float32 rows short enough for
    exp_sum_short, which has no prefetching loop, sum as exp_shifted_sum's do). A function of its own so that
    exp_shifted_sum stays small enough for gcc to inline: it inlines it only while it is small and called from few
    places, and when the prefetching path was a flag of it, rows of 128-1000 in cache were 4-14% slower."""
    cdef double total = 0.0
    cdef Py_ssize_t blk, start, length
    if not store or <const floating*>out == x:
        return exp_shifted_sum_buffered(x, out, n, shift, store, exact, True)
    for blk in range((n + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        length = min(SUM_BLOCK, n - start)
        exp_shifted_block_fetching(x + start, out + start, length, shift, exact, out + start)
        total += lane_sum(out + start, NULL, length)
    return total


# ---- Chunked rows: two passes over rows too long for L1 -------------------------------------------------------
# Phase 1, per chunk: the chunk max m_c (read from memory) and exp(x - m_c) stored and summed (read from L1).
# Phase 2, per chunk: scale by exp(m_c - M) / S, where M = max m_c and S = sum of s_c exp(m_c - M).
# Two reads and two writes of the row instead of the three-pass kernel's three reads, one exp per element.

cdef inline double chunk_exp_sum(const floating* x, floating* out, Py_ssize_t n, bint store,
                                 floating* chunk_top) noexcept nogil:
    """Phase 1 on one chunk: *chunk_top = max, returns sum(exp(x - max)) (written to out too with store).
    The max pass prefetches FETCH_AHEAD_BYTES ahead, the start of the next chunk of a row that comes from memory
    (the hardware prefetchers stop at each 4 KiB page): 1.20-1.35x faster on 32x128256 float32 (T=1 and T=2,
    log_softmax 1.27x, the AVX2 build 1.21x), 1.23x on 16x128256 float64, 1.03-1.12x on 8x150000 at T=1 (Zen 5,
    A/B). The other row kernels compiled byte for byte as before. log_softmax's exp pass (which stores nothing)
    also prefetches, the result and the next chunk, through exp_shifted_sum_fetching: 1.06-1.19x faster at T=1
    (32x128256, 16x150000, 8x150000, 4x32768), 1.06-1.16x at T=2; for softmax the same lost up to 12% at T=2."""
    cdef bint wide
    cdef floating top = row_max(x, n, &wide, True, True)  # chunks round x - m_c and m_c - M: both need exactness
    cdef double total = 0.0
    cdef Py_ssize_t i
    chunk_top[0] = top
    if top == -INFINITY:
        # Only -inf and NaN here: exp(x - top) would be NaN for the -inf entries, which are exactly 0 unless the
        # whole row is -inf (phase 2 then gives NaN through exp(-inf - -inf)).
        for i in range(n):
            if x[i] != x[i]:
                total = NAN
            if store:
                out[i] = 0
        return total
    if store:
        return exp_shifted_sum(x, out, n, top, True, wide)
    # log_softmax: its exp pass stores nothing, so prefetch the result and the next chunk from it (exp_lines)
    return exp_shifted_sum_fetching(x, out, n, top, False, wide)


cdef inline double chunks_combine(const floating* tops, const double* sums, Py_ssize_t count,
                                  floating* row_top) noexcept nogil:
    """M = max of the chunk maxima (-> *row_top) and S = sum of sums[c] * exp(tops[c] - M), in chunk order."""
    cdef floating top = -INFINITY
    cdef double total = 0.0
    cdef Py_ssize_t c
    for c in range(count):
        top = tops[c] if tops[c] > top else top
    for c in range(count):
        total += sums[c] * exp_shifted_(tops[c], top, True)
    row_top[0] = top
    return total


cdef inline void scale_row(floating* out, Py_ssize_t n, floating factor) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = out[i] * factor


cdef inline void scale_row_fetching(floating* out, Py_ssize_t n, floating factor) noexcept nogil:
    """scale_row, prefetching (for writing) the line FETCH_AHEAD_BYTES ahead per line: phase 2 of a float32
    chunked row, which reads back the result written in phase 1, by then partly out of L2 (a row of 128 256
    floats is 513 KB of x and as much of out), and the hardware prefetchers stop at each 4 KiB page. Measured
    (Zen 5, A/B, three series): 32x128256 1.04-1.07x faster at T=1, 1.01-1.07x at T=2; 8x150000, 16x151936,
    4x32768 and 2x200000 even (0.99-1.04x). float64 chunked rows lost 9-17% with it (16x128256, 8x150000), and
    log_softmax's phase 2 (log_shift_row, prefetching x and out) measured 0.96-1.05x: both keep the plain loops."""
    cdef Py_ssize_t line = LINE_F32 if floating is float else LINE_F64
    cdef Py_ssize_t per = line * STEP_LINES
    cdef Py_ssize_t done = n - n % per
    cdef Py_ssize_t i, j, k, l
    for k in range(done // per):
        for l in range(STEP_LINES):
            fetch_line_w(out + k * per + l * line)
        for j in range(per):
            out[k * per + j] = out[k * per + j] * factor
    for i in range(done, n):
        out[i] = out[i] * factor


cdef inline void log_shift_row(const floating* x, floating* out, Py_ssize_t n, floating shift,
                               floating log_sum) noexcept nogil:
    """out = (x - shift) - log_sum: subtracting the max first keeps log_sum's bits when the max is large."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = (x[i] - shift) - log_sum


# Whether row_dot prefetches (float32 softmax_backward): in the AVX-512 build only. Measured on Zen 5 (T=1, A/B):
# there 1.08-1.35x faster from 128 KB to 16 MB (32x1000 to 4096x1000, 24576x128, 256x128) and 1.15x on 8 rows of
# 150 000; the AVX2 build on the same machine gained 1.2x on 16 MB but lost 12-18% on arrays in cache. Not for
# float64, whose 16-lane loop gcc leaves scalar once a prefetch is inside it (0.54-0.83x), nor for sum(g)
# (log_softmax_backward: 0.90-0.97x).
cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FSM_DOT_FETCH 1
    #else
    #define FSM_DOT_FETCH 0
    #endif
    """
    enum: DOT_FETCH "FSM_DOT_FETCH"


cdef inline double row_dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """sum(a * b), lane-wise with double flushes like exp_shifted_sum; b may be NULL to mean sum(a). With
    DOT_FETCH, float32 a * b prefetches both arrays FETCH_AHEAD_BYTES ahead per step (fetch_ahead, see
    _memory.pxd): softmax_backward reads two arrays, and a row's second pass finds them in L1 either way."""
    cdef Py_ssize_t lanes = LANES_F32 if floating is float else LANES_F64
    cdef floating acc[LANES]
    cdef double total = 0.0
    cdef Py_ssize_t i, j, k, blk, start, stop, n_main = n - n % lanes
    for blk in range((n_main + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        stop = min(start + SUM_BLOCK, n_main)
        for j in range(lanes):
            acc[j] = SUM_START
        if b != NULL:
            for k in range(start // lanes, stop // lanes):
                i = k * lanes
                if floating is float and DOT_FETCH:
                    fetch_ahead(a + i)
                    fetch_ahead(b + i)
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


# row_dot_short in the builds without AVX-512: 8 lanes (one ymm vector), steps of 16 whose two products join the
# lanes in one add, then at most one step of 8, and the row's last n % 8 products one by one in a double beside
# the lanes. With row_dot_short's 16 lanes a row's part step of up to 15 went through that element-wise chain (a
# row of 31 took 2.7 times a row of 32), and gcc turned each vector form of it tried (a step of 8 or 4 after the
# loop, a last vector over the row's end with the repeated lanes masked by a select) into scalar code or
# branches once inlined into the row loop; a loop of steps of 8 it keeps vectorized. One chain of FMAs in steps
# of 8 throughout lost 5-10% on rows of 64-256. Measured (Zen 3, AVX2, T=1, softmax_backward ns per row, min of
# rounds, 16 lanes -> this): rows of 8 6.4 -> 5.9, 24 12.7 -> 8.9, 31 23.6 -> 17.2, 63 28.4 -> 20.5, 127 38.9 ->
# 31.4, 197 44.5 -> 43.7; rows of 16, 32, 48, 64, 96, 128, 256 within 4%. A/B: 4096x31 0.64-0.72x the time,
# 4096x63 0.71x, 65536x31 0.51-0.56x (T=1 and T=2), 4096x16 and 4096x64 1.02-1.08x, 24576x128 1.08x; the
# baseline build 8 6.7 -> 7.1, 24 15.4 -> 10.7, 31 23.2 -> 16.0, 127 49.5 -> 38.6, others within 4%.
cdef inline double row_dot_eight(const float* a, const float* b, Py_ssize_t n) noexcept nogil:
    """sum(a * b) for a float32 row of n <= SHORT_SUM_F32 in 8 lanes folded by halves, the last n % 8 products
    in a double beside them (see above)."""
    cdef float acc[8]
    cdef float w[4]
    cdef float u[2]
    cdef double rest = 0.0
    cdef Py_ssize_t i, j, k, n_main = n - n % 8
    for j in range(8):
        acc[j] = SUM_START
    for k in range(n // 16):
        i = k * 16
        for j in range(8):
            acc[j] += a[i + j] * b[i + j] + a[i + 8 + j] * b[i + 8 + j]
    for k in range(n // 16 * 2, n_main // 8):
        i = k * 8
        for j in range(8):
            acc[j] += a[i + j] * b[i + j]
    for i in range(n_main, n):
        rest += a[i] * b[i]
    for j in range(4):
        w[j] = acc[j] + acc[j + 4]
    for j in range(2):
        u[j] = w[j] + w[j + 2]
    return (<double>u[0] + <double>u[1]) + rest


cdef inline double row_dot_short(const float* a, const float* b, Py_ssize_t n, bint fetch) noexcept nogil:
    """row_dot for a float32 row of n <= SHORT_SUM_F32: SHORT_SUM_LANES lanes with
    fold_sum_short (see exp_sum_short_lanes), with fetch a * b prefetching as row_dot does, every other step
    (rows longer than SHORT_FETCH_MAX_COLS from memory; softmax_backward_short has the others). The same
    arithmetic with and without. Measured (Zen 5, A/B, before softmax_backward_short): softmax_backward
    1024x128, 8192x128, 256x197 1.08-1.14x at T=1, 1.10-1.21x at T=2, 24576x128 (12 MB) 1.02-1.07x;
    log_softmax_backward 1.13-1.22x; prefetching every step was 1-3% slower than every other."""
    cdef float acc[SHORT_SUM_LANES]
    cdef double total
    cdef Py_ssize_t i, j, k, n_main = n - n % SHORT_SUM_LANES
    if b == NULL:
        return lane_sum_short(a, n, NULL)
    if not DOT_FETCH:   # the builds without AVX-512 (see row_dot_eight)
        return row_dot_eight(a, b, n)
    for j in range(SHORT_SUM_LANES):
        acc[j] = SUM_START
    for k in range(n_main // SHORT_SUM_LANES):
        i = k * SHORT_SUM_LANES
        if DOT_FETCH and fetch and k % 2 == 0:   # fetch_ahead covers two steps
            fetch_ahead(a + i)
            fetch_ahead(b + i)
        for j in range(SHORT_SUM_LANES):
            acc[j] += a[i + j] * b[i + j]
    total = fold_sum_short(acc)
    for i in range(n_main, n):
        total += a[i] * b[i]
    return total


cdef inline void softmax_backward_short(const float* g, const float* y, float* out, Py_ssize_t n,
                                        bint fetch) noexcept nogil:
    """softmax_grad_row(g, y, out, n, row_dot_short(g, y, n)) for a float32 row of n <= SHORT_SUM_F32, its dot
    product without a prefetch inside the loop: inlined into a row loop, the prefetching
    dot loop was left scalar by gcc. With fetch (rows of up to SHORT_FETCH_MAX_COLS that come from memory) the
    lines FETCH_AHEAD_BYTES ahead of g and y are prefetched first, in one burst of at most 16, as the forward max
    pass does for such rows. Measured (Zen 5, A/B, against backward_row's call per row with the prefetching dot
    product): 1024x128 1.13-1.18x at T=1 (T=2 1.04-1.07x), 8192x128 1.10-1.16x (T=2 1.01-1.03x), 12000x128
    0.99-1.22x, 24576x128 1.10-1.14x (T=2 1.10-1.14x), 256x197 1.03-1.06x (T=2 1.05-1.12x), 4096x256 1.04-1.06x,
    16x128 and 64x33 1.11-1.16x; arrays of 1-4 rows 0.97-0.99x. Between FETCH_MIN_BYTES and FETCH_DEEP_BYTES the
    burst lost 5-14% at T=1 and won 5-14% at T=2 (backward_any chooses by thread count); for rows of 256 it
    lost at T=2 (4096x256 0.83-0.88x), so longer rows from memory keep backward_row."""
    cdef Py_ssize_t k
    if fetch:
        for k in range((n + LINE_F32 - 1) // LINE_F32):
            fetch_line(g + k * LINE_F32)
            fetch_line(y + k * LINE_F32)
    softmax_grad_row(g, y, out, n, <float>row_dot_short(g, y, n, False))


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


cdef inline void log_softmax_grad_row_fetching(const floating* g, const floating* y, floating* out, Py_ssize_t n,
                                               floating total) noexcept nogil:
    """log_softmax_grad_row for arrays from memory: in steps of STEP_LINES cache lines, as exp_lines, each step
    prefetching g and y FETCH_AHEAD_BYTES ahead and out for writing. The pass is an exp per element, so the
    prefetches hide behind arithmetic, as the forward exp pass's do. Measured (Zen 5, A/B, against the plain
    loop): 4096x1000 and 4096x1001 float32 1.43-1.50x at T=1, 1.19x at T=2, 2048x2000 1.30x, 24576x128
    1.06-1.16x, float64 1.11-1.15x, the AVX2 build 1.09x. Arrays in cache lost 5-13% with it (1024x128,
    32x1000, 256x197), hence only from FETCH_MIN_BYTES (backward_any)."""
    cdef Py_ssize_t line = LINE_F32 if floating is float else LINE_F64
    cdef Py_ssize_t per = line * STEP_LINES
    cdef Py_ssize_t i, j, k, l, done = n - n % per
    for k in range(done // per):
        for l in range(STEP_LINES):
            fetch_line(g + k * per + l * line)
            fetch_line(y + k * per + l * line)
            fetch_line_w(out + k * per + l * line)
        for j in range(per):
            out[k * per + j] = g[k * per + j] - exp_(y[k * per + j]) * total
    for i in range(done, n):
        out[i] = g[i] - exp_(y[i]) * total
