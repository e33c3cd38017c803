"""Pipeline stage "toy_summary" (after "report"): the demo's closing table, a no-op unless `[toy] enabled`.

Writes <run_dir>/toy/summary.csv, attribute_prompts.csv and summary.md (toyworld.summary) and prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_csv, atomic_write_text
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as run
from t2i_debias.stages.common import models_to_evaluate
from t2i_debias.toyworld.summary import format_table, summary_table

log = logging.getLogger(__name__)

ATTRIBUTE_COLUMNS = ["model", "prompt", "occupation", "gender", "race", "n", "gender_ok", "skin_ok", "ambiguous"]


def evaluated_models(cfg: Config) -> dict[str, str | None]:
    """The run's evaluated models (name -> spec) whose attribute-prompt obedience the table shows; only the base
    (unresolved) when they cannot be listed."""
    try:
        return models_to_evaluate(cfg)
    except (FileNotFoundError, ValueError) as e:
        log.warning("cannot list the evaluated models (%s); attribute following only where found", e)
        return {"base": None}


def run_stage(cfg: Config, force: bool = False) -> None:
    """Write and print the table of every generated model of a toy run, skipped when its manifest matches."""
    if not cfg.toy.enabled:
        return
    lay = RunLayout(cfg.run_dir)
    folder, gen = lay.toy, lay.generated
    inputs = sorted(p for p in gen.glob("*/metadata.csv")) if gen.is_dir() else []
    stage = Stage("toy_summary", folder, cfg.section_dict("toy", "generate"), inputs)

    def body(st: Stage) -> list[Path]:
        rows: list[dict[str, Any]] = []
        df = summary_table(cfg.run_dir, cfg.labels, cfg.mpii.images_dir, cfg.generate, evaluated_models(cfg),
                           attribute_out=rows)
        attr = pd.DataFrame(rows, columns=ATTRIBUTE_COLUMNS)
        table = format_table(df, attr)
        return [atomic_write_csv(lay.toy_summary_csv, df),
                atomic_write_csv(lay.toy_attribute_prompts, attr),
                atomic_write_text(lay.toy_summary_md, table)]

    run(stage, body, force=force, log=log.info)
    print(lay.toy_summary_md.read_text())
