"""Pipeline stage "results" (after "toy_summary", toy runs only): `<run_dir>/results/toy_seed<seed>.json`,
the rows of `toy/summary.csv` with the commit and config hash of the run (toyworld.readme_block)."""

from __future__ import annotations

import logging
from pathlib import Path

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_json, hash_obj
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as run
from t2i_debias.toyworld.readme_block import git_commit, results_from_summary

log = logging.getLogger(__name__)


def config_hash(cfg: Config) -> str:
    """Hash of the whole resolved config, without where the run folder lives ([run] root, name)."""
    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("root", "name")}
    return hash_obj(d)[:12]


def run_stage(cfg: Config, force: bool = False) -> None:
    """Pipeline stage "results" (after "toy_summary"): the results file of a toy run; a no-op otherwise."""
    if not cfg.toy.enabled:
        return
    summary = RunLayout(cfg.run_dir).toy_summary_csv
    out = RunLayout(cfg.run_dir).toy_results(cfg.toy.seed)
    stage = Stage("results", out.parent, {"config_hash": config_hash(cfg), "commit": git_commit()}, [summary])

    def body(st: Stage) -> list[Path]:
        return [atomic_write_json(out, results_from_summary(summary, cfg.source, config_hash(cfg), cfg.toy.seed,
                                                            cfg.generate.images_per_prompt))]

    run(stage, body, force=force, log=log.info)
    print(f"README numbers: {out} (to publish: cp {out} docs/results/ && "
          f"python -m t2i_debias.toyworld.readme_block --from docs/results/{out.name})", flush=True)
