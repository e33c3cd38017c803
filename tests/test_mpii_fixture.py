"""Fixture writer (MPII-format .mat + JPEGs) and the mpii stage on its output."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from t2i_debias.core.config import Config
from t2i_debias.data.mpii import load_release
from t2i_debias.data.mpii_fixture import (
    FixtureImage,
    FixturePerson,
    fixture_from_activities_csv,
    head_box_from_points,
    write_fixture,
)
from t2i_debias.data.persons import PERSONS_COLUMNS, MissingImagesError
from t2i_debias.stages.mpii import run_stage


def test_writer_layout_matches_the_real_file(tmp_path: Path):
    imgs = [FixtureImage("000000001.jpg", "occupation", "cook, chef", 5,
                         [FixturePerson((1, 2, 3, 4), 1.0, (2.0, 3.0), [(0, 1.5, -2, "1")])]),
            FixtureImage("000000002.jpg", persons=[FixturePerson(None, 2.0, (1.0, 1.0))], train=False),
            FixtureImage("000000003.jpg", "occupation", "roofing", 6, [], vididx=3, frame_sec=2.0)]
    mat_path, images_dir = write_fixture(tmp_path, imgs, act_field_order=("act_id", "act_name", "cat_name"))
    r = scipy.io.loadmat(mat_path)["RELEASE"][0, 0]
    assert r["annolist"].shape == (1, 3) and r["img_train"].dtype == np.uint8
    assert r["img_train"].tolist() == [[1, 0, 1]] and r["act"].shape == (3, 1) and r["single_person"].shape == (3, 1)
    assert r["act"].dtype.names == ("act_id", "act_name", "cat_name")
    assert int(r["act"][1, 0]["act_id"][0, 0]) == -1 and r["act"][1, 0]["act_name"].size == 0
    a0, a1, a2 = (r["annolist"][0, i] for i in range(3))
    assert "annopoints" in a0["annorect"].dtype.names
    assert set(a1["annorect"].dtype.names) == {"scale", "objpos"}  # test image: x1..y2 absent
    assert a2["annorect"].shape == (0, 0) and a2["vididx"].dtype.kind == "u"
    assert a0["vididx"].size == 0 and a0["frame_sec"].size == 0
    assert a0["annorect"][0, 0]["x1"].dtype == np.uint8
    pt = a0["annorect"][0, 0]["annopoints"][0, 0]["point"]
    assert pt.shape == (1, 1) and pt[0, 0]["is_visible"][0] == "1"
    assert r["single_person"][0, 0].tolist() == [[1]] and r["single_person"][2, 0].size == 0
    assert sorted(os.listdir(images_dir)) == ["000000001.jpg", "000000002.jpg", "000000003.jpg"]


def test_head_box_from_points():
    assert head_box_from_points((10.0, 30.0), (10.0, 10.0)) == (0.0, 10.0, 20.0, 30.0)


@pytest.mark.slow
def test_category_counts_of_a_fixture_drawn_from_the_whole_csv(activities_csv: Path, tmp_path: Path):
    """Every CSV row becomes one training image; the loader's per-category image counts equal the CSV's."""
    with open(activities_csv, newline="", encoding="utf-8") as fh:
        want = Counter(r["category"] for r in csv.DictReader(fh))
    images = fixture_from_activities_csv(activities_csv, None, seed=1, max_people=2, with_points=False)
    mat_path, _ = write_fixture(tmp_path, images, write_images=False)
    rel = load_release(mat_path)
    got = Counter(rel.persons[k].category for k in
                  {p.image_index: k for k, p in enumerate(rel.persons)}.values())
    assert rel.n_images == sum(want.values()) == 17372 and rel.images_without_people == 0
    assert got == want
    assert Counter(p.act_id == -1 for p in rel.persons)[True] >= want[""]


def _cfg(tmp_path: Path, mat_path: Path, images_dir: Path, **mpii) -> Config:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path / "runs"), "t"
    cfg.mpii.mat_file, cfg.mpii.images_dir = str(mat_path), str(images_dir)
    for k, v in mpii.items():
        setattr(cfg.mpii, k, v)
    return cfg


@pytest.fixture(scope="module")
def small_fixture(activities_csv: Path, tmp_path_factory) -> tuple[Path, Path, list[FixtureImage]]:
    out = tmp_path_factory.mktemp("mpii")
    images = fixture_from_activities_csv(activities_csv, 40, seed=3, n_test=5)
    occ = FixtureImage("000000007.jpg", "occupation", "cook, chef", 99, [FixturePerson((5, 5, 25, 25), 1.0, (9.0, 9.0))])
    images = [occ, *images]
    mat_path, images_dir = write_fixture(out, images)
    return mat_path, images_dir, images


def test_run_stage_writes_schema_reports_missing_and_skips_rerun(tmp_path, small_fixture, caplog):
    mat_path, images_dir, images = small_fixture
    gone = images_dir / "000000007.jpg"
    kept = gone.read_bytes()
    gone.unlink()
    try:
        cfg = _cfg(tmp_path, mat_path, images_dir, split="all")
        run_stage(cfg)
        out = cfg.run_dir / "mpii"
        with open(out / "persons.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
        assert tuple(reader.fieldnames) == PERSONS_COLUMNS
        assert rows and all(r["occupation"] for r in rows)
        chef = [r for r in rows if r["image"] == "000000007.jpg"]
        assert chef[0]["image_exists"] == "0" and chef[0]["occupation"] == "chef"
        assert chef[0]["person_id"] == "0_1" and chef[0]["head_x2"] == "25.0"
        assert all(r["image_exists"] == "1" for r in rows if r["image"] != "000000007.jpg")
        assert (out / "missing_images.txt").read_text() == "000000007.jpg\n"
        rep = json.loads((out / "load_report.json").read_text())
        n_all = sum(len(im.persons) for im in images)
        assert rep["persons_in_file"] == n_all == rep["persons_written"] + sum(rep["not_written"].values())
        assert rep["persons_written"] == len(rows) and rep["missing_images"] == 1
        manifest = json.loads((out / "_manifest.json").read_text())
        assert manifest["extra"]["not_written"] == rep["not_written"]
        mtime = (out / "persons.csv").stat().st_mtime_ns
        with caplog.at_level("INFO"):
            run_stage(cfg)  # manifest matches: skipped
        assert "skipping" in caplog.text and (out / "persons.csv").stat().st_mtime_ns == mtime

        strict = _cfg(tmp_path / "s", mat_path, images_dir, split="all", strict=True)
        with pytest.raises(MissingImagesError, match="1 image"):
            run_stage(strict)
        assert not (strict.run_dir / "mpii" / "_manifest.json").exists()
        assert (strict.run_dir / "mpii" / "missing_images.txt").read_text() == "000000007.jpg\n"
    finally:
        gone.write_bytes(kept)
    run_stage(cfg)  # the image listing changed: the stage reruns and now finds it
    with open(cfg.run_dir / "mpii" / "persons.csv", newline="") as fh:
        assert all(r["image_exists"] == "1" for r in csv.DictReader(fh))


def test_run_stage_split_all_persons_and_map_override(tmp_path, small_fixture):
    mat_path, images_dir, images = small_fixture
    occ_map = tmp_path / "toy_map.csv"
    occ_map.write_text('activity,category,occupation\n"cook, chef",occupation,cook\n')
    cfg = _cfg(tmp_path, mat_path, images_dir, split="train", occupations_only=False, occupation_map=str(occ_map))
    run_stage(cfg)
    with open(cfg.run_dir / "mpii" / "persons.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_train = sum(len(im.persons) for im in images if im.train)
    assert len(rows) == n_train and {r["split"] for r in rows} == {"train"}
    assert {r["occupation"] for r in rows} == {"", "cook"}
    rep = json.loads((cfg.run_dir / "mpii" / "load_report.json").read_text())
    assert rep["not_written"]["wrong_split"] == sum(len(im.persons) for im in images if not im.train)
    assert rep["unmapped_activities"]  # activities outside the one-row map are reported, not dropped


def test_run_stage_rejects_bad_split_and_missing_file(tmp_path, small_fixture):
    from t2i_debias.core.errors import ConfigError
    from t2i_debias.core.options import validate

    mat_path, images_dir, _ = small_fixture
    with pytest.raises(ConfigError, match=r"\[mpii\] split must be one of train, test, all, got 'val'"):
        validate(_cfg(tmp_path, mat_path, images_dir, split="val"))  # at load, before the stage
    with pytest.raises(FileNotFoundError, match="MPII annotation file not found"):
        run_stage(_cfg(tmp_path, tmp_path / "nope.mat", images_dir))


def test_load_dataset_script_from_flags(tmp_path, small_fixture):
    from tests.helpers.scripts import load_script

    mat_path, images_dir, _ = small_fixture
    mod = load_script("mpii_dataset/load_dataset.py")
    run_dir = tmp_path / "r"
    mod.main(["--mat_file", str(mat_path), "--images_dir", str(images_dir), "--split", "test",
              "--no-occupations_only", "--run_dir", str(run_dir)])
    with open(run_dir / "mpii" / "persons.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["split"] for r in rows} == {"test"}
    assert all(r["head_x1"] == "" and r["scale"] for r in rows)  # test persons: scale/objpos only
