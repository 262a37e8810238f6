"""Timing helpers shared by the benchmark scripts: ratios from interleaved runs in one process."""

from __future__ import annotations

import statistics
import time


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(base, fn, repeats: int) -> tuple[float, float]:
    """Median seconds of ``base`` and ``fn``, run alternately so that drift in machine load hits both."""
    base()
    fn()  # warm-up
    tb, tf = [], []
    for _ in range(repeats):
        tb.append(timed(base))
        tf.append(timed(fn))
    return statistics.median(tb), statistics.median(tf)
