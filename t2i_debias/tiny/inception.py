"""Random weights for torch-fidelity's FID Inception, written where torch-fidelity (and torchmetrics) look.

torchmetrics' FID/KID build torch-fidelity's `FeatureExtractorInceptionV3`, which loads
`$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth` through
`torch.hub.load_state_dict_from_url` (downloading it when missing). We build the same module with
seeded random weights and save its state dict there, so FID/KID run offline. Conv weights are
re-initialised (Kaiming normal): with PyTorch's default init the activations collapse after ~90
layers, every image gets the same features, and FID≈0 / KID=0 whatever the images.

Never overwrite the real weights: `is_real_inception_weights` checks the sha256 prefix that torch
hub encodes in the file name, and the quality stage refuses random weights outside `--smoke`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from t2i_debias.core.files import atomic_open, hash_file
from t2i_debias.tiny.cache import cached_dir

log = logging.getLogger(__name__)

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
REAL_SHA256_PREFIX = "6726825d"  # torch hub's hash-in-file-name convention


def inception_checkpoint_path() -> Path:
    """Where torch-fidelity's Inception weights are loaded from: $TORCH_HOME/hub/checkpoints/<name>."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def is_real_inception_weights(path: str | os.PathLike) -> bool:
    """True when the file is torch-fidelity's released weights (sha256 starts with the name's hash)."""
    return hash_file(path).startswith(REAL_SHA256_PREFIX)


def build_random_inception(out_file: Path, seed: int = 0) -> Path:
    """Instantiate torch-fidelity's InceptionV3 with seeded random weights and save its state dict."""
    import tempfile

    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        """The real constructor, minus loading weights (there are none offline)."""

        def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: ANN001
            return None

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                elif isinstance(m, torch.nn.Linear):
                    torch.nn.init.normal_(m.weight, std=0.01)
                    torch.nn.init.zeros_(m.bias)
    state = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_file, "wb") as fh:
        torch.save(state, fh)
    return out_file


def ensure_inception_weights(seed: int = 0) -> Path:
    """Make torch-fidelity's Inception checkpoint exist (random weights, cached); return its path.

    Real weights already in place are left untouched and used as they are.
    """
    dest = inception_checkpoint_path()
    built = cached_dir("inception-fid", {"seed": seed, "init": "kaiming_normal_fan_in"},
                       lambda d: build_random_inception(d / WEIGHTS_NAME, seed)) / WEIGHTS_NAME
    if dest.is_file():
        if is_real_inception_weights(dest):
            log.info("real Inception weights found at %s; using them", dest)
            return dest
        if hash_file(dest) == hash_file(built):
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(built, "rb") as src, atomic_open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    log.info("random-weight Inception (seed %d) written to %s", seed, dest)
    return dest
