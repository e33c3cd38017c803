"""The guidance sweep on the tiny pipeline: same seeds at every scale, paired with the base, one table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.config import Config
from t2i_debias.labels.base import DemographicClassifier, Prediction


class RedClassifier(DemographicClassifier):
    """Mean red channel above the image's mean: man, else woman; race from the green channel's tercile."""

    name = "red"

    def predict(self, images, boxes=None):
        out = []
        for im in images:
            a = np.asarray(im.convert("RGB"), dtype=float)
            r, g = a[..., 0].mean(), a[..., 1].mean()
            out.append(Prediction(gender="man" if r > a.mean() else "woman", gender_conf=0.9,
                                  race=("asian", "white", "black")[min(int(g * 3 // 256), 2)], race_conf=0.9,
                                  age=30.0, age_group="young", face_box=(0, 0, 4, 4), n_faces=1))
        return out


def test_scale_tag():
    from t2i_debias.core.layout import scale_tag

    assert [scale_tag(g) for g in (1.0, 4, 7.5)] == ["g1", "g4", "g7.5"]


def test_sweep_is_a_no_op_without_scales(tmp_path):
    from t2i_debias.stages import sweep as sweep_stage

    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "r"
    sweep_stage.run_stage(cfg)
    assert not (cfg.run_dir / "sweep").exists()


@pytest.mark.slow
def test_guidance_sweep_on_tiny_pipeline(tmp_path, tiny_sd_path):
    from t2i_debias.stages import common, generated
    from t2i_debias.stages import prompts as prompts_stage
    from t2i_debias.stages import sweep as sweep_stage

    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke, cfg.run.device = str(tmp_path), "sw", True, "cpu"
    occ = tmp_path / "occupations.txt"
    occ.write_text("nurse\nengineer\n")
    cfg.prompts.occupations = str(occ)
    g = cfg.generate
    g.images_per_prompt, g.num_inference_steps, g.batch_size, g.dtype, g.guidance_scale = 2, 2, 8, "float32", 3.0
    cfg.bias.n_bootstrap = 50
    cfg.bias.guidance_sweep, cfg.bias.sweep_images_per_prompt = [1.0, 3.0], 3
    shutil.copytree(tiny_sd_path, cfg.run_dir / "models" / "text")  # one trained mode
    from t2i_debias.core.stage import Stage

    Stage("models/text", cfg.run_dir / "models" / "text", {}).finish()  # its training finished
    prompts_stage.run_stage(cfg)
    clf = RedClassifier()

    sweep_stage.run_stage(cfg, classifier=clf)
    root = cfg.run_dir / "sweep"
    for model in ("base", "text"):
        for tag, scale in (("g1", 1.0), ("g3", 3.0)):
            meta = pd.read_csv(root / "generated" / model / tag / "metadata.csv")
            assert len(meta) == 6 and sorted(set(meta["seed"])) == [0, 1, 2]
            assert set(meta["guidance_scale"]) == {scale}
            s = json.loads((root / "bias" / model / tag / "summary.json").read_text())
            gen = s["generation"]
            assert (gen["guidance_scale"], gen["images_per_prompt"], gen["num_inference_steps"]) == (scale, 3, 2)
            assert gen["sampler"] and gen["resolution"]
            if model == "base":
                assert s["paired_vs_base"] is None
            else:  # paired with the base at the same scale, on all 6 (prompt, seed) pairs
                assert s["paired_vs_base"]["n_pairs"] == 6 and s["paired_vs_base"]["against"] == "base"
    df = pd.read_csv(root / "sweep.csv")
    assert len(df) == 2 * 2 * 4 * 4  # models x scales x attributes x metrics
    assert set(df["guidance_scale"]) == {1.0, 3.0} and df["floor"].notna().all()
    assert df.loc[df["model"] == "base", "diff_vs_base"].isna().all()
    assert df.loc[df["model"] == "text", "diff_vs_base"].notna().all()
    assert (root / "bias_vs_guidance.png").is_file()

    # same seeds: the sweep's base at the main guidance scale repeats the evaluation's images exactly
    generated.generate_model(cfg, "base", common.models_to_evaluate(cfg)["base"])
    for pid in pd.read_csv(cfg.run_dir / "prompts.csv")["prompt_id"]:
        for seed in (0, 1):
            a = np.asarray(Image.open(cfg.run_dir / "generated" / "base" / "images" / str(pid) / f"{seed}.png"))
            b = np.asarray(Image.open(root / "generated" / "base" / "g3" / "images" / str(pid) / f"{seed}.png"))
            assert np.array_equal(a, b)

    # a rerun finds every manifest complete; an unknown model name is an error naming the key
    before = (root / "_manifest.json").stat().st_mtime_ns
    sweep_stage.run_stage(cfg, classifier=clf)
    assert (root / "_manifest.json").stat().st_mtime_ns == before
    cfg.bias.sweep_models = ["nope"]
    with pytest.raises(ValueError, match="sweep_models"):
        sweep_stage.run_stage(cfg, classifier=clf)
