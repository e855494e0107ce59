# Large results are allocated through a small cache of released ones, so that a pipeline calling softmax batch
# after batch does not pay the operating system's page faults for every result.
#
# Why: a fresh NumPy array of more than 32 MiB is a fresh mmap (glibc's malloc never keeps freed blocks that
# large), and the kernel zeroes and maps its pages on first touch: about 40 ms for 256 MB on the development
# machine (with the transparent huge pages NumPy asks for), as long as the softmax itself. ONNX Runtime reuses
# such memory from its arena; so does this cache.
#
# How: a NumPy memory handler (NEP 49) that wraps NumPy's default one. It is installed only while fastsoftmax
# allocates a result of at least min_bytes, and the array records it, so the array owns its data as any other
# does (base None, owndata True, resize works) and, when it is freed, its block comes back here instead of
# going to munmap. The next result of exactly that many bytes gets the block back. At most FSM_SLOTS blocks,
# max_bytes in all, are kept; the oldest go first, and empty_cache() releases them all.
#
# Every block carries its own size in a header in front of the array's data. NumPy tells a handler's free how
# many bytes it is freeing, but that is the array's nbytes at the time, which is not always what was allocated
# (an ndarray.__setstate__ that fails halfway leaves an array with a new dtype on its old data): a cache that
# filed blocks under that size handed a 32 MiB block to a 64 MiB result.
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)
    object PyDataMem_GetHandler()
    void* PyDataMem_DefaultHandler

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include "pythread.h"

    #define FSM_SLOTS 2
    /* The header in front of each block's data: its size, then padding that keeps the data 64-byte aligned
       relative to the base allocation (NumPy's own data is 16-byte aligned; this keeps at least that). */
    #define FSM_HEADER 64

    typedef struct { char *base; size_t size; } fsm_block;   /* base: the base handler's pointer */

    typedef struct {
        PyDataMem_Handler *base;      /* NumPy's default handler: every real allocation and free goes to it */
        PyThread_type_lock lock;      /* blocks are freed from whichever thread drops the last reference */
        fsm_block slots[FSM_SLOTS];   /* released blocks, oldest first */
        int count;
        size_t min_bytes, max_bytes;  /* blocks of min_bytes..max_bytes are kept, at most max_bytes in all */
        size_t hits;                  /* allocations served from the cache (for the tests) */
    } fsm_cache_t;

    static fsm_cache_t fsm_cache;

    static void *fsm_base_malloc(fsm_cache_t *c, size_t n) {
        return c->base->allocator.malloc(c->base->allocator.ctx, n);
    }
    static void fsm_base_free(fsm_cache_t *c, char *base, size_t size) {
        c->base->allocator.free(c->base->allocator.ctx, base, size + FSM_HEADER);
    }
    /* The data pointer of a block, its block from a data pointer, and the block's size. */
    static void *fsm_data(char *base, size_t size) { *(size_t *)base = size; return base + FSM_HEADER; }
    static char *fsm_base_of(void *ptr) { return (char *)ptr - FSM_HEADER; }
    static size_t fsm_size_of(char *base) { return *(size_t *)base; }

    static size_t fsm_cached_bytes(const fsm_cache_t *c) {
        size_t total = 0;
        int i;
        for (i = 0; i < c->count; ++i) total += c->slots[i].size;
        return total;
    }

    /* Removes slot i (the caller holds the lock). */
    static fsm_block fsm_take(fsm_cache_t *c, int i) {
        fsm_block b = c->slots[i];
        for (; i + 1 < c->count; ++i) c->slots[i] = c->slots[i + 1];
        c->count--;
        return b;
    }

    /* Releases the cached blocks outside keep_min..keep_max, then the oldest until at most keep_total bytes are
       left; returns the bytes released. */
    static size_t fsm_cache_release(size_t keep_min, size_t keep_max, size_t keep_total) {
        fsm_block dropped[FSM_SLOTS];
        int n = 0, i;
        size_t freed = 0, total;
        PyThread_acquire_lock(fsm_cache.lock, WAIT_LOCK);
        for (i = fsm_cache.count - 1; i >= 0; --i)
            if (fsm_cache.slots[i].size < keep_min || fsm_cache.slots[i].size > keep_max)
                dropped[n++] = fsm_take(&fsm_cache, i);
        total = fsm_cached_bytes(&fsm_cache);
        while (fsm_cache.count > 0 && total > keep_total) {
            dropped[n] = fsm_take(&fsm_cache, 0);
            total -= dropped[n++].size;
        }
        PyThread_release_lock(fsm_cache.lock);
        for (i = 0; i < n; ++i) {
            freed += dropped[i].size;
            fsm_base_free(&fsm_cache, dropped[i].base, dropped[i].size);
        }
        return freed;
    }

    static void *fsm_malloc(void *ctx, size_t size) {
        fsm_cache_t *c = (fsm_cache_t *)ctx;
        char *base = NULL;
        int i;
        if (size > SIZE_MAX - FSM_HEADER) return NULL;
        if (size >= c->min_bytes) {
            PyThread_acquire_lock(c->lock, WAIT_LOCK);
            for (i = c->count - 1; i >= 0; --i) {   /* newest first: the likeliest to be in cache */
                if (c->slots[i].size == size) {
                    base = fsm_take(c, i).base;
                    c->hits++;
                    break;
                }
            }
            PyThread_release_lock(c->lock);
            if (base != NULL) return fsm_data(base, size);
        }
        base = (char *)fsm_base_malloc(c, size + FSM_HEADER);
        if (base == NULL && fsm_cache_release((size_t)-1, 0, 0) > 0)   /* out of memory: the cache goes first */
            base = (char *)fsm_base_malloc(c, size + FSM_HEADER);
        return base == NULL ? NULL : fsm_data(base, size);
    }

    static void *fsm_calloc(void *ctx, size_t nelem, size_t elsize) {
        fsm_cache_t *c = (fsm_cache_t *)ctx;
        char *base;
        size_t size;
        if (elsize != 0 && nelem > (SIZE_MAX - FSM_HEADER) / elsize) return NULL;
        size = nelem * elsize;
        base = (char *)c->base->allocator.calloc(c->base->allocator.ctx, size + FSM_HEADER, 1);
        return base == NULL ? NULL : fsm_data(base, size);   /* never a cached block: those are not zeroed */
    }

    static void *fsm_realloc(void *ctx, void *ptr, size_t new_size) {
        fsm_cache_t *c = (fsm_cache_t *)ctx;
        char *base;
        if (ptr == NULL) return fsm_malloc(ctx, new_size);
        if (new_size > SIZE_MAX - FSM_HEADER) return NULL;
        base = (char *)c->base->allocator.realloc(c->base->allocator.ctx, fsm_base_of(ptr), new_size + FSM_HEADER);
        return base == NULL ? NULL : fsm_data(base, new_size);
    }

    /* `size` (NumPy's idea of the block's size) is not trusted: the header says what the block really is. */
    static void fsm_free(void *ctx, void *ptr, size_t size) {
        fsm_cache_t *c = (fsm_cache_t *)ctx;
        fsm_block evicted[FSM_SLOTS];
        int n_evicted = 0, i;
        size_t total;
        char *base;
        (void)size;
        if (ptr == NULL) return;
        base = fsm_base_of(ptr);
        size = fsm_size_of(base);
        if (size >= c->min_bytes && size <= c->max_bytes) {
            PyThread_acquire_lock(c->lock, WAIT_LOCK);
            total = fsm_cached_bytes(c);
            while (c->count > 0 && (c->count == FSM_SLOTS || total + size > c->max_bytes)) {
                evicted[n_evicted] = fsm_take(c, 0);
                total -= evicted[n_evicted++].size;
            }
            c->slots[c->count].base = base;
            c->slots[c->count++].size = size;
            PyThread_release_lock(c->lock);
            for (i = 0; i < n_evicted; ++i) fsm_base_free(c, evicted[i].base, evicted[i].size);
            return;
        }
        fsm_base_free(c, base, size);
    }

    static PyDataMem_Handler fsm_handler = {
        "fastsoftmax_result_cache", 1,
        {&fsm_cache, fsm_malloc, fsm_calloc, fsm_realloc, fsm_free}
    };

    /* 0 on success, -1 (with a Python exception set) otherwise. */
    static int fsm_cache_init(PyObject *default_handler, size_t min_bytes, size_t max_bytes) {
        fsm_cache.base = (PyDataMem_Handler *)PyCapsule_GetPointer(default_handler, "mem_handler");
        if (fsm_cache.base == NULL) return -1;
        fsm_cache.lock = PyThread_allocate_lock();
        if (fsm_cache.lock == NULL) { PyErr_NoMemory(); return -1; }
        fsm_cache.min_bytes = min_bytes;
        fsm_cache.max_bytes = max_bytes;
        return 0;
    }

    static PyObject *fsm_handler_capsule(void) { return PyCapsule_New(&fsm_handler, "mem_handler", NULL); }

    static void fsm_cache_set_limits(size_t min_bytes, size_t max_bytes) {
        PyThread_acquire_lock(fsm_cache.lock, WAIT_LOCK);
        fsm_cache.min_bytes = min_bytes;
        fsm_cache.max_bytes = max_bytes;
        PyThread_release_lock(fsm_cache.lock);
        fsm_cache_release(min_bytes, max_bytes, max_bytes);
    }

    static void fsm_cache_stats(int *count, size_t *bytes, size_t *hits) {
        PyThread_acquire_lock(fsm_cache.lock, WAIT_LOCK);
        *count = fsm_cache.count;
        *bytes = fsm_cached_bytes(&fsm_cache);
        *hits = fsm_cache.hits;
        PyThread_release_lock(fsm_cache.lock);
    }
    """
    int FSM_SLOTS
    int fsm_cache_init(object default_handler, size_t min_bytes, size_t max_bytes) except -1
    object fsm_handler_capsule()
    size_t fsm_cache_release(size_t keep_min, size_t keep_max, size_t keep_total) noexcept nogil
    void fsm_cache_set_limits(size_t min_bytes, size_t max_bytes) noexcept nogil
    void fsm_cache_stats(int* count, size_t* n_bytes, size_t* hits) noexcept nogil

# Results of MIN_BYTES or more go through the cache: 32 MiB is the largest mmap threshold of glibc's malloc, so
# smaller results already come back from the heap without page faults there. MAX_BYTES bounds what the cache
# holds while nobody uses it (and the largest block it keeps).
MIN_BYTES = 32 * 1024 * 1024
MAX_BYTES = 1024 * 1024 * 1024
SLOTS = FSM_SLOTS

cdef object _default_handler = <object>PyDataMem_DefaultHandler
fsm_cache_init(_default_handler, MIN_BYTES, MAX_BYTES)
cdef object _handler = fsm_handler_capsule()
# The threshold in use (MIN_BYTES unless a test changed it): results of this many bytes or more go through the
# cache. A module attribute, so that callers can test a size against it without a call.
min_bytes = MIN_BYTES


cdef inline bint default_policy():
    """Whether NumPy's own allocation policy is in effect (no other NEP 49 handler installed)."""
    return PyDataMem_GetHandler() is _default_handler


