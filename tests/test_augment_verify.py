"""Verification decides what is trained on: rejects, captions from measurements, balance over written triplets.

The generator is the tiny SD pipeline (the real generation path); the classifier is a small labels
backend (tests/_augment_inputs.WorldClassifier) that recognises which request drew each image and
answers what a controlled world's rule says that image shows, e.g. "a woman doctor comes out a man".
"""

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

from t2i_debias import models
from t2i_debias.augment.build import BuildSettings, build_enriched
from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.counterfactual import CounterfactualChooser, Demographics
from t2i_debias.augment.inputs import load_people
from t2i_debias.augment.planner import TripletPlanner, plan_triplets
from t2i_debias.augment.reader import read_metadata
from t2i_debias.augment.schema import BALANCE, FIDELITY, REJECTED, REJECTED_COLUMNS
from t2i_debias.core.config import Config
from t2i_debias.core.errors import ConfigError
from t2i_debias.core.options import validate
from t2i_debias.core.vocab import STATUS_AMBIGUOUS
from t2i_debias.labels.base import Prediction
from tests.helpers.augment_inputs import WorldClassifier, as_asked, world_references, write_inputs

ROOT = Path(__file__).resolve().parents[1]
RES, STEPS, GUIDANCE = 32, 2, 7.5


@pytest.fixture(scope="module")
def pipe(tiny_sd_path: Path):
    return models.load_pipeline(str(tiny_sd_path))


def _person(occ: str, gender: str, race: str = "white", **kw) -> dict:
    return {"occupation": occ, "gender": gender, "race": race, "age_group": "young", **kw}


def _settings(clf: WorldClassifier, on_unverified: str = "drop", max_tries: int = 3, **kw) -> BuildSettings:
    return BuildSettings("tiny", {"spec": "tiny"}, RES, STEPS, GUIDANCE, 1.0, 0.3, max_tries, clf.describe(), False,
                         on_unverified, **kw)


def no_woman_doctor(occ: str, want: Demographics, k: int) -> Prediction:
    """A generator that cannot draw a woman doctor (she comes out a man), draws a male nurse only on try 3,
    and whose firefighters are always ambiguous; everything else as asked."""
    if occ == "doctor" and want.gender == "woman":
        return Prediction(gender="man", gender_conf=0.7, race=want.race, race_conf=0.6, age_group=want.age_group)
    if occ == "nurse" and want.gender == "man" and k < 2:
        return Prediction(gender="woman", gender_conf=0.55, race=want.race, race_conf=0.9, age_group=want.age_group)
    if occ == "firefighter":
        return Prediction(status=STATUS_AMBIGUOUS)
    return as_asked(occ, want, k)


# Doctors 3 men + 1 woman, nurses 2 women, chefs 2 + 2, one firefighter, one chef without an image.
PEOPLE = [_person("doctor", "man"), _person("chef", "man"), _person("nurse", "woman"), _person("doctor", "man"),
          _person("chef", "woman"), _person("doctor", "woman"), _person("nurse", "woman"), _person("chef", "man"),
          _person("doctor", "man"), _person("chef", "woman"), _person("firefighter", "man"),
          _person("chef", "man", no_image=True)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, pipe):
    """Inputs for PEOPLE and the world classifier (races limited to white: the plan is then fixed)."""
    root = tmp_path_factory.mktemp("world")
    persons, labels, images = write_inputs(root, PEOPLE)
    people, _ = load_people(persons, labels)
    refs = world_references(pipe, people, CaptionComposer(), 0, ["white"], 3, RES, STEPS, GUIDANCE)
    return people, images, refs


def _build(world, pipe, out: Path, on_unverified: str = "drop", batch_size: int = 4) -> tuple[dict, WorldClassifier]:
    people, images, refs = world
    clf = WorldClassifier(refs, no_woman_doctor)
    stats = build_enriched(people, TripletPlanner(CaptionComposer(), 0, races=["white"]), out, images, pipe,
                           _settings(clf, on_unverified), batch_size, clf)
    return stats, clf


@pytest.fixture(scope="module")
def dropped(tmp_path_factory, world, pipe) -> tuple[dict, Path]:
    """The world built once with on_unverified = "drop"."""
    out = tmp_path_factory.mktemp("dropped") / "enriched"
    stats, _ = _build(world, pipe, out)
    return stats, out


