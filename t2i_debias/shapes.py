"""Real Stable Diffusion architectures with random weights, built offline from the published configs.

`shape:sd21` (SD 2.1, 768-v), `shape:sd21base`, `shape:sd15` and `shape:sdxl` (SDXL base 1.0) are
model specs (t2i_debias.models) whose pipelines have the exact shapes of the real models: the
channel widths, the 77-token context with the real CLIP BPE vocabulary, the OpenCLIP/CLIP text
towers and the prediction type. Their weights are random, so their images are noise; they exist so
that every code path meets the real shapes and dtypes before a GPU hour is spent. The configs are
committed under t2i_debias/data/model_configs/ (sources in its SOURCE.md). A pipeline is built on
first use only, into `$T2I_DEBIAS_CACHE/shape-<name>-<hash>/` (several GB), never by default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_ROOT = Path(__file__).resolve().parent / "data" / "model_configs"
# name -> the Hugging Face repository whose config it reproduces
SHAPES: dict[str, str] = {
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sd21base": "stabilityai/stable-diffusion-2-1-base",
    "sd15": "runwayml/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
# Saved weight dtype: fp32 like the published full-precision weights, except SDXL (3.5B parameters,
# 14 GB in fp32) which is saved in bf16 so building it fits in ~8 GB of RAM.
SAVE_DTYPE: dict[str, str] = {"sd21": "float32", "sd21base": "float32", "sd15": "float32", "sdxl": "bfloat16"}
TEXT_PARTS: tuple[str, ...] = ("text_encoder", "text_encoder_2")
TOKENIZERS: tuple[str, ...] = ("tokenizer", "tokenizer_2")


def _check(name: str) -> None:
    if name not in SHAPES:
        raise ValueError(f"unknown shape model {name!r}; known: {', '.join('shape:' + k for k in SHAPES)}")


def read_configs(name: str) -> dict[str, dict[str, Any]]:
    """The published configs of `name`: component folder -> its JSON (model_index under 'model_index')."""
    _check(name)
    root = CONFIG_ROOT / name
    out = {"model_index": json.loads((root / "model_index.json").read_text())}
    for f in sorted(root.glob("*/*.json")):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def build_components(name: str, device: str = "cpu") -> dict[str, Any]:
    """Instantiate every weighted component of `name` (random weights); `device="meta"` allocates nothing."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    confs = read_configs(name)
    with torch.device(device):
        parts: dict[str, Any] = {"unet": UNet2DConditionModel.from_config(confs["unet"]),
                                 "vae": AutoencoderKL.from_config(confs["vae"])}
        for key in TEXT_PARTS:
            if key in confs:
                arch = confs[key].get("architectures", ["CLIPTextModel"])[0]
                cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
                te_conf = {k: v for k, v in confs[key].items() if k not in ("architectures", "torch_dtype")}
                parts[key] = cls(CLIPTextConfig(**te_conf))
    return parts


def build_tokenizers(name: str) -> dict[str, Any]:
    """The real-vocabulary CLIP tokenizers of `name`, with the published padding token."""
    from transformers import CLIPTokenizer

    from t2i_debias.tiny.sd import clip_tokenizer_dir

    confs = read_configs(name)
    return {key: CLIPTokenizer.from_pretrained(clip_tokenizer_dir(pad_token=confs[key]["pad_token"]))
            for key in TOKENIZERS if key in confs}


def build_scheduler(name: str) -> Any:
    """The published scheduler (class and config) of `name`."""
    import diffusers

    conf = read_configs(name)["scheduler"]
    return getattr(diffusers, conf["_class_name"]).from_config(conf)


def build_shape_pipeline(out_dir: Path, name: str, seed: int = 0) -> Path:
    """Build `name` with seeded random weights and save it as a diffusers pipeline folder in `out_dir`."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    parts = build_components(name)
    dtype = getattr(torch, SAVE_DTYPE[name])
    if dtype != torch.float32:
        parts = {k: v.to(dtype) for k, v in parts.items()}
    parts.update(build_tokenizers(name))
    parts["scheduler"] = build_scheduler(name)
    if "text_encoder_2" in parts:
        pipe = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def shape_dir(name: str, seed: int = 0, root: Path | None = None) -> Path:
    """Cached folder of the random-weight pipeline `name` (built on first call: minutes, several GB)."""
    from t2i_debias.tiny.cache import cached_dir

    confs = read_configs(name)
    spec = {"name": name, "seed": seed, "configs": confs, "dtype": SAVE_DTYPE[name]}
    return cached_dir(f"shape-{name}", spec, lambda d: build_shape_pipeline(d, name, seed), root)


def resolve_shape(spec: str) -> str:
    """`shape:NAME` -> the folder of its random-weight pipeline."""
    return str(shape_dir(spec.split(":", 1)[1] if spec.startswith("shape:") else spec))


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component of `name`, counted on the meta device (no memory, no weights)."""
    return {k: sum(p.numel() for p in m.parameters()) for k, m in build_components(name, "meta").items()}
