"""Fault injection, image modes and empty crops: 16-bit and float images are scaled to 8 bits by their range (not
clipped white or black), and a labels crop with nothing in it, or a head box outside its image, is a recorded skip,
never `ok` and so never a training anchor (issue 23, defect 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.image_files import open_rgb
from t2i_debias.core.vocab import SKIP_STATUSES
from t2i_debias.labels.base import DemographicClassifier, Prediction
from t2i_debias.stages import labels as labels_stage

STATUS_BLANK, STATUS_BOX_OUTSIDE = "blank_image", "box_outside_image"
RAMP = np.tile(np.linspace(0.0, 1.0, 64), (32, 1))  # left black, right white


def _grey(path: Path) -> np.ndarray:
    im = open_rgb(path)
    assert im.mode == "RGB"
    a = np.asarray(im)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    return a[..., 0].astype(int)


def _save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(("name", "array", "mode"), [
    ("ramp16.png", (RAMP * 65535).astype(np.uint16), "I;16"),
    ("rampf.tif", RAMP.astype(np.float32), "F"),
    ("ramp255f.tif", (RAMP * 255).astype(np.float32), "F"),
    ("ramp32.tif", (RAMP * 409500).astype(np.int32), "I"),
    ("ramp16in32.tif", (RAMP * 65535).astype(np.int32), "I"),
])
def test_deep_grey_images_keep_their_picture(tmp_path, name, array, mode) -> None:
    path = _save(tmp_path / name, array)
    with Image.open(path) as im:
        assert im.mode == mode
    a = _grey(path)
    assert a[:, 0].max() <= 1 and a[:, -1].min() >= 254  # black to white, not all white or all black
    assert 120 <= a.mean() <= 135
    assert np.asarray(open_rgb(path)).std() > 0


def test_float_image_scales_by_its_own_range_and_ignores_nan(tmp_path) -> None:
    f = (RAMP * 1000 - 500).astype(np.float32)
    f[0, 0] = np.nan
    a = _grey(_save(tmp_path / "wide.tif", f))
    assert a[1:, 0].max() <= 1 and a[:, -1].min() >= 254
    assert _grey(_save(tmp_path / "mid16.png", np.full((8, 8), 32896, np.uint16))).tolist() == [[128] * 8] * 8


class _FlatCrops(DemographicClassifier):
    """A crop classifier that calls everyone an Asian woman: only the statuses matter here."""

    name = "flat"
    margin = 1.0

    def predict(self, images, boxes=None):
        return [Prediction(gender="woman", race="asian", age=30.0, age_group="young", n_faces=1) for _ in images]


def test_blank_crops_and_boxes_outside_the_image_are_skips_not_ok(tmp_path) -> None:
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    _save(d / "photo.png", rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    _save(d / "tiny.png", np.full((1, 1, 3), 90, np.uint8))
    _save(d / "strip.png", np.full((20, 20000, 3), 200, np.uint8))
    _save(d / "white16.png", np.full((200, 300), 65535, np.uint16))
    _save(d / "ramp16.png", (np.tile(np.linspace(0, 1, 300), (200, 1)) * 65535).astype(np.uint16))
    head = (100, 50, 150, 110)  # an MPII-sized head box in a 300x200 photo
    rows = [("photo.png", head, "ok"), ("tiny.png", head, STATUS_BOX_OUTSIDE), ("strip.png", (100, 5, 150, 60),
            STATUS_BLANK), ("white16.png", head, STATUS_BLANK), ("ramp16.png", head, "ok"),
            ("tiny.png", None, STATUS_BLANK), ("photo.png", None, "ok")]
    persons = tmp_path / "persons.csv"
    pd.DataFrame([{"person_id": f"{i}_1", "image": img, "occupation": "chef",
                   **dict(zip(("head_x1", "head_y1", "head_x2", "head_y2"), box or ("",) * 4, strict=True))}
                  for i, (img, box, _) in enumerate(rows)]).to_csv(persons, index=False)
    out, stats = labels_stage.label_persons(persons, d, _FlatCrops(), tmp_path / "labels")
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["status"]) == [want for _, _, want in rows]
    skipped = df[df["status"] != "ok"]
    assert (skipped["gender"] == "").all() and (skipped["race"] == "").all()
    assert {STATUS_BLANK, STATUS_BOX_OUTSIDE} <= set(SKIP_STATUSES)
