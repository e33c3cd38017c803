#!/usr/bin/env python
"""Run the whole pipeline from one config file, skipping stages that are already complete.

Example:  python finetune/finetune_sd.py --config configs/toy.toml
"""

from __future__ import annotations

from t2i_debias.cli import parse
from t2i_debias.core.config import SECTIONS
from t2i_debias.pipeline import STAGES, run_pipeline
from t2i_debias.report.comparison import MixedSettingsError


def main(argv: list[str] | None = None) -> None:
    def extra(p):
        p.add_argument("--only", nargs="*", default=None, choices=[n for n, _ in STAGES],
                       help="run only these stages")
        p.add_argument("--until", default=None, choices=[n for n, _ in STAGES],
                       help="stop after this stage")

    args, cfg = parse(__doc__, ["run"], [s for s in SECTIONS if s != "run"], argv, extra)
    try:
        run_pipeline(cfg, force=args.force, only=args.only, until=args.until)
    except MixedSettingsError as e:  # stale rows from other generation settings: the fix is in the message
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
