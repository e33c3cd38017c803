"""Real architectures (shape:sd21, shape:sd21base, shape:sd15, shape:sdxl) built offline from the published configs.

The fast tests check the configs on the meta device (parameter counts of the published models). The
slow ones build SD 2.1 (and SD 1.5 / 2.1-base) with random weights (~5 GB each, cached under
$T2I_DEBIAS_CACHE on first use) and run every training mode, generation and each baseline's forward
path at the real channel widths, 77-token context and prediction type, at a reduced resolution. They
share one xdist group so at most one real-size model is in memory at a time (`--dist loadgroup`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i_debias import shapes
from t2i_debias.train import engine

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_enriched, small_config  # noqa: E402

RES = 64  # px: an 8x8 latent, down to 1x1 at the U-Net's deepest level; every width is the real one


# ----------------------------------------------------------------------------- configs (no weights)
@pytest.mark.parametrize("name, want", [
    ("sd21", {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}),
    ("sd15", {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
    ("sdxl", {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
              "text_encoder_2": 694_659_840}),
])
def test_published_parameter_counts(name, want):
    assert shapes.parameter_counts(name) == want


def test_configs_carry_the_shapes_that_matter():
    sd21, base, sd15, xl = (shapes.read_configs(n) for n in ("sd21", "sd21base", "sd15", "sdxl"))
    assert sd21["scheduler"]["prediction_type"] == "v_prediction" and sd21["unet"]["sample_size"] == 96
    assert base["scheduler"]["prediction_type"] == "epsilon" and base["unet"]["sample_size"] == 64
    assert sd21["unet"]["cross_attention_dim"] == sd21["text_encoder"]["hidden_size"] == 1024
    assert sd21["text_encoder"]["num_hidden_layers"] == 23 and sd21["tokenizer"]["pad_token"] == "!"
    assert sd15["unet"]["cross_attention_dim"] == sd15["text_encoder"]["hidden_size"] == 768
    assert sd15["tokenizer"]["pad_token"] == "<|endoftext|>"
    # SDXL: cross-attention over both encoders' hidden states side by side; pooled + 6 time ids
    te1, te2 = xl["text_encoder"]["hidden_size"], xl["text_encoder_2"]["hidden_size"]
    assert xl["unet"]["cross_attention_dim"] == te1 + te2 == 2048
    assert xl["unet"]["projection_class_embeddings_input_dim"] == xl["text_encoder_2"]["projection_dim"] + 6 * 256
    with pytest.raises(ValueError, match="known: shape:sd21"):
        shapes.read_configs("sd3")


def test_shape_spec_goes_through_the_one_loader(monkeypatch, tmp_path):
    from t2i_debias import models

    seen = []
    monkeypatch.setattr(shapes, "shape_dir", lambda name, seed=0, root=None: seen.append(name) or tmp_path)
    assert models.resolve_model("shape:sd15") == str(tmp_path) and seen == ["sd15"]
    with pytest.raises(ValueError, match="unknown tiny model"):
        models.resolve_model("tiny:sd3")


# ----------------------------------------------------------------------------- SD 2.1 at real width
@pytest.fixture(scope="module")
def sd21() -> str:
    return str(shapes.shape_dir("sd21"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_enriched(tmp_path_factory.mktemp("real") / "enriched", n=1, size=RES)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test picks its own mixed precision: accelerate keeps one per process unless reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _cfg(run_dir: Path, **train):
    return small_config(run_dir, resolution=RES, train_batch_size=1, max_train_steps=1, **train)


@pytest.mark.parametrize("mode, train", [
    pytest.param("text", {"lora_rank": 0}, id="text-full-fp32"),
    pytest.param("unet", {"lora_rank": 4}, id="unet-lora-fp32"),
    pytest.param("both", {"lora_rank": 4, "gradient_checkpointing": True}, id="both-lora-fp32-ckpt"),
])
@pytest.mark.slow
@pytest.mark.heavy(reason="builds SD 2.1/1.5-sized random pipelines (~5 GB each, up to 9.5 GB RSS)")
@pytest.mark.xdist_group("real_shapes")
def test_sd21_trains_one_step(tmp_path, sd21, data, mode, train):
    """fp32 only: this CPU has no native bf16 (a bf16 matmul runs 25-100x slower than fp32), so the bf16
    path runs at tiny shapes (test_mixed_precision.py) and its dtypes at real shapes below. Full
    fine-tuning of the U-Net (865M params + AdamW: ~14 GB) does not fit here; see the README table."""
    cfg = _cfg(tmp_path / "run", **train)
    result = engine.train_mode(cfg, mode, sd21, data, tmp_path / mode)
    assert result.steps == 1 and np.isfinite(result.log[0]["loss"])
    if train["lora_rank"]:
        assert (tmp_path / mode / "pytorch_lora_weights.safetensors").is_file()
    else:
        assert (tmp_path / mode / "text_encoder" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.heavy(reason="builds SD 2.1/1.5-sized random pipelines (~5 GB each, up to 9.5 GB RSS)")
@pytest.mark.xdist_group("real_shapes")
def test_sd21_lora_params_stay_fp32_under_bf16(sd21):
    """Frozen weights in bf16, LoRA weights in fp32 (diffusers' cast_training_params), v-prediction target."""
    w = engine.resolve_weights("both")
    parts = engine.load_parts(sd21, "both", w, lora_rank=4, weight_dtype=torch.bfloat16)
    assert parts.noise_scheduler.config.prediction_type == "v_prediction"
    for name in ("unet", "text_encoder"):
        module = getattr(parts, name)
        trainable = [p for p in module.parameters() if p.requires_grad]
        frozen = [p for p in module.parameters() if not p.requires_grad]
        assert trainable and all(p.dtype == torch.float32 for p in trainable)
        assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.bfloat16 for p in parts.vae.parameters())
    assert parts.unet.config.cross_attention_dim == parts.text_encoder.config.hidden_size == 1024


