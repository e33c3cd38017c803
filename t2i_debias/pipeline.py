"""The whole pipeline from one config: every stage in order, each skipped when its manifest matches.

Each stage module exposes `run_stage(cfg: Config, force: bool = False) -> None`; this module only
orders them. `finetune/finetune_sd.py` is its command-line shell.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from t2i_debias.core.config import Config
from t2i_debias.core.layout import RunLayout

log = logging.getLogger(__name__)

# (stage name, module exposing run_stage) in run order (DESIGN.md §6).
STAGES: list[tuple[str, str]] = [
    ("toy", "t2i_debias.stages.toy"),  # no-op unless [toy] enabled: writes the toy data, trains toy models
    ("mpii", "t2i_debias.stages.mpii"),
    ("labels", "t2i_debias.stages.labels"),
    ("analysis", "t2i_debias.stages.analysis"),
    ("enriched", "t2i_debias.stages.enriched"),
    ("models", "t2i_debias.stages.models"),
    ("prompts", "t2i_debias.stages.prompts"),
    ("generated", "t2i_debias.stages.generated"),
    ("bias", "t2i_debias.stages.bias"),
    ("sweep", "t2i_debias.stages.sweep"),  # no-op unless [bias] guidance_sweep: bias at several guidance scales
    ("quality", "t2i_debias.stages.quality"),
    ("sota", "t2i_debias.stages.sota"),
    ("report", "t2i_debias.stages.report"),
    ("toy_summary", "t2i_debias.stages.toy_summary"),  # no-op unless [toy] enabled: the demo's closing table
    ("results", "t2i_debias.stages.results"),  # no-op unless [toy] enabled: results/toy_seed<N>.json
]
TOY_ONLY: frozenset[str] = frozenset({"toy", "toy_summary", "results"})  # stages that do nothing outside the toy world


def stage_runner(module: str) -> Callable[..., None]:
    """Import a stage module and return its `run_stage`."""
    return importlib.import_module(module).run_stage


def _clock(seconds: float) -> str:
    """Elapsed time as a person reads it: 42.0s, 3m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m}m{sec:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def run_pipeline(cfg: Config, force: bool = False, only: list[str] | None = None,
                 until: str | None = None, out: TextIO | None = None) -> None:
    """Run the stages in order (all, or those in `only`, stopping after `until`).

    Prints one line per stage with its elapsed time (to `out`, default stdout) and, at the end, where
    report.html is.
    """
    from t2i_debias.toyworld import plugin

    plugin.register()  # the toy world plugs in from above: `toy:` models and the "toy" labels backend
    out = out or sys.stdout
    names = [n for n, _ in STAGES]
    for n in (only or []) + ([until] if until else []):
        if n not in names:
            raise ValueError(f"unknown stage {n!r}; stages: {', '.join(names)}")
    todo = [(n, m) for n, m in STAGES if not only or n in only]
    if until:
        todo = todo[:[n for n, _ in todo].index(until) + 1] if until in [n for n, _ in todo] else todo
    from t2i_debias.core.locks import lock_run

    t0 = time.time()
    with lock_run(cfg.run_dir):  # one writer per run: a second invocation fails at once, naming this one
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(RunLayout(cfg.run_dir).config_toml)
        for i, (name, module) in enumerate(todo, 1):
            log.info("=== stage %s", name)
            t = time.time()
            stage_runner(module)(cfg, force=force)
            print(f"[{i}/{len(todo)}] {name:<12} {_clock(time.time() - t):>8}   (total {_clock(time.time() - t0)})",
                  file=out, flush=True)
    log.info("pipeline finished in %.1fs: %s", time.time() - t0, cfg.run_dir)
    report = RunLayout(cfg.run_dir).report_html
    print(f"done in {_clock(time.time() - t0)}. "
          + (f"Report: {report.resolve()}" if report.is_file() else f"No report yet: run the report stage ({report})."),
          file=out, flush=True)
