"""One training step's forward pass: the captions, the U-Net passes and the loss terms of one batch.

Each step encodes every caption it needs in one text-encoder call and runs every U-Net pass it needs in
one batched U-Net call; a loss whose weight is 0 is not computed, so text mode never touches the VAE or
the U-Net. Noise, timesteps and VAE samples are drawn per triplet from a generator seeded by (seed,
batch number, triplet index): training does not depend on the number of processes, and a resumed run
repeats the uninterrupted one. Tensors carry diffusers' names (`latents`, `noise`, `timesteps`,
`noisy_latents`, `encoder_hidden_states`), keyed by pass: a/p/n (anchor, positive, negative under their
own captions), d (the denoised member), u (d under the empty caption), q (d under an attribute caption).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from t2i_debias.core.config import TrainSection
from t2i_debias.train.data import MEMBERS
from t2i_debias.train.losses import (
    denoise_loss,
    denoise_target,
    guided_denoise_loss,
    lang_loss,
    preserve_loss,
    prior_loss,
    vision_loss,
)
from t2i_debias.train.parts import Parts


# ----------------------------------------------------------------------------- random draws
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


def choose_captions(batch: dict[str, Any], train: TrainSection, seed: int, batch_number: int) -> torch.Tensor:
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


# ----------------------------------------------------------------------------- one step
@dataclass
class Captions:
    """The text encoder's view of one batch: per caption name (a/p/n/d/u/q), its ids and hidden states."""

    names: list[str]
    input_ids: list[torch.Tensor]  # one per name, then the reference prompts' ids when `preserve` is on
    encoder_hidden_states: dict[str, torch.Tensor]
    output: Any  # the text encoder's output for every row (pooler_output, and the reference rows)
    batch_size: int


@dataclass
class UNetPasses:
    """Per U-Net pass: the clean latents, the noise, the timesteps, the noisy latents and the prediction."""

    latents: dict[str, torch.Tensor] = field(default_factory=dict)
    noise: dict[str, torch.Tensor] = field(default_factory=dict)
    timesteps: dict[str, torch.Tensor] = field(default_factory=dict)
    noisy_latents: dict[str, torch.Tensor] = field(default_factory=dict)
    model_pred: dict[str, torch.Tensor] = field(default_factory=dict)


