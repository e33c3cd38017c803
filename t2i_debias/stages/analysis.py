"""Dataset analysis stage: labels/labels.csv -> analysis/ (tables of `t2i_debias.metrics.dataset`, stacked bars).

Writes `by_occupation.csv`, `skip_reasons.csv`, `summary.json` and `<attr>_by_occupation.png` (one stacked
bar per occupation); an attribute the labels backend does not measure gets no plot.
"""

from __future__ import annotations

import logging
from pathlib import Path

from t2i_debias.core.config import Config
from t2i_debias.core.errors import MissingInputError
from t2i_debias.core.files import atomic_write_csv, atomic_write_json
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage, require_finished
from t2i_debias.core.stage import run_stage as run_stage_folder
from t2i_debias.core.text import figure
from t2i_debias.core.vocab import MEASURABLE, RACES, is_measured
from t2i_debias.labels import registry
from t2i_debias.metrics.dataset import analyze_labels, attribute_classes, read_labels
from t2i_debias.plots import plot_stacked

log = logging.getLogger(__name__)


PLOTTED = (*MEASURABLE, "gender_race")


def analyze_folder(labels_csv: str | Path, out_dir: str | Path, race_classes: tuple[str, ...] = RACES,
                   min_count: int = 1, measures: tuple[str, ...] = MEASURABLE) -> list[Path]:
    """Write every analysis output for one labels.csv; return their paths. No plot for an attribute the
    labels backend does not measure (a stale one is removed)."""
    df = read_labels(labels_csv, race_classes)
    try:
        by_occ, skips, summary = analyze_labels(df, race_classes, measures)
    except ValueError as e:
        raise ValueError(f"{labels_csv}: {e}") from e
    out = Path(out_dir)
    paths = [atomic_write_csv(out / "by_occupation.csv", by_occ), atomic_write_csv(out / "skip_reasons.csv", skips),
             atomic_write_json(out / "summary.json", summary)]
    attrs = attribute_classes(race_classes)
    for attr in PLOTTED:
        png = out / f"{attr}_by_occupation.png"
        if is_measured(attr, measures):
            paths.append(plot_stacked(by_occ, attr, attrs[attr], png, min_count))
        else:
            png.unlink(missing_ok=True)
    ov = summary["overall"]
    log.info("analysis: %d persons, %d labelled, %d occupations; overall gender tvd %s", ov["n_persons"],
             ov["n_ok"], summary["n_occupations"], figure(ov["attributes"]["gender"]["metrics"]["tvd"]))
    return paths


def run_stage(cfg: Config, force: bool = False) -> None:
    """Pipeline entry: labels/labels.csv -> analysis/ (with a manifest)."""
    lay = RunLayout(cfg.run_dir)
    labels_csv = lay.labels_csv
    if not labels_csv.exists():
        raise MissingInputError(f"{labels_csv} not found: run the labels stage first "
                                "(mpii_dataset/generate_mpii_prediction_race.py)")
    require_finished(labels_csv.parent, "labels", cfg.run_dir)  # a labels.csv the labels stage finished
    races = registry.race_classes(cfg.labels.backend, cfg.analysis.race_classes)
    measures = registry.backend_measures(cfg.labels.backend)
    stage = Stage("analysis", lay.analysis, inputs=[labels_csv],
                  config={**cfg.section_dict("analysis"), "race_classes": list(races), "measures": list(measures)})
    run_stage_folder(stage, lambda st: analyze_folder(labels_csv, st.folder, races, cfg.analysis.min_count,
                                                      measures), force=force, log=log.info)
