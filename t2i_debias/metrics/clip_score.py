"""CLIP-T and CLIP-I (DESIGN.md §4), computed directly from CLIP embeddings.

- CLIP-T = 100·max(cos(image, prompt), 0), the definition of torchmetrics' CLIPScore. torchmetrics'
  own class breaks with transformers 5 (it calls `.norm` on a model output and wants "openai" in the
  model path), so the cosine is computed here.
- CLIP-I = cos(image, base model's image for the same prompt and seed): how much of the picture a
  debiased model kept.

The CLIP model is a transformers id/folder, `open_clip:ARCH/PRETRAINED`, or `tiny:clip` (the offline
random-weight model of `t2i_debias.tiny.clip`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from t2i_debias.core.options import CLIP_SCORES


def cosine(a: Any, b: Any) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def clip_t_scores(image_emb: Any, text_emb: Any, score: str = "x100_clamped") -> np.ndarray:
    """Per-image CLIP-T: 100·max(cos(image_i, text_i), 0) (torchmetrics), or the raw cosine (upstream)."""
    if score not in CLIP_SCORES:
        raise ValueError(f"[quality] clip_score must be one of {' | '.join(CLIP_SCORES)}, got {score!r}")
    cos = cosine(image_emb, text_emb)
    return cos if score == "raw_cosine" else 100.0 * np.maximum(cos, 0.0)


def clip_i_scores(image_emb: Any, base_emb: Any) -> np.ndarray:
    """Per-image CLIP-I: cos(image_i, base_image_i)."""
    return cosine(image_emb, base_emb)


class ClipEmbedder:
    """Image and text embeddings from a transformers CLIPModel or an open_clip model (no grad, batched)."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 32) -> None:
        import torch

        self.spec, self.device, self.batch_size = spec, device, batch_size
        self._torch = torch
        if spec == "tiny:clip":
            from t2i_debias.tiny.clip import tiny_clip_dir

            spec = str(tiny_clip_dir())
        if spec.startswith("open_clip:"):
            import open_clip

            arch, _, pretrained = spec.split(":", 1)[1].partition("/")
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None,
                                                                         device=device)
            self.kind, self.model, self.preprocess = "open_clip", model.eval(), preprocess
            self.tokenizer = open_clip.get_tokenizer(arch)
        else:
            from transformers import CLIPModel, CLIPProcessor

            self.kind = "transformers"
            self.model = CLIPModel.from_pretrained(spec).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(spec)

    @staticmethod
    def _features(out: Any) -> Any:
        """transformers 5 returns a model output whose pooler_output is the projected embedding."""
        return out if hasattr(out, "norm") else out.pooler_output

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) image embeddings (unnormalised; cosine normalises)."""
        torch = self._torch
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                batch = [im.convert("RGB") for im in images[i:i + self.batch_size]]
                if self.kind == "open_clip":
                    x = torch.stack([self.preprocess(im) for im in batch]).to(self.device)
                    emb = self.model.encode_image(x)
                else:
                    px = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                    emb = self._features(self.model.get_image_features(pixel_values=px))
                out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) text embeddings; prompts longer than the context are truncated."""
        torch = self._torch
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = list(texts[i:i + self.batch_size])
                if self.kind == "open_clip":
                    emb = self.model.encode_text(self.tokenizer(batch).to(self.device))
                else:
                    tok = self.processor.tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
                    emb = self._features(self.model.get_text_features(
                        input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)))
                out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))
