"""The bias stage: bias/<model>/ for every generated model (`evaluate_model`, which the SOTA and sweep stages also
run), the base first, and bias/stale.json. The tables and numbers are `t2i_debias.metrics.summary`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_csv, atomic_write_json
from t2i_debias.core.layout import BIAS_PREDICTIONS, BIAS_SUMMARY, GENERATED_METADATA, RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.core.text import figure
from t2i_debias.core.vocab import NOT_MEASURED, is_measured
from t2i_debias.labels.base import DemographicClassifier
from t2i_debias.labels.registry import make_classifier, race_classes
from t2i_debias.labels.runner import classify_generated
from t2i_debias.metrics.summary import (
    bias_attributes,
    check_not_constant,
    generation_settings,
    paired_comparison,
    read_predictions,
    summarize,
)
from t2i_debias.models import resolve_device
from t2i_debias.stages.common import base_first, finished_generated, models_to_evaluate, stale_models

log = logging.getLogger(__name__)


def run_stage(cfg: Config, force: bool = False, classifier: DemographicClassifier | None = None) -> None:
    """Bias of every generated model; the classifier (from [labels]) is built once, only if needed."""
    names = finished_generated(cfg, models_to_evaluate(cfg))
    atomic_write_json(RunLayout(cfg.run_dir).bias_stale, stale_models(cfg))  # the report leaves these out
    factory = classifier_factory_for(cfg, classifier)
    for name in base_first(names):
        evaluate_model(cfg, name, factory, force=force)


def classifier_factory_for(cfg: Config, classifier: DemographicClassifier | None = None
                           ) -> Callable[[], DemographicClassifier]:
    """A factory that builds the [labels] classifier on first call only (skipped stages never load it)."""
    built: list[DemographicClassifier] = [classifier] if classifier is not None else []

    def factory() -> DemographicClassifier:
        if not built:
            built.append(make_classifier(cfg.labels, device=resolve_device(cfg.run.device), smoke=cfg.run.smoke))
        return built[0]

    return factory


def evaluate_model(cfg: Config, name: str, classifier_factory: Callable[[], DemographicClassifier] | None = None,
                   force: bool = False, gen_dir: Path | None = None, out_dir: Path | None = None,
                   base_dir: Path | None = None, stage_name: str | None = None) -> Path:
    """bias/<name>/ for one generated model (skipped when its manifest matches).

    `gen_dir`/`out_dir` default to generated/<name>/ and bias/<name>/; `base_dir` is the bias folder of
    the model it is paired with (default bias/base/, none for the base itself). The guidance sweep
    passes its own folders.
    """
    classifier_factory = classifier_factory or classifier_factory_for(cfg)
    lay = RunLayout(cfg.run_dir)
    gen_dir = gen_dir or lay.generated_model(name)
    check_not_constant(gen_dir, name)
    out_dir = out_dir or lay.bias_model(name)
    if base_dir is None and name != "base":
        base_dir = lay.bias_model("base")
    base_pred_path = base_dir / BIAS_PREDICTIONS if base_dir is not None else None
    if base_pred_path is not None and not base_pred_path.is_file():
        log.warning("[bias] %s: %s not found, so no paired comparison against the base (evaluate base first)",
                    name, base_pred_path)
        base_pred_path = None
    inputs = [gen_dir / GENERATED_METADATA] + ([gen_dir / "generation.json"] if (gen_dir / "generation.json").exists()
                                           else []) + ([base_pred_path] if base_pred_path else [])
    config = {**cfg.section_dict("bias", "labels"), "smoke": cfg.run.smoke, "seed": cfg.run.seed}
    for k in ("guidance_sweep", "sweep_images_per_prompt", "sweep_models"):  # the sweep's own settings
        config["bias"].pop(k, None)
    stage = Stage(stage_name or f"bias:{name}", out_dir, config, inputs)

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        b = cfg.bias
        clf = classifier_factory()
        pred = classify_generated(gen_dir, clf, out_dir / ".journal.jsonl", cfg.labels.batch_size,
                                  desc=stage.name)
        every = bias_attributes(race_classes(cfg.labels.backend, cfg.analysis.race_classes))
        attrs = {a: c for a, c in every.items() if is_measured(a, clf.measures)}
        by_prompt, summary = summarize(pred, attrs, b.n_bootstrap, cfg.run.seed, b.ci, b.floor_draws,
                                       b.floor_exact_max)
        summary.update(model=name, classifier=clf.describe(), generation=generation_settings(gen_dir),
                       not_measured=[a for a in every if a not in attrs])
        if base_pred_path is not None:
            summary["paired_vs_base"] = paired_comparison(pred, read_predictions(base_pred_path), attrs, b.n_bootstrap,
                                                          cfg.run.seed, b.ci, b.paired_resample)
        else:
            summary["paired_vs_base"] = None
        outs = [atomic_write_csv(out_dir / BIAS_PREDICTIONS, pred),
                atomic_write_csv(out_dir / "by_prompt.csv", by_prompt),
                atomic_write_json(out_dir / BIAS_SUMMARY, summary)]
        agg = summary["attributes"]
        tvd = {a: (f"{figure(agg[a]['aggregate']['tvd'])} (floor {figure(agg[a]['floor']['tvd'])})" if a in agg
                   else NOT_MEASURED) for a in ("gender", "race")}
        log.info("[bias] %s: face rate %s, gender tvd %s, race tvd %s", name, figure(summary["face_rate"]),
                 tvd["gender"], tvd["race"])
        return outs, {"face_rate": summary["face_rate"]}

    _run_stage(stage, body, force=force, log=log.info)
    return out_dir
