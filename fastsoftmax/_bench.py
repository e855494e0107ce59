"""The benchmark suite behind `fastsoftmax bench`: the cases, their inputs, the float64 reference check, and
the run loop that times every contender per (case, op, thread count).

Contenders live in `_bench_peers`, timing in `_bench_timing`, tables and files in `_bench_report`.
"""
import dataclasses
import os
import time

import numpy as np

from . import _bench_peers as peers
from . import _bench_timing as timing

# Cases at least this large (input bytes) do not fit in cache: fastsoftmax is timed both allocating its result
# and writing into a preallocated `out=`.
OUT_OF_CACHE_BYTES = 64 << 20
SEED = 20240607


@dataclasses.dataclass(frozen=True)
class Case:
    shape: tuple
    dtype: str = "float32"
    axis: int = -1

    @property
    def label(self):
        text = "x".join(map(str, self.shape))
        if self.dtype != "float32":
            text += " f64" if self.dtype == "float64" else f" {self.dtype}"
        if self.axis not in (-1, len(self.shape) - 1):
            text += f" ax={self.axis}"
        return text

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def with_out(self):
        return self.nbytes >= OUT_OF_CACHE_BYTES


# The public case list: latency (1x1000), small batches, a typical batch, an LLM vocabulary row, many short rows,
# float64, and a softmax over a non-last axis (attention-like layout).
DEFAULT_CASES = (
    Case((1, 1000)),
    Case((32, 1000)),
    Case((4096, 1000)),
    Case((32, 128256)),
    Case((24576, 128)),
    Case((4096, 1000), "float64"),
    Case((8, 21, 16384), axis=1),
)
QUICK_CASES = (
    Case((1, 1000)),
    Case((4096, 1000)),
    Case((32, 128256)),
    Case((8, 21, 16384), axis=1),
)
FULL_CASE = Case((65536, 1024))  # 256 MB of float32: out of every cache
# The default suite times the other ops on this case only.
OPS_CASE = Case((4096, 1000))
DEFAULT_EXTRA_OPS = ("log_softmax", "softmax_backward")


@dataclasses.dataclass
class Settings:
    rounds: int  # interleaved rounds (samples per contender)
    min_sample_s: float  # a sample lasts at least this long
    max_group_s: float = None  # auto repeat: stop a slow (case, op, threads) group after this long (>= 3 rounds)


DEFAULT_SETTINGS = Settings(rounds=21, min_sample_s=0.004, max_group_s=5.0)
QUICK_SETTINGS = Settings(rounds=5, min_sample_s=0.001, max_group_s=0.6)


class ReferenceMismatch(Exception):
    """A result differs from the float64 reference: the benchmark stops rather than report a number."""


def plan(cases, ops, default_mix, ops_case=OPS_CASE):
    """The list of (case, op) pairs, in run order. `default_mix`: softmax on every case plus the extra ops on
    `ops_case` (the public suite); otherwise every op in `ops` on every case."""
    pairs = []
    for case in cases:
        if default_mix:
            case_ops = ["softmax"] + (list(DEFAULT_EXTRA_OPS) if case == ops_case else [])
        else:
            case_ops = list(ops)
        pairs.extend((case, op) for op in case_ops)
    return pairs


# ---------------------------------------------------------------------------------------------------------
# Inputs and the reference
# ---------------------------------------------------------------------------------------------------------

