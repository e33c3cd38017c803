"""Fault injection, configuration and command line: bad numbers, escaping run names, one-line user errors
(issue 13, defects 4 and 8 and the traceback item)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2i_debias import cli
from t2i_debias.config import RANGES, SECTIONS, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("section,key,bad,rng", [
    ("generate", "images_per_prompt", -1, ">= 1"),
    ("generate", "num_inference_steps", -1, ">= 1"),
    ("augment", "num_inference_steps", -1, ">= 1"),
    ("generate", "guidance_scale", -0.5, ">= 0"),
    ("train", "learning_rate", 0.0, "> 0"),
    ("train", "ema_decay", 1.5, "in [0, 1]"),
    ("bias", "ci", 1.0, "in (0, 1)"),
    ("quality", "fid_features", 100, "one of 64, 192, 768, 2048"),
    ("train", "weights", {"lang": -1.0}, ">= 0"),
])
def test_out_of_range_numbers_are_config_errors_with_the_range(tmp_path, section, key, bad, rng) -> None:
    value = "{ lang = -1.0 }" if isinstance(bad, dict) else repr(bad)
    p = _toml(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"[{section}] {key} must be {rng}" in msg


def test_every_numeric_option_has_a_range() -> None:
    import typing

    from t2i_debias.config import field_types

    for section, cls in SECTIONS.items():
        for name, typ in field_types(cls).items():
            numeric = typ in (int, float) or (typing.get_origin(typ) is dict and typing.get_args(typ)[1] in (int, float))
            if numeric:
                assert name in RANGES.get(section, {}), f"[{section}] {name} has no range"


def test_flags_are_validated_and_help_shows_the_range(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.parse("t", ["generate"], [], ["--images_per_prompt", "-3"])
    assert "[generate] images_per_prompt must be >= 1, got -3" in capsys.readouterr().err
    parser = cli.build_parser("t", ["generate"], ["augment"])
    text = " ".join(parser.format_help().split())
    assert "--images_per_prompt IMAGES_PER_PROMPT range >= 1 (default: 100)" in text
    assert "--augment.num_inference_steps NUM_INFERENCE_STEPS range >= 1 (default: 30)" in text


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", "..", ".hidden", ""])
def test_run_name_must_be_a_plain_name(tmp_path, name) -> None:
    p = _toml(tmp_path, f'[run]\nname = "{name}"\n')
    with pytest.raises(ConfigError, match=r"\[run\] name must be a plain folder name"):
        load_config(p)


def test_run_dir_flag_still_sets_root_and_name(tmp_path) -> None:
    _, cfg = cli.parse("t", ["run"], [], ["--run_dir", str(tmp_path / "a" / "r1")])
    assert cfg.run_dir == tmp_path / "a" / "r1"


def _script(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "dataset_analysis/analyze_dataset.py", "--run_dir", str(tmp_path / "r"),
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_user_error_prints_one_line_and_verbose_shows_the_traceback(tmp_path) -> None:
    r = _script(tmp_path)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "labels.csv not found" in lines[0] and "Traceback" not in r.stderr
    r = _script(tmp_path, "--verbose")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_a_bug_keeps_its_traceback(capsys) -> None:
    hook = cli._user_error_hook(verbose=False)
    try:
        raise KeyError("occupation")
    except KeyError as e:
        hook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'occupation'" in err
