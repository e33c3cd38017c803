"""The report stage: the OursVsBaseline figure (when the data exist) and `<run_dir>/report.html`, rebuilt
whenever one of the small files the page reads appears or changes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.files import MANIFEST
from t2i_debias.core.stage import STAGE_DIRS, Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.report.figure import figure_from_run
from t2i_debias.report.page import write_report
from t2i_debias.report.sections_results import FIGURE_NAME

log = logging.getLogger(__name__)


def report_inputs(run_dir: Path) -> list[Path]:
    """The small files the report reads; the stage reruns when any of them appears or changes.

    Stage manifests count too (the Run table shows them), except the report's own.
    """
    pats = ["config.toml", "labels/labels.csv", "analysis/*", "enriched/balance.csv", "enriched/fidelity.csv", "models/*/training_log.csv", "models/*/loss.png",
            "bias/stale.json", "bias/*/summary.json", "bias/*/by_prompt.csv", "bias/*/predictions.csv", "quality/*.json",
            "sota/*", "sota/plots/*", "sweep/sweep.csv", "sweep/*.png", "generated/*/metadata.csv", f"*/{MANIFEST}", f"*/*/{MANIFEST}"]
    report_dir = run_dir / STAGE_DIRS["report"]
    found = {p for pat in pats for p in run_dir.glob(pat) if p.is_file() and report_dir not in p.parents}
    return sorted(found)


def make_figure(cfg: Any, out_path: Path) -> Path | None:
    """Build the OursVsBaseline figure of the run, or log why it cannot be built yet and return None."""
    r = cfg.report
    try:
        return figure_from_run(cfg.run_dir, out_path, base=r.figure_base, ours=r.figure_ours,
                               occupations=r.figure_occupations, n_images=r.figure_images)
    except (FileNotFoundError, ValueError) as e:
        log.info("OursVsBaseline figure not built: %s", e)
        return None


def run_stage(cfg: Any, force: bool = False) -> None:
    """Write `<run_dir>/report.html` (and `report/OursVsBaseline.png` when the data exist)."""
    run_dir = Path(cfg.run_dir)
    folder = run_dir / STAGE_DIRS["report"]
    stage = Stage("report", folder, cfg.section_dict("report"), report_inputs(run_dir))

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        fig = make_figure(cfg, folder / FIGURE_NAME)
        if fig is None:
            (folder / FIGURE_NAME).unlink(missing_ok=True)  # never show a stale figure
        out = write_report(run_dir)  # its figure section shows folder / FIGURE_NAME
        return [out] + ([fig] if fig else []), {"figure": bool(fig)}

    _run_stage(stage, body, force=force, log=log.info)
