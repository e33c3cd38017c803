"""End to end: `finetune/finetune_sd.py --config configs/smoke.toml` on an MPII fixture runs every stage,
writes every file of DESIGN.md §6 with a manifest, and a rerun skips every stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from t2i_debias.core.config import load_config
from t2i_debias.data.mpii_fixture import smoke_fixture, write_fixture
from t2i_debias.pipeline import STAGES, TOY_ONLY

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "finetune" / "finetune_sd.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def test_smoke_pipeline_runs_every_stage_and_resumes(tmp_path: Path, activities_csv: Path) -> None:
    mat, images = write_fixture(tmp_path / "data", smoke_fixture(activities_csv, n_images=8, seed=1))
    run_dir = tmp_path / "runs" / "smoke"
    args = ["--config", str(ROOT / "configs" / "smoke.toml"), "--run_dir", str(run_dir),
            "--mpii.mat_file", str(mat), "--mpii.images_dir", str(images),
            "--prompts.occupations", str(ROOT / "configs" / "smoke_occupations.txt")]
    log = _run(args, tmp_path)
    assert "pipeline finished" in log

    for rel in ("config.toml", "mpii/persons.csv", "labels/labels.csv", "analysis/summary.json",
                "analysis/by_occupation.csv", "enriched/metadata.jsonl", "prompts.csv",
                "sota/comparison.csv", "sota/comparison.md", "report.html"):
        assert (run_dir / rel).is_file(), rel
    for folder in ("mpii", "labels", "analysis", "enriched", "models/text", "models/unet", "models/both",
                   "generated/base", "generated/both", "bias/base", "bias/both", "quality", "sota", "report"):
        manifest = json.loads((run_dir / folder / "_manifest.json").read_text())
        assert manifest["config_hash"] and manifest["versions"]["torch"], folder
    # every person is accounted for in labels, and every labelled person with an occupation became a triplet
    persons = (run_dir / "mpii/persons.csv").read_text().strip().splitlines()
    labels = (run_dir / "labels/labels.csv").read_text().strip().splitlines()
    assert len(persons) == len(labels) > 1
    triplets = (run_dir / "enriched/metadata.jsonl").read_text().strip().splitlines()
    assert len(triplets) >= 1
    # the resolved config round-trips and names the fixture
    assert load_config(run_dir / "config.toml").mpii.mat_file == str(mat)
    comparison = (run_dir / "sota/comparison.md").read_text()
    for method in ("base", "both", "ethical_intervention", "debiasvl", "fair_diffusion", "uce", "shen2024"):
        assert f"| {method} |" in comparison, method

    rerun = _run(args, tmp_path)
    ran = [line for line in rerun.splitlines() if "] done in" in line]
    assert ran == [], f"a complete run should skip every stage, but these ran: {ran}"
    assert rerun.count("skipping") >= len(STAGES) - len(TOY_ONLY)  # the toy-only stages are no-ops here
