"""The `fastsoftmax` command (also `python -m fastsoftmax`).

    fastsoftmax bench [--quick | --full] [--shape 4096x1000 ...] [--op all] [--threads 1,2] [--json PATH] ...
    fastsoftmax info

Exit status: 0 on success, 1 when a result differs from the float64 reference (the benchmark refuses to
time a wrong answer), 2 on bad arguments.
"""
import argparse
import dataclasses
import os
import re
import sys
import time

import fastsoftmax

from . import _bench, _bench_peers, _bench_report
from ._bench_timing import Progress

_SHAPE = re.compile(r"^[0-9]+(?:[xX][0-9]+)*$")


# ---------------------------------------------------------------------------------------------------------
# Argument types: each names the bad value (argparse turns the message into exit status 2)
# ---------------------------------------------------------------------------------------------------------

def _shape(text):
    if not _SHAPE.match(text.strip()):
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: expected positive sizes joined by 'x', e.g. 4096x1000 or 8x21x16384")
    dims = tuple(int(d) for d in re.split("[xX]", text.strip()))
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: every size must be at least 1")
    return dims


def _comma_list(text, allowed, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    for item in items:
        if item not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {item!r} (choose from {', '.join(allowed)})")
    return items


def _ops(text):
    items = _comma_list(text, _bench_peers.OPS + ("all",), "op")
    if not items:
        raise argparse.ArgumentTypeError(f"no op in {text!r}")
    return list(_bench_peers.OPS) if "all" in items else items


def _peers(text):
    if text.strip().lower() == "none":
        return []
    return _comma_list(text, _bench_peers.PEERS, "peer")


def _threads(text):
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise argparse.ArgumentTypeError(f"bad thread count {item!r} in {text!r}: expected positive integers "
                                             f"separated by commas, e.g. 1,2")
        out.append(int(item))
    return sorted(set(out))


def _positive(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"bad count {text!r}: expected a positive integer")
    return int(text)


def _axis(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad axis {text!r}: expected an integer") from None


# ---------------------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description=("fastsoftmax: build information and benchmarks against NumPy, SciPy, PyTorch, ONNX Runtime and "
                     "OpenVINO."))
    parser.add_argument("--version", action="version", version=f"fastsoftmax {fastsoftmax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")
    sub.required = True

    info = sub.add_parser("info", help="build configuration, CPU SIMD flags and the benchmark peers found",
                          description="What show_config() prints, plus the CPU's SIMD flags and the peers found.")
    info.set_defaults(func=_cmd_info, subparser=info)

    b = sub.add_parser(
        "bench", help="time fastsoftmax against the numpy recipe, the peers and the copy floor",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Time fastsoftmax, the numpy np.exp recipe, scipy.special, torch, ONNX Runtime and OpenVINO (those\n"
            "installed), and the memory floor (a copy of the input), interleaved in one process, every contender\n"
            "pinned to the same thread count. Each result is checked against a float64 reference before it is\n"
            "timed.\n\n"
            "Default suite: softmax on 1x1000, 32x1000, 4096x1000, 32x128256, 24576x128, float64 4096x1000 and\n"
            "8x21x16384 over axis 1, plus log_softmax and softmax_backward on 4096x1000; at 1 thread and at\n"
            "all cores. 30-70 s on 2 cores (depending on load); --quick 10-20 s."),
        epilog="Exit status: 0 ok, 1 a result differs from the float64 reference, 2 bad arguments.")
    b.add_argument("--shape", type=_shape, action="append", metavar="AxB[xC...]",
                   help="a case to time instead of the default suite (repeatable), e.g. --shape 4096x1000")
    b.add_argument("--axis", type=_axis, default=None,
                   help="softmax axis of the --shape cases (default: the last)")
    b.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="dtype of the --shape cases (default float32); without --shape, of every default case")
    b.add_argument("--op", type=_ops, action="append", metavar="OP",
                   help="softmax, log_softmax, softmax_backward, log_softmax_backward or all; comma-separated or "
                        "repeated (default: the suite's mix; softmax for --shape cases)")
    b.add_argument("--threads", type=_threads, default=None, metavar="1,2",
                   help=f"thread counts (default: 1 and all usable cores: "
                        f"{','.join(map(str, _bench.default_threads()))})")
    b.add_argument("--peers", type=_peers, default=None, metavar="LIST",
                   help="comma-separated from numpy, scipy, torch, onnxruntime, openvino, or none (default: those "
                        "installed)")
    b.add_argument("--repeat", type=_positive, default=None, metavar="N",
                   help="interleaved samples per contender, exactly (default: up to 21, fewer for slow cases; "
                        "--quick: up to 5)")
    b.add_argument("--json", metavar="PATH", help="write the machine and one row per (case, op, threads, contender)")
    b.add_argument("--csv", metavar="PATH", help="write the rows as CSV")
    b.add_argument("--plot", metavar="PATH.png", help="bar chart of the speedups (needs matplotlib)")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="fewer cases and repeats: under 30 s on 2 cores (with --shape: fewer repeats only)")
    size.add_argument("--full", action="store_true",
                      help="add the 256 MB case (65536x1024 float32), timed with and without out=")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.set_defaults(func=_cmd_bench, subparser=b)
    return parser


# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------

def _cmd_info(args, parser):
    fastsoftmax.show_config()
    print(_bench_report.info_text())
    return 0


def _cases(args, parser):
    if args.shape:
        cases = []
        for shape in args.shape:
            axis = -1 if args.axis is None else args.axis
            if not -len(shape) <= axis < len(shape):
                parser.error(f"argument --axis: axis {axis} is out of range for shape "
                             f"{'x'.join(map(str, shape))} ({len(shape)} dimensions)")
            cases.append(_bench.Case(shape, args.dtype or "float32", axis))
    else:
        if args.axis is not None:
            parser.error(f"argument --axis: --axis {args.axis} applies to --shape cases only (the default suite "
                         f"fixes each case's axis); add --shape")
        cases = list(_bench.QUICK_CASES if args.quick else _bench.DEFAULT_CASES)
        if args.dtype:
            cases = [dataclasses.replace(c, dtype=args.dtype) for c in cases]
    if args.full:
        cases.append(dataclasses.replace(_bench.FULL_CASE, dtype=args.dtype or "float32"))
    unique = []
    for c in cases:
        if c not in unique:
            unique.append(c)
    return unique


def _check_output_path(parser, option, path):
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        parser.error(f"argument {option}: folder {parent!r} of {path!r} does not exist")


def _cmd_bench(args, parser):
    cases = _cases(args, parser)
    ops = None if args.op is None else list(dict.fromkeys(op for group in args.op for op in group))
    default_mix = not args.shape and ops is None
    ops_case = dataclasses.replace(_bench.OPS_CASE, dtype=args.dtype or "float32")
    pairs = _bench.plan(cases, ops or ["softmax"], default_mix, ops_case)
    threads = args.threads or _bench.default_threads()
    for option, path in (("--json", args.json), ("--csv", args.csv), ("--plot", args.plot)):
        _check_output_path(parser, option, path)
    if args.plot:
        missing = _bench_report.matplotlib_missing()
        if missing:
            parser.error(f"argument --plot: matplotlib is not installed ({missing}); install it "
                         f"(pip install matplotlib, or pip install 'fastsoftmax[bench]') or drop --plot")

    requested = args.peers if args.peers is not None else list(_bench_peers.PEERS)
    required = set(args.peers or ())
    try:
        versions = _bench_peers.load_peers(requested, required)
    except _bench_peers.PeerUnavailable as exc:
        parser.error(f"argument --peers: {exc}")
    peer_names = [p for p in _bench_peers.PEERS if p in versions]

    settings = _bench.QUICK_SETTINGS if args.quick else _bench.DEFAULT_SETTINGS
    if args.repeat is not None:
        settings = dataclasses.replace(settings, rounds=args.repeat, max_group_s=None)

    start = time.perf_counter()
    progress = Progress(len(pairs) * len(threads) * settings.rounds, enabled=not args.no_progress)
    try:
        rows = _bench.run(pairs, threads, peer_names, settings, progress)
    except _bench.ReferenceMismatch as exc:
        progress.close()
        print(f"fastsoftmax bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.close()
        print("fastsoftmax bench: interrupted", file=sys.stderr)
        return 130
    progress.close()
    wall = time.perf_counter() - start

    machine = _bench_report.machine_info(versions)
    repeat = (f"{settings.rounds}" if settings.max_group_s is None
              else f"up to {settings.rounds} (at least 3)")
    settings_text = (f"median of {repeat} interleaved samples per contender, each >= "
                     f"{settings.min_sample_s * 1e3:g} ms of back-to-back calls; threads pinned per row (T); "
                     f"inputs: standard normal x 4")
    print(_bench_report.header_text(machine, peer_names, settings_text))
    print()
    print(_bench_report.format_tables(rows))
    print()
    print(_bench_report.legend(rows))
    if args.json:
        meta = {"argv": sys.argv[1:] if args.argv is None else args.argv, "quick": args.quick, "full": args.full,
                "rounds": settings.rounds, "min_sample_s": settings.min_sample_s,
                "max_group_s": settings.max_group_s, "threads": threads, "peers": peer_names,
                "seed": _bench.SEED, "wall_s": round(wall, 3)}
        _bench_report.write_json(args.json, machine, meta, rows)
    if args.csv:
        _bench_report.write_csv(args.csv, rows)
    if args.plot:
        _bench_report.write_plot(args.plot, rows,
                                 f"fastsoftmax {fastsoftmax.__version__} on {machine['cpu']}, {machine['date']}")
    written = [p for p in (args.json, args.csv, args.plot) if p]
    print(f"done in {wall:.1f} s" + (f"; wrote {', '.join(written)}" if written else ""), file=sys.stderr)
    return 0


def main(argv=None):
    """Entry point of the `fastsoftmax` console script. Returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = None if argv is None else list(argv)
    try:
        return args.func(args, args.subparser)
    except SystemExit as exc:  # parser.error() during validation
        return exc.code if isinstance(exc.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
