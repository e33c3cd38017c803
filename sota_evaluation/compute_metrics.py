#!/usr/bin/env python
"""SOTA comparison, step 4: the table. Bias metrics per method with 95% bootstrap CIs (from bias/) and
quality (from quality/) -> <run_dir>/sota/comparison.csv, comparison.md (best value per column in
bold, base model stated) and plots.

Run gen-images.py, eval-generated-images.py and compute_CLIP.py first (or the pipeline's sota stage).
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.report.comparison import MixedSettingsError
from t2i_debias.stages.sota import write_comparison

OTHER = ["run", "prompts", "generate", "bias", "quality"]


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["sota"], OTHER, argv)
    try:
        print(write_comparison(cfg, force=args.force))
    except MixedSettingsError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
