#!/usr/bin/env python
"""Load MPII Human Pose annotations into <run>/mpii/persons.csv (one row per annotated person).

Reads mpii_human_pose_v1_u12_1.mat, maps each image's activity to an occupation
(t2i_debias/data/occupations.csv, or --occupation_map), checks the images exist, and accounts for
every person (written, or counted under a reason in mpii/load_report.json).

Examples:
  python mpii_dataset/load_dataset.py --mat_file mpii_human_pose_v1_u12_1.mat --images_dir images
  python mpii_dataset/load_dataset.py --config configs/toy.toml --split all --no-occupations_only
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.mpii import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["mpii"], ["run"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
