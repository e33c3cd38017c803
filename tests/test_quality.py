"""Quality metrics: CLIP-T / CLIP-I and FID / KID against hand computations; reference cache; the stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import linalg

from t2i_debias.metrics import quality
from t2i_debias.metrics.clip_score import ClipEmbedder, clip_i_scores, clip_t_scores


def test_clip_t_and_clip_i_known_answers():
    img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    txt = np.array([[1.0, 1.0], [-1.0, 0.0], [0.0, 5.0]])
    np.testing.assert_allclose(clip_t_scores(img, txt), [100 / math.sqrt(2), 0.0, 100.0])  # negative -> 0
    np.testing.assert_allclose(clip_i_scores(img, txt), [1 / math.sqrt(2), -1.0, 1.0])  # CLIP-I keeps the sign
    # upstream's CLIP score: the raw cosine, sign kept, no x100
    np.testing.assert_allclose(clip_t_scores(img, txt, "raw_cosine"), [1 / math.sqrt(2), -1.0, 1.0])
    with pytest.raises(ValueError, match="clip_score must be one of x100_clamped | raw_cosine"):
        clip_t_scores(img, txt, "x100")


def test_tiny_clip_score_matches_hand_computation():
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from t2i_debias.tiny.clip import tiny_clip_dir

    emb = ClipEmbedder("tiny:clip")
    images = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    prompts = ["a photo of a chef", "a photo of an engineer"]
    ours = clip_t_scores(emb.embed_images(images), emb.embed_texts(prompts))
    model, proc = CLIPModel.from_pretrained(tiny_clip_dir()), CLIPProcessor.from_pretrained(tiny_clip_dir())
    with torch.no_grad():
        out = model(**proc(text=prompts, images=images, return_tensors="pt", padding=True))
    i = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    t = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    hand = (100 * (i * t).sum(-1).clamp(min=0)).numpy()
    np.testing.assert_allclose(ours, hand, rtol=1e-4, atol=1e-4)


def _fid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _kid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m = a.shape[0]
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def test_fid_kid_match_hand_formulas():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(30, 4))
    fake = rng.normal(loc=0.5, scale=1.5, size=(30, 4))
    out = quality.fid_kid(fake, {"features": real}, kid_subset_size=30, kid_subsets=1)
    assert out["fid"] == pytest.approx(_fid_by_hand(real, fake), rel=1e-4)
    assert out["kid"] == pytest.approx(_kid_by_hand(real, fake), rel=1e-4)  # one subset of all = exact MMD²
    same = quality.fid_kid(real.copy(), {"features": real}, kid_subset_size=30, kid_subsets=1)
    assert abs(same["fid"]) < 1e-6


def test_stats_npz_reference_gives_same_fid(tmp_path):
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 3)), rng.normal(loc=1.0, size=(40, 3))
    path = tmp_path / "ref.npz"
    np.savez(path, mu=real.mean(0), sigma=np.cov(real, rowvar=False))
    ref = quality.load_stats_npz(path)
    out = quality.fid_kid(fake, ref)
    assert out["fid"] == pytest.approx(_fid_by_hand(real, fake), rel=1e-4)
    assert out["kid"] is None  # no features in a mu/sigma file
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.array([object()], dtype=object))
    with pytest.raises(ValueError):  # pickled arrays are never loaded
        quality.load_stats_npz(bad)


class CountingFeatures:
    """A stand-in feature extractor (mean colour per channel) that counts the images it sees."""

    dims = 3

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return np.stack([quality._load_rgb(im).reshape(-1, 3).mean(0) for im in images]).astype(np.float64)


def test_reference_features_cached_by_content(tmp_path):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 255 - i * 40)).save(ref_dir / f"{i}.png")
    (ref_dir / ".partial.png.tmp").write_bytes(b"x")  # hidden leftovers are ignored
    ext, cache = CountingFeatures(), tmp_path / "cache"
    a = quality.reference_features(ref_dir, ext, None, cache_dir=cache)
    b = quality.reference_features(ref_dir, ext, None, cache_dir=cache)
    assert (a["cached"], b["cached"], ext.seen) == (False, True, 4)
    np.testing.assert_allclose(a["features"], b["features"])
    Image.new("RGB", (8, 8), (1, 2, 3)).save(ref_dir / "0.png")  # content changed -> recomputed
    c = quality.reference_features(ref_dir, ext, None, cache_dir=cache)
    assert not c["cached"] and ext.seen == 8


def test_random_inception_refused_outside_smoke(tmp_path, monkeypatch):
    from t2i_debias.tiny.inception import ensure_inception_weights

    ensure_inception_weights()
    with pytest.raises(RuntimeError, match="random"):
        quality.prepare_inception("auto", smoke=False)
    assert quality.prepare_inception("auto", smoke=True).is_file()


@pytest.mark.slow
def test_quality_stage_smoke(tmp_path):
    from t2i_debias.core.config import Config
    from t2i_debias.stages import generated as generated_stage
    from t2i_debias.stages import prompts as prompts_stage
    from t2i_debias.stages import quality as quality_stage

    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    (tmp_path / "occ.txt").write_text("chef\nnurse\n")
    cfg.prompts.occupations = str(tmp_path / "occ.txt")
    cfg.generate.images_per_prompt, cfg.generate.num_inference_steps, cfg.generate.batch_size = 2, 2, 4
    cfg.generate.models = ["base=tiny:sd", "other=tiny:sd-v"]
    prompts_stage.run_stage(cfg)
    generated_stage.run_stage(cfg)
    cfg.quality.reference = str(cfg.run_dir / "generated" / "base" / "images")
    cfg.quality.kid_subset_size = 4
    quality_stage.run_stage(cfg)
    base = json.loads((cfg.run_dir / "quality" / "base.json").read_text())
    other = json.loads((cfg.run_dir / "quality" / "other.json").read_text())
    assert base["n_images"] == other["n_images"] == 4
    assert abs(base["fid"]) < 1e-3 < other["fid"]  # the reference is base's own images
    assert base["clip_i"] == pytest.approx(1.0, abs=1e-5) and other["clip_i"] < 0.999
    assert 0 <= other["clip_t"] <= 100 and other["kid"] is not None
    assert (cfg.run_dir / "quality" / "_manifest.json").is_file()
