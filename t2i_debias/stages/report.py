"""The report stage: the OursVsBaseline figure (when the data exist) and `<run_dir>/report.html`, rebuilt
whenever one of the small files the page reads appears or changes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.augment.schema import BALANCE, FIDELITY
from t2i_debias.core.config import Config
from t2i_debias.core.files import MANIFEST
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.report.figure import figure_from_run
from t2i_debias.report.page import write_report

log = logging.getLogger(__name__)


def report_inputs(run_dir: Path) -> list[Path]:
    """The small files the report reads; the stage reruns when any of them appears or changes.

    Stage manifests count too (the Run table shows them), except the report's own.
    """
    lay = RunLayout(run_dir)
    pats = [lay.config_toml, lay.labels_csv, lay.analysis / "*", lay.enriched / BALANCE, lay.enriched / FIDELITY,
            lay.model("*") / "training_log.csv", lay.model("*") / "loss.png", lay.bias_stale, lay.bias_summary("*"),
            lay.bias_model("*") / "by_prompt.csv", lay.bias_predictions("*"), lay.quality_json("*"), lay.sota / "*",
            lay.sota / "plots" / "*", lay.sweep_csv, lay.sweep / "*.png", lay.generated_metadata("*"),
            run_dir / "*" / MANIFEST, run_dir / "*" / "*" / MANIFEST]
    found = {p for pat in pats for p in run_dir.glob(pat.relative_to(run_dir).as_posix())
             if p.is_file() and lay.report not in p.parents}
    return sorted(found)


def make_figure(cfg: Config, out_path: Path) -> Path | None:
    """Build the OursVsBaseline figure of the run, or log why it cannot be built yet and return None."""
    r = cfg.report
    try:
        return figure_from_run(cfg.run_dir, out_path, base=r.figure_base, ours=r.figure_ours,
                               occupations=r.figure_occupations, n_images=r.figure_images)
    except (FileNotFoundError, ValueError) as e:
        log.info("OursVsBaseline figure not built: %s", e)
        return None


def run_stage(cfg: Config, force: bool = False) -> None:
    """Write `<run_dir>/report.html` (and `report/OursVsBaseline.png` when the data exist)."""
    run_dir = Path(cfg.run_dir)
    lay = RunLayout(run_dir)
    stage = Stage("report", lay.report, cfg.section_dict("report"), report_inputs(run_dir))

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        fig = make_figure(cfg, lay.figure)
        if fig is None:
            lay.figure.unlink(missing_ok=True)  # never show a stale figure
        out = write_report(run_dir)  # its figure section shows lay.figure
        return [out] + ([fig] if fig else []), {"figure": bool(fig)}

    _run_stage(stage, body, force=force, log=log.info)
