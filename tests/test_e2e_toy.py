"""End to end in the toy world, where the truth is known: the base learns the planted bias and the
method (real stages: MPII loader, toy labels, counterfactual augmentation, contrastive engine) removes it.

For 2 seeds: base mean gender tvd >= 0.25; the best mode cuts it by >= 50%; occupation accuracy >= 80%.
The base model, VAE and classifier are cached per seed under $T2I_DEBIAS_CACHE (first run trains them).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

# Issue 8 is open: no engine configuration tried so far meets all three criteria on both seeds (numbers in
# t2i_debias/toyworld/README.md), and with a cold cache this test needs ~45 min of 2 cores (VAE, two base
# models, augmentation, training). It runs on request, unchanged, so its verdict is never loosened.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("T2I_DEBIAS_TOY_E2E") != "1",
                       reason="toy-world method check: set T2I_DEBIAS_TOY_E2E=1 (known to fail, issue 8 open)"),
]

ROOT = Path(__file__).resolve().parents[1]
N_EVAL = 64  # images per occupation: per-occupation shares jump by ±0.2 with fewer


def toy_config(tmp: Path, seed: int):
    """configs/toy.toml for `seed`, in a temporary run folder, training only the toy default modes."""
    from t2i_debias.config import load_config

    cfg = load_config(ROOT / "configs" / "toy.toml")
    cfg.run.root = str(tmp)
    cfg.run.name = f"toy-{seed}"
    cfg.run.seed = seed
    cfg.toy.seed = seed
    cfg.toy.control = False
    cfg.mpii.mat_file = str(tmp / f"data-{seed}" / "toy.mat")
    cfg.mpii.images_dir = str(tmp / f"data-{seed}" / "images")
    cfg.mpii.occupation_map = str(ROOT / "t2i_debias" / "toyworld" / "occupations_toy.csv")
    return cfg


@pytest.mark.parametrize("seed", [0, 1])
def test_toy_world_bias_is_learned_then_reduced(tmp_path, seed):
    import torch

    from t2i_debias.models import load_pipeline
    from t2i_debias.pipeline import run_pipeline
    from t2i_debias.toyworld import ensure_toy_world
    from t2i_debias.toyworld.classifier import make_classifier
    from t2i_debias.toyworld.evaluate import score_pipeline
    from t2i_debias.train.engine import modes_to_run

    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.INFO)
    cfg = toy_config(tmp_path, seed)
    t0 = time.time()
    paths = ensure_toy_world(cfg)
    t_world = time.time() - t0
    run_pipeline(cfg, only=["mpii", "labels", "enriched", "models"])
    t_pipe = time.time() - t0 - t_world
    clf = make_classifier(cfg.labels)
    scores = {"base": score_pipeline(load_pipeline(paths["base_model"]), clf, N_EVAL, base_seed=1000)}
    modes = modes_to_run(cfg.train)
    for mode in modes:
        scores[mode] = score_pipeline(load_pipeline(cfg.run_dir / "models" / mode), clf, N_EVAL, base_seed=1000)
    report = {k: {"male_share": s.male_share, "mean_gender_tvd": s.mean_gender_tvd,
                  "occupation_accuracy": s.occupation_accuracy} for k, s in scores.items()}
    report["seconds"] = {"world": t_world, "pipeline": t_pipe, "total": time.time() - t0}
    print(json.dumps(report, indent=1))

    base = scores["base"]
    assert base.mean_gender_tvd >= 0.25, f"the base did not learn the planted bias: {report}"
    assert base.occupation_accuracy >= 0.8, report
    best = min(modes, key=lambda m: scores[m].mean_gender_tvd)
    assert scores[best].mean_gender_tvd <= 0.5 * base.mean_gender_tvd, f"best mode {best}: {report}"
    assert scores[best].occupation_accuracy >= 0.8, f"best mode {best} lost the occupation: {report}"
