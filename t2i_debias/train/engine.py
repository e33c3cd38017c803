"""One training loop for the three modes of contrastive fine-tuning: text, unet, both (DESIGN.md §2).

A mode is a set of trainable parts plus loss weights. Each step encodes every caption it needs in one
text-encoder call and runs every U-Net pass it needs in one batched U-Net call; a loss whose weight
is 0 is not computed, so text mode never touches the VAE or the U-Net. Noise, timesteps and VAE
samples are drawn per triplet from a generator seeded by (seed, batch number, triplet index): training
does not depend on the number of processes and a resumed run repeats the uninterrupted one.

`run_stage(cfg)` trains the modes of `cfg.train.modes` (sequential: text -> unet -> both, each starting
from the previous result; joint: both only) into <run_dir>/models/<mode>/, each a runs.Stage.
Runs as is, or under `accelerate launch` on several processes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import hashlib
import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t2i_debias.config import MODES
from t2i_debias.errors import UserError
from t2i_debias.runs import Stage, hash_file, hash_obj
from t2i_debias.train import outputs, trackers
from t2i_debias.train.data import MEMBERS, EpochSampler, TripletDataset, read_triplets, select_items, tokenize
from t2i_debias.train.losses import (
    LOSS_NAMES,
    denoise_loss,
    denoise_target,
    guided_denoise_loss,
    lang_loss,
    preserve_loss,
    prior_loss,
    vision_loss,
)

log = logging.getLogger(__name__)

# Reference weights (DESIGN.md §2); cfg.train.weights overrides any of them.
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "text": {"denoise": 0.0, "lang": 0.1, "vision": 0.0, "preserve": 0.0, "prior": 0.0},
    "unet": {"denoise": 0.0, "lang": 0.0, "vision": 1.0, "preserve": 0.0, "prior": 0.0},
    "both": {"denoise": 0.5, "lang": 0.1, "vision": 0.4, "preserve": 0.0, "prior": 0.0},
}
TRAINED: dict[str, tuple[str, ...]] = {"text": ("text_encoder",), "unet": ("unet",), "both": ("text_encoder", "unet")}
# Losses that only reach the text encoder; denoise and vision reach both parts (through E(c)).
TEXT_ONLY_LOSSES = ("lang", "preserve")
LORA_TARGETS = {"unet": ["to_k", "to_q", "to_v", "to_out.0"],
                "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"]}
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# The EMA weights of a checkpoint, in safetensors (never a pickle: accelerate's custom-state files are
# loaded with torch.load(weights_only=False), so a planted one would run code on resume).
EMA_STATE = "ema.safetensors"


class TrainingDiverged(UserError):
    """A loss, gradient norm or weight became NaN or infinite: nothing is saved (the message names the step)."""


# ----------------------------------------------------------------------------- options
def resolve_weights(mode: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The mode's reference weights with `overrides` applied; terms that reach no trainable part are 0."""
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; expected one of {', '.join(MODES)}")
    w = dict(DEFAULT_WEIGHTS[mode])
    for k, v in (overrides or {}).items():
        if k not in w:
            raise ValueError(f"unknown loss weight {k!r}; known: {', '.join(LOSS_NAMES)}")
        if v < 0:
            raise ValueError(f"loss weight {k} must be >= 0, got {v}")
        w[k] = float(v)
    if "text_encoder" not in TRAINED[mode]:
        for k in TEXT_ONLY_LOSSES:
            if w[k] > 0:
                log.info("mode %s: %s weight %g ignored (the text encoder is frozen)", mode, k, w[k])
                w[k] = 0.0
    if not any(v > 0 for v in w.values()):
        raise ValueError(f"mode {mode}: every loss weight is 0, nothing to train")
    return w


