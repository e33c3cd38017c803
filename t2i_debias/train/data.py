"""Triplet data for training: enriched/ (HF imagefolder + metadata.jsonl) -> tensors of images and token ids.

Records are read and validated by `t2i_debias.augment.reader.read_metadata`; this module only turns
them into model inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

log = logging.getLogger(__name__)

MEMBERS: tuple[str, ...] = ("a", "p", "n")  # anchor, positive (counterfactual), negative (same demographics)


@dataclass(frozen=True)
class TrainTriplet:
    """The part of one enriched/ triplet that training needs: three image paths and three captions."""

    anchor_image: Path
    positive_image: Path
    negative_image: Path
    anchor_text: str
    positive_text: str
    negative_text: str
    occupation: str = ""

    def image(self, member: str) -> Path:
        return {"a": self.anchor_image, "p": self.positive_image, "n": self.negative_image}[member]

    def text(self, member: str) -> str:
        return {"a": self.anchor_text, "p": self.positive_text, "n": self.negative_text}[member]


def read_triplets(enriched_dir: str | Path) -> list[TrainTriplet]:
    """All triplets of an enriched/ folder, validated by t2i_debias.augment.reader (errors name file:line)."""
    from t2i_debias.augment.reader import read_metadata

    out = [TrainTriplet(t.anchor_path, t.positive_path, t.negative_path, t.anchor_text, t.positive_text,
                        t.negative_text, t.occupation) for t in read_metadata(enriched_dir)]
    if not out:
        raise ValueError(f"{Path(enriched_dir) / 'metadata.jsonl'}: no triplets to train on")
    return out


def image_transform(resolution: int) -> Any:
    """Resize the short side, centre-crop, scale to [-1, 1]: the same transform for all three members."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution),
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ])


def tokenize(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length, as the SD pipelines encode prompts."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


class TripletDataset(torch.utils.data.Dataset):
    """Items: pixels_{a,p,n} (3, R, R) in [-1, 1], ids_{a,p,n} (L,), and `index` (for per-sample noise seeds)."""

    def __init__(self, triplets: list[TrainTriplet], tokenizer: Any, resolution: int) -> None:
        self.triplets = triplets
        self.tokenizer = tokenizer
        self.transform = image_transform(resolution)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.triplets[i]
        item: dict[str, Any] = {"index": i}
        ids = tokenize(self.tokenizer, [t.text(m) for m in MEMBERS])
        for j, m in enumerate(MEMBERS):
            path = t.image(m)
            try:
                with Image.open(path) as im:
                    item[f"pixels_{m}"] = self.transform(im.convert("RGB"))
            except OSError as e:
                raise OSError(f"cannot read training image {path}: {e}") from e
            item[f"ids_{m}"] = ids[j]
        return item


class EpochSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation per epoch: the data order depends only on (seed, epoch), so resuming is exact."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
