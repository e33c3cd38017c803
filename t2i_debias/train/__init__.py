"""Contrastive fine-tuning of text encoder / U-Net / both (DESIGN.md §2): losses, data, one engine."""

from t2i_debias.train.engine import DEFAULT_WEIGHTS, MODES, resolve_weights, run_stage, train_mode

__all__ = ["DEFAULT_WEIGHTS", "MODES", "resolve_weights", "run_stage", "train_mode"]