def test_generator_that_cannot_draw_an_attribute_gives_rejects_not_mislabelled_rows(dropped) -> None:
    stats, out = dropped
    # Every doctor triplet asks for a woman doctor (positive of a man, negative of a woman): all rejected.
    # Nurses are verified on try 3, chefs at once; the firefighter is ambiguous; one chef has no image.
    assert (stats["n_planned"], stats["n_triplets"], stats["n_rejected"], stats["n_skipped"]) == (12, 6, 5, 1)
    assert stats["n_planned"] == stats["n_triplets"] + stats["n_rejected"] + stats["n_skipped"]
    trips = read_metadata(out)
    assert sorted(t.occupation for t in trips) == ["chef"] * 4 + ["nurse"] * 2
    comp = CaptionComposer()
    for t in trips:
        assert t.positive_verified and t.negative_verified
        for m in ("positive", "negative"):  # the caption names exactly what was measured
            measured = Demographics(getattr(t, f"{m}_measured_gender"), getattr(t, f"{m}_measured_race"))
            assert getattr(t, f"{m}_text") == comp.attribute(t.occupation, measured)
        assert (t.positive_measured_gender, t.positive_measured_race) == (t.positive_gender, t.positive_race)
        assert (t.negative_measured_gender, t.negative_measured_race) == (t.negative_gender, t.negative_race)
    nurse = [t for t in trips if t.occupation == "nurse"]
    assert [(t.positive_tries, t.negative_tries, t.positive_measured_gender_conf) for t in nurse] == [(3, 1, 0.9)] * 2
    rej = pd.read_csv(out / REJECTED, keep_default_na=False)
    assert tuple(rej.columns) == REJECTED_COLUMNS
    doctors = rej[rej.occupation == "doctor"]
    # 3 male anchors: their positive failed; 1 female anchor: her negative failed.
    assert sorted(doctors.member) == ["negative", "positive", "positive", "positive"]
    assert set(doctors.requested_gender) == {"woman"} and set(doctors.measured_gender) == {"man"}
    assert set(doctors.reason) == {"mismatch: gender"} and set(doctors.tries) == {3}
    assert {float(x) for x in doctors.measured_gender_conf} == {0.7}
    fire = rej[rej.occupation == "firefighter"]
    assert sorted(fire.member) == ["negative", "positive"] and set(fire.reason) == {STATUS_AMBIGUOUS}
    assert set(fire.measured_gender) == {""}  # nothing measured: empty in the CSV
    # No image of a rejected triplet is left in the imagefolder.
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png"))
    assert on_disk == sorted(f"images/{m}/{t.person_id}.png" for t in trips for m in ("anchor", "positive", "negative"))


def test_fidelity_csv_known_answers(dropped) -> None:
    _, out = dropped
    fid = pd.read_csv(out / FIDELITY)
    got = {(r.occupation, r.member, r.gender): (r.requested, r.verified, r.written, r.rejected, r.tries_total)
           for r in fid.itertuples()}
    assert set(fid.race) == {"white"}
    assert got == {
        # doctor: 3 men anchors -> 3 woman positives (never verified, 3 tries each); 1 woman -> 1 man positive.
        ("doctor", "positive", "woman"): (3, 0, 0, 3, 9),
        ("doctor", "positive", "man"): (1, 1, 0, 1, 1),
        ("doctor", "negative", "man"): (3, 3, 0, 3, 3),
        ("doctor", "negative", "woman"): (1, 0, 0, 1, 3),
        ("nurse", "positive", "man"): (2, 2, 2, 0, 6),
        ("nurse", "negative", "woman"): (2, 2, 2, 0, 2),
        ("chef", "positive", "man"): (2, 2, 2, 0, 2),
        ("chef", "positive", "woman"): (2, 2, 2, 0, 2),
        ("chef", "negative", "man"): (2, 2, 2, 0, 2),
        ("chef", "negative", "woman"): (2, 2, 2, 0, 2),
        ("firefighter", "positive", "woman"): (1, 0, 0, 1, 3),
        ("firefighter", "negative", "man"): (1, 0, 0, 1, 3),
    }
    row = fid[(fid.occupation == "nurse") & (fid.member == "positive")].iloc[0]
    assert (row.verified_rate, row.tries_mean) == (1.0, 3.0)
    bal = pd.read_csv(out / BALANCE).fillna({"warning": ""}).set_index("occupation")
    assert bal.loc["chef", "planned"] == 5 and bal.loc["chef", "skipped"] == 1 and bal.loc["chef", "written"] == 4
    # With drop, each written triplet adds its anchor and an opposite-gender verified positive: 50% men.
    assert bal.loc["chef", "pool_male_share"] == 0.5 and bal.loc["nurse", "pool_male_share"] == 0.5
    assert bal.loc["nurse", "warning"] == ""
    assert bal.loc["doctor", "written"] == 0 and not bal.loc["doctor", "balanced"]
    assert bal.loc["doctor", "warning"].startswith("no written triplets; only 0 of 4 triplets written")
    assert "3 positives asked as woman, 1 negative (mismatch: gender 4)" in bal.loc["doctor", "warning"]
    assert "skipped" in bal.loc["chef", "warning"]  # 4 of 5 written: 80% < 90%


