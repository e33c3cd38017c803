"""The training engine: weights per mode, noise sharing, batched U-Net passes, and real tiny-pipeline runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from t2i_debias.core.options import modes_to_run
from t2i_debias.stages import models as models_stage
from t2i_debias.train import checkpoints, engine, modes, step
from t2i_debias.train import parts as train_parts
from t2i_debias.train.data import TripletDataset, read_triplets
from tests.helpers.train_fixtures import make_enriched, small_config, train_args


# ----------------------------------------------------------------------------- options (no models)
def test_resolve_weights_defaults_overrides_and_skips():
    assert modes.resolve_weights("text") == {"denoise": 0.0, "lang": 0.1, "vision": 0.0, "preserve": 0.0,
                                              "prior": 0.0}
    assert modes.resolve_weights("unet") == {"denoise": 0.0, "lang": 0.0, "vision": 1.0, "preserve": 0.0,
                                              "prior": 0.0}
    assert modes.resolve_weights("both") == {"denoise": 0.5, "lang": 0.1, "vision": 0.4, "preserve": 0.0,
                                              "prior": 0.0}
    assert modes.resolve_weights("both", {"vision": 0, "preserve": 0.2})["vision"] == 0.0
    assert modes.resolve_weights("both", {"preserve": 0.2})["preserve"] == 0.2
    # lang/preserve reach only the text encoder: frozen in unet mode, so they are not computed
    assert modes.resolve_weights("unet", {"lang": 0.3, "preserve": 1.0})["lang"] == 0.0
    with pytest.raises(ValueError, match="unknown loss weight 'clip'"):
        modes.resolve_weights("text", {"clip": 1.0})
    with pytest.raises(ValueError, match="nothing to train"):
        modes.resolve_weights("text", {"lang": 0.0})
    with pytest.raises(ValueError, match="unknown training mode"):
        modes.resolve_weights("vae")


def test_modes_to_run():
    cfg = small_config()
    assert modes_to_run(cfg.train) == ["text", "unet", "both"]
    cfg.train.modes = ["both", "text"]
    assert modes_to_run(cfg.train) == ["text", "both"]
    cfg.train.schedule = "joint"
    assert modes_to_run(cfg.train) == ["both"]  # an unknown schedule is refused at load (tests/test_options.py)


def test_unet_passes_per_weights():
    w = modes.resolve_weights
    assert step.unet_passes(w("text")) == []
    assert step.unet_passes(w("unet")) == ["a", "p", "n"]
    # denoise is its own pass (the denoised member under its chosen caption); the guided target adds ε_u
    assert step.unet_passes(w("both")) == ["a", "p", "n", "d"]
    assert step.unet_passes(w("both", {"vision": 0})) == ["d"]
    assert step.unet_passes(w("both", {"vision": 0}), guidance_target=4.0) == ["d", "u"]


def test_noise_shared_independent_and_layout_free():
    lat, noise, ts = step.draw_noise([3, 7], (4, 2, 2), 1000, seed=0, batch_number=5, independent=False)
    assert lat.shape == (2, 3, 4, 2, 2) and noise.shape == (2, 1, 4, 2, 2) and ts.shape == (2, 1)
    _, noise3, ts3 = step.draw_noise([3, 7], (4, 2, 2), 1000, seed=0, batch_number=5, independent=True)
    assert noise3.shape == (2, 3, 4, 2, 2) and not torch.equal(noise3[:, 0], noise3[:, 1])
    # a triplet's draws depend on (seed, batch number, index) only: not on the batch it shares
    _, alone, t_alone = step.draw_noise([7], (4, 2, 2), 1000, seed=0, batch_number=5, independent=False)
    assert torch.equal(alone[0], noise[1]) and torch.equal(t_alone[0], ts[1])
    _, other, _ = step.draw_noise([7], (4, 2, 2), 1000, seed=0, batch_number=6, independent=False)
    assert not torch.equal(other[0], noise[1])


def test_find_resume(tmp_path):
    ck = tmp_path / "checkpoints"
    assert checkpoints.find_resume(ck, "latest", "h") is None
    for s in (2, 10, 4):
        (ck / f"checkpoint-{s}").mkdir(parents=True)
    (ck / ".checkpoint-12.tmp").mkdir()  # an unfinished save is never resumed
    (ck / "_train_hash.txt").write_text("h\n")
    assert checkpoints.find_resume(ck, "latest", "h").name == "checkpoint-10"
    assert checkpoints.find_resume(ck, "latest", "other") is None  # made under another config
    assert checkpoints.find_resume(ck, "latest", "h", max_step=5).name == "checkpoint-4"  # never past the end
    assert checkpoints.find_resume(ck, "checkpoint-4", "h").name == "checkpoint-4"
    assert checkpoints.find_resume(ck, "", "h") is None
    with pytest.raises(FileNotFoundError):
        checkpoints.find_resume(ck, "checkpoint-3", "h")


# ----------------------------------------------------------------------------- one step on the tiny pipeline
@pytest.fixture(scope="module")
def enriched(tmp_path_factory):
    return make_enriched(tmp_path_factory.mktemp("data") / "enriched", n=2)


def _batch(enriched, tokenizer):
    ds = TripletDataset(read_triplets(enriched), tokenizer, 32)
    return torch.utils.data.default_collate([ds[0], ds[1]])


def test_both_mode_runs_one_batched_unet_call(tiny_sd_path, enriched):
    weights = modes.resolve_weights("both")
    parts = train_parts.load_parts(str(tiny_sd_path), "both", weights)
    calls = []
    parts.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    batch = _batch(enriched, parts.tokenizer)
    cfg = small_config()
    with torch.no_grad():
        batched = step.compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0)
        assert calls == [6]  # a, p, n of 2 triplets in one call
        cfg.train.batch_unet_passes = False
        split = step.compute_losses(parts, batch, weights, cfg.train, seed=0, batch_number=0)
    assert calls[1:] == [2, 2, 2]
    for k in ("denoise", "lang", "vision", "loss"):
        assert split[k].item() == pytest.approx(batched[k].item(), rel=1e-4, abs=1e-6)
    want = 0.5 * batched["denoise"] + 0.1 * batched["lang"] + 0.4 * batched["vision"]
    assert batched["loss"].item() == pytest.approx(want.item(), rel=1e-6)


# ----------------------------------------------------------------------------- full runs
def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {k: v for f in files for k, v in load_file(str(f)).items()}


def _identical(a: Path, b: Path) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _fixed_loss(path: Path, mode: str, enriched: Path, cfg) -> float:
    w = modes.resolve_weights(mode)
    parts = train_parts.load_parts(str(path), mode, w)
    with torch.no_grad():
        return step.compute_losses(parts, _batch(enriched, parts.tokenizer), w, cfg.train,
                                     seed=123, batch_number=0)["loss"].item()


@pytest.mark.slow
def test_sequential_stage_trains_each_mode_and_keeps_the_rest(tmp_path, tiny_sd_path):
    run = tmp_path / "run"
    make_enriched(run / "enriched", n=2)
    cfg = small_config(run, max_train_steps=3)
    models_stage.run_stage(cfg)
    models = run / "models"
    base = Path(tiny_sd_path)

    prev = base
    for mode in ("text", "unet", "both"):
        out = models / mode
        assert (out / "_manifest.json").exists() and (out / "model_index.json").exists()
        # the mode's own loss on a fixed batch went down from its starting point
        assert _fixed_loss(out, mode, run / "enriched", cfg) < _fixed_loss(prev, mode, run / "enriched", cfg)
        with open(out / "training_log.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["step"] for r in rows] == ["1", "2", "3"]
        assert list(rows[0]) == ["step", "loss", "denoise", "lang", "vision", "preserve", "prior", "lr"]
        active = {k for k in ("denoise", "lang", "vision", "preserve", "prior") if rows[0][k] != ""}
        assert active == {k for k, v in modes.resolve_weights(mode).items() if v > 0}
        assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        card = (out / "README.md").read_text()
        assert f"mode `{mode}`" in card and "Steps:** 3" in card and str(base) in card
        prev = out

    # parameters outside each mode are bit-identical to where the mode started
    assert _identical(models / "text" / "unet", base / "unet")
    assert not _identical(models / "text" / "text_encoder", base / "text_encoder")
    assert _identical(models / "unet" / "text_encoder", models / "text" / "text_encoder")
    assert not _identical(models / "unet" / "unet", models / "text" / "unet")
    for mode in ("text", "unet", "both"):
        assert _identical(models / mode / "vae", base / "vae")

    # the pipeline folder loads with diffusers and generates
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(models / "both"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a photo of a chef", num_inference_steps=2, height=32, width=32,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (32, 32)

    # a rerun skips every complete mode
    stamp = (models / "both" / "_manifest.json").stat().st_mtime_ns
    models_stage.run_stage(cfg)
    assert (models / "both" / "_manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, tiny_sd_path, enriched):
    base = str(tiny_sd_path)
    opts = {"use_ema": True, "ema_decay": 0.5, "train_batch_size": 1, "independent_noise": True,
            "gradient_checkpointing": True}
    full = small_config(max_train_steps=4, **opts)
    engine.train_mode(*train_args(full), "both", base, enriched, tmp_path / "full")

    part = small_config(max_train_steps=2, checkpointing_steps=2, **opts)
    engine.train_mode(*train_args(part), "both", base, enriched, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-2").is_dir()
    more = small_config(max_train_steps=4, checkpointing_steps=2, **opts)
    res = engine.train_mode(*train_args(more), "both", base, enriched, tmp_path / "resumed")
    assert [r["step"] for r in res.log] == [1, 2, 3, 4]

    for sub in ("unet", "text_encoder"):
        a, b = _tensors(tmp_path / "full" / sub), _tensors(tmp_path / "resumed" / sub)
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    with open(tmp_path / "full" / "training_log.csv") as f1, open(tmp_path / "resumed" / "training_log.csv") as f2:
        assert f1.read() == f2.read()


@pytest.mark.slow
def test_lora_chain_outputs_load(tmp_path, tiny_sd_path):
    from diffusers import StableDiffusionPipeline

    run = tmp_path / "run"
    make_enriched(run / "enriched", n=2)
    cfg = small_config(run, lora_rank=4, max_train_steps=2, modes=["text", "unet"])
    models_stage.run_stage(cfg)
    text_out, unet_out = run / "models" / "text", run / "models" / "unet"
    for out in (text_out, unet_out):
        assert (out / "pytorch_lora_weights.safetensors").exists() and not (out / "unet").exists()
    # the unet mode's LoRA also carries the text mode's (frozen there) text-encoder adapters
    t_text, t_unet = _tensors(text_out), _tensors(unet_out)
    te_keys = [k for k in t_text if k.startswith("text_encoder")]
    assert te_keys and all(torch.equal(t_text[k], t_unet[k]) for k in te_keys)
    assert any(k.startswith("unet") for k in t_unet)

    def embed(pipe):
        ids = pipe.tokenizer(["a photo of a chef"], padding="max_length", return_tensors="pt").input_ids
        with torch.no_grad():
            return pipe.text_encoder(ids)[0]

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_path), safety_checker=None)
    before = embed(pipe)
    pipe.load_lora_weights(str(unet_out))
    after = embed(pipe)
    assert not torch.allclose(before, after)
    # the diffusers-format file and the peft-format state give the same text encoder
    parts = train_parts.load_parts(str(tiny_sd_path), "unet", modes.resolve_weights("unet"), 4, unet_out)
    with torch.no_grad():
        ids = parts.tokenizer(["a photo of a chef"], padding="max_length", return_tensors="pt").input_ids
        assert torch.allclose(parts.text_encoder(ids)[0], after, atol=1e-5)
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a chef", num_inference_steps=2, height=32, width=32).images[0].size == (32, 32)


def test_text_script_accepts_diffusers_flags(tmp_path, tiny_sd_path, enriched):
    from t2i_debias.cli import main_for_mode

    out = main_for_mode("text", "test", [
        "--pretrained_model_name_or_path", "tiny:sd", "--train_data_dir", str(enriched),
        "--output_dir", str(tmp_path / "out"), "--resolution", "32", "--train_batch_size", "2",
        "--max_train_steps", "1", "--learning_rate", "1e-3", "--mixed_precision", "no",
        "--gradient_accumulation_steps", "2", "--checkpointing_steps", "1", "--seed", "3",
        "--resume_from_checkpoint", "latest", "--weights", "lang=1.0", "--lang_similarity", "pooled",
    ])
    assert (out / "_manifest.json").exists() and (out / "checkpoints" / "checkpoint-1").is_dir()
    with open(out / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["vision"] == "" and float(rows[0]["lang"]) > 0
    assert "1·lang" in (out / "README.md").read_text()
