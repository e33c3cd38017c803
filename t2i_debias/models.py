"""Resolve a model spec to something `from_pretrained` can load.

A spec is a hub id (`stabilityai/stable-diffusion-2-1`), a local folder, or an offline builder:
- `tiny:sd`           the tiny random-weight pipeline (t2i_debias.tiny), ε-prediction;
- `tiny:sd-v`         the same with v-prediction (like SD 2.1);
- `toy:base`          the toy world's trained base model (t2i_debias.toyworld), for `make demo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_model(spec: str, cfg: Any = None) -> str:
    """Return a hub id or a local folder path for `spec` (building offline models on demand)."""
    if spec.startswith("tiny:"):
        from t2i_debias import tiny

        kind = spec.split(":", 1)[1]
        if kind == "sd":
            return str(tiny.tiny_sd_dir())
        if kind == "sd-v":
            return str(tiny.tiny_sd_dir(prediction_type="v_prediction"))
        raise ValueError(f"unknown tiny model {spec!r}; known: tiny:sd, tiny:sd-v")
    if spec.startswith("toy:"):
        from t2i_debias.toyworld import base_model

        return str(base_model.resolve(spec, cfg))
    p = Path(spec).expanduser()
    if p.exists():
        return str(p)
    return spec  # a hub id: from_pretrained resolves it (offline runs need it in HF_HOME)


def base_model(cfg: Any) -> str:
    """The run's base model, with `run.smoke` swapping in the tiny pipeline."""
    return resolve_model("tiny:sd" if cfg.run.smoke else cfg.run.base_model, cfg)
