"""Pipeline stage "toy" (before "mpii"): prepare the toy world when `[toy] enabled`, else do nothing."""

from __future__ import annotations

import logging

from t2i_debias.core.config import Config
from t2i_debias.toyworld import ensure_toy_world

log = logging.getLogger(__name__)


def run_stage(cfg: Config, force: bool = False) -> None:
    """Write the toy data and fetch (or train) the toy classifier and base; a no-op unless `[toy] enabled`."""
    if not cfg.toy.enabled:
        return
    paths = ensure_toy_world(cfg.mpii, cfg.toy)
    log.info("toy world ready: %s", ", ".join(f"{k}={v}" for k, v in paths.items()))
