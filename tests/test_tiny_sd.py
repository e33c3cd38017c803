"""The offline tiny Stable Diffusion builder: real CLIP tokenizer ids, generation offline, determinism, caching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from t2i_debias import models
from t2i_debias.core.files import describe_path
from t2i_debias.tiny import cache, sd

WEIGHTS = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
           "text_encoder/model.safetensors")

STRINGS = [
    "Professional photo of a firefighter",
    "a photo of an Asian woman working as a chef",
    "a photo of a Latino Hispanic man working as a construction worker",
    "Middle-Eastern nurse, 35 years old!",
    "CEO & doctor's  assistant",
    "café owner",
]


@pytest.fixture(scope="module")
def clip_tok():
    """The real-vocabulary CLIPTokenizer (loaded once: building its BPE tables takes seconds)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(sd.clip_tokenizer_dir())


@pytest.fixture(scope="module")
def open_clip_tok():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


def _weights_hash(folder: Path) -> dict[str, str]:
    return {w: describe_path(folder / w)["sha256"] for w in WEIGHTS}


def test_tokenizer_known_ids(clip_tok) -> None:
    tok = clip_tok
    assert len(tok) == 49408
    assert tok("Professional photo of a firefighter").input_ids == [49406, 4774, 1125, 539, 320, 20498, 49407]
    padded = tok("a b", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 321, 49407] and padded[-1] == 49407


@pytest.mark.parametrize("text", STRINGS)
def test_tokenizer_matches_open_clip(text: str, clip_tok, open_clip_tok) -> None:
    ref = [int(i) for i in open_clip_tok([text])[0] if int(i) != 0]
    assert len(ref) > 3
    assert clip_tok(text).input_ids == ref


def test_pipeline_tokenizer_is_the_real_vocab(tiny_sd_path: Path) -> None:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_sd_path / "tokenizer")
    assert tok("Professional photo of a firefighter").input_ids == [49406, 4774, 1125, 539, 320, 20498, 49407]


def test_tiny_pipeline_generates_offline(tiny_sd_path: Path) -> None:
    import numpy as np
    import torch

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    index = json.loads((tiny_sd_path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    pipe = models.load_pipeline(tiny_sd_path)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    out = pipe(["Professional photo of a firefighter"] * 2, num_inference_steps=2, generator=gens,
               output_type="pil")
    assert len(out.images) == 2
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in out.images)
    a, b = (np.asarray(im, dtype=np.int16) for im in out.images)
    assert np.abs(a - b).max() > 0  # different seeds give different images
    # same seed -> same image
    again = pipe(["Professional photo of a firefighter"], num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="pil").images[0]
    assert np.array_equal(np.asarray(again), np.asarray(out.images[0]))


def test_builder_deterministic_and_idempotent(tmp_path: Path, tiny_sd_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    a = sd.tiny_sd_dir(root=tmp_path / "a")
    b = sd.tiny_sd_dir(root=tmp_path / "b")
    assert a.name == b.name == tiny_sd_path.name  # cache key depends on content only
    assert _weights_hash(a) == _weights_hash(b) == _weights_hash(tiny_sd_path)
    # a different seed is a different model in a different folder
    c = sd.tiny_sd_dir(seed=1, root=tmp_path / "a")
    assert c != a and _weights_hash(c) != _weights_hash(a)

    # idempotent: a second call returns the cached folder and never rebuilds
    def no_build(*_a, **_k):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(sd, "build_tiny_sd", no_build)
    before = (a / WEIGHTS[0]).stat().st_mtime_ns
    assert sd.tiny_sd_dir(root=tmp_path / "a") == a
    assert (a / WEIGHTS[0]).stat().st_mtime_ns == before
    # only final folders remain (no temp build folders)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([a.name, c.name])


def test_cached_dir_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def bad(d: Path) -> None:
        (d / "half").write_text("x")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError):
        cache.cached_dir("thing", {"a": 1}, bad, root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    calls: list[Path] = []
    out = cache.cached_dir("thing", {"a": 1}, lambda d: (calls.append(d), (d / "ok").write_text("1")), root=tmp_path)
    assert (out / "ok").read_text() == "1" and len(calls) == 1
    assert cache.cached_dir("thing", {"a": 1}, bad, root=tmp_path) == out  # cached: bad() not called
    assert cache.cached_dir("thing", {"a": 2}, lambda d: None, root=tmp_path) != out
