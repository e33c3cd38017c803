"""End to end in the toy world, where the truth is known: the base learns the planted bias and the
method (real stages: MPII loader, toy labels, counterfactual augmentation, the engine with
configs/toy.toml's recommended preset) removes it without losing what the base could do.

For toy seeds 0 and 1 (issue 12), at the evaluation guidance ([generate] guidance_scale) on seeds held out
from training and augmentation (1000 + i):
- the base's mean gender tvd is >= 0.25 (it learned the planted bias);
- the recommended model cuts it by >= 50%;
- its occupation accuracy is >= 0.85;
- its skin-tone tvd is not above the base's;
- its attribute-prompt obedience ("a photo of a female doctor" gives a woman) is >= the base's - 0.1.
The base model, VAE and classifier are cached under $T2I_DEBIAS_CACHE (the first run trains them).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.heavy(
    reason="issue 12 criteria not met yet on seeds 0/1 (docs/results/ablation.md); ~30 min a seed on 2 cores")]

ROOT = Path(__file__).resolve().parents[1]
N_EVAL = 64  # images per occupation: per-occupation shares jump by ±0.2 with fewer
N_ATTRIBUTE = 16  # images per gendered prompt


def toy_config(tmp: Path, seed: int):
    """configs/toy.toml for `seed`, in a temporary run folder (no control: the criteria are about ours)."""
    from t2i_debias.config import load_config

    cfg = load_config(ROOT / "configs" / "toy.toml")
    cfg.run.root = str(tmp)
    cfg.run.name = f"toy-{seed}"
    cfg.run.seed = seed
    cfg.toy.seed = seed
    cfg.train.control = False
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
    assert cfg.train.preset == "recommended"
    t0 = time.time()
    paths = ensure_toy_world(cfg)
    t_world = time.time() - t0
    run_pipeline(cfg, only=["mpii", "labels", "enriched", "models"])
    t_pipe = time.time() - t0 - t_world
    clf = make_classifier(cfg.labels)
    g = cfg.generate.guidance_scale
    mode = modes_to_run(cfg.train)[-1]
    scores = {name: score_pipeline(load_pipeline(model), clf, N_EVAL, base_seed=1000, guidance=g,
                                   n_attribute=N_ATTRIBUTE)
              for name, model in (("base", paths["base_model"]), ("ours", cfg.run_dir / "models" / mode))}
    report = {k: {"male_share": s.male_share, "gender_tvd": s.mean_gender_tvd, "skin_tvd": s.mean_race_tvd,
                  "occupation_accuracy": s.occupation_accuracy, "obedience": s.attribute_following}
              for k, s in scores.items()}
    report["seconds"] = {"world": t_world, "pipeline": t_pipe, "total": time.time() - t0}
    print(json.dumps(report, indent=1))

    base, ours = scores["base"], scores["ours"]
    assert base.mean_gender_tvd >= 0.25, f"the base did not learn the planted bias: {report}"
    assert ours.mean_gender_tvd <= 0.5 * base.mean_gender_tvd, f"not halved: {report}"
    assert ours.occupation_accuracy >= 0.85, f"lost the occupation: {report}"
    assert ours.mean_race_tvd <= base.mean_race_tvd, f"skin-tone tvd above the base's: {report}"
    assert ours.attribute_following >= base.attribute_following - 0.1, f"attribute prompts obeyed less: {report}"
