"""Torch threads: every core for one process (`make demo`), one per xdist worker in the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from t2i_debias.core.threads import available_cores, default_threads

ROOT = Path(__file__).resolve().parents[1]


def test_default_threads_known_answers():
    assert default_threads({}, cores=8) == 8  # one process: every core
    assert default_threads({"LOCAL_WORLD_SIZE": "2"}, cores=8) == 4  # a launch shares the cores
    assert default_threads({"LOCAL_WORLD_SIZE": "16"}, cores=8) == 1
    assert default_threads({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, cores=8) == 3  # the user's choice
    assert default_threads({"OMP_NUM_THREADS": ""}, cores=5) == 5
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("env", [{"OMP_NUM_THREADS": "many"}, {"OMP_NUM_THREADS": "0"}, {"LOCAL_WORLD_SIZE": "x"}])
def test_bad_thread_settings_are_named(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        default_threads(env, cores=4)


def _make(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True)
    return r.stdout


def test_makefile_pins_one_thread_for_tests_only():
    probe = "probe: ; @echo omp=$$OMP_NUM_THREADS mkl=$$MKL_NUM_THREADS"
    assert _make("--eval", probe, "probe").strip() == "omp= mkl="  # what the demo's recipe sees
    dry = _make("-n", "VPY=PY", "STAMP=", "demo", "test", "test-fast")
    demo = [ln for ln in dry.splitlines() if "finetune_sd.py" in ln]
    tests = [ln for ln in dry.splitlines() if "-m pytest" in ln]
    assert demo and all("OMP_NUM_THREADS" not in ln for ln in demo)
    assert len(tests) == 2 and all("OMP_NUM_THREADS=1" in ln for ln in tests)


def test_script_uses_every_core_unless_told(tmp_path):
    """A stage script run without OMP_NUM_THREADS sets torch to the available cores; with it, to that number."""
    import sys

    code = ("import sys, torch; from t2i_debias.cli import parse; "
            "parse('x', ['prompts'], [], ['--run_dir', sys.argv[1]]); print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[-1]) == available_cores()
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[-1]) == 1


def test_toy_training_threads_all_cores_outside_tests_one_inside(monkeypatch):
    import torch

    from t2i_debias.core.threads import THREADS_ENV, all_cores, training_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert training_threads() == 1  # under pytest: one thread per worker
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert training_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, "3")
    assert training_threads() == 3
    before = torch.get_num_threads()
    with all_cores() as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    for bad in ("two", "0"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ValueError, match=THREADS_ENV):
            training_threads()
    assert training_threads({}, cores=6) == 6 and training_threads({"PYTEST_XDIST_WORKER": "gw0"}, cores=6) == 1
