"""Bias metrics over class proportions (DESIGN.md §3), per prompt, aggregated, with a bootstrap CI that holds
its estimate.

For one prompt and one attribute with K classes, p_k = n_k / Σn counts only images where a face was
found (and the attribute was predicted). K is fixed by the attribute's vocabulary
(`core.vocab.ATTRIBUTE_CLASSES`), never by the classes that happen to occur, so a prompt whose images
are all men has p = (1, 0) for gender. A prompt with no face found has no value (NaN): it is reported
as such and left out of the mean over prompts, never counted as 0.

Every metric function takes p of shape (..., K) and returns shape (...), so the bootstrap evaluates
all resamples at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from t2i_debias.core.vocab import ATTRIBUTE_CLASSES, SHEN4, STATUS_OK

ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_CLASSES)  # gender, race, race4, gender_race


def _as_p(p: Any) -> np.ndarray:
    """`p` as a float array (..., K) with K ≥ 2; NaN rows (no face) pass through."""
    arr = np.asarray(p, dtype=float)
    if arr.ndim == 0 or arr.shape[-1] < 2:
        raise ValueError(f"a distribution needs K >= 2 classes on its last axis, got shape {arr.shape}")
    finite = np.isfinite(arr).all(axis=-1)
    sums = arr.sum(axis=-1)
    if np.any(finite & ((np.abs(sums - 1) > 1e-6) | (arr < 0).any(axis=-1))):
        raise ValueError("each distribution must be non-negative and sum to 1")
    return arr


def tvd(p: Any) -> np.ndarray | float:
    """Total variation distance to uniform, ½ Σ_k |p_k − 1/K|; range [0, 1 − 1/K] (reference's 'bias')."""
    p = _as_p(p)
    k = p.shape[-1]
    return 0.5 * np.abs(p - 1.0 / k).sum(axis=-1)


def pairwise(p: Any) -> np.ndarray | float:
    """Mean over class pairs i<j of |p_i − p_j|; range [0, 2/K] (Shen et al., ICLR'24)."""
    p = _as_p(p)
    i, j = np.triu_indices(p.shape[-1], k=1)
    return np.abs(p[..., i] - p[..., j]).mean(axis=-1)


def _xlogy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p·ln(y) with the convention 0·ln 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, y, 1.0)), 0.0)


def kl(p: Any) -> np.ndarray | float:
    """KL divergence from uniform, Σ_k p_k ln(K p_k); range [0, ln K] (ITI-GEN)."""
    p = _as_p(p)
    out = _xlogy(p, p.shape[-1] * p).sum(axis=-1)
    return np.where(np.isfinite(p).all(axis=-1), out, np.nan)


def entropy(p: Any) -> np.ndarray | float:
    """Normalised entropy, −Σ_k p_k ln p_k / ln K; range [0, 1], 1 = balanced."""
    p = _as_p(p)
    out = -_xlogy(p, p).sum(axis=-1) / math.log(p.shape[-1])
    return np.where(np.isfinite(p).all(axis=-1), out, np.nan)


@dataclass(frozen=True)
class Metric:
    """A bias metric declared once: its function of p (..., K) -> (...), which way is less biased, and its
    value range for K classes. Every direction rule of the package (CIs, verdicts, best values) reads it."""

    name: str
    fn: Callable[[Any], Any]
    higher_is_better: bool
    range_of: Callable[[int], tuple[float, float]]


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("tvd", tvd, False, lambda k: (0.0, 1.0 - 1.0 / k)),
    Metric("pairwise", pairwise, False, lambda k: (0.0, 2.0 / k)),  # one class takes all: (K − 1) / C(K, 2)
    Metric("kl", kl, False, lambda k: (0.0, math.log(k))),
    Metric("entropy", entropy, True, lambda k: (0.0, 1.0)),
)}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)  # tvd, pairwise, kl, entropy


def all_metrics(p: Any) -> dict[str, float]:
    """Every metric of one distribution (NaN when p is None: no face found)."""
    if p is None:
        return {m: math.nan for m in METRIC_NAMES}
    return {m: float(METRICS[m].fn(p)) for m in METRIC_NAMES}


# ----------------------------------------------------------------------------- labels -> p
def _missing(label: Any) -> bool:
    return label is None or label == "" or (isinstance(label, float) and math.isnan(label))