# ----------------------------------------------------------------------------- the other SD shapes
@pytest.mark.parametrize("name", ["sd15", "sd21base"])
@pytest.mark.slow
@pytest.mark.heavy(reason="builds SD 2.1/1.5-sized random pipelines (~5 GB each, up to 9.5 GB RSS)")
@pytest.mark.xdist_group("real_shapes")
def test_other_shapes_train_and_generate(tmp_path, data, name):
    from t2i_debias.generate import generate_images
    from t2i_debias.models import load_pipeline, resolve_model

    path = resolve_model(f"shape:{name}")
    cfg = _cfg(tmp_path / "run", lora_rank=4)
    result = engine.train_mode(cfg, "both", path, data, tmp_path / "both")
    assert result.steps == 1 and np.isfinite(result.log[0]["loss"])
    pipe = load_pipeline(path, "cpu", "float32")
    pipe.load_lora_weights(str(tmp_path / "both"))
    ims = generate_images(pipe, ["a photo of a nurse"], [0], 1, 1, 7.5, height=RES, width=RES)
    assert ims[0].size == (RES, RES)


# ----------------------------------------------------------------------------- one loaded SD 2.1 pipeline
@pytest.fixture(scope="module")
def sd21_pipe(sd21):
    from t2i_debias.models import load_pipeline

    return load_pipeline(sd21, "cpu", "float32")


@pytest.mark.slow
@pytest.mark.heavy(reason="builds SD 2.1/1.5-sized random pipelines (~5 GB each, up to 9.5 GB RSS)")
@pytest.mark.xdist_group("real_shapes")
def test_sd21_one_denoising_step(sd21_pipe):
    from t2i_debias.generate import generate_images

    ims = generate_images(sd21_pipe, ["a photo of a doctor"] * 2, [0, 1], 2, 1, 7.5, height=RES, width=RES)
    assert [im.size for im in ims] == [(RES, RES)] * 2
    assert not np.array_equal(np.asarray(ims[0]), np.asarray(ims[1]))  # two seeds, two images


@pytest.mark.slow
@pytest.mark.heavy(reason="builds SD 2.1/1.5-sized random pipelines (~5 GB each, up to 9.5 GB RSS)")
@pytest.mark.xdist_group("real_shapes")
def test_sd21_baselines_forward(sd21_pipe):
    """DebiasVL's projection (1024-wide), Fair Diffusion's SEGA guidance, then UCE's closed-form edit."""
    from t2i_debias.baselines import GenParams, make_method

    gen = GenParams(batch_size=1, num_inference_steps=1, guidance_scale=7.5, height=RES, width=RES)
    dv = make_method("debiasvl", sd21_pipe)
    dv.prepare(["doctor", "nurse"])
    assert dv.P.shape == (1024, 1024)
    assert dv.generate(["Professional photo of a doctor"], ["doctor"], [0], gen)[0].size == (RES, RES)
    fd = make_method("fair_diffusion", sd21_pipe)
    assert fd.generate(["Professional photo of a nurse"], ["nurse"], [0], gen)[0].size == (RES, RES)

    before = {k: v.clone() for k, v in sd21_pipe.unet.state_dict().items() if ".attn2.to_" in k}
    uce = make_method("uce", sd21_pipe, iterations=1,
                      ratio_fn=lambda p, o, g: np.array([0.8, 0.2]) if g == "gender" else np.eye(6)[3])
    uce.prepare(["doctor"])
    after = sd21_pipe.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all((".to_k." in k or ".to_v." in k) and k.endswith("weight") for k in changed)
    assert {after[k].shape[1] for k in changed} == {1024}  # keys/values read the 1024-wide OpenCLIP-H states
