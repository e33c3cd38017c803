"""What a training mode is: its trainable parts, loss weights, learning rate and schedule (DESIGN.md §2).

Also the [train] option checks, the values resolved from other sections (guidance target, mixed
precision), the control's config, the samples a mode trains on, and the hash of everything that shapes
a mode's weights (its manifest's config and its checkpoints' tag). No model is loaded here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from t2i_debias.config import MODES
from t2i_debias.core.files import hash_file, hash_obj
from t2i_debias.train.data import read_triplets, select_items
from t2i_debias.train.losses import LOSS_NAMES

log = logging.getLogger(__name__)

# Reference weights (DESIGN.md §2); cfg.train.weights overrides any of them.
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "text": {"denoise": 0.0, "lang": 0.1, "vision": 0.0, "preserve": 0.0, "prior": 0.0},
    "unet": {"denoise": 0.0, "lang": 0.0, "vision": 1.0, "preserve": 0.0, "prior": 0.0},
    "both": {"denoise": 0.5, "lang": 0.1, "vision": 0.4, "preserve": 0.0, "prior": 0.0},
}
TRAINED: dict[str, tuple[str, ...]] = {"text": ("text_encoder",), "unet": ("unet",), "both": ("text_encoder", "unet")}
# Losses that only reach the text encoder; denoise and vision reach both parts (through E(c)).
TEXT_ONLY_LOSSES = ("lang", "preserve")


def resolve_weights(mode: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The mode's reference weights with `overrides` applied; terms that reach no trainable part are 0."""
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; expected one of {', '.join(MODES)}")
    w = dict(DEFAULT_WEIGHTS[mode])
    for k, v in (overrides or {}).items():
        if k not in w:
            raise ValueError(f"unknown loss weight {k!r}; known: {', '.join(LOSS_NAMES)}")
        if v < 0:
            raise ValueError(f"loss weight {k} must be >= 0, got {v}")
        w[k] = float(v)
    if "text_encoder" not in TRAINED[mode]:
        for k in TEXT_ONLY_LOSSES:
            if w[k] > 0:
                log.info("mode %s: %s weight %g ignored (the text encoder is frozen)", mode, k, w[k])
                w[k] = 0.0
    if not any(v > 0 for v in w.values()):
        raise ValueError(f"mode {mode}: every loss weight is 0, nothing to train")
    return w


def needs_unet(weights: dict[str, float]) -> bool:
    """Whether an active loss runs the U-Net (and so the VAE)."""
    return weights["denoise"] > 0 or weights["vision"] > 0 or weights["prior"] > 0




def learning_rate_for(train: Any, mode: str) -> float:
    """The mode's learning rate: mode_learning_rates[mode] when given, else learning_rate."""
    return float(train.mode_learning_rates.get(mode, train.learning_rate))


def control_config(cfg: Any, mode: str) -> Any:
    """The control's config: the same [train] options, but only the biased anchors (own, neutral captions)
    are denoised, unweighted; lang and vision are off (they need the counterfactual members). Prior
    preservation stays: its target is the frozen base, and its captions name no counterfactual image."""
    c = copy.deepcopy(cfg)
    t = c.train
    w = resolve_weights(mode, t.weights)
    t.weights = {"denoise": w["denoise"] or 1.0, "lang": 0.0, "vision": 0.0, "preserve": w["preserve"]}
    if w["prior"] > 0:  # only then: a control without it keeps the train hash it had before the term existed
        t.weights["prior"] = w["prior"]
    t.denoise_members, t.balance = "anchor", "none"
    return c


