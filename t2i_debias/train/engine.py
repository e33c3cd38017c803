"""One training loop for the three modes of contrastive fine-tuning: text, unet, both (DESIGN.md §2).

`train_mode` reads top to bottom: `setup` (accelerator, parts, data, optimizer, resume) -> `fit` (the
optimizer steps, with logging, checkpoints and snapshots) -> `save` (weights, log, plot, model card).
A mode is a set of trainable parts plus loss weights (`modes`); one batch's forward pass is `step`.
Runs as is, or under `accelerate launch` on several processes. The pipeline stage that trains every
mode of a config into <run_dir>/models/<mode>/ is `t2i_debias.stages.models`.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t2i_debias.core.config import AugmentSection, RunSection, TrainSection
from t2i_debias.core.errors import UserError
from t2i_debias.core.options import LOSS_NAMES
from t2i_debias.train import checkpoints, outputs, trackers
from t2i_debias.train.data import EpochSampler, TripletDataset, tokenize
from t2i_debias.train.modes import (
    is_resolved,
    learning_rate_for,
    resolve_weights,
    train_hash,
    training_selection,
    use_cpu,
    weight_dtype_for,
)
from t2i_debias.train.parts import (
    Parts,
    enable_gradient_checkpointing,
    load_parts,
    move_to,
    trainable_parameters,
)
from t2i_debias.train.step import compute_losses

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """A loss, gradient norm or weight became NaN or infinite: nothing is saved (the message names the step)."""


@dataclass
class TrainResult:
    """What `train_mode` produced."""

    out_dir: Path
    steps: int
    outputs: list[Path] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainState:
    """Everything one mode's training holds: what it trains, on what, how far it got."""

    train: TrainSection  # the resolved [train] section (max_train_steps counted from epochs when those are set)
    run: RunSection  # seed, name
    augment: AugmentSection  # the caption templates
    mode: str
    base: str
    data_dir: Path
    out_dir: Path
    init_lora: str | Path | None
    origin: str | None
    weights: dict[str, float]
    accelerator: Any = None
    parts: Parts | None = None
    params: list[torch.nn.Parameter] = field(default_factory=list)
    ema: Any = None
    selection: Any = None
    loader: Any = None
    optimizer: Any = None
    lr_scheduler: Any = None
    ref_ids: torch.Tensor | None = None  # the reference prompts' ids, for `preserve`
    thash: str = ""
    global_step: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"


def train_mode(train: TrainSection, run: RunSection, augment: AugmentSection, mode: str, base: str,
               data_dir: str | Path, out_dir: str | Path, init_lora: str | Path | None = None,
               origin: str | None = None) -> TrainResult:
    """Train one mode from `base` on the triplets in `data_dir`; write weights, log, plot and card to `out_dir`.

    `train`: the resolved [train] section (`modes.resolved_train`); `run`: its seed, device and name;
    `augment`: the caption templates. `init_lora`: a previous mode's LoRA folder whose adapters are loaded
    first (LoRA chains); `origin`: the original base model when `base` is a previous mode's output (for the
    model card).
    """
    state = setup(train, run, augment, mode, base, data_dir, out_dir, init_lora, origin)
    fit(state)
    result = TrainResult(out_dir=state.out_dir, steps=state.global_step, weights=state.weights, log=state.rows)
    check_finite(state)
    result.outputs = save(state, state.out_dir)
    del state  # free the models before the next mode loads its own
    gc.collect()
    return result


