#!/usr/bin/env python
"""Write a small MPII-format fixture (.mat + JPEGs with cartoon faces) for smoke runs.

Images and activities are drawn from a CSV of real MPII activity labels (image, category, activity,
scale, upper_neck_x/y, head_top_x/y), keeping activities that map to an occupation.

Example:
  python mpii_dataset/make_fixture.py --out runs/smoke-data --n_images 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

from t2i_debias.data.mpii_fixture import packaged_activities_path, smoke_fixture, write_fixture


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activities_csv", type=Path, default=packaged_activities_path(),
                   help="CSV of real MPII activity labels (default: the vendored copy, %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/smoke-data"), help="output folder (default: %(default)s)")
    p.add_argument("--n_images", type=int, default=12, help="images to draw (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--occupation_map", default=None, help="activity->occupation CSV (default: packaged map)")
    args = p.parse_args(argv)
    images = smoke_fixture(args.activities_csv, args.n_images, args.seed, args.occupation_map)
    mat, images_dir = write_fixture(args.out, images)
    print(f"wrote {mat} and {len(images)} images in {images_dir}")


if __name__ == "__main__":
    main()
