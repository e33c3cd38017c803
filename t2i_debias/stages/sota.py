"""The SOTA comparison stage (DESIGN.md §5): every method on the same base model, prompts, seeds,
classifier and metrics -> `sota/comparison.csv`, `sota/comparison.md` and plots.

- "base" and "ours" (each trained mode under models/) are the evaluation stage's own models: their
  images, bias and quality come from the generated, bias and quality stages' per-model code.
- Each baseline in `sota.methods` generates into `generated/<method>/` with the same layout
  (images/<prompt_id>/<seed>.png + metadata.csv), through the same folder generator (resume and
  sharding included), then goes through the same bias and quality code as any model.
- A method that cannot run on this base (Shen et al. off SD 1.5) is a row with its reason, never a gap:
  each method says so itself (`Method.applicable`), as it says its settings (`Method.params_from`).
- Every row carries two paired comparisons on the same (prompt, seed) pairs: against the base (from its
  bias summary) and against ours (the last trained mode, computed here from the bias predictions).
- The table itself is `report.comparison`'s; a toy run adds the toy world's quality columns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from t2i_debias.baselines import METHODS, MethodInputs, method_class
from t2i_debias.baselines.pipe import MethodPipe, build_method, load_base
from t2i_debias.baselines.registry import method_params
from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_csv, atomic_write_json, atomic_write_text
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.labels.registry import race_classes
from t2i_debias.models import base_model, model_name
from t2i_debias.plots import plot_or_warn
from t2i_debias.report.charts import plot
from t2i_debias.report.comparison import check_settings, comparison_rows, to_markdown
from t2i_debias.stages.bias import classifier_factory_for, evaluate_model
from t2i_debias.stages.common import base_first, models_to_evaluate
from t2i_debias.stages.quality import quality_for
from t2i_debias.toyworld.quality import is_toy, toy_quality  # (importing it registers the toy columns)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- generation of a baseline
def method_inputs(cfg: Config) -> MethodInputs:
    """The sections of the run's config that the baselines read."""
    return MethodInputs(sota=cfg.sota, run=cfg.run, generate=cfg.generate, labels=cfg.labels, analysis=cfg.analysis)


def check_applicable(cfg: Config, name: str) -> str | None:
    """None when `name` can run here, else the reason (checked without generating anything)."""

    inputs = method_inputs(cfg)
    return method_class(name).applicable(inputs, lambda: load_base(base_model(cfg), inputs))


def method_config(cfg: Config, name: str) -> dict[str, Any]:
    """What determines a baseline's images: generation settings, the base model and the method's settings."""
    from t2i_debias.sampling import generation_config

    inputs = method_inputs(cfg)
    base = base_model(cfg)
    conf = generation_config(cfg.generate, name, base, base)
    conf["method"] = {"name": name, "params": method_params(name, inputs), **method_class(name).settings_from(inputs)}
    return conf


def generate_method(cfg: Config, name: str, force: bool = False) -> Path:
    """generated/<name>/ for baseline `name` (same layout and seeds as every evaluated model)."""
    from t2i_debias.data.prompts import read_prompts
    from t2i_debias.sampling import SETTINGS, generate_folder

    out_dir = RunLayout(cfg.run_dir).generated_model(name)
    config = method_config(cfg, name)
    stage = Stage(f"generated:{name}", out_dir, config, [RunLayout(cfg.run_dir).prompts_csv])

    def body(st: Stage) -> Any:
        prompts = read_prompts(RunLayout(cfg.run_dir).prompts_csv)
        g = cfg.generate
        size = g.resolution or None
        settings = {"fingerprint": config["fingerprint"], "method": config["method"]}
        built: dict[str, MethodPipe] = {}

        def load() -> MethodPipe:
            built["pipe"] = build_method(method_inputs(cfg), base_model(cfg), name, prompts)
            return built["pipe"]

        meta = generate_folder(load, out_dir, prompts, name, g.images_per_prompt, g.base_seed, g.batch_size,
                               g.num_inference_steps, g.guidance_scale, size, size, settings=settings)
        extra: dict[str, Any] = {"n_images": len(prompts) * g.images_per_prompt}
        if "pipe" in built:  # what ran, e.g. UCE's measured ratios per tuning round
            extra["method"] = built["pipe"].method.info()
        return [meta, out_dir / SETTINGS], extra

    _run_stage(stage, body, force=force, log=log.info)
    return out_dir


