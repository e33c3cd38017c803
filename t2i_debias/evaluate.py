"""The bias stage: classify every generated image and turn the labels into bias numbers with CIs.

For each model with `generated/<model>/metadata.csv` it writes `bias/<model>/`:
- `predictions.csv`: one row per generated image (no-face and other skip statuses kept), with the
  labels backend's gender / race / age and face box;
- `by_prompt.csv`: per prompt, the face-found rate, class counts and every metric of DESIGN.md §3
  for gender, race (6 groups), race4 (Shen's 4 groups) and gender×race, each with its bootstrap CI;
- `summary.json`: the mean over prompts of every metric with its seeded bootstrap 95% CI.
Classification results are journalled by image hash, so a killed run resumes without redoing them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2i_debias.attributes import GENDERS, RACES, SHEN4_CLASSES, STATUS_OK
from t2i_debias.labels.base import DemographicClassifier
from t2i_debias.metrics.bias import METRIC_NAMES, attribute_label, evaluate_attribute
from t2i_debias.runs import Stage, atomic_write_csv, atomic_write_json, safe_join
from t2i_debias.runs import run_stage as _run_stage

log = logging.getLogger(__name__)

PREDICTION_COLUMNS: tuple[str, ...] = (
    "model", "prompt_id", "occupation", "prompt", "seed", "file", "status", "gender", "gender_conf", "race",
    "race_conf", "age", "age_group", "face_x1", "face_y1", "face_x2", "face_y2", "n_faces", "backend",
)


def bias_attributes(race_classes: tuple[str, ...] = RACES) -> dict[str, tuple[str, ...]]:
    """Attribute -> class vocabulary: gender, race, race4 (only for DeepFace's six races), gender_race."""
    out: dict[str, tuple[str, ...]] = {"gender": GENDERS, "race": tuple(race_classes)}
    if set(race_classes) == set(RACES):
        out["race4"] = SHEN4_CLASSES
    out["gender_race"] = tuple(f"{g}|{r}" for g in GENDERS for r in race_classes)
    return out


def race_classes_of(cfg: Any) -> tuple[str, ...]:
    """The race vocabulary of the configured labels backend (the toy world has its own)."""
    try:
        from t2i_debias.analysis import race_classes_for
    except ImportError:
        return RACES
    return tuple(race_classes_for(cfg))


# ----------------------------------------------------------------------------- classification
def classify_generated(model_dir: Path, classifier: DemographicClassifier, journal_path: Path | None = None,
                       batch_size: int = 32) -> pd.DataFrame:
    """predictions.csv rows for every image listed in `model_dir/metadata.csv`, in its order."""
    from t2i_debias.generate import read_metadata
    from t2i_debias.labels.runner import Journal, classifier_key, classify_files

    meta = read_metadata(model_dir)
    paths = [safe_join(model_dir, f) for f in meta["file"]]
    desc = f"bias {model_dir.name}"
    if journal_path is not None:
        with Journal(journal_path, classifier_key(classifier)) as journal:
            preds = classify_files(classifier, paths, batch_size=batch_size, journal=journal, desc=desc)
    else:
        preds = classify_files(classifier, paths, batch_size=batch_size, desc=desc)
    rows = []
    for m, pred in zip(meta.to_dict("records"), preds, strict=True):
        row = {"model": m.get("model", model_dir.name), "prompt_id": m["prompt_id"],
               "occupation": m.get("occupation", ""), "prompt": m.get("prompt", ""), "seed": m["seed"],
               "file": m["file"], **pred.to_row(), "backend": classifier.name}
        rows.append(row)
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in PREDICTION_COLUMNS]
    return df.reindex(columns=list(PREDICTION_COLUMNS) + extra)


