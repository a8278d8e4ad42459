"""Time estimates for people: a duration in words, and a run's total time from its first units."""
from __future__ import annotations

from typing import Sequence


def format_duration(seconds: float) -> str:
    """A duration for people: '45 s', '12 min', '3.4 h', '69 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def project(stamps: Sequence[float], units: int) -> tuple[float, float, str]:
    """(total seconds, seconds per unit, that rate for people) of a run of ``units`` steps or epochs.

    ``stamps``: seconds since the run started at the end of each unit so far. The first unit carries
    one-time costs (allocation, kernel choice), so with two or more the rate comes from the later ones.
    """
    done = len(stamps)
    rate = (stamps[-1] - stamps[0]) / (done - 1) if done >= 2 else stamps[0]
    total = stamps[-1] + rate * (units - done)
    return total, rate, f"{rate:.3g}" if rate < 1000 else f"{rate:.0f}"  # no exponent: '1234 s/step'
