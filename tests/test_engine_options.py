"""Engine options of DESIGN.md §2 ("What is denoised", presets, control): known answers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i_debias.core.config import load_config
from t2i_debias.core.errors import ConfigError
from t2i_debias.stages import models as models_stage
from t2i_debias.train import modes, step
from t2i_debias.train import parts as train_parts
from t2i_debias.train.data import (
    MemberInfo,
    TrainTriplet,
    TripletDataset,
    item_captions,
    read_triplets,
    select_items,
)
from tests.helpers.train_fixtures import make_enriched, small_config


def _triplet(occ: str, a: tuple[str, str], p: tuple[str, str], p_ok: bool | None = True,
             n_ok: bool | None = True) -> TrainTriplet:
    """A hand-made triplet: anchor and positive (gender, race); negative = anchor's demographics."""
    img = Path("x.png")
    neutral = f"a photo of a {occ}"
    ms = (MemberInfo(img, neutral, a[0], a[1], True, f"{a[0]} {a[1]} {occ}"),
          MemberInfo(img, f"p {p[0]} {occ}", p[0], p[1], p_ok, f"{p[0]} {p[1]} {occ}"),
          MemberInfo(img, f"n {a[0]} {occ}", a[0], a[1], n_ok, f"{a[0]} {a[1]} {occ}"))
    return TrainTriplet(img, img, img, neutral, ms[1].text, ms[2].text, occ, ms)


def test_select_items_members_filter_and_cell_weights():
    ts = [_triplet("doctor", ("man", "white"), ("woman", "black")),
          _triplet("doctor", ("man", "white"), ("woman", "asian")),
          _triplet("doctor", ("man", "asian"), ("woman", "white"), p_ok=False),   # positive rejected
          _triplet("nurse", ("woman", "white"), ("man", "black"), n_ok=False)]   # negative rejected
    # denoise both members; vision off: the negative is not used, so only triplet 2 is dropped
    sel = select_items(ts, "both", (), verified_only=True, balance="cell", balance_by=["gender"])
    assert [(i.triplet, i.member) for i in sel.items] == [(0, "a"), (0, "p"), (1, "a"), (1, "p"), (3, "a"), (3, "p")]
    assert sel.dropped == {"positive failed verification": 1}
    # 4 cells (doctor/man, doctor/woman, nurse/woman, nurse/man), each weighs 1/4: 2 items -> 1/8, 1 item -> 1/4
    assert sel.weights == pytest.approx([1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 4, 1 / 4])
    assert sum(sel.weights) == pytest.approx(1.0)
    # vision uses the negative's image too: triplet 3 goes as well
    sel = select_items(ts, "both", ("a", "p", "n"), verified_only=True)
    assert sorted({i.triplet for i in sel.items}) == [0, 1]
    assert sel.uniform and sel.weights == pytest.approx([1 / 4] * 4)
    # without the filter nothing is dropped; (occupation, gender, race) cells
    sel = select_items(ts, "positive", (), verified_only=False, balance="cell", balance_by=["gender", "race"])
    assert len(sel.items) == 4 and not sel.dropped
    assert sel.weights == pytest.approx([1 / 4] * 4)  # 4 distinct (occ, gender, race) cells of one item each
    sel = select_items(ts[:2] * 3 + ts[:1], "anchor", (), balance="cell")
    assert sel.weights == pytest.approx([1 / 7] * 7)  # one cell (doctor, man): uniform
    with pytest.raises(ValueError, match="no training sample left"):
        select_items([ts[2]], "positive", ())
    with pytest.raises(ValueError, match="denoise_members must be one of"):
        select_items(ts, "negative", ())


def test_item_captions_own_neutral_measured():
    t = _triplet("chef", ("man", "white"), ("woman", "black"))
    assert item_captions(t, "p", "own") == ("p woman chef", "woman black chef")
    assert item_captions(t, "p", "positive") == ("p woman chef", "woman black chef")  # the old name of own
    assert item_captions(t, "p", "neutral") == ("a photo of a chef", "woman black chef")
    assert item_captions(t, "a", "measured") == ("man white chef", "man white chef")
    with pytest.raises(ValueError, match="denoise_caption must be one of"):
        item_captions(t, "p", "random")


