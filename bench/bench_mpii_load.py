#!/usr/bin/env python
"""Benchmark: parse a full-size MPII fixture (24,987 images, ~43k people, 410 activities).

Prints wall time, CPU time and peak RSS of the mpii loader (fast reader, keypoints skipped), of
the fast reader with keypoints, and of the naive approach measured side by side: scipy.io.loadmat
(squeeze_me=False, struct_as_record=True) of the whole file, then the same parser. Each runs in
its own process so peak RSS is its own. Goal (issue 3): <= 15 s and <= 2 GB for the loader.

The fixture is generated once (about a minute) and cached under $T2I_DEBIAS_CACHE.
Example:  python bench/bench_mpii_load.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from t2i_debias.data.mpii_fixture import packaged_activities_path

ROOT = Path(__file__).resolve().parents[1]
CSV = packaged_activities_path()

CHILD = r"""
import json, resource, sys, time
from t2i_debias.data.mpii import load_release
from t2i_debias.data.persons import select_persons
from t2i_debias.data.occupations import load_occupation_map
path, reader, kp = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
t0, c0 = time.perf_counter(), time.process_time()
rel = load_release(path, reader, keypoints=kp)
rows, rep = select_persons(rel, load_occupation_map(), "all", False, set())
out = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
       "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "images": rel.n_images, "persons": len(rel.persons), "rows": len(rows),
       "activities": len({p.activity for p in rel.persons if p.activity})}
print(json.dumps(out))
"""


def fixture(csv_path: Path) -> Path:
    """The cached full-size fixture's .mat path (built on first use)."""
    from t2i_debias.core.files import hash_file
    from t2i_debias.data.mpii_fixture import full_size_fixture, write_fixture
    from t2i_debias.tiny.cache import cached_dir

    def build(d: Path) -> None:
        write_fixture(d, full_size_fixture(csv_path, seed=0), write_images=False)

    d = cached_dir("mpii-fixture-full", {"csv": hash_file(csv_path), "seed": 0, "v": 3}, build)
    return d / "mpii_human_pose_v1_u12_1.mat"


def measure(mat: Path, reader: str, keypoints: bool) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(mat), reader, "1" if keypoints else "0"],
                       capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, default=CSV, help=f"real activities CSV (default: {CSV})")
    p.add_argument("--mat", type=Path, default=None, help="an existing .mat instead of the cached fixture")
    p.add_argument("--no-naive", action="store_true", help="skip the scipy.io.loadmat baseline")
    args = p.parse_args()
    mat = args.mat or fixture(args.csv)
    runs = {"fast (loader)": measure(mat, "fast", False), "fast + keypoints": measure(mat, "fast", True)}
    if not args.no_naive:
        runs["naive: loadmat + parse"] = measure(mat, "scipy", False)
    first = runs["fast (loader)"]
    print(f"fixture: {mat} ({mat.stat().st_size / 1e6:.1f} MB): {first['images']} images, "
          f"{first['persons']} persons, {first['activities']} activities")
    print(f"{'method':26s} {'wall s':>8s} {'cpu s':>8s} {'peak RSS MB':>12s}")
    for name, r in runs.items():
        print(f"{name:26s} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['rss_mb']:12.0f}")
    ok = first["wall_s"] <= 15 and first["rss_mb"] <= 2048
    print(f"loader within 15 s / 2 GB: {'yes' if ok else 'NO'}")
    if "naive: loadmat + parse" in runs:
        n = runs["naive: loadmat + parse"]
        print(f"speed-up vs naive: {n['wall_s'] / first['wall_s']:.1f}x wall, {n['cpu_s'] / first['cpu_s']:.1f}x cpu; "
              f"memory {n['rss_mb'] / first['rss_mb']:.1f}x less")


if __name__ == "__main__":
    main()
