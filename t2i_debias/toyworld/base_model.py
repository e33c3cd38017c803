"""The toy world's base text-to-image model: a tiny StableDiffusionPipeline trained from scratch.

Recipe (the toy analogue of web captions): the neutral caption ("a photo of a doctor") is paired with
the biased population, so the neutral prompt learns the planted bias (mostly men for doctors); the
attribute captions ("a photo of a Black woman working as a doctor") are paired with a separate
*balanced* population, because people are named by their attributes mostly when they are unexpected.
So, like real Stable Diffusion, the base draws a female doctor when asked, while its neutral prompt
stays biased; the pipeline then has to remove that bias. Built offline in minutes on CPU and cached
under a hash of everything that shapes it (`toy-base-<hash>`); the VAE is shared by all seeds.

Sizes (chosen by a feasibility run on 2 CPU cores): VAE ×4 (32×32 RGB -> 4×8×8 latents, ~680k
params), U-Net (32, 64) with cross-attention at both levels (~1.1M), CLIP text encoder of 2 layers,
width 64 (~72k params + the 49,408×64 embedding of the real CLIP BPE vocabulary).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from t2i_debias.core.config import Config, ToySection
from t2i_debias.core.text import with_article
from t2i_debias.toyworld.dataset import MALE_SHARE, RACE_SHARE, Sample, balanced_population, biased_population
from t2i_debias.toyworld.pretrained import build_record, cached_or_shipped
from t2i_debias.toyworld.render import OCCUPATIONS, TOY_RACES, world_spec

log = logging.getLogger(__name__)

VERSION = 3  # 2: attribute captions on a balanced population; build.json. 3: six occupations (2 held out)
# Seed offset of the balanced population whose pictures carry the attribute captions (people distinct
# from the biased population of the same seed).
ATTRIBUTE_SEED_OFFSET = 7919
RACE_WORD = {"white": "White", "asian": "Asian", "black": "Black"}
GENDER_ADJ = {"man": "male", "woman": "female"}


# ----------------------------------------------------------------------------- captions
def neutral_caption(occupation: str) -> str:
    """The neutral training caption (the anchor caption of the augmentation stage)."""
    return f"a photo of {with_article(occupation)}"


def attribute_caption(occupation: str, gender: str, race: str | None, rng: np.random.Generator,
                      p_race: float = 0.5) -> str:
    """A caption naming the attributes, in one of the phrasings the pipeline's prompts use; with `race`, it
    names the skin tone with probability `p_race` (two phrasings each, with and without it)."""
    k = int(rng.integers(2)) + (2 if race and rng.random() < p_race else 0)
    if k == 0:
        return f"a photo of {with_article(GENDER_ADJ[gender] + ' ' + occupation)}"
    if k == 1:
        return f"a photo of {with_article(gender)} working as {with_article(occupation)}"
    r = RACE_WORD[race] if race else ""
    if k == 2 and race:
        return f"a photo of {with_article(r + ' ' + gender)} working as {with_article(occupation)}"
    if race:
        return f"a photo of {with_article(r + ' ' + GENDER_ADJ[gender] + ' ' + occupation)}"
    return f"a photo of {with_article(GENDER_ADJ[gender] + ' ' + occupation)}"


def training_caption(s: Sample, rng: np.random.Generator, p_attribute: float, p_drop: float,
                     p_race: float = 0.5) -> str:
    """Empty with p_drop (for classifier-free guidance), attribute caption with p_attribute, else neutral."""
    u = rng.random()
    if u < p_drop:
        return ""
    if u < p_drop + p_attribute:
        return attribute_caption(s.person.occupation, s.person.gender, s.person.race, rng, p_race)
    return neutral_caption(s.person.occupation)


def caption_batch(rng: np.random.Generator, n_neutral: int, n_attribute: int, batch_size: int, p_attribute: float,
                  p_drop: float) -> tuple[np.ndarray, np.ndarray]:
    """Pick a batch: (indices, kinds), kind 0 = empty caption, 1 = neutral, 2 = attribute caption.

    Indices below `n_neutral` are people of the neutral (biased) population; indices from `n_neutral`
    on are people of the attribute population, and only attribute captions use them.
    """
    u = rng.random(batch_size)
    kinds = np.where(u < p_drop, 0, np.where(u < p_drop + p_attribute, 2, 1))
    idx = rng.integers(0, n_neutral, batch_size)
    attr = kinds == 2
    idx[attr] = n_neutral + rng.integers(0, n_attribute, int(attr.sum()))
    return idx, kinds


# ----------------------------------------------------------------------------- specs
# The base recipe (tuned on seed 0, then used unchanged for seeds 1 and 2: docs/results/toy_base.md).
BASE_STEPS = 2500
P_ATTRIBUTE = 0.5
P_RACE = 0.75

def vae_spec(steps: int = 400, n_images: int = 4096, batch_size: int = 64, lr: float = 2e-3,
             mid_attention: bool = True) -> dict[str, Any]:
    """Config of the toy VAE and its training. No population seed in it: one VAE serves every seed."""
    return {
        "version": VERSION,
        "world": world_spec(),
        "model": {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 3,
                  "up_block_types": ["UpDecoderBlock2D"] * 3, "block_out_channels": [16, 32, 64],
                  "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8, "sample_size": 32,
                  "mid_block_add_attention": mid_attention},
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "kl_weight": 1e-4, "n_images": n_images,
                  "seed": 1234},
    }


def base_spec(seed: int = 0, steps: int = BASE_STEPS, n_per_occupation: int = 300, vae_steps: int = 400,
              vae_images: int = 4096, batch_size: int = 64, lr: float = 1e-3, p_attribute: float = P_ATTRIBUTE,
              attribute_per_cell: int = 50, heads: tuple[int, int] | int = 8, p_race: float = P_RACE) -> dict[str, Any]:
    """Config of the toy base model: data (bias, size, seed, attribute population), architecture, training."""
    return {
        "version": VERSION,
        "seed": seed,
        "world": world_spec(),
        "vae": vae_spec(vae_steps, vae_images),
        # Neutral captions on the biased population; attribute captions on a balanced one
        # (`attribute_per_cell` people per occupation × gender × skin tone; module docstring).
        "data": {"n_per_occupation": n_per_occupation, "male_share": MALE_SHARE,
                 "race_share": {k: list(v) for k, v in RACE_SHARE.items()},
                 "attribute_population": "balanced", "attribute_per_cell": attribute_per_cell},
        "unet": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
                 "block_out_channels": [32, 64],
                 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                 # diffusers reads `attention_head_dim` as the head count. (2, 4) heads took 27% less CPU per
                 # training step than 8 (measured, batch 64); their quality is not measured yet.
                 "cross_attention_dim": 64, "attention_head_dim": list(heads) if isinstance(heads, tuple) else heads,
                 "norm_num_groups": 8},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
                 "projection_dim": 64, "vocab_size": 49408, "max_position_embeddings": 77,
                 "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
        # Prompts are padded/cut to 24 tokens (the longest toy prompt, with the ethical-intervention
        # suffix, is 20): with CLIP's 77 a CPU training step was ~3x slower.
        "max_length": 24,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": 50, "p_attribute": p_attribute,
                  "p_drop": 0.1, "p_race": p_race},
    }


def spec_from_toy(toy: ToySection) -> dict[str, Any]:
    """The base-model spec a run's [toy] section asks for."""
    return base_spec(seed=toy.seed, steps=toy.base_steps, n_per_occupation=toy.n_per_occupation,
                     vae_steps=toy.vae_steps)


