"""The whole pipeline from one config: every stage in order, each skipped when its manifest matches.

Each stage module exposes `run_stage(cfg: Config, force: bool = False) -> None`; this module only
orders them. `finetune/finetune_sd.py` is its command-line shell.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable

from t2i_debias.config import Config

log = logging.getLogger(__name__)

# (stage name, module exposing run_stage) in run order (DESIGN.md §6).
STAGES: list[tuple[str, str]] = [
    ("toy", "t2i_debias.toyworld"),  # no-op unless [toy] enabled: writes the toy data, trains toy models
    ("mpii", "t2i_debias.data.mpii"),
    ("labels", "t2i_debias.labels.runner"),
    ("analysis", "t2i_debias.analysis"),
    ("enriched", "t2i_debias.augment.build"),
    ("models", "t2i_debias.train.engine"),
    ("prompts", "t2i_debias.prompts"),
    ("generated", "t2i_debias.generate"),
    ("bias", "t2i_debias.evaluate"),
    ("sweep", "t2i_debias.sweep"),  # no-op unless [bias] guidance_sweep: bias at several guidance scales
    ("quality", "t2i_debias.metrics.quality"),
    ("sota", "t2i_debias.report.sota"),
    ("report", "t2i_debias.report.html"),
    ("toy_summary", "t2i_debias.toyworld.summary"),  # no-op unless [toy] enabled: the demo's closing table
]


def stage_runner(module: str) -> Callable[..., None]:
    """Import a stage module and return its `run_stage`."""
    return importlib.import_module(module).run_stage


def run_pipeline(cfg: Config, force: bool = False, only: list[str] | None = None,
                 until: str | None = None) -> None:
    """Run the stages in order (all, or those in `only`, stopping after `until`)."""
    names = [n for n, _ in STAGES]
    for n in (only or []) + ([until] if until else []):
        if n not in names:
            raise ValueError(f"unknown stage {n!r}; stages: {', '.join(names)}")
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg.run_dir / "config.toml")
    t0 = time.time()
    for name, module in STAGES:
        if only and name not in only:
            continue
        log.info("=== stage %s", name)
        stage_runner(module)(cfg, force=force)
        if until == name:
            break
    log.info("pipeline finished in %.1fs: %s", time.time() - t0, cfg.run_dir)
