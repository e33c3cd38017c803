"""The bf16 path on CPU: training (each mode, LoRA and full) and generation, on the tiny v-prediction pipeline.

At real shapes bf16 is too slow on this CPU (no native bf16); test_shapes.py checks the dtypes there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i_debias.train import engine, modes
from t2i_debias.train import parts as train_parts
from tests.helpers.train_fixtures import make_enriched, small_config, train_args


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process unless reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def tiny_v() -> str:
    from t2i_debias.models import resolve_model

    return resolve_model("tiny:sd-v")


pytestmark = pytest.mark.slow  # bf16 on a CPU without native bf16 is slow even at tiny shapes


@pytest.mark.parametrize("mode, lora", [("text", 0), ("unet", 4), ("both", 4)])
def test_bf16_training_step(tmp_path, tiny_v, mode, lora):
    data = make_enriched(tmp_path / "enriched", n=2)
    cfg = small_config(tmp_path / "run", mixed_precision="bf16", lora_rank=lora, max_train_steps=1)
    result = engine.train_mode(*train_args(cfg), mode, tiny_v, data, tmp_path / mode)
    assert result.steps == 1 and np.isfinite(result.log[0]["loss"])


def test_lora_trainable_params_fp32_frozen_bf16(tiny_v):
    parts = train_parts.load_parts(tiny_v, "both", modes.resolve_weights("both"), lora_rank=4,
                              weight_dtype=torch.bfloat16)
    for module in (parts.unet, parts.text_encoder):
        dtypes = {(p.requires_grad, p.dtype) for p in module.parameters()}
        assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    # full fine-tuning keeps the trained part in fp32 (autocast does the bf16 compute)
    full = train_parts.load_parts(tiny_v, "unet", modes.resolve_weights("unet"), weight_dtype=torch.bfloat16)
    assert {p.dtype for p in full.unet.parameters()} == {torch.float32}
    assert {p.dtype for p in full.vae.parameters()} == {torch.bfloat16}


def test_bf16_generation_matches_fp32_roughly(tiny_v):
    from t2i_debias.models import load_pipeline

    lat = {}
    for dtype in ("float32", "bfloat16"):
        pipe = load_pipeline(tiny_v, "cpu", dtype)
        out = pipe("a photo of a doctor", num_inference_steps=1, height=32, width=32, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
        assert out.dtype == getattr(torch, dtype) and torch.isfinite(out).all()
        lat[dtype] = out.float()
    # same noise, same model: bf16 rounding moves the latents a little, not a lot
    err = (lat["bfloat16"] - lat["float32"]).abs().max() / lat["float32"].abs().max()
    assert 0 < err < 0.1
