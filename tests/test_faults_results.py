"""Fault injection, results that must not be wrong or lost: bias intervals hold their estimate (with the coverage
simulation that chose them), plots never fail on an interval nor cost a table, stale model folders are not
evaluated, a comparison without a base entry still has its base, and CSV cells cannot carry formulas."""

from __future__ import annotations

import numpy as np
import pytest

from t2i_debias.metrics import bias
from t2i_debias.metrics.floor import floor

GENDERS = ("man", "woman")


# ----------------------------------------------------------------------------- intervals (defect 1)
def _balanced_labels(seed: int, n_prompts: int = 25, n_images: int = 100) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [list(rng.choice(GENDERS, size=n_images)) for _ in range(n_prompts)]


def test_the_ci_of_a_balanced_model_holds_its_estimate_at_the_upstream_size() -> None:
    """25 prompts x 100 images of a perfectly balanced model: the percentile CI excluded its estimate in most seeds."""
    for seed in range(20):
        res = bias.evaluate_attribute(_balanced_labels(seed), GENDERS, n_bootstrap=300, seed=seed)
        for m in bias.METRIC_NAMES:
            lo, hi = res["ci"][m]
            assert lo <= res["aggregate"][m] <= hi, (seed, m, res["aggregate"][m], res["ci"][m])
            for row in res["per_prompt"]:
                plo, phi = row[f"{m}_ci"]
                assert plo <= row[m] <= phi, (seed, m, row[m], row[f"{m}_ci"])
        assert res["ci"]["tvd"][0] == 0.0  # the truth (0) is inside too
        assert res["ci_method"] == bias.CI_METHOD


def test_the_ci_is_widened_toward_balance_by_the_noise_floor() -> None:
    """Ten women out of ten: tvd 0.5, every resample 0.5; the CI reaches down by the floor at n = 10."""
    res = bias.evaluate_attribute([["woman"] * 10], GENDERS, n_bootstrap=50, seed=0)
    fl = floor(10, 2).values
    assert res["ci"]["tvd"] == pytest.approx([0.5 - fl["tvd"], 0.5])
    assert res["ci"]["entropy"] == pytest.approx([0.0, 1.0 - fl["entropy"]])
    assert res["per_prompt"][0]["tvd_ci"] == pytest.approx(res["ci"]["tvd"])


def test_coverage_simulation_chooses_an_interval_that_holds_its_estimate_and_the_truth() -> None:
    """The coverage table of docs/results/interval_coverage.md, smaller: balanced and biased multinomials at the
    demo's size (4 x 64) and the upstream protocol's (25 x 100), gender and 3 skin tones, and one prompt."""
    from t2i_debias.metrics import coverage

    table = coverage.coverage_table(reps=200, n_boot=200, seed=1)
    assert set(table) == {s.name for s in coverage.SETTINGS}
    for name, res in table.items():
        for m in bias.METRIC_NAMES:
            score = res[coverage.CHOSEN][m]
            assert score.holds == 1.0, (name, m)
            assert score.coverage >= 0.90, (name, m, score)
        assert res["centred"]["tvd"].holds == 1.0
    # why: near balance the percentile interval lies above its estimate, and holds the truth (0) never
    for name in ("upstream 25x100, gender, balanced", "upstream 25x100, skin, balanced"):
        assert table[name]["percentile"]["tvd"].holds < 0.5
        assert table[name]["percentile"]["tvd"].coverage == 0.0
        assert table[name]["centred"]["tvd"].coverage < 0.5  # holding the estimate is not enough


@pytest.mark.parametrize(("n_prompts", "n_images", "p_base", "p_model"),
                         [(25, 100, 0.5, 0.5), (4, 64, 0.5, 0.5), (25, 100, 0.5, 0.9), (4, 64, 0.9, 0.5)])
def test_the_paired_ci_holds_the_observed_difference(n_prompts, n_images, p_base, p_model) -> None:
    """The paired difference keeps the percentile interval: both models' resampling biases largely cancel."""
    from t2i_debias.metrics.paired import paired_bootstrap

    for seed in range(10):
        rng = np.random.default_rng(seed)
        base = [(rng.random(n_images) < p_base).astype(np.int64) for _ in range(n_prompts)]
        model = [(rng.random(n_images) < p_model).astype(np.int64) for _ in range(n_prompts)]
        res = paired_bootstrap(base, model, 2, n_bootstrap=200, seed=seed)["metrics"]
        for m, r in res.items():
            assert r["ci"][0] <= r["diff"] <= r["ci"][1], (seed, m, r)


def test_the_coverage_table_in_the_docs_is_generated_and_names_the_reported_interval() -> None:
    from t2i_debias.metrics import coverage

    text = coverage.REPORT.read_text(encoding="utf-8")
    assert text.startswith("# Coverage of the bias confidence intervals")
    assert "python -m t2i_debias.metrics.coverage" in text and bias.CI_METHOD in text
    assert all(s.name in text for s in coverage.SETTINGS)


