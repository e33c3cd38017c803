"""Labels stage: status reconciliation, the journal, resume after SIGKILL (clip backend, tiny CLIP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.config import Config
from t2i_debias.core.stage import Stage
from t2i_debias.labels import runner
from t2i_debias.labels.base import Prediction
from t2i_debias.labels.clip_backend import ClipClassifier, label_prompts
from t2i_debias.labels.crops import expand_box, make_crop
from t2i_debias.stages import labels as labels_stage

ROOT = Path(__file__).resolve().parents[1]


def _build_tiny_clip(out: Path) -> Path:
    """A tiny random CLIPModel + CLIPProcessor folder (real CLIP BPE tokenizer), saved offline."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from t2i_debias.tiny.sd import clip_tokenizer_dir

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                     "num_hidden_layers": 2, "max_position_embeddings": 77, "projection_dim": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8, "projection_dim": 16},
        projection_dim=16)
    CLIPModel(cfg).eval().save_pretrained(out)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}),
                         tokenizer=CLIPTokenizer.from_pretrained(clip_tokenizer_dir()))
    proc.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """helper E's tiny_clip_dir() when it exists, else an inline tiny CLIP."""
    try:
        from t2i_debias.tiny.clip import tiny_clip_dir
    except ImportError:
        return _build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
    return tiny_clip_dir()


def _write_images_and_persons(root: Path, n_images: int = 6) -> tuple[Path, Path]:
    """JPEGs (two people per image), one missing image, one unreadable file, persons.csv rows for all."""
    import numpy as np

    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n_images):
        name = f"{i:09d}.jpg"
        arr = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / name, quality=90)
        for ridx, box in ((1, (4, 4, 16, 16)), (2, (40, 10, 52, 22))):
            rows.append({"person_id": f"{i}_{ridx}", "image": name, "occupation": ["chef", "carpenter"][i % 2],
                         "head_x1": box[0], "head_y1": box[1], "head_x2": box[2], "head_y2": box[3]})
    rows.append({"person_id": "90_1", "image": "000000090.jpg", "occupation": "chef",
                 "head_x1": 1, "head_y1": 1, "head_x2": 5, "head_y2": 5})  # missing file
    (images / "000000091.jpg").write_bytes(b"not a jpeg")
    rows.append({"person_id": "91_1", "image": "000000091.jpg", "occupation": "chef",
                 "head_x1": "", "head_y1": "", "head_x2": "", "head_y2": ""})  # unreadable, no box
    persons = root / "persons.csv"
    pd.DataFrame(rows).to_csv(persons, index=False)
    return persons, images


def test_expand_box_clips_to_image() -> None:
    # 10x10 box at (5,5): one box width each side -> (-5,-5,25,25), clipped to a 20x30 image.
    assert expand_box((5, 5, 15, 15), 1.0, 20, 30) == (0, 0, 20, 25)
    assert expand_box((5, 5, 15, 15), 0.5, 100, 100) == (0, 0, 20, 20)
    crop = make_crop(Image.new("RGB", (100, 100)), (40, 40, 50, 60), 1.0)
    assert crop.image.size == (30, 60) and crop.offset == (30, 20) and crop.head == (10, 20, 20, 40)
    assert make_crop(Image.new("RGB", (10, 10)), (5, 5, 5, 9), 1.0).head is None  # degenerate box


def test_label_prompts_are_grammatical() -> None:
    p = label_prompts()
    assert p["gender"] == ["a photo of a man", "a photo of a woman"]
    assert "a photo of an Asian person" in p["race"] and "a photo of an Indian person" in p["race"]
    assert "a photo of an elderly person" in p["age_group"]


def test_clip_labels_reconcile_and_cache(tmp_path: Path, tiny_clip: Path) -> None:
    persons, images = _write_images_and_persons(tmp_path)
    clf = ClipClassifier(model=str(tiny_clip), batch_size=4)
    out, stats = labels_stage.label_persons(persons, images, clf, tmp_path / "labels", batch_size=4)
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == list(runner.LABEL_COLUMNS)
    n_in = len(pd.read_csv(persons))
    assert len(df) == n_in == 14  # persons in = rows out
    st = df.set_index("person_id")["status"]
    assert st["90_1"] == "missing_image" and st["91_1"] == "not_an_image"  # the reason, not just "unreadable"
    assert (st.drop(["90_1", "91_1"]) == "ok").all()
    assert stats.computed == 12 and stats.cached == 0 and stats.statuses == {"ok": 12, "missing_image": 1,
                                                                               "not_an_image": 1}
    ok = df[df.status == "ok"]
    assert set(ok.gender) <= {"man", "woman"} and ok.gender_conf.astype(float).between(0.5, 1).all()
    assert ok.crop_sha256.str.len().eq(64).all() and (df.backend == "clip").all()
    # face box = the crop: head (4,4,16,16) + 12 px each side, clipped to the 64x48 image
    first = df.iloc[0]
    assert tuple(float(first[c]) for c in ("face_x1", "face_y1", "face_x2", "face_y2")) == (0, 0, 28, 28)
    # a rerun computes nothing and writes the same file
    before = out.read_bytes()
    out2, stats2 = labels_stage.label_persons(persons, images, clf, tmp_path / "labels", batch_size=3)
    assert stats2.computed == 0 and stats2.cached == 12
    assert out2.read_bytes() == before


