"""Fault injection, non-finite values: a diverged fine-tune stops with one line naming the step and the learning
rate and saves nothing; a model whose images are all one colour is marked by generation and refused by the
bias stage, never reported as a result (issue 23, defect 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from t2i_debias.core.errors import UserError
from t2i_debias.core.files import MANIFEST
from t2i_debias.stages import bias as bias_stage
from t2i_debias.stages import generated as generated_stage
from t2i_debias.stages import models as models_stage
from t2i_debias.stages import prompts as prompts_stage
from tests.helpers.train_fixtures import make_enriched, small_config


@pytest.mark.slow
def test_learning_rate_1e30_stops_at_the_step_the_loss_turns_nan_and_writes_no_model(tmp_path) -> None:
    run = tmp_path / "run"
    make_enriched(run / "enriched", n=2)
    cfg = small_config(run, learning_rate=1e30, max_train_steps=4, modes=["both"])
    with pytest.raises(UserError) as e:
        models_stage.run_stage(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "mode both" in msg and "step 2" in msg and "1e+30" in msg, msg
    assert "nan" in msg.lower() and "learning_rate" in msg  # what went wrong, and the key to change
    assert not (run / "models" / "both").exists(), sorted(p.name for p in (run / "models").rglob("*"))


@pytest.mark.slow
def test_no_checkpoint_and_no_snapshot_holds_non_finite_weights(tmp_path) -> None:
    run = tmp_path / "run"
    make_enriched(run / "enriched", n=2)
    cfg = small_config(run, learning_rate=1e30, max_train_steps=4, modes=["both"], checkpointing_steps=1,
                       snapshot_steps=[1, 2, 3])
    with pytest.raises(UserError):
        models_stage.run_stage(cfg)
    from safetensors.torch import load_file

    saved = sorted((run / "models" / "both").rglob("*.safetensors"))
    assert all(torch.isfinite(t).all() for f in saved for t in load_file(str(f)).values()), saved
    assert not (run / "models" / "both" / MANIFEST).exists()


def _nan_model(src: Path, dst: Path) -> Path:
    """A copy of the tiny pipeline whose U-Net weights are all NaN (what a diverged fine-tune used to save)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    for f in (dst / "unet").glob("*.safetensors"):
        save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(f)).items()}, str(f))
    return dst


def test_generation_marks_constant_images_and_the_bias_stage_refuses_the_model(tmp_path, tiny_sd_path) -> None:
    cfg = small_config(tmp_path / "r")
    occ = tmp_path / "occ.txt"
    occ.write_text("nurse\n")
    cfg.prompts.occupations = str(occ)
    cfg.generate.images_per_prompt, cfg.generate.num_inference_steps, cfg.generate.batch_size = 2, 2, 2
    cfg.generate.models = ["base=tiny:sd", f"broken={_nan_model(Path(tiny_sd_path), tmp_path / 'broken')}"]
    prompts_stage.run_stage(cfg)
    generated_stage.run_stage(cfg)

    base = pd.read_csv(cfg.run_dir / "generated" / "base" / "metadata.csv")
    broken = pd.read_csv(cfg.run_dir / "generated" / "broken" / "metadata.csv")
    assert list(base.columns[:-1]) == ["model", "prompt_id", "occupation", "prompt", "seed", "file",
                                       "num_inference_steps", "guidance_scale", "sampler", "shard"]
    assert base.columns[-1] == "constant" and not base["constant"].any()
    assert broken["constant"].all()

    with pytest.raises(UserError) as e:
        bias_stage.run_stage(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "broken" in msg and "2 of 2" in msg, msg
    assert (cfg.run_dir / "bias" / "base" / MANIFEST).is_file()  # the good model is still evaluated
    assert not (cfg.run_dir / "bias" / "broken" / "summary.json").exists()
