# Help for arrays out of cache, where the row kernels wait on memory: a prefetch of the input spread over the max
# pass for arrays that miss L2 (FETCH_MIN_BYTES and more, fetch_ahead) or over the exp pass for arrays that come
# from memory (FETCH_DEEP_BYTES and more, fetch_line; see row_fetch in _kernels.pxi), and for arrays far larger
# than the last-level cache (LARGE_BYTES and more) streaming stores for the result.
#
# Streaming (non-temporal) stores.
# A plain store to a line that is not in cache first reads the line from memory (read-for-ownership), so a
# kernel that writes an out-of-cache result moves its bytes three times: the input read, the output's
# ownership read and the output's write-back. Streaming stores skip the ownership read: a 256 MB scaled copy
# takes 0.69x the time with them on this project's machine (measured in C). In the softmax kernels they pay off
# only where memory is the bottleneck: 0.6-0.8x the time on 128-256 MB float32 results with 2 threads, while
# results that still fit in L3 (16-32 MB) got slower, and with the AVX2 kernels (Zen 3) a single thread,
# compute-bound there, gained nothing and lost up to 12% on float64 to the extra staging copy (benchmarks/RESULTS.md,
# "Streaming stores"). The AVX-512 kernels compute about twice as fast, and on a Zen 5 machine their single thread
# waits on memory as well: streaming made 256 MB float32 results 1.29-1.57x faster at one thread, float64 1.04x.
# Hence the conditions in forward_rows: LARGE_BYTES of result and STREAM_MIN_THREADS threads or more.
#
# The arithmetic stays in Cython: a kernel computes a row into an L1 buffer and stream_row copies it out. The one
# thing Cython cannot say is "store this vector non-temporally", hence the intrinsics below, at the vector width
# the module is compiled for (on other targets stream_row is a plain copy: results never depend on it).
from cython cimport floating
from libc.stdint cimport uintptr_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
    #include <immintrin.h>
    #if defined(__AVX512F__)
    #define FSM_STREAM_MIN_THREADS 1
    #define FSM_VEC_BYTES 64
    #define FSM_STREAM_PS(d, s) _mm512_stream_ps(d, _mm512_loadu_ps(s))
    #define FSM_STREAM_PD(d, s) _mm512_stream_pd(d, _mm512_loadu_pd(s))
    #elif defined(__AVX__)
    #define FSM_VEC_BYTES 32
    #define FSM_STREAM_PS(d, s) _mm256_stream_ps(d, _mm256_loadu_ps(s))
    #define FSM_STREAM_PD(d, s) _mm256_stream_pd(d, _mm256_loadu_pd(s))
    #else
    #define FSM_VEC_BYTES 16
    #define FSM_STREAM_PS(d, s) _mm_stream_ps(d, _mm_loadu_ps(s))
    #define FSM_STREAM_PD(d, s) _mm_stream_pd(d, _mm_loadu_pd(s))
    #endif
    /* dst[:n] = src[:n]: plain stores up to the first vector-aligned element of dst, streaming stores for the
       whole vectors after it, plain stores for the rest. */
    #define FSM_DEFINE_STREAM(NAME, T, STORE)                                                    \
        static inline void NAME(T *dst, const T *src, Py_ssize_t n) {                            \
            const Py_ssize_t w = FSM_VEC_BYTES / sizeof(T);                                      \
            Py_ssize_t i = 0;                                                                    \
            for (; i < n && ((uintptr_t)(dst + i) % FSM_VEC_BYTES); ++i) dst[i] = src[i];        \
            for (; i + w <= n; i += w) STORE(dst + i, src + i);                                  \
            for (; i < n; ++i) dst[i] = src[i];                                                  \
        }
    FSM_DEFINE_STREAM(fsm_stream_f32, float, FSM_STREAM_PS)
    FSM_DEFINE_STREAM(fsm_stream_f64, double, FSM_STREAM_PD)
    #define FSM_STREAM_FENCE() _mm_sfence()
    #else
    static inline void fsm_stream_f32(float *dst, const float *src, Py_ssize_t n) { memcpy(dst, src, n * 4); }
    static inline void fsm_stream_f64(double *dst, const double *src, Py_ssize_t n) { memcpy(dst, src, n * 8); }
    #define FSM_STREAM_FENCE() ((void)0)
    #endif

    #ifndef FSM_STREAM_MIN_THREADS
    #define FSM_STREAM_MIN_THREADS 2
    #endif

    /* Streaming stores are weakly ordered: a thread fences after its last one, before other threads (or the
       caller) read the result. */
    static inline void fsm_stream_fence(void) { FSM_STREAM_FENCE(); }

    #if defined(__GNUC__) || defined(__clang__)
    #define FSM_PREFETCH(p) __builtin_prefetch((p), 0, 3)
    #define FSM_PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
    #else
    #define FSM_PREFETCH(p) ((void)(p))
    #define FSM_PREFETCH_W(p) ((void)(p))
    #endif
    """
    void stream_f32 "fsm_stream_f32"(float* dst, const float* src, Py_ssize_t n) noexcept nogil
    void stream_f64 "fsm_stream_f64"(double* dst, const double* src, Py_ssize_t n) noexcept nogil
    void stream_fence "fsm_stream_fence"() noexcept nogil
    void prefetch "FSM_PREFETCH"(const void* p) noexcept nogil
    void prefetch_w "FSM_PREFETCH_W"(const void* p) noexcept nogil
    # Calls on at least this many threads stream their large results (see the note above): 2 in general, 1 in
    # the AVX-512 build, whose single thread is bound by memory there too.
    const int STREAM_MIN_THREADS "FSM_STREAM_MIN_THREADS"

cdef enum:
    # Results of at least this many bytes are streamed (with several threads): twice the 32 MB L3 of the machine
    # it was measured on (a result read back soon after is then not one that would have stayed cached).
    LARGE_BYTES = 64 * 1024 * 1024
    # Rows are staged in an L1 buffer of at most this many bytes; longer rows keep plain stores.
    STREAM_ROW_BYTES = 16 * 1024
    # Contiguous arrays of rows of up to FETCH_AHEAD_BYTES, from FETCH_MIN_BYTES up (four times a 512 KiB L2),
    # prefetch FETCH_AHEAD_BYTES ahead (see row_fetch in _kernels.pxi): from inside the max pass (fetch_ahead)
    # below FETCH_DEEP_BYTES, from inside the exp pass (fetch_line, and fetch_line_w for the result) from there on.
    FETCH_MIN_BYTES = 2 * 1024 * 1024
    FETCH_AHEAD_BYTES = 8192
    # From this size on, arrays come from memory rather than the last-level cache, and their rows prefetch from
    # the exp pass. Measured on the 32 MB L3 the development machine shares: from 12 MB up the exp-pass prefetch
    # was faster (1.14-1.28x), 6.1 MB and less slower (0.84-0.94x), and at 8.19 MB (2048x1000 float32) the two
    # were even (1.10x in one series, 0.99x in another); hence 8 MB, decimal.
    FETCH_DEEP_BYTES = 8 * 1000 * 1000
    # Where a row prefetches (row_fetch): nowhere, from its max pass, from its exp pass.
    FETCH_NONE = 0
    FETCH_MAX = 1
    FETCH_EXP = 2


cdef inline void stream_row(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    if floating is float:
        stream_f32(dst, src, n)
    else:
        stream_f64(dst, src, n)


cdef inline void fetch_line(const floating* p) noexcept nogil:
    """Prefetch the cache line FETCH_AHEAD_BYTES past p: one per line of a loop over a row (see exp_lines)."""
    prefetch(<const void*>(<uintptr_t>p + FETCH_AHEAD_BYTES))


cdef inline void fetch_line_w(const floating* p) noexcept nogil:
    """fetch_line for a line about to be written (prefetchw where the CPU has it)."""
    prefetch_w(<const void*>(<uintptr_t>p + FETCH_AHEAD_BYTES))


cdef inline void fetch_ahead(const floating* p) noexcept nogil:
    """Prefetch the cache lines of one step of the max pass (32 elements: 128 bytes of floats, 256 of doubles)
    FETCH_AHEAD_BYTES past p: with contiguous rows of up to that size it is a row or more ahead, which then
    arrives while the current row is in its exp and scale passes, where the hardware prefetchers, stopped at the
    page end, do not run ahead (rows shorter than one step are not prefetched: their max pass has no such step).
    Spread over the loop rather than issued as one burst before each row (which it replaced beyond 64 MiB: equal
    or 2-11% faster there, float64 most). A/B, when it served every array from 2 MiB up: 1.05-1.24x faster on
    4-16 MB float32 arrays of rows of 512-1000 at one thread (4096x1000 itself unchanged), 1.06-1.13x at two
    threads, 1.02-1.07x on float64 4096x1000; arrays of 1 MB or less lost 1-3% with it, hence FETCH_MIN_BYTES
    (benchmarks/RESULTS.md, "Software prefetch"). Arrays from FETCH_DEEP_BYTES up now prefetch from the exp pass
    instead (fetch_line), but for float32 rows short enough for exp_sum_short.
    Past the end of an array it is harmless (prefetches never
    fault); the address is formed as an integer because a pointer that far past an array is undefined in C."""
    cdef uintptr_t at = <uintptr_t>p + FETCH_AHEAD_BYTES
    prefetch(<const void*>at)
    prefetch(<const void*>(at + 64))
    if floating is double:
        prefetch(<const void*>(at + 128))
        prefetch(<const void*>(at + 192))
