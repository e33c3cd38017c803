"""The pipeline components a mode trains or reads: loading, freezing, LoRA adapters, the frozen copies.

A mode loads only what its active losses reach (text mode: no U-Net, no VAE). Frozen weights are cast to
the mixed-precision dtype; trained weights (and LoRA adapters) stay fp32, as in diffusers' scripts. The
`prior` loss reads a frozen copy of the U-Net the mode starts from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from t2i_debias.train import outputs
from t2i_debias.train.modes import TRAINED, needs_unet

LORA_TARGETS = {"unet": ["to_k", "to_q", "to_v", "to_out.0"],
                "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"]}
# every module a step may run, in the order they move to the device
MODULES = ("text_encoder", "unet", "vae", "frozen_text_encoder", "frozen_unet")


@dataclass
class Parts:
    """The pipeline components a mode uses (unet/vae are None when no loss needs a U-Net pass)."""

    tokenizer: Any
    text_encoder: Any
    noise_scheduler: Any
    unet: Any = None
    vae: Any = None
    frozen_text_encoder: Any = None
    frozen_unet: Any = None  # the U-Net the mode starts from (the base for the first mode), for the `prior` loss
    trained: tuple[str, ...] = ()
    lora: bool = False
    weight_dtype: torch.dtype = torch.float32
    adapters: tuple[str, ...] = ()  # parts carrying LoRA adapters (trained, or loaded from a previous mode)


def load_parts(base: str, mode: str, weights: dict[str, float], lora_rank: int = 0,
               init_lora: str | Path | None = None, weight_dtype: torch.dtype = torch.float32) -> Parts:
    """Load what the mode needs from `base`, freeze all, then unfreeze (or add LoRA to) the trained parts."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # a part no active loss reaches is not trained (e.g. `both` with vision = denoise = 0 loads no U-Net)
    trained = tuple(n for n in TRAINED[mode] if n == "text_encoder" or needs_unet(weights))
    p = Parts(
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        noise_scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler"),
        trained=trained, lora=lora_rank > 0, weight_dtype=weight_dtype,
    )
    if needs_unet(weights):
        p.unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        p.vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    for m in (p.text_encoder, p.unet, p.vae):
        if m is not None:
            m.requires_grad_(False)
    _add_frozen_copies(p, weights)
    adapter_state = _read_adapter_state(init_lora) if init_lora else {}
    for name in ("text_encoder", "unet"):
        if getattr(p, name) is not None:
            _prepare_part(p, name, lora_rank, adapter_state)
    if p.vae is not None:
        _cast(p.vae, weight_dtype).eval()
    return p


def _add_frozen_copies(p: Parts, weights: dict[str, float]) -> None:
    """The frozen text encoder (for `preserve`, and `prior` when the encoder trains) and the frozen U-Net
    (the base's own predictions, the target of prior preservation), copied before any adapter is added."""
    if weights["preserve"] > 0 or (weights["prior"] > 0 and "text_encoder" in p.trained):
        p.frozen_text_encoder = _cast(copy.deepcopy(p.text_encoder).eval(), p.weight_dtype)
    if weights["prior"] > 0:
        p.frozen_unet = _cast(copy.deepcopy(p.unet).eval(), p.weight_dtype)


def _prepare_part(p: Parts, name: str, lora_rank: int, adapter_state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Make part `name` trainable (fully, or through a LoRA adapter) or frozen in the weight dtype."""
    module = getattr(p, name)
    if p.lora and (name in p.trained or name in adapter_state):
        _add_lora(module, name, lora_rank, adapter_state.get(name))
        p.adapters += (name,)
        _cast(module, p.weight_dtype)
        for prm in module.parameters():  # LoRA weights train in fp32 (diffusers' cast_training_params)
            if prm.requires_grad:
                prm.data = prm.data.float()
        if name not in p.trained:
            module.requires_grad_(False)
    elif name in p.trained:
        module.requires_grad_(True)
    else:
        _cast(module, p.weight_dtype)
    module.train(name in p.trained)


def _cast(module: Any, dtype: torch.dtype) -> Any:
    """Cast a frozen module to the mixed-precision dtype (a no-op in fp32, which keeps diffusers quiet)."""
    return module if dtype == torch.float32 else module.to(dtype=dtype)


def _add_lora(module: Any, name: str, rank: int, state: dict[str, torch.Tensor] | None) -> None:
    """Add a trainable LoRA adapter to `module` (optionally with weights from a previous mode)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    # peft directly (as diffusers' add_adapter does): transformers' own add_adapter pins newer peft versions
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=LORA_TARGETS[name]), module)
    if state:
        result = set_peft_model_state_dict(module, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"LoRA state for {name} does not fit (rank {rank}?): {result.unexpected_keys[:3]}")


def _read_adapter_state(folder: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """A previous mode's LoRA adapters (peft format), keyed by part name."""
    from safetensors.torch import load_file

    path = Path(folder) / outputs.ADAPTER_STATE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no LoRA adapter state to continue from")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in load_file(str(path)).items():
        part, key = k.split("::", 1)
        out.setdefault(part, {})[key] = v
    return out


def enable_gradient_checkpointing(parts: Parts) -> None:
    """Trade compute for memory in the trained parts (diffusers' --gradient_checkpointing)."""
    if "unet" in parts.trained and parts.unet is not None:
        parts.unet.enable_gradient_checkpointing()
    if "text_encoder" in parts.trained:
        te = parts.text_encoder  # transformers 5 renamed the method; 4.x has only the old name
        (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()


def move_to(parts: Parts, device: Any) -> None:
    """Move every loaded module to `device`."""
    for name in MODULES:
        if getattr(parts, name) is not None:
            getattr(parts, name).to(device)


def trainable_parameters(parts: Parts) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates (whole parts, or their LoRA adapters)."""
    return [prm for name in parts.trained if getattr(parts, name) is not None
            for prm in getattr(parts, name).parameters() if prm.requires_grad]
