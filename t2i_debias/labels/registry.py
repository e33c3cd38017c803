"""Backend name -> how to build its classifier and what it returns, so a `[labels] backend` switch swaps the classifier.

`BACKENDS[name] = Backend(factory, races, measures)`. DeepFace and CLIP are registered here; a plug-in
registers its own with `register_backend` (the toy world adds "toy" from its plug-in). The
classifiers are imported lazily: each pulls in heavy dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from t2i_debias.core.vocab import MEASURABLE, RACES
from t2i_debias.labels.base import DemographicClassifier
from t2i_debias.models import resolve_device

Factory = Callable[[Any, str, bool], DemographicClassifier]  # (labels section, device, smoke) -> classifier


@dataclass(frozen=True)
class Backend:
    """A labels backend: its factory, the race labels it can return, the attributes it measures."""

    factory: Factory
    races: tuple[str, ...] = RACES
    measures: tuple[str, ...] = MEASURABLE


def _deepface(section: Any, device: str, smoke: bool) -> DemographicClassifier:
    from t2i_debias.labels.deepface_backend import DeepFaceClassifier

    if smoke:  # random weights where DeepFace looks; allowed only in smoke runs and tests
        from t2i_debias.tiny.deepface import ensure_deepface_weights

        ensure_deepface_weights()
    return DeepFaceClassifier(detector=section.detector, fallback_skip=section.fallback_skip,
                              margin=section.margin, batch_size=section.batch_size,
                              multiple_faces=section.multiple_faces, align=section.align,
                              device=device, allow_random_weights=smoke)


def _clip(section: Any, device: str, smoke: bool) -> DemographicClassifier:
    from t2i_debias.labels.clip_backend import ClipClassifier

    return ClipClassifier(model="tiny:clip" if smoke else section.clip_model, template=section.clip_template,
                          margin=section.margin, batch_size=section.batch_size,
                          device=device)


BACKENDS: dict[str, Backend] = {"deepface": Backend(_deepface), "clip": Backend(_clip)}


def register_backend(name: str, entry: Backend) -> None:
    """Make `[labels] backend = name` build `entry`; registering a name again replaces it."""
    BACKENDS[name] = entry


def backend(name: str) -> Backend:
    """The registered backend `name`; unknown names raise ValueError listing the known ones."""
    if name not in BACKENDS:
        raise ValueError(f"[labels] backend = {name!r} is unknown; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_measures(name: str) -> tuple[str, ...]:
    """The attributes backend `name` measures; unknown backends raise ValueError."""
    return backend(name).measures


def race_classes(name: str, override: Sequence[str] = ()) -> tuple[str, ...]:
    """The race vocabulary of a run: `override` ([analysis] race_classes) when given, else backend `name`'s races."""
    if override:
        return tuple(override)
    return backend(name).races


def make_classifier(labels_section: Any, device: str = "cpu", smoke: bool = False) -> DemographicClassifier:
    """The classifier `labels_section.backend` names, built from the [labels] settings.

    `smoke=True` swaps in the offline random-weight models (DeepFace weights, tiny CLIP).
    """
    device = resolve_device(device)
    return backend(labels_section.backend).factory(labels_section, device, smoke)