# ----------------------------------------------------------------------------- metrics
def _clean(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def summarize(pred: pd.DataFrame, attributes: dict[str, tuple[str, ...]] | None = None, n_bootstrap: int = 1000,
              seed: int = 0, ci: float = 0.95) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(by_prompt table, summary dict) of a predictions table; prompts keep their first-seen order."""
    attributes = attributes or bias_attributes()
    records = [{k: _clean(v) for k, v in r.items()} for r in pred.to_dict("records")]
    order: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        pid = str(r["prompt_id"])
        if pid not in groups:
            order.append(pid)
            groups[pid] = []
        groups[pid].append(r)
    by_prompt: list[dict[str, Any]] = []
    for pid in order:
        rows = groups[pid]
        n_ok = sum(r["status"] == STATUS_OK for r in rows)
        row: dict[str, Any] = {"prompt_id": pid, "occupation": rows[0].get("occupation"),
                               "prompt": rows[0].get("prompt"), "n_images": len(rows), "n_faces": n_ok,
                               "face_rate": n_ok / len(rows)}
        for status in sorted({r["status"] for r in rows} - {STATUS_OK}):
            row[f"n_{status}"] = sum(r["status"] == status for r in rows)
        by_prompt.append(row)
    summary: dict[str, Any] = {
        "n_images": len(records), "n_prompts": len(order),
        "n_faces": int(sum(r["n_faces"] for r in by_prompt)),
        "face_rate": (sum(r["n_faces"] for r in by_prompt) / len(records)) if records else None,
        "face_rate_by_prompt": {r["prompt_id"]: r["face_rate"] for r in by_prompt},
        "prompts_without_face": [r["prompt_id"] for r in by_prompt if r["n_faces"] == 0],
        "statuses": {s: int(n) for s, n in pd.Series([r["status"] for r in records]).value_counts().items()},
        "n_bootstrap": n_bootstrap, "ci_level": ci, "seed": seed, "attributes": {},
    }
    for attr, classes in attributes.items():
        labels = [[attribute_label(r, attr) for r in groups[pid]] for pid in order]
        res = evaluate_attribute(labels, classes, n_bootstrap=n_bootstrap, seed=seed, ci=ci)
        summary["attributes"][attr] = {k: res[k] for k in ("classes", "aggregate", "ci", "n_prompts_with_value")}
        for row, pp in zip(by_prompt, res["per_prompt"], strict=True):
            if attr != "gender_race":
                for c, n in zip(classes, pp["counts"], strict=True):
                    row[f"{attr}_n_{c}"] = n
            for m in METRIC_NAMES:
                row[f"{attr}_{m}"] = pp[m]
                lo_hi = pp[f"{m}_ci"] or (None, None)
                row[f"{attr}_{m}_lo"], row[f"{attr}_{m}_hi"] = lo_hi
    return pd.DataFrame(by_prompt), summary


# ----------------------------------------------------------------------------- the stage
def classifier_factory_for(cfg: Any, classifier: DemographicClassifier | None = None
                           ) -> Callable[[], DemographicClassifier]:
    """A factory that builds the [labels] classifier on first call only (skipped stages never load it)."""
    built: list[DemographicClassifier] = [classifier] if classifier is not None else []

    def factory() -> DemographicClassifier:
        if not built:
            from t2i_debias.labels.registry import make_classifier
            from t2i_debias.models import resolve_device

            built.append(make_classifier(cfg.labels, device=resolve_device(cfg.run.device), smoke=cfg.run.smoke))
        return built[0]

    return factory


def evaluate_model(cfg: Any, name: str, classifier_factory: Callable[[], DemographicClassifier] | None = None,
                   force: bool = False) -> Path:
    """bias/<name>/ for one generated model (skipped when its manifest matches)."""
    classifier_factory = classifier_factory or classifier_factory_for(cfg)
    gen_dir = cfg.run_dir / "generated" / name
    out_dir = cfg.run_dir / "bias" / name
    inputs = [gen_dir / "metadata.csv"] + ([gen_dir / "generation.json"] if (gen_dir / "generation.json").exists()
                                           else [])
    config = {**cfg.section_dict("bias", "labels"), "smoke": cfg.run.smoke, "seed": cfg.run.seed}
    stage = Stage(f"bias:{name}", out_dir, config, inputs)

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        clf = classifier_factory()
        pred = classify_generated(gen_dir, clf, out_dir / ".journal.jsonl", cfg.labels.batch_size)
        by_prompt, summary = summarize(pred, bias_attributes(race_classes_of(cfg)), cfg.bias.n_bootstrap,
                                       cfg.run.seed, cfg.bias.ci)
        summary.update(model=name, classifier=clf.describe())
        outs = [atomic_write_csv(out_dir / "predictions.csv", pred),
                atomic_write_csv(out_dir / "by_prompt.csv", by_prompt),
                atomic_write_json(out_dir / "summary.json", summary)]
        agg = summary["attributes"]
        log.info("[bias] %s: face rate %.2f, gender tvd %s, race tvd %s", name, summary["face_rate"] or 0.0,
                 agg["gender"]["aggregate"]["tvd"], agg["race"]["aggregate"]["tvd"])
        return outs, {"face_rate": summary["face_rate"]}

    _run_stage(stage, body, force=force, log=log.info)
    return out_dir


def run_stage(cfg: Any, force: bool = False, classifier: DemographicClassifier | None = None) -> None:
    """Bias of every generated model; the classifier (from [labels]) is built once, only if needed."""
    from t2i_debias.generate import finished_generated, models_to_evaluate

    names = finished_generated(cfg, models_to_evaluate(cfg))
    factory = classifier_factory_for(cfg, classifier)
    for name in names:
        evaluate_model(cfg, name, factory, force=force)

