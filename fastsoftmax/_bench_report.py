"""What `fastsoftmax bench` and `fastsoftmax info` print and write: the machine, the tables, JSON, CSV, plot."""
import csv
import json
import os
import platform
import re

from . import _bench_peers as peers
from ._config import get_config

PEER_SHORT = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "onnxruntime": "ort", "openvino": "ov"}
# Column order of the contenders in tables and files.
CONTENDER_ORDER = (peers.FASTSOFTMAX, peers.FASTSOFTMAX_OUT) + peers.PEERS + (peers.COPY,)


# ---------------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_counts():
    """(logical CPUs, CPUs this process may run on)."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return total, usable


_SIMD_FLAG = re.compile(r"^(mmx|sse\w*|ssse3|avx\w*|fma\w*|f16c|amx\w*|neon|asimd\w*|sve\w*|vsx\w*|vx\w*)$",
                        re.IGNORECASE)


def cpu_simd_flags():
    """The SIMD feature flags of this CPU, as NumPy's runtime dispatcher sees them (or /proc/cpuinfo)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        __cpu_features__ = None
    if __cpu_features__:
        return [name for name, on in __cpu_features__.items() if on and _SIMD_FLAG.match(name)]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return [fl for fl in line.split(":", 1)[1].split() if _SIMD_FLAG.match(fl)]
    except OSError:
        pass
    return []


def machine_info(peer_versions):
    """The machine block of the JSON: CPU, cores, SIMD level, library versions, date."""
    from . import _bench
    cfg = get_config()
    total, usable = cpu_counts()
    versions = {"fastsoftmax": cfg["version"], "numpy": cfg["numpy"], "python": cfg["python"]}
    installed = peers.installed_versions()
    for name in ("scipy", "torch", "onnxruntime", "onnx", "openvino"):  # installed ones, selected as peers or not
        versions[name] = peer_versions.get(name) or installed.get(name)
    versions["threadpoolctl"] = peers.threadpoolctl_version()
    return {
        "cpu": cpu_model(), "cores": total, "cores_usable": usable, "cpu_simd_flags": cpu_simd_flags(),
        "simd_level": cfg["simd_level"], "simd_available": cfg["simd_available"], "platform": cfg["platform"],
        "date": _bench.now_iso(), "versions": versions, "fastsoftmax_config": cfg,
    }


def info_text():
    """`fastsoftmax info`, after show_config(): CPU, SIMD flags, the peers found (metadata only, no imports)."""
    total, usable = cpu_counts()
    lines = [f"  CPU:        {cpu_model()}, {total} logical CPUs" + (f" ({usable} usable)" if usable != total else ""),
             f"  CPU SIMD:   {' '.join(cpu_simd_flags()) or 'unknown'}"]
    found = peers.installed_versions()
    names = []
    for name in peers.PEERS + ("onnx", "threadpoolctl", "matplotlib"):
        v = found.get(name)
        names.append(f"{name} {v}" if v else f"{name} (not installed)")
    lines.append(f"  peers:      {', '.join(names[:len(peers.PEERS)])}")
    lines.append(f"  bench aids: {', '.join(names[len(peers.PEERS):])}")
    if found.get("onnxruntime") and not found.get("onnx"):
        lines.append("  note:       the onnxruntime peer needs onnx too (pip install onnx)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------

def _us(seconds):
    if seconds is None:
        return "-"
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:.0f}"


def _ratio(x):
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def _groups(rows):
    """{(op): {(case, threads): {contender: row}}} keeping run order."""
    out = {}
    for row in rows:
        out.setdefault(row["op"], {}).setdefault((row["case"], row["threads"]), {})[row["contender"]] = row
    return out


def _derived(cells, fs_name):
    """(vs numpy, (vs best peer, best peer), GB/s, fs/copy) for contender fs_name in one (case, op, threads)."""
    fs = cells[fs_name]["median_s"]
    numpy_ = cells.get("numpy")
    vs_numpy = numpy_["median_s"] / fs if numpy_ else None
    present = [(cells[p]["median_s"], p) for p in peers.PEERS if p in cells]
    best = min(present) if present else None
    vs_best = (best[0] / fs, best[1]) if best else None
    gbps = cells[fs_name]["gb_per_s"]
    copy = cells.get(peers.COPY)
    vs_copy = fs / copy["median_s"] if copy else None
    return vs_numpy, vs_best, gbps, vs_copy


