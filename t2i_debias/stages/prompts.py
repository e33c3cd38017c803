"""The prompts stage: `<run_dir>/prompts.csv` from the [prompts] section (`t2i_debias.data.prompts`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.config import Config
from t2i_debias.core.errors import UserError
from t2i_debias.core.files import atomic_write_csv
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.data.prompts import (
    base_tokenizers,
    build_prompts,
    check_token_limits,
    occupation_rows,
)
from t2i_debias.models import base_model, model_name

log = logging.getLogger(__name__)


def run_tokenizers(cfg: Config) -> list[tuple[str, Any]]:
    """(label, tokenizer) of the run's base model, one per text encoder; [] with a warning when the model is
    not available here (the prompts stage then cannot check token limits)."""
    try:
        base = base_model(cfg)
    except (UserError, OSError, ValueError) as e:
        log.warning("prompt lengths not checked against the tokenizer: %s", e)
        return []
    return base_tokenizers(base, model_name(cfg.run))


def run_stage(cfg: Config, force: bool = False) -> None:
    """Write `<run_dir>/prompts.csv` from the [prompts] section (manifest in `<run_dir>/prompts/`)."""
    sec = cfg.prompts
    inputs: list[Path] = []
    if sec.occupations == "mpii" and cfg.mpii.occupation_map:
        inputs.append(Path(cfg.mpii.occupation_map))
    elif sec.occupations not in ("default", "mpii"):
        inputs.append(Path(sec.occupations))
    config = cfg.section_dict("prompts")
    if sec.occupations == "mpii":
        config["occupation_map"] = cfg.mpii.occupation_map
    stage = Stage("prompts", RunLayout(cfg.run_dir).prompts, config, inputs)

    def body(_: Stage) -> list[Path]:
        rows = occupation_rows(sec.occupations, cfg.mpii.occupation_map)
        occs, where = [o for o, _ in rows], dict(rows)
        df = build_prompts(occs, list(sec.templates), list(sec.heldout), where)
        check_token_limits(df, run_tokenizers(cfg), where)
        out = atomic_write_csv(RunLayout(cfg.run_dir).prompts_csv, df)
        log.info("%d prompts (%d occupations x %d templates, %d held out) -> %s", len(df), len(occs),
                 len(sec.templates), int((df["split"] == "heldout").sum()), out)
        return [out]

    _run_stage(stage, body, force=force, log=log.info)
