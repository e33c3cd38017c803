"""The generated stage: images of every model to evaluate (the base model and each trained mode) under
generated/<model>/, one stage manifest per model (`generate_model`, which the SOTA stage also runs for the
run's own models), through the folder generator of `t2i_debias.sampling`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.config import Config
from t2i_debias.core.files import MANIFEST, Staged
from t2i_debias.core.layout import GENERATED_METADATA, RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.data.prompts import read_prompts
from t2i_debias.models import base_model, check_model, load_model, resolve_device, resolve_dtype
from t2i_debias.sampling import (
    SETTINGS,
    _Dist,
    generate_folder,
    generation_config,
    generation_record,
)
from t2i_debias.stages.common import models_to_evaluate

log = logging.getLogger(__name__)


def run_stage(cfg: Config, force: bool = False) -> None:
    """Generate images for every model to evaluate (the base model and each trained mode)."""
    from t2i_debias.stages import prompts

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist = _Dist()
    if not RunLayout(cfg.run_dir).prompts_csv.is_file():  # a script run from flags alone: build prompts.csv first
        if dist.is_main:
            prompts.run_stage(cfg, force=False)
        dist.barrier()
    for name, spec in models_to_evaluate(cfg).items():
        generate_model(cfg, name, spec, force=force, state=dist.state)


def generate_model(cfg: Config, name: str, spec: str, force: bool = False, state: Any = None) -> Path:
    """Generate (or complete) `generated/<name>/` for one model; skipped when its manifest matches."""
    dist = _Dist(state)
    g = cfg.generate
    out_dir = RunLayout(cfg.run_dir).generated_model(name)
    base = base_model(cfg)
    check_model(spec, base)  # before anything under out_dir is touched
    config = generation_config(g, name, spec, base)
    stage = Stage(f"generated:{name}", out_dir, config, [RunLayout(cfg.run_dir).prompts_csv])
    complete = stage.is_complete() and not force
    prompts = read_prompts(RunLayout(cfg.run_dir).prompts_csv)
    # Under accelerate each process gets its own device (cuda:<local rank>); run.device overrides it.
    use_state = dist.state is not None and cfg.run.device == "auto"
    device = str(dist.state.device) if use_state else resolve_device(cfg.run.device)
    dtype = resolve_dtype(g.dtype, device)
    size = g.resolution or None
    settings = {"fingerprint": config["fingerprint"], "dtype": str(dtype)}
    gen = generation_record(name, g.num_inference_steps, g.guidance_scale, size, size, g.base_seed)
    # Resuming an unfinished folder (no manifest) that these settings only add to happens in place; any
    # change to a finished folder (--force, other settings or prompts, more images) is built beside it.
    in_place = not force and not (out_dir / MANIFEST).exists() and _extends(out_dir, {**gen, **settings}, prompts)
    dist.barrier()  # everyone has looked at the folder before the main process changes it
    if complete:
        log.info("[generated:%s] complete (manifest matches) - skipping; use --force to rerun", name)
        return out_dir
    staged = None if in_place else Staged(out_dir)
    work = out_dir if staged is None else staged.path
    if dist.is_main:
        if staged is None:
            stage.begin()
        else:
            staged.open(resume=not force)
            if not force:
                _link_kept_images(out_dir, work, {**gen, **settings}, prompts)
    dist.barrier()
    meta = generate_folder(lambda: load_model(spec, base, device=device, dtype=dtype), work, prompts, name,
                           g.images_per_prompt, g.base_seed, g.batch_size, g.num_inference_steps,
                           g.guidance_scale, size, size, settings=settings, state=dist.state)
    if dist.is_main:
        if staged is not None:
            staged.commit()
            meta = out_dir / GENERATED_METADATA
        stage.finish([meta, out_dir / SETTINGS], extra={"n_images": len(prompts) * g.images_per_prompt,
                                                        "processes": dist.world, "device": device})
    dist.barrier()
    return out_dir


def _old_record(out_dir: Path) -> dict[str, Any] | None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return json.loads((out_dir / SETTINGS).read_text())
    return None


def _extends(out_dir: Path, settings: dict[str, Any], prompts: pd.DataFrame) -> bool:
    """True when generating into `out_dir` only adds images (no folder yet, or same settings and prompts)."""
    if not (out_dir / "images").exists():
        return True
    old = _old_record(out_dir)
    if old is None or old.get("settings") != settings:
        return False
    new_prompts = dict(zip(prompts["prompt_id"], prompts["prompt"], strict=True))
    return all(new_prompts.get(pid, text) == text for pid, text in old.get("prompts", {}).items())


def _link_kept_images(out_dir: Path, work: Path, settings: dict[str, Any], prompts: pd.DataFrame) -> int:
    """Hard-link the finished images that stay valid (same settings and prompt text) into the new folder."""
    old = _old_record(out_dir)
    if old is None or old.get("settings") != settings:
        return 0
    new_prompts = dict(zip(prompts["prompt_id"], prompts["prompt"], strict=True))
    n = 0
    for pid, text in old.get("prompts", {}).items():
        src = out_dir / "images" / pid
        if new_prompts.get(pid) != text or not src.is_dir():
            continue
        for f in src.glob("*.png"):
            dst = work / "images" / pid / f.name
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, dst)
                n += 1
    if n:
        log.info("%s: %d finished images kept for the new version", out_dir, n)
    return n