def check_options(train: Any) -> None:
    """Reject a bad [train] option before any model is loaded, naming the option."""
    from t2i_debias.train.data import (
        BALANCE_ATTRIBUTES,
        BALANCES,
        CAPTION_ALIASES,
        DENOISE_CAPTIONS,
        DENOISE_MEMBERS,
    )

    choices = {"mixed_precision": ("no", "fp16", "bf16", "auto"),
               "denoise_caption": (*DENOISE_CAPTIONS, *CAPTION_ALIASES),
               "denoise_members": tuple(DENOISE_MEMBERS), "balance": BALANCES,
               "lang_similarity": ("tokens", "pooled"), "schedule": ("sequential", "joint"),
               "vision_reduction": ("triplet", "batch")}
    for key, allowed in choices.items():
        if getattr(train, key) not in allowed:
            raise ValueError(f"[train] {key} must be one of {' | '.join(allowed)}, got {getattr(train, key)!r}")
    for key in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps"):
        if getattr(train, key) < 1:
            raise ValueError(f"[train] {key} must be >= 1, got {getattr(train, key)}")
    if train.lora_rank < 0 or train.num_train_epochs < 0:
        raise ValueError("[train] lora_rank and num_train_epochs must be >= 0")
    for key in ("attribute_share", "caption_dropout"):
        if not 0.0 <= getattr(train, key) <= 1.0:
            raise ValueError(f"[train] {key} must be in [0, 1], got {getattr(train, key)}")
    if train.attribute_share + train.caption_dropout > 1.0:
        raise ValueError("[train] attribute_share + caption_dropout must be <= 1")
    if not set(train.balance_by) <= set(BALANCE_ATTRIBUTES) or not train.balance_by:
        raise ValueError(f"[train] balance_by must list some of {', '.join(BALANCE_ATTRIBUTES)}, got {train.balance_by}")
    if train.guidance_target < 0 and train.guidance_target != -1:
        raise ValueError(f"[train] guidance_target must be > 0, 0 (off) or -1 (the evaluation guidance), "
                         f"got {train.guidance_target}")
    if train.uncond_weight < 0 or train.input_perturbation < 0:
        raise ValueError("[train] uncond_weight and input_perturbation must be >= 0")
    unknown = set(train.mode_learning_rates) - set(MODES)
    if unknown:
        raise ValueError(f"[train] mode_learning_rates: unknown modes {sorted(unknown)}; expected {', '.join(MODES)}")
    if train.lr_warmup_steps > 0 and train.lr_scheduler == "constant":
        raise ValueError(f"[train] lr_warmup_steps = {train.lr_warmup_steps} with lr_scheduler = 'constant': diffusers "
                         "ignores the warm-up for 'constant'; use 'constant_with_warmup' or lr_warmup_steps = 0")
    if any(s < 1 for s in train.snapshot_steps):
        raise ValueError(f"[train] snapshot_steps must be >= 1, got {train.snapshot_steps}")


def resolved_train(cfg: Any) -> Any:
    """cfg.train with the values that depend on other sections or the device filled in (a copy):
    guidance_target -1 -> [generate] guidance_scale, mixed_precision auto -> fp16 on CUDA, else no."""
    t = copy.deepcopy(cfg.train)
    if t.guidance_target == -1:
        t.guidance_target = float(cfg.generate.guidance_scale)
    if t.mixed_precision == "auto":
        t.mixed_precision = "no" if use_cpu(cfg) or not torch.cuda.is_available() else "fp16"
    return t


def learning_rate_for(train: Any, mode: str) -> float:
    """The mode's learning rate: mode_learning_rates[mode] when given, else learning_rate."""
    return float(train.mode_learning_rates.get(mode, train.learning_rate))


def weight_dtype_for(mixed_precision: str) -> torch.dtype:
    """The dtype of frozen weights under a mixed-precision setting."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[mixed_precision]


def use_cpu(cfg: Any) -> bool:
    """Train on CPU when asked ([run] device = cpu) or when no accelerator exists; several CPU processes
    under `accelerate launch` then form a gloo group (accelerate needs cpu=True to see them)."""
    if cfg.run.device == "cpu":
        return True
    mps = getattr(torch.backends, "mps", None)
    return cfg.run.device == "auto" and not torch.cuda.is_available() and not (mps and mps.is_available())


def modes_to_run(train: Any) -> list[str]:
    """Modes in training order: sequential = text, unet, both (those listed); joint = both only."""
    for m in train.modes:
        if m not in MODES:
            raise ValueError(f"[train] modes: unknown mode {m!r}; expected {', '.join(MODES)}")
    if train.schedule == "sequential":
        return [m for m in MODES if m in train.modes]
    if train.schedule == "joint":
        return ["both"]
    raise ValueError(f"[train] schedule must be sequential | joint, got {train.schedule!r}")


# ----------------------------------------------------------------------------- models
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


def needs_unet(weights: dict[str, float]) -> bool:
    return weights["denoise"] > 0 or weights["vision"] > 0 or weights["prior"] > 0


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
    if weights["preserve"] > 0 or (weights["prior"] > 0 and "text_encoder" in trained):
        p.frozen_text_encoder = _cast(copy.deepcopy(p.text_encoder).eval(), weight_dtype)
    if weights["prior"] > 0:  # the base's own predictions, the target of prior preservation
        p.frozen_unet = _cast(copy.deepcopy(p.unet).eval(), weight_dtype)
    prior = _read_adapter_state(init_lora) if init_lora else {}
    for name in ("text_encoder", "unet"):
        module = getattr(p, name)
        if module is None:
            continue
        if p.lora and (name in trained or name in prior):
            _add_lora(module, name, lora_rank, prior.get(name))
            p.adapters += (name,)
            _cast(module, weight_dtype)
            for prm in module.parameters():  # LoRA weights train in fp32 (diffusers' cast_training_params)
                if prm.requires_grad:
                    prm.data = prm.data.float()
            if name not in trained:
                module.requires_grad_(False)
        elif name in trained:
            module.requires_grad_(True)
        else:
            _cast(module, weight_dtype)
        module.train(name in trained)
    if p.vae is not None:
        _cast(p.vae, weight_dtype).eval()
    return p


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
    from safetensors.torch import load_file

    path = Path(folder) / outputs.ADAPTER_STATE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no LoRA adapter state to continue from")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in load_file(str(path)).items():
        part, key = k.split("::", 1)
        out.setdefault(part, {})[key] = v
    return out


def trainable_parameters(parts: Parts) -> list[torch.nn.Parameter]:
    return [prm for name in parts.trained if getattr(parts, name) is not None
            for prm in getattr(parts, name).parameters() if prm.requires_grad]


# ----------------------------------------------------------------------------- one step
def sample_seed(seed: int, batch_number: int, index: int) -> int:
    """A generator seed for one triplet in one batch: independent of process count and batch layout."""
    digest = hashlib.sha256(f"{seed}:{batch_number}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw_noise(indices: list[int], latent_shape: tuple[int, ...], num_timesteps: int, seed: int,
               batch_number: int, independent: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per triplet: VAE-sample noise for a/p/n (B,3,...), diffusion noise (B,k,...), timesteps (B,k); k = 3 or 1."""
    k = 3 if independent else 1
    lat, noise, ts = [], [], []
    for idx in indices:
        g = torch.Generator().manual_seed(sample_seed(seed, batch_number, idx))
        lat.append(torch.randn((3, *latent_shape), generator=g))
        noise.append(torch.randn((k, *latent_shape), generator=g))
        ts.append(torch.randint(0, num_timesteps, (k,), generator=g))
    return torch.stack(lat), torch.stack(noise), torch.stack(ts)


