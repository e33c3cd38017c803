"""The deepface labels backend through DeepFace's real code (random weights): detection policy, batching."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from t2i_debias.core.config import LabelsSection
from t2i_debias.labels.crops import make_crop
from t2i_debias.labels.deepface_backend import DeepFaceClassifier, RandomWeightsError, select_face, to_bgr
from t2i_debias.tiny.deepface import draw_cartoon_face, ensure_deepface_weights


def test_select_face_policy() -> None:
    faces = [(0, 0, 10, 10), (20, 0, 40, 20)]
    assert select_face([], None) == (None, "no_face")
    assert select_face(faces[:1], None) == (0, "ok")
    assert select_face(faces, None) == (None, "multiple_faces")
    assert select_face(faces, None, "largest") == (1, "ok")
    assert select_face(faces, (18, -2, 42, 22)) == (1, "ok")  # only the face centred in the head box
    assert select_face(faces, (100, 100, 120, 120)) == (None, "no_face")  # neighbours only
    assert select_face(faces, (0, 0, 40, 20)) == (None, "multiple_faces")
    # upstream's policy: DeepFace's first detection, even when a later face is larger
    assert select_face(faces, None, "first") == (0, "ok")
    assert select_face(faces[::-1], None, "first") == (0, "ok")
    assert select_face(faces, (0, 0, 40, 20), "first") == (0, "ok")
    with pytest.raises(ValueError):
        select_face(faces, None, "middle")


def test_random_weights_refused_outside_smoke() -> None:
    ensure_deepface_weights()
    with pytest.raises(RandomWeightsError, match="RANDOM"):
        DeepFaceClassifier()


def _scene() -> Image.Image:
    """Two cartoon faces (detected by DeepFace's opencv detector) on a 400x200 picture."""
    im = Image.new("RGB", (400, 200), (120, 140, 160))
    draw_cartoon_face(im, 100, 100, 60)
    draw_cartoon_face(im, 300, 100, 80, skin=(120, 80, 60))
    return im.filter(ImageFilter.GaussianBlur(2))


@pytest.fixture(scope="module")
def clf() -> DeepFaceClassifier:
    from t2i_debias.labels.registry import make_classifier

    return make_classifier(LabelsSection(batch_size=8), device="cpu", smoke=True)


@pytest.mark.slow
def test_deepface_backend_statuses_and_batched_equals_analyze(clf: DeepFaceClassifier) -> None:
    scene, blank = _scene(), Image.new("RGB", (120, 120), (90, 90, 90))
    beside = Image.new("RGB", (500, 200), (120, 140, 160))
    draw_cartoon_face(beside, 150, 100, 60)  # a neighbour's face inside the crop, outside the head box
    beside = beside.filter(ImageFilter.GaussianBlur(2))
    boxes = [(70, 55, 130, 145), (200, 50, 300, 150), (40, 40, 80, 80), None]
    preds = clf.predict([scene, beside, blank, scene], boxes)
    a, neighbours, fallback, whole = preds
    assert a.status == "ok" and a.n_faces == 1 and a.gender in {"man", "woman"}
    x1, y1, x2, y2 = a.face_box
    assert 70 <= (x1 + x2) / 2 <= 130 and 55 <= (y1 + y2) / 2 <= 145  # the face found at the head box
    assert a.age_group in {"child", "young", "middle-aged", "senior"} and 0 <= a.age <= 100
    assert neighbours.status == "no_face" and neighbours.n_faces >= 1 and neighbours.gender is None
    assert fallback.status == "ok" and fallback.n_faces == 0 and fallback.face_box == (0, 0, 120, 120)
    assert whole.status == "multiple_faces" and whole.n_faces == 2

    # the batched labeler gives what DeepFace.analyze gives on the same crop
    from deepface import DeepFace

    (ref,) = DeepFace.analyze(to_bgr(make_crop(scene, boxes[0], 1.0).image), actions=["gender", "race", "age"],
                              detector_backend="opencv", silent=True)
    assert a.gender == ref["dominant_gender"].lower() and a.race == ref["dominant_race"]
    assert a.gender_conf == pytest.approx(max(ref["gender"].values()) / 100, abs=1e-4)
    assert a.race_conf == pytest.approx(max(ref["race"].values()) / 100, abs=1e-4)
    assert int(a.age) == ref["age"]

    strict = DeepFaceClassifier(fallback_skip=False, multiple_faces="largest", allow_random_weights=True)
    no_fb, largest = strict.predict([blank, scene], [(40, 40, 80, 80), None])
    assert no_fb.status == "no_face" and no_fb.n_faces == 0
    assert largest.status == "ok" and largest.face_box[0] > 200  # the larger face is on the right
    assert np.isfinite([largest.gender_conf, largest.race_conf]).all()
