"""Toy evaluation: attribute-prompt obedience one prompt at a time, the base gates, the results block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from t2i_debias.core.vocab import STATUS_AMBIGUOUS
from t2i_debias.labels.base import Prediction

ROOT = Path(__file__).resolve().parents[1]


def _p(gender, skin):
    return Prediction(gender=gender, race=skin, extra={"skin": skin, "occupation": "doctor"})


def test_attribute_prompts_cover_each_gender_alone_and_with_each_skin_tone():
    from t2i_debias.toyworld.evaluate import attribute_prompts
    from t2i_debias.toyworld.render import OCCUPATIONS

    rows = attribute_prompts()
    assert len(rows) == len(OCCUPATIONS) * 2 * 4
    prompts = {r["prompt"] for r in rows}
    assert "a photo of a woman working as a doctor" in prompts
    assert "a photo of an Asian man working as a nurse" in prompts  # article fixed
    assert {r["race"] for r in rows if "Black" in r["prompt"]} == {"black"}


def test_obedience_known_answer_and_a_hybrid_is_not_the_asked_gender():
    from t2i_debias.toyworld.evaluate import obedience

    preds = [_p("woman", "black"), _p("woman", "white"), _p("man", "black"),
             Prediction(status=STATUS_AMBIGUOUS, extra={"skin": "black", "hair": "woman", "clothes": "man"})]
    row = obedience(preds, "woman", "black")
    assert row == {"n": 4, "gender_ok": 0.5, "ambiguous": 0.25, "skin_ok": 0.75}
    assert obedience(preds, "man", None)["skin_ok"] is None
    with pytest.raises(ValueError, match="at least one"):
        obedience([], "man", None)


def _score(gender_ok=1.0, skin_ok=1.0, amb=0.0, tvd_men=0.9):
    from t2i_debias.toyworld.evaluate import ToyScore

    s = ToyScore(male_share={"doctor": tvd_men, "nurse": 1 - tvd_men},
                 gender_tvd={"doctor": abs(tvd_men - 0.5), "nurse": abs(tvd_men - 0.5)},
                 ambiguous_rate={"doctor": 0.0, "nurse": amb})
    s.attribute = [{"prompt": "a photo of a woman working as a doctor", "occupation": "doctor", "gender": "woman",
                    "race": None, "gender_ok": 1.0, "skin_ok": None},
                   {"prompt": "a photo of a Black woman working as a nurse", "occupation": "nurse", "gender": "woman",
                    "race": "black", "gender_ok": gender_ok, "skin_ok": skin_ok}]
    return s


def test_base_gates_known_answers():
    from t2i_debias.toyworld.evaluate import check_base_gates, obedience_by_occupation

    assert check_base_gates(_score()) == []
    assert check_base_gates(_score(tvd_men=0.75))[0].startswith("neutral prompt mean gender tvd 0.250 < 0.3")
    fails = check_base_gates(_score(gender_ok=0.89, skin_ok=0.79, amb=0.11))
    assert len(fails) == 3
    assert "'a photo of a Black woman working as a nurse': asked gender 0.89 < 0.9" in fails
    assert "'a photo of a Black woman working as a nurse': asked skin tone 0.79 < 0.8" in fails
    assert "nurse: ambiguous rate 0.11 > 0.1" in fails
    assert check_base_gates(_score(gender_ok=0.9, skin_ok=0.8, amb=0.1)) == []  # bounds are inclusive
    by_occ = obedience_by_occupation(_score(gender_ok=0.5).attribute)
    assert by_occ["nurse"] == {"min_gender_ok": 0.5, "min_skin_ok": 1.0}
    assert np.isnan(by_occ["doctor"]["min_skin_ok"])
    empty = _score()
    empty.attribute = []
    assert "no attribute prompt was scored" in check_base_gates(empty)


def test_replace_block_between_markers():
    from t2i_debias.toyworld.evaluate import README_BEGIN, README_END, replace_block

    text = f"intro\n{README_BEGIN}\nold\n{README_END}\nafter\n"
    assert replace_block(text, "new\n") == f"intro\n{README_BEGIN}\nnew\n{README_END}\nafter\n"
    with pytest.raises(ValueError, match="expected one"):
        replace_block("no markers", "x")


def test_readme_block_is_what_the_script_writes_from_the_committed_results():
    """The toy README's base numbers come from docs/results/toy_base.json, never typed by hand."""
    from t2i_debias.toyworld.evaluate import README_BEGIN, README_END, replace_block, results_markdown

    res = json.loads((ROOT / "docs" / "results" / "toy_base.json").read_text())
    readme = (ROOT / "t2i_debias" / "toyworld" / "README.md").read_text()
    assert replace_block(readme, results_markdown(res)) == readme
    assert README_BEGIN in readme and README_END in readme
    assert set(res["seeds"]) == {"0", "1", "2"}  # every shipped base, measured as shipped
    assert results_markdown(res) in (ROOT / "docs" / "results" / "toy_base.md").read_text()


def test_merge_results_joins_seeds_of_one_recipe_only():
    from t2i_debias.toyworld.evaluate import merge_results

    a = {"recipe": {"s": 1}, "eval": {"n": 64}, "gates": {}, "builds": {}, "seeds": {"1": {"x": 1}}}
    b = {"recipe": {"s": 1}, "eval": {"n": 64}, "gates": {}, "builds": {}, "seeds": {"0": {"x": 0}}}
    merged = merge_results([a, b])
    assert list(merged["seeds"]) == ["0", "1"] and a["seeds"] == {"1": {"x": 1}}  # inputs untouched
    with pytest.raises(ValueError, match="recipe"):
        merge_results([a, {**b, "recipe": {"s": 2}}])
    with pytest.raises(ValueError, match="two results"):
        merge_results([a, a])


def test_a_baseline_is_prepared_for_every_toy_occupation_before_it_generates():
    """UCE and debiasVL edit for the occupations they are told of: scoring must name all of them, not the
    first prompt's (Method.generate prepares with the occupations of its first call otherwise)."""
    from PIL import Image

    from t2i_debias.baselines.base import Method
    from t2i_debias.toyworld.evaluate import _generate
    from t2i_debias.toyworld.render import OCCUPATIONS

    class Recorder(Method):
        def prepare(self, occupations):
            self.told = list(occupations)
            self.prepared = True

        def _generate(self, prompts, occupations, seeds, gen):
            return [Image.new("RGB", (4, 4)) for _ in prompts]

    m = Recorder(pipe=None)
    ims = _generate(m, ["a photo of a doctor"] * 3, ["doctor"] * 3, [0, 1, 2], 2, 1, 4.0)
    assert len(ims) == 3 and m.told == list(OCCUPATIONS)


def test_paired_gender_tvd_is_model_minus_reference_on_the_first_n_seeds():
    from t2i_debias.toyworld.evaluate import paired_gender_tvd
    from t2i_debias.toyworld.render import MPII_OCCUPATIONS

    balanced = {o: [0, 1] * 8 for o in MPII_OCCUPATIONS}  # 16 images, half men: tvd 0
    all_men = {o: [0] * 32 for o in MPII_OCCUPATIONS}  # 32 images (the first 16 pair), all men: tvd 0.5
    res = paired_gender_tvd(all_men, balanced)
    assert res["diff"] == -0.5 and res["ci"][1] < 0  # the model is less biased than the reference
    same = paired_gender_tvd(balanced, balanced)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0]
