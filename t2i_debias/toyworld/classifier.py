"""The "toy" labels backend: three small CNNs (gender, skin tone, occupation) trained on fresh renders.

Trained in seconds on a balanced population, with blur/noise/shift augmentation so that they also
read the VAE-decoded, slightly blurry samples of the toy diffusion model. Cached under a hash of
their config (`toy-classifier-<hash>`), with their held-out accuracy in `metrics.json`.

The toy classifier sees the whole 32×32 picture: gender is drawn by hair *and* clothes and the
occupation by the scene, so head boxes are ignored. Toy people have no age: every prediction says
age 30 ("young") so that code expecting an age keeps working.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2i_debias.attributes import GENDERS
from t2i_debias.labels.base import Box, DemographicClassifier, Prediction
from t2i_debias.tiny.cache import cached_dir
from t2i_debias.toyworld.render import OCCUPATIONS, SIZE, TOY_RACES

log = logging.getLogger(__name__)

VERSION = 1
HEADS: dict[str, tuple[str, ...]] = {"gender": GENDERS, "race": TOY_RACES, "occupation": OCCUPATIONS}
TOY_AGE = 30.0
TOY_AGE_GROUP = "young"


def classifier_spec(n_per_cell: int = 100, steps: int = 500, seed: int = 0) -> dict[str, Any]:
    """Config of the three CNNs and their training (the cache key)."""
    return {"version": VERSION, "widths": [16, 32, 48], "n_per_cell": n_per_cell, "steps": steps,
            "batch_size": 64, "lr": 3e-3, "seed": seed, "heldout_per_cell": 20, "heads": HEADS}


def _net(n_out: int, widths: list[int]) -> Any:
    """conv-relu-pool ×3, global average pool, linear: ~24k parameters."""
    import torch.nn as nn

    layers: list[nn.Module] = []
    c = 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_out)]
    return nn.Sequential(*layers)


def to_batch(images: list[Image.Image]) -> Any:
    """PIL images (any size) -> float tensor (N, 3, 32, 32) in [-1, 1]."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
                    for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _augment(x: Any, g: Any) -> Any:
    """Random blur, noise, colour shift and a ±1 pixel shift: robustness to generated samples."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(n, 1, 1, 1, generator=g) * 0.7
    x = (1 - a) * x + a * blur
    x = x + torch.randn(x.shape, generator=g) * 0.04 + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.08
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3)).clamp(-1, 1)


def _labels(samples: list[Any], head: str) -> Any:
    import torch

    classes = HEADS[head]
    return torch.tensor([classes.index(getattr(s.person, head)) for s in samples])


def build_classifier(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Train the three CNNs on fresh renders; save weights (safetensors) and held-out accuracies."""
    import torch
    from safetensors.torch import save_file

    from t2i_debias.toyworld.dataset import balanced_population

    torch.manual_seed(spec["seed"])
    t0 = time.time()
    train = balanced_population(spec["n_per_cell"], spec["seed"] + 1)
    held = balanced_population(spec["heldout_per_cell"], spec["seed"] + 2)
    x = to_batch([s.render().image for s in train])
    xh = to_batch([s.render().image for s in held])
    g = torch.Generator().manual_seed(spec["seed"])
    tensors: dict[str, Any] = {}
    metrics: dict[str, Any] = {"n_train": len(train), "n_heldout": len(held)}
    for head, classes in HEADS.items():
        net = _net(len(classes), spec["widths"])
        y = _labels(train, head)
        opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec["lr"], total_steps=spec["steps"])
        for _ in range(spec["steps"]):
            i = torch.randint(0, len(x), (spec["batch_size"],), generator=g)
            loss = torch.nn.functional.cross_entropy(net(_augment(x[i], g)), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = float((net(xh).argmax(1) == _labels(held, head)).float().mean())
        metrics[f"{head}_accuracy"] = acc
        metrics[f"{head}_params"] = sum(p.numel() for p in net.parameters())
        log.info("toy classifier %s: held-out accuracy %.4f", head, acc)
        tensors.update({f"{head}.{k}": v.contiguous() for k, v in net.state_dict().items()})
    metrics["train_seconds"] = round(time.time() - t0, 1)
    save_file(tensors, str(out_dir / "model.safetensors"))
    (out_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return out_dir


def classifier_dir(spec: dict[str, Any] | None = None) -> Path:
    """Cached folder of the trained toy classifier."""
    spec = spec or classifier_spec()
    return cached_dir("toy-classifier", spec, lambda d: build_classifier(d, spec))


class ToyClassifier(DemographicClassifier):
    """Gender, skin tone (as race) and occupation of toy pictures; see the module docstring."""

    name = "toy"
    races = TOY_RACES  # the only race labels this backend can return

    def __init__(self, folder: str | Path | None = None, device: str = "cpu", batch_size: int = 256) -> None:
        import torch
        from safetensors.torch import load_file

        self.folder = Path(folder) if folder is not None else classifier_dir()
        self.spec = json.loads((self.folder / "spec.json").read_text())
        self.metrics = json.loads((self.folder / "metrics.json").read_text())
        self.device = torch.device(device)
        self.batch_size = batch_size
        state = load_file(str(self.folder / "model.safetensors"))
        self.nets: dict[str, Any] = {}
        for head, classes in HEADS.items():
            net = _net(len(classes), self.spec["widths"])
            net.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(head + ".")})
            self.nets[head] = net.eval().to(self.device)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "folder": self.folder.name, "heldout_accuracy": {
            h: self.metrics[f"{h}_accuracy"] for h in HEADS}}

    def probabilities(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        """Softmax outputs per head, (N, K) arrays in HEADS order."""
        import torch

        out: dict[str, list[np.ndarray]] = {h: [] for h in HEADS}
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = to_batch(images[i : i + self.batch_size]).to(self.device)
                for h, net in self.nets.items():
                    out[h].append(torch.softmax(net(x), 1).cpu().numpy())
        return {h: np.concatenate(v) if v else np.zeros((0, len(HEADS[h]))) for h, v in out.items()}

    def features(self, images: list[Image.Image]) -> np.ndarray:
        """Penultimate activations of the three CNNs, concatenated: the toy-FID feature space."""
        import torch

        feats = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = to_batch(images[i : i + self.batch_size]).to(self.device)
                feats.append(torch.cat([net[:-1](x) for net in self.nets.values()], 1).cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, sum(self.spec["widths"][-1:]) * len(HEADS)))

    def predict(self, images: list[Image.Image], boxes: list[Box | None] | None = None) -> list[Prediction]:
        """One Prediction per image; an image that cannot be read gets status `error:<type>`."""
        good: list[int] = []
        rgb: list[Image.Image] = []
        preds: list[Prediction | None] = [None] * len(images)
        for i, im in enumerate(images):
            try:
                rgb.append(im.convert("RGB"))
                good.append(i)
            except (OSError, ValueError, AttributeError) as e:
                preds[i] = Prediction(status=f"error:{type(e).__name__}")
        probs = self.probabilities(rgb)
        for j, i in enumerate(good):
            w, h = rgb[j].size
            p = {hd: probs[hd][j] for hd in HEADS}
            preds[i] = Prediction(
                gender=GENDERS[int(p["gender"].argmax())], gender_conf=float(p["gender"].max()),
                race=TOY_RACES[int(p["race"].argmax())], race_conf=float(p["race"].max()),
                age=TOY_AGE, age_group=TOY_AGE_GROUP, face_box=(0.0, 0.0, float(w), float(h)), n_faces=1,
                extra={"occupation": OCCUPATIONS[int(p["occupation"].argmax())],
                       "occupation_conf": float(p["occupation"].max())},
            )
        return [p for p in preds if p is not None]


def make_classifier(labels_section: Any = None, device: str = "cpu") -> ToyClassifier:
    """Factory used by the labels registry for backend "toy" (settings of [labels] other than batch size
    do not apply to the toy backend)."""
    batch = int(getattr(labels_section, "batch_size", 256) or 256)
    return ToyClassifier(classifier_dir(), device=device, batch_size=max(batch, 64))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = samples)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        raise ValueError("Fréchet distance needs at least 2 samples per set")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def toy_fid(clf: ToyClassifier, images: list[Image.Image], reference: list[Image.Image]) -> float:
    """FID computed on toy-classifier features (a cheap, meaningful quality score in the toy world)."""
    return frechet_distance(clf.features(images), clf.features(reference))
