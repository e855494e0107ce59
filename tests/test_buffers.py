"""The cache of released large results (fastsoftmax._buffers, fastsoftmax.empty_cache).

* A result of min_bytes or more is allocated through the cache: once it is freed, the next result of exactly its
  size reuses its memory; results are ordinary owning arrays all the same (base None, owndata, resize works).
* A reused block holds the old result until it is overwritten: every result is still exactly right.
* At most SLOTS blocks and max_bytes (MAX_BYTES) are kept, the oldest released first; empty_cache() releases them
  and says how many bytes.
* Smaller results and out= arrays never touch the cache.
* Each block knows its own size: an array whose nbytes no longer matches its allocation cannot hand a block to a
  larger result.

The tests lower the threshold to 64 KiB (an internal switch) so that they stay small and fast, and run at every
SIMD level (each level's kernel module allocates its fast-path results through the cache).
"""
import concurrent.futures

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastsoftmax
from fastsoftmax import _buffers, _dispatch, log_softmax, log_softmax_backward, softmax, softmax_backward

# NumPy names the memory handler (NEP 49) that owns an array's data, or with no argument the one in effect;
# it has no public import path.
from numpy._core.multiarray import get_handler_name

pytestmark = pytest.mark.usefixtures("simd_level")

MIN = 64 * 1024
ROWS, COLS = 64, 512   # 128 KiB of float32: over MIN


@pytest.fixture(autouse=True)
def small_threshold():
    before = _buffers.min_bytes
    _buffers._set_limits(MIN, _buffers.MAX_BYTES)
    _dispatch.configure_results(_dispatch.kernels)
    fastsoftmax.empty_cache()
    yield
    fastsoftmax.empty_cache()
    _buffers._set_limits(before, _buffers.MAX_BYTES)
    _dispatch.configure_results(_dispatch.kernels)


