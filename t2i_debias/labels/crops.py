"""Image loading, head-box crops and crop hashes shared by every labels backend.

A person's classifier input is the head box expanded by `margin` times its width (x) and height
(y) on each side, clipped to the image. The crop's pixel hash keys the resume cache, so a rerun
recomputes nothing it already labelled, whatever the row order.
"""

from __future__ import annotations

import hashlib
import math
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from t2i_debias.core.image_files import ImageReadError, open_rgb
from t2i_debias.labels.base import Box, DemographicClassifier, Prediction

ImageLoadError = ImageReadError  # the labels runner's name for it: `status` is the labels.csv status


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, raising ImageLoadError (status missing_image, too_large, truncated, not_an_image
    or unreadable_image; the message names the file)."""
    return open_rgb(path)


def valid_box(box: Box | None) -> bool:
    """True for a finite box with x2 > x1 and y2 > y1."""
    if box is None or len(box) != 4:
        return False
    x1, y1, x2, y2 = (float(v) for v in box)
    return all(math.isfinite(v) for v in (x1, y1, x2, y2)) and x2 > x1 and y2 > y1


def box_overlaps(box: Box, width: int, height: int) -> bool:
    """True when `box` shares some area with a `width` x `height` image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return min(x2, width) > max(x1, 0.0) and min(y2, height) > max(y1, 0.0)


def expand_box(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow `box` by `margin` box widths (x) / heights (y) on each side; clip to the image; int pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    ex1 = max(0, math.floor(x1 - margin * w))
    ey1 = max(0, math.floor(y1 - margin * h))
    ex2 = min(width, math.ceil(x2 + margin * w))
    ey2 = min(height, math.ceil(y2 + margin * h))
    return ex1, ey1, ex2, ey2


@dataclass
class Crop:
    """A classifier input cut from an image; `offset` maps crop pixels back to image pixels."""

    image: Image.Image
    offset: tuple[int, int] = (0, 0)
    head: Box | None = None  # the head box in crop coordinates (None for whole images)

    @property
    def is_head_crop(self) -> bool:
        return self.head is not None

    def to_image_box(self, box: Box) -> Box:
        """A box in crop coordinates, in the original image's coordinates."""
        ox, oy = self.offset
        return (box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy)


def make_crop(image: Image.Image, box: Box | None, margin: float) -> Crop:
    """The head-box crop with margin, or the whole image when there is no usable box.

    A box that misses the image entirely (empty after clipping) also gives the whole image.
    """
    if not valid_box(box):
        return Crop(image.convert("RGB"))
    assert box is not None
    x1, y1, x2, y2 = expand_box(box, margin, image.width, image.height)
    if x2 <= x1 or y2 <= y1:
        return Crop(image.convert("RGB"))
    head = (float(box[0]) - x1, float(box[1]) - y1, float(box[2]) - x1, float(box[3]) - y1)
    return Crop(image.convert("RGB").crop((x1, y1, x2, y2)), (x1, y1), head)


def image_sha256(image: Image.Image) -> str:
    """Hash of an image's pixels (mode, size and raw bytes), independent of file encoding."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


class CropClassifier(DemographicClassifier):
    """A classifier that works on head-box crops (with `self.margin`): `predict` crops, `predict_crops` labels."""

    margin: float = 1.0

    def predict(self, images: list[Image.Image], boxes: list[Box | None] | None = None) -> list[Prediction]:
        boxes = boxes if boxes is not None else [None] * len(images)
        if len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        return self.predict_crops([make_crop(im, b, self.margin) for im, b in zip(images, boxes, strict=True)])

    @abstractmethod
    def predict_crops(self, crops: list[Crop]) -> list[Prediction]:
        """Labels for ready-made crops (the labels runner hashes crops before calling this)."""
