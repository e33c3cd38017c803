"""The `models` stage: train every mode of the config into <run_dir>/models/<mode>/, and models/control.

Sequential schedule: text -> unet -> both (those listed), each starting from the previous result (a LoRA
chain loads the previous adapters); joint: both only. Each mode is a core.stage.Stage, skipped when its
manifest matches. `cli.main_for_mode` is the shared body of finetune/train_text_to_image_{text,unet,both}.py:
diffusers-style flags, one mode. Flags of [train] are generated from the config (so --help shows
defaults); the flags diffusers users know and that live elsewhere (--pretrained_model_name_or_path,
--train_data_dir, --output_dir, --seed, --rank) are added here. Run under `accelerate launch` for
several GPUs.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from t2i_debias.core.config import Config, TrainSection
from t2i_debias.core.files import MANIFEST
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.options import modes_to_run
from t2i_debias.core.stage import Stage
from t2i_debias.train.engine import TrainingDiverged, train_mode
from t2i_debias.train.modes import control_config, resolved_train, train_hash, use_cpu

log = logging.getLogger(__name__)


def resolved(cfg: Config, train: TrainSection | None = None) -> TrainSection:
    """The run's [train] section (or `train`, e.g. the control's) resolved against [run] device and
    [generate] guidance_scale (`modes.resolved_train`): what `train_mode` and `train_hash` take."""
    return resolved_train(cfg.train if train is None else train, cfg.run.device, cfg.generate.guidance_scale)


def train_stage(cfg: Config, mode: str, base: str, data_dir: str | Path, out_dir: str | Path, force: bool = False,
                init_lora: str | Path | None = None, prev_manifest: Path | None = None,
                origin: str | None = None, train: TrainSection | None = None) -> bool:
    """`train_mode` as a core.stage.Stage: skipped when its manifest matches; returns True when it trained.
    `train`: the [train] section to train with (the control's), else the run's."""
    from accelerate import PartialState

    state = PartialState(cpu=use_cpu(cfg.run.device))
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    t = resolved(cfg, train)
    stage = Stage(name=f"models/{out_dir.name}", folder=out_dir,
                  config={"train": train_hash(t, cfg.run.seed, mode, base, data_dir, init_lora),
                          "max_train_steps": cfg.train.max_train_steps},
                  inputs=[data_dir / "metadata.jsonl"] + ([prev_manifest] if prev_manifest else []))
    complete = stage.is_complete() and not force
    state.wait_for_everyone()
    if complete:
        log.info("[models/%s] complete (manifest matches) - skipping; use --force to rerun", out_dir.name)
        return False
    if state.is_main_process:
        stage.begin()
    state.wait_for_everyone()
    try:
        result = train_mode(t, cfg.run, cfg.augment, mode, base, data_dir, out_dir, init_lora, origin)
    except TrainingDiverged:
        if state.is_main_process:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty: a folder begin() made for this run leaves no trace
        raise
    if state.is_main_process:
        stage.finish(result.outputs, {"steps": result.steps, "weights": result.weights, "base": str(base)})
        log.info("[models/%s] done -> %s", out_dir.name, out_dir)
    state.wait_for_everyone()
    return True


def train_control(cfg: Config, base: str, data_dir: Path, out_dir: Path, mode: str, force: bool = False) -> bool:
    """models/control: `mode` trained from `base` with `control_config` (a core.stage.Stage, like every mode)."""
    return train_stage(cfg, mode, base, data_dir, out_dir, force=force, origin=base,
                       train=control_config(cfg.train, mode))


def run_stage(cfg: Config, force: bool = False) -> None:
    """Train every mode of the config into <run_dir>/models/<mode>/ (sequential or joint schedule), and
    models/control when `[train] control`."""
    from t2i_debias.models import base_model

    base = base_model(cfg)
    lay = RunLayout(cfg.run_dir)
    data_dir = lay.enriched
    lora = cfg.train.lora_rank > 0
    prev: Path | None = None
    for mode in modes_to_run(cfg.train):
        out = lay.model(mode)
        start = base if (lora or prev is None) else str(prev)
        train_stage(cfg, mode, start, data_dir, out, force=force,
                    init_lora=prev if (lora and prev is not None) else None,
                    prev_manifest=(prev / MANIFEST) if prev is not None else None, origin=base)
        prev = out
    if cfg.train.control:
        train_control(cfg, base, data_dir, lay.model("control"), modes_to_run(cfg.train)[-1], force=force)
