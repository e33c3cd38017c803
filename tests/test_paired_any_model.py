"""The paired comparison against any model (DESIGN.md §3) and the SOTA table's Δ against ours (§5), by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from t2i_debias.core.vocab import GENDERS
from t2i_debias.metrics.bias import METRIC_NAMES
from t2i_debias.metrics.paired import NOT_COMPUTED
from t2i_debias.metrics.summary import paired_comparison, summarize
from t2i_debias.report.comparison import NO_OURS, OURS_COLUMN, comparison_rows, ours_name, to_markdown

PROMPTS = ("p0", "p1", "p2", "p3")
SEEDS = tuple(range(10))
GENDER_ONLY = {"gender": GENDERS}
MAN, WOMAN = GENDERS.index("man"), GENDERS.index("woman")


def _pred(model: str, gender_of_seed) -> pd.DataFrame:
    """predictions.csv rows of `model`: every (prompt, seed) a face with gender `gender_of_seed(seed)`."""
    return pd.DataFrame([{"model": model, "prompt_id": p, "occupation": p, "prompt": f"a photo of a {p}", "seed": s,
                          "file": f"images/{p}/{s}.png", "status": "ok", "gender": gender_of_seed(s)}
                         for p in PROMPTS for s in SEEDS])


def balanced() -> pd.DataFrame:
    """Ours: exactly half men in every prompt (gender tvd 0)."""
    return _pred("unet", lambda s: GENDERS[s % 2])


def all_men(model: str) -> pd.DataFrame:
    """A model that draws only men (gender tvd ½ in every prompt and every resample)."""
    return _pred(model, lambda s: GENDERS[MAN])


def test_baseline_all_men_against_balanced_ours_is_half_more_biased():
    out = paired_comparison(all_men("uce"), balanced(), GENDER_ONLY, n_bootstrap=400, seed=0, against="unet")
    assert out["against"] == "unet" and out["n_pairs"] == len(PROMPTS) * len(SEEDS)
    tvd = out["attributes"]["gender"]["tvd"]
    assert tvd["diff"] == pytest.approx(0.5)  # ½ − 0
    lo, hi = tvd["ci"]
    assert 0 < lo <= hi <= 0.5 + 1e-12  # each resample: ½ − tvd*(ours) with tvd*(ours) ≥ 0; excludes 0
    assert tvd["verdict"] == "more biased" and tvd["p"] == pytest.approx(2 / 401)
    back = paired_comparison(balanced(), all_men("uce"), GENDER_ONLY, n_bootstrap=400, seed=0, against="uce")
    assert back["attributes"]["gender"]["tvd"]["diff"] == pytest.approx(-0.5)
    assert back["attributes"]["gender"]["tvd"]["verdict"] == "less biased"


def test_identical_predictions_have_zero_difference():
    out = paired_comparison(balanced(), balanced(), GENDER_ONLY, n_bootstrap=200, seed=1, against="unet")
    for m in METRIC_NAMES:
        r = out["attributes"]["gender"][m]
        assert r["diff"] == 0.0 and r["ci"] == [0.0, 0.0] and r["p"] == 1.0
        assert r["verdict"] == "no significant difference"


def test_ours_is_the_last_trained_mode_that_ran():
    kinds = {"base": "base", "text": "ours", "unet": "ours", "control": "control", "uce": "baseline"}
    assert ours_name(list(kinds), kinds, {}) == "unet"
    assert ours_name(list(kinds), kinds, {"unet": "skipped"}) == "text"
    assert ours_name(["base", "uce"], {"base": "base", "uce": "baseline"}, {}) is None


def _run(tmp_path, preds: dict[str, pd.DataFrame]):
    """A run folder with bias/<model>/{predictions.csv, summary.json} as the bias stage writes them."""
    from t2i_debias.core.config import Config

    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "r"
    cfg.run.base_model = str(tmp_path / "base_model")
    (tmp_path / "base_model").mkdir()
    cfg.bias.n_bootstrap = 400
    for name, pred in preds.items():
        d = cfg.run_dir / "bias" / name
        d.mkdir(parents=True)
        pred.to_csv(d / "predictions.csv", index=False)
        _, summary = summarize(pred, GENDER_ONLY, n_bootstrap=50)
        summary["paired_vs_base"] = (None if name == "base" else
                                     paired_comparison(pred, preds["base"], GENDER_ONLY, n_bootstrap=50))
        (d / "summary.json").write_text(json.dumps(summary))
    return cfg


def rows_of(cfg, names: list[str], kinds: dict[str, str]) -> pd.DataFrame:
    """`comparison_rows` with the run config's bias settings, race vocabulary and base model, as the SOTA stage."""
    from t2i_debias.labels.registry import race_classes
    from t2i_debias.models import base_model, model_name

    return comparison_rows(cfg.run_dir, names, {}, kinds, bias=cfg.bias, seed=cfg.run.seed,
                           race_classes=race_classes(cfg.labels.backend, cfg.analysis.race_classes),
                           base_model=model_name(cfg.run), base_model_path=base_model(cfg))