def _row_blocks(shape, axis, max_elements=1 << 22):
    """Slices along one axis other than `axis` that split the array into independent blocks of bounded size
    (so the float64 reference of a 256 MB case does not need gigabytes of temporaries)."""
    ndim = len(shape)
    axis = axis % ndim
    split = next((d for d in range(ndim) if d != axis), None)
    if split is None:
        yield (slice(None),)
        return
    per = max(1, int(np.prod(shape, dtype=np.int64)) // shape[split])
    step = max(1, max_elements // per)
    for start in range(0, shape[split], step):
        yield (slice(None),) * split + (slice(start, start + step),)


def reference(op, arrays, axis):
    """The op computed in float64 with NumPy (blockwise), as a float64 array."""
    out = np.empty(arrays[0].shape, np.float64)
    for sl in _row_blocks(arrays[0].shape, axis):
        parts = [a[sl].astype(np.float64) for a in arrays]
        if op in ("softmax", "log_softmax"):
            (x,) = parts
            s = x - x.max(axis, keepdims=True)
            e = np.exp(s)
            total = e.sum(axis, keepdims=True)
            out[sl] = e / total if op == "softmax" else s - np.log(total)
        elif op == "softmax_backward":
            g, y = parts
            out[sl] = y * (g - (g * y).sum(axis, keepdims=True))
        else:
            g, y = parts
            out[sl] = g - np.exp(y) * g.sum(axis, keepdims=True)
    return out


def _error_scale(op, arrays, axis, ref):
    """Per-element magnitude that the rounding error of a correct result scales with, beyond |ref| itself: the
    size of the terms that cancel (None for softmax, whose error is relative)."""
    if op == "softmax":
        return None
    if op == "log_softmax":
        # x - max - log(sum): the terms cancel where ref is near 0, and an input known to eps*|x| (or a shift
        # max + log(sum) rounded once) gives an absolute error of eps * (|x| + |max| + |log(sum)|).
        x = arrays[0].astype(np.float64)
        top = x.max(axis, keepdims=True)
        return np.abs(x) + np.abs(top) + np.abs(x - top - ref)
    g, y = (a.astype(np.float64) for a in arrays)
    if op == "softmax_backward":  # y * (g - sum(g*y)): g_i and the sum cancel, the sum itself carries error
        return np.abs(y) * (np.abs(g) + np.abs(g * y).sum(axis, keepdims=True))
    return np.abs(g) + np.exp(y) * np.abs(g).sum(axis, keepdims=True)  # g - exp(y) * sum(g)


def make_inputs(case, op, seed=SEED):
    """Fresh logits (standard normal x 4, never zeros) and, for a backward op, (grad_output, output) with
    output the exact forward result rounded to the case dtype. Returns (arrays, reference, error scale)."""
    rng = np.random.default_rng([seed, case.size, len(case.shape), OPS_INDEX[op]])
    dtype = np.dtype(case.dtype)
    x = rng.standard_normal(case.shape, dtype=dtype)
    x *= 4
    if op in peers.BACKWARD_OPS:
        forward = "softmax" if op == "softmax_backward" else "log_softmax"
        y = reference(forward, (x,), case.axis).astype(dtype)
        del x
        g = rng.standard_normal(case.shape, dtype=dtype)
        arrays = (g, y)
    else:
        arrays = (x,)
    ref = reference(op, arrays, case.axis)
    return arrays, ref, _error_scale(op, arrays, case.axis, ref)


OPS_INDEX = {op: i for i, op in enumerate(peers.OPS)}
RTOL = {"float32": 1e-5, "float64": 1e-12}
PEER_RTOL = {"float32": 1e-4, "float64": 1e-9}  # peers' own roundings (e.g. ORT's exp) are not ours to judge finely
TINY = 1e-30  # softmax elements below this are only checked to be tiny


def check(name, got, ref, scale, rtol, what, block=1 << 22):
    """Raise ReferenceMismatch (naming the contender and the worst element) unless `got` matches `ref`:
    |got - ref| <= rtol * (|ref| + scale) elementwise, where softmax (scale None) checks elements below TINY
    only to be below TINY. NaN where the reference is finite is a mismatch. Blockwise, to bound temporaries."""
    got = np.asarray(got)
    if got.shape != ref.shape:
        raise ReferenceMismatch(f"{name} {what}: result has shape {got.shape}, expected {ref.shape}")
    flat_got, flat_ref = got.reshape(-1), ref.reshape(-1)
    flat_scale = None if scale is None or np.isscalar(scale) else np.broadcast_to(scale, ref.shape).reshape(-1)
    n_bad, worst, worst_at = 0, -1.0, 0
    for start in range(0, flat_ref.size, block):
        sl = slice(start, start + block)
        r = flat_ref[sl]
        err = np.abs(flat_got[sl].astype(np.float64) - r)
        bound = rtol * np.abs(r)
        if scale is None:
            bound = np.where(np.abs(r) > TINY, bound, TINY)
        else:
            bound += rtol * (scale if flat_scale is None else flat_scale[sl])
        bad = ~(err <= bound)  # NaN counts as bad
        count = int(bad.sum())
        if count:
            n_bad += count
            ratio = np.where(bad, np.where(np.isnan(err), np.inf, err / np.maximum(bound, 1e-300)), 0.0)
            i = int(np.argmax(ratio))
            if ratio[i] > worst:
                worst, worst_at = ratio[i], start + i
    if n_bad:
        idx = tuple(int(i) for i in np.unravel_index(worst_at, ref.shape))
        raise ReferenceMismatch(
            f"{name} {what}: {n_bad} of {ref.size} elements differ from the float64 reference beyond "
            f"rtol={rtol:g}; worst at index {idx}: got {flat_got[worst_at]!r}, expected {flat_ref[worst_at]!r}")


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------

def _row(case, op, threads, name, summary, loops, bytes_moved, extra=None):
    row = {
        "case": case.label, "shape": list(case.shape), "dtype": case.dtype, "axis": case.axis, "op": op,
        "threads": threads, "contender": name, "median_s": summary["median_s"], "min_s": summary["min_s"],
        "n_samples": summary["n_samples"], "loops_per_sample": loops, "bytes": bytes_moved,
        "gb_per_s": bytes_moved / summary["median_s"] / 1e9,
    }
    if extra:
        row.update(extra)
    return row


def run(pairs, threads, peer_names, settings, progress=None):
    """Time every contender on every (case, op) at every thread count. Returns a list of result rows (dicts,
    one per (case, op, threads, contender), the copy floor included). Raises ReferenceMismatch."""
    # torch pins its pool for its own calls, and runs the parallel copy floor when installed.
    use_torch = ("torch" in peer_names or any(t > 1 for t in threads)) and peers.have_torch()
    rows = []
    try:
        for case, op in pairs:
            arrays, ref, scale = make_inputs(case, op)
            n_arrays = len(arrays) + 1  # inputs read + result written
            bytes_moved = n_arrays * case.nbytes
            for n_threads in threads:
                what = f"{op} {case.label} ({case.dtype}, axis={case.axis}) at {n_threads} thread(s)"
                if progress is not None:
                    progress.set_label(f"{op} {case.label} T={n_threads}")
                with peers.pinned_threads(n_threads, use_torch):
                    contenders, floor_method = _contenders(case, op, arrays, n_threads, peer_names, use_torch,
                                                           ref, scale, what)
                    done = [0]

                    def tick():
                        done[0] += 1
                        if progress is not None:
                            progress.advance()
                    results = timing.interleave(contenders, settings.rounds, settings.min_sample_s,
                                                settings.max_group_s, tick)
                if progress is not None:
                    progress.advance(settings.rounds - done[0])
                for name, res in results.items():
                    extra = {"floor_method": floor_method} if name == peers.COPY else None
                    moved = 2 * case.nbytes if name == peers.COPY else bytes_moved
                    rows.append(_row(case, op, n_threads, name, timing.summarize(res["samples"]), res["loops"],
                                     moved, extra))
            del arrays, ref, scale
    finally:
        peers.shutdown()
    return rows


def _contenders(case, op, arrays, n_threads, peer_names, use_torch, ref, scale, what):
    """{name: callable} for one (case, op, threads), each called once, checked against the reference (which
    doubles as the warm-up), and called once more."""
    rtol, peer_rtol = RTOL[case.dtype], PEER_RTOL[case.dtype]
    contenders = {}
    fn = peers.fastsoftmax_callable(op, arrays, case.axis)
    check(peers.FASTSOFTMAX, fn(), ref, scale, rtol, what)
    contenders[peers.FASTSOFTMAX] = fn
    if case.with_out:
        out = np.empty(case.shape, case.dtype)
        fn = peers.fastsoftmax_callable(op, arrays, case.axis, out=out)
        out.fill(np.nan)
        check(peers.FASTSOFTMAX_OUT, fn(), ref, scale, rtol, what)
        contenders[peers.FASTSOFTMAX_OUT] = fn
    for name in peer_names:
        fn = peers.peer_callable(name, op, arrays, case.axis, n_threads)
        if fn is None:
            continue
        check(name, peers.result_array(name, fn()), ref, scale, peer_rtol, what)
        contenders[name] = fn
    floor, floor_method = peers.copy_floor(arrays[0], n_threads, use_torch)
    contenders[peers.COPY] = floor
    for fn in contenders.values():
        fn()
    return contenders, floor_method


def default_threads():
    """1 and every core this process may run on (deduplicated)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return sorted({1, cores})


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
