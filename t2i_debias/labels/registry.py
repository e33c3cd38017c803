"""Backend name -> DemographicClassifier factory, so a `[labels] backend` switch swaps the classifier.

Backends are imported lazily: DeepFace, CLIP and the toy world each pull in heavy dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from t2i_debias.labels.base import DemographicClassifier
from t2i_debias.models import resolve_device


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


def _toy(section: Any, device: str, smoke: bool) -> DemographicClassifier:
    make = importlib.import_module("t2i_debias.toyworld.classifier").make_classifier
    return make(section, device=device)


# Backend name -> (module, class), so what a backend measures is read without building it.
CLASSES: dict[str, tuple[str, str]] = {
    "deepface": ("t2i_debias.labels.deepface_backend", "DeepFaceClassifier"),
    "clip": ("t2i_debias.labels.clip_backend", "ClipClassifier"),
    "toy": ("t2i_debias.toyworld.classifier", "ToyClassifier"),
}


def backend_measures(backend: str) -> tuple[str, ...]:
    """The attributes backend `backend` measures (its class's `measures`); unknown backends raise ValueError."""
    if backend not in CLASSES:
        raise ValueError(f"[labels] backend = {backend!r} is unknown; known: {', '.join(CLASSES)}")
    module, cls = CLASSES[backend]
    return tuple(getattr(importlib.import_module(module), cls).measures)


BACKENDS: dict[str, Callable[[Any, str, bool], DemographicClassifier]] = {
    "deepface": _deepface,
    "clip": _clip,
    "toy": _toy,
}


def make_classifier(labels_section: Any, device: str = "cpu", smoke: bool = False) -> DemographicClassifier:
    """The classifier `labels_section.backend` names, built from the [labels] settings.

    `smoke=True` swaps in the offline random-weight models (DeepFace weights, tiny CLIP).
    """
    device = resolve_device(device)
    backend = labels_section.backend
    if backend not in BACKENDS:
        raise ValueError(f"[labels] backend = {backend!r} is unknown; known: {', '.join(BACKENDS)}")
    return BACKENDS[backend](labels_section, device, smoke)
