"""Named protocol presets: `[prompts] preset = "upstream"` reproduces the reference implementation's evaluation.

A preset sets a group of options across sections; any option given explicitly in the config file or
as a flag wins over the preset. Every difference between our defaults and the upstream protocol is
listed in docs/DESIGN.md §10; `PRESETS["upstream"]` is that table's right-hand column.
"""

from __future__ import annotations

from typing import Any

# The reference implementation's evaluation prompt, typo included ("Proffesional"): reproducing its
# numbers needs its exact text, since CLIP tokenises the misspelling differently.
UPSTREAM_TEMPLATE = "Proffesional photo of the face of a {occupation}"

PRESETS: dict[str, dict[tuple[str, str], Any]] = {
    "": {},
    "upstream": {
        ("prompts", "occupations"): "default",  # the reference's 25 occupations
        ("prompts", "templates"): [UPSTREAM_TEMPLATE],
        ("generate", "images_per_prompt"): 25,
        ("labels", "multiple_faces"): "first",  # DeepFace's first detected face
        ("quality", "clip_score"): "raw_cosine",
        ("quality", "clip_model"): "open_clip:ViT-bigG-14/laion2b_s39b_b160k",
    },
}


def apply_preset(cfg: Any, explicit: set[tuple[str, str]]) -> None:
    """Set the preset's options on `cfg`, except those in `explicit` (given in the file or as flags)."""
    import copy

    name = cfg.prompts.preset
    if name not in PRESETS:
        from t2i_debias.config import ConfigError

        raise ConfigError(f"{cfg.source}: [prompts] preset must be one of "
                          f"{' | '.join(repr(k) for k in PRESETS)}, got {name!r}")
    for (section, key), value in PRESETS[name].items():
        if (section, key) not in explicit:
            setattr(cfg.sections[section], key, copy.deepcopy(value))
