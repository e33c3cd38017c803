#!/usr/bin/env python
"""Batched DeepFace labeler vs a naive `DeepFace.analyze` loop on the same head crops, side by side.

Both paths use the same random-weight DeepFace models (t2i_debias.tiny), the `opencv` detector and
the `skip` fallback; the script checks that they agree and prints the speed ratio (goal >= 3x).
The naive loop runs first, on DeepFace's models as shipped; building our labeler then switches the
same networks to channels-last memory format, part of what it does to be fast.

Usage:  python bench/bench_labels.py [--n 12] [--batch_size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("DEEPFACE_HOME", os.path.join(os.getcwd(), ".cache", "deepface"))


def make_crops(n: int) -> list:
    """n head crops of synthetic scenes: most with a cartoon face at the head box, some without."""
    import random

    from PIL import Image, ImageFilter

    from t2i_debias.labels.crops import make_crop
    from t2i_debias.tiny.deepface import draw_cartoon_face

    rng = random.Random(0)
    crops = []
    for i in range(n):
        im = Image.new("RGB", (320, 240), tuple(rng.randrange(80, 200) for _ in range(3)))
        cx, cy, s = rng.uniform(120, 200), rng.uniform(100, 140), rng.uniform(50, 70)
        if i % 4 != 3:  # every 4th crop has no face: the skip fallback path
            draw_cartoon_face(im, cx, cy, s, skin=(rng.randrange(90, 230), rng.randrange(60, 180), 110))
        im = im.filter(ImageFilter.GaussianBlur(2))
        crops.append(make_crop(im, (cx - s / 2, cy - 0.65 * s, cx + s / 2, cy + 0.65 * s), 1.0))
    return crops


def naive(crops: list) -> list[dict]:
    """The reference way: DeepFace.analyze per crop, opencv detector, skip when no face is found."""
    from deepface import DeepFace
    from deepface.modules.exceptions import FaceNotDetected

    from t2i_debias.labels.deepface_backend import to_bgr

    out = []
    for c in crops:
        bgr = to_bgr(c.image)
        try:
            res = DeepFace.analyze(bgr, actions=["gender", "race", "age"], detector_backend="opencv", silent=True)
        except FaceNotDetected:
            res = DeepFace.analyze(bgr, actions=["gender", "race", "age"], detector_backend="skip", silent=True)
        out.append(res[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12, help="number of crops")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both paths")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from t2i_debias.labels.deepface_backend import DeepFaceClassifier
    from t2i_debias.tiny.deepface import ensure_deepface_weights

    ensure_deepface_weights()
    crops = make_crops(args.n)
    naive(crops[:1])  # load the models outside the timing
    t0 = time.perf_counter()
    ref = naive(crops)
    t_naive = time.perf_counter() - t0

    clf = DeepFaceClassifier(batch_size=args.batch_size, allow_random_weights=True)
    clf.predict_crops(crops[:1])  # warm-up
    t0 = time.perf_counter()
    preds = clf.predict_crops(crops)
    t_batched = time.perf_counter() - t0

    agree = sum(p.gender == r["dominant_gender"].lower() and p.race == r["dominant_race"] for p, r in zip(preds, ref, strict=True))
    max_dg = max(abs(p.gender_conf - max(r["gender"].values()) / 100) for p, r in zip(preds, ref, strict=True))
    print(f"crops: {len(crops)}  torch threads: {args.threads}  batch size: {args.batch_size}")
    print(f"naive DeepFace.analyze loop: {t_naive:.2f} s ({len(crops) / t_naive:.2f} crops/s)")
    print(f"batched labeler:             {t_batched:.2f} s ({len(crops) / t_batched:.2f} crops/s)")
    print(f"labels agree on {agree}/{len(crops)} crops; max |gender conf diff| = {max_dg:.2e}")
    print(f"speed ratio (naive / batched): {t_naive / t_batched:.2f}x  (goal >= 3x)")


if __name__ == "__main__":
    main()
