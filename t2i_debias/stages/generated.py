"""The generated stage: images of every model to evaluate (the base model and each trained mode) under
generated/<model>/, through `t2i_debias.sampling.generate_model`."""

from __future__ import annotations

import os
from typing import Any

from t2i_debias.models import models_to_evaluate
from t2i_debias.sampling import _Dist, generate_model


def run_stage(cfg: Any, force: bool = False) -> None:
    """Generate images for every model to evaluate (the base model and each trained mode)."""
    from t2i_debias.data.prompts import prompts_path
    from t2i_debias.stages import prompts

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist = _Dist()
    if not prompts_path(cfg).is_file():  # a script run from flags alone: build prompts.csv first
        if dist.is_main:
            prompts.run_stage(cfg, force=False)
        dist.barrier()
    for name, spec in models_to_evaluate(cfg).items():
        generate_model(cfg, name, spec, force=force, state=dist.state)
