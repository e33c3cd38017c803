"""The toy world plugs in from above: `register()` adds its model prefix and its labels backend.

Nothing below the toy world names it. `cli.parse`, `pipeline.run_pipeline` and the toy world's own entry
points call `register()` (idempotent) before a `toy:` model or the "toy" backend is used:
- `toy:` in `models.RESOLVERS` -> `base_model.resolve` (`toy:base`, the toy base of `[toy] seed`);
- `"toy"` in `labels.registry.BACKENDS` -> the toy classifier, with its three races and what it measures.
"""

from __future__ import annotations

from t2i_debias.core.config import Config, LabelsSection
from t2i_debias.labels.base import DemographicClassifier


def resolve_toy_model(spec: str, cfg: Config | None = None) -> str:
    """Resolver of `toy:` specs: the cached (or shipped) toy model folder."""
    from t2i_debias.toyworld import base_model

    return str(base_model.resolve(spec, cfg))


def _toy_classifier(section: LabelsSection, device: str, smoke: bool) -> DemographicClassifier:
    """Factory of the "toy" labels backend (`smoke` changes nothing: the toy classifier is small)."""
    from t2i_debias.toyworld.classifier import make_classifier

    return make_classifier(section, device=device)


def register() -> None:
    """Register the `toy:` model prefix, the "toy" labels backend and the toy quality columns; calling it again
    changes nothing."""
    from t2i_debias.labels.registry import Backend, register_backend
    from t2i_debias.models import register_resolver
    from t2i_debias.toyworld import quality
    from t2i_debias.toyworld.classifier import ToyClassifier

    register_resolver("toy:", resolve_toy_model)
    register_backend("toy", Backend(_toy_classifier, races=ToyClassifier.races, measures=ToyClassifier.measures))
    quality.register()
