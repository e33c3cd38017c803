"""Offline builders: tiny real models for tests, `--smoke` runs and the demo (DESIGN.md §8).

Each builder goes through the real library (diffusers, transformers, DeepFace, torch-fidelity),
is deterministic by seed, idempotent, and cached under `$T2I_DEBIAS_CACHE` in a folder keyed by a
hash of its config. No network is touched. One module per kind of model:
- `sd`        tiny StableDiffusionPipeline + real CLIP BPE tokenizer;
- `deepface`  DeepFace gender/race/age weights with random values, where DeepFace looks;
- `inception` torch-fidelity's FID Inception with random (re-initialised) weights;
- `clip`      a tiny CLIPModel + CLIPProcessor for CLIP-T / CLIP-I.
"""

from t2i_debias.tiny.cache import cache_root, cached_dir
from t2i_debias.tiny.deepface import ensure_deepface_weights
from t2i_debias.tiny.sd import clip_tokenizer_dir, tiny_sd_dir

__all__ = ["cache_root", "cached_dir", "clip_tokenizer_dir", "ensure_deepface_weights", "tiny_sd_dir"]
