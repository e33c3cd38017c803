#!/usr/bin/env python
"""Batched vs one-at-a-time generation on the tiny pipeline, side by side in one run.

Both paths use the same per-image seeds (a list of generators), so they make the same images; the
ratio is the speed-up of batching. Usage: python bench/bench_generate.py [--n 16] [--batch 8] [--steps 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from t2i_debias.cli import setup_env

    setup_env()
    import torch

    from t2i_debias import models, tiny
    from t2i_debias.sampling import generate_images

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = models.load_pipeline(tiny.tiny_sd_dir())
    prompts = [f"Professional photo of a {o}" for o in ("chef", "nurse", "engineer", "farmer")]
    prompts = [prompts[i % len(prompts)] for i in range(args.n)]
    seeds = list(range(args.n))
    generate_images(pipe, prompts[:2], seeds[:2], 2, args.steps, 7.5)  # warm-up
    times: dict[int, list[float]] = {1: [], args.batch: []}
    images = {}
    for _ in range(args.repeats):  # interleaved so machine load hits both alike
        for bs in (1, args.batch):
            t0 = time.perf_counter()
            images[bs] = generate_images(pipe, prompts, seeds, bs, args.steps, 7.5)
            times[bs].append(time.perf_counter() - t0)
    a = np.stack([np.asarray(i, dtype=np.int16) for i in images[1]])
    b = np.stack([np.asarray(i, dtype=np.int16) for i in images[args.batch]])
    one, batched = min(times[1]), min(times[args.batch])
    print(f"{args.n} images, {args.steps} steps, tiny pipeline 32x32 (best of {args.repeats})")
    print(f"one at a time : {one:.3f} s  ({args.n / one:.1f} img/s)")
    print(f"batch {args.batch:<7d}: {batched:.3f} s  ({args.n / batched:.1f} img/s)")
    print(f"ratio (one-at-a-time / batched): {one / batched:.2f}x   max pixel difference: {np.abs(a - b).max()}")


if __name__ == "__main__":
    main()