def row_generator(seed: int, batch_number: int, index: int, stream: str) -> torch.Generator:
    """A generator for one sample and one purpose (caption choice, flip, perturbation), like `sample_seed`."""
    digest = hashlib.sha256(f"{seed}:{batch_number}:{index}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def unet_passes(weights: dict[str, float], guidance_target: float = 0.0) -> list[str]:
    """The U-Net passes the active losses need: a/p/n (vision, own captions), d (the denoised member under
    its chosen caption), u (the same noisy latent under the empty caption, for `guidance_target`) and q
    (the same noisy latent under an attribute caption, for `prior`)."""
    out = ["a", "p", "n"] if weights["vision"] > 0 else []
    if weights["denoise"] > 0:
        out.append("d")
        if guidance_target > 0:
            out.append("u")
    if weights["prior"] > 0:
        out.append("q")
    return out


def prior_captions(batch: dict[str, Any], seed: int, batch_number: int) -> torch.Tensor:
    """Per sample, the caption of the prior-preservation pass: the positive's or the negative's attribute
    caption (p = 0.5 each, from the sample's own generator), so both genders are asked of every image."""
    rows = []
    for r, idx in enumerate(batch["index"].tolist()):
        u = torch.rand((), generator=row_generator(seed, batch_number, idx, "prior")).item()
        rows.append(batch["ids_p" if u < 0.5 else "ids_n"][r])
    return torch.stack(rows)


def choose_captions(batch: dict[str, Any], train: Any, seed: int, batch_number: int) -> torch.Tensor:
    """Per sample, the denoise caption's ids: empty with p = caption_dropout, the attribute caption with
    p = attribute_share, else the base caption (`denoise_caption`); drawn from the sample's own generator."""
    rows = []
    for r, idx in enumerate(batch["index"].tolist()):
        u = torch.rand((), generator=row_generator(seed, batch_number, idx, "caption")).item()
        key = ("ids_empty" if u < train.caption_dropout else
               "ids_attr" if u < train.caption_dropout + train.attribute_share else "ids_base")
        rows.append(batch[key][r])
    return torch.stack(rows)


def _flip(pixels: torch.Tensor, indices: list[int], seed: int, batch_number: int, members: list[str]
          ) -> torch.Tensor:
    """Horizontally flip each image with p = 0.5 (`random_flip`), decided by the sample's generator."""
    flips = [torch.rand((), generator=row_generator(seed, batch_number, i, f"flip:{m}")).item() < 0.5
             for i, m in zip(indices, members, strict=True)]
    mask = torch.tensor(flips, device=pixels.device).view(-1, 1, 1, 1)
    return torch.where(mask, pixels.flip(-1), pixels)


def compute_losses(parts: Parts, batch: dict[str, Any], weights: dict[str, float], train: Any, *,
                   seed: int, batch_number: int, ref_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every active loss term of one batch of triplets, plus `loss` = Σ weight·term."""
    device = batch["ids_a"].device
    wd = parts.weight_dtype
    passes = unet_passes(weights, train.guidance_target)
    captions = [m for m in MEMBERS if weights["lang"] > 0 or m in passes]
    bsz = batch["ids_a"].shape[0]
    indices = batch["index"].tolist()
    terms: dict[str, torch.Tensor] = {}

    # --- text encoder: every caption (and reference prompt) in one call
    ids = [batch[f"ids_{m}"] for m in captions]
    if "d" in passes:
        captions.append("d")
        ids.append(choose_captions(batch, train, seed, batch_number).to(device))
    if "u" in passes:
        captions.append("u")
        ids.append(batch["ids_empty"])
    if "q" in passes:
        captions.append("q")
        ids.append(prior_captions(batch, seed, batch_number).to(device))
    if weights["preserve"] > 0:
        ids.append(ref_ids.to(device))
    text_trained = "text_encoder" in parts.trained
    with torch.set_grad_enabled(text_trained and torch.is_grad_enabled()):
        enc = parts.text_encoder(torch.cat(ids), return_dict=True)
    hidden = dict(zip(captions, enc.last_hidden_state[: len(captions) * bsz].split(bsz), strict=False))
    if weights["lang"] > 0:
        if train.lang_similarity == "pooled":
            pooled = dict(zip(captions, enc.pooler_output[: len(captions) * bsz].split(bsz), strict=True))
            terms["lang"] = lang_loss(pooled["a"], pooled["p"], pooled["n"], "pooled")
        else:
            terms["lang"] = lang_loss(hidden["a"], hidden["p"], hidden["n"], train.lang_similarity)
    if weights["preserve"] > 0:
        with torch.no_grad():
            ref_frozen = parts.frozen_text_encoder(ref_ids.to(device), return_dict=True).last_hidden_state
        terms["preserve"] = preserve_loss(enc.last_hidden_state[len(captions) * bsz:], ref_frozen)

    # --- U-Net: every pass in one call
    if passes:
        sched = parts.noise_scheduler
        member = batch["member"].to(device)
        rows = torch.arange(bsz, device=device)
        images = [m for m in ("a", "p", "n", "d") if m in passes or (m == "d" and "q" in passes)]
        pix_by = {m: batch[f"pixels_{m}"] for m in MEMBERS}
        if "d" in images:
            pix_by["d"] = torch.stack([pix_by[m] for m in MEMBERS], 1)[rows, member]
        pix_list = [pix_by[m] for m in images]
        if train.random_flip:  # the denoised member flips as its own vision pass does
            names = [[m] * bsz if m != "d" else [MEMBERS[i] for i in batch["member"].tolist()] for m in images]
            pix_list = [_flip(x, indices, seed, batch_number, n) for x, n in zip(pix_list, names, strict=True)]
        with torch.no_grad():
            pix = torch.cat(pix_list).to(device=device, dtype=wd)
            dist = parts.vae.encode(pix).latent_dist
        lat_eps, noise, ts = draw_noise(indices, tuple(dist.mean.shape[1:]), sched.config.num_train_timesteps,
                                        seed, batch_number, train.independent_noise)
        lat_eps, noise, ts = lat_eps.to(device), noise.to(device), ts.to(device)
        vcfg = parts.vae.config
        shift = getattr(vcfg, "shift_factor", None) or 0.0
        z0, zt, tm, nm = {}, {}, {}, {}
        for j, m in enumerate(images):
            mi = member if m == "d" else torch.full((bsz,), MEMBERS.index(m), device=device)
            mean, std = dist.mean[j * bsz:(j + 1) * bsz].float(), dist.std[j * bsz:(j + 1) * bsz].float()
            z0[m] = (mean + std * lat_eps[rows, mi] - shift) * vcfg.scaling_factor
            k = mi if train.independent_noise else torch.zeros_like(mi)
            nm[m], tm[m] = noise[rows, k], ts[rows, k]
            noisy_with = nm[m]
            if train.input_perturbation > 0 and m == "d":  # diffusers' --input_perturbation: the target stays ε
                extra = torch.stack([torch.randn(nm[m].shape[1:], generator=row_generator(seed, batch_number, i,
                                                                                          "perturb"))
                                     for i in indices]).to(device)
                noisy_with = nm[m] + train.input_perturbation * extra
            zt[m] = sched.add_noise(z0[m], noisy_with, tm[m])
        for m in ("u", "q"):  # the denoised member's noisy latent under another caption
            if m in passes:
                zt[m], tm[m] = zt["d"], tm["d"]
        # the denoised member is the positive under its own caption, unperturbed: reuse the vision pass
        reuse = ("p" in passes and "d" in passes and bool((member == 1).all()) and train.input_perturbation == 0
                 and torch.equal(hidden["d"], hidden["p"]))
        run = [m for m in passes if not (reuse and m == "d")]
        in_dtype = torch.float32 if ("unet" in parts.trained and not parts.lora) else wd
        unet_in = [(zt[m].to(in_dtype), tm[m], hidden[m].to(in_dtype)) for m in run]
        if train.batch_unet_passes:
            out = parts.unet(torch.cat([x[0] for x in unet_in]), torch.cat([x[1] for x in unet_in]),
                             torch.cat([x[2] for x in unet_in]), return_dict=False)[0]
            preds = dict(zip(run, out.split(bsz), strict=True))
        else:
            preds = {m: parts.unet(*x, return_dict=False)[0] for m, x in zip(run, unet_in, strict=True)}
        if reuse:
            preds["d"] = preds["p"]
        if weights["prior"] > 0:
            hidden_q = hidden["q"]
            if parts.frozen_text_encoder is not None and "text_encoder" in parts.trained:
                with torch.no_grad():
                    hidden_q = parts.frozen_text_encoder(ids[captions.index("q")], return_dict=True).last_hidden_state
            with torch.no_grad():
                frozen = parts.frozen_unet(zt["q"].to(wd), tm["q"], hidden_q.to(wd), return_dict=False)[0]
            terms["prior"] = prior_loss(preds["q"], frozen)
        if weights["vision"] > 0:
            terms["vision"] = vision_loss(preds["a"], preds["p"], preds["n"], train.vision_reduction)
        if weights["denoise"] > 0:
            ptype = sched.config.prediction_type
            target = denoise_target(ptype, z0["d"], nm["d"], tm["d"], sched)
            snr = None
            if train.snr_gamma:
                from diffusers.training_utils import compute_snr

                snr = compute_snr(sched, tm["d"])
            if train.guidance_target > 0:
                terms["denoise"] = guided_denoise_loss(preds["d"], preds["u"], target, train.guidance_target,
                                                       train.uncond_weight, snr, train.snr_gamma, ptype)
            else:
                terms["denoise"] = denoise_loss(preds["d"], target, snr, train.snr_gamma, ptype)
    terms["loss"] = sum(weights[k] * v for k, v in terms.items())
    return terms


# ----------------------------------------------------------------------------- checkpoints
def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def find_resume(ckpt_dir: Path, spec: str, train_hash: str, max_step: int | None = None) -> Path | None:
    """The checkpoint to resume from: `latest` (the newest at or below `max_step`, if it was made with this
    training config) or a given checkpoint folder."""
    if not spec:
        return None
    if spec == "latest":
        tag = ckpt_dir / "_train_hash.txt"
        found = [p for s, p in list_checkpoints(ckpt_dir) if max_step is None or s <= max_step]
        if not found:
            return None
        if not tag.exists() or tag.read_text().strip() != train_hash:
            log.warning("checkpoints in %s were made with another training config: starting fresh", ckpt_dir)
            return None
        return found[-1]
    p = Path(spec)
    if not p.is_absolute() and not p.exists():
        p = ckpt_dir / spec
    if not p.is_dir() or not CHECKPOINT_RE.match(p.name):
        raise FileNotFoundError(f"resume_from_checkpoint: {spec!r} is not a checkpoint-N folder")
    return p


# ----------------------------------------------------------------------------- one mode
@dataclass
class TrainResult:
    """What `train_mode` produced."""

    out_dir: Path
    steps: int
    outputs: list[Path] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)


def train_hash(cfg: Any, mode: str, base: str, data_dir: Path, init_lora: str | Path | None) -> str:
    """Hash of everything that shapes the weights (checkpoints made under another hash are not resumed)."""
    t = dataclasses.asdict(resolved_train(cfg))
    # Not hashed: options that do not change the weights, and max_train_steps (a run may be extended).
    for k in ("resume_from_checkpoint", "checkpointing_steps", "checkpoints_total_limit", "modes", "schedule",
              "dataloader_num_workers", "max_train_steps", "snapshot_steps", "control", "preset",
              "report_to", "log_images_every", "log_image_prompts"):
        t.pop(k, None)
    return hash_obj({"train": t, "seed": cfg.run.seed, "mode": mode, "base": _provenance(base),
                     "data": _provenance(data_dir, "metadata.jsonl"), "init_lora": _provenance(init_lora)})


def _provenance(path: str | Path | None, file: str = "_manifest.json") -> str:
    """A folder's identity for hashing: the hash of its manifest (or `file`) when it has one, else its name."""
    if not path:
        return ""
    f = Path(path) / file
    return hash_file(f) if f.is_file() else str(path)


def train_mode(cfg: Any, mode: str, base: str, data_dir: str | Path, out_dir: str | Path,
               init_lora: str | Path | None = None, origin: str | None = None) -> TrainResult:
    """Train one mode from `base` on the triplets in `data_dir`; write weights, log, plot and card to `out_dir`.

    `init_lora`: a previous mode's LoRA folder whose adapters are loaded first (LoRA chains);
    `origin`: the original base model when `base` is a previous mode's output (for the model card).
    """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    check_options(cfg.train)
    train = resolved_train(cfg)
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    weights = resolve_weights(mode, train.weights)
    accelerator = Accelerator(
        cpu=use_cpu(cfg),
        mixed_precision=train.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=train.gradient_accumulation_steps, sync_with_dataloader=False),
        **trackers.accelerator_kwargs(train, out_dir),
    )
    main = accelerator.is_main_process
    seed = cfg.run.seed
    set_seed(seed)
    wd = weight_dtype_for(train.mixed_precision)
    parts = load_parts(base, mode, weights, train.lora_rank, init_lora, wd)
    if train.gradient_checkpointing:
        if "unet" in parts.trained and parts.unet is not None:
            parts.unet.enable_gradient_checkpointing()
        if "text_encoder" in parts.trained:
            te = parts.text_encoder  # transformers 5 renamed the method; 4.x has only the old name
            (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()
    device = accelerator.device
    for name in ("text_encoder", "unet", "vae", "frozen_text_encoder", "frozen_unet"):
        if getattr(parts, name) is not None:
            getattr(parts, name).to(device)
    params = trainable_parameters(parts)
    if not params:
        raise RuntimeError(f"mode {mode}: no trainable parameters")
    ema = EMAModel(params, decay=train.ema_decay) if train.use_ema else None
    if ema is not None:
        ema.to(device)

    triplets, selection = training_selection(cfg, train, weights, data_dir)
    dataset = TripletDataset(triplets, parts.tokenizer, train.resolution, selection.items, train.denoise_caption)
    sampler = EpochSampler(len(dataset), seed, weights=None if selection.uniform else selection.weights)
    loader = torch.utils.data.DataLoader(dataset, batch_size=train.train_batch_size, sampler=sampler,
                                         num_workers=train.dataloader_num_workers)
    if train.num_train_epochs > 0:  # epochs -> optimizer steps (as diffusers' scripts count them)
        batches = math.ceil(len(dataset) / (train.train_batch_size * accelerator.num_processes))
        train.max_train_steps = train.num_train_epochs * math.ceil(batches / train.gradient_accumulation_steps)
    ref_ids = tokenize(parts.tokenizer, list(train.preserve_prompts)) if weights["preserve"] > 0 else None
    optimizer = torch.optim.AdamW(params, lr=learning_rate_for(train, mode), weight_decay=train.adam_weight_decay)
    lr_scheduler = get_scheduler(train.lr_scheduler, optimizer,
                                 num_warmup_steps=train.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=train.max_train_steps * accelerator.num_processes)
    trained_modules = [getattr(parts, n) for n in parts.trained]
    prepared = accelerator.prepare(*trained_modules, optimizer, loader, lr_scheduler)
    for n, m in zip(parts.trained, prepared, strict=False):
        setattr(parts, n, m)
    optimizer, loader, lr_scheduler = prepared[len(trained_modules):]

    # --- resume
    ckpt_dir = out_dir / "checkpoints"
    thash = train_hash(cfg, mode, base, data_dir, init_lora)
    resume = find_resume(ckpt_dir, train.resume_from_checkpoint, thash, train.max_train_steps)
    if resume is not None and (any(resume.glob("custom_checkpoint_*"))
                               or (ema is not None and not (resume / EMA_STATE).is_file())):
        # accelerate would unpickle custom_checkpoint_*.pkl with weights_only=False (code execution)
        log.warning("%s holds a pickled custom state or lacks %s (an older version's checkpoint, or a planted "
                    "file): not resumed, starting fresh", resume, EMA_STATE)
        resume = None
    global_step, rows = 0, []
    if resume is not None:
        accelerator.load_state(str(resume))
        if ema is not None:
            load_ema(ema, resume / EMA_STATE)
            ema.to(device)
        global_step = int(CHECKPOINT_RE.match(resume.name).group(1))
        rows = [r for r in outputs.read_log(resume / "training_log.csv") if r["step"] <= global_step]
        log.info("mode %s: resumed from %s (step %d)", mode, resume, global_step)
    elif main and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)  # stale checkpoints of another config must not be resumed later
    accelerator.wait_for_everyone()

    trackers.start(accelerator, train, mode, cfg.run.name)
    accum = train.gradient_accumulation_steps
    per_epoch = len(loader)
    batch_number = global_step * accum
    active = [k for k in LOSS_NAMES if weights[k] > 0]
    window: dict[str, float] = {}
    progress = tqdm(total=train.max_train_steps, initial=global_step, desc=f"train {mode}", disable=not main)
    while global_step < train.max_train_steps:
        epoch, offset = divmod(batch_number, per_epoch)
        epoch_loader = accelerator.skip_first_batches(loader, offset) if offset else loader
        epoch_loader.set_epoch(epoch)
        for batch in epoch_loader:
            with accelerator.accumulate(*[getattr(parts, n) for n in parts.trained]):
                terms = compute_losses(parts, batch, weights, train, seed=seed, batch_number=batch_number,
                                       ref_ids=ref_ids)
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and train.max_grad_norm > 0:
                    norm = accelerator.clip_grad_norm_(params, train.max_grad_norm)
                    # under fp16 the grad scaler skips an overflowing step itself (and lowers its scale)
                    if accelerator.scaler is None and norm is not None and not math.isfinite(float(norm)):
                        raise diverged(mode, f"gradient norm is {float(norm)}", global_step + 1, train)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            batch_number += 1
            for k in ["loss", *active]:
                window[k] = window.get(k, 0.0) + terms[k].detach().float().item() / accum
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(params)
            keys = ["loss", *active]
            mean = accelerator.reduce(torch.tensor([window[k] for k in keys], device=device), "mean")
            row = {"step": global_step, **dict(zip(keys, mean.tolist(), strict=True)),
                   "lr": lr_scheduler.get_last_lr()[0]}
            if not math.isfinite(row["loss"]):  # the same reduced value on every process: all stop together
                raise diverged(mode, f"loss is {row['loss']}", global_step, train)
            rows.append(row)
            trackers.log_row(accelerator, train, row)
            if trackers.wants_images(train, global_step):
                trackers.log_samples(accelerator, train, parts, global_step, seed)
            window = {}
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.4g}")
            if train.checkpointing_steps > 0 and global_step % train.checkpointing_steps == 0:
                check_finite(params, ema, mode, global_step, train)
                _checkpoint(accelerator, ckpt_dir, global_step, rows, thash, train.checkpoints_total_limit, ema)
            if global_step in train.snapshot_steps and global_step < train.max_train_steps:
                check_finite(params, ema, mode, global_step, train)
                _snapshot(accelerator, cfg, train, mode, base, data_dir, out_dir / f"step-{global_step}", parts,
                          ema, params, weights, rows, global_step, selection, init_lora, origin)
            if global_step >= train.max_train_steps:
                break
    progress.close()
    trackers.end(accelerator, train)
    accelerator.wait_for_everyone()

    result = TrainResult(out_dir=out_dir, steps=global_step, weights=weights, log=rows)
    check_finite(params, ema, mode, global_step, train)
    if main:
        if ema is not None:
            ema.copy_to(params)
        keep = parts.adapters if parts.lora else parts.trained
        unwrapped = {n: accelerator.unwrap_model(getattr(parts, n)) for n in keep}
        result.outputs = _save_outputs(train, mode, base, data_dir, out_dir, unwrapped, parts.lora,
                                       weights, rows, global_step, selection, init_lora or base,
                                       origin or base)
    accelerator.wait_for_everyone()
    del parts, optimizer, prepared
    gc.collect()
    return result


