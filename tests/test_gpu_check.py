"""bench/gpu_check.py runs on a CPU at tiny shapes: every mode steps, CPU-vs-device images agree, one table."""

from __future__ import annotations

import pytest

from tests.helpers.scripts import load_script


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_tiny_shapes(tmp_path):
    mod = load_script("bench/gpu_check.py")
    out = tmp_path / "gpu_check.md"
    rc = mod.main(["--model", "tiny:sd-v", "--device", "cpu", "--precisions", "no", "--resolution", "32",
                   "--gen_resolution", "32", "--gen_steps", "1", "--images", "2", "--out", str(out)])
    text = out.read_text()
    assert rc == 0, text
    rows = [line for line in text.splitlines() if line.startswith("| train |")]
    assert len(rows) == 6  # 3 modes x (full, LoRA)
    for mode in ("text", "unet", "both"):
        assert sum(f"| train | {mode} |" in r for r in rows) == 2
    assert "| cpu vs cpu |" in text and "mean |diff| 0.00, max 0" in text  # same device, same seeds: identical
    assert "ratio" in text
