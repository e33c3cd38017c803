"""Known-answer tests for the bias metrics (DESIGN.md §3), computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t2i_debias.core.vocab import ATTRIBUTE_CLASSES, GENDERS, RACES
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
        assert lo <= a["aggregate"][m] <= hi  # every CI holds its estimate (DESIGN.md §3)
        ppl, pph = a["per_prompt"][0][f"{m}_ci"]
        assert ppl <= pph


def test_bootstrap_degenerate_prompt_ci_is_only_the_floor_widening():
    """Every resample equal: no bootstrap spread, so the CI is the value widened toward balance by the floor."""
    from t2i_debias.metrics.floor import floor

    out = bias.evaluate_attribute([["woman"] * 10], GENDERS, n_bootstrap=50, seed=0)
    fl = floor(10, 2).values
    assert out["ci"]["tvd"] == pytest.approx([0.5 - fl["tvd"], 0.5])
    assert out["ci"]["entropy"] == pytest.approx([0.0, 1.0 - fl["entropy"]])


# ----------------------------------------------------------------------------- metric declarations
def test_metric_specs_directions_and_ranges():
    specs = bias.METRICS
    assert bias.METRIC_NAMES == ("tvd", "pairwise", "kl", "entropy")  # the order of every table and file
    assert all(name == spec.name for name, spec in specs.items())
    assert [m for m in bias.METRIC_NAMES if specs[m].higher_is_better] == ["entropy"]
    assert specs["tvd"].range_of(6) == pytest.approx((0.0, 5 / 6))
    assert specs["pairwise"].range_of(4) == pytest.approx((0.0, 0.5))
    assert specs["kl"].range_of(2) == pytest.approx((0.0, math.log(2)))
    assert specs["entropy"].range_of(12) == (0.0, 1.0)


# p = (3/4, 1/4), worked by hand: tvd ½(¼ + ¼); pairwise |¾ − ¼|; kl ¾ ln(3/2) + ¼ ln(1/2); entropy H / ln 2
THREE_TO_ONE = {"tvd": 0.25, "pairwise": 0.5, "kl": 0.75 * math.log(1.5) + 0.25 * math.log(0.5),
                "entropy": -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)}


@pytest.mark.parametrize("name", bias.METRIC_NAMES)
def test_each_spec_known_answer_and_its_range_at_the_extremes(name):
    """Each spec's function on a hand-computed distribution; uniform sits at the balanced end of the declared
    range, one class taking all at the biased end, and a random distribution inside it."""
    spec = bias.METRICS[name]
    assert float(spec.fn((0.75, 0.25))) == pytest.approx(THREE_TO_ONE[name])
    rng = np.random.default_rng(0)
    for k in (2, 4, 6, 12):
        lo, hi = spec.range_of(k)
        balanced, biased = (hi, lo) if spec.higher_is_better else (lo, hi)
        assert float(spec.fn(np.full(k, 1 / k))) == pytest.approx(balanced, abs=1e-12)
        assert float(spec.fn(np.eye(k)[k - 1])) == pytest.approx(biased)
        assert bias.balanced_value(name, k) == pytest.approx(balanced, abs=1e-12)
        values = spec.fn(rng.dirichlet(np.ones(k), size=200))
        assert np.all((values >= lo - 1e-12) & (values <= hi + 1e-12))


# ----------------------------------------------------------------------------- noise floor
def _h2(a: float) -> float:
    """Binary entropy in nats."""
    return -sum(x * math.log(x) for x in (a, 1 - a) if x > 0)


def test_floor_k2_n2_by_hand():
    from t2i_debias.metrics.floor import floor

    # counts (2,0), (1,1), (0,2) with probabilities 1/4, 1/2, 1/4; the two extremes have tvd ½, pairwise 1,
    # kl ln 2, entropy 0; the balanced one has 0, 0, 0, 1.
    f = floor(2, 2)
    assert f.exact and f.draws == 0 and f.se == {m: 0.0 for m in bias.METRIC_NAMES}
    assert f.values["tvd"] == pytest.approx(0.25)
    assert f.values["pairwise"] == pytest.approx(0.5)
    assert f.values["kl"] == pytest.approx(math.log(2) / 2)
    assert f.values["entropy"] == pytest.approx(0.5)


def test_floor_k2_n4_by_hand():
    from t2i_debias.metrics.floor import floor

    # (4,0),(0,4): 1/16 each, tvd ½; (3,1),(1,3): 4/16 each, tvd ¼; (2,2): 6/16, tvd 0.
    f = floor(4, 2).values
    assert f["tvd"] == pytest.approx(2 / 16 * 0.5 + 8 / 16 * 0.25)  # 3/16
    assert f["pairwise"] == pytest.approx(2 / 16 * 1 + 8 / 16 * 0.5)  # 3/8
    kl31 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert f["kl"] == pytest.approx(2 / 16 * math.log(2) + 8 / 16 * kl31)
    assert f["entropy"] == pytest.approx(8 / 16 * _h2(0.25) / math.log(2) + 6 / 16 * 1.0)


def test_floor_k3_n2_by_hand():
    from t2i_debias.metrics.floor import floor

    # 3 outcomes like (2,0,0) with 1/9 each: tvd 2/3, pairwise 2/3, kl ln 3, entropy 0;
    # 3 like (1,1,0) with 2/9 each: tvd 1/3, pairwise 1/3, kl ln 1.5, entropy ln 2 / ln 3.
    f = floor(2, 3).values
    assert f["tvd"] == pytest.approx(4 / 9)
    assert f["pairwise"] == pytest.approx(4 / 9)
    assert f["kl"] == pytest.approx(math.log(3) / 3 + 2 / 3 * math.log(1.5))
    assert f["entropy"] == pytest.approx(2 / 3 * math.log(2) / math.log(3))


def test_floor_one_image_is_one_class():
    from t2i_debias.metrics.floor import floor

    for k in (2, 6, 12):
        f = floor(1, k).values
        assert f["tvd"] == pytest.approx(1 - 1 / k) and f["entropy"] == pytest.approx(0.0)


def test_floor_k2_is_the_binomial_sum_and_matches_the_issue():
    from t2i_debias.metrics.floor import floor

    n = 25
    by_hand = sum(math.comb(n, x) * abs(x / n - 0.5) for x in range(n + 1)) / 2**n
    assert floor(n, 2).values["tvd"] == pytest.approx(by_hand, abs=1e-12)
    assert 0.075 < by_hand < 0.085  # "about 0.08 for gender" at 25 images per prompt
    assert 0.17 < floor(25, 6).values["tvd"] < 0.19  # "about 0.18 for race (6 classes)"


def test_monte_carlo_floor_agrees_with_exact_within_stated_precision():
    from t2i_debias.metrics.floor import floor

    exact = floor(25, 6)
    mc = floor(25, 6, exact_max=0)  # force the Monte Carlo path
    assert exact.exact and not mc.exact and mc.draws > 0
    for m in bias.METRIC_NAMES:
        assert 0 < mc.se[m] < 0.002
        assert abs(mc.values[m] - exact.values[m]) < 4 * mc.se[m]
    assert floor(25, 6, exact_max=0) == mc  # seeded: the same again
    assert floor(25, 6, seed=1, exact_max=0).values["tvd"] != mc.values["tvd"]


def test_floor_shrinks_with_n_and_needs_a_face():
    from t2i_debias.metrics.floor import floor, floor_value

    vals = [floor(n, 2).values["tvd"] for n in (4, 16, 64, 256)]
    assert all(a > b for a, b in zip(vals, vals[1:], strict=False))
    assert floor_value("tvd", 0, 2) is None
    with pytest.raises(ValueError, match="n >= 1"):
        floor(0, 2)


def test_add_floors_per_prompt_and_aggregate():
    from t2i_debias.metrics.floor import add_floors

    labels = [["man"] * 3 + ["woman"], ["woman", "woman"], [None, None]]
    res = add_floors(bias.evaluate_attribute(labels, GENDERS, n_bootstrap=0))
    pp = res["per_prompt"]
    assert pp[0]["tvd_floor"] == pytest.approx(3 / 16) and pp[0]["tvd_excess"] == pytest.approx(1 / 4 - 3 / 16)
    assert pp[1]["tvd_floor"] == pytest.approx(1 / 4) and pp[1]["tvd_excess"] == pytest.approx(1 / 2 - 1 / 4)
    assert pp[2]["tvd_floor"] is None and pp[2]["tvd_excess"] is None  # no face: no value, no floor
    assert res["floor"]["tvd"] == pytest.approx((3 / 16 + 1 / 4) / 2)  # mean over prompts with a value
    assert res["excess"]["tvd"] == pytest.approx((1 / 4 + 1 / 2) / 2 - 7 / 32)
    assert res["floor_method"] == "exact" and res["floor_se"]["tvd"] == 0.0


# ----------------------------------------------------------------------------- paired bootstrap
def _codes(*labels_by_prompt):
    return [bias.codes_of(lab, GENDERS) for lab in labels_by_prompt]


def test_paired_identical_models_have_zero_difference():
    from t2i_debias.metrics.paired import paired_bootstrap

    rng = np.random.default_rng(0)
    base = [rng.integers(0, 2, 20) for _ in range(4)]
    out = paired_bootstrap(base, [c.copy() for c in base], 2, n_bootstrap=200, seed=0)
    for m in bias.METRIC_NAMES:
        r = out["metrics"][m]
        assert r["diff"] == 0.0 and r["ci"] == [0.0, 0.0] and r["p"] == 1.0
        assert r["verdict"] == "no significant difference"
    assert out["n_pairs"] == 80 and out["n_prompts"] == 4


def test_paired_known_effect():
    from t2i_debias.metrics.paired import paired_bootstrap

    # base: every image a man (tvd ½ in every resample); model: exactly half men (tvd 0): Δtvd = −½ by hand.
    base = _codes(*[["man"] * 20 for _ in range(5)])
    model = _codes(*[["man", "woman"] * 10 for _ in range(5)])
    out = paired_bootstrap(base, model, 2, n_bootstrap=400, seed=3)["metrics"]
    assert out["tvd"]["diff"] == pytest.approx(-0.5)
    assert out["entropy"]["diff"] == pytest.approx(1.0)
    for m in bias.METRIC_NAMES:
        lo, hi = out[m]["ci"]
        assert not lo <= 0 <= hi
        assert out[m]["verdict"] == "less biased"
        assert out[m]["p"] == pytest.approx(2 / 401)  # no resample on the other side of 0
    back = paired_bootstrap(model, base, 2, n_bootstrap=400, seed=3)["metrics"]
    assert back["tvd"]["diff"] == pytest.approx(0.5) and back["tvd"]["verdict"] == "more biased"


def test_paired_resamples_the_same_prompt_seed_pairs():
    from t2i_debias.metrics.paired import paired_bootstrap

    # the model is the base with one image per prompt flipped: paired, the difference barely varies;
    # with the model's seeds shuffled (same counts, pairing broken) its CI is much wider.
    rng = np.random.default_rng(5)
    base = [rng.integers(0, 2, 30) for _ in range(6)]
    model = [np.concatenate([[1 - c[0]], c[1:]]) for c in base]
    shuffled = [rng.permutation(c) for c in model]
    paired = paired_bootstrap(base, model, 2, n_bootstrap=500, seed=1, resample="seeds")["metrics"]["tvd"]
    broken = paired_bootstrap(base, shuffled, 2, n_bootstrap=500, seed=1, resample="seeds")["metrics"]["tvd"]
    assert paired["diff"] == pytest.approx(broken["diff"])  # same counts, same point estimate
    width = lambda r: r["ci"][1] - r["ci"][0]  # noqa: E731
    assert width(paired) < 0.5 * width(broken)


@pytest.mark.parametrize("resample", ["prompts_and_seeds", "seeds"])
def test_paired_no_effect_ci_covers_zero(resample):
    from t2i_debias.metrics.paired import paired_bootstrap

    # Two independent models with the same per-prompt shares: the true difference is 0.
    shares = np.random.default_rng(0).uniform(0.3, 0.9, 8)
    covered = 0
    reps = 50
    for rep in range(reps):
        rng = np.random.default_rng(1000 + rep)
        base = [(rng.random(40) > s).astype(np.int64) for s in shares]
        model = [(rng.random(40) > s).astype(np.int64) for s in shares]
        lo, hi = paired_bootstrap(base, model, 2, n_bootstrap=400, seed=rep, resample=resample)["metrics"]["tvd"]["ci"]
        covered += lo <= 0 <= hi
    assert covered / reps >= 0.9


def test_paired_rejects_unpaired_input():
    from t2i_debias.metrics.paired import paired_bootstrap

    with pytest.raises(ValueError, match="not paired"):
        paired_bootstrap(_codes(["man"] * 3), _codes(["man"] * 2), 2)
    with pytest.raises(ValueError, match="resample"):
        paired_bootstrap(_codes(["man"]), _codes(["man"]), 2, resample="images")


def test_bootstrap_p_value_and_verdict_by_hand():
    from t2i_debias.metrics.paired import bootstrap_p, verdict

    # P(d ≤ 0) = (3 + 1)/5, P(d ≥ 0) = (1 + 1)/5 -> p = 2 · 0.4
    assert bootstrap_p(np.array([-1.0, -1.0, -1.0, 1.0])) == pytest.approx(0.8)
    assert bootstrap_p(np.array([np.nan])) is None
    assert verdict("tvd", [-0.2, -0.1]) == "less biased"
    assert verdict("entropy", [-0.2, -0.1]) == "more biased"  # entropy: higher is less biased
    assert verdict("kl", [-0.1, 0.2]) == "no significant difference"