def diverged(mode: str, what: str, step: int, train: Any) -> TrainingDiverged:
    """The one-line error for a non-finite training value: what, at which step, under which learning rate."""
    return TrainingDiverged(
        f"mode {mode}: the {what} at step {step} (learning rate {learning_rate_for(train, mode):g}, "
        f"mixed_precision {train.mixed_precision}): training diverged and nothing was saved; lower [train] "
        f"learning_rate (or mode_learning_rates.{mode}), or train in fp32 (mixed_precision = 'no')")


def check_finite(params: list[torch.nn.Parameter], ema: Any, mode: str, step: int, train: Any) -> None:
    """Raise TrainingDiverged when a trained weight (or its EMA) is NaN or infinite: never save such weights."""
    tensors = list(params) + (list(ema.shadow_params) if ema is not None else [])
    with torch.no_grad():
        bad = sum(int(not torch.isfinite(t).all()) for t in tensors)
    if bad:
        raise diverged(mode, f"trained weights are not finite ({bad} of {len(tensors)} tensors)", step, train)


def save_ema(ema: Any, path: Path) -> None:
    """The EMA state in safetensors: its shadow weights as tensors, its counters as JSON metadata."""
    import json

    from safetensors.torch import save_file

    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    save_file({f"shadow.{i}": t.detach().contiguous().cpu() for i, t in enumerate(shadow)}, str(path),
              metadata={"ema": json.dumps(state, sort_keys=True)})


