"""Fault injection, the MPII .mat: a truncated file or one without RELEASE keeps the file name and says what it
found (issue 13, defect 7); persons skipped as bad_image_name are named (minor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from t2i_debias.core.errors import UserError
from t2i_debias.data.mpii import MpiiFormatError, load_release
from t2i_debias.data.mpii_fixture import FixtureImage, FixturePerson, write_fixture
from t2i_debias.data.occupations import load_occupation_map, packaged_map_path
from t2i_debias.data.persons import select_persons

IMAGES = [FixtureImage(f"{i:09d}.jpg", "occupation", "cook, chef", 7, [FixturePerson((1, 2, 30, 40), 1.5, (10.0, 20.0))])
          for i in range(1, 30)]


@pytest.fixture()
def mat_path(tmp_path: Path) -> Path:
    path, _ = write_fixture(tmp_path, IMAGES, write_images=False)
    return Path(path)


@pytest.mark.parametrize("reader", ["fast", "scipy"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_mat_names_the_file(mat_path: Path, reader: str, keep: float) -> None:
    data = mat_path.read_bytes()
    mat_path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(MpiiFormatError) as e:
        load_release(mat_path, reader)
    assert str(e.value).startswith(str(mat_path)) and isinstance(e.value, UserError)
    if reader == "fast":
        assert "truncated" in str(e.value)


@pytest.mark.parametrize("reader", ["fast", "scipy"])
def test_a_mat_without_release_lists_what_it_found(tmp_path: Path, reader: str) -> None:
    p = tmp_path / "other.mat"
    scipy.io.savemat(p, {"annotations": np.arange(3), "names": np.array(["a", "b"])})
    with pytest.raises(MpiiFormatError) as e:
        load_release(p, reader)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "RELEASE" in msg and "found: annotations, names" in msg


def test_the_intact_file_still_loads(mat_path: Path) -> None:
    assert len(load_release(mat_path).persons) == len(IMAGES)


def test_bad_image_name_persons_are_named(tmp_path: Path) -> None:
    images = [FixtureImage("000000001.jpg", "occupation", "cook, chef", 7, [FixturePerson((1, 2, 30, 40), 1.5, (10, 20))]),
              FixtureImage("../escape.jpg", "occupation", "cook, chef", 7, [FixturePerson((1, 2, 30, 40), 1.5, (10, 20))])]
    path, _ = write_fixture(tmp_path, images, write_images=False)
    rows, rep = select_persons(load_release(path), load_occupation_map(packaged_map_path()), "all", True, set())
    assert rep["not_written"]["bad_image_name"] == 1
    assert rep["bad_image_names"] == ["1_1: '../escape.jpg'"]