# ----------------------------------------------------------------------------- setup
def setup(train: TrainSection, run: RunSection, augment: AugmentSection, mode: str, base: str,
          data_dir: str | Path, out_dir: str | Path, init_lora: str | Path | None = None,
          origin: str | None = None) -> TrainState:
    """Everything before the first step: accelerator, parts, data, optimizer, and the checkpoint to resume."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, set_seed

    if not is_resolved(train):
        raise ValueError("train_mode takes the resolved [train] section (modes.resolved_train)")
    train = copy.deepcopy(train)  # max_train_steps may be counted from epochs below
    state = TrainState(train=train, run=run, augment=augment, mode=mode, base=base, data_dir=Path(data_dir),
                       out_dir=Path(out_dir), init_lora=init_lora, origin=origin,
                       weights=resolve_weights(mode, train.weights))
    state.accelerator = Accelerator(
        cpu=use_cpu(run.device),
        mixed_precision=train.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=train.gradient_accumulation_steps, sync_with_dataloader=False),
        **trackers.accelerator_kwargs(train, state.out_dir),
    )
    set_seed(run.seed)
    # the models: frozen parts in the weight dtype, trained ones (or their adapters) in fp32, EMA of those
    _load_models(state)
    # the data: the selected samples, in an epoch order of their own
    dataset = _load_data(state)
    # optimizer and learning-rate schedule, then accelerate wraps what trains
    _prepare_optimizer(state, dataset)
    # resume from the latest checkpoint of the same training config, or start fresh
    _resume(state)
    return state


def _load_models(state: TrainState) -> None:
    """Load the mode's parts onto the device and collect the trainable parameters (and their EMA)."""
    from diffusers.training_utils import EMAModel

    train = state.train
    parts = load_parts(state.base, state.mode, state.weights, train.lora_rank, state.init_lora,
                       weight_dtype_for(train.mixed_precision))
    if train.gradient_checkpointing:
        enable_gradient_checkpointing(parts)
    device = state.accelerator.device
    move_to(parts, device)
    params = trainable_parameters(parts)
    if not params:
        raise RuntimeError(f"mode {state.mode}: no trainable parameters")
    state.ema = EMAModel(params, decay=train.ema_decay) if train.use_ema else None
    if state.ema is not None:
        state.ema.to(device)
    state.parts, state.params = parts, params


def _load_data(state: TrainState) -> TripletDataset:
    """The dataset and loader of the selected samples; epochs become optimizer steps when given."""
    train, parts = state.train, state.parts
    triplets, state.selection = training_selection(state.augment, train, state.weights, state.data_dir)
    dataset = TripletDataset(triplets, parts.tokenizer, train.resolution, state.selection.items,
                             train.denoise_caption)
    sampler = EpochSampler(len(dataset), state.run.seed,
                           weights=None if state.selection.uniform else state.selection.weights)
    state.loader = torch.utils.data.DataLoader(dataset, batch_size=train.train_batch_size, sampler=sampler,
                                               num_workers=train.dataloader_num_workers)
    return dataset


def _prepare_optimizer(state: TrainState, dataset: TripletDataset) -> None:
    """AdamW and the learning-rate schedule; accelerate wraps the trained parts, optimizer, loader, schedule."""
    from diffusers.optimization import get_scheduler

    train, parts, accelerator = state.train, state.parts, state.accelerator
    if train.num_train_epochs > 0:  # epochs -> optimizer steps (as diffusers' scripts count them)
        batches = math.ceil(len(dataset) / (train.train_batch_size * accelerator.num_processes))
        train.max_train_steps = train.num_train_epochs * math.ceil(batches / train.gradient_accumulation_steps)
    state.ref_ids = (tokenize(parts.tokenizer, list(train.preserve_prompts)) if state.weights["preserve"] > 0
                     else None)
    optimizer = torch.optim.AdamW(state.params, lr=learning_rate_for(train, state.mode),
                                  weight_decay=train.adam_weight_decay)
    lr_scheduler = get_scheduler(train.lr_scheduler, optimizer,
                                 num_warmup_steps=train.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=train.max_train_steps * accelerator.num_processes)
    trained_modules = [getattr(parts, n) for n in parts.trained]
    prepared = accelerator.prepare(*trained_modules, optimizer, state.loader, lr_scheduler)
    for n, m in zip(parts.trained, prepared, strict=False):
        setattr(parts, n, m)
    state.optimizer, state.loader, state.lr_scheduler = prepared[len(trained_modules):]