def compute_losses(parts: Parts, batch: dict[str, Any], weights: dict[str, float], train: TrainSection, *,
                   seed: int, batch_number: int, ref_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every active loss term of one batch of triplets, plus `loss` = Σ weight·term."""
    passes = unet_passes(weights, train.guidance_target)
    # 1. text encoder: every caption (and the reference prompts) in one call
    captions = encode_captions(parts, batch, weights, train, passes, seed=seed, batch_number=batch_number,
                               ref_ids=ref_ids)
    # 2. the losses on the text encoder alone (built before the U-Net's graph, as they always were)
    terms = text_loss_terms(parts, weights, train, captions)
    if passes:
        # 3. VAE, noise and U-Net: every pass in one call
        unet = unet_predictions(parts, batch, captions, train, passes, seed=seed, batch_number=batch_number)
        # 4. the losses on the U-Net's predictions
        terms.update(unet_loss_terms(parts, weights, train, captions, unet))
    terms["loss"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def encode_captions(parts: Parts, batch: dict[str, Any], weights: dict[str, float], train: TrainSection,
                    passes: list[str], *, seed: int, batch_number: int,
                    ref_ids: torch.Tensor | None = None) -> Captions:
    """Encode every caption the active losses need, and the reference prompts for `preserve`, in one call."""
    device = batch["ids_a"].device
    bsz = batch["ids_a"].shape[0]
    names = [m for m in MEMBERS if weights["lang"] > 0 or m in passes]
    input_ids = [batch[f"ids_{m}"] for m in names]
    if "d" in passes:
        names.append("d")
        input_ids.append(choose_captions(batch, train, seed, batch_number).to(device))
    if "u" in passes:
        names.append("u")
        input_ids.append(batch["ids_empty"])
    if "q" in passes:
        names.append("q")
        input_ids.append(prior_captions(batch, seed, batch_number).to(device))
    if weights["preserve"] > 0:
        input_ids.append(ref_ids.to(device))
    text_trained = "text_encoder" in parts.trained
    with torch.set_grad_enabled(text_trained and torch.is_grad_enabled()):
        output = parts.text_encoder(torch.cat(input_ids), return_dict=True)
    encoder_hidden_states = dict(zip(names, output.last_hidden_state[: len(names) * bsz].split(bsz), strict=False))
    return Captions(names, input_ids, encoder_hidden_states, output, bsz)


def text_loss_terms(parts: Parts, weights: dict[str, float], train: TrainSection, captions: Captions
                    ) -> dict[str, torch.Tensor]:
    """`lang` (a/p/n captions apart) and `preserve` (reference prompts kept): the text encoder's own terms."""
    terms: dict[str, torch.Tensor] = {}
    bsz, n_rows = captions.batch_size, len(captions.names) * captions.batch_size
    hidden = captions.encoder_hidden_states
    if weights["lang"] > 0:
        if train.lang_similarity == "pooled":
            pooled = dict(zip(captions.names, captions.output.pooler_output[:n_rows].split(bsz), strict=True))
            terms["lang"] = lang_loss(pooled["a"], pooled["p"], pooled["n"], "pooled")
        else:
            terms["lang"] = lang_loss(hidden["a"], hidden["p"], hidden["n"], train.lang_similarity)
    if weights["preserve"] > 0:
        with torch.no_grad():
            ref_frozen = parts.frozen_text_encoder(captions.input_ids[-1], return_dict=True).last_hidden_state
        terms["preserve"] = preserve_loss(captions.output.last_hidden_state[n_rows:], ref_frozen)
    return terms


def unet_predictions(parts: Parts, batch: dict[str, Any], captions: Captions, train: TrainSection, passes: list[str], *,
                     seed: int, batch_number: int) -> UNetPasses:
    """Encode the images, noise their latents and run every U-Net pass of the batch."""
    member = batch["member"].to(batch["ids_a"].device)
    hidden = captions.encoder_hidden_states
    # the images the passes denoise (d also when only the prior pass q reads its noisy latent)
    images = [m for m in ("a", "p", "n", "d") if m in passes or (m == "d" and "q" in passes)]
    latent_dist = encode_images(parts, batch, images, train, seed=seed, batch_number=batch_number)
    unet = add_noise(parts, batch, images, latent_dist, train, seed=seed, batch_number=batch_number)
    for m in ("u", "q"):  # the denoised member's noisy latent under another caption
        if m in passes:
            unet.noisy_latents[m], unet.timesteps[m] = unet.noisy_latents["d"], unet.timesteps["d"]
    # the denoised member is the positive under its own caption, unperturbed: reuse the vision pass
    reuse = ("p" in passes and "d" in passes and bool((member == 1).all()) and train.input_perturbation == 0
             and torch.equal(hidden["d"], hidden["p"]))
    run = [m for m in passes if not (reuse and m == "d")]
    in_dtype = torch.float32 if ("unet" in parts.trained and not parts.lora) else parts.weight_dtype
    unet_in = [(unet.noisy_latents[m].to(in_dtype), unet.timesteps[m], hidden[m].to(in_dtype)) for m in run]
    if train.batch_unet_passes:
        out = parts.unet(torch.cat([x[0] for x in unet_in]), torch.cat([x[1] for x in unet_in]),
                         torch.cat([x[2] for x in unet_in]), return_dict=False)[0]
        unet.model_pred = dict(zip(run, out.split(captions.batch_size), strict=True))
    else:
        unet.model_pred = {m: parts.unet(*x, return_dict=False)[0] for m, x in zip(run, unet_in, strict=True)}
    if reuse:
        unet.model_pred["d"] = unet.model_pred["p"]
    return unet


def encode_images(parts: Parts, batch: dict[str, Any], images: list[str], train: TrainSection, *, seed: int,
                  batch_number: int) -> Any:
    """The VAE's latent distribution of every image the passes denoise, in `images` order (one call)."""
    device = batch["ids_a"].device
    bsz = batch["ids_a"].shape[0]
    member = batch["member"].to(device)
    rows = torch.arange(bsz, device=device)
    pix_by = {m: batch[f"pixels_{m}"] for m in MEMBERS}
    if "d" in images:
        pix_by["d"] = torch.stack([pix_by[m] for m in MEMBERS], 1)[rows, member]
    pix_list = [pix_by[m] for m in images]
    if train.random_flip:  # the denoised member flips as its own vision pass does
        names = [[m] * bsz if m != "d" else [MEMBERS[i] for i in batch["member"].tolist()] for m in images]
        pix_list = [_flip(x, batch["index"].tolist(), seed, batch_number, n)
                    for x, n in zip(pix_list, names, strict=True)]
    with torch.no_grad():
        pixel_values = torch.cat(pix_list).to(device=device, dtype=parts.weight_dtype)
        return parts.vae.encode(pixel_values).latent_dist


def add_noise(parts: Parts, batch: dict[str, Any], images: list[str], latent_dist: Any, train: TrainSection, *,
              seed: int, batch_number: int) -> UNetPasses:
    """Sample each image's latents, draw its noise and timestep (per triplet), and noise the latents."""
    device = batch["ids_a"].device
    bsz = batch["ids_a"].shape[0]
    member = batch["member"].to(device)
    rows = torch.arange(bsz, device=device)
    indices = batch["index"].tolist()
    sched = parts.noise_scheduler
    vae_noise, noise, timesteps = draw_noise(indices, tuple(latent_dist.mean.shape[1:]),
                                             sched.config.num_train_timesteps, seed, batch_number,
                                             train.independent_noise)
    vae_noise, noise, timesteps = vae_noise.to(device), noise.to(device), timesteps.to(device)
    vae_config = parts.vae.config
    shift = getattr(vae_config, "shift_factor", None) or 0.0
    unet = UNetPasses()
    for j, m in enumerate(images):
        mi = member if m == "d" else torch.full((bsz,), MEMBERS.index(m), device=device)
        mean = latent_dist.mean[j * bsz:(j + 1) * bsz].float()
        std = latent_dist.std[j * bsz:(j + 1) * bsz].float()
        unet.latents[m] = (mean + std * vae_noise[rows, mi] - shift) * vae_config.scaling_factor
        k = mi if train.independent_noise else torch.zeros_like(mi)
        unet.noise[m], unet.timesteps[m] = noise[rows, k], timesteps[rows, k]
        noise_in = unet.noise[m]
        if train.input_perturbation > 0 and m == "d":  # diffusers' --input_perturbation: the target stays ε
            extra = torch.stack([torch.randn(unet.noise[m].shape[1:],
                                             generator=row_generator(seed, batch_number, i, "perturb"))
                                 for i in indices]).to(device)
            noise_in = unet.noise[m] + train.input_perturbation * extra
        unet.noisy_latents[m] = sched.add_noise(unet.latents[m], noise_in, unet.timesteps[m])
    return unet


def unet_loss_terms(parts: Parts, weights: dict[str, float], train: TrainSection, captions: Captions, unet: UNetPasses
                    ) -> dict[str, torch.Tensor]:
    """`prior` (the frozen U-Net's answer kept), `vision` (a/p/n predictions apart) and `denoise`."""
    terms: dict[str, torch.Tensor] = {}
    pred = unet.model_pred
    wd = parts.weight_dtype
    if weights["prior"] > 0:
        hidden_q = captions.encoder_hidden_states["q"]
        if parts.frozen_text_encoder is not None and "text_encoder" in parts.trained:
            with torch.no_grad():
                q_ids = captions.input_ids[captions.names.index("q")]
                hidden_q = parts.frozen_text_encoder(q_ids, return_dict=True).last_hidden_state
        with torch.no_grad():
            frozen = parts.frozen_unet(unet.noisy_latents["q"].to(wd), unet.timesteps["q"], hidden_q.to(wd),
                                       return_dict=False)[0]
        terms["prior"] = prior_loss(pred["q"], frozen)
    if weights["vision"] > 0:
        terms["vision"] = vision_loss(pred["a"], pred["p"], pred["n"], train.vision_reduction)
    if weights["denoise"] > 0:
        terms["denoise"] = _denoise_term(parts.noise_scheduler, train, unet)
    return terms


def _denoise_term(sched: Any, train: TrainSection, unet: UNetPasses) -> torch.Tensor:
    """The denoising loss of pass d (min-SNR weighted when `snr_gamma`), guided when `guidance_target`."""
    ptype = sched.config.prediction_type
    target = denoise_target(ptype, unet.latents["d"], unet.noise["d"], unet.timesteps["d"], sched)
    snr = None
    if train.snr_gamma:
        from diffusers.training_utils import compute_snr

        snr = compute_snr(sched, unet.timesteps["d"])
    if train.guidance_target > 0:
        return guided_denoise_loss(unet.model_pred["d"], unet.model_pred["u"], target, train.guidance_target,
                                   train.uncond_weight, snr, train.snr_gamma, ptype)
    return denoise_loss(unet.model_pred["d"], target, snr, train.snr_gamma, ptype)