def check_options(train: Any) -> None:
    """Reject a bad [train] option before any model is loaded, naming the option."""
    from t2i_debias.train.data import (
        BALANCE_ATTRIBUTES,
        BALANCES,
        CAPTION_ALIASES,
        DENOISE_CAPTIONS,
        DENOISE_MEMBERS,
    )

    choices = {"mixed_precision": ("no", "fp16", "bf16", "auto"),
               "denoise_caption": (*DENOISE_CAPTIONS, *CAPTION_ALIASES),
               "denoise_members": tuple(DENOISE_MEMBERS), "balance": BALANCES,
               "lang_similarity": ("tokens", "pooled"), "schedule": ("sequential", "joint"),
               "vision_reduction": ("triplet", "batch")}
    for key, allowed in choices.items():
        if getattr(train, key) not in allowed:
            raise ValueError(f"[train] {key} must be one of {' | '.join(allowed)}, got {getattr(train, key)!r}")
    for key in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps"):
        if getattr(train, key) < 1:
            raise ValueError(f"[train] {key} must be >= 1, got {getattr(train, key)}")
    if train.lora_rank < 0 or train.num_train_epochs < 0:
        raise ValueError("[train] lora_rank and num_train_epochs must be >= 0")
    for key in ("attribute_share", "caption_dropout"):
        if not 0.0 <= getattr(train, key) <= 1.0:
            raise ValueError(f"[train] {key} must be in [0, 1], got {getattr(train, key)}")
    if train.attribute_share + train.caption_dropout > 1.0:
        raise ValueError("[train] attribute_share + caption_dropout must be <= 1")
    if not set(train.balance_by) <= set(BALANCE_ATTRIBUTES) or not train.balance_by:
        raise ValueError(f"[train] balance_by must list some of {', '.join(BALANCE_ATTRIBUTES)}, got {train.balance_by}")
    if train.guidance_target < 0 and train.guidance_target != -1:
        raise ValueError(f"[train] guidance_target must be > 0, 0 (off) or -1 (the evaluation guidance), "
                         f"got {train.guidance_target}")
    if train.uncond_weight < 0 or train.input_perturbation < 0:
        raise ValueError("[train] uncond_weight and input_perturbation must be >= 0")
    unknown = set(train.mode_learning_rates) - set(MODES)
    if unknown:
        raise ValueError(f"[train] mode_learning_rates: unknown modes {sorted(unknown)}; expected {', '.join(MODES)}")
    if train.lr_warmup_steps > 0 and train.lr_scheduler == "constant":
        raise ValueError(f"[train] lr_warmup_steps = {train.lr_warmup_steps} with lr_scheduler = 'constant': diffusers "
                         "ignores the warm-up for 'constant'; use 'constant_with_warmup' or lr_warmup_steps = 0")
    if any(s < 1 for s in train.snapshot_steps):
        raise ValueError(f"[train] snapshot_steps must be >= 1, got {train.snapshot_steps}")


def resolved_train(cfg: Any) -> Any:
    """cfg.train with the values that depend on other sections or the device filled in (a copy):
    guidance_target -1 -> [generate] guidance_scale, mixed_precision auto -> fp16 on CUDA, else no."""
    t = copy.deepcopy(cfg.train)
    if t.guidance_target == -1:
        t.guidance_target = float(cfg.generate.guidance_scale)
    if t.mixed_precision == "auto":
        t.mixed_precision = "no" if use_cpu(cfg) or not torch.cuda.is_available() else "fp16"
    return t


def weight_dtype_for(mixed_precision: str) -> torch.dtype:
    """The dtype of frozen weights under a mixed-precision setting."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[mixed_precision]


def use_cpu(cfg: Any) -> bool:
    """Train on CPU when asked ([run] device = cpu) or when no accelerator exists; several CPU processes
    under `accelerate launch` then form a gloo group (accelerate needs cpu=True to see them)."""
    if cfg.run.device == "cpu":
        return True
    mps = getattr(torch.backends, "mps", None)
    return cfg.run.device == "auto" and not torch.cuda.is_available() and not (mps and mps.is_available())


def train_hash(cfg: Any, mode: str, base: str, data_dir: Path, init_lora: str | Path | None) -> str:
    """Hash of everything that shapes the weights (checkpoints made under another hash are not resumed)."""
    t = dataclasses.asdict(resolved_train(cfg))
    # Not hashed: options that do not change the weights, and max_train_steps (a run may be extended).
    for k in ("resume_from_checkpoint", "checkpointing_steps", "checkpoints_total_limit", "modes", "schedule",
              "dataloader_num_workers", "max_train_steps", "snapshot_steps", "control", "preset",
              "report_to", "log_images_every", "log_image_prompts"):
        t.pop(k, None)
    return hash_obj({"train": t, "seed": cfg.run.seed, "mode": mode, "base": _provenance(base),
                     "data": _provenance(data_dir, "metadata.jsonl"), "init_lora": _provenance(init_lora)})


def _provenance(path: str | Path | None, file: str = "_manifest.json") -> str:
    """A folder's identity for hashing: the hash of its manifest (or `file`) when it has one, else its name."""
    if not path:
        return ""
    f = Path(path) / file
    return hash_file(f) if f.is_file() else str(path)


def training_selection(cfg: Any, train: Any, weights: dict[str, float], data_dir: Path) -> tuple[list[Any], Any]:
    """The triplets of `data_dir` and the samples this mode trains on (verification filter, cell weights)."""
    from t2i_debias.augment.captions import CaptionComposer

    triplets = read_triplets(data_dir, CaptionComposer.from_config(cfg.augment))
    members = train.denoise_members if weights["denoise"] > 0 else "positive"
    selection = select_items(triplets, members, ("a", "p", "n") if weights["vision"] > 0 else (),
                             train.verified_only, train.balance, train.balance_by)
    if selection.dropped:
        log.info("verification filter: %s of %d triplets dropped", selection.dropped, len(triplets))
    return triplets, selection