def test_report_names_the_occupations_the_data_could_not_balance(dropped) -> None:
    from t2i_debias.report.page import build_report

    _, out = dropped
    page = build_report(out.parent)
    assert "Counterfactual fidelity (enriched/fidelity.csv)" in page
    assert "<li><b>doctor</b>: no written triplets; only 0 of 4 triplets written" in page
    assert "<li><b>nurse</b>" not in page  # verified on try 3: written, balanced, no warning


def test_keep_captions_follow_the_measurement(tmp_path, world, pipe) -> None:
    out = tmp_path / "enriched"
    stats, _ = _build(world, pipe, out, on_unverified="keep")
    assert (stats["n_triplets"], stats["n_rejected"], stats["n_skipped"]) == (11, 0, 1)
    comp = CaptionComposer()
    by_id = {t.person_id: t for t in read_metadata(out)}
    for t in by_id.values():
        for m in ("positive", "negative"):
            text, verified = getattr(t, f"{m}_text"), getattr(t, f"{m}_verified")
            g, r = getattr(t, f"{m}_measured_gender"), getattr(t, f"{m}_measured_race")
            if verified:
                assert text == comp.attribute(t.occupation, Demographics(getattr(t, f"{m}_gender"),
                                                                         getattr(t, f"{m}_race")))
            elif g is None:
                assert text == t.anchor_text  # nothing measured: the neutral caption
            else:
                assert text == comp.attribute(t.occupation, Demographics(g, r))
    # Known answers: a male doctor's requested-woman positive was measured a man and is captioned so.
    doc = by_id["0_1"]
    assert (doc.positive_gender, doc.positive_verified) == ("woman", False)
    assert doc.positive_text == "a photo of a White man working as a doctor"
    fire = by_id["10_1"]
    assert fire.positive_text == fire.negative_text == "a photo of a firefighter" and fire.positive_measured_race is None
    assert stats["n_unverified_kept"] == {"positive": 4, "negative": 2}
    # Pool = anchors + verified positives only: doctors 3 of 4 anchors men + 1 verified man positive -> 80% men.
    bal = pd.read_csv(out / BALANCE).fillna({"warning": ""}).set_index("occupation")
    assert bal.loc["doctor", "pool_male_share"] == 0.8 and not bal.loc["doctor", "balanced"]
    assert "pool 80% men, outside 40%-60%: 0 of 3 positives asked as woman verified" in bal.loc["doctor", "warning"]
    assert "doctor" in stats["occupation_warnings"]


# ----------------------------------------------------------------------------- race balance over written triplets
def test_chooser_release_undoes_a_choice() -> None:
    ch = CounterfactualChooser(0, races=("white", "black"))
    anchor = Demographics("man", "white")
    first = ch.positive("chef", anchor)
    ch.release("chef", first)
    assert (ch.race_counts["chef"]["white"], ch.race_counts["chef"]["black"]) == (0, 0)
    races = sorted(ch.positive("chef", anchor).race for _ in range(2))
    assert races == ["black", "white"]
    with pytest.raises(ValueError, match="never chosen"):
        CounterfactualChooser(0, races=("white", "black")).release("chef", first)


def no_black_positive(occ: str, want: Demographics, k: int) -> Prediction:
    """A generator that cannot draw a Black woman (she comes out White)."""
    if want.race == "black" and want.gender == "woman":
        return Prediction(gender="woman", race="white", race_conf=0.5)
    return as_asked(occ, want, k)


