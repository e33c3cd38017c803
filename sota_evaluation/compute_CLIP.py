#!/usr/bin/env python
"""SOTA comparison, step 3: CLIP-T (image-prompt) and CLIP-I (image vs the base model's image on the
same prompt and seed) for every method, plus FID/KID when [quality] reference is set
-> <run_dir>/quality/<method>.json.
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.stages.sota import quality_all

OTHER = ["run", "prompts", "generate", "quality"]


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse(__doc__, ["sota"], OTHER, argv)
    quality_all(cfg, force=args.force)


if __name__ == "__main__":
    main()