def _resume(state: TrainState) -> None:
    """Load the checkpoint to resume (its state, EMA, step and log so far), or clear stale checkpoints."""
    train, accelerator = state.train, state.accelerator
    state.thash = train_hash(state.train, state.run.seed, state.mode, state.base, state.data_dir, state.init_lora)
    resume = checkpoints.find_resume(state.ckpt_dir, train.resume_from_checkpoint, state.thash,
                                     train.max_train_steps)
    resume = checkpoints.safe_to_resume(resume, state.ema)
    if resume is not None:
        accelerator.load_state(str(resume))
        if state.ema is not None:
            checkpoints.load_ema(state.ema, resume / checkpoints.EMA_STATE)
            state.ema.to(accelerator.device)
        state.global_step = checkpoints.checkpoint_step(resume)
        state.rows = [r for r in outputs.read_log(resume / "training_log.csv") if r["step"] <= state.global_step]
        log.info("mode %s: resumed from %s (step %d)", state.mode, resume, state.global_step)
    elif accelerator.is_main_process and state.ckpt_dir.exists():
        shutil.rmtree(state.ckpt_dir)  # stale checkpoints of another config must not be resumed later
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- fit
def fit(state: TrainState) -> None:
    """Optimizer steps until max_train_steps: forward, backward, clip, step; log, checkpoint, snapshot."""
    from tqdm.auto import tqdm

    train, accelerator, parts = state.train, state.accelerator, state.parts
    accum = train.gradient_accumulation_steps
    per_epoch = len(state.loader)
    batch_number = state.global_step * accum  # a resumed run continues the same sequence of batches
    window: dict[str, float] = {}  # each loss term's mean over the batches of one optimizer step
    trackers.start(accelerator, train, state.mode, state.run.name)
    progress = tqdm(total=train.max_train_steps, initial=state.global_step, desc=f"train {state.mode}",
                    disable=not accelerator.is_main_process)
    while state.global_step < train.max_train_steps:
        epoch, offset = divmod(batch_number, per_epoch)
        epoch_loader = accelerator.skip_first_batches(state.loader, offset) if offset else state.loader
        epoch_loader.set_epoch(epoch)
        for batch in epoch_loader:
            # forward and backward; the optimizer steps once every `accum` batches
            with accelerator.accumulate(*[getattr(parts, n) for n in parts.trained]):
                terms = compute_losses(parts, batch, state.weights, train, seed=state.run.seed,
                                       batch_number=batch_number, ref_ids=state.ref_ids)
                accelerator.backward(terms["loss"])
                _clip_and_step(state, terms)
            batch_number += 1
            for k in ["loss", *_active(state)]:
                window[k] = window.get(k, 0.0) + terms[k].detach().float().item() / accum
            if not accelerator.sync_gradients:
                continue
            # one optimizer step done: EMA, log, checkpoint, snapshot
            state.global_step += 1
            if state.ema is not None:
                state.ema.step(state.params)
            row = _log_step(state, window)
            window = {}
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.4g}")
            _save_on_schedule(state)
            if state.global_step >= train.max_train_steps:
                break
    progress.close()
    trackers.end(accelerator, train)
    accelerator.wait_for_everyone()


def _active(state: TrainState) -> list[str]:
    """The loss terms with a weight above 0, in LOSS_NAMES order."""
    return [k for k in LOSS_NAMES if state.weights[k] > 0]


def _clip_and_step(state: TrainState, terms: dict[str, torch.Tensor]) -> None:
    """Clip the gradient norm on a syncing batch (a non-finite norm stops the run), then step."""
    train, accelerator = state.train, state.accelerator
    if accelerator.sync_gradients and train.max_grad_norm > 0:
        norm = accelerator.clip_grad_norm_(state.params, train.max_grad_norm)
        # under fp16 the grad scaler skips an overflowing step itself (and lowers its scale)
        if accelerator.scaler is None and norm is not None and not math.isfinite(float(norm)):
            raise diverged(state.mode, f"gradient norm is {float(norm)}", state.global_step + 1, train)
    state.optimizer.step()
    state.lr_scheduler.step()
    state.optimizer.zero_grad()


