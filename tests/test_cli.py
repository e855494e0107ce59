"""Smoke tests of the `fastsoftmax` command: quick runs on tiny sizes so that the benchmark CLI cannot rot.

They use only NumPy as a peer, so they pass with or without scipy, torch, onnxruntime and openvino installed.
"""
import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _bench, cli

PACKAGE_ROOT = str(pathlib.Path(fastsoftmax.__file__).resolve().parents[1])
TINY = ["bench", "--quick", "--shape", "8x100", "--threads", "1", "--peers", "numpy", "--repeat", "2",
        "--no-progress"]


def run_module(*args):
    """`python -m fastsoftmax ARGS` in a subprocess that imports this same fastsoftmax."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "fastsoftmax", *args], capture_output=True, text=True,
                          env=env, cwd=PACKAGE_ROOT, timeout=120)


def test_bench_quick_subprocess_writes_tables_and_json(tmp_path):
    path = tmp_path / "bench.json"
    proc = run_module("bench", "--quick", "--shape", "8x100", "--op", "all", "--threads", "1", "--peers", "numpy",
                      "--repeat", "2", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    for op in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward"):
        assert f"\n{op}: median time per call" in proc.stdout
    assert "8x100" in proc.stdout and "fs/copy" in proc.stdout
    assert "done in" in proc.stderr  # the progress/summary goes to stderr, the tables to stdout

    data = json.loads(path.read_text())
    machine = data["machine"]
    assert machine["simd_level"] == fastsoftmax._config.get_config()["simd_level"]
    assert machine["versions"]["fastsoftmax"] == fastsoftmax.__version__
    assert machine["versions"]["numpy"] == np.__version__
    assert machine["cpu"] and machine["cores"] >= 1 and machine["date"]
    rows = data["results"]
    seen = {(r["op"], r["contender"]) for r in rows}
    for op in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward"):
        assert {(op, "fastsoftmax"), (op, "numpy"), (op, "copy")} <= seen
    for r in rows:
        assert r["case"] == "8x100" and r["threads"] == 1 and r["n_samples"] == 2
        assert 0 < r["min_s"] <= r["median_s"]
        assert r["shape"] == [8, 100] and r["dtype"] == "float32"
    assert len(rows) == 4 * 3


def test_bench_in_process_csv_dtype_axis_and_out(tmp_path, capsys, monkeypatch):
    # A case at least OUT_OF_CACHE_BYTES is timed with and without out=; shrink the threshold to keep it tiny.
    monkeypatch.setattr(_bench, "OUT_OF_CACHE_BYTES", 1)
    path = tmp_path / "bench.csv"
    code = cli.main(TINY[:3] + ["4x3x50", "--axis", "1", "--dtype", "float64", "--op", "softmax,log_softmax"]
                    + TINY[4:] + ["--csv", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "4x3x50 f64 ax=1 out=" in out
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["contender"] for r in rows} == {"fastsoftmax", "fastsoftmax(out=)", "numpy", "copy"}
    assert {r["op"] for r in rows} == {"softmax", "log_softmax"}
    assert all(r["dtype"] == "float64" and r["axis"] == "1" and r["shape"] == "4x3x50" for r in rows)


@pytest.mark.parametrize("args, bad", [
    (["--op", "nope"], "nope"),
    (["--op", "softmax,nope"], "nope"),
    (["--peers", "nope"], "nope"),
    (["--peers", "numpy,nope"], "nope"),
    (["--shape", "4096by1000"], "4096by1000"),
    (["--shape", "0x10"], "0x10"),
    (["--threads", "0"], "0"),
    (["--threads", "two"], "two"),
    (["--dtype", "float16"], "float16"),
    (["--repeat", "-1"], "-1"),
    (["--shape", "8x100", "--axis", "2"], "2"),
    (["--axis", "0"], "--axis"),
])
def test_bench_bad_arguments_exit_2_naming_the_value(capsys, args, bad):
    assert cli.main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert bad in err, err


def test_bench_bad_argument_subprocess():
    proc = run_module("bench", "--op", "nope")
    assert proc.returncode == 2
    assert "'nope'" in proc.stderr and proc.stdout == ""


def test_bench_missing_output_folder_exits_2(tmp_path, capsys):
    assert cli.main(TINY + ["--json", str(tmp_path / "no" / "such" / "dir" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_wrong_result_exits_1(capsys, monkeypatch):
    """A fastsoftmax result that differs from the float64 reference is an error, never a timing."""
    real = fastsoftmax.softmax
    monkeypatch.setattr(fastsoftmax, "softmax", lambda *a, **k: real(*a, **k) * np.float32(1.001))
    assert cli.main(TINY) == 1
    captured = capsys.readouterr()
    assert "differ from the float64 reference" in captured.err and "fastsoftmax softmax 8x100" in captured.err
    assert "median time per call" not in captured.out


def test_plot_without_matplotlib_says_so(capsys, monkeypatch):
    monkeypatch.setattr(cli._bench_report, "matplotlib_missing", lambda: "No module named 'matplotlib'")
    assert cli.main(TINY + ["--plot", "x.png"]) == 2
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_info_prints_simd_level_and_peers():
    proc = run_module("info")
    assert proc.returncode == 0, proc.stderr
    level = fastsoftmax._config.get_config()["simd_level"]
    assert f"SIMD:       {level}" in proc.stdout
    assert "CPU SIMD:" in proc.stdout and f"numpy {np.__version__}" in proc.stdout


def test_no_subcommand_exits_2(capsys):
    assert cli.main([]) == 2
    assert "bench" in capsys.readouterr().err


def test_peer_asked_for_but_missing_exits_2(capsys, monkeypatch):
    monkeypatch.setitem(cli._bench_peers._MODULES, "torch", ("fastsoftmax_no_such_module",))
    assert cli.main(["bench", "--shape", "8x100", "--peers", "numpy,torch"]) == 2
    assert "'torch'" in capsys.readouterr().err


def test_default_suite_plan():
    """The public case list: softmax on every case, log_softmax and softmax_backward on 4096x1000 float32;
    --full adds the 256 MB case, timed with and without out=."""
    pairs = _bench.plan(_bench.DEFAULT_CASES, ["softmax"], default_mix=True)
    labels = [(case.label, op) for case, op in pairs]
    assert labels == [("1x1000", "softmax"), ("32x1000", "softmax"), ("4096x1000", "softmax"),
                      ("4096x1000", "log_softmax"), ("4096x1000", "softmax_backward"), ("32x128256", "softmax"),
                      ("24576x128", "softmax"), ("4096x1000 f64", "softmax"), ("8x21x16384 ax=1", "softmax")]
    assert _bench.FULL_CASE.nbytes == 256 << 20 and _bench.FULL_CASE.with_out
    assert not any(case.with_out for case in _bench.DEFAULT_CASES)


def test_dtype_applies_to_the_default_suite():
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices["bench"]
    args = parser.parse_args(["bench", "--dtype", "float64", "--full"])
    cases = cli._cases(args, sub)
    assert {c.dtype for c in cases} == {"float64"}
    assert len(cases) == len(_bench.DEFAULT_CASES)  # 4096x1000 float32 and float64 collapse; +1 for --full
    assert cases[-1].shape == _bench.FULL_CASE.shape