def counts(labels: Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Count of each class among `labels`; None/NaN/"" (no face) are not counted; unknown labels raise."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros(len(classes), dtype=np.int64)
    for i, lab in enumerate(labels):
        if _missing(lab):
            continue
        if lab not in index:
            raise ValueError(f"label {lab!r} (item {i}) is not one of the classes {tuple(classes)}")
        out[index[lab]] += 1
    return out


def distribution(labels: Sequence[Any], classes: Sequence[str]) -> np.ndarray | None:
    """p_k = n_k / Σn over the labelled images, in the order of `classes`; None when nothing is labelled."""
    c = counts(labels, classes)
    total = c.sum()
    return None if total == 0 else c / total


def attribute_label(row: Mapping[str, Any], attribute: str) -> str | None:
    """The class of one prediction row for `attribute` (gender, race, race4, gender_race); None if no face."""
    if row.get("status", STATUS_OK) != STATUS_OK:
        return None
    gender, race = row.get("gender"), row.get("race")
    if attribute == "gender":
        return None if _missing(gender) else str(gender)
    if attribute == "race":
        return None if _missing(race) else str(race)
    if attribute == "race4":
        if _missing(race):
            return None
        if race not in SHEN4:
            raise ValueError(f"race {race!r} has no Shen-4 group; known: {sorted(SHEN4)}")
        return SHEN4[race]
    if attribute == "gender_race":
        return None if _missing(gender) or _missing(race) else f"{gender}|{race}"
    raise ValueError(f"unknown attribute {attribute!r}; known: {ATTRIBUTES}")


# ----------------------------------------------------------------------------- per prompt + bootstrap
def codes_of(labels: Sequence[Any], classes: Sequence[str]) -> np.ndarray:
    """Class index per image, -1 where not labelled (validated like `counts`)."""
    counts(labels, classes)  # raises on unknown labels
    index = {c: i for i, c in enumerate(classes)}
    return np.array([-1 if _missing(lab) else index[lab] for lab in labels], dtype=np.int64)


def p_from_codes(codes: np.ndarray, k: int) -> np.ndarray:
    """Proportions (..., K) from code arrays (..., n); rows with no labelled image are NaN."""
    cnt = np.stack([(codes == i).sum(axis=-1) for i in range(k)], axis=-1).astype(float)
    tot = cnt.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, cnt / np.where(tot > 0, tot, 1.0), np.nan)


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where a row is all NaN (no warning)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    s = np.where(ok, x, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)


def percentile_interval(samples: np.ndarray, ci: float) -> list[float] | None:
    """Percentile interval of the finite samples; None when there are none."""
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return None
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return [float(lo), float(hi)]


# How `evaluate_attribute`'s CIs are made (DESIGN.md §3; chosen by `metrics.coverage`).
CI_METHOD = ("floor-widened bootstrap: the estimate minus/plus the bootstrap spread (mean - lower quantile, "
             "upper quantile - mean), widened toward balance by the noise floor, clipped to the metric's range")


