"""The bias stage: bias/<model>/ for every generated model (`t2i_debias.metrics.summary.evaluate_model`), the base
first, and bias/stale.json."""

from __future__ import annotations

from typing import Any

from t2i_debias.core.files import atomic_write_json
from t2i_debias.labels.base import DemographicClassifier
from t2i_debias.metrics.summary import STALE, base_first, classifier_factory_for, evaluate_model


def run_stage(cfg: Any, force: bool = False, classifier: DemographicClassifier | None = None) -> None:
    """Bias of every generated model; the classifier (from [labels]) is built once, only if needed."""
    from t2i_debias.models import models_to_evaluate, stale_models
    from t2i_debias.stages.common import finished_generated

    names = finished_generated(cfg, models_to_evaluate(cfg))
    atomic_write_json(cfg.run_dir / "bias" / STALE, stale_models(cfg))  # the report leaves these out
    factory = classifier_factory_for(cfg, classifier)
    for name in base_first(names):
        evaluate_model(cfg, name, factory, force=force)
