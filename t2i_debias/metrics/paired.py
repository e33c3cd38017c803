"""Paired bootstrap of (model − reference) for the bias metrics (DESIGN.md §3).

Any two models evaluated on the same prompts and seeds are paired, the reference being the base, ours
or any other model: image (prompt j, seed s) of both comes from the same initial noise. One resample
draws prompts with replacement and, within each prompt, its seeds with replacement
(`resample="prompts_and_seeds"`; `"seeds"` keeps the prompt set fixed), and applies the *same*
(prompt, seed) indices to both models. The difference of the two aggregates (mean over prompts) per
resample gives the CI and a two-sided bootstrap p-value; two independent CIs that overlap are not that test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from t2i_debias.core.options import RESAMPLE_MODES
from t2i_debias.metrics.bias import (
    METRIC_NAMES,
    METRICS,
    none_if_nan,
    p_from_codes,
    percentile_interval,
)

NOT_COMPUTED = "not computed"  # the verdict where no paired CI exists (no pairs, no bootstrap, no reference)


def _weighted_nanmean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise Σ w·v / Σ w over the finite entries of v (B, P); NaN where no prompt has a value."""
    ok = np.isfinite(values) & (weights > 0)
    w = np.where(ok, weights, 0.0)
    s = np.where(ok, values, 0.0)
    tot = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (w * s).sum(axis=-1) / np.where(tot > 0, tot, 1.0), np.nan)


def bootstrap_p(diffs: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of "difference = 0": 2·min(P(d* ≤ 0), P(d* ≥ 0)), each (count + 1)/(B + 1)."""
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return None
    b = d.size
    lo = (np.count_nonzero(d <= 0) + 1) / (b + 1)
    hi = (np.count_nonzero(d >= 0) + 1) / (b + 1)
    return float(min(1.0, 2.0 * min(lo, hi)))


def verdict(metric: str, ci: Sequence[float] | None) -> str:
    """'less biased' / 'more biased' (than the reference) when the paired CI of (model − reference) excludes 0,
    else 'no significant difference'."""
    if ci is None:
        return NOT_COMPUTED
    lo, hi = ci
    if lo <= 0 <= hi:
        return "no significant difference"
    lower = hi < 0
    return "less biased" if lower != METRICS[metric].higher_is_better else "more biased"


def paired_bootstrap(reference_codes: Sequence[np.ndarray], model_codes: Sequence[np.ndarray], k: int,
                     n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95,
                     resample: str = "prompts_and_seeds") -> dict[str, Any]:
    """Mean difference (model − reference), its paired bootstrap CI and p-value, for every metric.

    `reference_codes[j]` and `model_codes[j]` hold one class index per image of prompt j (−1: no face),
    in the same seed order, so index i of both is the same (prompt, seed). The aggregate of a model is the
    mean over prompts with a value, as in `bias.evaluate_attribute`.
    """
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    if len(reference_codes) != len(model_codes):
        raise ValueError(f"{len(reference_codes)} reference prompts vs {len(model_codes)} model prompts: not paired")
    for j, (r, m) in enumerate(zip(reference_codes, model_codes, strict=True)):
        if len(r) != len(m):
            raise ValueError(f"prompt {j}: {len(r)} reference images vs {len(m)} model images: not paired")
    n_prompts = len(reference_codes)
    out: dict[str, Any] = {"n_prompts": n_prompts, "n_pairs": int(sum(len(r) for r in reference_codes)),
                           "n_bootstrap": n_bootstrap, "seed": seed, "ci_level": ci, "resample": resample,
                           "metrics": {}}
    if n_prompts == 0:
        for m in METRIC_NAMES:
            out["metrics"][m] = {"diff": None, "ci": None, "p": None, "verdict": NOT_COMPUTED}
        return out

    def per_prompt(codes: Sequence[np.ndarray], idx: Sequence[np.ndarray | None], rows: int) -> dict[str, np.ndarray]:
        vals = {m: np.full((rows, n_prompts), np.nan) for m in METRIC_NAMES}
        for j, c in enumerate(codes):
            if len(c) == 0:
                continue
            p = p_from_codes(np.asarray(c)[idx[j]] if idx[j] is not None else np.asarray(c)[None, :], k)
            for m in METRIC_NAMES:
                vals[m][:, j] = METRICS[m].fn(p)
        return vals

    ones = np.ones((1, n_prompts))
    obs_r, obs_m = (per_prompt(c, [None] * n_prompts, 1) for c in (reference_codes, model_codes))
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        weights = np.ones((n_bootstrap, n_prompts))
        if resample == "prompts_and_seeds":
            pick = rng.integers(0, n_prompts, size=(n_bootstrap, n_prompts))
            weights = np.zeros((n_bootstrap, n_prompts))
            np.add.at(weights, (np.arange(n_bootstrap)[:, None], pick), 1.0)
        idx = [rng.integers(0, len(c), size=(n_bootstrap, len(c))) if len(c) else None for c in reference_codes]
        boot_r, boot_m = (per_prompt(c, idx, n_bootstrap) for c in (reference_codes, model_codes))
    for m in METRIC_NAMES:
        d_obs = float((_weighted_nanmean(obs_m[m], ones) - _weighted_nanmean(obs_r[m], ones))[0])
        res: dict[str, Any] = {"diff": none_if_nan(d_obs), "ci": None, "p": None}
        if n_bootstrap > 0:
            diffs = _weighted_nanmean(boot_m[m], weights) - _weighted_nanmean(boot_r[m], weights)
            res["ci"] = percentile_interval(diffs, ci)
            res["p"] = bootstrap_p(diffs)
        res["verdict"] = verdict(m, res["ci"])
        out["metrics"][m] = res
    return out
