"""How the benchmarks print a set of timings: the median and the range."""

from __future__ import annotations

import statistics


def spread(values: list[float]) -> str:
    """'median (min-max)', two decimals."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