def test_race_balance_counts_written_triplets_only(tmp_path, pipe) -> None:
    """Six male chefs, positives white or black, Black women cannot be drawn.

    Counting planned triplets would alternate white/black and write 3 White-woman positives. Counting
    written ones, a rejected black positive leaves black the least represented, so once one White
    woman is written every later positive asks for a Black woman again: 1 written, 5 rejected.
    """
    persons, labels, images = write_inputs(tmp_path, [_person("chef", "man") for _ in range(6)])
    people, _ = load_people(persons, labels)
    races = ["white", "black"]
    clf = WorldClassifier(world_references(pipe, people, CaptionComposer(), 0, races, 1, RES, STEPS, GUIDANCE),
                          no_black_positive)
    out = tmp_path / "enriched"
    stats = build_enriched(people, TripletPlanner(CaptionComposer(), 0, races=races), out, images, pipe,
                           _settings(clf, max_tries=1), 1, clf)
    assert (stats["n_triplets"], stats["n_rejected"]) == (1, 5)
    assert [t.positive_race for t in read_metadata(out)] == ["white"]
    rej = pd.read_csv(out / REJECTED)
    assert list(rej.requested_race) == ["black"] * 5 and set(rej.measured_race) == {"white"}
    # The journal records the asked-for race of every planned triplet in order: white comes once.
    lines = [json.loads(x) for x in (out / "_journal.jsonl").read_text().splitlines()]
    asked = [e["members"]["positive"]["requested"]["race"] for e in lines]
    assert asked.count("white") == 1 and len(asked) == 6


# ----------------------------------------------------------------------------- more ways to a verified counterfactual
def test_negative_prompt_and_retry_guidance_reach_the_pipeline(tmp_path, pipe) -> None:
    """The world classifier only recognises images drawn with the opposite-gender negative prompt and, from
    try 2 on, the retry guidance scale: a build that passed either wrongly would raise LookupError."""
    persons, labels, images = write_inputs(tmp_path, [_person("chef", "man"), _person("nurse", "woman")])
    people, _ = load_people(persons, labels)
    comp = CaptionComposer()
    refs = world_references(pipe, people, comp, 0, ["white"], 2, RES, STEPS, GUIDANCE, retry_guidance=12.0,
                            negative_prompt="opposite_gender")

    def first_try_fails(occ: str, want: Demographics, k: int) -> Prediction:
        return Prediction(status="no_face") if k == 0 else as_asked(occ, want, k)

    clf = WorldClassifier(refs, first_try_fails)
    planner = TripletPlanner(comp, 0, races=["white"], negative_prompt="opposite_gender")
    out = tmp_path / "enriched"
    stats = build_enriched(people, planner, out, images, pipe,
                           _settings(clf, max_tries=2, retry_guidance_scale=12.0), 4, clf)
    assert stats["n_triplets"] == 2 and clf.calls == 8  # 4 members x 2 tries
    assert all(t.positive_tries == 2 and t.negative_tries == 2 for t in read_metadata(out))
    t = plan_triplets(people, comp, 0, races=["white"], negative_prompt="opposite_gender")[0]
    assert t.positive_prompt.startswith("a photo of the face of a White woman working as a chef")
    assert t.positive_avoid.startswith("a photo of the face of a White man working as a chef")
    assert t.negative_avoid.startswith("a photo of the face of a White woman working as a chef")
    # Without the negative prompt the images are others: the same classifier does not know them.
    clf2 = WorldClassifier(refs, first_try_fails)
    with pytest.raises(LookupError):
        build_enriched(people, TripletPlanner(comp, 0, races=["white"]), tmp_path / "other", images, pipe,
                       _settings(clf2, max_tries=2, retry_guidance_scale=12.0), 4, clf2)


@pytest.mark.parametrize("field, value, msg", [
    ("on_unverified", "maybe", "on_unverified must be one of drop, keep, got 'maybe'"),
    ("negative_prompt", "woman", "negative_prompt must be one of none, opposite_gender, got 'woman'"),
    ("balance_band", [0.6, 0.4], "balance_band"),
    ("retry_guidance_scale", -1.0, "retry_guidance_scale"),
    ("min_written_rate", 1.5, "min_written_rate"),
    ("max_tries", 0, "max_tries"),
])
def test_bad_augment_options_are_config_errors_at_load(field: str, value, msg: str) -> None:
    """Checked where the config is loaded (core.options.validate), not when the enriched stage starts."""
    cfg = Config()
    setattr(cfg.augment, field, value)
    with pytest.raises(ConfigError, match=f"^c.toml: \\[augment\\] .*{msg}"):
        validate(cfg, "c.toml")


def test_drop_without_verification_is_a_config_error() -> None:
    cfg = Config()
    cfg.augment.verify_attributes = False
    with pytest.raises(ConfigError, match='on_unverified = "drop" needs verify_attributes'):
        validate(cfg, "c.toml")
    cfg.augment.on_unverified = "keep"
    validate(cfg, "c.toml")


