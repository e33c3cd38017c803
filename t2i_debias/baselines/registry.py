"""Name -> baseline factory, so the SOTA stage treats every method alike (DESIGN.md §5)."""

from __future__ import annotations

import importlib
from typing import Any

from t2i_debias.baselines.base import GenParams, Method, NotApplicable

# name -> (module, class). "base" is the unmodified model.
METHODS: dict[str, tuple[str, str]] = {
    "base": ("t2i_debias.baselines.base", "Method"),
    "ethical_intervention": ("t2i_debias.baselines.ethical_intervention", "EthicalIntervention"),
    "debiasvl": ("t2i_debias.baselines.debiasvl", "DebiasVL"),
    "fair_diffusion": ("t2i_debias.baselines.fair_diffusion", "FairDiffusion"),
    "uce": ("t2i_debias.baselines.uce", "UCE"),
    "shen2024": ("t2i_debias.baselines.shen2024", "Shen2024"),
}


def method_params(name: str, cfg: Any) -> dict[str, Any]:
    """Settings of `name` taken from the [sota] section (only those that differ per run)."""
    if cfg is None:
        return {}
    s = cfg.sota
    if name == "debiasvl":
        return {"lam": s.debiasvl_lambda}
    if name == "fair_diffusion":
        return {"edit_guidance_scale": s.fair_diffusion_edit_guidance, "seed": cfg.run.seed}
    if name == "uce":  # race balance over the races the run's classifier can return
        from t2i_debias.metrics.dataset import race_classes_for

        return {"iterations": s.uce_iterations, "races": list(race_classes_for(cfg))}
    if name == "shen2024":
        return {"weights_dir": s.shen2024_dir}
    return {}


def uce_ratio_fn(cfg: Any, device: str = "cpu") -> Any:
    """UCE's ratio measurement with the run's own classifier ([labels]) and sampling settings."""
    from t2i_debias.baselines.uce import classifier_ratio_fn
    from t2i_debias.labels.registry import make_classifier

    s = cfg.sota
    gen = GenParams(batch_size=cfg.generate.batch_size, num_inference_steps=s.uce_steps,
                    guidance_scale=cfg.generate.guidance_scale,
                    height=cfg.generate.resolution or None, width=cfg.generate.resolution or None)
    seeds = [cfg.generate.base_seed + 10_000 + i for i in range(s.uce_samples)]  # not the evaluation seeds
    classifier = make_classifier(cfg.labels, device=device, smoke=bool(cfg.run.smoke))
    return classifier_ratio_fn(classifier, seeds, gen)


def make_method(name: str, base_pipe: Any, cfg: Any = None, **params: Any) -> Method:
    """Build method `name` on `base_pipe` (which it may modify in place: pass a pipeline it can own).

    Settings come from `cfg` ([sota]), then `params`. Raises NotApplicable (with the reason) when the
    method cannot run on this base model, and ValueError for an unknown name.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    module, cls_name = METHODS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    merged = {**method_params(name, cfg), **params}
    extra: dict[str, Any] = {}
    if name == "uce":
        extra["ratio_fn"] = merged.pop("ratio_fn", None)
        if extra["ratio_fn"] is None and cfg is not None:
            extra["ratio_fn"] = uce_ratio_fn(cfg, device=str(base_pipe.device))
    return cls(pipe=base_pipe, params=merged, **extra)


__all__ = ["METHODS", "GenParams", "Method", "NotApplicable", "make_method"]
