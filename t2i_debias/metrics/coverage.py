"""Coverage of the bias CIs (DESIGN.md §3): which interval `bias.evaluate_attribute` reports, chosen by simulation.

A model whose images of prompt j fall into K classes with probabilities p_j is simulated R times: counts ~
Multinomial(n, p_j) per prompt, the estimate is the mean over prompts of metric(counts / n), and B bootstrap
resamples draw counts* ~ Multinomial(n, counts / n) per prompt (what resampling n labelled images with
replacement amounts to). Each candidate interval is scored by
- coverage: how often it holds the true value, the mean over prompts of metric(p_j);
- holds: how often it holds its own estimate;
- width: its mean width.

Candidates: `percentile` (the bootstrap's quantiles), `basic` (2·estimate − quantiles), `centred` (the
bootstrap spread around the estimate, measured from the bootstrap mean) and `floor-widened` (centred, widened
toward balance by the noise floor, `metrics/floor.py`: what `evaluate_attribute` reports).

    python -m t2i_debias.metrics.coverage            # writes docs/results/interval_coverage.md
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2i_debias.metrics.bias import (
    CI_METHOD,
    METRIC_NAMES,
    METRICS,
    floor_widening,
    held_interval,
)
from t2i_debias.metrics.floor import floor

log = logging.getLogger(__name__)

REPORT = Path(__file__).resolve().parents[2] / "docs" / "results" / "interval_coverage.md"
CHOSEN = "floor-widened"


@dataclass(frozen=True)
class Setting:
    """One simulated model: `n` labelled images for each prompt j, drawn with class probabilities `p[j]`."""

    name: str
    n: int
    p: tuple[tuple[float, ...], ...]  # one row per prompt

    @property
    def n_prompts(self) -> int:
        return len(self.p)

    @property
    def k(self) -> int:
        return len(self.p[0])


def _same(p: tuple[float, ...], n_prompts: int) -> tuple[tuple[float, ...], ...]:
    return (p,) * n_prompts


# The demo's size (4 occupations x 64 images) and the upstream protocol's (25 prompts x 100 images); gender
# (K = 2) and 3 skin tones (K = 3); balanced, mildly and strongly biased; and one prompt (the per-prompt CI).
SETTINGS: tuple[Setting, ...] = (
    Setting("demo 4x64, gender, balanced", 64, _same((0.5, 0.5), 4)),
    Setting("demo 4x64, gender, 60/40", 64, _same((0.6, 0.4), 4)),
    Setting("demo 4x64, gender, 80/20", 64, _same((0.8, 0.2), 4)),
    Setting("demo 4x64, gender, mixed 50..90", 64, ((0.5, 0.5), (0.7, 0.3), (0.9, 0.1), (0.2, 0.8))),
    Setting("demo 4x64, skin, balanced", 64, _same((1 / 3, 1 / 3, 1 / 3), 4)),
    Setting("demo 4x64, skin, 50/30/20", 64, _same((0.5, 0.3, 0.2), 4)),
    Setting("demo 4x64, skin, 80/15/5", 64, _same((0.8, 0.15, 0.05), 4)),
    Setting("upstream 25x100, gender, balanced", 100, _same((0.5, 0.5), 25)),
    Setting("upstream 25x100, gender, 55/45", 100, _same((0.55, 0.45), 25)),
    Setting("upstream 25x100, gender, 80/20", 100, _same((0.8, 0.2), 25)),
    Setting("upstream 25x100, skin, balanced", 100, _same((1 / 3, 1 / 3, 1 / 3), 25)),
    Setting("upstream 25x100, skin, 50/30/20", 100, _same((0.5, 0.3, 0.2), 25)),
    Setting("one prompt x64, gender, balanced", 64, _same((0.5, 0.5), 1)),
    Setting("one prompt x64, gender, 70/30", 64, _same((0.7, 0.3), 1)),
)


def multinomial(rng: np.random.Generator, n: int, p: np.ndarray) -> np.ndarray:
    """Counts (..., K) ~ Multinomial(n, p[...]) for every row of p, by conditional binomials (vectorised)."""
    p = np.asarray(p, dtype=float)
    out = np.zeros(p.shape, dtype=np.int64)
    left = np.full(p.shape[:-1], n, dtype=np.int64)
    mass = np.ones(p.shape[:-1])
    for i in range(p.shape[-1] - 1):
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.clip(np.where(mass > 0, p[..., i] / np.where(mass > 0, mass, 1.0), 0.0), 0.0, 1.0)
        out[..., i] = rng.binomial(left, q)
        left = left - out[..., i]
        mass = mass - p[..., i]
    out[..., -1] = left
    return out


def _percentile(est: np.ndarray, boot: np.ndarray, ci: float, metric: str, k: int, fl: float) -> np.ndarray:
    a = (1.0 - ci) / 2.0
    return np.moveaxis(np.quantile(boot, [a, 1.0 - a], axis=-1), 0, -1)


def _basic(est: np.ndarray, boot: np.ndarray, ci: float, metric: str, k: int, fl: float) -> np.ndarray:
    q = _percentile(est, boot, ci, metric, k, fl)
    return np.clip(np.stack([2 * est - q[..., 1], 2 * est - q[..., 0]], axis=-1), *METRICS[metric].range_of(k))


def _centred(est: np.ndarray, boot: np.ndarray, ci: float, metric: str, k: int, fl: float) -> np.ndarray:
    return held_interval(est, boot, ci, bounds=METRICS[metric].range_of(k))


def _floor_widened(est: np.ndarray, boot: np.ndarray, ci: float, metric: str, k: int, fl: float) -> np.ndarray:
    return held_interval(est, boot, ci, *floor_widening(metric, k, fl), METRICS[metric].range_of(k))


Method = Callable[[np.ndarray, np.ndarray, float, str, int, float], np.ndarray]
METHODS: dict[str, Method] = {"percentile": _percentile, "basic": _basic, "centred": _centred,
                              CHOSEN: _floor_widened}


@dataclass(frozen=True)
class Score:
    """How one interval method did on one setting and metric."""

    coverage: float
    holds: float
    width: float


def simulate(setting: Setting, reps: int = 400, n_boot: int = 400, seed: int = 0, ci: float = 0.95,
             batch: int = 50) -> dict[str, dict[str, Score]]:
    """method -> metric -> Score over `reps` seeded repetitions of `setting`, `n_boot` resamples each."""
    rng = np.random.default_rng([seed, setting.n, setting.n_prompts, setting.k])
    p = np.asarray(setting.p, dtype=float)  # (P, K)
    k = setting.k
    truth = {m: float(np.mean(METRICS[m].fn(p))) for m in METRIC_NAMES}
    fl = floor(setting.n, k).values  # every prompt has n labelled images: the mean floor is the floor
    hits = {meth: {m: [] for m in METRIC_NAMES} for meth in METHODS}
    for start in range(0, reps, batch):
        r = min(batch, reps - start)
        p_hat = multinomial(rng, setting.n, np.broadcast_to(p, (r, *p.shape))) / setting.n  # (r, P, K)
        p_star = multinomial(rng, setting.n, np.broadcast_to(p_hat[:, None], (r, n_boot, *p.shape))) / setting.n
        for m in METRIC_NAMES:
            est = METRICS[m].fn(p_hat).mean(axis=-1)  # (r,)
            boot = METRICS[m].fn(p_star).mean(axis=-1)  # (r, B)
            for meth, fn in METHODS.items():
                iv = fn(est, boot, ci, m, k, fl[m])
                hits[meth][m].append(np.stack([(iv[:, 0] <= truth[m] + 1e-12) & (truth[m] - 1e-12 <= iv[:, 1]),
                                               (iv[:, 0] <= est + 1e-12) & (est - 1e-12 <= iv[:, 1]),
                                               iv[:, 1] - iv[:, 0]], axis=-1))
    out: dict[str, dict[str, Score]] = {}
    for meth in METHODS:
        out[meth] = {}
        for m in METRIC_NAMES:
            h = np.concatenate(hits[meth][m])
            out[meth][m] = Score(float(h[:, 0].mean()), float(h[:, 1].mean()), float(h[:, 2].mean()))
    return out


def coverage_table(reps: int = 400, n_boot: int = 400, seed: int = 0, ci: float = 0.95,
                   settings: tuple[Setting, ...] = SETTINGS) -> dict[str, dict[str, dict[str, Score]]]:
    """setting name -> method -> metric -> Score."""
    return {s.name: simulate(s, reps, n_boot, seed, ci) for s in settings}


def to_markdown(table: dict[str, dict[str, dict[str, Score]]], reps: int, n_boot: int, seed: int, ci: float) -> str:
    """The coverage tables: tvd for every method, then the chosen method for every metric."""
    pct = f"{ci:.0%}"
    md = ["# Coverage of the bias confidence intervals", "",
          f"Generated by `python -m t2i_debias.metrics.coverage` ({reps} repetitions per setting, {n_boot} bootstrap "
          f"resamples each, seed {seed}, nominal {pct}); the same simulation, smaller, is the test "
          "`tests/test_faults_results.py`.", "",
          "- coverage: share of repetitions whose interval holds the true value (the mean over prompts of the "
          "metric of the true class probabilities); holds: share that hold their own estimate; width: mean width.",
          f"- Reported (DESIGN.md §3): **{CHOSEN}** — {CI_METHOD}.",
          "- tvd is ≥ 0 and biased upward under resampling, so near balance the percentile interval lies above "
          "the estimate and the truth, and the basic interval (its mirror) below the estimate; neither holds its "
          "estimate there. Centring the spread on the estimate holds it, and widening it toward balance by the "
          "noise floor (the largest bias the estimate can have) gives it its coverage.", "",
          "## tvd, every candidate", "",
          "| setting | " + " | ".join(f"{meth} coverage / holds / width" for meth in METHODS) + " |",
          "|---|" + "---|" * len(METHODS)]
    for name, res in table.items():
        cells = [f"{res[meth]['tvd'].coverage:.3f} / {res[meth]['tvd'].holds:.3f} / {res[meth]['tvd'].width:.3f}"
                 for meth in METHODS]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    md += ["", f"## {CHOSEN}, every metric (coverage / holds / width)", "",
           "| setting | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---|" * len(METRIC_NAMES)]
    for name, res in table.items():
        cells = [f"{res[CHOSEN][m].coverage:.3f} / {res[CHOSEN][m].holds:.3f} / {res[CHOSEN][m].width:.3f}"
                 for m in METRIC_NAMES]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the simulation and write its tables (docs/results/interval_coverage.md)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--n_boot", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ci", type=float, default=0.95)
    ap.add_argument("--out", type=Path, default=REPORT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = coverage_table(args.reps, args.n_boot, args.seed, args.ci)
    from t2i_debias.core.files import atomic_write_text

    atomic_write_text(args.out, to_markdown(table, args.reps, args.n_boot, args.seed, args.ci))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
