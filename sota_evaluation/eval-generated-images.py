#!/usr/bin/env python
"""SOTA comparison, step 2: classify the generated images of every method with the run's demographic
classifier ([labels]) -> <run_dir>/bias/<method>/predictions.csv, by_prompt.csv, summary.json.

Run sota_evaluation/gen-images.py first.
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.sota import classify_all

OTHER = ["run", "prompts", "generate", "labels", "bias"]


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["sota"], OTHER, argv)
    classify_all(cfg, force=args.force)


if __name__ == "__main__":
    main()
