"""Toy base model and control builders at a tiny scale: real diffusers training code, a loadable pipeline."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_toy_base_builds_loads_generates_and_is_cached(tmp_path, monkeypatch):
    """2 VAE + 3 U-Net steps through the real builders; `resolve` finds the cached folder again."""
    monkeypatch.setenv("T2I_DEBIAS_CACHE", str(tmp_path / "cache"))
    import torch

    from t2i_debias.config import Config
    from t2i_debias.models import load_pipeline
    from t2i_debias.toyworld import base_model

    cfg = Config()
    cfg.toy.base_steps, cfg.toy.vae_steps, cfg.toy.n_per_occupation = 3, 2, 2
    spec = base_model.spec_from_cfg(cfg)
    spec["vae"] = base_model.vae_spec(2, n_images=48)
    folder = base_model.base_dir(spec)
    assert folder.name.startswith("toy-base-") and (folder / "model_index.json").is_file()
    assert base_model.base_dir(spec) == folder  # cached: same folder, not rebuilt
    pipe = load_pipeline(folder)
    assert pipe.tokenizer.model_max_length == 24 and pipe.vae.config.scaling_factor > 0
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    assert 0.9e6 < n_unet < 1.3e6
    out = pipe("a photo of a doctor", num_inference_steps=2, guidance_scale=4.0,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert out.size == (32, 32)
    control = base_model.build_control(folder, spec, tmp_path / "control", steps=2, lr=1e-4, batch_size=4)
    before = dict(pipe.unet.named_parameters())
    after = dict(load_pipeline(control).unet.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the control was trained
    text_b = dict(pipe.text_encoder.named_parameters())
    text_a = dict(load_pipeline(control).text_encoder.named_parameters())
    assert all(torch.equal(text_b[k], text_a[k]) for k in text_b)  # text encoder frozen by default


def test_training_captions_mix_neutral_attribute_and_empty():
    from t2i_debias.toyworld.base_model import attribute_caption, neutral_caption, training_caption
    from t2i_debias.toyworld.dataset import Sample
    from t2i_debias.toyworld.render import Person

    assert neutral_caption("nurse") == "a photo of a nurse"
    rng = np.random.default_rng(0)
    seen = {attribute_caption("doctor", "woman", "asian", rng) for _ in range(200)}
    assert seen == {"a photo of a female doctor", "a photo of a woman working as a doctor",
                    "a photo of an Asian woman working as a doctor", "a photo of an Asian female doctor"}
    s = Sample(Person("chef", "man", "black"), 1)
    caps = [training_caption(s, rng, 0.3, 0.1) for _ in range(4000)]
    assert abs(caps.count("") / 4000 - 0.1) < 0.02
    assert abs(caps.count("a photo of a chef") / 4000 - 0.6) < 0.03
