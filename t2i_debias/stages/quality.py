"""The quality stage: quality/<model>.json and .csv for every generated model (`quality_for`, which the SOTA stage
also runs), measured by `t2i_debias.metrics.quality`."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_csv, atomic_write_json, hash_file
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.core.text import figure
from t2i_debias.metrics.clip_score import ClipEmbedder
from t2i_debias.metrics.quality import (
    InceptionFeatures,
    evaluate_model,
    prepare_inception,
    reference_features,
)
from t2i_debias.models import resolve_device
from t2i_debias.stages.common import finished_generated, models_to_evaluate

log = logging.getLogger(__name__)


def run_stage(cfg: Config, force: bool = False) -> None:
    """Quality of every generated model: FID/KID against `quality.reference`, CLIP-T, CLIP-I vs base."""

    q = cfg.quality
    lay = RunLayout(cfg.run_dir)
    gen_root = lay.generated
    names = finished_generated(cfg, models_to_evaluate(cfg))
    inputs = [lay.generated_metadata(n) for n in names]
    if q.reference:
        inputs.append(Path(q.reference))
    config = cfg.section_dict("quality")
    config["smoke"] = cfg.run.smoke
    config["models"] = names
    stage = Stage("quality", lay.quality, config, inputs)

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        if not names:
            raise FileNotFoundError(f"no generated images under {gen_root}: run the generation stage first")
        return quality_for(cfg, names, st.folder), {"models": names}

    _run_stage(stage, body, force=force, log=log.info)


def quality_for(cfg: Config, names: list[str], out_dir: Path) -> list[Path]:
    """Write `<out_dir>/<name>.json` and `.csv` for each of generated/<name>: FID/KID against
    `quality.reference` (when set), CLIP-T, CLIP-I against generated/base. Shared by the quality and
    SOTA stages, so every model is measured by the same code."""
    q = cfg.quality
    gen_root = RunLayout(cfg.run_dir).generated
    device = resolve_device(cfg.run.device)
    extractor = ref = weights = None
    if q.reference:
        weights = prepare_inception(q.inception, cfg.run.smoke)
        extractor = InceptionFeatures(q.fid_features, device=device, batch_size=q.batch_size)
        ref = reference_features(q.reference, extractor, weights)
    clip = ClipEmbedder("tiny:clip" if cfg.run.smoke else q.clip_model, device=device, batch_size=q.batch_size)
    outputs: list[Path] = []
    base_dir = gen_root / "base" if "base" in names else None
    for name in names:
        res, table = evaluate_model(gen_root / name, base_dir, ref, extractor, clip, q, cfg.run.seed)
        res.update(model=name, reference=q.reference or None, clip_model=clip.spec, clip_score=q.clip_score,
                   n_reference=None if ref is None else ref.get("n"),
                   inception_weights=None if weights is None else hash_file(weights),
                   fid_features=q.fid_features)
        res = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in res.items()}
        outputs.append(atomic_write_json(out_dir / f"{name}.json", res))
        outputs.append(atomic_write_csv(out_dir / f"{name}.csv", table))
        log.info("[quality] %s: fid=%s kid=%s clip_t=%s clip_i=%s", name,
                 *(figure(res.get(k)) for k in ("fid", "kid", "clip_t", "clip_i")))
    return outputs
