#!/usr/bin/env python
"""Demographics of the labelled MPII people per occupation: labels/labels.csv -> analysis/.

Writes by_occupation.csv (counts, proportions, tvd / pairwise / kl / entropy), skip_reasons.csv,
summary.json and stacked-bar PNGs.

Example:  python dataset_analysis/analyze_dataset.py --run_dir runs/demo
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.analysis import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["analysis"], ["run", "labels"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
