"""Known answers for the five losses (DESIGN.md §2), worked out by hand, and which parameters each reaches."""

from __future__ import annotations

import math

import pytest
import torch

from t2i_debias.core.options import LOSS_NAMES
from t2i_debias.train.losses import (
    denoise_loss,
    denoise_target,
    lang_loss,
    min_snr_weights,
    preserve_loss,
    prior_loss,
    vision_loss,
)
from tests.helpers.train_fixtures import make_enriched, small_config

R2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- denoise
def test_denoise_plain_mse():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # (1 + 4 + 9 + 16) / 4 = 7.5
    assert denoise_loss(pred, torch.zeros(2, 2)).item() == pytest.approx(7.5)


def test_denoise_min_snr_weights_epsilon_and_v():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    snr = torch.tensor([1.0, 9.0])
    # per-sample MSE: (1+4)/2 = 2.5 and (9+16)/2 = 12.5; gamma = 5
    # epsilon: weights min(snr, 5)/snr = [1/1, 5/9]   -> (2.5·1 + 12.5·5/9) / 2 = 4.7222...
    eps = denoise_loss(pred, torch.zeros(2, 2), snr=snr, snr_gamma=5.0, prediction_type="epsilon")
    assert eps.item() == pytest.approx((2.5 + 12.5 * 5 / 9) / 2)
    # v: weights min(snr, 5)/(snr+1) = [1/2, 5/10]   -> (2.5·0.5 + 12.5·0.5) / 2 = 3.75
    v = denoise_loss(pred, torch.zeros(2, 2), snr=snr, snr_gamma=5.0, prediction_type="v_prediction")
    assert v.item() == pytest.approx(3.75)
    assert min_snr_weights(snr, 5.0, "epsilon").tolist() == pytest.approx([1.0, 5 / 9])


def test_denoise_target_epsilon_and_velocity():
    from diffusers import DDPMScheduler

    # betas 0.36, 0.75 -> alphas_cumprod 0.64, 0.16; at t=0 sqrt(a)=0.8, sqrt(1-a)=0.6
    sched = DDPMScheduler(num_train_timesteps=2, trained_betas=[0.36, 0.75], prediction_type="v_prediction")
    x, eps, t = torch.full((1, 1), 2.0), torch.full((1, 1), 1.0), torch.tensor([0])
    assert denoise_target("epsilon", x, eps, t) is eps
    # v = sqrt(a)·eps - sqrt(1-a)·x = 0.8·1 - 0.6·2 = -0.4
    assert denoise_target("v_prediction", x, eps, t, sched).item() == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="prediction_type"):
        denoise_target("sample", x, eps, t, sched)


# ----------------------------------------------------------------------------- lang
def test_lang_tokens_cosine_along_token_axis():
    # (B=1, L=2, D=2); the cosine runs over the L axis, i.e. over the columns of each matrix
    e_a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # columns d0=(1,0), d1=(0,1)
    e_p = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])  # columns d0=(2,1), d1=(0,1)
    e_n = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # columns d0=(1,0), d1=(1,1)
    # cos(a,p) = [2/√5, 1]; cos(a,n) = [1, 1/√2]; diffs [2/√5 - 1, 1 - 1/√2]; mean of squares over D
    want = ((2 / math.sqrt(5) - 1) ** 2 + (1 - 1 / R2) ** 2) / 2  # 0.048466
    assert lang_loss(e_a, e_p, e_n, "tokens").item() == pytest.approx(want, rel=1e-5)
    # the cosine along D (rows) would give ((1 - 1/√2)^2 + (1/√2 - 1)^2)/2 = 0.085786: a different number
    assert abs(want - (1 - 1 / R2) ** 2) > 0.03


def test_lang_pooled_and_batch_mean():
    e_a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    e_p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    e_n = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # sample 0: cos(a,p)=0, cos(a,n)=1/√2 -> 0.5; sample 1: 1 - 1 = 0 -> mean 0.25
    assert lang_loss(e_a, e_p, e_n, "pooled").item() == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(ValueError, match="tokens"):
        lang_loss(e_a, e_p, e_n, "tokens")
    with pytest.raises(ValueError, match="lang_similarity"):
        lang_loss(e_a, e_p, e_n, "mean")


# ----------------------------------------------------------------------------- vision / preserve
def test_vision_per_triplet():
    eps_p = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    eps_n = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    eps_a = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    # triplet 0: MSE(p,n) = 1 -> (1-1)^2 = 0; MSE(p,a) = (0+4)/2 = 2 -> 4;   total 4
    # triplet 1: MSE(p,n) = 2 -> (1-2)^2 = 1; MSE(p,a) = 0 -> 0;             total 1
    assert vision_loss(eps_a, eps_p, eps_n).item() == pytest.approx(2.5)
    # identical p and n (no contrast) with a equal to p costs exactly 1
    z = torch.zeros(3, 4)
    assert vision_loss(z, z, z).item() == pytest.approx(1.0)


def test_preserve_mse_and_frozen_side_gets_no_gradient():
    e = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    frozen = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    loss = preserve_loss(e, frozen)
    assert loss.item() == pytest.approx(5 / 3)  # (0 + 1 + 4) / 3
    loss.backward()
    assert e.grad.tolist() == pytest.approx([0.0, 2 / 3, 4 / 3])  # 2·(e - f)/3
    assert frozen.grad is None


