#!/usr/bin/env python
"""FID / KID (torchmetrics) against a reference image folder or stats .npz, CLIP-T and CLIP-I, per model.

Reference features are cached by content hash, so every model after the first is much faster.
Writes <run_dir>/quality/<model>.json (fid, kid, kid_std, clip_t, clip_i, n_images) and <model>.csv.

Example:  python quality_evaluation/compute_metrics.py --run_dir runs/demo --reference coco_val_5k/ \
              --clip_model openai/clip-vit-large-patch14
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.quality import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["quality"], ["run", "generate"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
