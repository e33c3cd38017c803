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
# Saved weight dtype: fp32 like the published full-precision weights (so a load without a dtype gives what
# it gives for the real model), except SDXL (3.5B parameters, 14 GB in fp32), saved in bf16: 7 GB.
SAVE_DTYPE: dict[str, str] = {"sd21": "float32", "sd21base": "float32", "sd15": "float32", "sdxl": "bfloat16"}
# Weights are saved in shards of this size: loading maps one shard at a time, which bounds the peak RSS
# of a load to the model plus one shard (an unsharded file is mapped whole while it is copied).
SHARD_SIZE = "1GB"
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


def random_init_(module: Any) -> Any:
    """Fill every weight of `module` (materialised with `to_empty`, so its memory is uninitialised) in place,
    in its own dtype, with torch's default init of each layer (`reset_parameters`), using the global RNG."""
    import torch

    covered: set[int] = set()
    with torch.no_grad():
        for sub in module.modules():
            own = list(sub.parameters(recurse=False))
            if own and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
                covered.update(id(p) for p in own)
    missed = [n for n, p in module.named_parameters() if id(p) not in covered]
    params = {n for n, _ in module.named_parameters()}
    buffers = [k for k in module.state_dict() if k not in params]
    if missed or buffers:  # a layer type without reset_parameters: its memory would be saved as garbage
        raise RuntimeError(f"{type(module).__name__}: no initialiser for {(missed + buffers)[:3]}")
    return module


def build_shape_pipeline(out_dir: Path, name: str, seed: int = 0) -> Path:
    """Build `name` with seeded random weights and save it as a diffusers pipeline folder in `out_dir`.

    One component at a time: it is laid out on the meta device, materialised empty in the saved dtype,
    filled in place and saved in shards of SHARD_SIZE, so building needs memory for the largest
    component in that dtype only (SDXL's U-Net: 5.1 GB in bf16), and loading maps one shard at a time.
    """
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    dtype = getattr(torch, SAVE_DTYPE[name])
    parts = build_components(name, "meta")
    extra = {**build_tokenizers(name), "scheduler": build_scheduler(name)}
    if "text_encoder_2" in parts:
        pipe = StableDiffusionXLPipeline(**parts, **extra, force_zeros_for_empty_prompt=True)
    else:
        pipe = StableDiffusionPipeline(**parts, **extra, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_config(out_dir)  # model_index.json
    for key, obj in extra.items():
        obj.save_pretrained(out_dir / key)
    del pipe
    for key in list(parts):
        module = random_init_(parts.pop(key).to(dtype).to_empty(device="cpu"))
        module.save_pretrained(out_dir / key, safe_serialization=True, max_shard_size=SHARD_SIZE)
        del module
    return out_dir


def shape_dir(name: str, seed: int = 0, root: Path | None = None) -> Path:
    """Cached folder of the random-weight pipeline `name` (built on first call: minutes, several GB)."""
    from t2i_debias.tiny.cache import cached_dir

    confs = read_configs(name)
    spec = {"name": name, "seed": seed, "configs": confs, "dtype": SAVE_DTYPE[name], "init": "reset_parameters",
            "shard": SHARD_SIZE}
    return cached_dir(f"shape-{name}", spec, lambda d: build_shape_pipeline(d, name, seed), root)


def resolve_shape(spec: str) -> str:
    """`shape:NAME` -> the folder of its random-weight pipeline."""
    return str(shape_dir(spec.split(":", 1)[1] if spec.startswith("shape:") else spec))


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component of `name`, counted on the meta device (no memory, no weights)."""
    return {k: sum(p.numel() for p in m.parameters()) for k, m in build_components(name, "meta").items()}
