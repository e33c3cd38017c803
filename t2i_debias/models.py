"""Resolve a model spec to something `from_pretrained` can load.

A spec is a hub id (`stabilityai/stable-diffusion-2-1`), a local folder, or an offline builder:
- `tiny:sd`           the tiny random-weight pipeline (t2i_debias.tiny), ε-prediction;
- `tiny:sd-v`         the same with v-prediction (like SD 2.1);
- `tiny:sdxl`         a tiny random-weight SDXL pipeline (two text encoders, pooled embeddings, time ids);
- `shape:sd21` ...    a real architecture (sd21, sd21base, sd15, sdxl) with random weights (t2i_debias.shapes);
- `toy:base`          the toy world's trained base model, for `make demo`: its plug-in registers `toy:`.

Each prefix maps to a resolver in `RESOLVERS`; a plug-in adds its own with `register_resolver`, so this
module names no plug-in. Which models a run evaluates is the stages' (`stages.common.models_to_evaluate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2i_debias.core.config import Config, RunSection
from t2i_debias.core.files import MANIFEST, hash_obj

log = logging.getLogger(__name__)


# (spec, cfg) -> a hub id or a local folder. A resolver gets the whole run config (or None) because a plug-in's
# models depend on its own section (the toy world's `toy:base` on [toy]), which this module cannot name.
Resolver = Callable[[str, Config | None], str]


def _tiny(spec: str, cfg: Config | None = None) -> str:
    """`tiny:sd`, `tiny:sd-v`, `tiny:sdxl`: the tiny random-weight pipelines, built once and cached."""
    from t2i_debias import tiny

    kind = spec.split(":", 1)[1]
    if kind == "sd":
        return str(tiny.tiny_sd_dir())
    if kind == "sd-v":
        return str(tiny.tiny_sd_dir(prediction_type="v_prediction"))
    if kind == "sdxl":
        from t2i_debias.tiny.sdxl import tiny_sdxl_dir

        return str(tiny_sdxl_dir())
    raise ValueError(f"unknown tiny model {spec!r}; known: tiny:sd, tiny:sd-v, tiny:sdxl")


def _shape(spec: str, cfg: Config | None = None) -> str:
    """`shape:<name>`: a real architecture with random weights."""
    from t2i_debias.shapes import resolve_shape

    return resolve_shape(spec)


# Spec prefix -> resolver. Plug-ins add theirs with `register_resolver` (the toy world adds `toy:`).
RESOLVERS: dict[str, Resolver] = {"tiny:": _tiny, "shape:": _shape}


def register_resolver(prefix: str, resolver: Resolver) -> None:
    """Let specs starting with `prefix` (e.g. "toy:") resolve through `resolver`; registering again replaces it."""
    if not prefix.endswith(":"):
        raise ValueError(f"a model prefix ends with ':', got {prefix!r}")
    RESOLVERS[prefix] = resolver


def resolve_model(spec: str, cfg: Config | None = None) -> str:
    """Return a hub id or a local folder path for `spec` (building offline models on demand); `cfg` goes to the
    resolver of its prefix."""
    for prefix, resolver in RESOLVERS.items():
        if spec.startswith(prefix):
            return resolver(spec, cfg)
    p = Path(spec).expanduser()
    if p.exists():
        return str(p)
    if looks_like_path(spec):
        from t2i_debias.core.errors import MissingInputError

        raise MissingInputError(f"no such folder: {spec} (looked for {p.resolve()}); give an existing diffusers "
                                "pipeline folder, or a hub id like stabilityai/stable-diffusion-2-1")
    head = spec.split(":", 1)[0]
    if ":" in spec and "/" not in head:  # hub ids have no ':'
        raise ValueError(f"unknown model prefix {head + ':'!r} in {spec!r}; known: {', '.join(RESOLVERS)} "
                         "(a plug-in adds its own with models.register_resolver)")
    check_hub_model(spec)
    return spec  # a hub id: from_pretrained resolves it (offline runs need it in HF_HOME)


def model_name(run: RunSection) -> str:
    """The run's base model as a person names it: its spec (`toy:base`, a hub id), not where it was cached."""
    return "tiny:sd" if run.smoke else run.base_model


def base_model(cfg: Config) -> str:
    """The run's base model, with `run.smoke` swapping in the tiny pipeline. Takes the whole config because
    the resolver of its prefix does (a plug-in's model depends on the plug-in's own section)."""
    return resolve_model(model_name(cfg.run), cfg)


