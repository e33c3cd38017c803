"""FID / KID through torchmetrics with cached reference features, and CLIP-T / CLIP-I (the quality stage runs them).

Inception features come from torchmetrics' `NoTrainInceptionV3` (torch-fidelity's FID Inception).
Reference features are cached under `$T2I_DEBIAS_CACHE/fid-ref/` by the content hash of the
reference and of the Inception weights, so comparing several models extracts them once. The FID and
KID themselves are torchmetrics' `FrechetInceptionDistance` / `KernelInceptionDistance`, fed the
features through an identity feature module. A reference may also be a statistics `.npz` (`mu`,
`sigma`, optionally `features` for KID), read without pickle.

`stages.quality.quality_for` writes, with these, `quality/<model>.json` (fid, kid, kid_std, clip_t, clip_i,
n_images, ...) and `quality/<model>.csv` (per-image CLIP-T / CLIP-I).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2i_debias.core.config import QualitySection
from t2i_debias.core.files import atomic_write_bytes, describe_path, hash_file, hash_obj
from t2i_debias.core.image_files import open_rgb
from t2i_debias.core.layout import GENERATED_METADATA
from t2i_debias.metrics.clip_score import clip_i_scores, clip_t_scores

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# ----------------------------------------------------------------------------- Inception features
def prepare_inception(mode: str = "auto", smoke: bool = False) -> Path | None:
    """Make sure the right Inception weights are in place; return their path (None: torch-fidelity downloads).

    Refuses random offline weights at the real checkpoint path outside smoke/random mode, so a test
    cache can never silently turn a real evaluation's FID into noise.
    """
    from t2i_debias.tiny.inception import (
        ensure_inception_weights,
        inception_checkpoint_path,
        is_real_inception_weights,
    )

    if mode not in ("auto", "random"):
        raise ValueError(f"quality.inception must be auto or random, got {mode!r}")
    if mode == "random" or smoke:
        return ensure_inception_weights()
    path = inception_checkpoint_path()
    if path.is_file() and not is_real_inception_weights(path):
        raise RuntimeError(f"{path} holds random (offline test) Inception weights, not torch-fidelity's; "
                           "delete it or point TORCH_HOME elsewhere for a real FID (or use --smoke)")
    return path if path.is_file() else None


class InceptionFeatures:
    """Batched Inception features (N, D) of PIL images, with torchmetrics' FID feature extractor."""

    def __init__(self, dims: int = 2048, device: str = "cpu", batch_size: int = 32) -> None:
        import torch
        from torchmetrics.image.fid import NoTrainInceptionV3

        self._torch = torch
        self.dims, self.device, self.batch_size = dims, device, batch_size
        self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(dims)]).to(device)

    def __call__(self, images: Sequence[Image.Image | Path | str]) -> np.ndarray:
        feats = np.zeros((len(images), self.dims), dtype=np.float64)
        # Group by size so every batch is one tensor; the extractor resizes to 299 itself.
        loaded: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for i, im in enumerate(images):
            arr = _load_rgb(im)
            loaded.setdefault(arr.shape[:2], []).append((i, arr))
            group = loaded[arr.shape[:2]]
            if len(group) == self.batch_size:
                self._run(group, feats)
                group.clear()
        for group in loaded.values():
            if group:
                self._run(group, feats)
        return feats

    def _run(self, group: list[tuple[int, np.ndarray]], out: np.ndarray) -> None:
        torch = self._torch
        x = torch.from_numpy(np.stack([a for _, a in group])).permute(0, 3, 1, 2).contiguous().to(self.device)
        with torch.no_grad():
            f = self.model(x)
        f = f[0] if isinstance(f, tuple) else f
        out[[i for i, _ in group]] = f.double().cpu().numpy().reshape(len(group), -1)


def _load_rgb(im: Image.Image | Path | str) -> np.ndarray:
    """uint8 (H, W, 3) array of an image or image file; an unreadable file is an error naming it."""
    if isinstance(im, Image.Image):
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.asarray(open_rgb(im), dtype=np.uint8)  # ImageReadError names the file and the reason


class LazyImages(Sequence):
    """Image files decoded on access (an index or a slice), so a batched consumer holds one batch at a time
    and memory stays flat however many images a model has."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [open_rgb(f) for f in self.files[i]]
        return open_rgb(self.files[i])


def list_images(folder: str | Path) -> list[Path]:
    """Image files below `folder` (recursive, sorted, hidden files skipped)."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return files


