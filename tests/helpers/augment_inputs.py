"""Small persons.csv / labels.csv / MPII-like images for the augment tests (schemas of COMMON.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from t2i_debias.augment.counterfactual import Demographics
from t2i_debias.core.stage import Stage
from t2i_debias.core.vocab import RACES, other_gender
from t2i_debias.labels.base import DemographicClassifier, Prediction

PERSON_COLS = ["person_id", "image", "image_index", "ridx", "split", "category", "activity", "act_id",
               "occupation", "head_x1", "head_y1", "head_x2", "head_y2", "scale", "objpos_x", "objpos_y",
               "n_people", "single_person", "image_exists"]
LABEL_COLS = ["person_id", "image", "occupation", "status", "gender", "gender_conf", "race", "race_conf", "age",
              "age_group", "face_x1", "face_y1", "face_x2", "face_y2", "n_faces", "crop_sha256", "backend"]


def write_inputs(root: Path, people: list[dict[str, Any]], img_size: tuple[int, int] = (96, 72),
                 extra_labels: list[dict[str, Any]] | None = None) -> tuple[Path, Path, Path]:
    """Write images/, mpii/persons.csv and labels/labels.csv under `root` for `people`.

    Each person dict: occupation, gender, race, age_group (status ok unless given); optional `no_image`.
    Returns (persons_csv, labels_csv, images_dir).
    """
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    prow, lrow = [], []
    rng = np.random.default_rng(0)
    for i, p in enumerate(people):
        pid = p.get("person_id", f"{i}_1")
        name = f"{i:09d}.jpg"
        if not p.get("no_image"):
            arr = rng.integers(0, 255, size=(img_size[1], img_size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(images / name)
        prow.append({"person_id": pid, "image": name, "image_index": i, "ridx": 1, "split": "train",
                     "category": "occupation", "activity": "act", "act_id": i, "occupation": p["occupation"],
                     "head_x1": 40, "head_y1": 10, "head_x2": 56, "head_y2": 26, "scale": 0.3,
                     "objpos_x": 48, "objpos_y": 40, "n_people": 1, "single_person": 1,
                     "image_exists": 0 if p.get("no_image") else 1})
        lrow.append({"person_id": pid, "image": name, "occupation": p["occupation"],
                     "status": p.get("status", "ok"), "gender": p["gender"], "gender_conf": 0.9,
                     "race": p["race"], "race_conf": 0.8, "age": 30, "age_group": p.get("age_group", "young"),
                     "face_x1": 40, "face_y1": 10, "face_x2": 56, "face_y2": 26, "n_faces": 1,
                     "crop_sha256": "0" * 64, "backend": "test"})
    lrow += extra_labels or []
    persons_csv, labels_csv = root / "mpii" / "persons.csv", root / "labels" / "labels.csv"
    persons_csv.parent.mkdir(parents=True, exist_ok=True)
    labels_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(prow, columns=PERSON_COLS).to_csv(persons_csv, index=False)
    pd.DataFrame(lrow, columns=LABEL_COLS).to_csv(labels_csv, index=False)
    for stage, csv_path in (("mpii", persons_csv), ("labels", labels_csv)):  # both stages finished
        Stage(stage, csv_path.parent, {}).finish([csv_path])
    return persons_csv, labels_csv, images


def skewed_people(n: int, occupations: tuple[str, ...] = ("chef", "engineer"), seed: int = 1) -> list[dict[str, Any]]:
    """`n` people, mostly white men (as in MPII), spread over `occupations`."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append({"occupation": occupations[i % len(occupations)],
                    "gender": "man" if rng.random() < 0.8 else "woman",
                    "race": "white" if rng.random() < 0.7 else str(rng.choice(RACES)),
                    "age_group": str(rng.choice(["young", "middle-aged", "senior"]))})
    return out


class ColourClassifier(DemographicClassifier):
    """Deterministic stand-in labels backend: gender from red vs blue, race from brightness."""

    name = "colour"

    def predict(self, images, boxes=None) -> list[Prediction]:
        out = []
        for im in images:
            a = np.asarray(im.convert("RGB"), dtype=float)
            r, b = a[..., 0].mean(), a[..., 2].mean()
            race = RACES[int(a.mean() * 7) % len(RACES)]
            out.append(Prediction(gender="man" if r >= b else "woman", race=race, age_group="young"))
        return out


# ----------------------------------------------------------------------------- a world whose drawings are known
# What the world's generator draws when asked for `want` (occupation, requested demographics, 0-based try):
# a Prediction (what a perfect classifier sees in that image).
Rule = Callable[[str, Demographics, int], Prediction]


def as_asked(occupation: str, want: Demographics, k: int) -> Prediction:
    """The rule of a generator that draws exactly what it is asked."""
    return Prediction(gender=want.gender, gender_conf=0.9, race=want.race, race_conf=0.8, age_group=want.age_group)


def world_references(pipe: Any, people: Sequence[Any], composer: Any, seed: int, races: Sequence[str],
                     max_tries: int, res: int, steps: int, guidance: float, retry_guidance: float = 0.0,
                     negative_prompt: str = "none") -> list[tuple[np.ndarray, tuple[str, Demographics, int]]]:
    """Every image the enriched stage can ask the tiny SD for (each person x member request x try), with its request.

    Drawn through the same generate_images path, so a build's images match one of these exactly.
    """
    from t2i_debias.augment.planner import triplet_seed
    from t2i_debias.sampling import generate_images

    jobs = []
    for p in people:
        a = p.demographics
        wants = [a] + [Demographics(other_gender(a.gender), r, a.age_group) for r in races]
        for want in wants:
            for k in range(max_tries):
                jobs.append((p.occupation, want, k, triplet_seed(seed, p.person_id) + k))
    refs = []
    for k in range(max_tries):
        js = [j for j in jobs if j[2] == k]
        kw = {}
        if negative_prompt == "opposite_gender":
            kw["negative_prompt"] = [composer.generation(o, replace(w, gender=other_gender(w.gender)))
                                     for o, w, _, _ in js]
        scale = retry_guidance if k > 0 and retry_guidance > 0 else guidance
        imgs = generate_images(pipe, [composer.generation(o, w) for o, w, _, _ in js], [s for *_, s in js], 16,
                               steps, scale, height=res, width=res, **kw)
        refs += [(np.asarray(im.convert("RGB"), dtype=np.float32), (o, w, kk)) for im, (o, w, kk, _) in
                 zip(imgs, js, strict=True)]
    return refs


class WorldClassifier(DemographicClassifier):
    """Labels backend of a controlled world: it recognises which request drew an image and answers `rule` for it.

    An image that matches no reference (mean abs difference > 0.5 grey level) raises, so a build that
    generated something unexpected (another prompt, seed or guidance) cannot pass unnoticed.
    """

    name = "world"

    def __init__(self, refs: list[tuple[np.ndarray, tuple[str, Demographics, int]]], rule: Rule) -> None:
        self.stack = np.stack([r for r, _ in refs])
        self.requests = [q for _, q in refs]
        self.rule = rule
        self.calls = 0

    def predict(self, images, boxes=None) -> list[Prediction]:
        out = []
        for im in images:
            d = np.abs(self.stack - np.asarray(im.convert("RGB"), dtype=np.float32)).mean(axis=(1, 2, 3))
            i = int(d.argmin())
            if d[i] > 0.5:
                raise LookupError(f"image matches no request of the world (nearest differs by {d[i]:.2f})")
            out.append(self.rule(*self.requests[i]))
        self.calls += len(images)
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}
