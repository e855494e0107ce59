"""Timing for `fastsoftmax bench`: calibrated samples, contenders interleaved, and a stderr progress bar.

A sample is the mean time of `loops` back-to-back calls, with `loops` chosen so a sample lasts at least
`min_sample_s` (tiny cases would otherwise measure the clock). Contenders take turns sample by sample, in a new
(seeded) random order each round, so that drift on a shared machine hits all of them alike and no contender
always runs right after the same one: a peer whose pool threads stay busy after its calls (OpenVINO's) slowed
whoever came next, and with the order only rotated that was fastsoftmax in every round (32x1000 at 2 threads:
7-10x slower). The statistic reported is the median over rounds.
"""
import math
import random
import statistics
import sys
import time

_perf_ns = time.perf_counter_ns


def time_loops(fn, loops):
    """Seconds per call of `fn` over `loops` back-to-back calls."""
    t0 = _perf_ns()
    for _ in range(loops):
        fn()
    return (_perf_ns() - t0) / loops * 1e-9


def calibrate(fn, min_sample_s):
    """Number of calls per sample so that one sample lasts at least `min_sample_s` (fn is already warm)."""
    loops = 1
    while True:
        per_call = time_loops(fn, loops)
        total = per_call * loops
        if total >= min_sample_s / 4 or loops >= 1 << 20:
            break
        loops *= 4
    return max(1, math.ceil(min_sample_s / max(per_call, 1e-9)))


def interleave(contenders, rounds, min_sample_s, max_group_s=None, tick=None):
    """Time `contenders` ({name: callable}, each already warm and checked) in turns.

    Returns {name: {"samples": [seconds per call, ...], "loops": calls per sample}}. With `max_group_s`,
    stops after the first round that brings the total past it, but never before 3 rounds (auto repeat for
    slow cases); `tick()` is called after each round."""
    names = list(contenders)
    loops = {n: calibrate(contenders[n], min_sample_s) for n in names}
    samples = {n: [] for n in names}
    order = random.Random(len(names))   # seeded: the same orders in every run
    start = time.perf_counter()
    for r in range(rounds):
        turn = list(names)
        order.shuffle(turn)
        for n in turn:
            samples[n].append(time_loops(contenders[n], loops[n]))
        if tick is not None:
            tick()
        if max_group_s is not None and r >= 2 and time.perf_counter() - start > max_group_s:
            break
    return {n: {"samples": samples[n], "loops": loops[n]} for n in names}


def summarize(samples):
    return {"median_s": statistics.median(samples), "min_s": min(samples), "n_samples": len(samples)}


class Progress:
    """A one-line progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, total, enabled=True, stream=None, width=30):
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.label = ""
        self.start = time.perf_counter()
        self._last_line = None

    def set_label(self, label):
        self.label = label
        if self.enabled and not self.tty:
            print(f"[{self.done}/{self.total}] {label}", file=self.stream, flush=True)
        self._draw()

    def advance(self, n=1):
        self.done = min(self.total, self.done + n)
        self._draw()

    def _draw(self):
        if not (self.enabled and self.tty):
            return
        frac = self.done / self.total
        filled = int(round(frac * self.width))
        elapsed = time.perf_counter() - self.start
        line = (f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:3.0f}% {elapsed:5.1f}s "
                f"{self.label}")
        line = line[:120].ljust(len(self._last_line or ""))
        if line != self._last_line:
            self.stream.write(line)
            self.stream.flush()
            self._last_line = line.rstrip()

    def close(self):
        if self.enabled and self.tty and self._last_line is not None:
            self.stream.write("\r" + " " * len(self._last_line) + "\r")
            self.stream.flush()
