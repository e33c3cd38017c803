#!/usr/bin/env python
"""Build the counterfactual triplet dataset <run_dir>/enriched/ (HF imagefolder + metadata.jsonl).

Inputs: <run_dir>/mpii/persons.csv, <run_dir>/labels/labels.csv and the MPII images (--mpii.images_dir).
Each labelled person with an occupation gives an anchor crop, a generated counterfactual positive
(gender flipped, least-represented race) and a generated same-demographic negative.

Example:  python finetune/prepare_dataset_finetune.py --config configs/toy.toml
          python finetune/prepare_dataset_finetune.py --run_dir runs/demo --generator tiny:sd --resolution 32
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.enriched import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["augment"], ["run", "mpii", "labels"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