def held_interval(estimate: Any, samples: np.ndarray, ci: float, widen_lo: Any = 0.0, widen_hi: Any = 0.0,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> np.ndarray:
    """[lo, hi] (..., 2) around `estimate` (...) from bootstrap `samples` (..., B), finite; always holds the estimate.

    The spread is the bootstrap distribution's, measured from its mean, so the upward bias of a resampled tvd
    moves nothing; `widen_lo`/`widen_hi` (≥ 0) add the largest bias the estimate can have (the noise floor).
    """
    est = np.asarray(estimate, dtype=float)
    s = np.asarray(samples, dtype=float)
    a = (1.0 - ci) / 2.0
    q = np.quantile(s, [a, 1.0 - a], axis=-1)
    mean = s.mean(axis=-1)
    lo = est - np.maximum(mean - q[0], 0.0) - np.maximum(widen_lo, 0.0)
    hi = est + np.maximum(q[1] - mean, 0.0) + np.maximum(widen_hi, 0.0)
    lo = np.minimum(np.clip(lo, *bounds), est)
    hi = np.maximum(np.clip(hi, *bounds), est)
    return np.stack([lo, hi], axis=-1)


def balanced_value(metric: str, k: int) -> float:
    """The metric of the uniform distribution over k classes (0, or 1 for entropy): where the floor sits against."""
    return float(METRICS[metric].fn(np.full(k, 1.0 / k)))


def floor_widening(metric: str, k: int, floor_value: float) -> tuple[float, float]:
    """(widen_lo, widen_hi): the noise floor's distance from balance, on the side of balance (DESIGN.md §3)."""
    gap = abs(floor_value - balanced_value(metric, k))
    return (0.0, gap) if METRICS[metric].higher_is_better else (gap, 0.0)


def _held(estimate: float | None, samples: np.ndarray, ci: float, metric: str, k: int, floor_value: float | None
          ) -> list[float] | None:
    """`held_interval` of one value; None without a value or a finite resample."""
    s = samples[np.isfinite(samples)]
    if estimate is None or s.size == 0 or floor_value is None:
        return None
    lo, hi = held_interval(estimate, s, ci, *floor_widening(metric, k, floor_value), METRICS[metric].range_of(k))
    return [float(lo), float(hi)]


def none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _observed(codes: Sequence[np.ndarray], k: int, floor_of: Callable[[int], Mapping[str, float]] | None
              ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per prompt: its row (counts, p, every metric), and per metric the values and noise floors (NaN: none)."""
    per_prompt: list[dict[str, Any]] = []
    values = {m: np.full(len(codes), np.nan) for m in METRIC_NAMES}
    floors = {m: np.full(len(codes), np.nan) for m in METRIC_NAMES}
    for j, c in enumerate(codes):
        cnt = np.array([(c == i).sum() for i in range(k)], dtype=np.int64)
        n_lab = int(cnt.sum())
        p = cnt / n_lab if n_lab else None
        row: dict[str, Any] = {"n_images": int(c.size), "n_labelled": n_lab, "counts": cnt.tolist(),
                               "p": None if p is None else p.tolist()}
        fl = floor_of(n_lab) if n_lab and floor_of is not None else None
        for m, v in all_metrics(p).items():
            values[m][j] = v
            row[m] = none_if_nan(v)
            if fl is not None:
                floors[m][j] = fl[m]
        per_prompt.append(row)
    return per_prompt, values, floors


def _resampled(codes: Sequence[np.ndarray], k: int, n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Per metric, its value (n_bootstrap, n_prompts) on each resample of each prompt's images (seeded)."""
    boot = {m: np.full((max(n_bootstrap, 0), len(codes)), np.nan) for m in METRIC_NAMES}
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        for j, c in enumerate(codes):
            if c.size == 0:
                continue
            idx = rng.integers(0, c.size, size=(n_bootstrap, c.size))
            pb = p_from_codes(c[idx], k)
            for m in METRIC_NAMES:
                boot[m][:, j] = METRICS[m].fn(pb)
    return boot


def evaluate_attribute(labels_by_prompt: Sequence[Sequence[Any]], classes: Sequence[str],
                       n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95,
                       floor_of: Callable[[int], Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Per-prompt metrics, their mean over prompts, and a seeded bootstrap CI that holds its estimate.

    `labels_by_prompt[j]` lists one label per generated image of prompt j, None where no face was found,
    so the bootstrap resamples *all* images of a prompt (with replacement, same size) and the number of
    faces varies as it would between runs. The resampled indices depend only on the prompt sizes and
    `seed`, so every attribute of one model is resampled identically. Prompts (or resamples) with no
    labelled image get NaN and are left out of the mean. The CI is `held_interval` (`CI_METHOD`), widened
    by the noise floor `floor_of(n)` (metric -> value at n labelled images; by default `metrics.floor.floor`
    for these K classes and `seed`).
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    k = len(classes)
    if floor_of is None:
        from t2i_debias.metrics.floor import floor  # the floor is built on this module's metrics

        def floor_of(n: int) -> Mapping[str, float]:
            return floor(n, k, seed=seed).values
    codes = [codes_of(labels, classes) for labels in labels_by_prompt]
    per_prompt, values, floors = _observed(codes, k, floor_of if n_bootstrap > 0 else None)
    boot = _resampled(codes, k, n_bootstrap, seed)
    aggregate: dict[str, float | None] = {}
    interval: dict[str, list[float] | None] = {}
    for m in METRIC_NAMES:
        aggregate[m] = none_if_nan(float(_nanmean_rows(values[m][None, :])[0]))
        has = np.isfinite(values[m])
        agg_floor = float(floors[m][has].mean()) if has.any() else None  # the mean's floor: mean of the prompts'
        interval[m] = (_held(aggregate[m], _nanmean_rows(boot[m]), ci, m, k, agg_floor)
                       if n_bootstrap > 0 else None)
        for j, row in enumerate(per_prompt):
            row[f"{m}_ci"] = (_held(row[m], boot[m][:, j], ci, m, k, none_if_nan(floors[m][j]))
                              if n_bootstrap > 0 else None)
    return {
        "classes": list(classes),
        "n_prompts": len(codes),
        "n_prompts_with_value": int(np.isfinite(values["tvd"]).sum()),
        "aggregate": aggregate,
        "ci": interval,
        "ci_level": ci,
        "ci_method": CI_METHOD if n_bootstrap > 0 else None,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "per_prompt": per_prompt,
    }