# ----------------------------------------------------------------------------- per-model evaluation (E's code)
def ours_models(cfg: Config) -> dict[str, str]:
    """The evaluation stage's models: "base" and each trained mode ("text", "unet", "both", ...).

    The base is always one of them: every row is compared with it. A `[generate] models` list without a
    `base` entry gets the run's base model as "base" (first), not a KeyError in the middle of the stage.
    """

    models = models_to_evaluate(cfg)
    if "base" in models:
        return models
    log.info("[sota] [generate] models has no 'base' entry: the run's base model is generated as 'base' for the "
             "comparison")
    return {"base": base_model(cfg), **models}


def classify_model(cfg: Config, name: str, force: bool = False, factory: Any = None) -> None:
    """bias/<name>/ (predictions, per-prompt metrics, summary with CIs) with the evaluation stage's code."""
    evaluate_model(cfg, name, factory, force=force)


# ----------------------------------------------------------------------------- the stage
def method_names(cfg: Config) -> tuple[list[str], dict[str, str]]:
    """Rows of the table in order: base, ours (each trained mode), then the baselines.

    Another model folder under models/ (e.g. the toy world's biased-data fine-tune) is a "control".
    """
    from t2i_debias.core.options import MODES

    names: list[str] = []
    kinds: dict[str, str] = {}
    for n in ours_models(cfg):
        names.append(n)
        kinds[n] = "base" if n == "base" else ("ours" if n in MODES else "control")
    for m in cfg.sota.methods:
        if m not in METHODS:
            raise ValueError(f"[sota] methods: unknown method {m!r}; known: {', '.join(METHODS)}")
        if m not in names:
            names.append(m)
            kinds[m] = "base" if m == "base" else "baseline"
    return names, kinds


def generate_all(cfg: Config, force: bool = False) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """generated/<name>/ for every row (base and ours via the evaluation stage); records the skips.

    `force` reruns the baselines' stages (their folder generator keeps valid images made with the same
    settings); base and ours are the generation stage's and are not remade here, so a forced pipeline
    run does not generate the same (model, prompt, seed) twice.
    """
    names, kinds = method_names(cfg)
    ours = ours_models(cfg)
    skipped: dict[str, str] = {}
    for name in names:
        if kinds[name] == "baseline":
            reason = check_applicable(cfg, name)
            if reason:
                log.warning("[sota] %s not applicable: %s", name, reason)
                skipped[name] = reason
                continue
            generate_method(cfg, name, force=force)
        else:  # the generation stage's own images: made once, not again under --force (their manifest decides)
            from t2i_debias.stages.generated import generate_model

            generate_model(cfg, name, ours[name], force=False)
    atomic_write_json(RunLayout(cfg.run_dir).sota_skipped, skipped)
    return names, kinds, skipped


