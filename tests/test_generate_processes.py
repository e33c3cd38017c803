"""Generation across processes: kill -9 then resume, and sharding with accelerate on 2 CPU processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias.sampling import is_valid_png, png_info

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "evaluation" / "generate_images.py"


def _args(run_dir: Path, occ: Path, n: int, batch: int) -> list[str]:
    return [str(SCRIPT), "--run_dir", str(run_dir), "--run.smoke", "--prompts.occupations", str(occ),
            "--images_per_prompt", str(n), "--num_inference_steps", "2", "--batch_size", str(batch)]


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png")) if folder.exists() else []


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_completes(tmp_path):
    occ = tmp_path / "occ.txt"
    occ.write_text("chef\n")
    run_dir = tmp_path / "run"
    images = run_dir / "generated" / "base" / "images"
    n = 40
    proc = subprocess.Popen([sys.executable, *_args(run_dir, occ, n, 1)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while len(_pngs(images)) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "generation finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = _pngs(images)
    assert 3 <= len(done) < n
    assert all(is_valid_png(p) for p in done)  # atomic writes: nothing half-written under a real name
    assert not (run_dir / "generated" / "base" / "_manifest.json").exists()  # not marked complete

    subprocess.run([sys.executable, *_args(run_dir, occ, n, 4)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = _pngs(images)
    assert [p.name for p in final] == sorted(f"{s}.png" for s in range(n))
    assert all(is_valid_png(p) for p in final)
    assert not list(images.rglob("*.tmp"))
    assert len(pd.read_csv(run_dir / "generated" / "base" / "metadata.csv")) == n
    assert (run_dir / "generated" / "base" / "_manifest.json").is_file()


@pytest.mark.slow
def test_accelerate_two_cpu_processes_take_disjoint_slices(tmp_path):
    occ = tmp_path / "occ.txt"
    occ.write_text("chef\nengineer\n")
    run_dir = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29517", *_args(run_dir, occ, 3, 2)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    folder = run_dir / "generated" / "base"
    by_shard: dict[str, set[str]] = {}
    for p in _pngs(folder / "images"):
        by_shard.setdefault(png_info(p)["shard"], set()).add(p.relative_to(folder).as_posix())
    assert set(by_shard) == {"0/2", "1/2"}  # both processes worked
    assert not by_shard["0/2"] & by_shard["1/2"]  # disjoint
    full = {f"images/{o}/{s}.png" for o in ("chef", "engineer") for s in range(3)}
    assert by_shard["0/2"] | by_shard["1/2"] == full  # union = the full set
    meta = pd.read_csv(folder / "metadata.csv")
    assert set(meta["file"]) == full and set(meta["shard"]) == {"0/2", "1/2"}
