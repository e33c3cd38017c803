"""Experiment trackers for training ([train] report_to): none | tensorboard | wandb, through accelerate.

Each logged step sends the loss terms and the learning rate; with `log_images_every` > 0, a few
sample images of `log_image_prompts` (fixed seeds) are logged every that many steps by the modes
that train or load a U-Net. Event files go to <mode folder>/logs/ (tensorboard) or to wandb's
own folder (offline when WANDB_MODE=offline).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.config import TrainSection

log = logging.getLogger(__name__)

SAMPLE_STEPS = 20  # inference steps of the logged sample images


def check(train: TrainSection) -> None:
    """Reject a tracker whose package is not installed (its name and log_images_every were checked at load)."""
    if train.report_to != "none":
        import importlib.util

        module = {"tensorboard": "tensorboard", "wandb": "wandb"}[train.report_to]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"[train] report_to = {train.report_to!r} needs the {module} package: "
                             f"pip install {module}")


def accelerator_kwargs(train: TrainSection, out_dir: Path) -> dict[str, Any]:
    """Keyword arguments for `Accelerator(...)`: log_with and the logging folder (empty when report_to = none)."""
    check(train)
    if train.report_to == "none":
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": train.report_to,
            "project_config": ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs"))}


def start(accelerator: Any, train: TrainSection, mode: str, run_name: str) -> None:
    """Open the trackers with the [train] options as hyper-parameters (scalars and strings only)."""
    if train.report_to == "none":
        return
    import dataclasses

    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
               for k, v in dataclasses.asdict(train).items()}
    hparams["mode"] = mode
    kwargs = {"wandb": {"name": f"{run_name}-{mode}"}} if train.report_to == "wandb" else {}
    accelerator.init_trackers(f"{run_name}-{mode}", config=hparams, init_kwargs=kwargs)


def log_row(accelerator: Any, train: TrainSection, row: dict[str, Any]) -> None:
    """Log one training_log.csv row (losses and lr) at its step."""
    if train.report_to == "none":
        return
    accelerator.log({(k if k == "lr" else f"loss/{k}"): float(v) for k, v in row.items() if k != "step"},
                    step=int(row["step"]))


def wants_images(train: TrainSection, step: int) -> bool:
    return train.report_to != "none" and train.log_images_every > 0 and step % train.log_images_every == 0


def log_samples(accelerator: Any, train: TrainSection, parts: Any, step: int, seed: int) -> int:
    """Generate and log one image per `log_image_prompts` entry from the current weights; returns how many.

    Needs a U-Net and a VAE (text mode has neither loaded: nothing is logged and the reason is logged once).
    """
    if not accelerator.is_main_process:
        return 0
    if parts.unet is None or parts.vae is None:
        if step == train.log_images_every:
            log.info("log_images_every: this mode loads no U-Net, so no sample images are logged")
        return 0
    import numpy as np
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from t2i_debias.sampling import generate_images

    unet, te = accelerator.unwrap_model(parts.unet), accelerator.unwrap_model(parts.text_encoder)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=te, tokenizer=parts.tokenizer, unet=unet,
                                   scheduler=DDIMScheduler.from_config(parts.noise_scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = list(train.log_image_prompts)
    was_training = {m: m.training for m in (unet, te)}
    unet.eval()
    te.eval()
    try:
        with torch.no_grad(), accelerator.autocast():
            images = generate_images(pipe, prompts, list(range(seed, seed + len(prompts))), len(prompts),
                                     SAMPLE_STEPS, 7.5, height=train.resolution, width=train.resolution)
    finally:
        for m, flag in was_training.items():
            m.train(flag)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": np.stack([np.asarray(im) for im in images])}, step=step,
                               dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": [wandb.Image(im, caption=p) for im, p in zip(images, prompts, strict=True)]},
                        step=step)
    return len(images)


def end(accelerator: Any, train: TrainSection) -> None:
    """Flush and close the trackers."""
    if train.report_to != "none":
        accelerator.end_training()
