"""The guidance sweep (optional stage): every model again at several classifier-free guidance scales.

`[bias] guidance_sweep = [1.0, 4.0, 7.5]` generates each model of the run (base and every trained mode,
or `[bias] sweep_models`) at each scale, on the same prompts and seeds (`sweep_images_per_prompt`, default
`generate.images_per_prompt`), and runs the bias stage's code on each folder, paired with the base at the
same scale. Guidance sharpens whatever imbalance a model has left, so a method that only debiases at
guidance 1 shows it here. Layout, one stage manifest per folder:

    sweep/generated/<model>/g<scale>/   images/, metadata.csv (as generated/<model>/)
    sweep/bias/<model>/g<scale>/        predictions.csv, by_prompt.csv, summary.json (as bias/<model>/)
    sweep/sweep.csv                     model × scale × attribute × metric: value, CI, floor, excess, paired Δ
    sweep/bias_vs_guidance.png          tvd against guidance per model, CI bars, the noise floor dashed
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_csv
from t2i_debias.core.layout import BIAS_SUMMARY, RunLayout, scale_tag
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.core.text import figure
from t2i_debias.metrics.bias import METRIC_NAMES
from t2i_debias.plots import plot_or_warn, plot_sweep
from t2i_debias.stages.bias import classifier_factory_for, evaluate_model
from t2i_debias.stages.common import base_first, models_to_evaluate

log = logging.getLogger(__name__)


def images_per_prompt(cfg: Config) -> int:
    """Images per prompt of the sweep (fewer than the main evaluation keeps it cheap)."""
    return cfg.bias.sweep_images_per_prompt or cfg.generate.images_per_prompt


def sweep_models(cfg: Config) -> dict[str, str]:
    """Name -> spec of the models to sweep, the base first: `[bias] sweep_models`, or every evaluated model."""
    models = models_to_evaluate(cfg)
    wanted = list(cfg.bias.sweep_models) or list(models)
    unknown = [m for m in wanted if m not in models]
    if unknown:
        raise ValueError(f"[bias] sweep_models: {unknown} are not models of this run; known: {list(models)}")
    return {n: models[n] for n in base_first(wanted)}


def generate_at(cfg: Config, name: str, spec: str, scale: float, force: bool = False) -> Path:
    """sweep/generated/<name>/g<scale>/: the model's images at one guidance scale, seeds as generated/<name>/."""
    from t2i_debias.data.prompts import read_prompts
    from t2i_debias.models import base_model, is_lora_dir, load_model, resolve_device, resolve_dtype
    from t2i_debias.sampling import SETTINGS, generate_folder, generation_config

    g = cfg.generate
    n = images_per_prompt(cfg)
    out_dir = RunLayout(cfg.run_dir).sweep_generated(name, scale)
    config = generation_config(g, name, spec, base_model(cfg) if is_lora_dir(spec) else None)
    config["generate"].update(guidance_scale=float(scale), images_per_prompt=n)
    stage = Stage(f"sweep:generated:{name}:{scale_tag(scale)}", out_dir, config, [RunLayout(cfg.run_dir).prompts_csv])

    def body(st: Stage) -> Any:
        prompts = read_prompts(RunLayout(cfg.run_dir).prompts_csv)
        device = resolve_device(cfg.run.device)
        dtype = resolve_dtype(g.dtype, device)
        size = g.resolution or None
        base = base_model(cfg)
        settings = {"fingerprint": config["fingerprint"], "dtype": str(dtype)}
        meta = generate_folder(lambda: load_model(spec, base, device=device, dtype=dtype), out_dir, prompts,
                               name, n, g.base_seed, g.batch_size, g.num_inference_steps, float(scale), size, size,
                               settings=settings)
        return [meta, out_dir / SETTINGS], {"n_images": len(prompts) * n, "guidance_scale": float(scale)}

    _run_stage(stage, body, force=force, log=log.info)
    return out_dir


def sweep_rows(summaries: dict[tuple[str, float], dict[str, Any]]) -> pd.DataFrame:
    """Long table of the sweep: one row per (model, scale, attribute, metric) with value, CI, floor, excess
    and the paired difference to the base at the same scale."""
    rows = []
    for (model, scale), s in summaries.items():
        paired = s.get("paired_vs_base") or {}
        for attr, blk in s.get("attributes", {}).items():
            for m in METRIC_NAMES:
                ci = (blk.get("ci") or {}).get(m) or (None, None)
                pm = ((paired.get("attributes") or {}).get(attr) or {}).get(m) or {}
                dci = pm.get("ci") or (None, None)
                rows.append({"model": model, "guidance_scale": scale, "attribute": attr, "metric": m,
                             "value": blk["aggregate"].get(m), "lo": ci[0], "hi": ci[1],
                             "floor": (blk.get("floor") or {}).get(m), "excess": (blk.get("excess") or {}).get(m),
                             "diff_vs_base": pm.get("diff"), "diff_lo": dci[0], "diff_hi": dci[1], "p": pm.get("p"),
                             "verdict": pm.get("verdict"), "face_rate": s.get("face_rate"),
                             "ambiguous_rate": s.get("ambiguous_rate"),
                             "images_per_prompt": (s.get("generation") or {}).get("images_per_prompt")})
    return pd.DataFrame(rows)


def run_stage(cfg: Config, force: bool = False, classifier: Any = None) -> None:
    """Generate and evaluate every swept model at every `[bias] guidance_sweep` scale; no-op when empty.

    The classifier is the [labels] one (built once, only if needed) unless `classifier` is given.
    """

    scales = [float(s) for s in cfg.bias.guidance_sweep]
    if not scales:
        log.info("[sweep] no [bias] guidance_sweep configured - skipping")
        return
    if not RunLayout(cfg.run_dir).prompts_csv.is_file():
        raise FileNotFoundError(f"{RunLayout(cfg.run_dir).prompts_csv} not found: run the prompts stage first")
    models = sweep_models(cfg)
    factory = classifier_factory_for(cfg, classifier)
    lay = RunLayout(cfg.run_dir)
    root = lay.sweep
    summaries: dict[tuple[str, float], Path] = {}
    for scale in scales:
        tag = scale_tag(scale)
        for name, spec in models.items():
            gen_dir = generate_at(cfg, name, spec, scale, force=force)
            base_dir = lay.sweep_bias("base", scale) if name != "base" and "base" in models else None
            out = evaluate_model(cfg, name, factory, force=force, gen_dir=gen_dir, out_dir=lay.sweep_bias(name, scale),
                                 base_dir=base_dir, stage_name=f"sweep:bias:{name}:{tag}")
            summaries[(name, scale)] = out / BIAS_SUMMARY
    stage = Stage("sweep", root, {"scales": scales, "models": list(models),
                                  "images_per_prompt": images_per_prompt(cfg)}, list(summaries.values()))

    def body(st: Stage) -> Any:
        data = {k: json.loads(p.read_text()) for k, p in summaries.items()}
        df = sweep_rows(data)
        outs = [atomic_write_csv(lay.sweep_csv, df)]
        png = plot_or_warn(lambda: plot_sweep(df, lay.sweep_plot), str(lay.sweep_plot))
        outs += [png] if png else []
        g = df[(df["attribute"] == "gender") & (df["metric"] == "tvd")]
        for r in g.itertuples(index=False):
            log.info("[sweep] %s @ guidance %s: gender tvd %s (floor %s)", r.model, figure(r.guidance_scale),
                     figure(r.value), figure(r.floor))
        return outs, {"scales": scales, "models": list(models)}

    _run_stage(stage, body, force=force, log=log.info)