def empty(shape, dtype):
    """``np.empty(shape, dtype)`` (C order); of min_bytes or more, through the cache of released results.

    Only while NumPy's default allocation policy is in effect: under a policy someone installed (another NEP 49
    handler) results are plain np.empty arrays of that policy."""
    cdef cnp.dtype dt = np.dtype(dtype)
    cdef object n = dt.itemsize   # a Python int: a shape too large for memory fails in np.empty, as without us
    cdef object old
    for extent in ((shape,) if isinstance(shape, int) else shape):
        n *= extent
    if n < min_bytes or not default_policy():
        return np.empty(shape, dt)
    old = PyDataMem_SetHandler(_handler)
    try:
        return np.empty(shape, dt)
    finally:
        PyDataMem_SetHandler(old)


def clear():
    """Release every cached block; returns the number of bytes released."""
    return fsm_cache_release(<size_t>-1, 0, 0)


def stats():
    """{"blocks": cached blocks, "bytes": their size, "hits": allocations served from the cache so far}."""
    cdef int count
    cdef size_t n_bytes, hits
    fsm_cache_stats(&count, &n_bytes, &hits)
    return {"blocks": count, "bytes": n_bytes, "hits": hits}


def caching():
    """Whether results allocated now would go through the cache (NumPy's default policy is in effect)."""
    return default_policy()


def _set_limits(Py_ssize_t min_size, Py_ssize_t max_size):
    """For the tests: cache results from min_size bytes up, max_size at most, instead of MIN_BYTES and MAX_BYTES
    (cached blocks now outside are released). The kernel modules learn the new threshold from
    fastsoftmax._dispatch.configure_results."""
    global min_bytes
    min_bytes = min_size
    fsm_cache_set_limits(min_size, max_size)
