"""The labels stage: mpii/persons.csv -> labels/labels.csv, one row per person (`t2i_debias.labels.runner`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_csv, safe_join
from t2i_debias.core.layout import LABELS_CSV, RunLayout
from t2i_debias.core.stage import Stage, require_finished
from t2i_debias.core.stage import run_stage as run_stage_folder
from t2i_debias.labels.base import DemographicClassifier
from t2i_debias.labels.runner import (
    JOURNAL,
    LABEL_COLUMNS,
    Item,
    Journal,
    Stats,
    classifier_key,
    classify_items,
    label_row,
    person_box,
    read_persons,
)

log = logging.getLogger(__name__)


def label_persons(persons_csv: str | Path, images_dir: str | Path, classifier: DemographicClassifier,
                  out_dir: str | Path, batch_size: int = 32) -> tuple[Path, Stats]:
    """Label every person of `persons_csv` into `out_dir/labels.csv` (atomic), resuming from the journal."""
    import pandas as pd

    persons = read_persons(persons_csv)
    items = []
    for n, row in enumerate(persons, 2):
        where = f"{persons_csv} line {n}"
        box = person_box(row, where)
        try:
            path = safe_join(images_dir, row["image"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        items.append(Item(path, box))
    out_dir = Path(out_dir)
    with Journal(out_dir / JOURNAL, classifier_key(classifier)) as journal:
        if journal.entries:
            log.info("resuming: %d results cached in %s", len(journal.entries), journal.path)
        results, stats = classify_items(classifier, items, batch_size, journal, desc="labels", check_crops=True)
    rows = [label_row(p, r, classifier.name) for p, r in zip(persons, results, strict=True)]
    if len(rows) != len(persons):
        raise RuntimeError(f"labels do not reconcile: {len(persons)} persons in, {len(rows)} rows out")
    df = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    df["n_faces"] = df["n_faces"].astype("Int64")  # integers, empty when unknown (not 1.0)
    out = atomic_write_csv(out_dir / LABELS_CSV, df)
    log.info("labels: %d persons, %d computed, %d from cache; statuses %s", len(rows), stats.computed,
             stats.cached, dict(sorted(stats.statuses.items())))
    return out, stats


def run_stage(cfg: Config, force: bool = False) -> None:
    """Pipeline entry: mpii/persons.csv (+ images) -> labels/labels.csv with a manifest."""
    from t2i_debias.labels.registry import make_classifier

    lay = RunLayout(cfg.run_dir)
    persons_csv = lay.persons_csv
    if not persons_csv.exists():
        raise FileNotFoundError(f"{persons_csv} not found: run the mpii stage first (mpii_dataset/load_dataset.py)")
    require_finished(persons_csv.parent, "mpii", cfg.run_dir)  # a persons.csv the mpii stage finished
    config = {**cfg.section_dict("labels"), "images_dir": str(Path(cfg.mpii.images_dir).resolve()),
              "smoke": cfg.run.smoke}
    # each image's size and mtime are inputs too: a replaced image is labelled again (its crop hash is new)
    images = sorted({str(r["image"]) for r in read_persons(persons_csv) if isinstance(r.get("image"), str)})
    stage = Stage("labels", lay.labels, config=config, inputs=[persons_csv],
                  stat_inputs=[Path(cfg.mpii.images_dir) / name for name in images])

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        clf = make_classifier(cfg.labels, device=cfg.run.device, smoke=cfg.run.smoke)
        out, stats = label_persons(persons_csv, cfg.mpii.images_dir, clf, st.folder, cfg.labels.batch_size)
        extra = {"classifier": clf.describe(), "measures": list(clf.measures), "n_rows": sum(stats.statuses.values()),
                 "status_counts": stats.statuses, "computed": stats.computed, "cached": stats.cached}
        return [out], extra

    run_stage_folder(stage, body, force=force, log=log.info)