# ----------------------------------------------------------------------------- resume after SIGKILL
_CHILD = r"""
import sys, time
from pathlib import Path
from tests.helpers.augment_inputs import WorldClassifier, world_references
from tests.test_augment_verify import RULES, settings_for
from t2i_debias import models
from t2i_debias.augment import build
from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.inputs import load_people
from t2i_debias.augment.planner import TripletPlanner
root, model, slow = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
people, _ = load_people(root / "mpii/persons.csv", root / "labels/labels.csv")
pipe = models.load_pipeline(model)
clf = WorldClassifier(world_references(pipe, people, CaptionComposer(), 0, RACES, 2, 32, 2, 7.5), RULES)
build.build_enriched(people, TripletPlanner(CaptionComposer(), 0, races=RACES), root / "enriched",
                     root / "images", pipe, settings_for(clf), batch_size=2, classifier=clf,
                     on_chunk_done=lambda i: time.sleep(slow))
""".replace("RACES", '["white", "black"]')

RULES = no_black_positive


def settings_for(clf: WorldClassifier) -> BuildSettings:
    """The settings of the killed child and of the reference build (max_tries 2)."""
    return _settings(clf, max_tries=2)


@pytest.mark.slow
def test_rerun_after_sigkill_gives_the_same_metadata_and_rejects(tmp_path: Path, tiny_sd_path: Path, pipe) -> None:
    genders = ["man", "woman", "man", "man", "woman", "man", "man", "man", "woman", "man"]
    people = [_person("chef" if i % 3 else "doctor", g) for i, g in enumerate(genders)]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    write_inputs(clean, people)
    write_inputs(killed, people)
    journal = killed / "enriched" / "_journal.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(killed), str(tiny_sd_path), "2.0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not (journal.exists() and journal.read_text().count("\n") >= 4):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "child never finished two chunks"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "enriched" / "metadata.jsonl").exists()  # it really was killed mid-run
    n_done = journal.read_text().count("\n")
    assert 4 <= n_done < 10
    stats = {}
    for root in (killed, clean):
        ppl, _ = load_people(root / "mpii/persons.csv", root / "labels/labels.csv")
        clf = WorldClassifier(world_references(pipe, ppl, CaptionComposer(), 0, ["white", "black"], 2, RES, STEPS,
                                               GUIDANCE), RULES)
        stats[root] = build_enriched(ppl, TripletPlanner(CaptionComposer(), 0, races=["white", "black"]),
                                     root / "enriched", root / "images", pipe, settings_for(clf), 2, clf)
    assert stats[killed] == stats[clean] and stats[clean]["n_rejected"] > 0 and stats[clean]["n_triplets"] > 0
    for f in ("metadata.jsonl", REJECTED, FIDELITY, BALANCE, "_skipped.csv"):
        assert (killed / "enriched" / f).read_text() == (clean / "enriched" / f).read_text(), f
    for f in sorted((clean / "enriched" / "images").rglob("*.png")):
        g = killed / "enriched" / f.relative_to(clean / "enriched")
        assert Image.open(f).tobytes() == Image.open(g).tobytes(), f
    # The rerun replayed the journal's outcomes and generated only the chunks that were missing.
    assert journal.read_text().count("\n") == 10


def test_reject_reason_names_only_the_attributes_that_were_checked() -> None:
    from t2i_debias.augment.verify import _member_outcome

    want = Demographics("woman", "black", "senior")
    pred = Prediction(gender="woman", race="white", race_conf=0.4, age_group="young")
    assert _member_outcome(want, pred, False, 3, check_age=False)["reason"] == "mismatch: race"
    assert _member_outcome(want, pred, False, 3, check_age=True)["reason"] == "mismatch: race, age_group"
    got = _member_outcome(want, Prediction(status=STATUS_AMBIGUOUS), False, 2, check_age=True)
    assert (got["reason"], got["status"], got["measured"]["race"], got["tries"]) == (STATUS_AMBIGUOUS,) * 2 + (None, 2)
    assert _member_outcome(want, None, None, 1, check_age=False)["reason"] == "not measured"
    ok = _member_outcome(want, Prediction(gender="woman", race="black", race_conf=0.9), True, 1, check_age=False)
    assert ok["verified"] and ok["reason"] is None and ok["measured"]["race_conf"] == 0.9
