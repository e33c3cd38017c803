#!/usr/bin/env python
"""Generate N seeded images per evaluation prompt for the base model and each trained mode (or --models).

Image i of a prompt uses seed base_seed + i, so every model meets the same noise. Existing images are
kept (a killed run resumes). Writes <run_dir>/generated/<model>/images/<prompt_id>/<seed>.png and metadata.csv.

Examples:
  python evaluation/generate_images.py --run_dir runs/demo --images_per_prompt 100 --batch_size 8
  python evaluation/generate_images.py --models sd21=stabilityai/stable-diffusion-2-1 mine=path/to/lora_dir
  accelerate launch --num_processes 4 evaluation/generate_images.py --config configs/my_run.toml
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.generated import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["generate"], ["run", "prompts", "mpii"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
