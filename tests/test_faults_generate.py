"""Fault injection, generation and the stages that read it: a finished output is never lost, and no
stage reads an unfinished one (issue 13, defects 1 and 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias import sampling
from t2i_debias.core.config import Config, load_config
from t2i_debias.core.errors import ConfigError, MissingInputError, UserError
from t2i_debias.core.files import MANIFEST, describe_path
from t2i_debias.core.layout import RunLayout
from t2i_debias.data import prompts
from t2i_debias.stages import bias as bias_stage
from t2i_debias.stages import generated as generated_stage
from t2i_debias.stages import prompts as prompts_stage


def _cfg(tmp_path: Path) -> Config:
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    occ = tmp_path / "occ.txt"
    occ.write_text("nurse\n")
    cfg.prompts.occupations = str(occ)
    cfg.generate.images_per_prompt, cfg.generate.num_inference_steps, cfg.generate.batch_size = 2, 2, 2
    return cfg


@pytest.fixture()
def finished(tmp_path: Path) -> tuple[Config, Path, dict]:
    """A run whose generated/base finished: (cfg, folder, a snapshot of every file in it)."""
    cfg = _cfg(tmp_path)
    prompts_stage.run_stage(cfg)
    generated_stage.run_stage(cfg)
    folder = cfg.run_dir / "generated" / "base"
    assert (folder / MANIFEST).is_file() and len(list(folder.rglob("*.png"))) == 2
    return cfg, folder, _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_typo_in_model_path_keeps_finished_images(finished) -> None:
    cfg, folder, before = finished
    cfg.generate.models = ["base=/data/sd-2-1-typo"]
    with pytest.raises(MissingInputError, match=r"no such folder: /data/sd-2-1-typo \(looked for /data/sd-2-1-typo\)"):
        generated_stage.run_stage(cfg)
    assert _snapshot(folder) == before  # images, metadata.csv and manifest untouched


def test_broken_model_folder_keeps_finished_images(finished, tmp_path: Path) -> None:
    cfg, folder, before = finished
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')  # no components
    cfg.generate.models = [f"base={broken}"]
    with pytest.raises(Exception):  # noqa: B017 - whatever diffusers raises for a folder without components
        generated_stage.run_stage(cfg)
    assert _snapshot(folder) == before
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    cfg.generate.models = [f"base={not_a_model}"]
    with pytest.raises(MissingInputError, match="not a diffusers pipeline folder"):
        generated_stage.run_stage(cfg)
    assert _snapshot(folder) == before


def _failing_load(*a, **k):
    raise RuntimeError("injected: the pipeline cannot be loaded")


def test_force_and_changed_settings_keep_old_until_the_new_version_is_complete(finished, monkeypatch) -> None:
    cfg, folder, before = finished
    with monkeypatch.context() as m:
        m.setattr(generated_stage, "load_model", _failing_load)
        with pytest.raises(RuntimeError, match="injected"):
            generated_stage.run_stage(cfg, force=True)
        assert _snapshot(folder) == before
        cfg.generate.guidance_scale = 3.0  # a changed setting invalidates every image
        with pytest.raises(RuntimeError, match="injected"):
            generated_stage.run_stage(cfg)
        assert _snapshot(folder) == before
    generated_stage.run_stage(cfg)  # now the new version is built beside the old one and swapped in
    after = _snapshot(folder)
    assert after["metadata.csv"] != before["metadata.csv"] and (folder / MANIFEST).is_file()
    assert set(pd.read_csv(folder / "metadata.csv")["guidance_scale"]) == {3.0}
    assert not (folder.parent / ".base.new").exists()
    cfg.generate.guidance_scale = 7.5
    generated_stage.run_stage(cfg, force=True)  # --force regenerates the same images, byte for byte
    again = _snapshot(folder)
    assert {k: v for k, v in again.items() if k.endswith(".png")} == {
        k: v for k, v in before.items() if k.endswith(".png")}


def test_changed_prompt_keeps_other_prompts_images_and_the_old_folder(finished, monkeypatch) -> None:
    cfg, folder, before = finished
    occ = Path(cfg.prompts.occupations)
    occ.write_text("nurse\nchef\n")
    cfg.prompts.templates = ["Professional photo of a {occupation}", "A portrait of a {occupation}"]
    prompts_stage.run_stage(cfg)
    with monkeypatch.context() as m:
        m.setattr(generated_stage, "load_model", _failing_load)
        with pytest.raises(RuntimeError, match="injected"):
            generated_stage.run_stage(cfg)
    assert _snapshot(folder) == before


def test_negative_counts_are_rejected_before_anything_runs(finished, tmp_path: Path) -> None:
    cfg, folder, before = finished
    for section, key in (("generate", "images_per_prompt"), ("generate", "num_inference_steps"),
                         ("augment", "num_inference_steps")):
        for bad in (-3, -1, 0):
            p = tmp_path / "bad.toml"
            p.write_text(f"[{section}]\n{key} = {bad}\n")
            with pytest.raises(ConfigError, match=rf"\[{section}\] {key} must be in \[1, \d+\], got {bad}"):
                load_config(p)
    with pytest.raises(ValueError, match="must be >= 1"):
        sampling.generate_folder(_failing_load, folder, prompts.read_prompts(RunLayout(cfg.run_dir).prompts_csv), "base",
                                 -3, 0, 2, 2, 7.5)
    assert _snapshot(folder) == before


def test_generation_refuses_an_unfinished_trained_mode(finished, tiny_sd_path: Path) -> None:
    cfg, _, _ = finished
    both = cfg.run_dir / "models" / "both"
    shutil.copytree(tiny_sd_path, both)  # a complete-looking pipeline, but training never wrote its manifest
    (both / MANIFEST).unlink(missing_ok=True)
    with pytest.raises(MissingInputError, match=r"^models/both is incomplete \(no manifest\): rerun the models stage$"):
        generated_stage.run_stage(cfg)


def test_bias_stage_refuses_an_unfinished_generated_folder(finished) -> None:
    cfg, folder, _ = finished
    (folder / MANIFEST).unlink()
    for png in folder.rglob("*.png"):  # the state a crash used to leave: no images, a stale metadata.csv
        png.unlink()
    with pytest.raises(MissingInputError, match=r"generated/base is incomplete \(no manifest\): rerun the generated"):
        bias_stage.run_stage(cfg)
    assert not (cfg.run_dir / "bias" / "base" / MANIFEST).exists()


def test_bias_stage_says_when_nothing_was_generated(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    with pytest.raises(UserError, match="no generated images"):
        bias_stage.run_stage(cfg)


def test_a_kill_after_the_swap_leaves_no_resumable_stale_folder(finished) -> None:
    """A swapped-out old version left beside the folder (kill before its removal) is never resumed as new."""
    cfg, folder, before = finished
    stale = folder.parent / ".base.new"
    shutil.copytree(folder, stale)  # what an exchange leaves at the staging path: the old version, no mark
    cfg.generate.guidance_scale = 3.0
    generated_stage.run_stage(cfg)
    assert not stale.exists()
    assert describe_path(folder)["files"] == len(before) - 1  # 2 images, metadata, settings (manifest not counted)