def reference_softmax(x, axis=-1):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def logits(seed, shape=(ROWS, COLS), dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(dtype)


def test_a_freed_result_is_reused_by_the_next_one_of_its_size():
    x = logits(0)
    p = softmax(x)
    address = p.ctypes.data
    assert _buffers.stats()["blocks"] == 0
    hits = _buffers.stats()["hits"]
    del p
    assert _buffers.stats() == {"blocks": 1, "bytes": x.nbytes, "hits": hits}
    q = softmax(x)
    assert q.ctypes.data == address
    assert _buffers.stats()["hits"] == hits + 1
    assert _buffers.stats()["blocks"] == 0


@pytest.mark.parametrize("call", [
    lambda x, g: softmax(x),
    lambda x, g: log_softmax(x),
    lambda x, g: softmax(x, axis=0),                          # the general path (a non-last axis)
    lambda x, g: softmax(np.asfortranarray(x)),               # the copying path (its scratch buffer too)
    lambda x, g: softmax_backward(g, softmax(x)),
    lambda x, g: log_softmax_backward(g, log_softmax(x)),
    lambda x, g: softmax_backward(g, softmax(x), axis=0),
], ids=["softmax", "log_softmax", "axis0", "fortran", "backward", "log-backward", "backward-axis0"])
def test_reused_memory_gives_exact_results(call):
    # The cached block still holds the previous result; the next one must not depend on it.
    x1, x2, g = logits(1), logits(2), logits(3)
    fresh = call(x2, g).copy()
    fastsoftmax.empty_cache()
    for _ in range(3):   # alternate inputs so every reuse overwrites a different result
        r1 = call(x1, g)
        del r1
        r2 = call(x2, g)
        assert_array_equal(r2, fresh)
        del r2
    assert _buffers.stats()["hits"] > 0


def test_results_are_ordinary_owning_arrays():
    x = logits(4)
    p = softmax(x)
    del p
    hits = _buffers.stats()["hits"]
    q = softmax(x)
    assert _buffers.stats()["hits"] == hits + 1  # from the cache
    assert get_handler_name(q) == "fastsoftmax_result_cache"
    assert q.base is None and q.flags.owndata and q.flags.c_contiguous and q.flags.writeable
    assert_allclose(q, reference_softmax(x), rtol=4e-6)
    q.resize((ROWS * COLS * 2,), refcheck=False)  # realloc through the default allocator
    assert q.shape == (ROWS * COLS * 2,)
    del q
    assert _buffers.stats()["bytes"] == 2 * x.nbytes  # freed at its new size, and kept


def test_a_pipeline_reuses_memory_batch_after_batch():
    # `p = softmax(batch)` in a loop: the previous result is still bound to p while the next is allocated.
    batches = [logits(10 + i) for i in range(6)]
    hits = _buffers.stats()["hits"]
    addresses = set()
    p = None
    for batch in batches:
        p = softmax(batch)
        addresses.add(p.ctypes.data)
        assert_allclose(p, reference_softmax(batch), rtol=4e-6)
    assert _buffers.stats()["hits"] - hits >= len(batches) - 2
    assert len(addresses) <= 2


def test_at_most_two_blocks_are_kept_oldest_released_first():
    a, b, c = (softmax(logits(20 + i, (ROWS, COLS + 64 * i))) for i in range(3))
    sizes = [a.nbytes, b.nbytes, c.nbytes]
    del a, b, c   # freed in this order: a's block is the oldest
    stats = _buffers.stats()
    assert stats["blocks"] == 2 and stats["bytes"] == sizes[1] + sizes[2]



def test_the_newest_block_of_a_size_is_taken_first():
    a, b = softmax(logits(24)), softmax(logits(25))
    newest = b.ctypes.data
    del a, b   # two blocks of one size; b's is the newer
    c = softmax(logits(26))
    assert c.ctypes.data == newest


def test_a_result_of_another_size_does_not_take_a_block():
    p = softmax(logits(30))
    del p
    q = softmax(logits(31, (ROWS, COLS + 8)))
    assert _buffers.stats()["blocks"] == 1
    del q
    assert _buffers.stats()["blocks"] == 2


def test_small_results_do_not_use_the_cache():
    hits = _buffers.stats()["hits"]
    for _ in range(3):
        p = softmax(logits(40, (4, 1000)))
        del p
    assert _buffers.stats() == {"blocks": 0, "bytes": 0, "hits": hits}


def test_out_is_never_cached():
    x = logits(41)
    out = np.empty_like(x)
    softmax(x, out=out)
    del out
    assert _buffers.stats()["blocks"] == 0


def test_empty_cache_releases_everything_and_reports_the_bytes():
    a, b = softmax(logits(50)), softmax(logits(51, (ROWS, 2 * COLS)))
    expected = a.nbytes + b.nbytes
    del a, b
    assert fastsoftmax.empty_cache() == expected
    assert _buffers.stats()["blocks"] == 0 and _buffers.stats()["bytes"] == 0
    assert fastsoftmax.empty_cache() == 0


def test_raising_the_threshold_releases_blocks_below_it():
    p = softmax(logits(52))
    del p
    assert _buffers.stats()["blocks"] == 1
    _buffers._set_limits(ROWS * COLS * 4 + 1, _buffers.MAX_BYTES)
    assert _buffers.stats()["blocks"] == 0


def test_the_cache_holds_at_most_max_bytes():
    block = ROWS * COLS * 4
    _buffers._set_limits(MIN, 2 * block + block // 4)
    a, b = softmax(logits(53)), softmax(logits(54))
    del a, b
    assert _buffers.stats()["bytes"] == 2 * block
    big = softmax(logits(55, (ROWS, COLS * 3)))   # larger than max_bytes: not kept
    del big
    assert _buffers.stats()["bytes"] == 2 * block
    c = softmax(logits(56, (ROWS, COLS + COLS // 2)))
    del c   # 1.5 blocks: both older blocks go, a for the slot, b for max_bytes
    assert _buffers.stats()["bytes"] == block + block // 2 and _buffers.stats()["blocks"] == 1


def test_empty_is_np_empty_through_the_cache_when_large():
    a = _buffers.empty((ROWS, COLS), np.float64)
    assert a.shape == (ROWS, COLS) and a.dtype == np.float64 and a.flags.c_contiguous
    assert get_handler_name(a) == "fastsoftmax_result_cache"
    b = _buffers.empty(ROWS * COLS, "f4")
    assert b.shape == (ROWS * COLS,) and b.dtype == np.float32
    assert get_handler_name(b) == "fastsoftmax_result_cache"
    small = _buffers.empty((2, 3), np.float32)
    assert small.shape == (2, 3) and get_handler_name(small) == "default_allocator"
    assert get_handler_name() == "default_allocator"  # the handler is only in effect during the allocation


@pytest.mark.parametrize("shape", [(2**40, 2**20), (2**43,)], ids=["too-big-for-numpy", "too-big-for-malloc"])
def test_a_failed_allocation_restores_the_default_handler(shape):
    p = softmax(logits(82))
    del p   # a cached block, which an allocation that fails releases before it tries again
    with pytest.raises((MemoryError, ValueError)):
        _buffers.empty(shape, np.float64)   # 8 EiB (NumPy refuses the size), 64 TiB (malloc fails)
    assert get_handler_name() == "default_allocator"
    assert _buffers.caching()
    if shape == (2**43,):
        assert _buffers.stats()["blocks"] == 0


def test_a_block_keeps_its_real_size_when_the_array_forgets_it():
    # A failed __setstate__ leaves the array with a wider dtype on its old data, so NumPy frees it under a size
    # twice too large. Were the block filed under that size, the next result of that size would get a block
    # half as long as it needs and write past its end.
    p = softmax(logits(80))
    real = p.nbytes
    with pytest.raises(ValueError):
        p.__setstate__((1, p.shape, np.dtype(np.float64), False, b""))
    assert p.nbytes == 2 * real
    del p
    assert _buffers.stats()["bytes"] == real
    hits = _buffers.stats()["hits"]
    wide = logits(81, (ROWS, 2 * COLS))
    q = softmax(wide)
    assert _buffers.stats()["hits"] == hits   # the smaller block was not handed out
    assert_allclose(q, reference_softmax(wide), rtol=4e-6)


def test_concurrent_calls_get_their_own_memory():
    inputs = [logits(60 + i) for i in range(8)]
    expected = [reference_softmax(x) for x in inputs]

    def work(i):
        for _ in range(20):
            p = softmax(inputs[i])
            assert_allclose(p, expected[i], rtol=4e-6)
        return True

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(8)))


def test_large_results_belong_to_the_cache_handler():
    p = softmax(logits(70))
    assert get_handler_name(p) == "fastsoftmax_result_cache"
    assert get_handler_name(softmax(logits(71, (2, 3)))) == "default_allocator"
