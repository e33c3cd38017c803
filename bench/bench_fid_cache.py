#!/usr/bin/env python
"""FID/KID of a second model with the reference features cached vs the first (cold cache), in one run.

The reference folder's Inception features are cached by content hash; evaluating a second model only
extracts its own images. Usage: python bench/bench_fid_cache.py [--n_ref 160] [--n_images 8]
(random-weight Inception offline). The ratio grows with n_ref / n_images (real references hold
thousands of images); each model also pays a fixed FID cost, torchmetrics' eigen-decomposition of a
2048x2048 matrix (seconds on one CPU thread), which no cache can remove.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _images(folder: Path, n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((32, 32), Image.BILINEAR)
        img.save(folder / f"{i}.png")
        out.append(folder / f"{i}.png")
    return out


def main() -> None:
    from t2i_debias.cli import setup_env

    setup_env()
    import torch

    from t2i_debias.metrics.quality import InceptionFeatures, fid_kid, reference_features
    from t2i_debias.tiny.inception import ensure_inception_weights

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n_ref", type=int, default=160)
    ap.add_argument("--n_images", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    weights = ensure_inception_weights()
    ext = InceptionFeatures(2048, batch_size=16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _images(tmp / "ref", args.n_ref, 0)
        models = {m: _images(tmp / m, args.n_images, s) for m, s in (("model_a", 1), ("model_b", 2))}
        ext(models["model_a"][:2])  # warm-up
        times, results = {}, {}
        for m, files in models.items():
            t0 = time.perf_counter()
            ref = reference_features(tmp / "ref", ext, weights, cache_dir=tmp / "cache")
            results[m] = (fid_kid(ext(files), ref, kid_subset_size=args.n_images), ref["cached"])
            times[m] = time.perf_counter() - t0
    for m in models:
        r, cached = results[m]
        print(f"{m}: {times[m]:.2f} s  reference cached={cached}  fid={r['fid']:.3f}  kid={r['kid']:.4f}")
    print(f"{args.n_ref} reference images, {args.n_images} per model")
    print(f"ratio (first model / second model): {times['model_a'] / times['model_b']:.2f}x")


if __name__ == "__main__":
    main()