def test_read_triplets_verification_and_measured_captions(tmp_path):
    import json

    from t2i_debias.augment.captions import CaptionComposer

    root = make_enriched(tmp_path / "enriched", n=2)
    lines = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines()]
    lines[0].update(positive_agreement=False, positive_verified=False)
    lines[0]["negative_verified"] = False  # negative: agreement None and not verified = never checked
    lines[1]["positive_agreement"] = True
    lines[1]["positive_verified"] = True
    lines[1].update(positive_measured_gender="woman", positive_measured_race="black")
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    ts = read_triplets(root, CaptionComposer())
    assert [t.member("p").verified for t in ts] == [False, True]
    assert ts[0].member("a").verified is True and ts[0].member("n").verified is None  # never checked
    # the attribute caption names what the image shows: measured (positive 1), else requested (anchor)
    assert ts[1].member("p").attribute_text == "a photo of a Black woman working as a doctor"
    assert ts[1].member("p").gender == "woman" and ts[1].member("p").race == "black"
    assert ts[1].member("a").attribute_text == "a photo of a White man working as a doctor"


def test_caption_choice_shares_are_seeded_per_sample(tmp_path, tiny_sd_path):
    from transformers import CLIPTokenizer

    root = make_enriched(tmp_path / "enriched", n=1)
    tok = CLIPTokenizer.from_pretrained(tiny_sd_path, subfolder="tokenizer")
    ds = TripletDataset(read_triplets(root), tok, 32, denoise_caption="neutral")
    one = ds[0]
    n = 400
    batch = {k: torch.stack([v] * n) if torch.is_tensor(v) else torch.tensor([v] * n) for k, v in one.items()}
    batch["index"] = torch.arange(n)

    def shares(**opts):
        ids = step.choose_captions(batch, small_config(**opts).train, seed=0, batch_number=3)
        return {k: sum(torch.equal(r, one[k]) for r in ids) / n for k in ("ids_base", "ids_attr", "ids_empty")}

    assert shares() == {"ids_base": 1.0, "ids_attr": 0.0, "ids_empty": 0.0}
    assert shares(caption_dropout=1.0)["ids_empty"] == 1.0
    s = shares(attribute_share=0.3, caption_dropout=0.1)
    assert abs(s["ids_attr"] - 0.3) < 0.07 and abs(s["ids_empty"] - 0.1) < 0.05
    a = step.choose_captions(batch, small_config(attribute_share=0.5).train, seed=0, batch_number=3)
    b = step.choose_captions(batch, small_config(attribute_share=0.5).train, seed=0, batch_number=3)
    assert torch.equal(a, b)  # the same draw on a rerun (exact resume)


def test_guided_target_batches_the_unconditional_pass(tiny_sd_path, tmp_path):
    from t2i_debias.train.losses import guided_denoise_loss

    root = make_enriched(tmp_path / "enriched", n=2)
    weights = modes.resolve_weights("unet", {"vision": 0.0, "denoise": 1.0})
    parts = train_parts.load_parts(str(tiny_sd_path), "unet", weights)
    calls = []
    parts.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    ds = TripletDataset(read_triplets(root), parts.tokenizer, 32, denoise_caption="neutral")
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    cfg = small_config(guidance_target=4.0, uncond_weight=0.5)
    with torch.no_grad():
        terms = step.compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0)
    assert calls == [4]  # conditional and unconditional passes of 2 samples in one U-Net call
    # the same number by hand: recompute the two predictions with separate calls
    cfg.train.batch_unet_passes = False
    captured = []
    parts.unet.register_forward_hook(lambda m, i, o: captured.append(o[0]))
    with torch.no_grad():
        split = step.compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0)
    assert calls[1:] == [2, 2]
    assert split["denoise"].item() == pytest.approx(terms["denoise"].item(), rel=1e-4)
    # known answer: with the target eps, guided_denoise_loss of the captured predictions
    assert captured[0].shape == captured[1].shape
    lat_eps, noise, ts = step.draw_noise([0, 1], tuple(captured[0].shape[1:]), 1000, 0, 0, False)
    want = guided_denoise_loss(captured[0], captured[1], noise[:, 0], 4.0, 0.5)
    assert split["denoise"].item() == pytest.approx(want.item(), rel=1e-4)


