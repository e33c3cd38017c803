"""The README's toy table comes from a results file: the committed README matches the committed file, and
the script writes exactly toy/summary.md's table with the commit and config hash beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias.core.config import Config
from t2i_debias.report.readme_block import current_block
from t2i_debias.stages.results import config_hash
from t2i_debias.stages.results import run_stage as results_stage
from t2i_debias.toyworld import readme_block as rb
from t2i_debias.toyworld.render import OCCUPATIONS, TOY_RACES
from t2i_debias.toyworld.summary import format_table

ROOT = Path(__file__).resolve().parents[1]


def test_committed_readme_block_equals_what_the_script_writes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    want = rb.expected_block(ROOT / rb.DEFAULT_RESULTS, rb.DEFAULT_RESULTS.as_posix())
    assert current_block(readme, "README", rb.BEGIN, rb.END) == want, (
        "README's toy table differs from docs/results/toy_seed0.json: run "
        "`python -m t2i_debias.toyworld.readme_block --from docs/results/toy_seed0.json`")


def test_committed_readme_method_table_equals_what_the_ablation_writes():
    from tests.helpers.scripts import load_script

    ablation = load_script("scripts/ablation.py")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    want = ablation.readme_block(ROOT / "docs" / "results" / "ablation.csv")
    assert current_block(readme, "README", ablation.README_BEGIN, ablation.README_END) == want, (
        "README's method table differs from docs/results/ablation.csv: run `python scripts/ablation.py --report`")
    for name in ablation.README_ROWS.values():  # every row the issue asks for, on the tuning seeds
        assert sum(f"| {name} |" in line for line in want.splitlines()) >= len(ablation.TUNING_SEEDS), name


def _summary_df() -> pd.DataFrame:
    """A synthetic toy/summary.csv (the columns summary_table writes), with a missing value."""
    rows = []
    for i, model in enumerate(("base", "control", "both", "uce")):
        row = {"model": model}
        for j, occ in enumerate(OCCUPATIONS):
            row[f"male_{occ}"] = round(0.9 - 0.1 * i - 0.05 * j, 4)
            for k, r in enumerate(TOY_RACES):
                row[f"{r}_{occ}"] = [0.5, 0.3, 0.2][k]
        row.update(gender_tvd=0.4 - 0.05 * i, race_tvd=0.2, occupation_acc=1.0 - 0.1 * i, toy_fid=1.25 + i,
                   attr_gender_min=None if model == "uce" else 0.875, attr_skin_min=0.75)
        rows.append(row)
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("gender_tvd") + 1, "gender_tvd_change", df["gender_tvd"] / 0.4 - 1)
    return df


def _cfg(tmp_path: Path) -> Config:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path / "runs"), "toy"
    cfg.toy.enabled, cfg.toy.seed, cfg.generate.images_per_prompt = True, 0, 64
    cfg.source = "configs/toy.toml"
    return cfg


def test_block_is_summary_md_with_provenance(tmp_path):
    cfg = _cfg(tmp_path)
    df = _summary_df()
    csv = tmp_path / "summary.csv"
    df.to_csv(csv, index=False)
    res = rb.results_from_summary(csv, cfg.source, config_hash(cfg), cfg.toy.seed, cfg.generate.images_per_prompt)
    assert res["rows"][3]["attr_gender_min"] is None and res["toy_seed"] == 0
    assert res["config_hash"] == config_hash(cfg) and res["commit"] != ""
    results = tmp_path / "toy_seed0.json"
    results.write_text(json.dumps(res))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{rb.BEGIN}\nold numbers 0.19\n{rb.END}\n\nafter\n")

    assert rb.main(["--from", str(results), "--readme", str(readme), "--check"]) == 1
    assert rb.main(["--from", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    block = current_block(text, "README", rb.BEGIN, rb.END)
    assert format_table(df) in block  # digit for digit toy/summary.md
    assert "| both | 0.70 | 0.65 |" in block and "| uce |" in block and "n/a" in block and "-12%" in block
    assert f"commit `{res['commit']}`" in block and f"hash `{res['config_hash']}`" in block
    assert "config `configs/toy.toml`" in block and "old numbers" not in text
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert rb.main(["--from", str(results), "--readme", str(readme), "--check"]) == 0  # idempotent
    readme.write_text(text.replace("| both | 0.70", "| both | 0.71"))
    assert rb.main(["--from", str(results), "--readme", str(readme), "--check"]) == 1


def test_config_hash_ignores_where_the_run_lives(tmp_path):
    a, b = _cfg(tmp_path), _cfg(tmp_path / "elsewhere")
    b.run.name = "other"
    assert config_hash(a) == config_hash(b)
    b.toy.seed = 1
    assert config_hash(a) != config_hash(b)


def test_bad_inputs_are_named(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    results = tmp_path / "r.json"
    assert rb.main(["--from", str(results), "--readme", str(readme)]) == 2
    assert "not found: run `make demo`" in capsys.readouterr().err
    results.write_text(json.dumps({"version": 1, "commit": "x", "config_hash": "y", "columns": ["model"],
                                   "rows": [{"model": "base"}]}))
    assert rb.main(["--from", str(results), "--readme", str(readme)]) == 2
    assert "needs exactly one <!-- toy-results:begin -->" in capsys.readouterr().err
    results.write_text("{")
    assert rb.main(["--from", str(results), "--readme", str(readme)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert rb.git_commit(tmp_path) == "unknown"  # not a git checkout


def test_results_stage_writes_the_file_the_readme_reads(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    (cfg.run_dir / "toy").mkdir(parents=True)
    _summary_df().to_csv(cfg.run_dir / "toy" / "summary.csv", index=False)
    results_stage(cfg)
    out = cfg.run_dir / "results" / "toy_seed0.json"
    res = rb.load_results(out)
    assert [r["model"] for r in res["rows"]] == ["base", "control", "both", "uce"]
    assert "cp " in capsys.readouterr().out
    mtime = out.stat().st_mtime_ns
    results_stage(cfg)  # complete: skipped
    assert out.stat().st_mtime_ns == mtime
    other = _cfg(tmp_path / "plain")
    other.toy.enabled = False
    results_stage(other)  # not a toy run: nothing to write, no error
    assert not (other.run_dir / "results").exists()
    with pytest.raises(rb.ReadmeError, match="no model rows"):
        (tmp_path / "empty.csv").write_text("model,gender_tvd\n")
        rb.results_from_summary(tmp_path / "empty.csv", cfg.source, config_hash(cfg), 0, 64)