def load_ema(ema: Any, path: Path) -> None:
    """Restore an EMA state written by `save_ema` (safetensors only; no pickle is ever read)."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["ema"])
        shadow = [f.get_tensor(f"shadow.{i}") for i in range(len(list(f.keys())))]
    if len(shadow) != len(ema.shadow_params):
        raise ValueError(f"{path}: {len(shadow)} EMA tensors for {len(ema.shadow_params)} trained tensors")
    ema.load_state_dict({**state, "shadow_params": shadow})


def _checkpoint(accelerator: Any, ckpt_dir: Path, step: int, rows: list[dict[str, Any]], thash: str,
                total_limit: int, ema: Any = None) -> None:
    """save_state into a temp folder (plus the EMA state in safetensors), then rename to checkpoint-<step>
    (with the log so far); prune old ones."""
    tmp = ckpt_dir / f".checkpoint-{step}.tmp"
    final = ckpt_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "_train_hash.txt").write_text(thash + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            save_ema(ema, tmp / EMA_STATE)
        outputs.write_log(tmp / "training_log.csv", rows)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if total_limit > 0:
            for _, old in list_checkpoints(ckpt_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()


def _snapshot(accelerator: Any, cfg: Any, train: Any, mode: str, base: str, data_dir: Path, folder: Path,
              parts: Parts, ema: Any, params: list[torch.nn.Parameter], weights: dict[str, float],
              rows: list[dict[str, Any]], step: int, selection: Any, init_lora: Any, origin: Any) -> None:
    """A loadable model of the run so far at <out>/step-N (EMA weights when EMA is on), for step sweeps."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        keep = parts.adapters if parts.lora else parts.trained
        unwrapped = {n: accelerator.unwrap_model(getattr(parts, n)) for n in keep}
        _save_outputs(train, mode, base, data_dir, folder, unwrapped, parts.lora, weights, rows, step, selection,
                      init_lora or base, origin or base)
        if ema is not None:
            ema.restore(params)
        log.info("snapshot at step %d -> %s", step, folder)
    accelerator.wait_for_everyone()


