"""Shared helpers for the training tests: a tiny enriched/ folder and a small training config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from t2i_debias.core.config import AugmentSection, Config, RunSection, TrainSection

OCCUPATIONS = ("chef", "doctor", "nurse", "firefighter", "teacher", "pilot", "engineer", "farmer")


def make_enriched(root: Path, n: int = 4, size: int = 32) -> Path:
    """`n` triplets of random-pattern PNGs with full metadata.jsonl rows (the schema of COMMON.md)."""
    root = Path(root)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        occ = OCCUPATIONS[i % len(OCCUPATIONS)]
        row: dict = {}
        for member, key in (("anchor", "file_name"), ("positive", "positive_file_name"),
                            ("negative", "negative_file_name")):
            p = root / "images" / member / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
            row[key] = f"images/{member}/{i}.png"
        row.update(
            anchor_text=f"a photo of a {occ}", positive_text=f"a photo of an Asian woman working as a {occ}",
            negative_text=f"a photo of a white man working as a {occ}", occupation=occ, person_id=f"{i}_1",
            anchor_gender="man", anchor_race="white", anchor_age_group="young",
            positive_gender="woman", positive_race="asian", positive_age_group="young",
            negative_gender="man", negative_race="white", negative_age_group="young",
            generator="tiny:sd", seed=i, positive_tries=1, positive_agreement=None, negative_tries=1,
            negative_agreement=None,
        )
        for m in ("positive", "negative"):  # measured = requested, verified (what on_unverified="drop" writes)
            row.update({f"{m}_measured_gender": row[f"{m}_gender"], f"{m}_measured_race": row[f"{m}_race"],
                        f"{m}_measured_age_group": row[f"{m}_age_group"], f"{m}_measured_gender_conf": 0.9,
                        f"{m}_measured_race_conf": 0.8, f"{m}_measured_age_conf": None, f"{m}_verified": True})
        rows.append(row)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def small_config(run_dir: Path | None = None, **train: object) -> Config:
    """A Config for 32x32 tiny-pipeline training: batch 2, 2 steps, no checkpoints unless asked."""
    cfg = Config()
    if run_dir is not None:
        cfg.run.root, cfg.run.name = str(Path(run_dir).parent), Path(run_dir).name
    cfg.run.smoke = True
    t = cfg.train
    t.resolution, t.train_batch_size, t.max_train_steps, t.checkpointing_steps = 32, 2, 2, 0
    t.learning_rate = 1e-3
    for k, v in train.items():
        if not hasattr(t, k):
            raise AttributeError(k)
        setattr(t, k, v)
    return cfg


def train_args(cfg: Config) -> tuple[TrainSection, RunSection, AugmentSection]:
    """The sections `engine.train_mode` takes, as the models stage passes them ([train] resolved)."""
    from t2i_debias.stages.models import resolved

    return resolved(cfg), cfg.run, cfg.augment