# ----------------------------------------------------------------------------- helpers
def to_tensor(images: list[Any]) -> Any:
    """PIL images -> float tensor (N, 3, H, W) in [-1, 1]."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _lr_lambda(warmup: int, total: int, floor: float = 0.1) -> Any:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    return f


# ----------------------------------------------------------------------------- VAE
def build_vae(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Train the toy VAE on fresh renders (balanced population) and save it (diffusers format, build.json)."""
    with build_record(out_dir, "toy VAE"):
        _train_vae(out_dir, spec)
    return out_dir


def _train_vae(out_dir: Path, spec: dict[str, Any]) -> None:
    import torch
    from diffusers import AutoencoderKL

    tr = spec["train"]
    torch.manual_seed(tr["seed"])
    per_cell = math.ceil(tr["n_images"] / (len(OCCUPATIONS) * 2 * len(TOY_RACES)))
    x_all = to_tensor([s.render().image for s in balanced_population(per_cell, tr["seed"])])
    vae = AutoencoderKL(**spec["model"])
    opt = torch.optim.AdamW(vae.parameters(), lr=tr["lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tr["lr"], total_steps=tr["steps"], pct_start=0.15)
    g = torch.Generator().manual_seed(tr["seed"])
    t0 = time.time()
    for step in range(tr["steps"]):
        x = x_all[torch.randint(0, len(x_all), (tr["batch_size"],), generator=g)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        kl = post.kl().mean() / post.mean[0].numel()  # per element
        loss = mse + tr["kl_weight"] * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == tr["steps"] - 1:
            log.info("vae step %d/%d mse %.4f kl %.2f (%.1fs)", step, tr["steps"], mse.item(), kl.item(),
                     time.time() - t0)
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(x_all[i : i + 256]).latent_dist.mean for i in range(0, min(len(x_all), 1024), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    vae.save_pretrained(out_dir, safe_serialization=True)


def vae_dir(spec: dict[str, Any] | None = None) -> Path:
    """Cached folder of the toy VAE: the shipped copy when it matches `spec`, else trained."""
    spec = spec or vae_spec()
    return cached_or_shipped("toy-vae", "vae", spec, lambda d: build_vae(d, spec))


# ----------------------------------------------------------------------------- base model
def new_scheduler(prediction_type: str = "epsilon") -> Any:
    """The DDIM scheduler of the toy pipeline (SD's betas)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


def denoise_train(unet: Any, text_encoder: Any, vae: Any, tokenizer: Any, samples: list[Sample], *, steps: int,
                  lr: float, batch_size: int, seed: int, p_attribute: float, p_drop: float, warmup: int = 0,
                  weight_decay: float = 1e-4, label: str = "toy",
                  attribute_samples: list[Sample] | None = None, p_race: float = 0.5) -> None:
    """Plain denoising (ε-MSE) of U-Net + text encoder on rendered samples with the toy caption mix.

    With `attribute_samples`, attribute captions go with those people (the base recipe: a balanced
    population) and neutral / empty captions with `samples`; without, every caption kind uses `samples`.
    """
    import torch
    from diffusers import DDPMScheduler

    t0 = time.time()
    n_neutral = len(samples)
    if attribute_samples:
        samples = samples + attribute_samples
    x = to_tensor([s.render().image for s in samples])
    with torch.no_grad():
        dists = [vae.encode(x[i : i + 256]).latent_dist for i in range(0, len(x), 256)]
    mean = torch.cat([d.mean for d in dists])
    std = torch.cat([d.std for d in dists])
    sf = vae.config.scaling_factor
    log.info("%s: encoded %d training images in %.1fs", label, len(samples), time.time() - t0)
    noise_sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                num_train_timesteps=1000)
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup, steps) if warmup else (lambda _: 1.0))
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    unet.train()
    text_encoder.train()
    t0 = time.time()
    for step in range(steps):
        if attribute_samples:
            idx, kinds = caption_batch(rng, n_neutral, len(attribute_samples), batch_size, p_attribute, p_drop)
            caps = [("", neutral_caption(samples[i].person.occupation),
                     attribute_caption(samples[i].person.occupation, samples[i].person.gender, samples[i].person.race,
                                       rng, p_race))[k] for i, k in zip(idx, kinds, strict=True)]
        else:
            idx = rng.integers(0, len(samples), batch_size)
            caps = [training_caption(samples[i], rng, p_attribute, p_drop, p_race) for i in idx]
        ids = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        it = torch.as_tensor(idx)
        z0 = (mean[it] + std[it] * torch.randn(mean[it].shape, generator=g)) * sf
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, 1000, (len(idx),), generator=g)
        pred = unet(noise_sched.add_noise(z0, noise, t), t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f (%.1fs)", label, step, steps, loss.item(), time.time() - t0)
    unet.eval()
    text_encoder.eval()


def base_populations(spec: dict[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """(neutral-caption people, attribute-caption people) of a base spec: biased, then balanced."""
    seed, data = spec["seed"], spec["data"]
    neutral = biased_population(data["n_per_occupation"], seed, data["male_share"],
                                {k: tuple(v) for k, v in data["race_share"].items()}, tuple(spec["world"]["occupations"]))
    if data.get("attribute_population") != "balanced":
        raise ValueError(f"toy base spec: unknown attribute_population {data.get('attribute_population')!r}; "
                         "known: 'balanced'")
    return neutral, balanced_population(data["attribute_per_cell"], seed + ATTRIBUTE_SEED_OFFSET)


def build_base(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Train text encoder + U-Net jointly from scratch (recipe: module docstring); save the pipeline."""
    with build_record(out_dir, f"toy base seed {spec['seed']}"):
        _train_base(out_dir, spec)
    return out_dir


def _train_base(out_dir: Path, spec: dict[str, Any]) -> None:
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from t2i_debias.tiny.sd import clip_tokenizer_dir

    tr, seed = spec["train"], spec["seed"]
    vae = AutoencoderKL.from_pretrained(vae_dir(spec["vae"]))
    vae.requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir(), model_max_length=spec["max_length"])
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**spec["unet"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    neutral, attribute = base_populations(spec)
    denoise_train(unet, text_encoder, vae, tokenizer, neutral, steps=tr["steps"], lr=tr["lr"],
                  batch_size=tr["batch_size"], seed=seed, p_attribute=tr["p_attribute"], p_drop=tr["p_drop"],
                  warmup=tr["warmup"], label=f"toy base seed {seed}", attribute_samples=attribute,
                  p_race=tr["p_race"])
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=new_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out_dir, safe_serialization=True)


def add_unshipped_parts(out_dir: Path, spec: dict[str, Any]) -> None:
    """Add the parts a shipped base leaves out (VAE, tokenizer), exactly as a build saves them."""
    from transformers import CLIPTokenizer

    from t2i_debias.tiny.sd import clip_tokenizer_dir

    shutil.copytree(vae_dir(spec["vae"]), out_dir / "vae", ignore=shutil.ignore_patterns("build.json", "shipped.json"))
    CLIPTokenizer.from_pretrained(clip_tokenizer_dir(), model_max_length=spec["max_length"]).save_pretrained(
        out_dir / "tokenizer")


def base_dir(spec: dict[str, Any]) -> Path:
    """Cached folder of the toy base pipeline for `spec`: the shipped copy of its seed when it matches, else
    trained on first use."""
    return cached_or_shipped("toy-base", f"base-seed{spec['seed']}", spec, lambda d: build_base(d, spec),
                             finish=lambda d: add_unshipped_parts(d, spec))


def resolve(spec: str, cfg: Config | None = None) -> Path:
    """Folder of the toy model named by `spec` ("toy:base"), built with the run config's [toy] settings.

    The model-resolver contract (models.RESOLVERS) hands the whole config; only its [toy] section is read."""
    kind = spec.split(":", 1)[1] if ":" in spec else spec
    if kind != "base":
        raise ValueError(f"unknown toy model {spec!r}; known: toy:base")
    return base_dir(spec_from_toy(cfg.toy) if cfg is not None else base_spec())
