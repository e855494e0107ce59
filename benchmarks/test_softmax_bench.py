"""fastsoftmax against the numpy recipe, scipy, torch, ONNX Runtime, OpenVINO and the copy floor (see conftest.py)."""
import functools

import numpy as np
import pytest

from fastsoftmax import _bench
from fastsoftmax import _bench_peers as peers

_PEER_MODULES = {"scipy": ("scipy.special",), "torch": ("torch",), "onnxruntime": ("onnxruntime", "onnx"),
                 "openvino": ("openvino",)}


@functools.lru_cache(maxsize=1)
def _inputs(case, op):
    """(arrays, float64 reference, error scale); tests run case by case, so one entry is enough."""
    return _bench.make_inputs(case, op)


def test_bench(benchmark, case, op, n_threads, contender):
    for module in _PEER_MODULES.get(contender, ()):
        pytest.importorskip(module, exc_type=ImportError)  # absent or broken: skip
    arrays, ref, scale = _inputs(case, op)
    what = f"{op} {case.label} ({case.dtype}, axis={case.axis}) at {n_threads} thread(s)"
    benchmark.group = f"{op} {case.label} T={n_threads}"
    benchmark.extra_info.update(case=case.label, op=op, threads=n_threads, contender=contender,
                                bytes=(len(arrays) + 1) * case.nbytes)
    use_torch = peers.have_torch()
    with peers.pinned_threads(n_threads, use_torch):
        if contender == peers.COPY:
            fn, method = peers.copy_floor(arrays[0], n_threads, use_torch)
            benchmark.extra_info["floor_method"] = method
        elif contender in (peers.FASTSOFTMAX, peers.FASTSOFTMAX_OUT):
            out = np.empty(case.shape, case.dtype) if contender == peers.FASTSOFTMAX_OUT else None
            fn = peers.fastsoftmax_callable(op, arrays, case.axis, out=out)
            _bench.check(contender, fn(), ref, scale, _bench.RTOL[case.dtype], what)
        else:
            fn = peers.peer_callable(contender, op, arrays, case.axis, n_threads)
            if fn is None:
                pytest.skip(f"{contender} has no {op}")
            _bench.check(contender, peers.result_array(contender, fn()), ref, scale,
                         _bench.PEER_RTOL[case.dtype], what)
        benchmark(fn)
