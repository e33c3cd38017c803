"""The "toy" labels backend: four small CNNs (hair, clothes, skin tone, occupation) trained on fresh renders.

Trained in seconds on a balanced population, with blur/noise/shift augmentation so that they also
read the VAE-decoded, slightly blurry samples of the toy diffusion model. Cached under a hash of
their config (`toy-classifier-<hash>`), with their held-out accuracy in `metrics.json`.

Gender is drawn by two cues, hair (long / short) and clothes (dress / trousers), and each cue has its
own CNN that sees only its part of the picture (`CUE_ROWS`: the head rows for hair, the legs rows for
clothes; the rest is set to grey). They are trained on composites too (the top of one render above the
bottom of another, cut between rows 12 and 20), so each reads its own half. When the two
disagree, as in a generated long-haired figure in trousers, the image gets status `ambiguous`
(core.vocab.STATUS_AMBIGUOUS) instead of a guessed gender. Both readings are kept in `extra`.

The classifier sees the whole 32×32 picture (the occupation is drawn by the scene), so head boxes
are ignored. Toy people have no age: every prediction says age 30 ("young") so that code expecting
an age keeps working.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2i_debias.core.config import LabelsSection
from t2i_debias.core.vocab import GENDERS, STATUS_AMBIGUOUS
from t2i_debias.labels.base import Box, DemographicClassifier, Prediction
from t2i_debias.toyworld.pretrained import build_record, cached_or_shipped
from t2i_debias.toyworld.render import OCCUPATIONS, SIZE, TOY_RACES, world_spec

log = logging.getLogger(__name__)

VERSION = 3  # 3: six occupations (two held out of the MPII copy)
# The two gender cues: "hair" is read from the head, "clothes" from the body (see module docstring).
GENDER_CUES: tuple[str, ...] = ("hair", "clothes")
HEADS: dict[str, tuple[str, ...]] = {"hair": GENDERS, "clothes": GENDERS, "race": TOY_RACES,
                                     "occupation": OCCUPATIONS}
TOY_AGE = 30.0
TOY_AGE_GROUP = "young"
# The rows [start, end) each gender cue's CNN sees: every render's head and hair lie in rows 2-17 (long
# hair reaches the shoulders), its dress hem or trousers in rows 18-31 (render.py: head centre 7.5-10.5,
# radius 3.6, long hair to 6.5 below the centre, feet >= 28.5).
CUE_ROWS: dict[str, tuple[int, int]] = {"hair": (0, 16), "clothes": (18, SIZE)}
# Composite cut rows (top of one render above this row, bottom of another from it): training range, and
# the rows the tests and `metrics.json` check (the 14/16/18).
CUT_ROWS_TRAIN: tuple[int, int] = (13, 20)
CUT_ROWS_CHECK: tuple[int, ...] = (14, 16, 18)


def classifier_spec(n_per_cell: int = 100, steps: int = 300, cue_steps: int = 800, seed: int = 0) -> dict[str, Any]:
    """Config of the four CNNs and their training (the cache key). The gender cues, read from part of the
    picture and from composites, need more steps than skin tone and occupation (1.00 held out at 300)."""
    return {"version": VERSION, "world": world_spec(), "widths": [16, 32, 48], "n_per_cell": n_per_cell, "steps": steps,
            "cue_steps": cue_steps,
            "batch_size": 64, "lr": 3e-3, "seed": seed, "heldout_per_cell": 20, "heads": HEADS,
            "composite_share": 0.5, "cut_rows": list(CUT_ROWS_TRAIN),
            "cue_rows": {k: list(v) for k, v in CUE_ROWS.items()}}


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


def head_input(head: str, x: Any) -> Any:
    """What `head`'s CNN sees of a batch: a gender cue only its rows (CUE_ROWS), the rest grey (0)."""
    if head not in CUE_ROWS:
        return x
    lo, hi = CUE_ROWS[head]
    out = x.clone()
    out[..., :lo, :] = 0.0
    out[..., hi:, :] = 0.0
    return out


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
    """Class indices of `head` for rendered samples (both gender cues follow the person's gender)."""
    import torch

    attr = "gender" if head in GENDER_CUES else head
    classes = HEADS[head]
    return torch.tensor([classes.index(getattr(s.person, attr)) for s in samples])


def composite(top: Any, bottom: Any, cut: Any) -> Any:
    """Rows above `cut` from `top`, rows from `cut` down from `bottom` ((N, 3, H, W) tensors or arrays).

    `cut` is one row for all images or one per image. The toy analogue of a generated hybrid figure.
    """
    import torch

    top, bottom, cut = torch.as_tensor(top), torch.as_tensor(bottom), torch.as_tensor(cut)
    rows = torch.arange(top.shape[-2]).view(1, 1, -1, 1)
    return torch.where(rows < (cut.view(-1, 1, 1, 1) if cut.ndim else cut), top, bottom)


def _cue_batch(x: Any, y: Any, idx: Any, head: str, spec: dict[str, Any], g: Any) -> tuple[Any, Any]:
    """A training batch for a gender cue: a share of composites whose label is the cue's half."""
    import torch

    n = len(idx)
    partner = torch.randint(0, len(x), (n,), generator=g)
    mixed = torch.rand(n, generator=g) < spec["composite_share"]
    partner = torch.where(mixed, partner, idx)
    lo, hi = spec["cut_rows"]
    cut = torch.randint(lo, hi + 1, (n,), generator=g)
    label = y[idx] if head == "hair" else y[partner]
    return composite(x[idx], x[partner], cut), label


