"""Fault injection, configuration and command line: bad numbers, escaping run names, one-line user errors
(issue 13, defects 4 and 8 and the traceback item)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from t2i_debias import cli
from t2i_debias.core.config import SECTIONS, load_config
from t2i_debias.core.errors import ConfigError
from t2i_debias.core.options import RANGES

ROOT = Path(__file__).resolve().parents[1]


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("section,key,bad,rng", [
    ("generate", "images_per_prompt", -1, "in [1, 100000]"),
    ("generate", "num_inference_steps", -1, "in [1, 1000]"),
    ("augment", "num_inference_steps", -1, "in [1, 1000]"),
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

    from t2i_debias.core.config import field_types

    for section, cls in SECTIONS.items():
        for name, typ in field_types(cls).items():
            numeric = typ in (int, float) or (typing.get_origin(typ) is dict and typing.get_args(typ)[1] in (int, float))
            if numeric:
                assert name in RANGES.get(section, {}), f"[{section}] {name} has no range"


def test_flags_are_validated_and_help_shows_the_range(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.parse("t", ["generate"], [], ["--images_per_prompt", "-3"])
    assert "[generate] images_per_prompt must be in [1, 100000], got -3" in capsys.readouterr().err
    parser = cli.build_parser("t", ["generate"], ["augment"])
    text = " ".join(parser.format_help().split())
    assert "--images_per_prompt IMAGES_PER_PROMPT range in [1, 100000] (default: 100)" in text
    assert "--augment.num_inference_steps NUM_INFERENCE_STEPS range in [1, 1000] (default: 30)" in text


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


# ----------------------------------------------------------------------------- values that passed, then crashed
def _float_keys() -> list[tuple[str, str]]:
    """Every option whose values are floats (a float, a list of floats, a table of floats)."""
    import typing

    from t2i_debias.core.config import field_types

    out = []
    for section, cls in SECTIONS.items():
        for name, typ in field_types(cls).items():
            args = typing.get_args(typ)
            if typ is float or (args and args[-1] is float):
                out.append((section, name))
    return out


def _toml_value(section: str, key: str, literal: str) -> str:
    import typing

    from t2i_debias.core.config import field_types

    typ = field_types(SECTIONS[section])[key]
    origin = typing.get_origin(typ)
    return f"[{literal}]" if origin is list else f"{{ denoise = {literal} }}" if origin is dict else literal


@pytest.mark.parametrize("literal", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("section,key", _float_keys())
def test_every_float_range_rejects_nan_and_inf(tmp_path, section, key, literal) -> None:
    """`guidance_scale = nan` passed every range and silently turned classifier-free guidance off."""
    p = _toml(tmp_path, f"[{section}]\n{key} = {_toml_value(section, key, literal)}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"[{section}] {key} must be a finite number" in msg and "\n" not in msg


def test_nan_given_as_a_flag_is_rejected(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.parse("t", ["generate"], [], ["--guidance_scale", "nan"])
    assert "[generate] guidance_scale must be a finite number" in capsys.readouterr().err


def test_a_seed_must_fit_in_32_bits(tmp_path) -> None:
    """accelerate's set_seed (numpy) fails on run.seed >= 2**32, after the earlier stages have run."""
    with pytest.raises(ConfigError, match=r"\[run\] seed must be in \[0, 4294967295\], got 4294967296"):
        load_config(_toml(tmp_path, f"[run]\nseed = {2**32}\n"))
    assert load_config(_toml(tmp_path, f"[run]\nseed = {2**32 - 1}\n")).run.seed == 2**32 - 1


@pytest.mark.parametrize("section,key", [("augment", "resolution"), ("augment", "generator_resolution"),
                                         ("train", "resolution"), ("generate", "resolution")])
def test_a_resolution_must_be_a_multiple_of_8(tmp_path, section, key) -> None:
    """The VAE halves the image three times: diffusers fails on 30 px deep inside a stage."""
    with pytest.raises(ConfigError) as e:
        load_config(_toml(tmp_path, f"[{section}]\n{key} = 30\n"))
    msg = str(e.value)
    assert f"[{section}] {key} must be" in msg and "a multiple of 8" in msg and "got 30; use 32" in msg
    assert getattr(load_config(_toml(tmp_path, f"[{section}]\n{key} = 32\n")).sections[section], key) == 32


