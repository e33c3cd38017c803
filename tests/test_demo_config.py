"""`make demo`'s own config, end to end, inside `make test`: configs/toy.toml through every stage on the
shipped seed-0 toy models, as `make demo` runs it (finetune/finetune_sd.py), with only the run folder
moved and the sizes cut (images per prompt, triplets, training steps, bootstrap and UCE rounds). If
`make demo` would fail on a config name, a stage or a plot, this test fails the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# Sizes only: what `make demo` runs at full size (configs/toy.toml), cut to fit CI's 2 cores.
SIZES = ["--generate.images_per_prompt", "8", "--bias.sweep_images_per_prompt", "8", "--bias.n_bootstrap", "50",
         "--augment.max_triplets", "48", "--train.max_train_steps", "12", "--sota.uce_iterations", "2",
         "--sota.uce_samples", "4"]


def test_make_demos_config_runs_every_stage(tmp_path: Path, monkeypatch, capsys) -> None:
    from t2i_debias.pipeline import STAGES
    from tests.helpers.scripts import load_script

    finetune_sd = load_script("finetune/finetune_sd.py")

    monkeypatch.chdir(ROOT)  # as `make demo` runs it; only the run folder and the toy data move
    data = tmp_path / "runs" / "toy-data"
    finetune_sd.main(["--config", str(ROOT / "configs" / "toy.toml"), "--root", str(tmp_path / "runs"),
                      "--mpii.mat_file", str(data / "mpii_human_pose_v1_u12_1.mat"),
                      "--mpii.images_dir", str(data / "images"), *SIZES])
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "toy"
    for i, (name, _) in enumerate(STAGES, 1):
        assert f"[{i}/{len(STAGES)}] {name}" in out, f"stage {name} did not report"
    assert (run / "report.html").is_file()
    summary = pd.read_csv(run / "toy" / "summary.csv")
    assert {"base", "unet", "control"} <= set(summary["model"])
    assert summary["heldout_gender_tvd"].notna().all()  # pilot and teacher, evaluated apart
    prompts = pd.read_csv(run / "prompts.csv")
    assert set(prompts.loc[prompts["split"] == "heldout", "occupation"]) == {"pilot", "teacher"}
    sweep = pd.read_csv(run / "sweep" / "sweep.csv")
    assert set(sweep["model"]) == {"base", "unet"}
    assert (run / "sota" / "comparison.md").is_file()
    results = json.loads((run / "results" / "toy_seed0.json").read_text())
    assert results["rows"]
