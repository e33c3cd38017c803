#!/usr/bin/env python
"""Classify every generated image and write bias metrics with bootstrap CIs per model.

Writes <run_dir>/bias/<model>/predictions.csv (no-face statuses kept), by_prompt.csv (face-found rate,
counts, tvd / pairwise / kl / entropy per prompt for gender, race, race4 and gender x race) and
summary.json (means over prompts with seeded bootstrap 95% CIs).

Example:  python evaluation/evaluate_bias.py --run_dir runs/demo --labels.backend deepface --n_bootstrap 1000
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.bias import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["bias"], ["run", "labels", "generate", "analysis"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