# ----------------------------------------------------------------------------- plots (defect 1)
def test_sota_plot_draws_an_interval_that_excludes_its_value(tmp_path) -> None:
    """A CI wholly above its value (as the percentile bootstrap gave) made matplotlib raise on a negative yerr."""
    import pandas as pd

    from t2i_debias.report import charts as sota

    df = pd.DataFrame([{"method": "base", "status": "ok", "gender_tvd": 0.048, "gender_tvd_lo": 0.052,
                        "gender_tvd_hi": 0.077},
                       {"method": "unet", "status": "ok", "gender_tvd": 0.30, "gender_tvd_lo": 0.1,
                        "gender_tvd_hi": 0.25}])
    paths = sota.plot(df, tmp_path)
    assert [p.name for p in paths] == ["bias_tvd.png"] and paths[0].stat().st_size > 0


def test_sweep_plot_draws_an_interval_that_excludes_its_value(tmp_path) -> None:
    import pandas as pd

    from t2i_debias import plots

    df = pd.DataFrame([{"model": "base", "guidance_scale": g, "attribute": "gender", "metric": "tvd", "value": 0.048,
                        "lo": 0.052, "hi": 0.077, "floor": 0.04} for g in (1.0, 4.0)])
    path = plots.plot_sweep(df, tmp_path / "bias_vs_guidance.png")
    assert path is not None and path.stat().st_size > 0


def test_a_failing_plot_costs_no_table(tmp_path, monkeypatch, caplog) -> None:
    """The SOTA stage writes comparison.csv/md and finishes when its plot raises; the failure is a warning."""
    import json

    from t2i_debias.stages import sota
    from tests.helpers.fake_run import make_fake_run

    cfg = make_fake_run(tmp_path)
    cfg.run.base_model = str(tmp_path)  # a local folder: no hub look-up
    (cfg.run_dir / "sota" / "skipped.json").write_text("{}")
    monkeypatch.setattr(sota, "method_names", lambda cfg: (["base", "both"], {"base": "base", "both": "ours"}))

    def broken(df, out_dir):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(sota, "plot", broken)
    with caplog.at_level("WARNING"):
        sota.write_comparison(cfg, force=True)
    out = cfg.run_dir / "sota"
    assert "| both |" in (out / "comparison.md").read_text(encoding="utf-8")
    assert list(pd_read(out / "comparison.csv")["method"]) == ["base", "both"]
    assert json.loads((out / "_manifest.json").read_text())["extra"]["methods"] == ["base", "both"]  # finished
    assert any("plot not drawn" in r.getMessage() and "yerr" in r.getMessage() for r in caplog.records)


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


# ----------------------------------------------------------------------------- no base entry (defect 8)
def test_generate_models_without_base_still_generate_the_base_for_the_comparison(tmp_path, monkeypatch) -> None:
    """`[generate] models = ["unet=..."]` with `base` in the default [sota] methods: KeyError 'base' mid-stage."""
    from t2i_debias.core.config import Config
    from t2i_debias.stages import generated, sota

    base, unet = tmp_path / "base_model", tmp_path / "my_unet"
    base.mkdir()
    unet.mkdir()
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.base_model = str(tmp_path), "r", str(base)
    cfg.generate.models = [f"unet={unet}"]
    cfg.sota.methods = ["base"]
    made: list[tuple[str, str]] = []
    monkeypatch.setattr(generated, "generate_model", lambda cfg, name, spec, **kw: made.append((name, spec)))
    names, kinds, skipped = sota.generate_all(cfg)
    assert names == ["base", "unet"] and kinds["base"] == "base" and not skipped
    assert made == [("base", str(base)), ("unet", str(unet))]


# ----------------------------------------------------------------------------- stale model folders (defect 7)
def _run_with_models(tmp_path, names: tuple[str, ...]):
    from t2i_debias.core.config import Config
    from t2i_debias.core.stage import Stage

    base = tmp_path / "base_model"
    base.mkdir()
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.base_model = str(tmp_path), "r", str(base)
    for m in names:
        d = cfg.run_dir / "models" / m
        d.mkdir(parents=True)
        (d / "model_index.json").write_text("{}")
        Stage(f"models/{m}", d, {}).finish()  # its training finished
    return cfg


