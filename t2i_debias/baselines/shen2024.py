"""Shen et al.'s released debiasing LoRA adapters for Stable Diffusion 1.5 (ICLR 2024).

X. Shen, C. Du, T. Pang, M. Lin, Y. Wong, M. Kankanhalli, "Finetuning Text-to-Image Diffusion Models
for Fairness", ICLR 2024.

The authors released `text_encoder_lora_EMA.pth` and `unet_lora_EMA.pth`, saved by diffusers-0.19
training code in its old LoRA naming:
- text encoder: `text_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.lora_linear_layer.{down,up}.weight`
  and `text_model.encoder.layers.{i}.mlp.fc{1,2}.lora_linear_layer.{down,up}.weight` (rank 50);
- U-Net: `<block path>.attn{1,2}.processor.to_{q,k,v,out}_lora.{down,up}.weight`.
They are renamed to peft's names (`<module>.lora_A/B.weight`) and injected with peft at scale 1
(the old LoRALinearLayer had no alpha: Δ = up·down). Files load with torch.load(weights_only=True)
or safetensors. The adapters only fit SD 1.5's module shapes; on any other base the method is reported
as not applicable, with the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from t2i_debias.baselines.base import Method, MethodInputs, NotApplicable

log = logging.getLogger(__name__)

TEXT_FILE = "text_encoder_lora_EMA.pth"
UNET_FILE = "unet_lora_EMA.pth"
ADAPTER = "shen2024"

_TEXT_KEY = re.compile(r"^(?P<mod>.+)\.lora_linear_layer\.(?P<ud>down|up)\.weight$")
_UNET_KEY = re.compile(r"^(?P<attn>.+)\.processor\.to_(?P<proj>q|k|v|out)_lora\.(?P<ud>down|up)\.weight$")


def convert_text_encoder(sd: dict[str, torch.Tensor], flat: bool = False) -> dict[str, torch.Tensor]:
    """Old diffusers text-encoder LoRA keys -> peft keys (`<module>.lora_A/B.weight`).

    `flat`: the CLIPTextModel has no `text_model.` level (transformers >= 5), so that prefix is dropped.
    """
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("text_encoder.")
        if flat:
            k = k.removeprefix("text_model.")
        m = _TEXT_KEY.match(k)
        if not m:
            raise ValueError(f"unexpected text-encoder LoRA key {k!r}")
        out[f"{m['mod']}.lora_{'A' if m['ud'] == 'down' else 'B'}.weight"] = v
    return out


def convert_unet(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old attention-processor LoRA keys -> peft keys on the U-Net's to_q/to_k/to_v/to_out.0."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("unet.")
        m = _UNET_KEY.match(k)
        if not m:
            raise ValueError(f"unexpected U-Net LoRA key {k!r}")
        proj = "to_out.0" if m["proj"] == "out" else f"to_{m['proj']}"
        out[f"{m['attn']}.{proj}.lora_{'A' if m['ud'] == 'down' else 'B'}.weight"] = v
    return out


def _modules_and_rank(sd: dict[str, torch.Tensor]) -> tuple[list[str], int]:
    mods = sorted({k.rsplit(".lora_", 1)[0] for k in sd})
    ranks = {v.shape[0] for k, v in sd.items() if k.endswith("lora_A.weight")}
    if len(ranks) != 1:
        raise ValueError(f"LoRA state dict has mixed ranks {sorted(ranks)}")
    return mods, ranks.pop()


def check_shapes(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Raise NotApplicable unless every adapter targets an existing Linear of matching shape."""
    mods = dict(model.named_modules())
    for k, v in sd.items():
        name = k.rsplit(".lora_", 1)[0]
        lin = mods.get(name)
        if not isinstance(lin, torch.nn.Linear):
            raise NotApplicable(f"{what}: the base model has no Linear module {name!r}")
        need = lin.in_features if k.endswith("lora_A.weight") else lin.out_features
        have = v.shape[1] if k.endswith("lora_A.weight") else v.shape[0]
        if need != have:
            raise NotApplicable(f"{what}: {name} has {need} features, the adapter {have} "
                                "(the adapters are for SD 1.5)")


def inject_lora(model: torch.nn.Module, sd: dict[str, torch.Tensor], adapter: str = ADAPTER) -> None:
    """Add a peft LoRA adapter (scale 1) on exactly the modules named in the peft-named `sd` and load it."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    mods, rank = _modules_and_rank(sd)
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=mods, lora_dropout=0.0, init_lora_weights=False)
    inject_adapter_in_model(cfg, model, adapter_name=adapter)
    res = set_peft_model_state_dict(model, sd, adapter_name=adapter)
    bad = list(getattr(res, "unexpected_keys", []) or [])
    missing = [k for k in (getattr(res, "missing_keys", []) or []) if adapter in k and "lora_" in k]
    if bad or missing:
        raise ValueError(f"LoRA load mismatch: unexpected {bad[:5]}, missing {missing[:5]}")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A tensor dict from .safetensors or a weights-only torch pickle."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a dict of tensors")
    return sd


def load_shen_lora(pipe: Any, text_sd: dict[str, torch.Tensor] | None,
                   unet_sd: dict[str, torch.Tensor] | None) -> None:
    """Check shapes, then inject the (old-naming) adapters into `pipe`'s text encoder and U-Net."""
    flat = "text_model" not in dict(pipe.text_encoder.named_children())
    parts = [(pipe.text_encoder, convert_text_encoder(text_sd, flat), "text encoder")] if text_sd else []
    parts += [(pipe.unet, convert_unet(unet_sd), "U-Net")] if unet_sd else []
    if not parts:
        raise ValueError("no adapter weights given")
    for model, sd, what in parts:
        check_shapes(model, sd, what)
    for model, sd, _ in parts:
        ref = next(model.parameters())
        inject_lora(model, {k: v.to(ref.dtype) for k, v in sd.items()})
        model.to(ref.device)


def missing_files(weights_dir: str) -> str | None:
    """Why the adapters cannot be loaded from `weights_dir` (no folder, missing files), or None."""
    if not weights_dir:
        return "no adapter folder given (sota.shen2024_dir); the adapters are for SD 1.5"
    d = Path(weights_dir)
    missing = [str(d / f) for f in (TEXT_FILE, UNET_FILE) if not (d / f).is_file()]
    return f"adapter files not found: {', '.join(missing)}" if missing else None


@dataclass
class Shen2024(Method):
    """The base pipeline with Shen et al.'s text-encoder and U-Net LoRA adapters."""

    name: str = "shen2024"
    citation: str = "Shen et al., ICLR 2024"
    DEFAULTS: ClassVar[dict[str, Any]] = {"weights_dir": ""}

    @classmethod
    def params_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        return {"weights_dir": inputs.sota.shen2024_dir}

    @classmethod
    def applicable(cls, inputs: MethodInputs, load_base: Callable[[], Any]) -> str | None:
        """Why not: no adapter files, or adapters whose shapes do not fit the base's modules (checked on a copy)."""
        reason = missing_files(inputs.sota.shen2024_dir)
        if reason:
            return reason
        try:
            cls.build(load_base(), cls.params_from(inputs), inputs)
        except NotApplicable as e:
            return str(e)
        return None

    def __post_init__(self) -> None:
        super().__post_init__()
        reason = missing_files(self.params["weights_dir"])
        if reason:
            raise NotApplicable(reason)
        d = Path(self.params["weights_dir"])
        load_shen_lora(self.pipe, load_state(d / TEXT_FILE), load_state(d / UNET_FILE))
        self.prepared = True