# ----------------------------------------------------------------------------- reference statistics
def load_stats_npz(path: str | Path) -> dict[str, Any]:
    """Reference statistics from an .npz: `mu` and `sigma` (or `features`), never unpickled."""
    p = Path(path)
    with np.load(p, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if "features" in data:
        f = np.asarray(data["features"], dtype=np.float64)
        return {"features": f, **_stats(f)}
    if "mu" not in data or "sigma" not in data:
        raise ValueError(f"{p}: a statistics file needs arrays 'mu' and 'sigma' (or 'features'); has {sorted(data)}")
    mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{p}: mu {mu.shape} and sigma {sigma.shape} do not match")
    n = int(data["n"]) if "n" in data else None
    return {"features": None, "mu": mu, "sigma": sigma, "n": n}


def _stats(f: np.ndarray) -> dict[str, Any]:
    return {"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False), "n": int(f.shape[0])}


def reference_features(reference: str | Path, extractor: InceptionFeatures, weights: Path | None,
                       cache_dir: Path | None = None) -> dict[str, Any]:
    """Features/statistics of a reference folder (cached by content hash) or a stats .npz."""
    from t2i_debias.tiny.cache import cache_root

    ref = Path(reference)
    if ref.is_file():
        if ref.suffix != ".npz":
            raise ValueError(f"reference {ref} must be an image folder or a statistics .npz")
        return {**load_stats_npz(ref), "cached": False, "key": hash_file(ref)}
    if not ref.is_dir():
        raise FileNotFoundError(f"FID reference not found: {ref}")
    key_src = {"ref": describe_path(ref)["sha256"], "dims": extractor.dims,
               "weights": hash_file(weights) if weights and Path(weights).is_file() else "torch-fidelity-default"}
    key = hash_obj(key_src)[:24]
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "fid-ref"
    path = cache / f"{key}.npz"
    if path.is_file():
        out = load_stats_npz(path)
        log.info("reference features of %s from cache %s", ref, path)
        return {**out, "cached": True, "key": key}
    files = list_images(ref)
    log.info("extracting Inception features of %d reference images in %s", len(files), ref)
    feats = extractor(files)
    buf = io.BytesIO()
    np.savez(buf, features=feats.astype(np.float64))
    atomic_write_bytes(path, buf.getvalue())
    return {"features": feats, **_stats(feats), "cached": False, "key": key}


# ----------------------------------------------------------------------------- FID / KID
def _identity_module(dims: int) -> Any:
    import torch

    class FeatureIdentity(torch.nn.Module):
        """Lets torchmetrics' FID/KID take precomputed features as their 'images'."""

        num_features = dims

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    return FeatureIdentity()


def fid_kid(fake: np.ndarray, ref: dict[str, Any], kid_subset_size: int = 50, kid_subsets: int = 100,
            seed: int = 0) -> dict[str, Any]:
    """FID (and KID when reference features exist) of fake features against a reference, via torchmetrics."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid
    from torchmetrics.image.kid import KernelInceptionDistance

    dims = fake.shape[1]
    if fake.shape[0] < 2:
        raise ValueError("FID needs at least 2 generated images")
    out: dict[str, Any] = {"kid": None, "kid_std": None}
    if ref.get("features") is not None:
        rf = torch.from_numpy(np.asarray(ref["features"], np.float64))
        ff = torch.from_numpy(fake)
        fid = FrechetInceptionDistance(feature=_identity_module(dims))
        fid.update(rf, real=True)
        fid.update(ff, real=False)
        out["fid"] = float(fid.compute())
        size = min(kid_subset_size, rf.shape[0], ff.shape[0])
        if size >= 2:
            kid = KernelInceptionDistance(feature=_identity_module(dims), subsets=kid_subsets, subset_size=size)
            kid.update(rf, real=True)
            kid.update(ff, real=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # KID draws random subsets
                mean, std = kid.compute()
            out.update(kid=float(mean), kid_std=float(std), kid_subset_size=size)
    else:
        mu = torch.from_numpy(fake.mean(axis=0))
        sigma = torch.from_numpy(np.cov(fake, rowvar=False))
        out["fid"] = float(_compute_fid(torch.from_numpy(ref["mu"]), torch.from_numpy(ref["sigma"]), mu, sigma))
    return out


# ----------------------------------------------------------------------------- one model
def _nanmean(x: Sequence[float]) -> float | None:
    arr = np.asarray(x, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def evaluate_model(model_dir: Path, base_dir: Path | None, ref: dict[str, Any] | None,
                   extractor: InceptionFeatures | None, clip: Any, qsec: QualitySection, seed: int = 0
                   ) -> tuple[dict[str, Any], Any]:
    """Quality numbers of one generated/<model>/ folder, and its per-image table."""
    import pandas as pd

    from t2i_debias.core.files import safe_join
    from t2i_debias.sampling import read_metadata

    meta = read_metadata(model_dir)
    images = LazyImages([safe_join(model_dir, f) for f in meta["file"]])  # decoded one batch at a time
    result: dict[str, Any] = {"n_images": len(images), "fid": None, "kid": None, "kid_std": None}
    if ref is not None and extractor is not None:
        result.update(fid_kid(extractor(images), ref, qsec.kid_subset_size, qsec.kid_subsets, seed))
    img_emb = clip.embed_images(images)
    clip_t = clip_t_scores_of(clip, img_emb, list(meta["prompt"]), qsec.clip_score)
    table = pd.DataFrame({"prompt_id": meta["prompt_id"], "seed": meta["seed"], "file": meta["file"],
                          "clip_t": clip_t, "clip_i": np.nan})
    result["clip_t"] = _nanmean(clip_t)
    result["clip_i"] = None
    if base_dir is not None and (base_dir / GENERATED_METADATA).is_file():
        base = read_metadata(base_dir)
        base_file = {(str(p), int(s)): f for p, s, f in zip(base["prompt_id"], base["seed"], base["file"], strict=True)}
        pairs = [(i, base_file.get((str(p), int(s)))) for i, (p, s) in enumerate(zip(meta["prompt_id"], meta["seed"],
                                                                                   strict=True))]
        pairs = [(i, f) for i, f in pairs if f is not None]
        if pairs:
            base_emb = clip.embed_images(LazyImages([safe_join(base_dir, f) for _, f in pairs]))
            ci = clip_i_scores(img_emb[[i for i, _ in pairs]], base_emb)
            table.loc[[i for i, _ in pairs], "clip_i"] = ci
            result["clip_i"] = _nanmean(ci)
        result["clip_i_pairs"] = len(pairs)
    return result, table


def clip_t_scores_of(clip: Any, img_emb: np.ndarray, prompts: list[str], score: str = "x100_clamped") -> np.ndarray:
    """CLIP-T per image, embedding each distinct prompt once."""
    uniq = sorted(set(prompts))
    txt = clip.embed_texts(uniq)
    index = {p: i for i, p in enumerate(uniq)}
    return clip_t_scores(img_emb, txt[[index[p] for p in prompts]], score)