def _save_outputs(train: Any, mode: str, base: str, data_dir: Path, out_dir: Path, modules: dict[str, Any],
                  lora: bool, weights: dict[str, float], rows: list[dict[str, Any]], steps: int,
                  selection: Any, start: str | Path, origin: str) -> list[Path]:
    """Write the mode's weights (pipeline folder or LoRA), training_log.csv, loss.png and README.md."""
    saved = save_lora(out_dir, modules) if lora else save_pipeline(out_dir, base, modules)
    saved.append(outputs.write_log(out_dir / "training_log.csv", rows))
    saved.append(outputs.plot_loss(out_dir / "loss.png", rows, f"mode {mode}"))
    saved.append(outputs.write_model_card(
        out_dir / "README.md", mode=mode, base=str(origin), data_dir=str(data_dir),
        n_triplets=len({it.triplet for it in selection.items}), weights=weights, train=dataclasses.asdict(train),
        steps=steps, lora=lora, init_from=str(start), n_samples=len(selection.items), dropped=selection.dropped))
    return saved


def training_selection(cfg: Any, train: Any, weights: dict[str, float], data_dir: Path) -> tuple[list[Any], Any]:
    """The triplets of `data_dir` and the samples this mode trains on (verification filter, cell weights)."""
    from t2i_debias.augment.captions import CaptionComposer

    triplets = read_triplets(data_dir, CaptionComposer.from_config(cfg.augment))
    members = train.denoise_members if weights["denoise"] > 0 else "positive"
    selection = select_items(triplets, members, ("a", "p", "n") if weights["vision"] > 0 else (),
                             train.verified_only, train.balance, train.balance_by)
    if selection.dropped:
        log.info("verification filter: %s of %d triplets dropped", selection.dropped, len(triplets))
    return triplets, selection


