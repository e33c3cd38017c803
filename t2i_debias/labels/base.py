"""The `DemographicClassifier` interface shared by every labels backend (deepface, clip, toy).

Labels of MPII people, verification of generated counterfactuals and the bias evaluation all go
through this one interface, so a backend can be swapped by config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from t2i_debias.core.vocab import MEASURABLE, STATUS_OK

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass
class Prediction:
    """What a classifier says about one image (or one person's crop).

    `status` is `ok` or a skip reason (`no_face`, `unreadable_image`, `missing_image`,
    `multiple_faces`, `error:<type>`); attribute fields are None unless status is `ok`.
    """

    status: str = STATUS_OK
    gender: str | None = None
    gender_conf: float | None = None
    race: str | None = None
    race_conf: float | None = None
    age: float | None = None
    age_group: str | None = None
    face_box: Box | None = None
    n_faces: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific, e.g. toy occupation

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_row(self) -> dict[str, Any]:
        """Flat dict for CSV rows (face_box as x1..y2, extra keys prefixed)."""
        d = asdict(self)
        box = d.pop("face_box")
        extra = d.pop("extra")
        for k, v in zip(("face_x1", "face_y1", "face_x2", "face_y2"), box or (None,) * 4, strict=True):
            d[k] = v
        for k, v in extra.items():
            d[f"extra_{k}"] = v
        return d


class DemographicClassifier(ABC):
    """Predict perceived gender / race / age for a batch of images.

    `boxes[i]`, when given, is a head box in image i's pixel coordinates: the backend crops
    around it (with its margin). Without a box the whole image goes through a face detector.
    """

    name: str = "abstract"
    # The attributes this backend measures (of core.vocab.MEASURABLE); its predictions of any other are
    # placeholders, and analysis, bias and the report show those attributes as "not measured".
    measures: tuple[str, ...] = MEASURABLE

    @abstractmethod
    def predict(self, images: list[Image.Image], boxes: list[Box | None] | None = None) -> list[Prediction]:
        """One Prediction per input image, in order; never raises for a single bad image."""

    def describe(self) -> dict[str, Any]:
        """Settings that identify this classifier (recorded in manifests and cache keys)."""
        return {"backend": self.name}
