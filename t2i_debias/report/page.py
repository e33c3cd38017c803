"""report.html: one self-contained page per run (inline CSS, images as data URIs, no scripts, no links).

It shows whatever the run folder holds (DESIGN.md §6), at a glance: stage status, dataset imbalance,
training curves, bias before and after per occupation, quality, the SOTA table and the OursVsBaseline
figure. A section whose files do not exist yet says "not computed yet" instead of failing, so the report
can be built at any point. Raw JSON stays available in collapsed <details> blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from t2i_debias.core.files import atomic_write_text
from t2i_debias.core.layout import RunLayout
from t2i_debias.report.kit import CSS, esc
from t2i_debias.report.sections_results import section_bias, section_figure, section_quality, section_sweep
from t2i_debias.report.sections_run import (
    section_counterfactuals,
    section_dataset,
    section_overview,
    section_training,
)
from t2i_debias.report.sections_sota import section_sota

# The page's sections in order: (anchor id, heading, the function that renders it from the run folder).
SECTIONS: tuple[tuple[str, str, Callable[[Path], str]], ...] = (
    ("overview", "Run", section_overview),
    ("dataset", "Dataset imbalance", section_dataset),
    ("counterfactuals", "Counterfactual triplets", section_counterfactuals),
    ("training", "Training curves", section_training),
    ("bias", "Bias before / after", section_bias),
    ("sweep", "Bias against guidance scale", section_sweep),
    ("quality", "Image quality", section_quality),
    ("sota", "State-of-the-art comparison", section_sota),
    ("figure", "Ours vs baseline", section_figure),
)


def build_report(run_dir: str | Path, title: str | None = None) -> str:
    """The report page of a run folder as an HTML string."""
    run_dir = Path(run_dir)
    title = title or f"t2i_debias report: {run_dir.name}"
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in SECTIONS)
    body = "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{fn(run_dir)}</section>' for k, t, fn in SECTIONS)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{esc(title)}</h1><p class=\"note\">Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))} "
            f"from {esc(run_dir)}.</p><nav>{nav}</nav>{body}</body></html>\n")


def write_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write `<run_dir>/report.html` (or `out_path`) atomically."""
    run_dir = Path(run_dir)
    return atomic_write_text(out_path or RunLayout(run_dir).report_html, build_report(run_dir))
