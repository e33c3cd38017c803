"""Offline metric models: random-weight FID Inception through torchmetrics, and the tiny CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i_debias.tiny.inception import (
    WEIGHTS_NAME,
    build_random_inception,
    ensure_inception_weights,
    inception_checkpoint_path,
    is_real_inception_weights,
)


def _noise(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def _smooth(n: int) -> torch.Tensor:
    x = torch.linspace(0, 255, 32)
    imgs = [(x[None, :] * (i + 1) / n + x[:, None] * (n - i) / n).clamp(0, 255).expand(3, 32, 32) for i in range(n)]
    return torch.stack(imgs).to(torch.uint8)


@pytest.fixture(scope="module")
def inception_path():
    return ensure_inception_weights()


def test_weights_where_torch_fidelity_looks(inception_path):
    assert inception_path == inception_checkpoint_path()
    assert inception_path.name == WEIGHTS_NAME
    assert inception_path.parent.name == "checkpoints" and inception_path.parent.parent.name == "hub"
    assert not is_real_inception_weights(inception_path)
    state = torch.load(inception_path, weights_only=True)  # plain tensors, loadable safely
    assert "Conv2d_1a_3x3.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)


def test_builder_is_deterministic_by_seed(tmp_path, inception_path):
    a = torch.load(build_random_inception(tmp_path / "a.pth", seed=0), weights_only=True)
    ref = torch.load(inception_path, weights_only=True)
    assert all(torch.equal(a[k], ref[k]) for k in ref)
    b = torch.load(build_random_inception(tmp_path / "b.pth", seed=1), weights_only=True)
    assert not torch.equal(a["Mixed_7c.branch1x1.conv.weight"], b["Mixed_7c.branch1x1.conv.weight"])


@pytest.mark.slow
def test_torchmetrics_fid_separates_noise_from_smooth(inception_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    noise, smooth = _noise(5, 0), _smooth(5)
    fid = FrechetInceptionDistance(feature=2048, reset_real_features=False)
    fid.update(noise, real=True)
    fid.update(smooth, real=False)
    far = float(fid.compute())  # collapsed features (default init) would give ~0 here
    fid.reset()  # keeps the real (noise) features
    fid.update(noise, real=False)
    same = float(fid.compute())
    assert np.isfinite(far) and far > 1.0
    assert abs(same) < 1e-3 * far


def test_tiny_clip_loads_offline_and_embeds():
    from transformers import CLIPModel, CLIPProcessor

    from t2i_debias.tiny.clip import tiny_clip_dir

    d = tiny_clip_dir()
    model = CLIPModel.from_pretrained(d)
    proc = CLIPProcessor.from_pretrained(d)
    ids = proc.tokenizer(["Professional photo of a firefighter"])["input_ids"][0]
    assert ids == [49406, 4774, 1125, 539, 320, 20498, 49407]  # the real CLIP vocabulary
    from PIL import Image

    px = proc(images=[Image.new("RGB", (50, 40), (200, 10, 10))], return_tensors="pt")["pixel_values"]
    assert tuple(px.shape) == (1, 3, 32, 32)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=px)
    emb = out if torch.is_tensor(out) else out.pooler_output
    assert emb.shape == (1, 16) and torch.isfinite(emb).all()
    assert tiny_clip_dir() == d  # cached
