"""Tiny random-weight SDXL pipeline, offline: two CLIP text encoders, pooled embeddings and time ids.

The same component layout as SDXL base 1.0 (t2i_debias/data/model_configs/sdxl) at a size that runs
in seconds on a CPU, so the SDXL code paths (augment.generator = an SDXL model) are tested for real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2i_debias.tiny.cache import cached_dir
from t2i_debias.tiny.sd import tiny_sd_spec


def tiny_sdxl_spec(resolution: int = 32, seed: int = 0, hidden_size: int = 32) -> dict[str, Any]:
    """Config of a tiny StableDiffusionXLPipeline; cross-attention width = the two encoders' widths summed."""
    time_dim = 8
    return {
        "resolution": resolution,
        "seed": seed,
        "unet": {
            "sample_size": resolution // 2,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": [32, 64],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "attention_head_dim": [2, 4],
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": time_dim,
            "transformer_layers_per_block": [1, 2],
            # 6 time ids (original size, crop corner, target size) x time_dim + the pooled text embedding
            "projection_class_embeddings_input_dim": 6 * time_dim + hidden_size,
            "cross_attention_dim": 2 * hidden_size,
            "norm_num_groups": 8,
        },
        "vae": {**tiny_sd_spec(resolution)["vae"], "scaling_factor": 0.13025},  # the SD VAE, SDXL scaling
        "text": {
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "projection_dim": hidden_size,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
        },
    }


def build_tiny_sdxl(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Instantiate the tiny SDXL pipeline from `spec` with seeded random weights and save it to `out_dir`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from t2i_debias.tiny.sd import clip_tokenizer_dir

    torch.manual_seed(spec["seed"])
    pipe = StableDiffusionXLPipeline(
        unet=UNet2DConditionModel(**spec["unet"]),
        vae=AutoencoderKL(**spec["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**spec["text"])),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**spec["text"])),
        tokenizer=CLIPTokenizer.from_pretrained(clip_tokenizer_dir()),
        tokenizer_2=CLIPTokenizer.from_pretrained(clip_tokenizer_dir(pad_token="!")),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, timestep_spacing="leading"),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def tiny_sdxl_dir(resolution: int = 32, seed: int = 0, root: Path | None = None) -> Path:
    """Cached folder of the tiny StableDiffusionXLPipeline (loads offline with from_pretrained)."""
    spec = tiny_sdxl_spec(resolution=resolution, seed=seed)
    return cached_dir("tiny-sdxl", spec, lambda d: build_tiny_sdxl(d, spec), root)