def format_tables(rows):
    """One fixed-width table per op: a row per (case, threads), plus a row for fastsoftmax(out=) if timed."""
    blocks = []
    for op, by_key in _groups(rows).items():
        seen = {c for cells in by_key.values() for c in cells}
        cols = [c for c in CONTENDER_ORDER if c in seen and c != peers.FASTSOFTMAX_OUT]
        case_w = max([len("case")] + [len(case) + 5 for case, _ in by_key])
        heads = {peers.FASTSOFTMAX: "fastsoftmax", "onnxruntime": "onnxrt", peers.COPY: "copy"}
        col_w = 11
        header = (f"{'case':<{case_w}} {'T':>2} " + "".join(f"{heads.get(c, c):>{col_w}}" for c in cols)
                  + f"{'vs numpy':>10}{'vs best peer':>15}{'GB/s':>8}{'fs/copy':>9}")
        title = f"{op}: median time per call in µs (lower is better); ratios > 1x mean fastsoftmax is faster"
        lines = [title, header, "-" * len(header)]
        for (case, threads), cells in by_key.items():
            for fs_name in (peers.FASTSOFTMAX, peers.FASTSOFTMAX_OUT):
                if fs_name not in cells:
                    continue
                vs_numpy, vs_best, gbps, vs_copy = _derived(cells, fs_name)
                if fs_name == peers.FASTSOFTMAX:
                    label = case
                    times = "".join(f"{_us(cells[c]['median_s'] if c in cells else None):>{col_w}}" for c in cols)
                else:
                    label = f"{case} out="
                    times = "".join(
                        f"{_us(cells[fs_name]['median_s']) if c == peers.FASTSOFTMAX else '':>{col_w}}"
                        for c in cols)
                best = f"{_ratio(vs_best[0])} {PEER_SHORT[vs_best[1]]}" if vs_best else "-"
                lines.append(
                    f"{label:<{case_w}} {threads:>2} {times}"
                    f"{_ratio(vs_numpy) if vs_numpy else '-':>10}{best:>15}{gbps:>8.1f}"
                    f"{f'{vs_copy:.2f}' if vs_copy else '-':>9}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def legend(rows):
    floors = sorted({r["floor_method"] for r in rows if r["contender"] == peers.COPY})
    lines = [
        "vs numpy, vs best peer: the peer's median / fastsoftmax's median at the same T (best of numpy, scipy, "
        "torch, onnxruntime, openvino).",
        "GB/s: (bytes read + bytes written) / fastsoftmax's median.",
        "fs/copy: fastsoftmax's median / the copy floor's median at the same T (1.00 = as fast as copying the "
        "input).",
    ]
    if any(r["op"] in peers.BACKWARD_OPS for r in rows):
        lines.append("  Backward ops read 2 arrays and write 1, the copy reads 1 and writes 1: their floor is 1.50.")
    lines.append(f"copy floor: {'; '.join(floors)}.  '-': not timed (peer not selected, absent or without that op).")
    return "\n".join(lines)


def header_text(machine, peer_names, settings_text):
    v = machine["versions"]
    peer_v = ", ".join(f"{k} {v[k]}" for k in peer_names) or "none"
    cfg = machine["fastsoftmax_config"]
    omp = "OpenMP" if cfg["openmp"] else "no OpenMP"
    return (f"fastsoftmax {v['fastsoftmax']} ({cfg['simd_level']}, {cfg['compiler']}, {omp}) on "
            f"{machine['cpu']}, {machine['cores_usable']} cores\n"
            f"peers: {peer_v}\n{settings_text}")


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------

def write_json(path, machine, settings, rows):
    with open(path, "w") as f:
        json.dump({"machine": machine, "settings": settings, "results": rows}, f, indent=1)
        f.write("\n")


CSV_FIELDS = ("case", "shape", "dtype", "axis", "op", "threads", "contender", "median_s", "min_s", "n_samples",
              "loops_per_sample", "bytes", "gb_per_s", "floor_method")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({**row, "shape": "x".join(map(str, row["shape"])), "floor_method": row.get("floor_method", "")})


def matplotlib_missing():
    """None if matplotlib can be imported, else the reason."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def write_plot(path, rows, title):
    """Horizontal bars per op: each contender's speed relative to the numpy recipe (log scale), per case and
    thread count; relative to the copy floor when numpy was not timed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter

    colors = dict(zip(CONTENDER_ORDER, ("tab:blue", "tab:cyan", "tab:gray", "tab:orange", "tab:red",
                                        "tab:green", "tab:olive", "tab:purple")))
    assert len(colors) == len(CONTENDER_ORDER)
    groups = _groups(rows)
    fig, axes = plt.subplots(len(groups), 1, squeeze=False,
                             figsize=(11, 1.5 + sum(0.5 * len(g) + 0.6 for g in groups.values())),
                             gridspec_kw={"height_ratios": [len(g) + 1 for g in groups.values()]})
    for ax, (op, by_key) in zip(axes[:, 0], groups.items()):
        base = "numpy" if all("numpy" in c for c in by_key.values()) else peers.COPY
        names = [c for c in CONTENDER_ORDER if c != base and any(c in cells for cells in by_key.values())]
        keys = list(by_key)
        height = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            ys, xs = [], []
            for k, (key, cells) in enumerate(zip(keys, by_key.values())):
                if name in cells:
                    ys.append(k + (i - (len(names) - 1) / 2) * height)
                    xs.append(cells[base]["median_s"] / cells[name]["median_s"])
            ax.barh(ys, xs, height=height, label=name, color=colors[name])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}x" if v > 0 and f"{v:.0e}"[0] in "25" else ""))
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([f"{case}  T={t}" for case, t in keys])
        ax.invert_yaxis()
        ax.set_xlabel(f"speed relative to {'the numpy recipe' if base == 'numpy' else 'the copy floor'} "
                      f"(higher is faster)")
        ax.set_title(op)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
