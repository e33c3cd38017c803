"""The quality stage: quality/<model>.json and .csv for every generated model (`t2i_debias.metrics.quality`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.metrics.quality import quality_for
from t2i_debias.models import models_to_evaluate
from t2i_debias.stages.common import finished_generated

log = logging.getLogger(__name__)


def run_stage(cfg: Any, force: bool = False) -> None:
    """Quality of every generated model: FID/KID against `quality.reference`, CLIP-T, CLIP-I vs base."""

    q = cfg.quality
    gen_root = cfg.run_dir / "generated"
    names = finished_generated(cfg, models_to_evaluate(cfg))
    inputs = [gen_root / n / "metadata.csv" for n in names]
    if q.reference:
        inputs.append(Path(q.reference))
    config = cfg.section_dict("quality")
    config["smoke"] = cfg.run.smoke
    config["models"] = names
    stage = Stage("quality", cfg.run_dir / "quality", config, inputs)

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        if not names:
            raise FileNotFoundError(f"no generated images under {gen_root}: run the generation stage first")
        return quality_for(cfg, names, st.folder), {"models": names}

    _run_stage(stage, body, force=force, log=log.info)
