"""The enriched stage with the tiny diffusers pipeline: counts, balance, files, resume, datasets loading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_debias import models
from t2i_debias.augment.build import BuildSettings, build_enriched
from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.inputs import AugmentInputError, load_people
from t2i_debias.augment.planner import TripletPlanner, anchor_crop_box, plan_triplets
from t2i_debias.augment.reader import read_metadata
from t2i_debias.augment.schema import METADATA_FIELDS
from t2i_debias.core.config import Config
from t2i_debias.core.vocab import RACES
from t2i_debias.sampling import generate_images
from t2i_debias.stages import enriched
from tests.helpers.augment_inputs import ColourClassifier, skewed_people, write_inputs

ROOT = Path(__file__).resolve().parents[1]
RES = 32


# ----------------------------------------------------------------------------- anchor crop rule
@pytest.mark.parametrize("args, want", [
    # head box centre (120,120), scale 1 -> side 200, centre moved down 0.3*200 = 60
    (((100, 100, 140, 140), 1.0, None), (20, 80, 220, 280)),
    # near the top-right corner: the square is moved inside the image, not padded
    (((600, 10, 630, 40), 1.0, None), (440, 0, 640, 200)),
    # no scale: side = 3 head heights = 120, centre y = 120 + 0.3*120 = 156
    (((100, 100, 140, 140), None, None), (60, 96, 180, 216)),
    # no head box: centred on objpos
    ((None, 0.5, (300, 200)), (250, 150, 350, 250)),
    # nothing known: the centred largest square
    ((None, None, None), (80, 0, 560, 480)),
    # a person taller than the image: side capped at the shorter side
    (((100, 100, 140, 140), 5.0, None), (0, 0, 480, 480)),
])
def test_anchor_crop_box_known_answers(args: tuple, want: tuple) -> None:
    assert anchor_crop_box(640, 480, *args) == want


# ----------------------------------------------------------------------------- inputs and plan
def test_load_people_filters_and_counts(tmp_path: Path) -> None:
    people = skewed_people(6)
    people[1]["status"] = "no_face"
    people[2]["occupation"] = ""
    persons, labels, _ = write_inputs(tmp_path, people)
    got, dropped = load_people(persons, labels)
    assert [p.person_id for p in got] == ["0_1", "3_1", "4_1", "5_1"]
    assert dropped == {"status_not_ok": 1, "no_occupation": 1, "heldout_occupation": 0}
    assert got[0].head_box == (40.0, 10.0, 56.0, 26.0) and got[0].scale == 0.3


def test_heldout_occupations_stay_out_of_the_triplets(tmp_path: Path) -> None:
    people = skewed_people(6)
    persons, labels, _ = write_inputs(tmp_path, people)
    got, dropped = load_people(persons, labels, heldout=["  Chef "])
    n_chef = sum(p["occupation"] == "chef" for p in people)
    assert n_chef > 0 and all(p.occupation != "chef" for p in got)
    assert dropped["heldout_occupation"] == n_chef and len(got) == len(people) - n_chef


@pytest.mark.parametrize("field, value, msg", [
    ("gender", "male", "unknown gender"),
    ("race", "caucasian", "unknown race"),
    ("age_group", "teen", "unknown age group"),
    ("person_id", "99_1", "is not in"),
    ("person_id", "../x", "safe file name"),
])
def test_bad_label_rows_name_file_and_line(tmp_path: Path, field: str, value: str, msg: str) -> None:
    persons, labels, _ = write_inputs(tmp_path, skewed_people(3))
    df = pd.read_csv(labels, dtype=str, keep_default_na=False)
    df.loc[1, field] = value
    df.to_csv(labels, index=False)
    with pytest.raises(AugmentInputError, match=f"labels.csv:3: .*{msg}"):
        load_people(persons, labels)


def test_plan_counts_balance_and_captions(tmp_path: Path) -> None:
    persons, labels, _ = write_inputs(tmp_path, skewed_people(40, ("chef", "engineer", "nurse")))
    people, _ = load_people(persons, labels)
    plan = plan_triplets(people, CaptionComposer(), seed=0)
    assert len(plan) == 40
    by_occ: dict[str, Counter] = defaultdict(Counter)
    for t in plan:
        by_occ[t.person.occupation][t.positive.race] += 1
        assert t.positive.gender != t.person.demographics.gender and t.negative == t.person.demographics
        assert t.anchor_text == f"a photo of a{'n' if t.person.occupation[0] in 'aeiou' else ''} {t.person.occupation}"
        assert "clearly visible face" in t.positive_prompt
    for occ, c in by_occ.items():
        counts = [c[r] for r in RACES]
        assert max(counts) - min(counts) <= 1, occ
    assert plan_triplets(people, CaptionComposer(), seed=0, max_triplets=7) == plan[:7]
    assert [t.seed for t in plan] == [t.seed for t in plan_triplets(people, CaptionComposer(), seed=0)]
    assert len({t.seed for t in plan}) == 40


# ----------------------------------------------------------------------------- generation (tiny pipeline)
@pytest.fixture(scope="module")
def pipe(tiny_sd_path: Path):
    return models.load_pipeline(str(tiny_sd_path))


def _settings(generator: str = "tiny", max_tries: int = 1, classifier: dict | None = None,
              on_unverified: str | None = None, **kw) -> BuildSettings:
    on_unverified = on_unverified or ("keep" if classifier is None else "drop")
    return BuildSettings(generator, {"spec": generator}, RES, 2, 7.5, 1.0, 0.3, max_tries, classifier, False,
                         on_unverified, **kw)


def _people(tmp_path: Path, people: list[dict]) -> tuple[list, Path]:
    persons, labels, images = write_inputs(tmp_path, people)
    ppl, _ = load_people(persons, labels)
    return ppl, images


def _planner(**kw) -> TripletPlanner:
    return TripletPlanner(CaptionComposer(), seed=0, **kw)


def test_build_writes_imagefolder_that_datasets_loads(tmp_path: Path, pipe) -> None:
    people = skewed_people(5)
    people[3]["no_image"] = True
    ppl, images = _people(tmp_path, people)
    plan = plan_triplets(ppl, CaptionComposer(), seed=0)
    out = tmp_path / "enriched"
    stats = build_enriched(ppl, _planner(), out, images, pipe, _settings(), batch_size=2)
    assert stats["n_triplets"] == 4 and stats["n_skipped"] == 1 and stats["n_rejected"] == 0
    lines = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [tuple(r) for r in lines] == [METADATA_FIELDS] * 4
    assert [r["person_id"] for r in lines] == ["0_1", "1_1", "2_1", "4_1"]
    assert pd.read_csv(out / "_skipped.csv").to_dict("records") == [{"person_id": "3_1", "reason": "missing_image"}]
    r = lines[0]
    assert (r["positive_tries"], r["positive_agreement"], r["negative_tries"]) == (1, None, 1)
    trips = read_metadata(out)
    assert len(trips) == 4
    for t in trips:
        for p in (t.anchor_path, t.positive_path, t.negative_path):
            assert Image.open(p).size == (RES, RES)
    # The positive really comes from its seed and prompt: regenerate it and compare.
    t0 = plan[0]
    again = generate_images(pipe, [t0.positive_prompt, t0.negative_prompt], [t0.seed, t0.seed], 2, 2, 7.5,
                                 height=RES, width=RES)
    got = np.asarray(Image.open(trips[0].positive_path), dtype=int)
    assert np.abs(got - np.asarray(again[0], dtype=int)).max() <= 1
    # Anchor = crop of the source image by the documented rule.
    src = Image.open(images / plan[0].person.image)
    box = anchor_crop_box(src.width, src.height, plan[0].person.head_box, plan[0].person.scale, None)
    want = src.convert("RGB").crop(box).resize((RES, RES), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(Image.open(trips[0].anchor_path)), np.asarray(want))

    import datasets

    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 4
    assert {"image", "positive", "negative", "anchor_text", "positive_race", "seed"} <= set(ds.column_names)
    row = ds[0]
    assert row["image"].size == (RES, RES) and row["positive"].size == (RES, RES)
    assert row["person_id"] == "0_1" and row["positive_text"] == lines[0]["positive_text"]

    # A rerun resumes from the journal: nothing is generated (pipe=None would fail if it were).
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    stats2 = build_enriched(ppl, _planner(), out, images, None, _settings(), batch_size=2)
    assert stats2["n_triplets"] == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == mtimes
    # Fewer triplets: stale images go, metadata shrinks.
    build_enriched(ppl[:2], _planner(), out, images, None, _settings(), batch_size=2)
    assert len(read_metadata(out)) == 2 and len(list((out / "images").rglob("*.png"))) == 6


def test_verify_attributes_records_tries_and_agreement(tmp_path: Path, pipe) -> None:
    ppl, images = _people(tmp_path, skewed_people(4))
    clf = ColourClassifier()
    out = tmp_path / "enriched"
    build_enriched(ppl, _planner(), out, images, pipe,
                   _settings(max_tries=3, classifier=clf.describe(), on_unverified="keep"), 4, clf)
    trips = read_metadata(out)
    tries = []
    for t in trips:
        for m in ("positive", "negative"):
            pred = clf.predict([Image.open(getattr(t, f"{m}_path"))])[0]
            agreed = pred.gender == getattr(t, f"{m}_gender") and pred.race == getattr(t, f"{m}_race")
            assert getattr(t, f"{m}_agreement") is agreed
            n = getattr(t, f"{m}_tries")
            assert 1 <= n <= 3 and (agreed or n == 3)
            tries.append(n)
    assert max(tries) > 1  # the colour classifier rarely agrees at once: retries happened


def test_run_stage_writes_manifest_and_skips_when_complete(tmp_path: Path, tiny_sd_path: Path) -> None:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "run"
    cfg.augment.generator, cfg.augment.resolution = str(tiny_sd_path), RES
    cfg.augment.num_inference_steps, cfg.augment.batch_size = 2, 2
    cfg.augment.verify_attributes, cfg.augment.on_unverified = False, "keep"
    _, _, images = write_inputs(cfg.run_dir, skewed_people(3))
    cfg.mpii.images_dir = str(images)
    enriched.run_stage(cfg)
    manifest = json.loads((cfg.run_dir / "enriched" / "_manifest.json").read_text())
    assert manifest["extra"]["n_triplets"] == 3 and manifest["stage"] == "enriched"
    assert read_metadata(cfg.run_dir / "enriched")[0].generator == str(tiny_sd_path)
    before = (cfg.run_dir / "enriched" / "_manifest.json").stat().st_mtime_ns
    enriched.run_stage(cfg)  # complete: skipped
    assert (cfg.run_dir / "enriched" / "_manifest.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_run_stage_verifies_with_the_labels_backend(tmp_path: Path) -> None:
    """verify_attributes through labels.registry (tiny CLIP backend in a smoke run)."""
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "run", True
    cfg.augment.resolution, cfg.augment.num_inference_steps = RES, 2
    cfg.augment.verify_attributes, cfg.augment.max_tries, cfg.augment.on_unverified = True, 2, "keep"
    cfg.labels.backend = "clip"
    _, _, images = write_inputs(cfg.run_dir, skewed_people(3))
    cfg.mpii.images_dir = str(images)
    enriched.run_stage(cfg)
    trips = read_metadata(cfg.run_dir / "enriched")
    assert len(trips) == 3 and all(t.generator == "tiny:sd" for t in trips)
    for t in trips:
        for m in ("positive", "negative"):
            agreed, tries = getattr(t, f"{m}_agreement"), getattr(t, f"{m}_tries")
            assert isinstance(agreed, bool) and 1 <= tries <= 2 and (agreed or tries == 2)


# ----------------------------------------------------------------------------- resume after SIGKILL
_CHILD = r"""
import sys, time
from pathlib import Path
from t2i_debias import models
from t2i_debias.augment import build
from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.inputs import load_people
from t2i_debias.augment.planner import TripletPlanner
root, model, slow = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
people, _ = load_people(root / "mpii/persons.csv", root / "labels/labels.csv")
planner = TripletPlanner(CaptionComposer(), seed=0)
pipe = models.load_pipeline(model)
settings = build.BuildSettings("tiny", {"spec": "tiny"}, 32, 2, 7.5, 1.0, 0.3, 1, None, False, "keep")
build.build_enriched(people, planner, root / "enriched", root / "images", pipe, settings, batch_size=2,
                     on_chunk_done=lambda i: time.sleep(slow))
