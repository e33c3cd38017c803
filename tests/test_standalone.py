"""The repository stands alone: no tracked file points outside it, and a copy with nothing beside it
runs the tests that need the real MPII activity CSV (vendored in t2i_debias/data/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A path that climbs out of the repository into a sibling data folder, written so this file does not match.
OUTSIDE = re.compile(r"\.\./" + r"shared|parent\s*/\s*[\"']" + r"shared[\"']")
# Cheap tests that read the vendored CSV through the `activities_csv` fixture.
FIXTURE_TESTS = ("tests/test_occupations.py::test_map_covers_every_distinct_activity_of_the_real_csv",
                 "tests/test_mpii_fixture.py::test_run_stage_rejects_bad_split_and_missing_file")


def repo_files() -> list[str]:
    """What a clone of the repository holds once the working tree is committed (tracked + not ignored)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot list the repository's files")
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout ({r.stderr.strip()})")
    return [f for f in r.stdout.split("\0") if f and (ROOT / f).is_file()]


def test_outside_pattern_matches_what_it_must():
    assert OUTSIDE.search('csv = "../' + 'shared/data/x.csv"')
    assert OUTSIDE.search('ROOT.parent / "' + 'shared" / "data"')
    assert not OUTSIDE.search("t2i_debias/data/mpii_train_activities.csv")


def test_no_repository_file_points_outside_the_repository():
    hits = []
    for rel in repo_files():
        if rel.endswith((".csv", ".png", ".jpg", ".mat", ".safetensors")):
            continue
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "files that need a folder beside the repository:\n" + "\n".join(hits)


def test_vendored_csv_is_in_the_repository():
    from t2i_debias.data.mpii_fixture import packaged_activities_path

    path = packaged_activities_path()
    assert path.is_relative_to(ROOT) and path.relative_to(ROOT).as_posix() in set(repo_files())
    assert (path.parent / "MPII_ACTIVITIES.md").is_file()


@pytest.mark.slow
def test_copy_with_nothing_beside_it_passes_the_fixture_tests(tmp_path: Path):
    """The repository's files alone, in an empty folder, with its own (empty) cache: the CSV tests pass."""
    clone = tmp_path / "t2i_debias_clone"
    for rel in repo_files():
        dst = clone / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == [clone.name]  # nothing beside it
    env = {k: v for k, v in os.environ.items() if k != "T2I_DEBIAS_CACHE_ROOT" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(clone)
    where = subprocess.run([sys.executable, "-c", "import t2i_debias, sys; print(t2i_debias.__file__)"],
                           cwd=clone, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(clone), f"the copy imported another t2i_debias: {where}"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                        *FIXTURE_TESTS], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"{len(FIXTURE_TESTS)} passed" in r.stdout