def _log_step(state: TrainState, window: dict[str, float]) -> dict[str, Any]:
    """The step's row (loss terms averaged over processes, learning rate), logged to the trackers."""
    train, accelerator = state.train, state.accelerator
    keys = ["loss", *_active(state)]
    mean = accelerator.reduce(torch.tensor([window[k] for k in keys], device=accelerator.device), "mean")
    row = {"step": state.global_step, **dict(zip(keys, mean.tolist(), strict=True)),
           "lr": state.lr_scheduler.get_last_lr()[0]}
    if not math.isfinite(row["loss"]):  # the same reduced value on every process: all stop together
        raise diverged(state.mode, f"loss is {row['loss']}", state.global_step, train)
    state.rows.append(row)
    trackers.log_row(accelerator, train, row)
    if trackers.wants_images(train, state.global_step):
        trackers.log_samples(accelerator, train, state.parts, state.global_step, state.run.seed)
    return row


def _save_on_schedule(state: TrainState) -> None:
    """A checkpoint every `checkpointing_steps`, a loadable snapshot at each of `snapshot_steps`."""
    train, step = state.train, state.global_step
    if train.checkpointing_steps > 0 and step % train.checkpointing_steps == 0:
        check_finite(state)
        checkpoints.save_checkpoint(state.accelerator, state.ckpt_dir, step, state.rows, state.thash,
                                    train.checkpoints_total_limit, state.ema)
    if step in train.snapshot_steps and step < train.max_train_steps:
        check_finite(state)
        save(state, state.out_dir / f"step-{step}")
        if state.accelerator.is_main_process:
            log.info("snapshot at step %d -> %s", step, state.out_dir / f"step-{step}")


def diverged(mode: str, what: str, step: int, train: TrainSection) -> TrainingDiverged:
    """The one-line error for a non-finite training value: what, at which step, under which learning rate."""
    return TrainingDiverged(
        f"mode {mode}: the {what} at step {step} (learning rate {learning_rate_for(train, mode):g}, "
        f"mixed_precision {train.mixed_precision}): training diverged and nothing was saved; lower [train] "
        f"learning_rate (or mode_learning_rates.{mode}), or train in fp32 (mixed_precision = 'no')")


def check_finite(state: TrainState) -> None:
    """Raise TrainingDiverged when a trained weight (or its EMA) is NaN or infinite: never save such weights."""
    tensors = list(state.params) + (list(state.ema.shadow_params) if state.ema is not None else [])
    with torch.no_grad():
        bad = sum(int(not torch.isfinite(t).all()) for t in tensors)
    if bad:
        raise diverged(state.mode, f"trained weights are not finite ({bad} of {len(tensors)} tensors)",
                       state.global_step, state.train)


# ----------------------------------------------------------------------------- save
def save(state: TrainState, folder: Path) -> list[Path]:
    """Write the model so far into `folder` (EMA weights when EMA is on): weights (pipeline folder or LoRA),
    training_log.csv, loss.png and README.md. The main process writes; returns its paths ([] elsewhere)."""
    accelerator, parts, ema = state.accelerator, state.parts, state.ema
    final = folder == state.out_dir  # nothing trains after the final save: its EMA weights stay in place
    saved: list[Path] = []
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            if not final:
                ema.store(state.params)
            ema.copy_to(state.params)
        keep = parts.adapters if parts.lora else parts.trained
        modules = {n: accelerator.unwrap_model(getattr(parts, n)) for n in keep}
        saved = _write_outputs(state, folder, modules)
        if ema is not None and not final:
            ema.restore(state.params)
    accelerator.wait_for_everyone()
    return saved


def _write_outputs(state: TrainState, folder: Path, modules: dict[str, Any]) -> list[Path]:
    """The mode's weights, training_log.csv, loss.png and README.md (the model card) in `folder`."""
    train, selection, mode = state.train, state.selection, state.mode
    saved = (outputs.save_lora(folder, modules) if state.parts.lora
             else outputs.save_pipeline(folder, state.base, modules))
    saved.append(outputs.write_log(folder / "training_log.csv", state.rows))
    saved.append(outputs.plot_loss(folder / "loss.png", state.rows, f"mode {mode}"))
    saved.append(outputs.write_model_card(
        folder / "README.md", mode=mode, base=str(state.origin or state.base), data_dir=str(state.data_dir),
        n_triplets=len({it.triplet for it in selection.items}), weights=state.weights,
        train=dataclasses.asdict(train), steps=state.global_step, lora=state.parts.lora,
        init_from=str(state.init_lora or state.base), n_samples=len(selection.items), dropped=selection.dropped))
    return saved