"""


def _child(root: Path, model: Path, slow: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(model), str(slow)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_result(tmp_path: Path, tiny_sd_path: Path, pipe) -> None:
    people = skewed_people(8)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    write_inputs(clean, people)
    write_inputs(killed, people)
    journal = killed / "enriched" / "_journal.jsonl"
    proc = _child(killed, tiny_sd_path, 2.0)
    try:
        deadline = time.time() + 240
        while not (journal.exists() and journal.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "child never finished a chunk"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "enriched" / "metadata.jsonl").exists()  # it really was killed mid-run
    n_done = journal.read_text().count("\n")
    assert 2 <= n_done < 8
    # Rerun the killed folder, and build an uninterrupted reference, with the same settings.
    for root in (killed, clean):
        ppl, _ = load_people(root / "mpii/persons.csv", root / "labels/labels.csv")
        build_enriched(ppl, _planner(), root / "enriched", root / "images", pipe, _settings(), batch_size=2)
    assert (killed / "enriched/metadata.jsonl").read_text() == (clean / "enriched/metadata.jsonl").read_text()
    assert len(read_metadata(killed / "enriched")) == 8
    for f in sorted((clean / "enriched" / "images").rglob("*.png")):
        g = killed / "enriched" / f.relative_to(clean / "enriched")
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(g))), f
    # the rerun generated only what was missing: journal = lines before the kill + the rest
    assert journal.read_text().count("\n") == 8


def test_prepare_script_help_shows_defaults() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "finetune" / "prepare_dataset_finetune.py"), "--help"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    text = " ".join(out.stdout.split())  # argparse wraps long defaults
    assert "--generation_template" in text and "clearly visible face" in text
    assert "--mpii.images_dir" in text


def test_agrees_ignores_age_when_none_was_requested() -> None:
    """A member with an unknown age group (no age words in its caption) must not fail every try on age."""
    from t2i_debias.augment.counterfactual import Demographics
    from t2i_debias.augment.verify import agrees
    from t2i_debias.labels.base import Prediction

    pred = Prediction(gender="woman", race="asian", age_group="young")
    assert agrees(pred, Demographics("woman", "asian", None), check_age=True)
    assert agrees(pred, Demographics("woman", "asian", "young"), check_age=True)
    assert not agrees(pred, Demographics("woman", "asian", "senior"), check_age=True)
    assert agrees(pred, Demographics("woman", "asian", "senior"), check_age=False)
    assert not agrees(pred, Demographics("man", "asian", None), check_age=True)
    assert not agrees(Prediction(status="no_face"), Demographics("woman", "asian", None), check_age=False)
