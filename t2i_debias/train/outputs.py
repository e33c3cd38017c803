"""What a training mode leaves behind: pipeline or LoRA weights, training_log.csv, loss.png, model card.

Weights are saved into a new version of the mode's folder built beside it, which replaces the old
folder in one rename, so a killed run leaves either the old weights or the new ones, never a mix.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2i_debias.core.files import (
    MANIFEST,
    STAGING_MARK,
    Staged,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_text,
)
from t2i_debias.core.options import LOSS_NAMES

LOG_COLUMNS = ["step", "loss", *LOSS_NAMES, "lr"]
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
ADAPTER_STATE = "adapter_state.safetensors"  # peft-format adapters, to continue training in the next mode


def save_into(out_dir: Path, write: Callable[[Path], Any]) -> list[Path]:
    """Run `write(folder)` in a new version of `out_dir` built beside it, then swap the whole folder in.

    The new folder gets what `write` made plus hard links to the other entries of the old one
    (checkpoints, logs); one rename (core.files.replace_dir) puts it in place, so a kill leaves the old
    weights or the new ones, never a new text encoder beside an old U-Net. Returns the paths of the
    entries `write` made, as they are under `out_dir`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = Staged(out_dir)
    new = staged.open(resume=False)
    write(new)
    made = sorted(e.name for e in new.iterdir() if e.name != STAGING_MARK)
    for entry in sorted(out_dir.iterdir()):
        if entry.name in made or entry.name in (MANIFEST, STAGING_MARK) or entry.name.startswith(".save."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(str(entry), str(new / entry.name))
    staged.commit()
    return [out_dir / name for name in made]


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a file (instant, no extra space); copy it where the file system has no hard links."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def write_log(path: Path, rows: list[dict[str, Any]]) -> Path:
    """training_log.csv: one row per optimizer step (loss terms that were skipped are empty)."""
    import pandas as pd

    return atomic_write_csv(path, pd.DataFrame(rows, columns=LOG_COLUMNS))


def read_log(path: Path) -> list[dict[str, Any]]:
    """Rows of a training_log.csv (empty cells as None), to continue a log after resuming."""
    import pandas as pd

    if not path.exists():
        return []
    df = pd.read_csv(path)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in df.to_dict("records")]


def plot_loss(path: Path, rows: list[dict[str, Any]], title: str) -> Path:
    """loss.png: the total and each active weighted-in loss term against the step."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [r["step"] for r in rows]
    for key in LOG_COLUMNS[1:-1]:
        ys = [r.get(key) for r in rows]
        if any(y is not None and y == y for y in ys):
            ax.plot(steps, [float("nan") if y is None else y for y in ys], label=key,
                    lw=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def model_card(mode: str, base: str, data_dir: str, n_triplets: int, weights: dict[str, float],
               train: dict[str, Any], steps: int, lora: bool, init_from: str | None, n_samples: int | None = None,
               dropped: dict[str, int] | None = None) -> str:
    """The README.md of a trained mode: what it was trained from, on what, with which losses and guidance."""
    active = {k: v for k, v in weights.items() if v > 0}
    loss = " + ".join(f"{v:g}·{k}" for k, v in active.items())
    w = float(train.get("guidance_target") or 0.0)
    guidance = (f"trained for classifier-free guidance **{w:g}** (`guidance_target`): sample it at "
                f"guidance_scale = {w:g}; at other scales it is not what was trained" if w > 0 else
                "not tied to a guidance scale (`guidance_target` off)")
    filt = ", ".join(f"{n} {k}" for k, n in (dropped or {}).items()) or "none"
    load = (f'pipe = StableDiffusionPipeline.from_pretrained("{base}")\npipe.load_lora_weights("<this folder>")'
            if lora else 'pipe = StableDiffusionPipeline.from_pretrained("<this folder>")')
    keys = ["resolution", "train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler",
            "lr_warmup_steps", "max_grad_norm", "mixed_precision", "use_ema", "lora_rank", "independent_noise",
            "denoise_members", "denoise_caption", "attribute_share", "caption_dropout", "verified_only", "balance",
            "balance_by", "guidance_target", "uncond_weight", "input_perturbation", "random_flip",
            "lang_similarity", "vision_reduction", "snr_gamma", "preset"]
    hp = "\n".join(f"| {k} | {train.get(k)!r} |" for k in keys)
    return f"""---
base_model: {base}
library_name: diffusers
tags: [stable-diffusion, text-to-image, debiasing, contrastive-learning{', lora' if lora else ''}]
---

# Debiased text-to-image model: mode `{mode}`

Contrastive fine-tuning of {'the text encoder' if mode == 'text' else 'the U-Net' if mode == 'unet' else 'the text encoder and the U-Net'}
(method of "Debiasing Text-to-Image Models via Data Augmentation and Contrastive Learning"; t2i_debias DESIGN.md §2).

- **Base model:** `{base}`{f' (this mode started from `{init_from}`)' if init_from and init_from != base else ''}
- **Data:** `{data_dir}`: {n_triplets} counterfactual triplets (anchor, positive, negative)
- **Loss:** {loss}
- **Guidance:** {guidance}
- **Samples:** {n_samples if n_samples is not None else n_triplets} denoise samples; dropped by the verification filter: {filt}
- **Steps:** {steps} optimizer steps
- **Weights:** {'LoRA adapters (rank ' + str(train.get('lora_rank')) + ')' if lora else 'full diffusers pipeline'}

| option | value |
|---|---|
{hp}

## Use

```python
from diffusers import StableDiffusionPipeline
{load}
image = pipe("Professional photo of a doctor").images[0]
```

Training curve: `loss.png`; per-step values: `training_log.csv`.
"""


def write_model_card(path: Path, **kw: Any) -> Path:
    """Write the model card README.md atomically."""
    return atomic_write_text(path, model_card(**kw))


def save_pipeline(out_dir: Path, base: str, modules: dict[str, Any]) -> list[Path]:
    """A full diffusers pipeline folder: the trained modules (fp32) plus every other component from `base`."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base, **{k: v.float() for k, v in modules.items()})
    return save_into(out_dir, lambda d: pipe.save_pretrained(d, safe_serialization=True))


def save_lora(out_dir: Path, modules: dict[str, Any]) -> list[Path]:
    """LoRA weights loadable by `pipe.load_lora_weights`, plus peft-format state to continue training."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    layers = {n: get_peft_model_state_dict(m) for n, m in modules.items()}

    def write(d: Path) -> None:
        StableDiffusionPipeline.save_lora_weights(
            d, unet_lora_layers=convert_state_dict_to_diffusers(layers["unet"]) if "unet" in layers else None,
            text_encoder_lora_layers=(convert_state_dict_to_diffusers(layers["text_encoder"])
                                      if "text_encoder" in layers else None),
            safe_serialization=True)
        save_file({f"{n}::{k}": v.detach().contiguous().cpu() for n, sd in layers.items() for k, v in sd.items()},
                  str(d / ADAPTER_STATE))

    return save_into(out_dir, write)
