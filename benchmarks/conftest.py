"""pytest-benchmark suite: fastsoftmax, its peers and the copy floor on the `fastsoftmax bench` cases.

    pytest benchmarks/ --benchmark-only                     # default suite, grouped per (op, case, threads)
    pytest benchmarks/ --benchmark-only --fastsoftmax-full  # plus the 256 MB case, with and without out=
    pytest benchmarks/ --benchmark-only -k "4096x1000 and T1" --benchmark-group-by=param:case

Not part of the default test run (pyproject's testpaths is tests/). The contenders, inputs and the float64
reference check are the CLI's own (fastsoftmax._bench_peers, fastsoftmax._bench), so both measure the same
thing; every result is checked before it is timed. torch, onnxruntime and openvino are skipped when not installed.
"""
import pytest

from fastsoftmax import _bench
from fastsoftmax import _bench_peers as peers
from fastsoftmax._config import get_config

CONTENDERS = (peers.FASTSOFTMAX, peers.FASTSOFTMAX_OUT) + peers.PEERS + (peers.COPY,)


def pytest_addoption(parser):
    group = parser.getgroup("fastsoftmax")
    group.addoption("--fastsoftmax-full", action="store_true", default=False,
                    help="also time the 256 MB case (65536x1024 float32), with and without out=")
    group.addoption("--fastsoftmax-threads", default=None, metavar="1,2",
                    help="thread counts (default: 1 and all usable cores)")


def _params(config):
    cases = list(_bench.DEFAULT_CASES)
    if config.getoption("--fastsoftmax-full"):
        cases.append(_bench.FULL_CASE)
    text = config.getoption("--fastsoftmax-threads")
    threads = sorted({int(t) for t in text.split(",")}) if text else _bench.default_threads()
    params = []
    for case, op in _bench.plan(cases, ["softmax"], default_mix=True):
        for n_threads in threads:
            for name in CONTENDERS:
                if name == peers.FASTSOFTMAX_OUT and not case.with_out:
                    continue
                if name in ("scipy", "onnxruntime", "openvino") and op in peers.BACKWARD_OPS:
                    continue  # no backward in scipy, ONNX Runtime or OpenVINO
                label = case.label.replace(" ", "-")
                params.append(pytest.param(case, op, n_threads, name,
                                           id=f"{op}-{label}-T{n_threads}-{name}"))
    return params


def pytest_generate_tests(metafunc):
    if {"case", "op", "n_threads", "contender"} <= set(metafunc.fixturenames):
        metafunc.parametrize("case, op, n_threads, contender", _params(metafunc.config))


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what this fastsoftmax runs with (SIMD level, compiler, OpenMP) in saved benchmark JSON."""
    machine_info["fastsoftmax"] = get_config()
