"""`[prompts] preset = "upstream"`: the reference implementation's protocol, overridable option by option."""

from __future__ import annotations

import pytest

from t2i_debias.cli import build_parser, config_from_args
from t2i_debias.core.config import load_config
from t2i_debias.core.errors import ConfigError
from t2i_debias.core.presets import UPSTREAM_TEMPLATE
from t2i_debias.data import prompts


def test_upstream_preset_sets_the_protocol(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[prompts]\npreset = "upstream"\n')
    cfg = load_config(f)
    assert cfg.prompts.templates == ["Proffesional photo of the face of a {occupation}"] == [UPSTREAM_TEMPLATE]
    assert cfg.generate.images_per_prompt == 25 and cfg.labels.multiple_faces == "first"
    assert cfg.quality.clip_score == "raw_cosine" and cfg.quality.clip_model.startswith("open_clip:ViT-bigG-14")
    df = prompts.build_prompts(prompts.occupation_list(cfg.prompts.occupations), cfg.prompts.templates)
    assert len(df) == 25 and "Proffesional photo of the face of a doctor" in set(df["prompt"])
    # our defaults are untouched without the preset
    plain = load_config(None)
    assert plain.generate.images_per_prompt == 100 and plain.quality.clip_score == "x100_clamped"


def test_explicit_options_win_over_the_preset(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[prompts]\npreset = "upstream"\n[generate]\nimages_per_prompt = 3\n')
    args = build_parser("t", ["generate"], ["prompts", "labels", "quality"]).parse_args(
        ["--config", str(f), "--labels.multiple_faces", "largest"])
    cfg = config_from_args(args)
    assert cfg.generate.images_per_prompt == 3  # file
    assert cfg.labels.multiple_faces == "largest"  # flag
    assert cfg.quality.clip_score == "raw_cosine"  # preset


def test_unknown_preset_names_the_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[prompts]\npreset = "paper"\n')
    with pytest.raises(ConfigError, match=r"c.toml: \[prompts\] preset must be one of \"\", upstream, got 'paper'"):
        load_config(f)
