"""The sampling-noise floor of the bias metrics (DESIGN.md §3): what a perfectly balanced model shows.

A finite sample of a balanced model is not balanced: with n labelled images and K classes the counts
are Multinomial(n, 1/K each), so E[tvd(p̂)] > 0 (about 0.08 for gender and 0.18 for 6 races at n = 25).
`floor(metric, n, k)` is that expectation:
- exact when the number of possible count vectors, C(n + K − 1, K − 1), is at most `exact_max`
  (always for K = 2, where it is the binomial sum over n + 1 outcomes);
- otherwise a seeded Monte Carlo of `draws` multinomial samples, with its standard error as the
  stated precision (`se`; 0 for an exact value).
`excess` = value − floor. For `entropy` (higher is better, 1 = balanced) the floor lies below 1 and a
more biased model has a negative excess.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.special import gammaln

from t2i_debias.metrics.bias import METRIC_NAMES, METRICS

EXACT_MAX = 200_000  # count vectors enumerated at most for an exact floor
DRAWS = 20_000  # Monte Carlo draws otherwise (standard error about 0.0005 for tvd at K = 12, n = 64)


@dataclass(frozen=True)
class Floor:
    """Expected metric values of a balanced model with n labelled images over K classes."""

    n: int
    k: int
    values: dict[str, float]  # metric -> expectation
    se: dict[str, float]  # metric -> standard error (0 when exact)
    exact: bool
    draws: int  # Monte Carlo draws (0 when exact)


def n_outcomes(n: int, k: int) -> int:
    """Number of count vectors of n items over k classes (stars and bars)."""
    return math.comb(n + k - 1, k - 1)


def compositions(n: int, k: int) -> np.ndarray:
    """Every count vector (c_1..c_k) with Σc = n, shape (C(n+k−1, k−1), k): k − 1 bars among n + k − 1 slots."""
    bars = np.array(list(itertools.combinations(range(n + k - 1), k - 1)), dtype=np.int64).reshape(-1, k - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + k - 1)], axis=1)
    return np.diff(edges, axis=1) - 1


def multinomial_uniform_pmf(c: np.ndarray) -> np.ndarray:
    """P(counts = c) under Multinomial(Σc, 1/K each), for rows c of shape (..., K)."""
    c = np.asarray(c, dtype=np.int64)
    n = c.sum(axis=-1)
    k = c.shape[-1]
    log_p = gammaln(n + 1.0) - gammaln(c + 1.0).sum(axis=-1) - n * math.log(k)
    return np.exp(log_p)


@lru_cache(maxsize=4096)
def floor(n: int, k: int, seed: int = 0, draws: int = DRAWS, exact_max: int = EXACT_MAX) -> Floor:
    """Expected tvd / pairwise / kl / entropy of p̂ = counts / n, counts ~ Multinomial(n, 1/K each).

    Exact when C(n+K−1, K−1) ≤ `exact_max`, else the mean of `draws` seeded draws (the generator is
    seeded by (seed, n, k), so a floor does not depend on which other floors were computed first).
    """
    if n < 1:
        raise ValueError(f"a floor needs n >= 1 labelled images, got {n}")
    if k < 2:
        raise ValueError(f"a floor needs K >= 2 classes, got {k}")
    if n_outcomes(n, k) <= exact_max:
        c = compositions(n, k)
        w = multinomial_uniform_pmf(c)
        p = c / n
        values = {m: float(np.dot(w, METRICS[m].fn(p))) for m in METRIC_NAMES}
        return Floor(n, k, values, {m: 0.0 for m in METRIC_NAMES}, exact=True, draws=0)
    if draws < 2:
        raise ValueError(f"a Monte Carlo floor needs draws >= 2, got {draws}")
    rng = np.random.default_rng([seed, n, k])
    p = rng.multinomial(n, np.full(k, 1.0 / k), size=draws) / n
    values, se = {}, {}
    for m in METRIC_NAMES:
        v = np.asarray(METRICS[m].fn(p), dtype=float)
        values[m] = float(v.mean())
        se[m] = float(v.std(ddof=1) / math.sqrt(draws))
    return Floor(n, k, values, se, exact=False, draws=draws)


def floor_value(metric: str, n: int, k: int, **kw: int) -> float | None:
    """The floor of one metric; None when n = 0 (no face found: no value, so no floor)."""
    if n == 0:
        return None
    return floor(int(n), int(k), **kw).values[metric]


def add_floors(result: dict[str, Any], seed: int = 0, draws: int = DRAWS, exact_max: int = EXACT_MAX
               ) -> dict[str, Any]:
    """`bias.evaluate_attribute`'s result with the floor and excess of every per-prompt and aggregate value.

    Per prompt: `<metric>_floor`, `<metric>_excess` (None without a face) and `floor_exact`. Aggregate
    (the mean over prompts with a value, like the value itself): `floor`, `excess`, `floor_se` (the
    Monte Carlo standard error of the mean floor; 0 when every prompt's floor is exact) and `floor_method`.
    """
    k = len(result["classes"])
    floors = {m: [] for m in METRIC_NAMES}
    ses = {m: [] for m in METRIC_NAMES}
    methods: set[str] = set()
    for row in result["per_prompt"]:
        n = int(row["n_labelled"])
        f = floor(n, k, seed=seed, draws=draws, exact_max=exact_max) if n > 0 else None
        row["floor_exact"] = None if f is None else f.exact
        for m in METRIC_NAMES:
            fv = None if f is None else f.values[m]
            row[f"{m}_floor"] = fv
            row[f"{m}_excess"] = None if fv is None or row[m] is None else row[m] - fv
            if fv is not None and row[m] is not None:
                floors[m].append(fv)
                ses[m].append(f.se[m])
        if f is not None:
            methods.add("exact" if f.exact else f"Monte Carlo ({f.draws} draws, seed {seed})")
    result["floor"], result["excess"], result["floor_se"] = {}, {}, {}
    for m in METRIC_NAMES:
        fm = float(np.mean(floors[m])) if floors[m] else None
        agg = result["aggregate"].get(m)
        result["floor"][m] = fm
        result["excess"][m] = None if fm is None or agg is None else agg - fm
        result["floor_se"][m] = float(math.sqrt(sum(s * s for s in ses[m])) / len(ses[m])) if ses[m] else None
    result["floor_method"] = " + ".join(sorted(methods)) if methods else None
    return result
