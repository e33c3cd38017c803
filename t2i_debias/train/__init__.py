"""Contrastive fine-tuning of text encoder / U-Net / both (DESIGN.md §2): losses, data, parts, modes, one step,
one engine (setup -> fit -> save). The pipeline stage is t2i_debias.stages.models."""

from t2i_debias.train.engine import train_mode
from t2i_debias.train.modes import DEFAULT_WEIGHTS, MODES, resolve_weights

__all__ = ["DEFAULT_WEIGHTS", "MODES", "resolve_weights", "train_mode"]
