#!/usr/bin/env python
"""Write _github_images/OursVsBaseline.png from a finished run folder.

For k occupations: one row of base-model images and one row of the debiased model's images on the same
seeds, the occupation at the left, and under each image colour bars for the predicted gender and race.
Reads generated/<model>/metadata.csv and bias/<model>/predictions.csv of the run.

Example:  python _github_images/make_figure.py --config configs/toy.toml --figure_occupations chef nurse
"""

from __future__ import annotations

from pathlib import Path

from t2i_debias.cli import parse
from t2i_debias.report.figure import figure_from_run

DEFAULT_OUT = Path(__file__).resolve().parent / "OursVsBaseline.png"


def main(argv: list[str] | None = None) -> Path:
    def extra(p):
        p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output PNG (default: {DEFAULT_OUT})")

    args, cfg = parse(__doc__, ["report"], ["run"], argv, extra)
    r = cfg.report
    out = figure_from_run(cfg.run_dir, args.out, base=r.figure_base, ours=r.figure_ours,
                          occupations=r.figure_occupations, n_images=r.figure_images)
    print(out)
    return out


if __name__ == "__main__":
    main()
