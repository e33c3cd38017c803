#!/usr/bin/env python
"""Write the evaluation prompts (<run_dir>/prompts.csv): occupations x templates, with a train/held-out split.

Examples:
  python evaluation/generate_prompts.py --run_dir runs/demo
  python evaluation/generate_prompts.py --occupations mpii --templates "Professional photo of the face of a {occupation}"
  python evaluation/generate_prompts.py --occupations my_occupations.txt --heldout nurse plumber
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.prompts import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["prompts"], ["run", "mpii"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
