"""Tiny random-weight Stable Diffusion pipeline and the real-vocabulary CLIP tokenizer, offline."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

from t2i_debias.tiny.cache import cached_dir


# ----------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-unicode table of GPT-2/CLIP byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


@lru_cache(maxsize=1)
def clip_bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP's real BPE vocabulary (49,408 tokens) and merges, read from the file open_clip ships."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    units = list(_bytes_to_unicode().values())
    vocab_list = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def build_clip_tokenizer(out_dir: Path, model_max_length: int = 77, pad_token: str = "<|endoftext|>") -> Path:
    """Save a transformers CLIPTokenizer with the real CLIP BPE vocabulary into `out_dir`.

    `pad_token`: "<|endoftext|>" (OpenAI CLIP, SD 1.x) or "!" (OpenCLIP, SD 2.x and SDXL's second tokenizer).

    Built from a vocab dict and merges list: in transformers 5, passing vocab/merges *files*
    silently yields an empty tokenizer.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], model_max_length=model_max_length,
                        bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                        pad_token=pad_token, unk_token="<|endoftext|>")
    if len(tok) != 49408:
        raise RuntimeError(f"CLIP tokenizer has {len(tok)} tokens, expected 49408")
    tok.save_pretrained(out_dir)
    return out_dir


def clip_tokenizer_dir(root: Path | None = None, pad_token: str = "<|endoftext|>") -> Path:
    """Cached folder holding the real-vocabulary CLIPTokenizer (padding with `pad_token`)."""
    spec: dict[str, Any] = {"max_len": 77} if pad_token == "<|endoftext|>" else {"max_len": 77, "pad": pad_token}
    return cached_dir("clip-tokenizer", spec, lambda d: build_clip_tokenizer(d, pad_token=pad_token), root)


# ----------------------------------------------------------------------------- tiny Stable Diffusion
def tiny_sd_spec(resolution: int = 32, prediction_type: str = "epsilon", seed: int = 0,
                 hidden_size: int = 32) -> dict[str, Any]:
    """The config of a tiny StableDiffusionPipeline (×2 VAE, 2-level U-Net, 2-layer CLIP text encoder)."""
    return {
        "resolution": resolution,
        "prediction_type": prediction_type,
        "seed": seed,
        "unet": {
            "sample_size": resolution // 2,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": [32, 64],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": hidden_size,
            "attention_head_dim": 8,
            "norm_num_groups": 8,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
            "block_out_channels": [16, 32],
            "latent_channels": 4,
            "norm_num_groups": 8,
            "sample_size": resolution,
        },
        "text": {
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "projection_dim": hidden_size,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
    }


def build_tiny_sd(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Instantiate the tiny pipeline from `spec` with seeded random weights and save it to `out_dir`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(spec["seed"])
    unet = UNet2DConditionModel(**spec["unet"])
    vae = AutoencoderKL(**spec["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir())
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=spec["prediction_type"],
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def tiny_sd_dir(resolution: int = 32, prediction_type: str = "epsilon", seed: int = 0,
                root: Path | None = None) -> Path:
    """Cached folder of a tiny StableDiffusionPipeline that loads with `from_pretrained` offline."""
    spec = tiny_sd_spec(resolution=resolution, prediction_type=prediction_type, seed=seed)
    return cached_dir("tiny-sd", spec, lambda d: build_tiny_sd(d, spec), root)