def _rows(cfg: Config) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Rows, kinds and the skips recorded by `generate_all` (which must have run)."""
    names, kinds = method_names(cfg)
    path = RunLayout(cfg.run_dir).sota_skipped
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run sota_evaluation/gen-images.py first")
    return names, kinds, json.loads(path.read_text())


def classify_all(cfg: Config, force: bool = False) -> None:
    """Classify the images of every row that ran (bias/<name>/)."""
    names, kinds, skipped = _rows(cfg)
    factory = classifier_factory_for(cfg)  # one classifier for every method, built only if needed
    for n in base_first(names):  # the base first: every other row is paired with its predictions
        if n not in skipped:  # base and ours are the bias stage's (as in generate_all)
            classify_model(cfg, n, force=force and kinds[n] == "baseline", factory=factory)


def quality_all(cfg: Config, force: bool = False) -> None:
    """quality/<name>.json (+ .csv) for every row that ran, with the quality stage's per-model code:
    CLIP-T, CLIP-I against generated/base (same prompt and seed), FID/KID when [quality] reference is set.

    Its manifest is sota/quality/_manifest.json, apart from the evaluation stage's quality/ manifest.
    """
    names, _, skipped = _rows(cfg)
    names = [n for n in names if n not in skipped]
    q = cfg.quality
    lay = RunLayout(cfg.run_dir)
    inputs = [lay.generated_metadata(n) for n in names] + ([Path(q.reference)] if q.reference else [])
    config = {**cfg.section_dict("quality"), "smoke": cfg.run.smoke, "models": names}
    stage = Stage("sota:quality", lay.sota_quality, config, inputs)

    def body(st: Stage) -> Any:
        return quality_for(cfg, names, lay.quality), {"models": names}

    _run_stage(stage, body, force=force, log=log.info)


def write_comparison(cfg: Config, force: bool = False) -> Path:
    """sota/comparison.csv, comparison.md, methods.json and plots from bias/ and quality/."""

    names, kinds, skipped = _rows(cfg)
    lay = RunLayout(cfg.run_dir)
    out = lay.sota
    inputs = [RunLayout(cfg.run_dir).prompts_csv, lay.sota_skipped]
    for n in names:
        if n not in skipped:
            inputs += [lay.bias_summary(n), lay.bias_predictions(n)]  # + Δ vs ours
            inputs += [lay.generated_metadata(n)] if is_toy(cfg.labels) else []
            q = lay.quality_json(n)
            inputs += [q] if q.is_file() else []
    config = {**cfg.section_dict("sota"), "rows": names, "base_model": model_name(cfg.run),
              "paired_vs_ours": {"n_bootstrap": cfg.bias.n_bootstrap, "ci": cfg.bias.ci,
                                 "resample": cfg.bias.paired_resample, "seed": cfg.run.seed}}
    if is_toy(cfg.labels):
        config["toy_quality"] = {"images_dir": cfg.mpii.images_dir, "labels": cfg.section_dict("labels")["labels"]}
    stage = Stage("sota", out, config, inputs)

    def body(st: Stage) -> Any:
        ran = [n for n in names if n not in skipped]
        extra = None
        if is_toy(cfg.labels):
            extra = toy_quality(cfg.labels, cfg.mpii.images_dir, cfg.run_dir, ran)
        rows = comparison_rows(cfg.run_dir, names, skipped, kinds, bias=cfg.bias, seed=cfg.run.seed,
                               race_classes=race_classes(cfg.labels.backend, cfg.analysis.race_classes),
                               base_model=model_name(cfg.run), base_model_path=base_model(cfg), extra=extra)
        df = check_settings(rows, cfg.sota.allow_mixed)
        outs = [atomic_write_csv(lay.comparison_csv, df),
                atomic_write_text(lay.comparison_md, to_markdown(df, model_name(cfg.run))),
                atomic_write_json(lay.methods_json, {n: _method_info(n, kinds[n], skipped) for n in names}),
                lay.sota_skipped]
        outs += plot_or_warn(lambda: plot(df, out), f"{out}/*.png") or []
        return outs, {"methods": names, "skipped": skipped}

    _run_stage(stage, body, force=force, log=log.info)
    return lay.comparison_csv


def run_stage(cfg: Config, force: bool = False) -> None:
    """Generate, classify and measure every method, then write sota/comparison.{csv,md} and plots."""
    generate_all(cfg, force=force)
    classify_all(cfg, force=force)
    quality_all(cfg, force=force)
    write_comparison(cfg, force=force)


def _method_info(name: str, kind: str, skipped: dict[str, str]) -> dict[str, Any]:
    if kind != "baseline":
        return {"kind": kind}
    import sys

    c = method_class(name)
    return {"kind": kind, "citation": c.citation, "doc": (sys.modules[c.__module__].__doc__ or "").strip(),
            "skipped": skipped.get(name)}
