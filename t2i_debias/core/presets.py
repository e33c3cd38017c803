"""Named presets, as data: a preset is a group of option values chosen by one option, its selector.

- `[train] preset` (DESIGN.md §2 "Presets"): `reference` is upstream's recipe as published; `recommended` is
  the best arm of docs/results/ablation.md. The toy world overrides scale options (resolution, lr) explicitly.
- `[prompts] preset = "upstream"` reproduces the reference implementation's evaluation; every difference
  between our defaults and its protocol is listed in docs/DESIGN.md §10, whose right-hand column is
  `PROMPTS_PRESETS["upstream"]`.

`apply_presets` runs once, after the file and the flags: an option given explicitly in either always wins.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from t2i_debias.core.errors import ConfigError
from t2i_debias.core.options import MODES, Choice

if TYPE_CHECKING:
    from t2i_debias.core.config import Config

Option = tuple[str, str]  # (section, key)

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {
        "schedule": "sequential", "modes": list(MODES), "weights": {},
        "denoise_members": "positive", "denoise_caption": "own", "attribute_share": 0.0, "caption_dropout": 0.0,
        "verified_only": False, "balance": "none", "guidance_target": 0.0,
        "independent_noise": True, "vision_reduction": "batch", "lang_similarity": "tokens",
        "learning_rate": 2e-8, "mode_learning_rates": {"text": 2e-8, "unet": 2e-8, "both": 2e-8},
        "lr_scheduler": "constant", "lr_warmup_steps": 0, "adam_weight_decay": 1e-2,
        "input_perturbation": 0.1, "random_flip": True, "resolution": 256, "train_batch_size": 16,
        "num_train_epochs": 5, "mixed_precision": "auto", "use_ema": False, "snr_gamma": 0.0,
    },
    "recommended": {
        "schedule": "sequential", "modes": ["unet"], "weights": {"denoise": 1.0, "vision": 0.0, "prior": 1.0},
        "denoise_members": "both", "denoise_caption": "neutral", "attribute_share": 0.3, "caption_dropout": 0.1,
        "verified_only": True, "balance": "cell", "balance_by": ["gender", "race"], "guidance_target": -1.0,
        "uncond_weight": 1.0, "independent_noise": False, "input_perturbation": 0.0, "random_flip": False,
        "num_train_epochs": 0, "mode_learning_rates": {},
    },
}

# The reference implementation's evaluation prompt, typo included ("Proffesional"): reproducing its
# numbers needs its exact text, since CLIP tokenises the misspelling differently.
UPSTREAM_TEMPLATE = "Proffesional photo of the face of a {occupation}"

PROMPTS_PRESETS: dict[str, dict[Option, Any]] = {
    "upstream": {
        ("prompts", "occupations"): "default",  # the reference's 25 occupations
        ("prompts", "templates"): [UPSTREAM_TEMPLATE],
        ("generate", "images_per_prompt"): 25,
        ("labels", "multiple_faces"): "first",  # DeepFace's first detected face
        ("quality", "clip_score"): "raw_cosine",
        ("quality", "clip_model"): "open_clip:ViT-bigG-14/laion2b_s39b_b160k",
    },
}

# Selector -> preset name -> the options it sets; "" (every selector's default) sets nothing.
PRESETS: dict[Option, dict[str, dict[Option, Any]]] = {
    ("train", "preset"): {name: {("train", k): v for k, v in values.items()} for name, values in TRAIN_PRESETS.items()},
    ("prompts", "preset"): PROMPTS_PRESETS,
}


def apply_presets(cfg: Config, explicit: Collection[Option], where: str | None = None) -> None:
    """Set the options of every selected preset on `cfg`, except those in `explicit` (given in the file or as
    flags); ConfigError naming `where` (default: the config's file) for a preset that does not exist."""
    for (section, key), presets in PRESETS.items():
        name = getattr(cfg.sections[section], key)
        if name and name not in presets:
            raise ConfigError(f"{where or cfg.source}: [{section}] {key} must be one of "
                              f"{Choice(('', *presets)).text()}, got {name!r}")
        for option, value in presets.get(name, {}).items():
            if option not in explicit:
                setattr(cfg.sections[option[0]], option[1], copy.deepcopy(value))
