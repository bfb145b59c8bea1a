"""Timing helpers shared by the benchmark scripts.

Rules: every contender runs in this one process; the first call is timed on its own
(compile time for JAX, warm-up for the others) and reported apart; then the
contenders are timed alternately, round after round (the order rotating from round to
round), and the minimum is kept.
"""

import os
import platform
import time
from collections.abc import Callable


def block(x):
    """Wait for asynchronous JAX results (no-op for other values)."""
    try:
        import jax

        return jax.block_until_ready(x)
    except ImportError:  # pragma: no cover
        return x


def measure(contenders: dict[str, Callable[[], object]], rounds: int = 5) -> dict:
    """Time each zero-argument callable; returns {name: {"first": s, "best": s}}."""
    out = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        block(fn())
        out[name] = {"first": time.perf_counter() - t0, "best": float("inf")}
    names = list(contenders)
    for r in range(rounds):
        # rotate the order, so no contender always runs right after the same other
        # one (a slow pure-Python peer leaves cold caches to whoever follows it)
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            block(contenders[name]())
            out[name]["best"] = min(out[name]["best"], time.perf_counter() - t0)
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(title: str, times: dict, baseline: str, per: float = 1.0, unit: str = "run"):
    """Print a table of best times, compile/warm-up times and ratios vs `baseline`."""
    print(f"\n{title}")
    print(f"{'contender':<34}{'best [ms]':>12}{'first call [s]':>16}   speed-up vs {baseline}")
    base = times[baseline]["best"]
    for name, t in times.items():
        print(f"{name:<34}{1e3 * t['best'] / per:>12.3f}{t['first']:>16.2f}"
              f"   {base / t['best']:.2f}x")
    if per != 1.0:
        print(f"(times per {unit})")
