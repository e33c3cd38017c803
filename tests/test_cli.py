"""CLI: flags are generated from the config dataclasses, override the file, and --help shows defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2i_debias.cli import parse

ROOT = Path(__file__).resolve().parents[1]


def test_flags_override_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[run]\nname = "fromfile"\nseed = 5\n[train]\nmax_train_steps = 9\nlearning_rate = 0.1\n')
    args, cfg = parse("t", ["train"], ["run"], ["--config", str(p), "--max_train_steps", "2",
                                               "--run.seed", "11", "--modes", "text", "unet",
                                               "--weights", "lang=0.3", "--no-use_ema"])
    assert cfg.train.max_train_steps == 2  # flag wins
    assert cfg.train.learning_rate == 0.1  # file kept where no flag
    assert cfg.run.seed == 11 and cfg.run.name == "fromfile"
    assert cfg.train.modes == ["text", "unet"]
    assert cfg.train.weights == {"lang": 0.3}
    assert cfg.train.use_ema is False
    assert args.force is False


def test_flags_alone_and_run_dir(tmp_path: Path) -> None:
    _, cfg = parse("t", ["run"], [], ["--smoke", "--run_dir", str(tmp_path / "r1")])
    assert cfg.run.smoke is True
    assert cfg.run_dir == tmp_path / "r1"


def test_unspecified_flags_do_not_override_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[generate]\nbatch_size = 3\n")
    _, cfg = parse("t", ["generate"], [], ["--config", str(p)])
    assert cfg.generate.batch_size == 3


def test_bad_flag_value_exits_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse("t", ["train"], [], ["--max_train_steps", "abc"])
    assert e.value.code == 2
    assert "max_train_steps" in capsys.readouterr().err


def test_unknown_key_in_config_file_exits_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[generate]\nbatchsize = 3\n")
    with pytest.raises(SystemExit):
        parse("t", ["generate"], [], ["--config", str(p)])
    err = capsys.readouterr().err
    assert "batchsize" in err and str(p) in err


def test_finetune_script_help_shows_defaults() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "finetune/finetune_sd.py", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # argparse wraps long help lines
    assert "--config" in out and "--force" in out
    assert "--base_model" in out and "(default: 'stabilityai/stable-diffusion-2-1')" in out
    assert "--train.max_train_steps" in out and "(default: 1000)" in out
    assert "--generate.images_per_prompt" in out and "(default: 100)" in out