def test_prior_mse_against_the_frozen_prediction_which_gets_no_gradient():
    pred = torch.tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
    frozen = torch.tensor([[0.5, 1.0], [0.0, 0.0]], requires_grad=True)
    loss = prior_loss(pred, frozen)
    assert loss.item() == pytest.approx(2.0)  # (0 + 4 + 4 + 0) / 4
    loss.backward()
    assert pred.grad.flatten().tolist() == pytest.approx([0.0, -1.0, 1.0, 0.0])  # 2·(pred − frozen)/4
    assert frozen.grad is None
    assert prior_loss(frozen.detach(), frozen.detach()).item() == 0.0


# ----------------------------------------------------------------------------- gradient reach
@pytest.fixture(scope="module")
def batch(tmp_path_factory, tiny_sd_path):
    from transformers import CLIPTokenizer

    from t2i_debias.train.data import TripletDataset, read_triplets

    root = make_enriched(tmp_path_factory.mktemp("enriched"), n=2)
    tok = CLIPTokenizer.from_pretrained(tiny_sd_path, subfolder="tokenizer")
    ds = TripletDataset(read_triplets(root), tok, 32)
    return torch.utils.data.default_collate([ds[0], ds[1]])


def _touched(module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("mode,term,text,unet", [
    ("both", "lang", True, False),
    ("both", "preserve", True, False),
    ("both", "prior", True, True),
    ("both", "vision", True, True),
    ("both", "denoise", True, True),
    ("unet", "vision", False, True),
    ("unet", "denoise", False, True),
    ("unet", "prior", False, True),
    ("text", "lang", True, False),
])
def test_each_loss_reaches_only_its_parameters(tiny_sd_path, batch, mode, term, text, unet):
    from t2i_debias.train.data import tokenize
    from t2i_debias.train.parts import load_parts
    from t2i_debias.train.step import compute_losses

    weights = {k: 0.0 for k in LOSS_NAMES}
    weights[term] = 1.0
    parts = load_parts(str(tiny_sd_path), mode, weights)
    if mode == "text":
        assert parts.unet is None and parts.vae is None  # text mode never loads (or runs) a U-Net
    cfg = small_config()
    ref = tokenize(parts.tokenizer, ["a photo of a dog"])
    terms = compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0, ref_ids=ref)
    assert set(terms) == {term, "loss"}
    if term == "preserve":  # the frozen copy equals the start point: perturb so the loss has a gradient
        assert terms["preserve"].item() == 0.0
        with torch.no_grad():
            next(p for n, p in parts.text_encoder.named_parameters() if n.endswith("final_layer_norm.bias")).add_(0.1)
        terms = compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0, ref_ids=ref)
    if term == "prior":  # likewise: the frozen U-Net equals the start point
        assert terms["prior"].item() == 0.0
        with torch.no_grad():
            next(p for n, p in parts.unet.named_parameters() if n.endswith("conv_out.bias")).add_(0.1)
        terms = compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0, ref_ids=ref)
    terms["loss"].backward()
    assert _touched(parts.text_encoder) == text
    if parts.unet is not None:
        assert _touched(parts.unet) == unet
        assert not _touched(parts.vae)
    if parts.frozen_text_encoder is not None:
        assert not _touched(parts.frozen_text_encoder)
    if parts.frozen_unet is not None:
        assert not _touched(parts.frozen_unet)


# ----------------------------------------------------------------------------- guided target, vision over the batch
def test_guided_denoise_loss_known_answer():
    from t2i_debias.train.losses import guided_denoise_loss

    eps = torch.zeros(1, 2)
    pred_c = torch.tensor([[1.0, 2.0]])
    pred_u = torch.tensor([[1.0, 0.0]])
    # w = 3: guided = u + 3(c - u) = [1, 6]; MSE = (1 + 36) / 2 = 18.5; MSE(u) = 0.5; λ_u = 2 -> 18.5 + 1
    assert guided_denoise_loss(pred_c, pred_u, eps, 3.0, 2.0).item() == pytest.approx(19.5)
    # w = 1 is plain denoising of the conditional prediction (+ the unconditional term)
    assert guided_denoise_loss(pred_c, pred_u, eps, 1.0, 0.0).item() == pytest.approx(2.5)
    # the gradient reaches both branches
    c, u = pred_c.clone().requires_grad_(), pred_u.clone().requires_grad_()
    guided_denoise_loss(c, u, eps, 3.0, 1.0).backward()
    assert c.grad.abs().sum() > 0 and u.grad.abs().sum() > 0


def test_vision_over_the_batch_differs_from_per_triplet():
    eps_p = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    eps_n = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    eps_a = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    # over the batch: MSE(p,n) = (1+1+0+4)/4 = 1.5 -> 0.25; MSE(p,a) = (0+4+0+0)/4 = 1 -> 1; total 1.25
    assert vision_loss(eps_a, eps_p, eps_n, "batch").item() == pytest.approx(1.25)
    assert vision_loss(eps_a, eps_p, eps_n, "triplet").item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="triplet | batch"):
        vision_loss(eps_a, eps_p, eps_n, "sum")