def test_prior_preservation_distils_the_frozen_unet_under_attribute_captions(tiny_sd_path, tmp_path):
    from t2i_debias.train.losses import prior_loss

    root = make_enriched(tmp_path / "enriched", n=2)
    weights = modes.resolve_weights("unet", {"vision": 0.0, "denoise": 1.0, "prior": 1.0})
    parts = train_parts.load_parts(str(tiny_sd_path), "unet", weights)
    assert parts.frozen_unet is not None and not any(p.requires_grad for p in parts.frozen_unet.parameters())
    ds = TripletDataset(read_triplets(root), parts.tokenizer, 32, denoise_caption="neutral")
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    train = small_config().train
    # the prior caption is the positive's or the negative's (attribute) caption, drawn per sample, seeded
    many = {k: torch.stack([v[0]] * 200) for k, v in batch.items() if torch.is_tensor(v)}
    many["index"] = torch.arange(200)
    ids = step.prior_captions(many, seed=0, batch_number=1)
    share_p = sum(torch.equal(r, batch["ids_p"][0]) for r in ids) / 200
    assert 0.4 < share_p < 0.6 and all(torch.equal(r, batch["ids_p"][0]) or torch.equal(r, batch["ids_n"][0])
                                       for r in ids)
    assert torch.equal(ids, step.prior_captions(many, seed=0, batch_number=1))
    # untrained: the fine-tune is the base, so the term is 0 (up to the batched call's rounding)
    with torch.no_grad():
        terms = step.compute_losses(parts, batch, weights, train, seed=0, batch_number=0)
    assert terms["prior"].item() < 1e-10
    assert terms["loss"].item() == pytest.approx(terms["denoise"].item())
    # move the trained U-Net: the term is the MSE to the frozen U-Net's prediction on the same input
    with torch.no_grad():
        for p in parts.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    captured = []
    parts.frozen_unet.register_forward_hook(lambda m, i, o: captured.append((i, o[0])))
    trained_out = []
    parts.unet.register_forward_hook(lambda m, i, o: trained_out.append(o[0]))
    with torch.no_grad():
        terms = step.compute_losses(parts, batch, weights, train, seed=0, batch_number=0)
    (args, frozen_pred), = captured
    q = trained_out[0].split(2)[-1]  # passes d then q in one call: q is the last block
    # the frozen pass sees the prior captions (not the denoise captions) on the denoised member's latent
    with torch.no_grad():
        want_hidden = parts.text_encoder(step.prior_captions(batch, seed=0, batch_number=0)).last_hidden_state
        d_hidden = parts.text_encoder(step.choose_captions(batch, train, seed=0, batch_number=0)).last_hidden_state
    assert torch.allclose(args[2], want_hidden, atol=1e-5) and not torch.allclose(args[2], d_hidden, atol=1e-3)
    assert terms["prior"].item() == pytest.approx(prior_loss(q, frozen_pred).item(), rel=1e-6)
    assert terms["prior"].item() > 0
    assert terms["loss"].item() == pytest.approx(terms["denoise"].item() + terms["prior"].item(), rel=1e-5)