def resolve_device(device: str = "auto") -> str:
    """'auto' (or empty) -> 'cuda' when a GPU is visible, else 'cpu'; anything else unchanged."""
    if device in ("auto", ""):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: Any, device: str) -> Any:
    """'auto' -> float16 on CUDA, float32 elsewhere; a name -> that torch dtype; a torch dtype unchanged."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return getattr(torch, dtype)


def load_pipeline(spec: str | Path, device: str = "cpu", dtype: Any = "auto") -> Any:
    """Any diffusers text-to-image pipeline (hub id or folder), safety checker off, progress bars off.

    Goes through AutoPipelineForText2Image, so an SD folder gives a StableDiffusionPipeline.
    """
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import deprecation_utils

    # diffusers >= 0.42 renamed torch_dtype to dtype (the old name warns); older releases only know torch_dtype.
    new_name = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    kwargs: dict[str, Any] = {"dtype" if new_name else "torch_dtype": resolve_dtype(dtype, device)}
    # Pipelines without a safety checker ignore the keyword (with a warning), they do not fail.
    pipe = AutoPipelineForText2Image.from_pretrained(str(spec), safety_checker=None, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def looks_like_path(spec: str) -> bool:
    """True for a spec that can only be a local path (hub ids are `name` or `org/name`)."""
    return (spec.startswith((".", "/", "~", "\\")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")
            or Path(spec).suffix.lower() in (".safetensors", ".ckpt", ".bin", ".pt"))


def check_hub_model(repo_id: str) -> None:
    """With the hub offline (HF_HUB_OFFLINE), a hub id must already be in the local cache; say how to get it."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return
    try:
        hit = try_to_load_from_cache(repo_id, "model_index.json")
    except ValueError:  # not a valid repo id
        hit = None
    if isinstance(hit, str):
        return
    from t2i_debias.core.errors import MissingInputError

    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    raise MissingInputError(
        f"model {repo_id!r} is not a local folder and is not in the Hugging Face cache ({cache}), and the hub "
        f"is offline (HF_HUB_OFFLINE=1): download it once with `huggingface-cli download {repo_id}` "
        f"(online, same HF_HOME), or point at a local pipeline folder (e.g. --run.base_model ./sd-2-1)")


# ----------------------------------------------------------------------------- model folders
LORA_FILES: tuple[str, ...] = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")


def is_pipeline_dir(path: str | Path) -> bool:
    """True for a local diffusers pipeline folder."""
    return (Path(path) / "model_index.json").is_file()


def is_lora_dir(path: str | Path) -> bool:
    """True for a local folder of diffusers LoRA weights (no model_index.json)."""
    p = Path(path)
    return p.is_dir() and not is_pipeline_dir(p) and any((p / f).is_file() for f in LORA_FILES)


def load_model(spec: str, base: str, device: str = "cpu", dtype: Any = None) -> Any:
    """A text-to-image pipeline for `spec`: a pipeline folder or hub id, or a LoRA folder applied on `base`."""
    if is_lora_dir(spec):
        pipe = load_pipeline(base, device=device, dtype=dtype)
        pipe.load_lora_weights(str(spec))
        log.info("loaded LoRA %s on %s", spec, base)
        return pipe
    return load_pipeline(spec, device=device, dtype=dtype)


def model_fingerprint(spec: str) -> dict[str, Any]:
    """Cheap identity of a model (file names, sizes, mtimes for a folder; the id for a hub model).

    Hashing a multi-GB pipeline on every run would be slow; a retrained folder changes sizes/mtimes.
    """
    p = Path(spec)
    if not p.exists():
        return {"spec": spec}
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.name != MANIFEST) if p.is_dir() else [p]
    stats = [(str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
             for f in files]
    return {"spec": str(p.resolve()), "files": hash_obj(stats)}


def check_model(spec: str, base: str) -> None:
    """Fail early (before any folder is changed) when `spec` cannot be a model: a folder that is neither a
    pipeline nor LoRA weights. Hub ids and missing paths are checked by models.resolve_model."""
    from t2i_debias.core.errors import MissingInputError

    p = Path(spec)
    if p.exists() and not (is_pipeline_dir(p) or is_lora_dir(p)):
        raise MissingInputError(f"{spec} is not a diffusers pipeline folder (no model_index.json) nor LoRA "
                                f"weights ({', '.join(LORA_FILES)}): point at a pipeline folder or a hub id")
    if is_lora_dir(p):
        check_model(base, base)
