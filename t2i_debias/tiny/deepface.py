"""DeepFace gender / race / age models with random weights, written where DeepFace loads them.

The networks are built with DeepFace's own PyTorch model code (deepface >= 0.0.100 runs on torch
when TensorFlow is absent), re-initialised from a seed and saved as
`$DEEPFACE_HOME/.deepface/weights/{gender_model_weights,race_model_single_batch,age_model_weights}.pth`.
`DeepFace.analyze` then runs with no network. Each file is a full VGG-Face trunk (~540 MB), so
files are built once; a sidecar marker records what built them, and a file that has no marker
(e.g. real weights a user downloaded) is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from t2i_debias.core.files import atomic_open, atomic_write_json

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
MARKER = "t2i_debias_tiny_deepface.json"

# DeepFace model name -> (module holding base_model(), file name DeepFace's torch backend loads).
MODELS: dict[str, tuple[str, str]] = {
    "Gender": ("deepface.models.demography.pytorch.Gender", "gender_model_weights.pth"),
    "Race": ("deepface.models.demography.pytorch.Race", "race_model_single_batch.pth"),
    "Age": ("deepface.models.demography.pytorch.Age", "age_model_weights.pth"),
}


def deepface_home(home: str | os.PathLike | None = None) -> Path:
    """`home`, else $DEEPFACE_HOME, else the user's home (DeepFace's own rule)."""
    if home is not None:
        return Path(home)
    return Path(os.environ.get("DEEPFACE_HOME", os.path.expanduser("~")))


def weights_dir(home: str | os.PathLike | None = None) -> Path:
    """The folder DeepFace reads weight files from."""
    return deepface_home(home) / ".deepface" / "weights"


def _spec(name: str, seed: int) -> dict[str, Any]:
    return {"builder": "t2i_debias.tiny.deepface", "version": BUILDER_VERSION, "model": name,
            "seed": seed, "init": "kaiming_normal(fan_in, relu), zero bias"}


def read_marker(folder: Path) -> dict[str, Any]:
    """The builder's marker in a weights folder ({} when absent): which files are random."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Exclusive lock so concurrent test processes do not build 1.6 GB of weights twice."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{MARKER}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_state_dict(name: str, seed: int) -> dict[str, Any]:
    """DeepFace's own `base_model()` for `name`, re-initialised deterministically from `seed`.

    Kaiming-normal conv weights keep activations from vanishing through the 16 VGG layers, so
    different faces get different (if meaningless) predictions.
    """
    import importlib

    import torch

    module = importlib.import_module(MODELS[name][0])
    model = module.base_model()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=gen)
                torch.nn.init.zeros_(m.bias)
    return model.state_dict()


def ensure_deepface_weights(home: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Make sure random-weight Gender/Race/Age files exist under `home`; return the weights folder.

    Idempotent: a file whose marker entry matches (builder version, seed, size) is kept as is.
    """
    import torch

    folder = weights_dir(home)
    with _lock(folder):
        marker = read_marker(folder)
        for name, (_, fname) in MODELS.items():
            path = folder / fname
            spec = _spec(name, seed)
            entry = marker.get(fname)
            if path.exists():
                if entry is None:
                    log.warning("%s exists and was not built by t2i_debias: using it as is", path)
                    continue
                if entry.get("spec") == spec and entry.get("size") == path.stat().st_size:
                    continue
            log.info("building random-weight DeepFace %s model -> %s", name, path)
            state = build_state_dict(name, seed)
            with atomic_open(path, "wb") as fh:
                torch.save(state, fh)
            del state
            marker[fname] = {"spec": spec, "size": path.stat().st_size}
            atomic_write_json(folder / MARKER, marker)
    return folder


def draw_cartoon_face(image: Any, cx: float, cy: float, size: float, skin: tuple[int, int, int] = (200, 160, 130)) -> None:
    """Draw a frontal cartoon face (centre cx, cy; width `size`) on a PIL image, in place.

    DeepFace's `opencv` (Haar cascade) detector finds these once the image is blurred a little,
    so tests and fixtures can exercise detection without real photos of people.
    """
    from PIL import ImageDraw

    d = ImageDraw.Draw(image)
    s = size
    d.ellipse([cx - s * 0.5, cy - s * 0.65, cx + s * 0.5, cy + s * 0.65], fill=skin)
    for dx in (-0.2, 0.2):
        d.ellipse([cx + dx * s - s * 0.09, cy - s * 0.25, cx + dx * s + s * 0.09, cy - s * 0.15], fill=(30, 20, 20))
        d.rectangle([cx + dx * s - s * 0.12, cy - s * 0.33, cx + dx * s + s * 0.12, cy - s * 0.30], fill=(60, 40, 30))
    d.polygon([(cx, cy - s * 0.1), (cx - s * 0.07, cy + s * 0.12), (cx + s * 0.07, cy + s * 0.12)], fill=(170, 120, 100))
    d.ellipse([cx - s * 0.18, cy + s * 0.25, cx + s * 0.18, cy + s * 0.35], fill=(120, 40, 40))
    d.rectangle([cx - s * 0.5, cy - s * 0.8, cx + s * 0.5, cy - s * 0.5], fill=(40, 30, 20))
