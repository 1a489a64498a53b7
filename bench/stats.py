"""Summary statistics of latency samples (milliseconds)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    """95th percentile, linear interpolation between closest ranks."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def summary(samples: list[float]) -> dict[str, Any]:
    """Median, p95, extremes and every raw sample (the JSON keeps them all)."""
    return {
        "median": median(samples),
        "p95": p95(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": samples,
    }


def timed_ms(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - start) * 1000.0, result
