"""SIMD levels, the FASTSOFTMAX_SIMD environment variable, show_config() and the public names.

* fastsoftmax._dispatch.available_levels() lists the levels this CPU can run (narrowest first, baseline always);
  the widest one is used by default; FASTSOFTMAX_SIMD forces a lower one; an invalid or unavailable value warns
  (RuntimeWarning) and falls back to the widest.
* Every level gives the same results within rounding.
* show_config() prints the version, the compiler, OpenMP yes/no and threads, and the SIMD level in use.
* The vectorizable math (pyx/_simd_math.pxd) is inlined everywhere in every kernel module (an out-of-line copy
  means a loop calls it per element, unvectorized: see INLINE_FLAGS in setup.py), and the max pass is packed
  code for float32 and float64 alike (see EXTREMA_LANES in pyx/_simd_math.pxd).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastsoftmax
from fastsoftmax import _api, _config, _dispatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastsoftmax.__file__)))
AVAILABLE = _dispatch.available_levels()
WIDEST = AVAILABLE[-1]


def run_python(code, **env):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    environment.pop(_dispatch.ENV_VAR, None)
    environment.update(env)
    return subprocess.run([sys.executable, "-W", "always::RuntimeWarning", "-c", code], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_public_names():
    for name in ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "softmax_jacobian",
                 "get_num_threads", "set_num_threads", "empty_cache", "show_config", "__version__"]:
        assert name in fastsoftmax.__all__
        assert hasattr(fastsoftmax, name)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", fastsoftmax.__version__)


def test_available_levels():
    assert AVAILABLE[0] == "baseline"
    assert list(AVAILABLE) == [lv for lv in _dispatch.LEVELS if lv in AVAILABLE]  # narrowest first
    assert set(AVAILABLE) <= set(_dispatch.built_levels())


def test_widest_level_is_the_default():
    proc = run_python("import fastsoftmax._dispatch as d; print(d.level)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == WIDEST
    assert "RuntimeWarning" not in proc.stderr


@pytest.mark.parametrize("value", AVAILABLE + [f" {AVAILABLE[-1].upper()} "])
def test_environment_variable_forces_a_level(value):
    proc = run_python("import fastsoftmax._dispatch as d; print(d.level)", FASTSOFTMAX_SIMD=value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == value.strip().lower()
    assert "RuntimeWarning" not in proc.stderr


def test_baseline_from_the_environment_computes_and_says_so():
    code = ("import numpy as np, fastsoftmax as f; f.show_config(); "
            "print('SUM', f.softmax(np.arange(40000.0).reshape(4, -1) / 1000).sum())")
    proc = run_python(code, FASTSOFTMAX_SIMD="baseline")
    assert proc.returncode == 0, proc.stderr
    assert "baseline" in proc.stdout and "FASTSOFTMAX_SIMD" in proc.stdout
    assert abs(float(proc.stdout.split("SUM")[1]) - 4.0) < 1e-12


@pytest.mark.parametrize("value", ["bogus", "sse9", "avx512"] + [lv for lv in ["avx2"] if lv not in AVAILABLE])
def test_invalid_or_unavailable_level_warns_and_falls_back(value):
    if value in AVAILABLE:
        pytest.skip(f"{value} is available here")
    proc = run_python("import fastsoftmax._dispatch as d; print(d.level)", FASTSOFTMAX_SIMD=value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == WIDEST
    assert "RuntimeWarning" in proc.stderr and "FASTSOFTMAX_SIMD" in proc.stderr


def test_choose_level_in_process():
    assert _dispatch.choose_level(None) == WIDEST
    assert _dispatch.choose_level("") == WIDEST
    for level in AVAILABLE:
        assert _dispatch.choose_level(level) == level
        assert _dispatch.choose_level(f"  {level.upper()}\n") == level
    with pytest.warns(RuntimeWarning, match="FASTSOFTMAX_SIMD"):
        assert _dispatch.choose_level("not-a-level") == WIDEST
    for level in _dispatch.LEVELS:
        if level not in AVAILABLE:
            with pytest.warns(RuntimeWarning, match="cannot run here"):
                assert _dispatch.choose_level(level) == WIDEST


def test_loading_an_unavailable_level_is_a_value_error():
    with pytest.raises(ValueError):
        _api._use_level("bogus")
    for level in _dispatch.LEVELS:
        if level not in AVAILABLE:
            with pytest.raises(ValueError):
                _api._use_level(level)
    assert _dispatch.level in AVAILABLE  # unchanged by the failed switches


def test_simd_level_fixture_switches_the_kernels(simd_level, capsys):
    assert _dispatch.level == simd_level
    assert _api._k.__name__ == f"fastsoftmax._kernels_{simd_level}"
    assert _dispatch.kernels is _api._k
    fastsoftmax.show_config()
    assert re.search(rf"SIMD:\s+{simd_level}\b", capsys.readouterr().out)


@pytest.mark.parametrize("shape, axis", [((50, 999), -1), ((3, 70000), -1), ((30, 40, 50), 1), ((4, 300, 3), 1),
                                         ((6, 7, 8), (0, 2))], ids=lambda v: str(v).replace(" ", ""))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_all_levels_agree(shape, axis, dtype):
    original = _dispatch.level
    x = (np.random.default_rng(0).standard_normal(shape) * 5).astype(dtype)
    g = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    results = {}
    try:
        for level in AVAILABLE:
            _api._use_level(level)
            y = fastsoftmax.softmax(x, axis=axis)
            results[level] = (y, fastsoftmax.log_softmax(x, axis=axis),
                              fastsoftmax.softmax_backward(g, y, axis=axis))
    finally:
        _api._use_level(original)
    eps8 = 8 * np.finfo(dtype).eps
    for level in AVAILABLE[1:]:
        (y0, ly0, dx0), (y, ly, dx) = results["baseline"], results[level]
        assert_allclose(y, y0, rtol=eps8, atol=np.finfo(dtype).tiny, err_msg=f"softmax, {level}")
        assert_allclose(ly, ly0, rtol=eps8, atol=eps8, err_msg=f"log_softmax, {level}")
        assert_allclose(dx, dx0, rtol=eps8, atol=eps8 * np.abs(dx0).max(), err_msg=f"softmax_backward, {level}")


def test_show_config(capsys):
    assert fastsoftmax.show_config() is None
    text = capsys.readouterr().out
    info = _dispatch.kernels.build_info()
    assert fastsoftmax.__version__ in text
    assert info["compiler"] in text
    assert "OpenMP" in text
    assert ("yes" if info["openmp"] else "no") in text.split("OpenMP")[1].splitlines()[0]
    assert f"{fastsoftmax.get_num_threads()} threads" in text or not info["openmp"]
    assert re.search(rf"SIMD:\s+{_dispatch.level}\b", text)
    for level in AVAILABLE:
        assert level in text
    assert re.search(r"results:\s+from 32 MiB", text)


def test_get_config_keys():
    config = _config.get_config()
    assert config["version"] == fastsoftmax.__version__
    assert config["simd_level"] == _dispatch.level
    assert config["simd_available"] == AVAILABLE
    assert config["threads"] == fastsoftmax.get_num_threads()
    assert isinstance(config["openmp"], bool)
    assert config["result_cache_min_bytes"] == 32 * 1024 * 1024


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm to list the symbols")
@pytest.mark.parametrize("level", _dispatch.built_levels())
def test_simd_math_is_inlined_in_every_kernel_module(level):
    path = importlib.util.find_spec(f"fastsoftmax._kernels_{level}").origin
    symbols = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    if not symbols.strip():
        pytest.skip("the kernel module is stripped")
    outlined = sorted({line.split()[-1] for line in symbols.splitlines() if "_simd_math_" in line})
    assert not outlined, f"compiled out of line (their loops do not vectorize): {outlined}"


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm to list the symbols")
@pytest.mark.parametrize("level", [lv for lv in _dispatch.built_levels() if lv != "avx512"])
def test_float32_exp_sum_is_inlined_in_the_row_loops(level):
    # Out of line (a call per row) it cost float32 rows of 48-256 5-12% in these builds: pyx/_row_ops.pxd asks for
    # it by name, and that name is Cython's; if Cython names it otherwise, this fails instead of the speed.
    path = importlib.util.find_spec(f"fastsoftmax._kernels_{level}").origin
    symbols = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    if not symbols.strip():
        pytest.skip("the kernel module is stripped")
    names = {line.split()[-1] for line in symbols.splitlines()}
    outlined = [n for n in names if re.fullmatch(r"__pyx_fuse_0__pyx_f_8_row_ops_exp_shifted_sum(\..*)?", n)]
    assert not outlined, f"compiled out of line: {outlined}"
    assert any("__pyx_f_8_row_ops_" in n for n in names), "the row ops' C names changed: update pyx/_row_ops.pxd"


def _disassembly(path):
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump to read the machine code")
@pytest.mark.parametrize("level", _dispatch.built_levels())
def test_the_max_pass_is_vector_code_for_both_dtypes(level):
    # gcc once left the float64 max pass scalar (maxsd, one double at a time, with a few packed maxima in its
    # setup) while the float32 one was packed: see EXTREMA_LANES in pyx/_simd_math.pxd. Where row_max is compiled
    # out of line, each copy must be packed code at the module's vector width (at least the 4 maxima of one step
    # over 32 doubles in the AVX-512 build), its scalar maxima no more than the fold's last steps and the tail
    # loop (8 in the baseline and AVX2 builds, 11 in the AVX-512 one, which has both endings of the fold; the
    # scalar build had 24-40).
    register = {"baseline": "%xmm", "avx2": "%ymm", "avx512": "%zmm"}[level]
    text = _disassembly(importlib.util.find_spec(f"fastsoftmax._kernels_{level}").origin)
    bodies = re.findall(r"^[0-9a-f]+ <(__pyx_fuse_(\d)__pyx_f_8_row_ops_row_max[^>]*)>:\n(.*?)(?=^[0-9a-f]+ <|\Z)",
                        text, re.S | re.M)
    if not bodies:
        pytest.skip("row_max is inlined everywhere in this build (or the symbols are stripped)")
    for name, fuse, body in bodies:
        kind = "s" if fuse == "0" else "d"
        packed = re.findall(rf"\bv?maxp{kind}\s+\S*{register}", body)
        scalar = re.findall(rf"\bv?maxs{kind}\b", body)
        assert len(packed) >= 4 and len(scalar) <= 16, (
            f"{name}: {len(packed)} packed and {len(scalar)} scalar maxima: the max pass is not {register[1:]} code")
