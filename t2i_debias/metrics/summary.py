"""Bias numbers with CIs from the classified generated images: what `stages.bias.evaluate_model` writes per model.

For each model with `generated/<model>/metadata.csv`, `bias/<model>/` holds:
- `predictions.csv`: one row per generated image (no-face and other skip statuses kept), with the
  labels backend's gender / race / age and face box;
- `by_prompt.csv`: per prompt, the face-found and ambiguous rates, class counts and every metric of
  DESIGN.md §3 for gender, race (6 groups), race4 (Shen's 4 groups) and gender×race, each with its
  bootstrap CI, its noise floor (a balanced model with as many labelled images) and excess = value − floor;
- `summary.json`: the mean over prompts of every metric with its seeded bootstrap 95% CI, floor and
  excess; the generation settings (guidance scale, sampler, steps, resolution, images per prompt); and,
  for every model but the base, the paired bootstrap of (model − base) on the same (prompt, seed) pairs.
Images with a skip status (no_face, ambiguous, ...) are left out of the proportions; their rates are reported.
An image generation marked `constant` (one colour everywhere) gets status blank_image, and a model whose
images are all constant is refused (InputError naming it): a black image is nobody, not a result.
An attribute the labels backend does not measure (its `measures`) gets no metric: summary.json lists it in
`not_measured`.
Classification results are journalled by image hash, so a killed run resumes without redoing them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.errors import InputError
from t2i_debias.core.files import safe_join
from t2i_debias.core.vocab import (
    GENDERS,
    RACES,
    SHEN4_CLASSES,
    STATUS_AMBIGUOUS,
    STATUS_OK,
)
from t2i_debias.labels.runner import _is_true
from t2i_debias.metrics.bias import METRIC_NAMES, attribute_label, codes_of, evaluate_attribute
from t2i_debias.metrics.floor import DRAWS, EXACT_MAX, add_floors, floor
from t2i_debias.metrics.paired import paired_bootstrap

log = logging.getLogger(__name__)


def bias_attributes(race_classes: tuple[str, ...] = RACES) -> dict[str, tuple[str, ...]]:
    """Attribute -> class vocabulary: gender, race, race4 (only for DeepFace's six races), gender_race."""
    out: dict[str, tuple[str, ...]] = {"gender": GENDERS, "race": tuple(race_classes)}
    if set(race_classes) == set(RACES):
        out["race4"] = SHEN4_CLASSES
    out["gender_race"] = tuple(f"{g}|{r}" for g in GENDERS for r in race_classes)
    return out


def check_not_constant(gen_dir: Path, name: str) -> None:
    """Refuse a model whose generated images are all one colour (metadata.csv `constant`), naming it."""
    from t2i_debias.sampling import read_metadata

    meta = read_metadata(gen_dir)
    if "constant" not in meta.columns or meta.empty:
        return
    n = int(sum(_is_true(v) for v in meta["constant"]))
    if n == len(meta):
        raise InputError(f"model {name}: {n} of {len(meta)} images in {gen_dir} are one colour everywhere (e.g. "
                         f"{meta['file'].iloc[0]}): the model is broken (a diverged fine-tune?), so it has no bias "
                         "to measure; retrain it or remove it from [generate] models")


# ----------------------------------------------------------------------------- metrics
def _clean(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _group(pred: pd.DataFrame) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Prediction rows by prompt_id, prompts in first-seen order."""
    records = [{k: _clean(v) for k, v in r.items()} for r in pred.to_dict("records")]
    order: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        pid = str(r["prompt_id"])
        if pid not in groups:
            order.append(pid)
            groups[pid] = []
        groups[pid].append(r)
    return order, groups


def summarize(pred: pd.DataFrame, attributes: dict[str, tuple[str, ...]] | None = None, n_bootstrap: int = 1000,
              seed: int = 0, ci: float = 0.95, floor_draws: int = DRAWS, floor_exact_max: int = EXACT_MAX
              ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(by_prompt table, summary dict) of a predictions table; prompts keep their first-seen order.

    Every per-prompt and aggregate value comes with its noise floor and excess (metrics/floor.py).
    """
    attributes = attributes or bias_attributes()
    order, groups = _group(pred)
    n_records = sum(len(g) for g in groups.values())
    by_prompt: list[dict[str, Any]] = []
    for pid in order:
        rows = groups[pid]
        n_ok = sum(r["status"] == STATUS_OK for r in rows)
        n_amb = sum(r["status"] == STATUS_AMBIGUOUS for r in rows)
        row: dict[str, Any] = {"prompt_id": pid, "occupation": rows[0].get("occupation"),
                               "prompt": rows[0].get("prompt"), "n_images": len(rows), "n_faces": n_ok,
                               "face_rate": n_ok / len(rows), "n_ambiguous": n_amb, "ambiguous_rate": n_amb / len(rows)}
        for status in sorted({r["status"] for r in rows} - {STATUS_OK, STATUS_AMBIGUOUS}):
            row[f"n_{status}"] = sum(r["status"] == status for r in rows)
        by_prompt.append(row)
    n_amb_all = sum(r["n_ambiguous"] for r in by_prompt)
    summary: dict[str, Any] = {
        "n_images": n_records, "n_prompts": len(order),
        "n_faces": int(sum(r["n_faces"] for r in by_prompt)),
        "face_rate": (sum(r["n_faces"] for r in by_prompt) / n_records) if n_records else None,
        "face_rate_by_prompt": {r["prompt_id"]: r["face_rate"] for r in by_prompt},
        "ambiguous_rate": (n_amb_all / n_records) if n_records else None,
        "ambiguous_rate_by_prompt": {r["prompt_id"]: r["ambiguous_rate"] for r in by_prompt},
        "prompts_without_face": [r["prompt_id"] for r in by_prompt if r["n_faces"] == 0],
        "statuses": {s: int(n) for s, n in pd.Series([r["status"] for g in groups.values() for r in g],
                                                     dtype=object).value_counts().items()},
        "n_bootstrap": n_bootstrap, "ci_level": ci, "seed": seed, "attributes": {},
    }
    for attr, classes in attributes.items():
        labels = [[attribute_label(r, attr) for r in groups[pid]] for pid in order]
        k = len(classes)
        res = evaluate_attribute(labels, classes, n_bootstrap=n_bootstrap, seed=seed, ci=ci,
                                 floor_of=lambda n, k=k: floor(n, k, seed=seed, draws=floor_draws,
                                                               exact_max=floor_exact_max).values)
        add_floors(res, seed=seed, draws=floor_draws, exact_max=floor_exact_max)
        summary["attributes"][attr] = {k: res[k] for k in ("classes", "aggregate", "ci", "ci_method", "floor", "excess",
                                                            "floor_se", "floor_method", "n_prompts_with_value")}
        for row, pp in zip(by_prompt, res["per_prompt"], strict=True):
            if attr != "gender_race":
                for c, n in zip(classes, pp["counts"], strict=True):
                    row[f"{attr}_n_{c}"] = n
            for m in METRIC_NAMES:
                row[f"{attr}_{m}"] = pp[m]
                lo_hi = pp[f"{m}_ci"] or (None, None)
                row[f"{attr}_{m}_lo"], row[f"{attr}_{m}_hi"] = lo_hi
                row[f"{attr}_{m}_floor"] = pp[f"{m}_floor"]
                row[f"{attr}_{m}_excess"] = pp[f"{m}_excess"]
    return pd.DataFrame(by_prompt), summary


def read_predictions(path: Path) -> pd.DataFrame:
    """A bias/<model>/predictions.csv as written (empty cells stay "", prompt ids stay text)."""
    return unescape_frame(pd.read_csv(path, keep_default_na=False, dtype={"prompt_id": str}))


def paired_comparison(pred: pd.DataFrame, ref_pred: pd.DataFrame, attributes: dict[str, tuple[str, ...]] | None = None,
                      n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95, resample: str = "prompts_and_seeds",
                      against: str = "base") -> dict[str, Any]:
    """Paired bootstrap of (model − reference) per attribute and metric on the (prompt_id, seed) pairs both have.

    `ref_pred` holds the predictions of the reference model named `against` (the base, ours, any model).
    Images only one model has are left out of the pairing and counted (`n_only_model`; `n_only_base`: the
    reference's, a key kept for readers of existing summaries).
    """
    attributes = attributes or bias_attributes()
    order, groups = _group(pred)
    _, ref_groups = _group(ref_pred)
    pairs: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    only_model = only_base = 0
    for pid in order:
        mine = {int(r["seed"]): r for r in groups[pid]}
        theirs = {int(r["seed"]): r for r in ref_groups.get(pid, [])}
        common = sorted(set(mine) & set(theirs))
        only_model += len(mine) - len(common)
        only_base += len(theirs) - len(common)
        if common:
            pairs.append(([theirs[s] for s in common], [mine[s] for s in common]))
    only_base += sum(len(g) for pid, g in ref_groups.items() if pid not in groups)
    out: dict[str, Any] = {"against": against, "n_pairs": sum(len(b) for b, _ in pairs), "n_prompts": len(pairs),
                           "n_only_model": only_model, "n_only_base": only_base, "resample": resample,
                           "n_bootstrap": n_bootstrap, "ci_level": ci, "seed": seed, "attributes": {}}
    if only_model or only_base:
        log.warning("paired comparison against %s: %d model and %d %s images have no partner (same prompt and "
                    "seed); they are left out of the pairing", against, only_model, only_base, against)
    for attr, classes in attributes.items():
        codes = [(codes_of([attribute_label(r, attr) for r in b], classes),
                  codes_of([attribute_label(r, attr) for r in m], classes)) for b, m in pairs]
        res = paired_bootstrap([b for b, _ in codes], [m for _, m in codes], len(classes), n_bootstrap=n_bootstrap,
                               seed=seed, ci=ci, resample=resample)
        out["attributes"][attr] = res["metrics"]
    return out


def _unique(values: pd.Series) -> Any:
    """The one value of a column (None when absent/empty), or the sorted distinct values when they differ."""
    vals = sorted({v for v in values.tolist() if v is not None and v == v and v != ""}, key=str)
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else vals


def generation_settings(gen_dir: Path, meta: pd.DataFrame | None = None) -> dict[str, Any]:
    """What the images were made with (guidance scale, sampler, steps, resolution, images per prompt, seeds).

    Read from metadata.csv (written from each PNG's own record) and the first image's size; a value
    that differs between images is the list of its values; one not recorded is None.
    """
    from PIL import Image

    from t2i_debias.sampling import read_metadata

    meta = read_metadata(gen_dir) if meta is None else meta

    def col(c: str) -> Any:
        return _unique(meta[c]) if c in meta.columns else None

    per_prompt = meta.groupby("prompt_id").size() if len(meta) else pd.Series(dtype=int)
    resolution = None
    if len(meta):
        with Image.open(safe_join(gen_dir, meta["file"].iloc[0])) as im:
            resolution = f"{im.width}x{im.height}"
    ipp = sorted(set(int(x) for x in per_prompt)) if len(per_prompt) else []
    seeds = [int(s) for s in meta["seed"]] if len(meta) else []
    steps, guidance = col("num_inference_steps"), col("guidance_scale")
    return {
        "guidance_scale": float(guidance) if isinstance(guidance, (int, float)) else guidance,
        "sampler": col("sampler"),
        "num_inference_steps": int(steps) if isinstance(steps, (int, float)) else steps,
        "resolution": resolution,
        "images_per_prompt": (ipp[0] if len(ipp) == 1 else ipp) if ipp else None,
        "seeds": [min(seeds), max(seeds)] if seeds else None,
    }
