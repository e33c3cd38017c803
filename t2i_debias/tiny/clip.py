"""A tiny random-weight transformers `CLIPModel` + `CLIPProcessor` folder for CLIP-T / CLIP-I, offline.

It uses the real CLIP BPE tokenizer (`sd.clip_tokenizer_dir`) and a 32-pixel image processor, and
loads with `CLIPModel.from_pretrained(folder)` like any hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2i_debias.tiny.cache import cached_dir
from t2i_debias.tiny.sd import clip_tokenizer_dir


def tiny_clip_spec(seed: int = 0, image_size: int = 32) -> dict[str, Any]:
    """Config of the tiny CLIP (2-layer text and vision towers, 16-d projection)."""
    return {
        "seed": seed,
        "text": {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 49406,
                 "eos_token_id": 49407, "pad_token_id": 49407},
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "image_size": image_size, "patch_size": 8},
        "projection_dim": 16,
    }


def build_tiny_clip(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Instantiate the tiny CLIPModel with seeded weights; save it with its processor into `out_dir`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    config = CLIPConfig(text_config=spec["text"], vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = CLIPModel(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    size = spec["vision"]["image_size"]
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir())
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def tiny_clip_dir(seed: int = 0, root: Path | None = None) -> Path:
    """Cached folder of the tiny CLIP model and processor."""
    spec = tiny_clip_spec(seed=seed)
    return cached_dir("tiny-clip", spec, lambda d: build_tiny_clip(d, spec), root)
