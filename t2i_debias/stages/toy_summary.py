"""Pipeline stage "toy_summary" (after "report"): the demo's closing table, a no-op unless `[toy] enabled`.

Writes <run_dir>/toy/summary.csv, attribute_prompts.csv and summary.md (toyworld.summary) and prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.files import atomic_write_csv, atomic_write_text
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as run
from t2i_debias.toyworld.summary import format_table, summary_table

log = logging.getLogger(__name__)

ATTRIBUTE_COLUMNS = ["model", "prompt", "occupation", "gender", "race", "n", "gender_ok", "skin_ok", "ambiguous"]


def run_stage(cfg: Any, force: bool = False) -> None:
    """Write and print the table of every generated model of a toy run, skipped when its manifest matches."""
    if not cfg.toy.enabled:
        return
    folder = cfg.run_dir / "toy"
    gen = cfg.run_dir / "generated"
    inputs = sorted(p for p in gen.glob("*/metadata.csv")) if gen.is_dir() else []
    stage = Stage("toy_summary", folder, cfg.section_dict("toy", "generate"), inputs)

    def body(st: Stage) -> list[Path]:
        rows: list[dict[str, Any]] = []
        df = summary_table(cfg, attribute_out=rows)
        attr = pd.DataFrame(rows, columns=ATTRIBUTE_COLUMNS)
        table = format_table(df, attr)
        return [atomic_write_csv(st.folder / "summary.csv", df),
                atomic_write_csv(st.folder / "attribute_prompts.csv", attr),
                atomic_write_text(st.folder / "summary.md", table)]

    run(stage, body, force=force, log=log.info)
    print((folder / "summary.md").read_text())
