"""Random-weight DeepFace models built with DeepFace's own code, loaded by DeepFace.analyze offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from t2i_debias.core.vocab import RACES
from t2i_debias.tiny import deepface as tdf


def test_foreign_weight_files_are_never_overwritten(tmp_path: Path) -> None:
    folder = tdf.weights_dir(tmp_path)
    folder.mkdir(parents=True)
    for _, fname in tdf.MODELS.values():
        (folder / fname).write_bytes(b"real weights a user downloaded")
    assert tdf.ensure_deepface_weights(tmp_path) == folder
    for _, fname in tdf.MODELS.values():
        assert (folder / fname).read_bytes() == b"real weights a user downloaded"
    assert tdf.read_marker(folder) == {}


@pytest.mark.slow
def test_weights_idempotent_and_deepface_analyze_runs_offline() -> None:
    folder = tdf.ensure_deepface_weights()
    names = {"gender_model_weights.pth", "race_model_single_batch.pth", "age_model_weights.pth"}
    assert names <= {p.name for p in folder.iterdir()}
    marker = tdf.read_marker(folder)
    assert set(marker) == names and all(m["spec"]["seed"] == 0 for m in marker.values())
    mtimes = {n: (folder / n).stat().st_mtime_ns for n in names}
    tdf.ensure_deepface_weights()  # present with the right marker: nothing rebuilt
    assert mtimes == {n: (folder / n).stat().st_mtime_ns for n in names}

    from deepface import DeepFace

    img = Image.new("RGB", (120, 120), (120, 140, 160))
    tdf.draw_cartoon_face(img, 60, 60, 50)
    bgr = np.asarray(img.filter(ImageFilter.GaussianBlur(2)))[:, :, ::-1].copy()
    (res,) = DeepFace.analyze(bgr, actions=["gender", "race", "age"], detector_backend="skip", silent=True)
    assert set(res["gender"]) == {"Man", "Woman"} and abs(sum(res["gender"].values()) - 100) < 1e-3
    assert set(res["race"]) == set(RACES) and abs(sum(res["race"].values()) - 100) < 1e-3
    assert 0 <= res["age"] <= 100
    # random weights, but not degenerate: another input gives other probabilities
    (res2,) = DeepFace.analyze(bgr[::-1].copy(), actions=["gender"], detector_backend="skip", silent=True)
    assert abs(res2["gender"]["Man"] - res["gender"]["Man"]) > 1e-4


@pytest.mark.slow
def test_build_is_deterministic_by_seed() -> None:
    a = tdf.build_state_dict("Gender", seed=0)
    b = tdf.build_state_dict("Gender", seed=0)
    c = tdf.build_state_dict("Gender", seed=1)
    for k in ("backbone.conv1_1.weight", "predictions.weight"):
        assert np.array_equal(a[k].numpy(), b[k].numpy())
        assert not np.array_equal(a[k].numpy(), c[k].numpy())
