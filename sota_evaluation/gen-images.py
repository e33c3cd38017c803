#!/usr/bin/env python
"""SOTA comparison, step 1: generate images for every method (base, ours, baselines) on the same base
model, prompts and seeds -> <run_dir>/generated/<method>/images/<prompt_id>/<seed>.png + metadata.csv.

Methods that cannot run on this base (Shen et al. off SD 1.5) are recorded in sota/skipped.json.
Example:  python sota_evaluation/gen-images.py --config configs/toy.toml --methods base debiasvl uce
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.sota import generate_all

OTHER = ["run", "prompts", "generate", "labels"]


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["sota"], OTHER, argv)
    generate_all(cfg, force=args.force)


if __name__ == "__main__":
    main()
