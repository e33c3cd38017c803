"""Name -> baseline class, so the SOTA stage treats every method alike (DESIGN.md §5).

Adding a baseline: its module with a `Method` subclass (`DEFAULTS`, `params_from`, `applicable`), one
`METHODS` line here and its `[sota]` options. Nothing else branches on a method's name.
"""

from __future__ import annotations

import importlib
from typing import Any

from t2i_debias.baselines.base import GenParams, Method, MethodInputs, NotApplicable

# name -> (module, class). "base" is the unmodified model.
METHODS: dict[str, tuple[str, str]] = {
    "base": ("t2i_debias.baselines.base", "Method"),
    "ethical_intervention": ("t2i_debias.baselines.ethical_intervention", "EthicalIntervention"),
    "debiasvl": ("t2i_debias.baselines.debiasvl", "DebiasVL"),
    "fair_diffusion": ("t2i_debias.baselines.fair_diffusion", "FairDiffusion"),
    "uce": ("t2i_debias.baselines.uce", "UCE"),
    "shen2024": ("t2i_debias.baselines.shen2024", "Shen2024"),
}


def method_class(name: str) -> type[Method]:
    """The `Method` subclass of `name` (its module is imported only now); ValueError for an unknown name."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    module, cls_name = METHODS[name]
    return getattr(importlib.import_module(module), cls_name)


def method_params(name: str, inputs: MethodInputs | None) -> dict[str, Any]:
    """Settings of `name` taken from the run (only those that differ per run); none without one."""
    return {} if inputs is None else method_class(name).params_from(inputs)


def make_method(name: str, base_pipe: Any, inputs: MethodInputs | None = None, **params: Any) -> Method:
    """Build method `name` on `base_pipe` (which it may modify in place: pass a pipeline it can own).

    Settings come from `inputs` (`Method.params_from`), then `params`. Raises NotApplicable (with the reason)
    when the method cannot run on this base model, and ValueError for an unknown name.
    """
    cls = method_class(name)
    return cls.build(base_pipe, {**method_params(name, inputs), **params}, inputs)


__all__ = ["METHODS", "GenParams", "Method", "MethodInputs", "NotApplicable", "make_method", "method_class",
           "method_params"]
