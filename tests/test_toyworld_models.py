"""Toy base model and control builders at a tiny scale: real diffusers training code, a loadable pipeline."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_toy_base_builds_loads_generates_and_is_cached(tmp_path, monkeypatch):
    """2 VAE + 3 U-Net steps through the real builders; `resolve` finds the cached folder again."""
    monkeypatch.setenv("T2I_DEBIAS_CACHE", str(tmp_path / "cache"))
    import torch

    from t2i_debias.core.config import Config
    from t2i_debias.models import load_pipeline
    from t2i_debias.toyworld import base_model

    cfg = Config()
    cfg.toy.base_steps, cfg.toy.vae_steps, cfg.toy.n_per_occupation = 3, 2, 2
    spec = base_model.spec_from_toy(cfg.toy)
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


def test_caption_batch_pairs_attribute_captions_with_the_attribute_population():
    from t2i_debias.toyworld.base_model import caption_batch

    rng = np.random.default_rng(0)
    idx, kinds = caption_batch(rng, n_neutral=100, n_attribute=50, batch_size=20_000, p_attribute=0.4, p_drop=0.1)
    assert set(np.unique(kinds)) == {0, 1, 2}
    assert abs(np.mean(kinds == 0) - 0.1) < 0.01 and abs(np.mean(kinds == 2) - 0.4) < 0.015
    assert (idx[kinds == 2] >= 100).all() and (idx[kinds == 2] < 150).all()  # attribute people only
    assert (idx[kinds != 2] < 100).all()  # neutral and empty captions: the biased population only
    assert len(np.unique(idx[kinds == 2])) == 50


def test_base_populations_biased_for_neutral_captions_balanced_for_attribute_captions():
    """The recipe: neutral-captioned people keep the planted bias, attribute-captioned ones are balanced."""
    from collections import Counter

    from t2i_debias.toyworld.base_model import base_populations, base_spec
    from t2i_debias.toyworld.dataset import MALE_SHARE

    spec = base_spec(seed=3, n_per_occupation=40, attribute_per_cell=5)
    neutral, attribute = base_populations(spec)
    assert Counter(s.person.occupation for s in neutral)["doctor"] == 40
    assert sum(s.person.gender == "man" for s in neutral if s.person.occupation == "doctor") == 40 * MALE_SHARE["doctor"]
    cells = Counter((s.person.occupation, s.person.gender, s.person.race) for s in attribute)
    assert len(cells) == 6 * 2 * 3 and set(cells.values()) == {5}  # every occupation, held-out ones too
    assert not {s.seed for s in neutral} & {s.seed for s in attribute}  # different people
    spec["data"]["attribute_population"] = "biased"
    with pytest.raises(ValueError, match="attribute_population"):
        base_populations(spec)


def test_base_cache_key_changes_with_the_recipe_and_vae_key_has_no_seed():
    from t2i_debias.core.files import hash_obj
    from t2i_debias.toyworld.base_model import base_spec

    a, b = base_spec(seed=0), base_spec(seed=1)
    assert a["vae"] == b["vae"] == base_spec(seed=7)["vae"]  # one VAE (one cache key) for every seed
    assert hash_obj(a) != hash_obj(b)
    assert hash_obj(base_spec(p_attribute=0.2)) != hash_obj(a)
    c = base_spec()
    c["data"]["attribute_per_cell"] += 1
    assert hash_obj(c) != hash_obj(a)


@pytest.mark.slow
@pytest.mark.heavy(reason="the shipped toy bases fail the skin-tone gate (asked 'Asian' skin 0.50 / 0.08 / 0.19 at "
                          "worst on seeds 0 / 1 / 2, docs/results/toy_base.md); ~4 min a seed")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shipped_toy_base_passes_the_base_gates(tmp_path, monkeypatch, seed):
    """Each shipped toy base, copied into a fresh cache exactly as the demo loads it, passes the base gates at
    64 images per occupation and per attribute prompt, guidance 4: the neutral prompt keeps the bias (mean
    gender tvd >= 0.3), every attribute prompt gives the asked gender >= 90% and skin tone >= 80%, and every
    occupation's ambiguous rate is <= 10%. Nothing is trained here."""
    import json

    from t2i_debias.toyworld import base_model
    from t2i_debias.toyworld.evaluate import evaluate_bases

    monkeypatch.setenv("T2I_DEBIAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(base_model, "build_base", lambda *a, **k: pytest.fail("the shipped base was not used"))
    res = evaluate_bases([seed], n=64, n_attribute=64)
    got = res["seeds"][str(seed)]
    print(json.dumps({"failed": got["failed_gates"], "male_share": got["score"]["male_share"]}, indent=1))
    assert got["failed_gates"] == []