def composite_pairs(samples: list[Any]) -> list[tuple[int, int]]:
    """(top, bottom) index pairs of people of the same occupation and opposite genders, each person once on top."""
    pairs = []
    for k, s in enumerate(samples):
        others = [j for j, o in enumerate(samples)
                  if o.person.occupation == s.person.occupation and o.person.gender != s.person.gender]
        if others:
            pairs.append((k, others[k % len(others)]))
    return pairs


def _cue_checks(nets: dict[str, Any], xh: Any, held: list[Any]) -> dict[str, float]:
    """Held-out gender accuracy (both cues right) and the ambiguous rate of opposite-gender composites."""
    import torch

    y = _labels(held, "hair")
    with torch.no_grad():
        both = [nets[c](head_input(c, xh)).argmax(1) for c in GENDER_CUES]
        out = {"gender_accuracy": float(((both[0] == y) & (both[1] == y)).float().mean())}
        top, bottom = (torch.tensor(v) for v in zip(*composite_pairs(held), strict=True))
        amb = []
        for cut in CUT_ROWS_CHECK:
            x = composite(xh[top], xh[bottom], cut)
            hair, clothes = (nets[c](head_input(c, x)).argmax(1) for c in GENDER_CUES)
            amb.append(float(((hair == y[top]) & (clothes == y[bottom])).float().mean()))
        out["composite_ambiguous_rate"] = float(np.mean(amb))
    return out


def build_classifier(out_dir: Path, spec: dict[str, Any]) -> Path:
    """Train the four CNNs on fresh renders; save weights (safetensors), held-out accuracies and build.json."""
    with build_record(out_dir, "toy classifier"):
        _train_classifier(out_dir, spec)
    return out_dir


def _train_classifier(out_dir: Path, spec: dict[str, Any]) -> None:
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
    nets: dict[str, Any] = {}
    for head, classes in HEADS.items():
        net = _net(len(classes), spec["widths"])
        y = _labels(train, head)
        steps = spec["cue_steps"] if head in GENDER_CUES else spec["steps"]
        opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec["lr"], total_steps=steps)
        for _ in range(steps):
            i = torch.randint(0, len(x), (spec["batch_size"],), generator=g)
            xb, yb = _cue_batch(x, y, i, head, spec, g) if head in GENDER_CUES else (x[i], y[i])
            loss = torch.nn.functional.cross_entropy(net(head_input(head, _augment(xb, g))), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = float((net(head_input(head, xh)).argmax(1) == _labels(held, head)).float().mean())
        metrics[f"{head}_accuracy"] = acc
        metrics[f"{head}_params"] = sum(p.numel() for p in net.parameters())
        log.info("toy classifier %s: held-out accuracy %.4f", head, acc)
        tensors.update({f"{head}.{k}": v.contiguous() for k, v in net.state_dict().items()})
        nets[head] = net
    metrics |= _cue_checks(nets, xh, held)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    save_file(tensors, str(out_dir / "model.safetensors"))
    (out_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))


def classifier_dir(spec: dict[str, Any] | None = None) -> Path:
    """Cached folder of the trained toy classifier."""
    spec = spec or classifier_spec()
    return cached_or_shipped("toy-classifier", "classifier", spec, lambda d: build_classifier(d, spec))


class ToyClassifier(DemographicClassifier):
    """Gender (hair + clothes), skin tone (as race) and occupation of toy pictures; see the module docstring."""

    name = "toy"
    races = TOY_RACES  # the only race labels this backend can return
    measures = ("gender", "race")  # toy people have no age: the age it returns is a placeholder

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
                    out[h].append(torch.softmax(net(head_input(h, x)), 1).cpu().numpy())
        return {h: np.concatenate(v) if v else np.zeros((0, len(HEADS[h]))) for h, v in out.items()}

    def features(self, images: list[Image.Image]) -> np.ndarray:
        """Penultimate activations of the four CNNs, concatenated: the toy-FID feature space."""
        import torch

        feats = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = to_batch(images[i : i + self.batch_size]).to(self.device)
                feats.append(torch.cat([net[:-1](head_input(h, x)) for h, net in self.nets.items()], 1).cpu().numpy())
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
            # Every reading is kept in `extra` (also for an ambiguous image): the toy evaluation checks
            # skin tone and occupation of hybrids too.
            extra = {cue: GENDERS[int(p[cue].argmax())] for cue in GENDER_CUES}
            extra |= {"skin": TOY_RACES[int(p["race"].argmax())],
                      "occupation": OCCUPATIONS[int(p["occupation"].argmax())],
                      "occupation_conf": float(p["occupation"].max())}
            box = (0.0, 0.0, float(w), float(h))
            if extra["hair"] != extra["clothes"]:
                preds[i] = Prediction(status=STATUS_AMBIGUOUS, face_box=box, n_faces=1, extra=extra)
                continue
            preds[i] = Prediction(
                gender=extra["hair"], gender_conf=float(min(p[cue].max() for cue in GENDER_CUES)),
                race=extra["skin"], race_conf=float(p["race"].max()),
                age=TOY_AGE, age_group=TOY_AGE_GROUP, face_box=box, n_faces=1, extra=extra,
            )
        return [p for p in preds if p is not None]


def make_classifier(labels_section: LabelsSection | None = None, device: str = "cpu") -> ToyClassifier:
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
