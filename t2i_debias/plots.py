"""Plot helpers shared by the stages that draw: whiskers that are never negative, and a plot failure that never
costs a table (DESIGN.md §3)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def whiskers(values: Any, lo: Any, hi: Any) -> list[np.ndarray]:
    """matplotlib's `yerr` (below, above) of values with CI [lo, hi]: never negative, 0 where a bound is missing.

    An interval that does not hold its value (one computed elsewhere, or NaN) draws no whisker on that side
    instead of failing the plot.
    """
    v, lo, hi = (np.asarray(x, dtype=float) for x in (values, lo, hi))
    return [np.nan_to_num(np.maximum(v - lo, 0.0), nan=0.0), np.nan_to_num(np.maximum(hi - v, 0.0), nan=0.0)]


def plot_or_warn(draw: Callable[[], Any], what: str) -> Any:
    """`draw()`, or None with a warning naming `what` when it fails: the caller's tables are written regardless."""
    try:
        return draw()
    except Exception as e:  # noqa: BLE001 - any plotting failure; logged, and the tables still written
        log.warning("%s: plot not drawn (%s: %s); the tables are written", what, type(e).__name__, e)
        return None
