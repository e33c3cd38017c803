"""The training losses of the contrastive fine-tuning (DESIGN.md §2), as pure tensor functions.

Each takes already-computed embeddings / predictions, so it can be checked by hand on small tensors;
`t2i_debias.train.step` decides which forward passes to run for each loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def denoise_target(prediction_type: str, latents: torch.Tensor, noise: torch.Tensor,
                   timesteps: torch.Tensor, scheduler: object | None = None) -> torch.Tensor:
    """The regression target: the noise ε (`epsilon`) or the velocity v (`v_prediction`, as SD 2.1)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        if scheduler is None:
            raise ValueError("v_prediction needs the noise scheduler to compute the velocity")
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected epsilon | v_prediction")


def min_snr_weights(snr: torch.Tensor, snr_gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample min-SNR-γ weights, as diffusers' train_text_to_image: min(SNR, γ)/SNR (ε) or /(SNR+1) (v)."""
    clipped = torch.minimum(snr, torch.full_like(snr, float(snr_gamma)))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def denoise_loss(pred: torch.Tensor, target: torch.Tensor, snr: torch.Tensor | None = None,
                 snr_gamma: float = 0.0, prediction_type: str = "epsilon") -> torch.Tensor:
    """MSE(pred, target); with snr_gamma > 0 each sample's MSE is weighted by min-SNR-γ (needs `snr`)."""
    pred, target = pred.float(), target.float()
    if not snr_gamma:
        return F.mse_loss(pred, target, reduction="mean")
    if snr is None:
        raise ValueError("min-SNR weighting needs the per-sample SNR")
    per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=list(range(1, pred.ndim)))
    return (per_sample * min_snr_weights(snr.float(), snr_gamma, prediction_type)).mean()


def guided_denoise_loss(pred_c: torch.Tensor, pred_u: torch.Tensor, target: torch.Tensor, guidance: float,
                        uncond_weight: float = 1.0, snr: torch.Tensor | None = None, snr_gamma: float = 0.0,
                        prediction_type: str = "epsilon") -> torch.Tensor:
    """MSE(ε_u + w·(ε_c − ε_u), target) + λ_u·MSE(ε_u, target): train the prediction that guided sampling
    at scale w uses, and keep the unconditional branch a denoiser (`guidance_target = w`, `uncond_weight = λ_u`)."""
    pred_c, pred_u = pred_c.float(), pred_u.float()
    guided = pred_u + guidance * (pred_c - pred_u)
    loss = denoise_loss(guided, target, snr, snr_gamma, prediction_type)
    if uncond_weight > 0:
        loss = loss + uncond_weight * denoise_loss(pred_u, target, snr, snr_gamma, prediction_type)
    return loss


def lang_loss(e_a: torch.Tensor, e_p: torch.Tensor, e_n: torch.Tensor, similarity: str = "tokens") -> torch.Tensor:
    """mean((cos(E_a, E_p) − cos(E_a, E_n))²): the neutral caption equally close to both demographic captions.

    `tokens` (reference behaviour): inputs (B, L, D), cosine along the token axis (dim 1) -> (B, D),
    averaged over D and the batch. `pooled`: inputs (B, D) pooled (EOS) embeddings, cosine along D.
    """
    if similarity == "tokens":
        if e_a.ndim != 3:
            raise ValueError(f"lang 'tokens' needs (B, L, D) hidden states, got shape {tuple(e_a.shape)}")
        dim = 1
    elif similarity == "pooled":
        if e_a.ndim != 2:
            raise ValueError(f"lang 'pooled' needs (B, D) pooled embeddings, got shape {tuple(e_a.shape)}")
        dim = -1
    else:
        raise ValueError(f"unknown lang_similarity {similarity!r}; expected tokens | pooled")
    e_a, e_p, e_n = e_a.float(), e_p.float(), e_n.float()
    diff = F.cosine_similarity(e_a, e_p, dim=dim) - F.cosine_similarity(e_a, e_n, dim=dim)
    return (diff**2).mean()


def vision_loss(eps_a: torch.Tensor, eps_p: torch.Tensor, eps_n: torch.Tensor,
                reduction: str = "triplet") -> torch.Tensor:
    """(1 − MSE(ε_p, ε_n))² + MSE(ε_p, ε_a)².

    `triplet`: each MSE per triplet, the formula per triplet, then the batch mean, so training does not
    depend on how a batch is split across processes. `batch` (upstream's code): each MSE over the whole
    batch, then the formula once. The two agree for one triplet per batch.
    """
    if reduction not in ("triplet", "batch"):
        raise ValueError(f"vision_reduction must be triplet | batch, got {reduction!r}")
    eps_a, eps_p, eps_n = eps_a.float(), eps_p.float(), eps_n.float()
    if reduction == "batch":
        return (1.0 - F.mse_loss(eps_p, eps_n)) ** 2 + F.mse_loss(eps_p, eps_a) ** 2
    dims = list(range(1, eps_p.ndim))
    mse_pn = ((eps_p - eps_n) ** 2).mean(dim=dims)
    mse_pa = ((eps_p - eps_a) ** 2).mean(dim=dims)
    return ((1.0 - mse_pn) ** 2 + mse_pa**2).mean()


def preserve_loss(e_ref: torch.Tensor, e_ref_frozen: torch.Tensor) -> torch.Tensor:
    """MSE(E(c_r), E_frozen(c_r)) on reference prompts: keeps the text encoder from drifting."""
    return F.mse_loss(e_ref.float(), e_ref_frozen.detach().float(), reduction="mean")


def prior_loss(pred: torch.Tensor, pred_frozen: torch.Tensor) -> torch.Tensor:
    """MSE(ε_θ(z_t, t, c_attr), ε_frozen(z_t, t, c_attr)): prior preservation as distillation. The base
    already obeys attribute captions ("a woman working as a nurse"); this keeps the fine-tune doing so."""
    return F.mse_loss(pred.float(), pred_frozen.detach().float(), reduction="mean")