def test_journal_ignores_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / runner.JOURNAL
    with runner.Journal(path, "k") as j:
        j.add([("a", Prediction(gender="man", face_box=(1.0, 2.0, 3.0, 4.0)))])
    with open(path, "ab") as fh:
        fh.write(b'{"clf": "k", "key": "b", "pr')  # a kill in the middle of a line
    with runner.Journal(path, "k") as j:
        assert set(j.entries) == {"a"} and j.ignored == 1
        assert j.get("a") == Prediction(gender="man", face_box=(1.0, 2.0, 3.0, 4.0))
        j.add([("c", Prediction(status="no_face"))])
    lines = path.read_bytes().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["a", "c"]  # the cut line is gone, not glued
    with runner.Journal(path, "other-classifier") as j:
        assert j.entries == {}  # results of other settings are never reused


_CHILD = """
import sys, time
from t2i_debias.labels.clip_backend import ClipClassifier
from t2i_debias.stages import labels as labels_stage

class Slow(ClipClassifier):  # the real classifier, slowed so the parent can kill it mid-run
    def predict(self, images, boxes=None):
        out = super().predict(images, boxes)
        time.sleep(0.4)
        return out

clf = Slow(model=sys.argv[1], batch_size=2)
labels_stage.label_persons(sys.argv[2], sys.argv[3], clf, sys.argv[4], batch_size=2)
"""


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path, tiny_clip: Path) -> None:
    persons, images = _write_images_and_persons(tmp_path, n_images=10)
    clf = ClipClassifier(model=str(tiny_clip), batch_size=2)
    ref, _ = labels_stage.label_persons(persons, images, clf, tmp_path / "ref", batch_size=2)

    out_dir = tmp_path / "killed"
    journal = out_dir / runner.JOURNAL
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tiny_clip), str(persons), str(images), str(out_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"child ended before the kill: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out_dir / "labels.csv").exists()  # nothing committed by the killed run
    done = journal.read_bytes().count(b"\n")
    assert 4 <= done < 20

    out, stats = labels_stage.label_persons(persons, images, clf, out_dir, batch_size=2)
    assert stats.cached >= done and stats.cached + stats.computed == 20  # finished rows not recomputed
    assert out.read_bytes() == ref.read_bytes()


def test_run_stage_writes_manifest_and_skips(tmp_path: Path, tiny_clip: Path) -> None:
    persons, images = _write_images_and_persons(tmp_path, n_images=2)
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "run"
    (cfg.run_dir / "mpii").mkdir(parents=True)
    (cfg.run_dir / "mpii" / "persons.csv").write_bytes(persons.read_bytes())
    Stage("mpii", cfg.run_dir / "mpii", {}).finish([cfg.run_dir / "mpii" / "persons.csv"])
    cfg.mpii.images_dir = str(images)
    cfg.labels.backend, cfg.labels.clip_model, cfg.run.device = "clip", str(tiny_clip), "cpu"
    labels_stage.run_stage(cfg)
    man = json.loads((cfg.run_dir / "labels" / "_manifest.json").read_text())
    assert man["extra"]["n_rows"] == 6 and man["extra"]["status_counts"]["ok"] == 4
    assert man["extra"]["measures"] == ["gender", "race", "age_group"]  # what the backend measures, recorded
    mtime = (cfg.run_dir / "labels" / "labels.csv").stat().st_mtime_ns
    labels_stage.run_stage(cfg)  # manifest matches: skipped
    assert (cfg.run_dir / "labels" / "labels.csv").stat().st_mtime_ns == mtime


def test_bad_head_box_names_file_and_line(tmp_path: Path) -> None:
    persons = tmp_path / "persons.csv"
    pd.DataFrame([{"person_id": "0_1", "image": "a.jpg", "occupation": "", "head_x1": "x", "head_y1": 1,
                   "head_x2": 2, "head_y2": 3}]).to_csv(persons, index=False)

    class Never(ClipClassifier):
        def __init__(self) -> None:  # never used: the error comes first
            self.margin = 1.0

    with pytest.raises(ValueError, match=r"persons.csv line 2: head box"):
        labels_stage.label_persons(persons, tmp_path, Never(), tmp_path / "labels")
