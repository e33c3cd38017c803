"""Fault injection, image files: a decompression bomb, a truncated file or a non-image never aborts a per-row
stage (a recorded skip with its reason), and a whole-folder stage names the file; the quality stage streams
images (issue 13, defects 3 and 10, "unreadable_image rows do not say why")."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.errors import UserError
from t2i_debias.core.image_files import ImageReadError, open_rgb
from t2i_debias.core.vocab import IMAGE_STATUSES, SKIP_STATUSES
from t2i_debias.labels.base import DemographicClassifier, Prediction
from t2i_debias.stages import labels as labels_stage


def bomb_jpeg(path: Path, side: int = 65000) -> Path:
    """A small JPEG whose header claims side x side pixels (PIL's DecompressionBombError)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 30)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))
    return path


def truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.fixture()
def bad_images(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "images"
    d.mkdir()
    good = d / "000000001.jpg"
    # a picture with something in it: a one-colour image is a skip (blank_image) since issue 23
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    (d / "000000004.jpg").write_text("this is a text file\n")
    return {"ok": good, "too_large": bomb_jpeg(d / "000000002.jpg"), "truncated": truncated_png(d / "000000003.jpg"),
            "not_an_image": d / "000000004.jpg", "missing_image": d / "000000005.jpg"}


def test_open_rgb_names_the_file_and_the_reason(bad_images) -> None:
    assert open_rgb(bad_images["ok"]).size == (32, 32)
    for status in ("too_large", "truncated", "not_an_image", "missing_image"):
        with pytest.raises(ImageReadError) as e:
            open_rgb(bad_images[status])
        assert e.value.status == status and str(e.value).startswith(str(bad_images[status]))
        assert isinstance(e.value, UserError)
    assert set(IMAGE_STATUSES) <= set(SKIP_STATUSES)


class _Flat(DemographicClassifier):
    name = "flat"

    def predict(self, images, boxes=None):
        return [Prediction(gender="woman", race="asian", age=30.0, age_group="young", n_faces=1) for _ in images]


def test_labels_stage_records_each_bad_image_as_a_skip_with_its_reason(tmp_path, bad_images) -> None:
    persons = tmp_path / "persons.csv"
    rows = [{"person_id": f"{i}_1", "image": p.name, "occupation": "chef", "head_x1": "", "head_y1": "",
             "head_x2": "", "head_y2": ""} for i, p in enumerate(bad_images.values())]
    pd.DataFrame(rows).to_csv(persons, index=False)
    out, stats = labels_stage.label_persons(persons, bad_images["ok"].parent, _Flat(), tmp_path / "labels")
    got = dict(zip(pd.read_csv(out)["image"], pd.read_csv(out)["status"], strict=True))
    assert got == {p.name: ("ok" if k == "ok" else k) for k, p in bad_images.items()}
    assert stats.statuses["too_large"] == 1


def test_enriched_stage_skips_a_bomb_with_its_reason(tmp_path, bad_images) -> None:
    from t2i_debias.augment import build
    from t2i_debias.augment.captions import CaptionComposer
    from t2i_debias.augment.counterfactual import Demographics
    from t2i_debias.augment.inputs import Person
    from t2i_debias.augment.planner import TripletPlanner
    from t2i_debias.augment.schema import SKIPPED
    from t2i_debias.core.config import Config

    people = [Person(f"{i}_1", p.name, "chef", Demographics("man", "white", "young"), (2, 2, 10, 10), None,
                           None) for i, p in enumerate(bad_images.values()) if p != bad_images["ok"]]
    planner = TripletPlanner(CaptionComposer.from_config(Config().augment), 0)
    settings = build.BuildSettings("none", {}, 16, 1, 1.0, 1.0, 0.3, 1, None, False, on_unverified="keep")
    stats = build.build_enriched(people, planner, tmp_path / "enriched", bad_images["ok"].parent, None, settings)
    assert stats["n_triplets"] == 0 and stats["n_skipped"] == 4
    skipped = pd.read_csv(tmp_path / "enriched" / SKIPPED)
    reasons = dict(zip(skipped["person_id"], skipped["reason"], strict=True))
    assert reasons["1_1"].startswith(f"too_large: {bad_images['too_large']}")
    assert reasons["2_1"].startswith(f"truncated: {bad_images['truncated']}")
    assert reasons["3_1"].startswith(f"not_an_image: {bad_images['not_an_image']}")
    assert reasons["4_1"] == "missing_image"


def test_quality_names_the_bad_file(bad_images) -> None:
    from t2i_debias.metrics import quality

    with pytest.raises(ImageReadError, match=str(bad_images["too_large"])):
        quality._load_rgb(bad_images["too_large"])


class _CountingClip:
    """A CLIP stand-in that batches like ClipEmbedder and records how many files were decoded per batch."""

    spec, batch_size = "fake", 4

    def __init__(self, opened: list[int]) -> None:
        self.opened, self.seen = opened, []

    def embed_images(self, images):
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = list(images[i:i + self.batch_size])
            self.seen.append((self.opened[0], i + len(batch)))
            out.append(np.ones((len(batch), 3)))
        return np.concatenate(out)

    def embed_texts(self, texts):
        return np.ones((len(texts), 3))


def test_quality_streams_images_one_batch_at_a_time(tmp_path, monkeypatch) -> None:
    from t2i_debias.core.stage import Stage
    from t2i_debias.metrics import quality

    folder = tmp_path / "generated" / "base"
    rows = []
    for i in range(12):
        rel = f"images/p/{i}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / rel)
        rows.append({"model": "base", "prompt_id": "p", "occupation": "x", "prompt": "a photo", "seed": i, "file": rel})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    Stage("generated:base", folder, {}).finish([folder / "metadata.csv"])
    opened = [0]
    real_open = quality.open_rgb

    def counting_open(p):
        opened[0] += 1
        return real_open(p)

    monkeypatch.setattr(quality, "open_rgb", counting_open)
    clip = _CountingClip(opened)
    from t2i_debias.core.config import Config

    res, table = quality.evaluate_model(folder, None, None, None, clip, Config().quality)
    assert res["n_images"] == 12 and len(table) == 12
    # when batch k (ending at image e) is embedded, only its images have been decoded
    assert clip.seen == [(4, 4), (8, 8), (12, 12)]
