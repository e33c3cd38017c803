"""Seeded batched generation on the tiny pipeline: determinism, batching, folder layout, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from t2i_debias.core.config import Config
from t2i_debias.core.stage import Stage
from t2i_debias.data.prompts import build_prompts
from t2i_debias.sampling import generate_folder, generate_images, is_valid_png, png_info, read_metadata
from t2i_debias.stages.common import models_to_evaluate

STEPS = 2


@pytest.fixture(scope="module")
def pipe(tiny_sd_path):
    from t2i_debias.models import load_pipeline

    return load_pipeline(tiny_sd_path)


def _arr(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_seeded_images_are_reproducible_and_distinct(pipe):
    a = _arr(generate_images(pipe, "a photo of a chef", [0, 1, 2], 3, STEPS, 7.5))
    b = _arr(generate_images(pipe, "a photo of a chef", [0, 1, 2], 3, STEPS, 7.5))
    assert a.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(a, b)  # two runs, identical images
    assert np.abs(a[0] - a[1]).mean() > 5  # different seeds, different noise


def test_batched_equals_one_at_a_time(pipe):
    prompts = ["a photo of a chef", "a photo of a nurse", "a photo of a chef"]
    batched = _arr(generate_images(pipe, prompts, [5, 6, 7], 3, STEPS, 7.5))
    single = _arr(generate_images(pipe, prompts, [5, 6, 7], 1, STEPS, 7.5))
    # Same noise per image; batched matmuls may differ in the last float bit, i.e. at most 1/255.
    assert np.abs(batched - single).max() <= 1
    assert np.abs(batched - single).mean() < 0.05
    # and image 2 (seed 7) is not image 0 (seed 5) although the prompt is the same
    assert np.abs(batched[0] - batched[2]).mean() > 5


def test_mismatched_lengths_rejected(pipe):
    with pytest.raises(ValueError, match="2 prompts for 3 seeds"):
        generate_images(pipe, ["a", "b"], [0, 1, 2], 2, STEPS, 7.5)


def test_folder_layout_metadata_and_resume(pipe, tmp_path):
    prompts = build_prompts(["chef", "engineer"], ["Professional photo of a {occupation}"])
    calls = []

    def load():
        calls.append(1)
        return pipe

    out = tmp_path / "generated" / "base"
    kw = dict(model_name="base", n_per_prompt=3, base_seed=10, batch_size=2, num_inference_steps=STEPS,
              guidance_scale=7.5)
    meta = generate_folder(load, out, prompts, **kw)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"images/{p}/{s}.png" for p in ("chef", "engineer") for s in (10, 11, 12)]
    df = read_metadata(out)
    assert meta == out / "metadata.csv"
    assert list(df["seed"]) == [10, 11, 12, 10, 11, 12]
    assert set(df["prompt"]) == {"Professional photo of a chef", "Professional photo of an engineer"}
    info = png_info(out / "images/engineer/11.png")
    assert info["seed"] == 11 and info["prompt"] == "Professional photo of an engineer"
    # image content = generate_images with the same seed
    ref = _arr(generate_images(pipe, "Professional photo of an engineer", [11], 1, STEPS, 7.5))[0]
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(out / "images/engineer/11.png"), dtype=np.int16), ref)

    before = (out / "images/chef/12.png").read_bytes()
    (out / "images/chef/10.png").unlink()
    (out / "images/engineer/12.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a corrupt leftover
    (out / "images/chef/.10.png.abc.tmp").write_bytes(b"partial")  # what a kill -9 mid-write leaves
    assert not is_valid_png(out / "images/engineer/12.png")
    generate_folder(load, out, prompts, **kw)
    assert is_valid_png(out / "images/chef/10.png") and is_valid_png(out / "images/engineer/12.png")
    assert (out / "images/chef/12.png").read_bytes() == before  # untouched
    assert not list(out.rglob("*.tmp"))
    assert len(calls) == 2
    generate_folder(load, out, prompts, **kw)  # complete: the pipeline is not even loaded
    assert len(calls) == 2


def test_changed_settings_discard_old_images(pipe, tmp_path):
    prompts = build_prompts(["chef"], ["a photo of a {occupation}"])
    out = tmp_path / "m"
    kw = dict(model_name="m", n_per_prompt=1, base_seed=0, batch_size=1, guidance_scale=7.5)
    generate_folder(lambda: pipe, out, prompts, num_inference_steps=2, **kw)
    a = np.asarray(png_info(out / "images/chef/0.png")["num_inference_steps"])
    generate_folder(lambda: pipe, out, prompts, num_inference_steps=3, **kw)
    b = png_info(out / "images/chef/0.png")["num_inference_steps"]
    assert (a, b) == (2, 3)


def test_models_to_evaluate_finds_trained_modes(tmp_path, tiny_sd_path, monkeypatch):
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    models = cfg.run_dir / "models"
    (models / "unet").mkdir(parents=True)
    (models / "unet" / "model_index.json").write_text("{}")
    (models / "text").mkdir()
    (models / "text" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (models / "notes").mkdir()  # finished but neither a pipeline nor LoRA weights: not a model
    for mode in ("unet", "text", "notes"):
        Stage(f"models/{mode}", models / mode, {}).finish()
    (models / ".both.new").mkdir()  # a staging folder is never a model
    found = models_to_evaluate(cfg)
    assert list(found) == ["base", "text", "unet"]
    assert found["base"] == str(tiny_sd_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a hub id passes through when the hub is reachable
    cfg.generate.models = ["a=tiny:sd", "b=stabilityai/stable-diffusion-2-1"]
    assert models_to_evaluate(cfg) == {"a": str(tiny_sd_path), "b": "stabilityai/stable-diffusion-2-1"}
    cfg.generate.models = ["../x=tiny:sd"]
    with pytest.raises(ValueError, match="bad model name"):
        models_to_evaluate(cfg)


def test_run_stage_smoke_writes_manifest_and_skips(tmp_path):
    from t2i_debias.stages import generated as generated_stage
    from t2i_debias.stages import prompts as prompts_stage

    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    occ = tmp_path / "occ.txt"
    occ.write_text("nurse\n")
    cfg.prompts.occupations = str(occ)
    cfg.generate.images_per_prompt, cfg.generate.num_inference_steps, cfg.generate.batch_size = 2, 2, 2
    prompts_stage.run_stage(cfg)
    generated_stage.run_stage(cfg)
    folder = cfg.run_dir / "generated" / "base"
    assert (folder / "_manifest.json").is_file()
    assert len(pd.read_csv(folder / "metadata.csv")) == 2
    mtime = (folder / "_manifest.json").stat().st_mtime_ns
    generated_stage.run_stage(cfg)  # manifest matches: skipped
    assert (folder / "_manifest.json").stat().st_mtime_ns == mtime
    cfg.generate.images_per_prompt = 3  # more images: the stage reruns and keeps the first two
    first = (folder / "images/nurse/0.png").read_bytes()
    generated_stage.run_stage(cfg)
    assert len(pd.read_csv(folder / "metadata.csv")) == 3
    assert (folder / "images/nurse/0.png").read_bytes() == first
