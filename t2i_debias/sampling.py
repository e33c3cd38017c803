"""Seeded, batched, resumable, shardable image generation for evaluation: a library (the `generated` stage
runs it).

- `generate_images`: image i comes from its own `torch.Generator` seeded `seeds[i]`; a batch passes a
  list of generators, so batched and one-at-a-time generation draw the same noise.
- `generate_folder`: N images per prompt, image i with seed `base_seed + i` (two models meet the same
  noise) -> `images/<prompt_id>/<seed>.png` + `metadata.csv`. PNGs are written atomically and carry
  their generation settings in a `t2i_debias` text chunk; existing valid PNGs are skipped, so a killed
  run resumes. Under `accelerate launch` each process takes a disjoint slice (job i goes to process
  i mod N) and the main process writes `metadata.csv` from the files once all are done. Its last
  column, `constant`, is True for an image that is one colour everywhere (a diverged model draws those).
- `generation_config`: what determines a model's images (a stage manifest's config).
One model's `generated/<model>/` under its stage manifest is `stages.generated.generate_model`; what a model
spec is lives in `t2i_debias.models`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, PngImagePlugin

from t2i_debias.core.config import GenerateSection
from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.files import atomic_write_bytes, atomic_write_csv, atomic_write_json
from t2i_debias.core.image_files import is_constant, open_rgb
from t2i_debias.core.layout import GENERATED_METADATA
from t2i_debias.models import is_lora_dir, model_fingerprint

log = logging.getLogger(__name__)

# Pipeline keyword arguments given per image (sliced with the batch) rather than shared by the batch.
PER_IMAGE_KWARGS: tuple[str, ...] = (
    "negative_prompt", "prompt_embeds", "negative_prompt_embeds",
    "pooled_prompt_embeds", "negative_pooled_prompt_embeds",
)
PNG_KEY = "t2i_debias"
SETTINGS = "generation.json"


# ----------------------------------------------------------------------------- one batch of images
def generate_images(pipe: Any, prompts: Sequence[str] | str | None, seeds: Sequence[int], batch_size: int,
                    num_inference_steps: int, guidance_scale: float, height: int | None = None,
                    width: int | None = None, generator_device: str = "cpu", progress: Any = None,
                    **kw: Any) -> list[Image.Image]:
    """Generate `len(seeds)` images; image i uses prompt i and `torch.Generator(generator_device)` seeded `seeds[i]`.

    Generators default to the CPU so the initial noise is the same on every device. `kw` goes to the
    pipeline; the names in PER_IMAGE_KWARGS (e.g. `prompt_embeds`) are per image and sliced per batch.
    `progress(k)` is called after each batch with the number of images it made.
    """
    import torch

    n = len(seeds)
    if isinstance(prompts, str):
        prompts = [prompts] * n
    if prompts is not None and len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} seeds")
    if prompts is None and "prompt_embeds" not in kw:
        raise ValueError("give prompts or prompt_embeds")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name in PER_IMAGE_KWARGS:
        if name in kw and kw[name] is not None and not isinstance(kw[name], str) and len(kw[name]) != n:
            raise ValueError(f"{name} has {len(kw[name])} entries for {n} images")
    out: list[Image.Image] = []
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        gens = [torch.Generator(generator_device).manual_seed(int(s)) for s in seeds[sl]]
        call = {k: (v[sl] if k in PER_IMAGE_KWARGS and v is not None and not isinstance(v, str) else v)
                for k, v in kw.items()}
        if prompts is not None:
            call["prompt"] = list(prompts[sl])
        result = pipe(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=height,
                      width=width, generator=gens, output_type="pil", **call)
        out.extend(result.images)
        if progress is not None:
            progress(len(gens))
    return out




# ----------------------------------------------------------------------------- folder generation
@dataclass(frozen=True)
class Job:
    """One image to make: prompt and seed, and where it goes."""

    prompt_id: str
    occupation: str
    prompt: str
    seed: int

    @property
    def rel(self) -> str:
        return f"images/{self.prompt_id}/{self.seed}.png"


def make_jobs(prompts: pd.DataFrame, n_per_prompt: int, base_seed: int) -> list[Job]:
    """Every (prompt, seed) pair in a fixed order: prompts in file order, seeds base_seed .. base_seed+N-1."""
    return [Job(str(r.prompt_id), str(getattr(r, "occupation", "")), str(r.prompt), base_seed + i)
            for r in prompts.itertuples(index=False) for i in range(n_per_prompt)]


def is_valid_png(path: Path) -> bool:
    """True when `path` is a readable, complete PNG."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except FileNotFoundError:
        return False
    except (OSError, SyntaxError, ValueError) as e:
        log.warning("invalid image %s (%s): regenerating it", path, e)
        return False


