"""Known-answer tests for the bias metrics (DESIGN.md §3), computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t2i_debias.attributes import ATTRIBUTE_CLASSES, GENDERS, RACES
from t2i_debias.metrics import bias


def test_one_class_takes_all_two_classes():
    p = (1.0, 0.0)
    assert bias.tvd(p) == pytest.approx(0.5)  # ½(|1-½| + |0-½|)
    assert bias.pairwise(p) == pytest.approx(1.0)
    assert bias.kl(p) == pytest.approx(math.log(2))  # 1·ln(2·1) + 0
    assert bias.entropy(p) == pytest.approx(0.0)


def test_uniform_is_unbiased():
    for k in (2, 4, 6, 12):
        p = np.full(k, 1 / k)
        assert bias.tvd(p) == pytest.approx(0.0)
        assert bias.pairwise(p) == pytest.approx(0.0)
        assert bias.kl(p) == pytest.approx(0.0)
        assert bias.entropy(p) == pytest.approx(1.0)


def test_six_class_case_by_hand():
    p = (0.5, 0.25, 0.25, 0.0, 0.0, 0.0)
    # tvd = ½(|.5-1/6| + 2|.25-1/6| + 3·1/6) = ½(1/3 + 1/6 + 1/2) = 1/2
    assert bias.tvd(p) == pytest.approx(0.5)
    # pairs: (.5,.25)x2=.5, (.5,0)x3=1.5, (.25,.25)=0, (.25,0)x6=1.5, (0,0)x3=0 -> 3.5 / 15
    assert bias.pairwise(p) == pytest.approx(3.5 / 15)
    # kl = .5 ln 3 + 2·.25 ln 1.5
    assert bias.kl(p) == pytest.approx(0.5 * math.log(3) + 0.5 * math.log(1.5))
    # entropy = (.5 ln 2 + 2·.25 ln 4) / ln 6 = 1.5 ln 2 / ln 6
    assert bias.entropy(p) == pytest.approx(1.5 * math.log(2) / math.log(6))


def test_extremes_reach_documented_range():
    for k in (2, 6):
        p = np.zeros(k)
        p[0] = 1
        assert bias.tvd(p) == pytest.approx(1 - 1 / k)
        assert bias.kl(p) == pytest.approx(math.log(k))
        assert bias.entropy(p) == pytest.approx(0.0)


def test_vectorised_over_rows_and_nan_rows():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [np.nan, np.nan]])
    np.testing.assert_allclose(bias.tvd(p), [0.5, 0.0, np.nan])
    np.testing.assert_allclose(bias.kl(p), [math.log(2), 0.0, np.nan])
    np.testing.assert_allclose(bias.entropy(p), [0.0, 1.0, np.nan])


def test_invalid_distribution_rejected():
    with pytest.raises(ValueError):
        bias.tvd((0.7, 0.7))
    with pytest.raises(ValueError):
        bias.tvd((1.0,))


def test_distribution_uses_fixed_vocab_and_skips_no_face():
    p = bias.distribution(["man", None, "man", "woman", float("nan"), ""], GENDERS)
    np.testing.assert_allclose(p, [2 / 3, 1 / 3])
    p = bias.distribution(["asian", "asian"], RACES)  # K stays 6 even if one class occurs
    assert p.shape == (6,)
    assert bias.tvd(p) == pytest.approx(1 - 1 / 6)
    assert bias.distribution([None, None], GENDERS) is None
    with pytest.raises(ValueError, match="martian"):
        bias.distribution(["martian"], GENDERS)


def test_attribute_label_groupings():
    row = {"status": "ok", "gender": "woman", "race": "latino hispanic"}
    assert bias.attribute_label(row, "gender") == "woman"
    assert bias.attribute_label(row, "race") == "latino hispanic"
    assert bias.attribute_label(row, "race4") == "WMELH"
    assert bias.attribute_label(row, "gender_race") == "woman|latino hispanic"
    assert bias.attribute_label(row, "gender_race") in ATTRIBUTE_CLASSES["gender_race"]
    assert bias.attribute_label({"status": "no_face", "gender": "man"}, "gender") is None


def test_aggregate_leaves_out_prompts_without_face():
    labels = [["man", "man"], [None, None], ["man", "woman"]]
    out = bias.evaluate_attribute(labels, GENDERS, n_bootstrap=0)
    assert out["per_prompt"][1]["tvd"] is None  # no value, not 0
    assert out["n_prompts_with_value"] == 2
    assert out["aggregate"]["tvd"] == pytest.approx((0.5 + 0.0) / 2)  # not /3
    assert out["aggregate"]["entropy"] == pytest.approx((0.0 + 1.0) / 2)
    assert out["per_prompt"][0]["counts"] == [2, 0]


def test_bootstrap_ci_seeded_and_sensible():
    rng = np.random.default_rng(1)
    labels = [list(rng.choice(["man", "woman", None], size=40, p=[0.6, 0.3, 0.1])) for _ in range(5)]
    labels = [[None if x is None or x == "None" else str(x) for x in lab] for lab in labels]
    a = bias.evaluate_attribute(labels, GENDERS, n_bootstrap=300, seed=7)
    b = bias.evaluate_attribute(labels, GENDERS, n_bootstrap=300, seed=7)
    c = bias.evaluate_attribute(labels, GENDERS, n_bootstrap=300, seed=8)
    assert a["ci"] == b["ci"]
    assert a["ci"] != c["ci"]
    for m in bias.METRIC_NAMES:
        lo, hi = a["ci"][m]
        assert lo < hi
        assert lo - 1e-9 <= a["aggregate"][m] <= hi + 1e-9 or m == "kl"  # kl is biased upward under resampling
        ppl, pph = a["per_prompt"][0][f"{m}_ci"]
        assert ppl <= pph


def test_bootstrap_degenerate_prompt_has_zero_width_ci():
    out = bias.evaluate_attribute([["woman"] * 10], GENDERS, n_bootstrap=50, seed=0)
    assert out["ci"]["tvd"] == pytest.approx([0.5, 0.5])
    assert out["ci"]["entropy"] == pytest.approx([0.0, 0.0])
