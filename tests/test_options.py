"""Every option is checked once, where the config is loaded (t2i_debias.core.options): a value that a stage would
refuse fails at `load_config` (and as a flag) naming the file, `[section] key`, the value and what is allowed,
before any stage runs. Each case below used to pass the loader and fail only in the stage that read it."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from t2i_debias import cli
from t2i_debias.core.config import SECTIONS, field_types, load_config
from t2i_debias.core.errors import ConfigError
from t2i_debias.core.options import CHOICES


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


# (TOML, the message after "<file>: ") of every rule that was checked late (train/modes.check_options,
# augment/build.check_options, the enriched / mpii / sweep stages, the trackers) or not at all.
LATE = [
    # [train] options, formerly refused by the training stage after labelling and generation
    ("[train]\nguidance_target = -0.5\n",
     "[train] guidance_target must be > 0, 0 (off) or -1 (the evaluation guidance), got -0.5"),
    ("[train]\nguidance_target = -2.0\n", "[train] guidance_target must be >= -1, got -2.0"),
    ("[train]\nlang_similarity = \"mean\"\n", "[train] lang_similarity must be one of tokens, pooled, got 'mean'"),
    ("[train]\nvision_reduction = \"mean\"\n",
     "[train] vision_reduction must be one of triplet, batch, got 'mean'"),
    ("[train]\nmixed_precision = \"fp8\"\n", "[train] mixed_precision must be one of no, fp16, bf16, auto, got 'fp8'"),
    ("[train]\ndenoise_members = \"negative\"\n",
     "[train] denoise_members must be one of positive, anchor, both, got 'negative'"),
    ("[train]\ndenoise_caption = \"random\"\n",
     "[train] denoise_caption must be one of own, neutral, measured, positive, anchor, got 'random'"),
    ("[train]\nbalance = \"occupation\"\n", "[train] balance must be one of none, cell, got 'occupation'"),
    ("[train]\nbalance_by = [\"age\"]\n", "[train] balance_by: unknown attribute 'age'; known: gender, race"),
    ("[train]\nbalance_by = []\n", "[train] balance_by must list some of gender, race, got []"),
    ("[train]\nattribute_share = 0.8\ncaption_dropout = 0.3\n",
     "[train] attribute_share + caption_dropout must be <= 1, got 0.8 + 0.3"),
    ("[train]\nlr_warmup_steps = 20\n",
     "[train] lr_warmup_steps = 20 with lr_scheduler = 'constant': diffusers ignores the warm-up for 'constant'"),
    ("[train]\ntrain_batch_size = 0\n", "[train] train_batch_size must be in [1, 4096], got 0"),
    ("[train]\nsnapshot_steps = [0]\n", "[train] snapshot_steps must be in [1, 10000000], got 0"),
    ("[train]\nweights = { clip = 1.0 }\n", "[train] weights: unknown loss weight 'clip'; known: denoise, lang, vision"),
    ("[train]\nreport_to = \"mlflow\"\n", "[train] report_to must be one of none, tensorboard, wandb, got 'mlflow'"),
    ("[train]\nlog_images_every = -1\n", "[train] log_images_every must be >= 0, got -1"),
    ("[train]\npreset = \"best\"\n", "[train] preset must be one of \"\", reference, recommended, got 'best'"),
    # [augment] options, formerly refused by the enriched stage
    ("[augment]\non_unverified = \"maybe\"\n", "[augment] on_unverified must be one of drop, keep, got 'maybe'"),
    ("[augment]\nverify_attributes = false\n",
     "[augment] on_unverified = \"drop\" needs verify_attributes = true (or set on_unverified = \"keep\""),
    ("[augment]\nnegative_prompt = \"woman\"\n",
     "[augment] negative_prompt must be one of none, opposite_gender, got 'woman'"),
    ("[augment]\nbalance_band = [0.6, 0.4]\n",
     "[augment] balance_band must be [low, high] with 0 <= low <= high <= 1, got [0.6, 0.4]"),
    ("[augment]\nbalance_band = [0.4]\n", "[augment] balance_band must be [low, high]"),
    ("[augment]\nmin_written_rate = 1.5\n", "[augment] min_written_rate must be in [0, 1], got 1.5"),
    ("[augment]\nretry_guidance_scale = -1.0\n", "[augment] retry_guidance_scale must be >= 0, got -1.0"),
    ("[augment]\nmax_tries = 0\n", "[augment] max_tries must be in [1, 100], got 0"),
    ("[augment]\ngenerator_resolution = 36\n", "[augment] generator_resolution must be in [0, 4096], a multiple of 8"),
    ("[augment]\ndtype = \"fp16\"\n", "[augment] dtype must be one of auto, float32, float16, bfloat16, got 'fp16'"),
    # other sections: formerly refused by their stage or library
    ("[mpii]\nsplit = \"val\"\n", "[mpii] split must be one of train, test, all, got 'val'"),
    ("[mpii]\nreader = \"h5py\"\n", "[mpii] reader must be one of fast, scipy, got 'h5py'"),
    ("[labels]\nmultiple_faces = \"all\"\n", "[labels] multiple_faces must be one of skip, largest, first, got 'all'"),
    ("[generate]\ndtype = \"half\"\n", "[generate] dtype must be one of auto, float32, float16, bfloat16, got 'half'"),
    ("[bias]\nguidance_sweep = [2.0, 2.0]\n", "[bias] guidance_sweep lists a scale twice: [2.0, 2.0]"),
    ("[bias]\npaired_resample = \"prompts\"\n",
     "[bias] paired_resample must be one of prompts_and_seeds, seeds, got 'prompts'"),
    ("[quality]\nclip_score = \"cosine\"\n", "[quality] clip_score must be one of x100_clamped, raw_cosine, got 'cosine'"),
    ("[quality]\ninception = \"real\"\n", "[quality] inception must be one of auto, random, got 'real'"),
    ("[prompts]\npreset = \"paper\"\n", "[prompts] preset must be one of \"\", upstream, got 'paper'"),
]


@pytest.mark.parametrize("text,message", LATE)
def test_each_formerly_late_rule_fails_at_load_naming_file_and_key(tmp_path, text, message) -> None:
    p = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: {message}")


def test_guidance_target_minus_half_is_refused_at_load_as_a_flag_too(tmp_path, capsys) -> None:
    """RANGES said >= -1, so -0.5 loaded and training refused it only after labelling and generation."""
    p = _toml(tmp_path, "[train]\nguidance_target = -0.5\n")
    with pytest.raises(ConfigError, match=r"\[train\] guidance_target must be > 0, 0 \(off\) or -1"):
        load_config(p)
    with pytest.raises(SystemExit):
        cli.parse("t", ["train"], [], ["--guidance_target", "-0.5", "--run_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert "command line: [train] guidance_target must be > 0, 0 (off) or -1 (the evaluation guidance), got -0.5" in err
    assert not (tmp_path / "r").exists()
    for good in ("-1.0", "0.0", "4.0"):
        assert load_config(_toml(tmp_path, f"[train]\nguidance_target = {good}\n")).train.guidance_target == float(good)


@pytest.mark.parametrize("flags,message", [
    (["--lang_similarity", "mean"], "command line: [train] lang_similarity must be one of tokens, pooled"),
    (["--lr_warmup_steps", "5"], "command line: [train] lr_warmup_steps = 5 with lr_scheduler = 'constant'"),
    (["--balance_by", "age"], "command line: [train] balance_by: unknown attribute 'age'"),
    (["--weights", "clip=1"], "command line: [train] weights: unknown loss weight 'clip'"),
    (["--weights", "lang=x"], "--weights: lang='x' is not a float"),
    (["--preset", "best"], "command line: [train] preset must be one of \"\", reference, recommended, got 'best'"),
    (["--augment.on_unverified", "maybe"], "command line: [augment] on_unverified must be one of drop, keep"),
])
def test_a_bad_flag_is_refused_by_the_same_checks(tmp_path, capsys, flags, message) -> None:
    with pytest.raises(SystemExit) as e:
        cli.parse("t", ["train"], ["augment"], [*flags, "--run_dir", str(tmp_path / "r")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags,message", [
    (["--seed", "-1"], "command line: [run] seed must be in [0, 4294967295], got -1"),
    (["--rank", "-2"], "command line: [train] lora_rank must be in [0, 4096], got -2"),
])
def test_the_finetune_scripts_diffusers_flags_are_checked_too(tmp_path, capsys, flags, message) -> None:
    """--seed and --rank (diffusers' names of [run] seed and [train] lora_rank) were set after the checks."""
    with pytest.raises(SystemExit) as e:
        cli.main_for_mode("text", "t", [*flags, "--run_dir", str(tmp_path / "r")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_flag_fixes_what_only_a_rule_between_options_refuses(tmp_path) -> None:
    """Rules between options are checked once every value is in: the file's warm-up with the flag's scheduler."""
    p = _toml(tmp_path, "[train]\nlr_warmup_steps = 20\n")
    _, cfg = cli.parse("t", ["train"], [], ["--config", str(p), "--lr_scheduler", "constant_with_warmup",
                                            "--run_dir", str(tmp_path / "r")])
    assert (cfg.train.lr_warmup_steps, cfg.train.lr_scheduler) == (20, "constant_with_warmup")


def test_good_values_still_load(tmp_path) -> None:
    cfg = load_config(_toml(tmp_path, '[train]\nmixed_precision = "bf16"\ndenoise_caption = "anchor"\n'
                                      'lr_scheduler = "constant_with_warmup"\nlr_warmup_steps = 20\n'
                                      'attribute_share = 0.7\ncaption_dropout = 0.3\nbalance_by = ["race", "gender"]\n'
                                      'weights = { prior = 1.0 }\nsnapshot_steps = [1, 5]\n'
                                      '[augment]\nverify_attributes = false\non_unverified = "keep"\n'
                                      'balance_band = [0.5, 0.5]\ngenerator_resolution = 1024\n'
                                      '[bias]\nguidance_sweep = [1.0, 7.5]\n'))
    assert cfg.train.denoise_caption == "anchor" and cfg.augment.balance_band == [0.5, 0.5]
    assert cfg.bias.guidance_sweep == [1.0, 7.5]


def test_every_string_option_has_choices_or_is_free() -> None:
    """A new string option must get its CHOICES, or be added here as free text (a path, a model, a template)."""
    free = {"run": {"name", "root", "device", "base_model"},
            "mpii": {"mat_file", "images_dir", "occupation_map"},
            "labels": {"backend", "detector", "clip_model", "clip_template"},  # backend: a registry, pluggable
            "analysis": {"race_classes"},
            "augment": {"generator", "anchor_template", "attribute_template", "generation_template", "race_words",
                        "races"},
            "train": {"lr_scheduler", "resume_from_checkpoint", "log_image_prompts", "preserve_prompts",
                      "preset"},  # preset: core.presets.PRESETS, checked where it is applied
            "prompts": {"occupations", "templates", "heldout", "preset"},
            "generate": {"models"}, "bias": {"sweep_models"},  # names of models: core.options.check_names
            "quality": {"reference", "clip_model"}, "sota": {"shen2024_dir"},
            "report": {"figure_occupations", "figure_base", "figure_ours"}}
    for section, cls in SECTIONS.items():
        for name, typ in field_types(cls).items():
            words = typ is str or typing.get_args(typ)[:1] == (str,)
            if words and name not in free.get(section, set()):
                assert name in CHOICES.get(section, {}), f"[{section}] {name} has no CHOICES"