def test_presets_apply_first_and_explicit_options_win(tmp_path):
    from t2i_debias.cli import config_from_args

    p = tmp_path / "c.toml"
    p.write_text('[train]\nlearning_rate = 1e-4\npreset = "reference"\n')
    cfg = load_config(p)
    t = cfg.train
    assert t.preset == "reference" and t.learning_rate == 1e-4  # explicit, wherever it stands in the table
    assert t.independent_noise and t.vision_reduction == "batch" and t.input_perturbation == 0.1
    assert t.random_flip and (t.resolution, t.train_batch_size, t.num_train_epochs) == (256, 16, 5)
    assert t.mode_learning_rates["both"] == 2e-8 and t.mixed_precision == "auto"
    assert t.modes == ["text", "unet", "both"] and not t.verified_only
    p.write_text('[train]\npreset = "recommended"\nbalance = "none"\n')
    t = load_config(p).train
    assert (t.denoise_members, t.denoise_caption, t.balance, t.guidance_target) == ("both", "neutral", "none", -1.0)
    p.write_text('[train]\npreset = "best"\n')
    with pytest.raises(ConfigError, match=r'c.toml: \[train\] preset must be one of "", reference, recommended, '
                                          "got 'best'"):
        load_config(p)
    # a --preset flag sets its options first, other flags override it
    import argparse

    args = argparse.Namespace(config=None, run_dir=None, cfg__train__preset="recommended",
                              cfg__train__attribute_share=0.5)
    t = config_from_args(args).train
    assert t.attribute_share == 0.5 and t.caption_dropout == 0.1 and t.balance == "cell"


def test_resolved_train_fills_guidance_and_precision():
    cfg = small_config(guidance_target=-1.0, mixed_precision="auto")
    cfg.generate.guidance_scale = 7.5
    cfg.run.device = "cpu"
    t = modes.resolved_train(cfg.train, cfg.run.device, cfg.generate.guidance_scale)
    assert t.guidance_target == 7.5 and t.mixed_precision == "no" and modes.is_resolved(t)
    assert not modes.is_resolved(cfg.train)
    assert cfg.train.guidance_target == -1.0  # the config itself is not changed
    assert modes.learning_rate_for(small_config(mode_learning_rates={"both": 2e-8}).train, "both") == 2e-8
    assert modes.learning_rate_for(small_config(mode_learning_rates={"both": 2e-8}).train, "text") == 1e-3


def test_control_config_denoises_only_anchors():
    cfg = small_config(denoise_members="both", balance="cell", weights={"denoise": 1.0, "lang": 0.1})
    c = modes.control_config(cfg.train, "both")
    assert (c.denoise_members, c.balance) == ("anchor", "none")
    assert c.weights == {"denoise": 1.0, "lang": 0.0, "vision": 0.0, "preserve": 0.0}
    with_prior = small_config(weights={"denoise": 1.0, "prior": 0.5})
    assert modes.control_config(with_prior.train, "unet").weights["prior"] == 0.5  # the same objective
    assert cfg.train.denoise_members == "both"  # a copy
    # reference weights of `both` (denoise 0.5) keep their denoise weight
    assert modes.control_config(small_config().train, "both").weights["denoise"] == 0.5


@pytest.mark.slow
def test_recommended_run_snapshots_card_and_control(tmp_path, tiny_sd_path):
    from t2i_debias.core.presets import apply_presets
    from t2i_debias.models import load_pipeline

    run = tmp_path / "run"
    make_enriched(run / "enriched", n=4)
    cfg = small_config(run)
    cfg.train.preset = "recommended"
    apply_presets(cfg, cfg.explicit)
    cfg.train.resolution, cfg.train.train_batch_size, cfg.train.learning_rate = 32, 2, 1e-3
    cfg.train.max_train_steps, cfg.train.snapshot_steps, cfg.train.checkpointing_steps = 3, [2], 0
    cfg.train.control = True
    cfg.generate.guidance_scale = 5.0
    models_stage.run_stage(cfg)
    out = run / "models" / "unet"
    assert load_pipeline(out / "step-2") is not None and (out / "step-2" / "training_log.csv").is_file()
    card = (out / "README.md").read_text()
    assert "trained for classifier-free guidance **5**" in card and "8 denoise samples" in card
    ctrl = run / "models" / "control"
    assert (ctrl / "_manifest.json").is_file()
    assert "4 denoise samples" in (ctrl / "README.md").read_text()  # the 4 anchors
    assert not torch.equal(next(load_pipeline(ctrl).unet.parameters()), next(load_pipeline(out).unet.parameters()))
