"""What every option may be, checked once where a config is loaded (`validate`): the range of each number
(RANGES, shown in --help), the words of each named value (CHOICES), the rules between options, and the names
a config refers to (modes, models, baselines). No stage meets a value it cannot use.

The vocabularies these checks use live here, at the ground of the package: train/, augment/, labels/,
metrics/ import them from here rather than the config layer importing them from above.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from t2i_debias.core.errors import ConfigError

if TYPE_CHECKING:  # annotations only: config imports this module
    from t2i_debias.core.config import Config, TrainSection

# ----------------------------------------------------------------------------- vocabularies
# The fine-tuning modes, in training order.
MODES: tuple[str, ...] = ("text", "unet", "both")
SCHEDULES: tuple[str, ...] = ("sequential", "joint")
# The [sota] methods a config may name; baselines.registry.METHODS maps each to its class (same names, same order).
SOTA_METHODS: tuple[str, ...] = ("base", "ethical_intervention", "debiasvl", "fair_diffusion", "uce", "shen2024")
LOSS_NAMES: tuple[str, ...] = ("denoise", "lang", "vision", "preserve", "prior")  # train.losses
# What [train] denoises (train.data): the members of each choice, the base captions (and the names the
# first engine version gave two of them), the sampling balance and the attributes a balanced cell holds.
DENOISE_MEMBERS: dict[str, tuple[str, ...]] = {"positive": ("p",), "anchor": ("a",), "both": ("a", "p")}
DENOISE_CAPTIONS: tuple[str, ...] = ("own", "neutral", "measured")
CAPTION_ALIASES: dict[str, str] = {"positive": "own", "anchor": "neutral"}
BALANCES: tuple[str, ...] = ("none", "cell")
BALANCE_ATTRIBUTES: tuple[str, ...] = ("gender", "race")
REPORT_TO: tuple[str, ...] = ("none", "tensorboard", "wandb")  # train.trackers
ON_UNVERIFIED: tuple[str, ...] = ("drop", "keep")  # augment.build
NEGATIVE_PROMPT_MODES: tuple[str, ...] = ("none", "opposite_gender")  # augment.planner
SPLITS: tuple[str, ...] = ("train", "test", "all")  # data.persons
# Several faces at the head box: skip (status) | largest | first (DeepFace's order, as the reference implementation).
MULTIPLE_FACES: tuple[str, ...] = ("skip", "largest", "first")
CLIP_SCORES: tuple[str, ...] = ("x100_clamped", "raw_cosine")  # metrics.clip_score
DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")  # models.resolve_dtype
RESAMPLE_MODES: tuple[str, ...] = ("prompts_and_seeds", "seeds")  # metrics.paired: [bias] paired_resample


# ----------------------------------------------------------------------------- ranges and choices
@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option (bounds inclusive unless `*_open`); shown in --help.

    NaN is never allowed, nor ±inf unless `allow_inf`: a NaN compares false with every bound, so without
    this check `guidance_scale = nan` would pass and silently switch guidance off. `multiple_of` > 0: the value
    must be a multiple of it (resolutions: the VAE downsamples by 8).
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[float, ...] = ()
    multiple_of: int = 0
    allow_inf: bool = False

    def ok(self, v: float) -> bool:
        if not self.finite_ok(v):
            return False
        if self.choices:
            return v in self.choices
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return not (self.multiple_of and v % self.multiple_of)

    def finite_ok(self, v: float) -> bool:
        """False for NaN, and for ±inf unless the range allows it."""
        return not (math.isnan(v) or (math.isinf(v) and not self.allow_inf))

    def nearest(self, v: float) -> int | None:
        """The allowed multiple of `multiple_of` closest to `v` (the fix an error message suggests)."""
        if not self.multiple_of or not self.finite_ok(v):
            return None
        m = self.multiple_of
        lo = math.ceil((self.lo or 0) / m) * m
        c = max(lo, int(round(v / m)) * m)
        return min(c, int(self.hi // m * m)) if self.hi is not None else c

    def text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(_number(c) for c in self.choices)
        if self.lo is not None and self.hi is not None:
            out = f"in {'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            out = f"{'>' if self.lo_open else '>='} {_number(self.lo)}"
        else:
            out = f"{'<' if self.hi_open else '<='} {_number(self.hi)}"
        return out + (f", a multiple of {self.multiple_of}" if self.multiple_of else "")


def _number(x: float | None) -> str:
    """A bound as a person types it: 4294967295 and 100000, not 4.29497e+09; 0.5 as 0.5."""
    return str(int(x)) if x is not None and float(x).is_integer() else f"{x:g}"


_NONNEG, _POS_INT, _POS = Range(0), Range(1), Range(0, lo_open=True)
_UNIT, _SHIFT = Range(0, 1), Range(-1, 1)
# Seeds: numpy (accelerate's set_seed) takes 32 bits. Resolutions: multiples of 8 (the VAE's downsampling),
# at most 4096 px; those that default to 0 ("the model's own") may be 0.
_SEED = Range(0, 2**32 - 1)
_RES, _RES_OR_0 = Range(8, 4096, multiple_of=8), Range(0, 4096, multiple_of=8)
# Counts that size memory or work get a ceiling far above any real run, so a typo such as
# `images_per_prompt = 10**12` is refused at load instead of exhausting memory hours later.
MAX_IMAGES = 100_000  # images per prompt (evaluation, sweep)
MAX_BATCH = 4096  # images per batch, any stage
MAX_STEPS = 1000  # sampler steps (diffusers schedulers are trained on 1000 timesteps)
MAX_TRAIN_STEPS = 10_000_000  # optimiser steps of a fine-tune or a toy model
_IMAGES, _BATCH = Range(1, MAX_IMAGES), Range(1, MAX_BATCH)
_STEPS, _TRAIN_STEPS = Range(1, MAX_STEPS), Range(1, MAX_TRAIN_STEPS)
# The range of every numeric option (a dict option's values all share one); checked where a config is
# loaded (load_config, cli flags), so a value like `images_per_prompt = -3` never reaches a stage.
RANGES: dict[str, dict[str, Range]] = {
    "run": {"seed": _SEED},
    "labels": {"margin": _NONNEG, "batch_size": _BATCH},
    "analysis": {"min_count": _NONNEG},
    "augment": {"resolution": _RES, "crop_scale": _POS, "crop_shift": _SHIFT, "num_inference_steps": _STEPS,
                "guidance_scale": _NONNEG, "batch_size": _BATCH, "max_tries": Range(1, 100), "max_triplets": _NONNEG,
                "generator_resolution": _RES_OR_0, "retry_guidance_scale": _NONNEG, "balance_band": _UNIT,
                "min_written_rate": _UNIT},
    "train": {"resolution": _RES, "train_batch_size": _BATCH, "max_train_steps": _TRAIN_STEPS,
              "learning_rate": _POS, "lr_warmup_steps": _NONNEG, "gradient_accumulation_steps": Range(1, 10_000),
              "max_grad_norm": _NONNEG, "checkpointing_steps": _NONNEG, "lora_rank": Range(0, 4096),
              "snr_gamma": _NONNEG, "weights": _NONNEG, "checkpoints_total_limit": _NONNEG,
              "adam_weight_decay": _NONNEG, "ema_decay": _UNIT, "dataloader_num_workers": Range(0, 1024),
              "num_train_epochs": Range(0, 100_000), "mode_learning_rates": _POS, "snapshot_steps": _TRAIN_STEPS,
              "input_perturbation": _NONNEG, "attribute_share": _UNIT, "caption_dropout": _UNIT,
              "guidance_target": Range(-1), "uncond_weight": _NONNEG, "log_images_every": _NONNEG},
    "generate": {"images_per_prompt": _IMAGES, "base_seed": _SEED, "batch_size": _BATCH,
                 "num_inference_steps": _STEPS, "guidance_scale": _NONNEG, "resolution": _RES_OR_0},
    "bias": {"n_bootstrap": Range(0, 100_000), "ci": Range(0, 1, lo_open=True, hi_open=True),
             "floor_exact_max": Range(0, 10_000_000), "floor_draws": Range(1, 10_000_000), "guidance_sweep": _NONNEG,
             "sweep_images_per_prompt": Range(0, MAX_IMAGES)},
    "quality": {"fid_features": Range(choices=(64, 192, 768, 2048)), "kid_subset_size": Range(2, MAX_IMAGES),
                "kid_subsets": Range(1, 100_000), "batch_size": _BATCH},
    "sota": {"debiasvl_lambda": _NONNEG, "fair_diffusion_edit_guidance": _NONNEG, "uce_iterations": Range(0, 1000),
             "uce_samples": Range(1, 10_000), "uce_steps": _STEPS},
    "report": {"figure_images": Range(1, 64)},
    "toy": {"seed": _SEED, "n_per_occupation": Range(1, 10_000), "base_steps": _TRAIN_STEPS,
            "vae_steps": _TRAIN_STEPS},
}


@dataclass(frozen=True)
class Choice:
    """The words a string option may take, or that each item of a list option (each key of a table option) may;
    `noun` names one item in the error ("unknown mode 'txt'")."""

    words: tuple[str, ...]
    noun: str = ""

    def text(self) -> str:
        return ", ".join(w or '""' for w in self.words)


# The words of every option that names one of a fixed set (pluggable sets, such as [labels] backend or a
# diffusers lr_scheduler, are checked by their registry).
CHOICES: dict[str, dict[str, Choice]] = {
    "mpii": {"split": Choice(SPLITS), "reader": Choice(("fast", "scipy"))},
    "labels": {"multiple_faces": Choice(MULTIPLE_FACES)},
    "augment": {"dtype": Choice(DTYPES), "on_unverified": Choice(ON_UNVERIFIED),
                "negative_prompt": Choice(NEGATIVE_PROMPT_MODES)},
    "train": {"schedule": Choice(SCHEDULES), "modes": Choice(MODES, "mode"),
              "mode_learning_rates": Choice(MODES, "mode"), "mixed_precision": Choice(("no", "fp16", "bf16", "auto")),
              "denoise_members": Choice(tuple(DENOISE_MEMBERS)),
              "denoise_caption": Choice((*DENOISE_CAPTIONS, *CAPTION_ALIASES)), "balance": Choice(BALANCES),
              "balance_by": Choice(BALANCE_ATTRIBUTES, "attribute"), "lang_similarity": Choice(("tokens", "pooled")),
              "vision_reduction": Choice(("triplet", "batch")), "weights": Choice(LOSS_NAMES, "loss weight"),
              "report_to": Choice(REPORT_TO)},
    "generate": {"dtype": Choice(DTYPES)},
    "bias": {"paired_resample": Choice(RESAMPLE_MODES)},
    "quality": {"clip_score": Choice(CLIP_SCORES), "inception": Choice(("auto", "random"))},
    "sota": {"methods": Choice(SOTA_METHODS, "method")},
}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_range(section: str, key: str, value: Any, where: str) -> None:
    """Raise ConfigError when a numeric option (or each value of a dict option) is outside RANGES."""
    rng = RANGES.get(section, {}).get(key)
    if rng is None:
        return
    values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or rng.ok(v):
            continue
        if not rng.finite_ok(v):
            raise ConfigError(f"{where}: [{section}] {key} must be a finite number {rng.text()}, got {v!r}")
        fix = rng.nearest(v)
        raise ConfigError(f"{where}: [{section}] {key} must be {rng.text()}, got {v!r}"
                          + (f"; use {fix}" if fix is not None and fix != v else ""))


def check_choice(section: str, key: str, value: Any, where: str) -> None:
    """Raise ConfigError when a named value (each item of a list, each key of a table) is not in CHOICES."""
    choice = CHOICES.get(section, {}).get(key)
    if choice is None:
        return
    if isinstance(value, (list, dict)):
        _unknown(where, f"[{section}] {key}", list(value), choice.words, choice.noun)
    elif value not in choice.words:
        raise ConfigError(f"{where}: [{section}] {key} must be one of {choice.text()}, got {value!r}")


def _unknown(where: str, key: str, given: list[str], known: list[str] | tuple[str, ...], what: str) -> None:
    """ConfigError naming the key, the names it does not know and the names it does."""
    bad = [g for g in given if g not in known]
    if bad:
        raise ConfigError(f"{where}: {key}: unknown {what} {', '.join(map(repr, bad))}; known: {', '.join(known)}")


def check_rules(cfg: Config, where: str) -> None:
    """What a range or a set of words cannot state (rules between options, within a list, a gap in a range),
    checked once every value (file, flags, presets) is known."""
    t, a = cfg.train, cfg.augment
    problems = {
        "[train] guidance_target": (t.guidance_target < 0 and t.guidance_target != -1,
                                    "must be > 0, 0 (off) or -1 (the evaluation guidance), "
                                    f"got {t.guidance_target!r}"),
        "[train] attribute_share + caption_dropout": (t.attribute_share + t.caption_dropout > 1.0,
                                                      f"must be <= 1, got {t.attribute_share!r} + "
                                                      f"{t.caption_dropout!r}"),
        "[train] lr_warmup_steps": (t.lr_warmup_steps > 0 and t.lr_scheduler == "constant",
                                    f"= {t.lr_warmup_steps} with lr_scheduler = 'constant': diffusers ignores the "
                                    "warm-up for 'constant'; use 'constant_with_warmup' or lr_warmup_steps = 0"),
        "[train] balance_by": (not t.balance_by,
                               f"must list some of {', '.join(BALANCE_ATTRIBUTES)}, got []"),
        "[augment] on_unverified": (a.on_unverified == "drop" and not a.verify_attributes,
                                    '= "drop" needs verify_attributes = true (or set on_unverified = "keep": '
                                    "unverified members are then captioned neutrally)"),
        "[augment] balance_band": (len(a.balance_band) != 2 or a.balance_band[0] > a.balance_band[1],
                                   f"must be [low, high] with 0 <= low <= high <= 1, got {a.balance_band}"),
        "[bias] guidance_sweep": (len(set(cfg.bias.guidance_sweep)) != len(cfg.bias.guidance_sweep),
                                  f"lists a scale twice: {cfg.bias.guidance_sweep}"),
    }
    for key, (bad, message) in problems.items():
        if bad:
            raise ConfigError(f"{where}: {key} {message}")


# ----------------------------------------------------------------------------- names of models
BASE_MODEL_NAME = "base"  # the unmodified base model: generated/base/, bias/base/
CONTROL_MODEL_NAME = "control"  # models/control/: [train] control


def modes_to_run(train: TrainSection) -> list[str]:
    """The modes a [train] section trains, in training order: sequential = those listed; joint = both only."""
    return ["both"] if train.schedule == "joint" else [m for m in MODES if m in train.modes]


def parse_model_entry(item: str) -> tuple[str, str]:
    """(name, spec) of one `[generate] models` entry NAME=SPEC; ConfigError unless NAME is a plain folder name."""
    if "=" not in item:
        raise ConfigError(f"[generate] models: entry {item!r} must be NAME=SPEC (e.g. base=stabilityai/sd-2-1)")
    name, spec = (x.strip() for x in item.split("=", 1))
    if not name or "/" in name or "\\" in name or name.startswith(".") or not spec:
        raise ConfigError(f"[generate] models: entry {item!r}: NAME names a folder (no '/', not starting with '.') "
                          "and SPEC a model id or folder")
    return name, spec


def model_names(cfg: Config) -> list[str]:
    """The models a run evaluates, known when the config is loaded: the names of [generate] models when given,
    else base, each mode [train] trains (after its preset) and control when [train] control."""
    if cfg.generate.models:
        return [parse_model_entry(item)[0] for item in cfg.generate.models]
    return [BASE_MODEL_NAME, *modes_to_run(cfg.train)] + ([CONTROL_MODEL_NAME] if cfg.train.control else [])


def check_names(cfg: Config, where: str) -> None:
    """Every config value that names a model of the run resolves, so a typo fails at load, not after the
    stages before the one that reads it. Presets must have been applied."""
    try:
        models = model_names(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    dupes = sorted({m for m in models if models.count(m) > 1})
    if dupes:
        raise ConfigError(f"{where}: [generate] models: {', '.join(dupes)} named twice; each NAME must be unique")
    _unknown(where, "[bias] sweep_models", list(cfg.bias.sweep_models), models, "model")
    shown = models + [m for m in cfg.sota.methods if m not in models]
    r = cfg.report
    if ("report", "figure_base") in cfg.explicit:  # the default "base" may be absent from [generate] models
        _unknown(where, "[report] figure_base", [r.figure_base], shown, "model")
    _unknown(where, "[report] figure_ours", [r.figure_ours] if r.figure_ours else [], shown, "model")


def validate(cfg: Config, source: str | None = None, complete: bool = True) -> Config:
    """Check every option against RANGES and CHOICES and (`complete`: once the flags and presets are in) the
    rules between options and the names of models: all before any stage runs."""
    where = source or cfg.source
    for section, values in cfg.sections.items():
        for key in (*RANGES.get(section, {}), *CHOICES.get(section, {})):
            check_range(section, key, getattr(values, key), where)
            check_choice(section, key, getattr(values, key), where)
    name = cfg.run.name
    if not _PLAIN_NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"{where}: [run] name must be a plain folder name (letters, digits, '_', '-', '.'; "
                          f"no '/' or '..'), got {name!r}; put the parent folder in [run] root")
    if complete:
        check_rules(cfg, where)
        check_names(cfg, where)
    return cfg
