"""The toy world's quality columns of the SOTA table: occupation accuracy and the toy FID.

In the toy world CLIP has random weights (CLIP-T and CLIP-I measure nothing there) and Inception FID
is off. What says whether a method kept the image is whether the toy classifier still sees the
prompted occupation, and how far the images' toy-classifier features lie from the toy data's
(FID on those features), the same two numbers as `toy/summary.md`. `register()` declares these columns
and the toy view of the table (metrics.columns), so the report shows them with no toy code of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.config import LabelsSection
from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.text import figure
from t2i_debias.metrics import columns

log = logging.getLogger(__name__)

REFERENCE_IMAGES = 1024  # toy data images the toy FID compares against (first by file name)
OCCUPATION_COLUMN = "extra_occupation"  # the toy classifier's occupation in bias/<model>/predictions.csv
# CLIP has random weights here, so occupation accuracy and the toy FID take its place in the table.
TOY_QUALITY: tuple[str, ...] = ("occupation_acc", "toy_fid")
TOY_TABLE_COLUMNS: tuple[str, ...] = ("gender_tvd", "race_tvd", "gender_race_tvd", "gender_kl", "race_kl",
                                      "face_rate", *TOY_QUALITY)
TOY_NOTE = ("Toy world: quality is occupation accuracy (the toy classifier sees the prompted occupation; "
            "higher is better) and the toy FID (FID on toy-classifier features against the toy data; lower is "
            "better). CLIP-T/CLIP-I are left out: the toy world's CLIP has random weights.")


def register() -> None:
    """Declare the toy quality columns and the toy view of the comparison table (idempotent)."""
    columns.register(columns.Column("occupation_acc", True, "occupation accuracy"),
                     columns.Column("toy_fid", False, "toy FID"))
    columns.register_view(columns.TableView(
        "toy", TOY_QUALITY, TOY_TABLE_COLUMNS, TOY_NOTE,
        (("quality_occupation.png", ("occupation_acc",)), ("quality_toy_fid.png", ("toy_fid",)))))


def is_toy(labels: LabelsSection) -> bool:
    """True when the run's classifier ([labels] backend) is the toy one (it also predicts the occupation)."""
    return labels.backend == "toy"


def occupation_accuracy(predictions: pd.DataFrame) -> float | None:
    """Share of classified images (status ok) whose predicted occupation is the prompted one."""
    if OCCUPATION_COLUMN not in predictions.columns:
        return None
    ok = predictions[predictions["status"].astype(str) == "ok"]
    if ok.empty:
        return None
    return float((ok[OCCUPATION_COLUMN].astype(str) == ok["occupation"].astype(str)).mean())


def reference_images(images_dir: str | Path, n: int = REFERENCE_IMAGES) -> list[Any]:
    """The first `n` toy data images (by name), as RGB."""
    from PIL import Image

    paths = sorted(Path(images_dir).glob("*.jpg"))[:n]
    if len(paths) < 2:
        raise FileNotFoundError(f"{images_dir}: fewer than 2 toy images for the toy FID; run the toy stage first")
    return [Image.open(p).convert("RGB") for p in paths]


def toy_quality(labels: LabelsSection, images_dir: str | Path, run_dir: Path,
                names: list[str]) -> dict[str, dict[str, float | None]]:
    """name -> {"occupation_acc", "toy_fid"} from `run_dir`/bias/<name>/predictions.csv and generated/<name>/,
    over the images of the toy occupations (as toy/summary.md); the toy FID against the toy data in
    `images_dir` ([mpii] images_dir)."""
    from PIL import Image

    from t2i_debias.core.files import safe_join
    from t2i_debias.sampling import read_metadata
    from t2i_debias.toyworld.classifier import frechet_distance, make_classifier
    from t2i_debias.toyworld.render import OCCUPATIONS

    clf = make_classifier(labels)
    ref_features = clf.features(reference_images(images_dir))
    out: dict[str, dict[str, float | None]] = {}
    lay = RunLayout(run_dir)
    for name in names:
        pred_path = lay.bias_predictions(name)
        preds = unescape_frame(pd.read_csv(pred_path, dtype=str, keep_default_na=False))
        preds = preds[preds["occupation"].isin(OCCUPATIONS)]
        model_dir = lay.generated_model(name)
        meta = read_metadata(model_dir)
        files = meta.loc[meta["occupation"].isin(OCCUPATIONS), "file"]
        if preds.empty or files.empty:
            raise ValueError(f"{pred_path}: no image of a toy occupation {OCCUPATIONS}")
        images = [Image.open(safe_join(model_dir, f)).convert("RGB") for f in files]
        fid = frechet_distance(clf.features(images), ref_features)  # = toyworld.classifier.toy_fid
        out[name] = {"occupation_acc": occupation_accuracy(preds), "toy_fid": fid}
        log.info("[sota] %s: occupation accuracy %s, toy FID %s", name, figure(out[name]["occupation_acc"]),
                 figure(fid))
    return out



register()  # the toy world's columns are known wherever it is imported