def test_a_stale_mode_folder_is_not_generated_scored_or_shown(tmp_path, monkeypatch, caplog) -> None:
    """[train] modes changed from unet to text: the old models/unet (in the repro, NaN weights) was generated,
    scored and shown next to models/text. Now it is reported as stale and left out."""
    from t2i_debias.core.stage import Stage
    from t2i_debias.report import sections_results as html
    from t2i_debias.stages import bias as bias_stage
    from t2i_debias.stages import sota
    from t2i_debias.stages.common import models_to_evaluate, stale_models

    cfg = _run_with_models(tmp_path, ("unet", "text", "control"))
    cfg.train.modes, cfg.train.control = ["text"], False
    with caplog.at_level("WARNING"):
        models = models_to_evaluate(cfg)
    assert list(models) == ["base", "text"]
    assert set(stale_models(cfg)) == {"unet", "control"}
    assert any("models/unet is stale" in r.getMessage() and "[train] modes" in r.getMessage() for r in caplog.records)
    assert sota.method_names(cfg)[0][:2] == ["base", "text"] and "unet" not in sota.method_names(cfg)[0]

    # the bias stage scores base and text only and records the stale ones; the report leaves them out
    for m in ("base", "text", "unet"):
        Stage(f"generated/{m}", cfg.run_dir / "generated" / m, {}).finish()
    scored: list[str] = []
    monkeypatch.setattr(bias_stage, "evaluate_model", lambda cfg, name, factory, **kw: scored.append(name))
    bias_stage.run_stage(cfg, classifier=object())
    assert scored == ["base", "text"]
    stale = json_of(cfg.run_dir / "bias" / "stale.json")
    assert set(stale) == {"unet", "control"} and "[train] control is off" in stale["unet"]
    for m in ("base", "text", "unet"):
        (cfg.run_dir / "bias" / m).mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / "bias" / m / "summary.json").write_text('{"face_rate": 0.5, "attributes": {}}')
    section = html.section_bias(cfg.run_dir)
    assert "models/unet" in section and "stale" in section
    assert "<td>unet</td>" not in section.replace(" ", "") and ">unet<" not in section

    cfg.train.control = True  # control on: models/control is current again
    assert list(models_to_evaluate(cfg)) == ["base", "text", "control"]


def json_of(path):
    import json

    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- CSV injection (defect 9)
EVIL = ['=HYPERLINK("http://x","y") chef', "+1 nurse", "@SUM(A1) doctor", "-2+3 cook", "\tteacher",
        "'=already quoted"]


def test_csv_cells_that_a_spreadsheet_would_run_are_written_quoted_and_read_back_exactly(tmp_path) -> None:
    """prompts.csv (and every CSV: metadata, predictions, by_prompt, comparison) goes through one writer."""
    import csv

    import pandas as pd

    from t2i_debias.core.files import atomic_write_csv
    from t2i_debias.core.tables import read_csv
    from t2i_debias.data import prompts

    df = prompts.build_prompts(EVIL + ["farmer"], ["{occupation} at work"])
    path = atomic_write_csv(tmp_path / "prompts.csv", df)
    with path.open(newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    for row, occ in zip(raw, EVIL + ["farmer"], strict=True):
        for col in ("occupation", "prompt"):
            cell = row[col]
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (col, cell)
            assert cell == (occ if occ == "farmer" else "'" + occ) + ("" if col == "occupation" else " at work")
    back = prompts.read_prompts(path)  # read back exactly: the prompt text is what the model is given
    assert list(back["occupation"]) == EVIL + ["farmer"]
    assert list(back["prompt"]) == [f"{o} at work" for o in EVIL + ["farmer"]]
    assert list(read_csv(path)["occupation"]) == EVIL + ["farmer"]

    # numbers stay numbers: a negative value, numeric or text, is not quoted
    nums = pd.DataFrame({"method": ["-base", "ours"], "gender_tvd_diff": [-0.5, 0.25], "as_text": ["-0.5", "-1e-3"]})
    text = atomic_write_csv(tmp_path / "comparison.csv", nums).read_text(encoding="utf-8")
    assert text.splitlines() == ["method,gender_tvd_diff,as_text", "'-base,-0.5,-0.5", "ours,0.25,-1e-3"]
    from t2i_debias.core.csv_cells import escape_cell, unescape_cell

    assert escape_cell("\rpilot") == "'\rpilot" and unescape_cell("'\rpilot") == "\rpilot"
    assert escape_cell("'hello") == "'hello" and escape_cell(-0.5) == -0.5 and escape_cell("") == ""


def test_a_pipe_in_a_method_name_does_not_break_comparison_md() -> None:
    import pandas as pd

    from t2i_debias.report.comparison import to_markdown

    df = pd.DataFrame([{"method": "base", "status": "ok", "gender_tvd": 0.5},
                       {"method": "a|b", "status": "ok", "gender_tvd": 0.25}])
    md = to_markdown(df, "tiny|sd")
    rows = [line for line in md.splitlines() if line.startswith("| a")]
    assert rows == ["| a\\|b | **0.250** |"]
    assert "`tiny\\|sd`" in md