@pytest.mark.parametrize("section,key,hi", [
    ("generate", "images_per_prompt", 100_000), ("bias", "sweep_images_per_prompt", 100_000),
    ("generate", "batch_size", 4096), ("bias", "n_bootstrap", 100_000), ("sota", "uce_samples", 10_000),
    ("generate", "num_inference_steps", 1000),
])
def test_counts_have_an_upper_bound(tmp_path, section, key, hi) -> None:
    """`images_per_prompt = 10**12` passed and then exhausted memory; each count has a sensible ceiling."""
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key} must be in \[\d+, {hi}\], got 1000000000000"):
        load_config(_toml(tmp_path, f"[{section}]\n{key} = {10**12}\n"))
    assert getattr(load_config(_toml(tmp_path, f"[{section}]\n{key} = {hi}\n")).sections[section], key) == hi


# ----------------------------------------------------------------------------- names checked at load
_RECOMMENDED = '[train]\npreset = "recommended"\ncontrol = true\n'


@pytest.mark.parametrize("text,message", [
    (_RECOMMENDED + '[bias]\nsweep_models = ["base", "both"]\n',
     "[bias] sweep_models: unknown model 'both'; known: base, unet, control"),
    ('[train]\nmodes = ["txt", "unet"]\n', "[train] modes: unknown mode 'txt'; known: text, unet, both"),
    ('[train]\nmode_learning_rates = { txt = 1e-5 }\n',
     "[train] mode_learning_rates: unknown mode 'txt'; known: text, unet, both"),
    ('[train]\nschedule = "parallel"\n', "[train] schedule must be one of sequential, joint, got 'parallel'"),
    ('[sota]\nmethods = ["base", "fairdiffusion"]\n',
     "[sota] methods: unknown method 'fairdiffusion'; known: base, ethical_intervention, debiasvl, fair_diffusion, "
     "uce, shen2024"),
    ('[generate]\nmodels = ["mine=tiny:sd"]\n[bias]\nsweep_models = ["base"]\n',
     "[bias] sweep_models: unknown model 'base'; known: mine"),
    ('[generate]\nmodels = ["tiny:sd"]\n', "[generate] models: entry 'tiny:sd' must be NAME=SPEC"),
    ('[generate]\nmodels = ["a=tiny:sd", "a=tiny:sd-v"]\n', "[generate] models: a named twice"),
    (_RECOMMENDED + '[report]\nfigure_ours = "both"\n',
     "[report] figure_ours: unknown model 'both'; known: base, unet, control, ethical_intervention"),
])
def test_names_of_models_modes_and_methods_are_checked_at_load(tmp_path, text, message) -> None:
    """`sweep_models = ["both"]` under a preset that trains `unet` crashed the demo after 13 minutes."""
    p = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and message in msg and "\n" not in msg


def test_names_are_checked_after_the_flags(tmp_path, capsys) -> None:
    """A flag may fix a name the file gets wrong; a flag's own bad name is refused before any stage."""
    p = _toml(tmp_path, _RECOMMENDED + '[bias]\nsweep_models = ["both"]\n')
    _, cfg = cli.parse("t", ["bias"], [], ["--config", str(p), "--sweep_models", "base", "unet"])
    assert cfg.bias.sweep_models == ["base", "unet"]
    with pytest.raises(SystemExit):
        cli.parse("t", ["bias"], ["train"], ["--config", str(p), "--sweep_models", "text"])
    assert "[bias] sweep_models: unknown model 'text'; known: base, unet, control" in capsys.readouterr().err
    _, cfg = cli.parse("t", ["bias"], ["train"], ["--config", str(p), "--sweep_models", "text", "--train.modes",
                                                  "text", "unet"])
    assert cfg.bias.sweep_models == ["text"]



def test_the_pipeline_refuses_a_bad_name_before_any_stage(tmp_path) -> None:
    """The demo's crash came after 13 minutes of stages; now the pipeline script stops before the first."""
    p = _toml(tmp_path, _RECOMMENDED + '[bias]\nsweep_models = ["base", "both"]\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "finetune/finetune_sd.py", "--config", str(p), "--run_dir", str(tmp_path / "r")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "[bias] sweep_models: unknown model 'both'; known: base, unet, control" in r.stderr
    assert not (tmp_path / "r").exists()  # no stage ran: the mpii stage would have made it
