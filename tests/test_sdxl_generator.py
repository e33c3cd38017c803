"""SDXL as the counterfactual generator ([augment] generator): a tiny SDXL pipeline built from config, with
its own resolution and guidance, through the same loader as every other model."""

from __future__ import annotations

import json

import pytest

from t2i_debias import models
from t2i_debias.augment import build
from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.inputs import load_people
from t2i_debias.augment.planner import TripletPlanner
from t2i_debias.augment.reader import read_metadata
from t2i_debias.core.config import Config
from t2i_debias.core.errors import ConfigError
from t2i_debias.core.options import validate
from t2i_debias.stages import enriched
from tests.helpers.augment_inputs import skewed_people, write_inputs

RES, GEN_RES = 32, 48


@pytest.fixture(scope="module")
def sdxl():
    pipe = models.load_pipeline(models.resolve_model("tiny:sdxl"))
    calls = []

    def hook(module, args, kwargs):
        calls.append((args[0].shape, kwargs["encoder_hidden_states"].shape, kwargs["added_cond_kwargs"]))

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    return pipe, calls


def test_tiny_sdxl_loads_as_an_sdxl_pipeline(sdxl):
    pipe, _ = sdxl
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.text_encoder_2 is not None and pipe.tokenizer_2.pad_token == "!"
    assert pipe.unet.config.addition_embed_type == "text_time"


def test_generator_resolution_and_guidance_are_its_own(tmp_path, sdxl):
    pipe, calls = sdxl
    persons, labels, images = write_inputs(tmp_path, skewed_people(2))
    people, _ = load_people(persons, labels)
    planner = TripletPlanner(CaptionComposer(), seed=0)
    settings = build.BuildSettings("tiny:sdxl", {"spec": "tiny:sdxl"}, RES, 2, 3.0, 1.0, 0.3, 1, None, False,
                                   on_unverified="keep", generator_resolution=GEN_RES)
    calls.clear()
    build.build_enriched(people, planner, tmp_path / "enriched", images, pipe, settings, batch_size=2)
    # generated at the generator's resolution (latent = GEN_RES / 2 for the tiny x2 VAE), guided (2 passes)
    latent, ctx, added = calls[0]
    assert latent[-2:] == (GEN_RES // 2, GEN_RES // 2) and latent[0] == 2 * 2  # cfg doubles the batch
    assert ctx[-1] == 64  # both text encoders' hidden states side by side (32 + 32)
    assert added["text_embeds"].shape[-1] == 32  # pooled embedding of the second encoder
    assert added["time_ids"][0].tolist() == [GEN_RES, GEN_RES, 0, 0, GEN_RES, GEN_RES]
    # ... and stored at the triplets' resolution
    for row in read_metadata(tmp_path / "enriched"):
        from PIL import Image

        with Image.open(row.positive_path) as im:
            assert im.size == (RES, RES)


def test_augment_stage_with_sdxl_generator(tmp_path):
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "run"
    cfg.augment.generator, cfg.augment.resolution, cfg.augment.generator_resolution = "tiny:sdxl", RES, GEN_RES
    cfg.augment.num_inference_steps, cfg.augment.batch_size, cfg.augment.guidance_scale = 2, 2, 5.0
    cfg.augment.verify_attributes, cfg.augment.on_unverified = False, "keep"  # the generator path only
    _, _, images = write_inputs(cfg.run_dir, skewed_people(2))
    cfg.mpii.images_dir = str(images)
    enriched.run_stage(cfg)
    manifest = json.loads((cfg.run_dir / "enriched" / "_manifest.json").read_text())
    assert manifest["extra"]["n_triplets"] == 2
    assert {r.generator for r in read_metadata(cfg.run_dir / "enriched")} == {"tiny:sdxl"}
    cfg.augment.generator_resolution = 36
    with pytest.raises(ConfigError, match=r"\[augment\] generator_resolution must be in \[0, 4096\], a multiple of 8"):
        validate(cfg)  # at load, before the stage
