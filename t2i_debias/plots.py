"""Plot helpers shared by the stages that draw: whiskers that are never negative, and a plot failure that never
costs a table (DESIGN.md §3)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2i_debias.core.files import atomic_open
from t2i_debias.metrics.dataset import ALL

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


def plot_stacked(by_occ: pd.DataFrame, attr: str, classes: tuple[str, ...], path: Path, min_count: int = 1) -> Path:
    """Stacked bars of `attr` proportions, one bar per occupation with >= min_count labelled people."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = by_occ[(by_occ.occupation != ALL) & (by_occ.n_ok >= max(min_count, 1))]
    d = pd.concat([d, by_occ[by_occ.occupation == ALL]])
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(d) + 2), 4.5))
    bottom = [0.0] * len(d)
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for i, cls in enumerate(classes):
        vals = [float(v) if v is not None and not pd.isna(v) else 0.0 for v in d[f"p_{attr}={cls}"]]
        ax.bar(range(len(d)), vals, bottom=bottom, label=cls, color=cmap(i % cmap.N))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(d)))
    ax.set_xticklabels([f"{o} ({n})" for o, n in zip(d.occupation, d.n_ok, strict=True)], rotation=75,
                       ha="right", fontsize=7)
    ax.set_ylabel("proportion of labelled people")
    ax.set_ylim(0, 1)
    ax.set_title(f"perceived {attr.replace('_', ' ')} by occupation (n labelled)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


PLOT_ATTRIBUTES: tuple[str, ...] = ("gender", "race")


def plot_sweep(df: pd.DataFrame, path: Path, metric: str = "tvd") -> Path | None:
    """`metric` against guidance scale, one line per model (95% CI bars), per attribute; the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df[(df["metric"] == metric) & df["attribute"].isin(PLOT_ATTRIBUTES)] if len(df) else df
    attrs = [a for a in PLOT_ATTRIBUTES if len(d) and (d["attribute"] == a).any()]
    if not attrs:
        return None
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.6 * len(attrs), 3.0), squeeze=False)
    for ax, attr in zip(axes[0], attrs, strict=True):
        da = d[d["attribute"] == attr]
        groups = list(da.groupby("model", sort=False))
        span = float(da["guidance_scale"].max() - da["guidance_scale"].min()) or 1.0
        for i, (model, dm) in enumerate(groups):
            dm = dm.sort_values("guidance_scale")
            dodge = (i - (len(groups) - 1) / 2) * 0.015 * span  # models side by side, not on top of each other
            x, y = dm["guidance_scale"].to_numpy(float) + dodge, pd.to_numeric(dm["value"]).to_numpy(float)
            lo, hi = pd.to_numeric(dm["lo"]).to_numpy(float), pd.to_numeric(dm["hi"]).to_numpy(float)
            line = ax.errorbar(x, y, yerr=whiskers(y, lo, hi), marker="o", capsize=3, label=str(model))
            ax.plot(x, pd.to_numeric(dm["floor"]).to_numpy(float), ls="--", lw=0.8,
                    color=line.lines[0].get_color())
        ax.set_xlabel("guidance scale")
        ax.set_ylabel(f"{attr} {metric}")
        ax.set_title(f"{attr} {metric} vs guidance (dashed: noise floor)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path
