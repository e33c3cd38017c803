"""Pipeline stage "results" (after "toy_summary", toy runs only): `<run_dir>/results/toy_seed<seed>.json`,
the rows of `toy/summary.csv` with the commit and config hash of the run (toyworld.readme_block)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.files import atomic_write_json
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as run
from t2i_debias.toyworld.readme_block import config_hash, git_commit, results_from_summary, results_path

log = logging.getLogger(__name__)


def run_stage(cfg: Any, force: bool = False) -> None:
    """Pipeline stage "results" (after "toy_summary"): the results file of a toy run; a no-op otherwise."""
    if not cfg.toy.enabled:
        return
    summary = cfg.run_dir / "toy" / "summary.csv"
    out = results_path(cfg)
    stage = Stage("results", out.parent, {"config_hash": config_hash(cfg), "commit": git_commit()}, [summary])

    def body(st: Stage) -> list[Path]:
        return [atomic_write_json(out, results_from_summary(cfg, summary))]

    run(stage, body, force=force, log=log.info)
    print(f"README numbers: {out} (to publish: cp {out} docs/results/ && "
          f"python -m t2i_debias.toyworld.readme_block --from docs/results/{out.name})", flush=True)