def png_info(path: Path) -> dict[str, Any]:
    """The generation record stored in a PNG written by `generate_folder`."""
    with Image.open(path) as im:
        raw = im.info.get(PNG_KEY)
    return json.loads(raw) if raw else {}


def _png_bytes(image: Image.Image, record: dict[str, Any]) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(record, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _clean_stale_tmp(images_dir: Path) -> int:
    """Remove temporary files a killed writer left behind (atomic writes use hidden `.*.tmp` names)."""
    n = 0
    if images_dir.is_dir():
        for f in images_dir.rglob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                n += 1
    return n


def _prepare_folder(out_dir: Path, settings: dict[str, Any], prompts: pd.DataFrame) -> None:
    """Invalidate images made with other settings (whole folder) or another prompt text (that prompt)."""
    path = out_dir / SETTINGS
    old: dict[str, Any] | None = None
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        old = json.loads(path.read_text())
    images = out_dir / "images"
    if old is not None and old.get("settings") != settings and images.exists():
        log.warning("%s: generation settings changed; discarding the old images", out_dir)
        shutil.rmtree(images)
        old = None
    new_prompts = dict(zip(prompts["prompt_id"], prompts["prompt"], strict=True))
    for pid, text in (old or {}).get("prompts", {}).items():
        if pid in new_prompts and new_prompts[pid] != text and (images / pid).exists():
            log.warning("%s: prompt %s changed (%r -> %r); discarding its images", out_dir, pid, text, new_prompts[pid])
            shutil.rmtree(images / pid)
    merged = {**(old or {}).get("prompts", {}), **new_prompts}
    n = _clean_stale_tmp(images)
    if n:
        log.info("%s: removed %d temporary files left by an interrupted run", out_dir, n)
    atomic_write_json(path, {"settings": settings, "prompts": merged})


class _Dist:
    """The process group: accelerate's PartialState when available, else a single process."""

    def __init__(self, state: Any = None) -> None:
        if state is None:
            try:
                import torch
                from accelerate import PartialState

                # Without CUDA, accelerate only forms a (gloo) process group when asked for the CPU.
                cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" or not torch.cuda.is_available()
                state = PartialState(cpu=cpu)
            except ImportError:
                state = None
        self.state = state

    @property
    def rank(self) -> int:
        return int(self.state.process_index) if self.state is not None else 0

    @property
    def world(self) -> int:
        return int(self.state.num_processes) if self.state is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None and self.world > 1:
            self.state.wait_for_everyone()


def generation_record(model_name: str, num_inference_steps: int, guidance_scale: float, height: int | None,
                      width: int | None, base_seed: int) -> dict[str, Any]:
    """The settings every image of a folder shares (in each PNG and in generation.json)."""
    return {"model": model_name, "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
            "height": height, "width": width, "base_seed": base_seed}


def generate_folder(load_pipe: Callable[[], Any], out_dir: str | Path, prompts: pd.DataFrame, model_name: str,
                    n_per_prompt: int, base_seed: int, batch_size: int, num_inference_steps: int,
                    guidance_scale: float, height: int | None = None, width: int | None = None,
                    settings: dict[str, Any] | None = None, state: Any = None, **kw: Any) -> Path:
    """Generate the missing images of a model into `out_dir` (this process's slice) and write metadata.csv.

    `load_pipe()` is only called when this process has images to make. `settings` identifies how the
    images are made (model fingerprint etc.); images made under other settings are discarded.
    Returns the metadata.csv path. Every process must call this (it synchronises them).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if n_per_prompt < 1 or num_inference_steps < 1 or batch_size < 1:
        raise ValueError(f"images per prompt, inference steps and batch size must be >= 1 (got {n_per_prompt}, "
                         f"{num_inference_steps}, {batch_size})")
    dist = _Dist(state)
    jobs = make_jobs(prompts, n_per_prompt, base_seed)
    gen = generation_record(model_name, num_inference_steps, guidance_scale, height, width, base_seed)
    settings = {**gen, **(settings or {})}
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _prepare_folder(out_dir, settings, prompts)
    dist.barrier()

    mine = jobs[dist.rank::dist.world]
    todo = [j for j in mine if not is_valid_png(out_dir / j.rel)]
    log.info("%s: process %d/%d has %d of %d images to make (%d already done)", model_name, dist.rank,
             dist.world, len(todo), len(mine), len(mine) - len(todo))
    if todo:
        pipe = load_pipe()
        gen = {**gen, "sampler": sampler_name(pipe)}
        bar = tqdm(total=len(todo), desc=f"generate {model_name}" + (f" [{dist.rank}]" if dist.world > 1 else ""),
                   position=dist.rank, disable=None)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            images = generate_images(pipe, [j.prompt for j in batch], [j.seed for j in batch], batch_size,
                                     num_inference_steps, guidance_scale, height, width, **kw)
            for job, img in zip(batch, images, strict=True):
                record = {**gen, "prompt_id": job.prompt_id, "prompt": job.prompt, "seed": job.seed,
                          "shard": f"{dist.rank}/{dist.world}"}
                atomic_write_bytes(out_dir / job.rel, _png_bytes(img, record))
            bar.update(len(batch))
        bar.close()
    dist.barrier()
    meta = out_dir / GENERATED_METADATA
    if dist.is_main:
        meta = write_metadata(out_dir, jobs, model_name)
    dist.barrier()
    return meta


def sampler_name(pipe: Any) -> str | None:
    """The class name of a pipeline's scheduler (e.g. "DDIMScheduler"), the sampler on a bias number's record."""
    scheduler = getattr(pipe, "scheduler", None)
    return None if scheduler is None else type(scheduler).__name__


def write_metadata(out_dir: Path, jobs: list[Job], model_name: str) -> Path:
    """metadata.csv rebuilt from the image files (one row per job, `constant` read from the pixels); a missing
    image is an error."""
    rows = []
    missing = []
    for j in jobs:
        path = out_dir / j.rel
        if not path.is_file():
            missing.append(j.rel)
            continue
        info = png_info(path)
        rows.append({"model": model_name, "prompt_id": j.prompt_id, "occupation": j.occupation, "prompt": j.prompt,
                     "seed": j.seed, "file": j.rel, "num_inference_steps": info.get("num_inference_steps"),
                     "guidance_scale": info.get("guidance_scale"), "sampler": info.get("sampler"),
                     "shard": info.get("shard", ""), "constant": is_constant(open_rgb(path))})
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} images missing after generation, e.g. {missing[:3]}")
    n_constant = sum(r["constant"] for r in rows)
    if n_constant:
        log.warning("%s: %d of %d images are one colour everywhere (marked constant in %s)", model_name,
                    n_constant, len(rows), GENERATED_METADATA)
    return atomic_write_csv(out_dir / GENERATED_METADATA, pd.DataFrame(rows))


def read_metadata(model_dir: str | Path) -> pd.DataFrame:
    """A model's generated/<model>/metadata.csv, with paths checked to stay inside the folder."""
    from t2i_debias.core.files import safe_join

    path = Path(model_dir) / GENERATED_METADATA
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the generation stage first")
    df = unescape_frame(pd.read_csv(path, dtype={"prompt_id": str, "file": str, "prompt": str, "occupation": str},
                                    keep_default_na=False))
    for col in ("prompt_id", "seed", "file"):
        if col not in df.columns:
            raise ValueError(f"{path}: missing column {col!r}")
    for i, rel in enumerate(df["file"]):
        try:
            safe_join(model_dir, rel)
        except ValueError as e:
            raise ValueError(f"{path} line {i + 2}: {e}") from None
    return df


# ----------------------------------------------------------------------------- one model's folder
def generation_config(generate: GenerateSection, name: str, spec: str, base: str | None = None) -> dict[str, Any]:
    """What determines a model's images (batch size excluded: it does not change them). `base` is the resolved
    base model a LoRA `spec` is applied on: its fingerprint joins the LoRA's."""
    sec = dataclasses.asdict(generate)
    sec.pop("batch_size", None)
    sec.pop("models", None)
    fp = model_fingerprint(spec)
    if is_lora_dir(spec):
        if base is None:
            raise ValueError(f"{spec} holds LoRA weights: the base model they apply on is needed")
        fp["base"] = model_fingerprint(base)
    return {"generate": sec, "model": name, "fingerprint": fp}