def test_comparison_table_and_csv_carry_delta_against_ours(tmp_path):
    from t2i_debias.report.sections_sota import sota_table

    cfg = _run(tmp_path, {"base": all_men("base"), "unet": balanced(), "uce": all_men("uce")})
    names, kinds = ["base", "unet", "uce"], {"base": "base", "unet": "ours", "uce": "baseline"}
    df = rows_of(cfg, names, kinds)
    df.to_csv(tmp_path / "comparison.csv", index=False)
    csv = pd.read_csv(tmp_path / "comparison.csv")
    back = csv.set_index("method")
    assert (back[OURS_COLUMN] == "unet").all()
    for row in ("uce", "base"):  # both draw only men: Δ(row − ours) = +½, significantly more biased
        r = back.loc[row]
        assert r["gender_tvd_vs_ours"] == pytest.approx(0.5)
        assert 0 < r["gender_tvd_vs_ours_lo"] <= r["gender_tvd_vs_ours_hi"] <= 0.5 + 1e-12
        assert r["gender_tvd_vs_ours_verdict"] == "more biased"
    assert back.loc["unet", "gender_tvd_diff"] == pytest.approx(-0.5)  # the Δ against the base is still there
    assert pd.isna(back.loc["unet", "gender_tvd_vs_ours"])  # ours is not paired with itself

    md = to_markdown(df, "base_model")
    ours_part = md.split("## Paired comparison against ours (unet)")[1]
    assert "Δ = method − unet" in ours_part
    lo, hi = (f"{back.loc['uce', f'gender_tvd_vs_ours_{k}']:+.3f}" for k in ("lo", "hi"))
    assert f"| uce | +0.500 [{lo}, {hi}] p=0.00499 ✗ |" in ours_part
    assert "| unet |" not in ours_part
    html = sota_table(csv)
    assert "Δ vs unet +0.5" in html and "method − ours (unet)" in html


def test_without_ours_the_column_says_not_computed(tmp_path):
    from t2i_debias.report.sections_sota import sota_table

    cfg = _run(tmp_path, {"base": all_men("base"), "uce": balanced()})
    df = rows_of(cfg, ["base", "uce"], {"base": "base", "uce": "baseline"})
    assert df[OURS_COLUMN].isna().all()
    assert (df["gender_tvd_vs_ours_verdict"] == NOT_COMPUTED).all() and df["gender_tvd_vs_ours"].isna().all()
    assert df.set_index("method").loc["uce", "gender_tvd_diff"] == pytest.approx(-0.5)
    md = to_markdown(df, "base_model")
    assert "## Paired comparison against ours\n\n" + NO_OURS in md
    assert NO_OURS in sota_table(df)
