"""Toy world: renderer, biased population, MPII round trip, toy classifier."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from t2i_debias.toyworld.dataset import MALE_SHARE, RACE_SHARE, biased_population
from t2i_debias.toyworld.render import MPII_OCCUPATIONS, OCCUPATIONS, TOY_RACES, Person, render


def test_render_is_deterministic_by_seed():
    p = Person("doctor", "woman", "black")
    a, b, c = render(p, 7), render(p, 7), render(p, 8)
    assert a.image.size == (32, 32) and a.image.mode == "RGB"
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.head_box == b.head_box
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))  # jitter differs by seed


def test_render_attributes_change_the_picture_where_expected():
    base = np.asarray(render(Person("chef", "man", "white"), 3).image, dtype=int)
    other_occ = np.asarray(render(Person("nurse", "man", "white"), 3).image, dtype=int)
    other_gender = np.asarray(render(Person("chef", "woman", "white"), 3).image, dtype=int)
    other_skin = np.asarray(render(Person("chef", "man", "black"), 3).image, dtype=int)
    # occupation changes the background (corners), not only the figure
    assert np.abs(base[28:, :4] - other_occ[28:, :4]).mean() > 20
    # gender and skin change the figure but keep the scene's corner
    for other in (other_gender, other_skin):
        assert np.abs(base - other).sum(axis=2).astype(bool).sum() > 15
        assert np.abs(base[28:, :4] - other[28:, :4]).max() == 0


def test_head_box_lies_on_the_skin_coloured_face():
    r = render(Person("firefighter", "man", "black"), 11)
    x1, y1, x2, y2 = r.head_box
    assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
    arr = np.asarray(r.image, dtype=int)
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2) + 1
    assert np.abs(arr[cy, cx] - np.array([92, 58, 36])).max() <= 12  # dark skin at the face centre


def test_unknown_attributes_are_rejected():
    with pytest.raises(ValueError, match="occupation"):
        Person("astronaut", "man", "white")
    with pytest.raises(ValueError, match="race"):
        Person("chef", "man", "indian")


def test_biased_population_has_the_planted_shares_exactly():
    pop = biased_population(200, seed=3)
    assert len(pop) == 800  # the MPII copy's four occupations; the base model's population has all six
    assert len(biased_population(200, seed=3, occupations=OCCUPATIONS)) == 1200
    for occ in MPII_OCCUPATIONS:
        people = [s.person for s in pop if s.person.occupation == occ]
        assert len(people) == 200
        assert sum(p.gender == "man" for p in people) == round(MALE_SHARE[occ] * 200)
        races = Counter(p.race for p in people)
        for r, share in zip(TOY_RACES, RACE_SHARE[occ], strict=True):
            assert abs(races[r] - share * 200) <= 1
    assert biased_population(200, seed=3) == pop
    assert biased_population(200, seed=4) != pop


def test_mpii_round_trip_through_the_loader(tmp_path):
    """Toy data written with the MPII fixture writer loads through the MPII parser with its occupations."""
    mpii = pytest.importorskip("t2i_debias.data.mpii")
    from t2i_debias.data.occupations import load_occupation_map
    from t2i_debias.data.persons import PERSONS_COLUMNS, image_listing, select_persons
    from t2i_debias.toyworld.dataset import OCCUPATION_MAP, write_mpii

    pop = biased_population(5, seed=0)
    mat, images = write_mpii(tmp_path, pop)
    occ_map = load_occupation_map(OCCUPATION_MAP)
    assert sorted(o for o in occ_map.values() if o) == sorted(MPII_OCCUPATIONS)  # pilot, teacher held out
    release = mpii.load_release(mat)
    rows, report = select_persons(release, occ_map, "train", True, image_listing(images))
    df = pd.DataFrame(rows, columns=PERSONS_COLUMNS)
    assert report["persons_written"] == len(pop) and report["missing_images"] == 0
    assert Counter(df["occupation"]) == Counter(s.person.occupation for s in pop)
    first = df.sort_values("image_index").iloc[0]
    x1, y1, x2, y2 = pop[0].render().head_box
    assert (float(first["head_x1"]), float(first["head_y2"])) == pytest.approx((x1, y2), abs=0.01)
    assert int(first["image_exists"]) == 1


@pytest.mark.slow
def test_toy_classifier_heldout_accuracy_and_predictions():
    """>= 95% on held-out renders for every head (trained once, cached), and on fresh renders here."""
    from t2i_debias.toyworld.classifier import HEADS, make_classifier
    from t2i_debias.toyworld.dataset import balanced_population

    clf = make_classifier(None)
    for head in HEADS:
        assert clf.metrics[f"{head}_accuracy"] >= 0.95, head
        assert 10_000 < clf.metrics[f"{head}_params"] < 30_000
    assert clf.metrics["gender_accuracy"] >= 0.95
    fresh = balanced_population(4, seed=12345)
    preds = clf.predict([s.render().image for s in fresh])
    assert len(preds) == len(fresh)
    for head, key in (("gender", "gender"), ("race", "race")):
        acc = np.mean([p.ok and getattr(p, key) == getattr(s.person, head) for p, s in zip(preds, fresh, strict=True)])
        assert acc >= 0.95, head
    acc = np.mean([p.extra["occupation"] == s.person.occupation for p, s in zip(preds, fresh, strict=True)])
    assert acc >= 0.95
    assert preds[0].to_row()["extra_occupation"] in OCCUPATIONS
    feats = clf.features([s.render().image for s in fresh[:10]])
    assert feats.shape == (10, 4 * 48)


@pytest.mark.slow
def test_toy_classifier_calls_hybrids_ambiguous():
    """Top of one person over the bottom of the other gender (cut rows 14/16/18): the two cues disagree, so
    the label is `ambiguous`, not a guessed gender; consistent renders stay >= 95% correct."""
    from PIL import Image

    from t2i_debias.core.vocab import STATUS_AMBIGUOUS
    from t2i_debias.toyworld.classifier import CUT_ROWS_CHECK, composite, make_classifier

    clf = make_classifier(None)
    rng = np.random.default_rng(7)
    tops, bottoms, plain, truth = [], [], [], []
    for k in range(25):  # 25 seeds x 4 occupations x both orders
        for occ in OCCUPATIONS:
            race = TOY_RACES[k % 3]
            w, m = (render(Person(occ, g, race), int(rng.integers(1 << 30))).image for g in ("woman", "man"))
            tops += [w, m]
            bottoms += [m, w]
            plain += [w, m]
            truth += ["woman", "man"]
    arr = [np.array(im) for im in tops], [np.array(im) for im in bottoms]
    for cut in CUT_ROWS_CHECK:
        ims = [Image.fromarray(composite(t[None].transpose(0, 3, 1, 2), b[None].transpose(0, 3, 1, 2), cut)
                               .numpy()[0].transpose(1, 2, 0)) for t, b in zip(*arr, strict=True)]
        preds = clf.predict(ims)
        ambiguous = np.mean([p.status == STATUS_AMBIGUOUS for p in preds])
        assert ambiguous >= 0.95, (cut, ambiguous)
        for hair in ("woman", "man"):  # neither order is read as a gender
            mine = [p for p, g in zip(preds, truth, strict=True) if g == hair]
            assert np.mean([p.status == STATUS_AMBIGUOUS for p in mine]) >= 0.9, (cut, hair)
            assert {p.extra["hair"] for p in mine} != {p.extra["clothes"] for p in mine}
    preds = clf.predict(plain)
    assert np.mean([p.ok and p.gender == g for p, g in zip(preds, truth, strict=True)]) >= 0.95


def test_composite_takes_rows_above_the_cut_from_the_top_image():
    from t2i_debias.toyworld.classifier import composite

    top, bottom = np.zeros((2, 3, 32, 32)), np.ones((2, 3, 32, 32))
    out = composite(top, bottom, 14).numpy()
    assert (out[:, :, :14] == 0).all() and (out[:, :, 14:] == 1).all()
    out = composite(top, bottom, np.array([3, 30])).numpy()  # one cut per image
    assert out[0, :, :3].sum() == 0 and out[0, :, 3:].min() == 1
    assert out[1, :, :30].sum() == 0 and out[1, :, 30:].min() == 1


def test_cue_heads_see_only_their_rows():
    """The hair CNN sees the head rows, the clothes CNN the legs rows: each reads its own cue."""
    import torch

    from t2i_debias.toyworld.classifier import CUE_ROWS, head_input

    x = torch.ones(1, 3, 32, 32)
    hair, clothes, race = head_input("hair", x), head_input("clothes", x), head_input("race", x)
    (h0, h1), (c0, c1) = CUE_ROWS["hair"], CUE_ROWS["clothes"]
    assert hair[..., h0:h1, :].min() == 1 and hair.sum() == 3 * 32 * (h1 - h0)
    assert clothes[..., c0:c1, :].min() == 1 and clothes.sum() == 3 * 32 * (c1 - c0)
    assert torch.equal(race, x) and x.min() == 1  # other heads see everything; the input is not changed
    assert h1 <= c0  # no row is read by both cues


def test_frechet_distance_known_answer():
    from t2i_debias.toyworld.classifier import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 2))
    b = a + np.array([3.0, 4.0])  # same covariance, mean shifted by 5
    assert frechet_distance(a, b) == pytest.approx(25.0, abs=1e-6)
    c = a * 2.0  # cov 4Σ vs Σ: tr Σ + tr 4Σ - 2 tr(2Σ) = tr Σ; means differ by mean(a)
    expected = float((a.mean(0) ** 2).sum() + np.trace(np.cov(a, rowvar=False)))
    assert frechet_distance(a, c) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="2 samples"):
        frechet_distance(a[:1], b)


def test_ensure_toy_data_writes_once_and_rewrites_on_a_new_seed(tmp_path):
    """The toy stage writes MPII-format data where [mpii] points, skips when current, rewrites when stale."""
    pytest.importorskip("t2i_debias.data.mpii_fixture")
    from t2i_debias.core.config import Config
    from t2i_debias.toyworld import ensure_toy_data

    cfg = Config()
    cfg.mpii.mat_file = str(tmp_path / "toy" / "toy.mat")
    cfg.mpii.images_dir = str(tmp_path / "toy" / "images")
    cfg.toy.n_per_occupation = 3
    mat, images = ensure_toy_data(cfg.mpii, cfg.toy)
    assert mat == tmp_path / "toy" / "toy.mat" and mat.is_file()
    assert len(list(images.glob("*.jpg"))) == 12
    truth = pd.read_csv(tmp_path / "toy" / "truth.csv")
    assert sorted(set(truth["occupation"])) == sorted(MPII_OCCUPATIONS)
    mtime = mat.stat().st_mtime_ns
    ensure_toy_data(cfg.mpii, cfg.toy)
    assert mat.stat().st_mtime_ns == mtime  # current: not rewritten
    cfg.toy.seed = 1
    ensure_toy_data(cfg.mpii, cfg.toy)
    assert not pd.read_csv(tmp_path / "toy" / "truth.csv").equals(truth)
    cfg.mpii.images_dir = str(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="images_dir"):
        ensure_toy_data(cfg.mpii, cfg.toy)


def _pred(gender, race, occupation):
    from t2i_debias.labels.base import Prediction

    return Prediction(gender=gender, race=race, extra={"occupation": occupation, "skin": race})


def test_score_predictions_known_answer():
    from t2i_debias.core.vocab import STATUS_AMBIGUOUS
    from t2i_debias.labels.base import Prediction
    from t2i_debias.toyworld.evaluate import score_predictions

    preds = {
        # 3 men of 4 -> P(man)=0.75, tvd 0.25; races white 2, black 2 of 4 -> tvd ½(|.5-⅓|+|0-⅓|+|.5-⅓|)=⅓
        "doctor": [_pred("man", "white", "doctor"), _pred("man", "white", "doctor"),
                   _pred("man", "black", "nurse"), _pred("woman", "black", "doctor"),
                   Prediction(status="no_face")],  # skipped, not counted
        # balanced gender, one race -> gender tvd 0, race tvd ⅔; 2 hybrids of 4 images -> ambiguous rate ½
        "nurse": [_pred("man", "asian", "nurse"), _pred("woman", "asian", "nurse"),
                  Prediction(status=STATUS_AMBIGUOUS, extra={"occupation": "nurse"}),
                  Prediction(status=STATUS_AMBIGUOUS, extra={"occupation": "doctor"})],
    }
    s = score_predictions(preds)
    assert s.male_share == {"doctor": 0.75, "nurse": 0.5}
    assert s.gender_tvd == pytest.approx({"doctor": 0.25, "nurse": 0.0})
    assert s.race_tvd == pytest.approx({"doctor": 1 / 3, "nurse": 2 / 3})
    assert s.ambiguous_rate == {"doctor": 0.0, "nurse": 0.5}
    assert s.mean_gender_tvd == pytest.approx(0.125)
    assert s.occupation_accuracy == pytest.approx(6 / 8)  # of 8 read scenes, one doctor and one nurse are wrong
    only_hybrids = score_predictions({"chef": [Prediction(status=STATUS_AMBIGUOUS, extra={"occupation": "chef"})]})
    assert only_hybrids.ambiguous_rate == {"chef": 1.0} and np.isnan(only_hybrids.male_share["chef"])
    with pytest.raises(ValueError, match="chef"):
        score_predictions({"chef": []})


def test_format_table_shows_change_against_base():
    from t2i_debias.toyworld.summary import format_table

    row = {f"male_{o}": 0.5 for o in OCCUPATIONS} | {f"{r}_{o}": 1 / 3 for r in TOY_RACES for o in OCCUPATIONS}
    amb = {f"ambiguous_{o}": 0.25 * i for i, o in enumerate(OCCUPATIONS)}
    df = pd.DataFrame([{"model": "base", **row, **amb, "gender_tvd": 0.4, "gender_tvd_change": 0.0, "race_tvd": 0.2,
                        "occupation_acc": 1.0, "toy_fid": 3.0, "attr_gender_min": 0.9, "attr_skin_min": 0.8},
                       {"model": "unet", **row, **amb, "gender_tvd": 0.1, "gender_tvd_change": -0.75,
                        "race_tvd": 0.1, "occupation_acc": 0.95, "toy_fid": None, "attr_gender_min": None,
                        "attr_skin_min": None}])
    attr = pd.DataFrame([
        {"model": "base", "prompt": "a photo of a woman working as a doctor", "gender_ok": 0.0, "skin_ok": None},
        {"model": "base", "prompt": "a photo of a Black man working as a nurse", "gender_ok": 1.0, "skin_ok": 0.5}])
    text = format_table(df, attr)
    lines = text.splitlines()
    assert lines[0].startswith("| model | male_doctor |")
    assert "| ambiguous doctor | ambiguous nurse | ambiguous firefighter | ambiguous chef |" in lines[0]
    per_occ = " | ".join(["0.50"] * len(OCCUPATIONS) + [f"{0.25 * i:.2f}" for i in range(len(OCCUPATIONS))])
    assert f"| unet | {per_occ} | 0.10 | -75% | 0.10 | 0.95 | n/a | n/a | n/a |" in lines
    assert f"| base | {per_occ} | 0.40 | +0% | 0.20 | 1.00 | 3.00 | 0.90 | 0.80 |" in lines
    assert "- base: doctor 0.33/0.33/0.33" in text
    # every prompt is shown: a zero is not hidden in an average
    assert "| a photo of a woman working as a doctor | 0.00 / – |" in lines
    assert "| a photo of a Black man working as a nurse | 1.00 / 0.50 |" in lines


def test_summary_table_scores_generated_folders_against_the_truth(tmp_path):
    """Renders stand in for generated images: the table must read back the known shares."""
    from t2i_debias.core.config import Config
    from t2i_debias.core.files import atomic_save_image
    from t2i_debias.toyworld.summary import format_table, summary_table

    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "run"
    cfg.mpii.images_dir = str(tmp_path / "ref")
    for i in range(8):
        atomic_save_image(tmp_path / "ref" / f"{i:09d}.jpg", render(Person(OCCUPATIONS[i % 4], "man", "white"), i).image)
    for model, n_men in (("base", 4), ("unet", 2)):
        rows = []
        for occ in OCCUPATIONS:
            for i in range(4):
                rel = f"images/{occ}/{i}.png"
                g = "man" if i < n_men else "woman"
                atomic_save_image(cfg.run_dir / "generated" / model / rel, render(Person(occ, g, "asian"), 50 + i).image)
                rows.append({"model": model, "prompt_id": occ, "occupation": occ, "prompt": occ, "seed": i, "file": rel})
        pd.DataFrame(rows).to_csv(cfg.run_dir / "generated" / model / "metadata.csv", index=False)
    df = summary_table(cfg.run_dir, cfg.labels, cfg.mpii.images_dir, cfg.generate, {"base": None}, n_attribute=0)
    assert df["model"].tolist() == ["base", "unet"]
    base, unet = df.iloc[0], df.iloc[1]
    assert base["gender_tvd"] == pytest.approx(0.5) and unet["gender_tvd"] == pytest.approx(0.0)
    assert unet["gender_tvd_change"] == pytest.approx(-1.0)
    assert base["asian_doctor"] == 1.0 and base["occupation_acc"] == 1.0
    assert base["toy_fid"] > 0
    assert base["ambiguous_doctor"] == 0.0
    per_occ = " | ".join(["0.50"] * len(OCCUPATIONS) + ["0.00"] * len(OCCUPATIONS))
    assert f"| unet | {per_occ} | 0.00 | -100% |" in format_table(df)
