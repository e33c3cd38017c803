"""The SOTA comparison's bar charts (sota/*.png), drawn from comparison.csv's rows: a chart reads the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from t2i_debias.core.files import atomic_open
from t2i_debias.metrics.columns import BIAS_CHART, QUALITY_CHARTS
from t2i_debias.plots import whiskers
from t2i_debias.report.comparison import as_number, table_view


def plot(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Bar charts with CI whiskers: gender and race TVD per method; CLIP-T/CLIP-I per method, or the charts
    of the registered view the table shows (the toy world: occupation accuracy and toy FID)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["status"] == "ok"] if "status" in df else df
    paths = []
    view = table_view(df)
    for fname, chart in (BIAS_CHART, *(view.charts if view else QUALITY_CHARTS)):
        cols = [c for c in chart if c in ok and ok[c].map(as_number).notna().any()]
        if not cols or ok.empty:
            continue
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(ok) * len(cols) / 2, 3.2))
        width = 0.8 / len(cols)
        for i, c in enumerate(cols):
            vals = ok[c].map(as_number).fillna(0.0).to_numpy()
            lo = ok.get(f"{c}_lo", pd.Series([None] * len(ok))).map(as_number)
            hi = ok.get(f"{c}_hi", pd.Series([None] * len(ok))).map(as_number)
            err = None
            if lo.notna().all() and hi.notna().all():
                err = whiskers(vals, lo.to_numpy(dtype=float), hi.to_numpy(dtype=float))
            ax.bar([x + i * width for x in range(len(ok))], vals, width, yerr=err, capsize=2, label=c)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(ok))], list(ok["method"]), rotation=30, ha="right")
        ax.legend(fontsize=7)
        ax.set_title(fname.removesuffix(".png").replace("_", " "))
        fig.tight_layout()
        path = out_dir / fname
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