def save_pipeline(out_dir: Path, base: str, modules: dict[str, Any]) -> list[Path]:
    """A full diffusers pipeline folder: the trained modules (fp32) plus every other component from `base`."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base, **{k: v.float() for k, v in modules.items()})
    return outputs.save_into(out_dir, lambda d: pipe.save_pretrained(d, safe_serialization=True))


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
                  str(d / outputs.ADAPTER_STATE))

    return outputs.save_into(out_dir, write)


# ----------------------------------------------------------------------------- stage
def train_stage(cfg: Any, mode: str, base: str, data_dir: str | Path, out_dir: str | Path, force: bool = False,
                init_lora: str | Path | None = None, prev_manifest: Path | None = None,
                origin: str | None = None) -> bool:
    """`train_mode` as a runs.Stage: skipped when its manifest matches; returns True when it trained."""
    from accelerate import PartialState

    state = PartialState(cpu=use_cpu(cfg))
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    stage = Stage(name=f"models/{out_dir.name}", folder=out_dir,
                  config={"train": train_hash(cfg, mode, base, data_dir, init_lora),
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
        result = train_mode(cfg, mode, base, data_dir, out_dir, init_lora, origin)
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


def control_config(cfg: Any, mode: str) -> Any:
    """The control's config: the same [train] options, but only the biased anchors (own, neutral captions)
    are denoised, unweighted; lang and vision are off (they need the counterfactual members). Prior
    preservation stays: its target is the frozen base, and its captions name no counterfactual image."""
    c = copy.deepcopy(cfg)
    t = c.train
    w = resolve_weights(mode, t.weights)
    t.weights = {"denoise": w["denoise"] or 1.0, "lang": 0.0, "vision": 0.0, "preserve": w["preserve"]}
    if w["prior"] > 0:  # only then: a control without it keeps the train hash it had before the term existed
        t.weights["prior"] = w["prior"]
    t.denoise_members, t.balance = "anchor", "none"
    return c


def train_control(cfg: Any, base: str, data_dir: Path, out_dir: Path, mode: str, force: bool = False) -> bool:
    """models/control: `mode` trained from `base` with `control_config` (a runs.Stage, like every mode)."""
    return train_stage(control_config(cfg, mode), mode, base, data_dir, out_dir, force=force, origin=base)


def run_stage(cfg: Any, force: bool = False) -> None:
    """Train every mode of the config into <run_dir>/models/<mode>/ (sequential or joint schedule), and
    models/control when `[train] control`."""
    from t2i_debias.models import base_model

    base = base_model(cfg)
    data_dir = cfg.run_dir / "enriched"
    models_dir = cfg.run_dir / "models"
    lora = cfg.train.lora_rank > 0
    prev: Path | None = None
    for mode in modes_to_run(cfg.train):
        out = models_dir / mode
        start = base if (lora or prev is None) else str(prev)
        train_stage(cfg, mode, start, data_dir, out, force=force,
                    init_lora=prev if (lora and prev is not None) else None,
                    prev_manifest=(prev / "_manifest.json") if prev is not None else None, origin=base)
        prev = out
    if cfg.train.control:
        train_control(cfg, base, data_dir, models_dir / "control", modes_to_run(cfg.train)[-1], force=force)
