"""Triplet data for training: enriched/ (HF imagefolder + metadata.jsonl) -> tensors of images and token ids.

Records are read and validated by `t2i_debias.augment.reader.read_metadata`; this module turns them
into model inputs and decides what is trained (DESIGN.md §2, "What is denoised"):
- the *denoise items*: one per (triplet, denoised member), each in a demographic cell;
- the verification filter (`verified_only`): a member whose image failed its check is never used;
- `balance = "cell"`: sampling weights giving every (occupation, gender[, race]) cell the same weight;
- the caption candidates of each item (base, attribute, empty), chosen per step by the engine.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from t2i_debias.core.errors import InputError
from t2i_debias.core.options import (
    BALANCE_ATTRIBUTES,
    BALANCES,
    CAPTION_ALIASES,
    DENOISE_CAPTIONS,
    DENOISE_MEMBERS,
)

log = logging.getLogger(__name__)

MEMBERS: tuple[str, ...] = ("a", "p", "n")  # anchor, positive (counterfactual), negative (same demographics)
MEMBER_NAMES = {"a": "anchor", "p": "positive", "n": "negative"}


@dataclass(frozen=True)
class MemberInfo:
    """One member of a triplet as training sees it."""

    image: Path
    text: str  # its own caption (anchor: the neutral one; positive/negative: the requested attributes)
    gender: str  # what its image shows: labels for the anchor, measured when known, else requested
    race: str
    verified: bool | None  # the image agrees with `text` (anchor: True; None = never checked)
    attribute_text: str  # a caption naming `gender`/`race` ("" when no attributes are known)


@dataclass(frozen=True)
class TrainTriplet:
    """The part of one enriched/ triplet that training needs."""

    anchor_image: Path
    positive_image: Path
    negative_image: Path
    anchor_text: str
    positive_text: str
    negative_text: str
    occupation: str = ""
    members: tuple[MemberInfo, ...] = ()  # a, p, n (empty for hand-made triplets: no attributes known)

    def image(self, member: str) -> Path:
        return {"a": self.anchor_image, "p": self.positive_image, "n": self.negative_image}[member]

    def text(self, member: str) -> str:
        return {"a": self.anchor_text, "p": self.positive_text, "n": self.negative_text}[member]

    def member(self, m: str) -> MemberInfo:
        if not self.members:
            return MemberInfo(self.image(m), self.text(m), "", "", None, "")
        return self.members[MEMBERS.index(m)]


def _member_info(t: Any, m: str, composer: Any) -> MemberInfo:
    """Attributes and verification of one member of a reader.Triplet (a11 schema fields when present)."""
    from t2i_debias.augment.counterfactual import Demographics

    name = MEMBER_NAMES[m]
    image, text = getattr(t, f"{name}_path"), getattr(t, f"{name}_text")
    if m == "a":
        gender, race, verified = t.anchor_gender, t.anchor_race, True
    else:
        # `{m}_verified` true = checked and agreed; false with no agreement recorded = never checked
        agreement = getattr(t, f"{name}_agreement", None)
        flag = getattr(t, f"{name}_verified", None)
        verified = True if flag is True else (None if agreement is None else bool(agreement))
        gender = getattr(t, f"{name}_measured_gender", None) or getattr(t, f"{name}_gender")
        race = getattr(t, f"{name}_measured_race", None) or getattr(t, f"{name}_race")
    # nothing measured: the requested attributes stand in (the verification filter decides whether to trust them)
    attr = composer.attribute(t.occupation, Demographics(gender, race)) if composer is not None else text
    return MemberInfo(image, text, gender, race, verified, attr)


def read_triplets(enriched_dir: str | Path, composer: Any = None) -> list[TrainTriplet]:
    """All triplets of an enriched/ folder, validated by t2i_debias.augment.reader (errors name file:line).

    `composer` (augment.captions.CaptionComposer) writes the captions naming what each image shows.
    """
    from t2i_debias.augment.reader import read_metadata

    out = []
    for t in read_metadata(enriched_dir):
        members = tuple(_member_info(t, m, composer) for m in MEMBERS)
        out.append(TrainTriplet(t.anchor_path, t.positive_path, t.negative_path, t.anchor_text, t.positive_text,
                                t.negative_text, t.occupation, members))
    if not out:
        raise InputError(f"{Path(enriched_dir) / 'metadata.jsonl'}: no triplets to train on; the enriched stage "
                         "kept none (see its skipped.csv / rejected.csv): label more people or relax [augment]")
    return out


# ----------------------------------------------------------------------------- what is trained
@dataclass(frozen=True)
class DenoiseItem:
    """One training sample: a triplet, the member whose image is denoised, and its demographic cell."""

    triplet: int
    member: str
    cell: tuple[str, ...]


@dataclass
class Selection:
    """The items a run trains on, their sampling weights, and what the filter left out (for the card)."""

    items: list[DenoiseItem]
    weights: list[float]
    dropped: dict[str, int]
    unchecked: int = 0

    @property
    def uniform(self) -> bool:
        return len(set(self.weights)) <= 1


def select_items(triplets: Sequence[TrainTriplet], denoise_members: str = "positive",
                 uses_images: Sequence[str] = (), verified_only: bool = True, balance: str = "none",
                 balance_by: Sequence[str] = ("gender",)) -> Selection:
    """The denoise items of `triplets`, after the verification filter, with their sampling weights.

    A triplet is dropped when a member it uses (the denoised ones and `uses_images`, e.g. a/p/n for
    `vision`) failed verification; with `verified_only` false nothing is dropped. Weights are uniform,
    or (`balance = "cell"`) 1 / (number of cells × items in the cell), so each cell weighs the same.
    """
    if denoise_members not in DENOISE_MEMBERS:
        raise ValueError(f"[train] denoise_members must be one of {' | '.join(DENOISE_MEMBERS)}, "
                         f"got {denoise_members!r}")
    if balance not in BALANCES:
        raise ValueError(f"[train] balance must be one of {' | '.join(BALANCES)}, got {balance!r}")
    bad = [a for a in balance_by if a not in BALANCE_ATTRIBUTES]
    if bad or not balance_by:
        raise ValueError(f"[train] balance_by must list some of {', '.join(BALANCE_ATTRIBUTES)}, got {list(balance_by)}")
    members = DENOISE_MEMBERS[denoise_members]
    used = tuple(dict.fromkeys([*members, *uses_images]))
    items: list[DenoiseItem] = []
    dropped: Counter[str] = Counter()
    unchecked = 0
    for i, t in enumerate(triplets):
        infos = {m: t.member(m) for m in used}
        failed = [m for m, inf in infos.items() if inf.verified is False]
        if verified_only and failed:
            dropped[f"{MEMBER_NAMES[failed[0]]} failed verification"] += 1
            continue
        unchecked += any(inf.verified is None for inf in infos.values())
        for m in members:
            inf = infos[m]
            cell = (t.occupation, *(getattr(inf, a) for a in balance_by))
            if balance == "cell" and not all(cell[1:]):
                raise ValueError(f"triplet {i} ({t.occupation}): balance = 'cell' needs the {MEMBER_NAMES[m]}'s "
                                 f"{'/'.join(balance_by)}, which is unknown (an unverified member without measured "
                                 "attributes); set [train] verified_only = true or balance = 'none'")
            items.append(DenoiseItem(i, m, cell))
    if not items:
        raise ValueError(f"no training sample left: {dict(dropped)} of {len(triplets)} triplets dropped by the "
                         "verification filter (raise [augment] max_tries, or set [train] verified_only = false)")
    if balance == "cell":
        counts = Counter(it.cell for it in items)
        weights = [1.0 / (len(counts) * counts[it.cell]) for it in items]
    else:
        weights = [1.0 / len(items)] * len(items)
    if unchecked and verified_only:
        log.warning("%d of %d triplets were never verified ([augment] verify_attributes = false): the "
                    "verification filter cannot check them", unchecked, len(triplets))
    return Selection(items, weights, dict(dropped), unchecked)


def item_captions(t: TrainTriplet, member: str, base: str) -> tuple[str, str]:
    """(base caption, attribute caption) of a denoise item; the attribute caption names what the image shows.

    base: `own` = the member's own caption, `neutral` = the anchor's, `measured` = the attribute caption.
    An item with no known attributes falls back to its base caption (never to a caption that may be false).
    """
    base = CAPTION_ALIASES.get(base, base)
    if base not in DENOISE_CAPTIONS:
        raise ValueError(f"[train] denoise_caption must be one of {' | '.join(DENOISE_CAPTIONS)}, got {base!r}")
    info = t.member(member)
    attr = info.attribute_text
    if base == "own":
        text = t.text(member)
    elif base == "neutral":
        text = t.anchor_text
    else:
        if not attr:
            raise ValueError(f"{t.image(member)}: denoise_caption = 'measured' needs the attributes its image shows "
                             "(unknown: not verified and not measured)")
        text = attr
    return text, (attr or text)


# ----------------------------------------------------------------------------- tensors
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
    """Item k = denoise item k with its whole triplet: pixels_{a,p,n} (3, R, R) in [-1, 1], ids_{a,p,n} (L,);
    `member` (0/1/2: whose image is denoised), ids_base / ids_attr / ids_empty (its caption candidates),
    and `index` = k (seeds the per-sample noise). Without `items`: one item per triplet, the positive
    under its own caption (the reference)."""

    def __init__(self, triplets: list[TrainTriplet], tokenizer: Any, resolution: int,
                 items: list[DenoiseItem] | None = None, denoise_caption: str = "own") -> None:
        self.triplets = triplets
        self.items = items if items is not None else [DenoiseItem(i, "p", ()) for i in range(len(triplets))]
        self.tokenizer = tokenizer
        self.transform = image_transform(resolution)
        self.denoise_caption = denoise_caption

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        it = self.items[k]
        t = self.triplets[it.triplet]
        base, attr = item_captions(t, it.member, self.denoise_caption)
        item: dict[str, Any] = {"index": k, "member": MEMBERS.index(it.member)}
        ids = tokenize(self.tokenizer, [t.text(m) for m in MEMBERS] + [base, attr, ""])
        for j, m in enumerate(MEMBERS):
            path = t.image(m)
            try:
                with Image.open(path) as im:
                    item[f"pixels_{m}"] = self.transform(im.convert("RGB"))
            except OSError as e:
                raise OSError(f"cannot read training image {path}: {e}") from e
            item[f"ids_{m}"] = ids[j]
        item["ids_base"], item["ids_attr"], item["ids_empty"] = ids[3], ids[4], ids[5]
        return item


class EpochSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation per epoch (or, with `weights`, n seeded weighted draws with replacement): the
    data order depends only on (seed, epoch), so resuming is exact."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, weights: Sequence[float] | None = None) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.weights = torch.as_tensor(list(weights), dtype=torch.float64) if weights is not None else None
        if self.weights is not None and len(self.weights) != n:
            raise ValueError(f"{len(self.weights)} weights for {n} items")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())
        if not self.shuffle:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
