"""End to end in the toy world, where the truth is known: the shipped base carries the planted bias and the
method (real stages: MPII loader, toy labels, counterfactual augmentation, the engine with
configs/toy.toml's recommended preset) removes it without losing what the base could do, and is not
significantly more biased than the strongest baseline (Fair Diffusion).

For toy seeds 0 and 1, at the evaluation guidance ([generate] guidance_scale), on seeds held out from
training and augmentation (1000 + i), over the occupations of the toy MPII copy:
1. the base's mean gender tvd is >= 0.25 (it carries the planted bias);
2. the recommended model cuts it by >= 50%;
3. its occupation accuracy is >= 0.85;
4. its skin-tone tvd is not above the base's;
5. its attribute-prompt obedience ("a photo of a woman working as a doctor" gives a woman) is >= the
   base's - 0.1;
6. the paired 95% bootstrap CI of (ours − Fair Diffusion) gender tvd, on the same prompts and seeds, has
   its lower end <= 0 (ours is not significantly more biased).
The shipped toy models (t2i_debias/toyworld/pretrained/) are copied into $T2I_DEBIAS_CACHE; nothing is
pretrained here. One seed per xdist worker.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
N_EVAL = 64  # images per occupation: per-occupation shares jump by ±0.2 with fewer
N_ATTRIBUTE = 8  # images per attribute prompt: 48 prompts, 384 images in the mean, as scripts/ablation.py


def toy_config(tmp: Path, seed: int):
    """configs/toy.toml for `seed`, in a temporary run folder (no control: the criteria are about ours)."""
    from t2i_debias.core.config import load_config

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

    from t2i_debias.baselines.registry import make_method
    from t2i_debias.core.options import modes_to_run
    from t2i_debias.models import load_pipeline
    from t2i_debias.pipeline import run_pipeline
    from t2i_debias.stages.sota import method_inputs
    from t2i_debias.toyworld import ensure_toy_world
    from t2i_debias.toyworld.classifier import make_classifier
    from t2i_debias.toyworld.evaluate import paired_gender_tvd, score_pipeline

    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.INFO)
    cfg = toy_config(tmp_path, seed)
    assert cfg.train.preset == "recommended"
    t0 = time.time()
    paths = ensure_toy_world(cfg.mpii, cfg.toy)
    t_world = time.time() - t0
    run_pipeline(cfg, only=["mpii", "labels", "enriched", "models"])
    t_pipe = time.time() - t0 - t_world
    clf = make_classifier(cfg.labels)
    g = cfg.generate.guidance_scale
    mode = modes_to_run(cfg.train)[-1]
    base_pipe = load_pipeline(paths["base_model"])
    fair = make_method("fair_diffusion", load_pipeline(paths["base_model"]), method_inputs(cfg))
    scores = {name: score_pipeline(model, clf, N_EVAL, base_seed=1000, guidance=g, n_attribute=n_attr)
              for name, model, n_attr in (("base", base_pipe, N_ATTRIBUTE),
                                          ("ours", load_pipeline(cfg.run_dir / "models" / mode), N_ATTRIBUTE),
                                          ("fair_diffusion", fair, 0))}
    paired = paired_gender_tvd(scores["fair_diffusion"].gender_codes, scores["ours"].gender_codes)
    report = {k: {"male_share": s.male_share, "gender_tvd": s.mpii_gender_tvd, "skin_tvd": s.mpii_race_tvd,
                  "heldout_gender_tvd": s.heldout_gender_tvd, "occupation_accuracy": s.occupation_accuracy,
                  "obedience": s.attribute_following}
              for k, s in scores.items()}
    report["ours_minus_fair_diffusion"] = paired
    report["seconds"] = {"world": t_world, "pipeline": t_pipe, "total": time.time() - t0}
    print(json.dumps(report, indent=1))

    base, ours = scores["base"], scores["ours"]
    assert base.mpii_gender_tvd >= 0.25, f"the base does not carry the planted bias: {report}"
    assert ours.mpii_gender_tvd <= 0.5 * base.mpii_gender_tvd, f"not halved: {report}"
    assert ours.occupation_accuracy >= 0.85, f"lost the occupation: {report}"
    assert ours.mpii_race_tvd <= base.mpii_race_tvd, f"skin-tone tvd above the base's: {report}"
    assert ours.attribute_following >= base.attribute_following - 0.1, f"attribute prompts obeyed less: {report}"
    assert paired["ci"][0] <= 0, f"significantly more biased than Fair Diffusion: {report}"
