#!/usr/bin/env python
"""Step time of each training mode as a ratio to a plain denoising step, measured side by side in one run.

The plain step is diffusers' train_text_to_image step: encode B images and B captions, one U-Net pass,
backward, AdamW on the U-Net. Each mode runs the engine's own `compute_losses` + backward + AdamW on
its trainable parts, on the same model and batch. Rounds are interleaved and the median kept, so a
busy machine slows every variant alike. Goals (issue 5): text <= 0.5x (no U-Net pass), both <= 3x.

Example:  python bench/bench_train_modes.py                      (tiny pipeline, 32x32, CPU)
          python bench/bench_train_modes.py --model stabilityai/stable-diffusion-2-1 --resolution 512 \\
              --batch 2 --device cuda                              (the real ratios, on a GPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

GOALS = {"text": 0.5, "both": 3.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny:sd", help="pipeline: hub id, folder or tiny:sd (default: tiny:sd)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=4, help="triplets per batch (default: 4)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (default: 3)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is kept (default: 5)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from t2i_debias.cli import setup_env

    setup_env()
    torch.set_num_threads(1) if args.device == "cpu" else None
    from t2i_debias.models import resolve_model
    from t2i_debias.train import modes
    from t2i_debias.train import parts as train_parts
    from t2i_debias.train import step as train_step
    from t2i_debias.train.data import TripletDataset, read_triplets
    from tests.helpers.train_fixtures import make_enriched, small_config

    base = resolve_model(args.model)
    cfg = small_config(resolution=args.resolution)
    variants = {"plain denoise": ("unet", {"denoise": 1.0, "vision": 0.0})}
    variants.update({m: (m, {}) for m in modes.MODES})
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_enriched(Path(tmp) / "enriched", n=args.batch, size=args.resolution)
        for name, (mode, over) in variants.items():
            weights = modes.resolve_weights(mode, over)
            parts = train_parts.load_parts(base, mode, weights)
            for n in ("text_encoder", "unet", "vae"):
                if getattr(parts, n) is not None:
                    getattr(parts, n).to(args.device)
            params = train_parts.trainable_parameters(parts)
            opt = torch.optim.AdamW(params, lr=1e-6)
            ds = TripletDataset(read_triplets(data), parts.tokenizer, args.resolution)
            batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
            batch = {k: v.to(args.device) if k != "index" else v for k, v in batch.items()}
            runners[name] = (parts, weights, opt, batch)

    def step(name: str, i: int) -> None:
        parts, weights, opt, batch = runners[name]
        terms = train_step.compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=i)
        terms["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for name in runners:  # warm-up
        step(name, 0)
    times: dict[str, list[float]] = {n: [] for n in runners}
    for r in range(args.rounds):
        for name in runners:
            sync()
            t0 = time.perf_counter()
            for i in range(args.steps):
                step(name, r * args.steps + i + 1)
            sync()
            times[name].append((time.perf_counter() - t0) / args.steps)
    ref = statistics.median(times["plain denoise"])
    print(f"model={args.model} resolution={args.resolution} batch={args.batch} device={args.device}")
    print(f"{'variant':<14} {'step ms':>9} {'ratio':>7}  goal")
    ok = True
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = med / ref
        goal = GOALS.get(name)
        mark = "" if goal is None else (f"<= {goal}x " + ("ok" if ratio <= goal else "MISSED"))
        ok &= goal is None or ratio <= goal
        print(f"{name:<14} {med * 1000:9.1f} {ratio:7.2f}  {mark}")
    if not ok:
        print("goal missed (timings on a busy machine vary: rerun before concluding)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
