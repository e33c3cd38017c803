#!/usr/bin/env python
"""Label every MPII person's perceived gender, race and age: mpii/persons.csv -> labels/labels.csv.

Backends: deepface (default; head-box crop with margin through the opencv detector, `skip` fallback),
clip (zero-shot prompts), toy. Resumable: results are cached by crop hash, so rerun after a kill.

Example:  python mpii_dataset/generate_mpii_prediction_race.py --run_dir runs/demo --mpii.images_dir mpii_dataset/images
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.labels import run_stage


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["labels"], ["run", "mpii"], argv)
    run_stage(cfg, force=args.force)


if __name__ == "__main__":
    main()
