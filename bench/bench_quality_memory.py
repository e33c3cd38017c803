#!/usr/bin/env python
"""Peak memory (max RSS, from `/usr/bin/time -v`) of the quality stage at N1 and N2 generated images, in one run.

Builds a finished generated/base folder of N random 512x512 PNGs (and a 16-image FID reference), runs the
quality stage (FID/KID with the offline random-weight Inception, CLIP-T with the tiny CLIP) in a child
process under `/usr/bin/time -v` for each N, and prints both peaks and their ratio. A stage that streams
images (features per batch) stays flat; one that decodes every image first grows by ~0.75 MB per 512² image.

Usage: python bench/bench_quality_memory.py [--sizes 30 300] [--resolution 512]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def make_run(root: Path, n: int, resolution: int) -> Path:
    """A run folder with generated/base (n images, metadata.csv, manifest) and a reference folder."""
    from t2i_debias.core.layout import RunLayout
    from t2i_debias.core.stage import Stage

    rng = np.random.default_rng(0)
    folder = RunLayout(root / "r").generated_model("base")
    rows = []
    for i in range(n):
        rel = f"images/p{i % 3}/{i}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
        Image.fromarray(small).resize((resolution, resolution), Image.BILINEAR).save(folder / rel)
        rows.append({"model": "base", "prompt_id": f"p{i % 3}", "occupation": "nurse",
                     "prompt": f"a photo of a nurse {i % 3}", "seed": i, "file": rel})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    Stage("generated:base", folder, {}).finish([folder / "metadata.csv"])
    ref = root / "ref"
    ref.mkdir()
    for i in range(16):
        small = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
        Image.fromarray(small).resize((resolution, resolution), Image.BILINEAR).save(ref / f"{i}.png")
    return root


def child(root: Path, fid: bool = True) -> None:
    """Run the quality stage on `root` (called in the measured process)."""
    from t2i_debias.cli import setup_env

    setup_env()
    import torch

    torch.set_num_threads(1)
    from t2i_debias.core.config import Config
    from t2i_debias.stages import quality

    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(root), "r", True
    cfg.quality.reference, cfg.quality.inception = (str(root / "ref") if fid else ""), "random"
    cfg.quality.batch_size, cfg.quality.kid_subset_size = 16, 10
    quality.run_stage(cfg)


def max_rss_mb(root: Path, fid: bool = True) -> float:
    """Max RSS of the quality stage on `root`, as /usr/bin/time -v reports it."""
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, __file__, "--child", str(root)] + ([] if fid else ["--no_fid"]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[30, 300])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--no_fid", action="store_true", help="CLIP-T only (no Inception): the same images, far less CPU")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child, fid=not args.no_fid)
    peaks = {}
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            peaks[n] = max_rss_mb(make_run(Path(tmp), n, args.resolution), fid=not args.no_fid)
    a, b = args.sizes
    print(f"quality stage ({'CLIP-T only' if args.no_fid else 'FID/KID + CLIP-T'}) max RSS at {args.resolution}x{args.resolution}: {a} images {peaks[a]:.0f} MB, "
          f"{b} images {peaks[b]:.0f} MB; ratio {peaks[b] / peaks[a]:.2f} "
          f"(+{(peaks[b] - peaks[a]) / (b - a) * 1024:.0f} KB per extra image)")


if __name__ == "__main__":
    main()
