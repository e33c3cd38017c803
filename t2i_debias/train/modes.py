"""What a training mode is: its trainable parts, loss weights, learning rate and schedule (DESIGN.md §2).

Also the values resolved from other sections (guidance target, mixed precision), the control's config,
the samples a mode trains on, and the hash of everything that shapes a mode's weights (its manifest's
config and its checkpoints' tag). No model is loaded here; the options were checked at load.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from t2i_debias.core.config import AugmentSection, TrainSection
from t2i_debias.core.files import hash_file, hash_obj
from t2i_debias.core.options import LOSS_NAMES, MODES
from t2i_debias.train.data import read_triplets, select_items

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




def learning_rate_for(train: TrainSection, mode: str) -> float:
    """The mode's learning rate: mode_learning_rates[mode] when given, else learning_rate."""
    return float(train.mode_learning_rates.get(mode, train.learning_rate))


def control_config(train: TrainSection, mode: str) -> TrainSection:
    """The control's [train] section (a copy): the same options, but only the biased anchors (own, neutral
    captions) are denoised, unweighted; lang and vision are off (they need the counterfactual members). Prior
    preservation stays: its target is the frozen base, and its captions name no counterfactual image."""
    t = copy.deepcopy(train)
    w = resolve_weights(mode, t.weights)
    t.weights = {"denoise": w["denoise"] or 1.0, "lang": 0.0, "vision": 0.0, "preserve": w["preserve"]}
    if w["prior"] > 0:  # only then: a control without it keeps the train hash it had before the term existed
        t.weights["prior"] = w["prior"]
    t.denoise_members, t.balance = "anchor", "none"
    return t


def resolved_train(train: TrainSection, device: str, guidance_scale: float) -> TrainSection:
    """[train] with the values that depend on other sections or the device filled in (a copy): guidance_target
    -1 -> `guidance_scale` ([generate]), mixed_precision auto -> fp16 on CUDA, else no (`device`: [run] device)."""
    t = copy.deepcopy(train)
    if t.guidance_target == -1:
        t.guidance_target = float(guidance_scale)
    if t.mixed_precision == "auto":
        t.mixed_precision = "no" if use_cpu(device) or not torch.cuda.is_available() else "fp16"
    return t


def is_resolved(train: TrainSection) -> bool:
    """Whether `train` went through `resolved_train` (no -1 guidance target, no auto precision left)."""
    return train.guidance_target != -1 and train.mixed_precision != "auto"


def weight_dtype_for(mixed_precision: str) -> torch.dtype:
    """The dtype of frozen weights under a mixed-precision setting."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[mixed_precision]


def use_cpu(device: str) -> bool:
    """Train on CPU when asked ([run] device = cpu) or when no accelerator exists; several CPU processes
    under `accelerate launch` then form a gloo group (accelerate needs cpu=True to see them)."""
    if device == "cpu":
        return True
    mps = getattr(torch.backends, "mps", None)
    return device == "auto" and not torch.cuda.is_available() and not (mps and mps.is_available())


def train_hash(train: TrainSection, seed: int, mode: str, base: str, data_dir: Path,
               init_lora: str | Path | None) -> str:
    """Hash of everything that shapes the weights (checkpoints made under another hash are not resumed);
    `train` is the resolved [train] section (`resolved_train`), `seed` the [run] seed."""
    if not is_resolved(train):
        raise ValueError("train_hash takes the resolved [train] section (modes.resolved_train)")
    t = dataclasses.asdict(train)
    # Not hashed: options that do not change the weights, and max_train_steps (a run may be extended).
    for k in ("resume_from_checkpoint", "checkpointing_steps", "checkpoints_total_limit", "modes", "schedule",
              "dataloader_num_workers", "max_train_steps", "snapshot_steps", "control", "preset",
              "report_to", "log_images_every", "log_image_prompts"):
        t.pop(k, None)
    return hash_obj({"train": t, "seed": seed, "mode": mode, "base": _provenance(base),
                     "data": _provenance(data_dir, "metadata.jsonl"), "init_lora": _provenance(init_lora)})


def _provenance(path: str | Path | None, file: str = "_manifest.json") -> str:
    """A folder's identity for hashing: the hash of its manifest (or `file`) when it has one, else its name."""
    if not path:
        return ""
    f = Path(path) / file
    return hash_file(f) if f.is_file() else str(path)


def training_selection(augment: AugmentSection, train: TrainSection, weights: dict[str, float],
                       data_dir: Path) -> tuple[list[Any], Any]:
    """The triplets of `data_dir` (captions from the [augment] templates) and the samples this mode trains on
    (verification filter, cell weights)."""
    from t2i_debias.augment.captions import CaptionComposer

    triplets = read_triplets(data_dir, CaptionComposer.from_config(augment))
    members = train.denoise_members if weights["denoise"] > 0 else "positive"
    selection = select_items(triplets, members, ("a", "p", "n") if weights["vision"] > 0 else (),
                             train.verified_only, train.balance, train.balance_by)
    if selection.dropped:
        log.info("verification filter: %s of %d triplets dropped", selection.dropped, len(triplets))
    return triplets, selection
