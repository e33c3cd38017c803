#!/usr/bin/env python
"""Guidance sweep: generate every model again at each [bias] guidance_sweep scale (same prompts and seeds)
and measure its bias there, paired with the base at the same scale.

Writes <run_dir>/sweep/generated/<model>/g<scale>/, sweep/bias/<model>/g<scale>/ (as bias/<model>/),
sweep/sweep.csv and sweep/bias_vs_guidance.png (tvd against guidance per model, noise floor dashed).

Example:  python evaluation/guidance_sweep.py --run_dir runs/demo --guidance_sweep 1 4 7.5 --sweep_images_per_prompt 25
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.sweep import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["bias"], ["run", "labels", "generate", "prompts", "analysis"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
