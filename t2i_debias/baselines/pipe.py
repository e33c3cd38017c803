"""A baseline as a pipeline: what the shared folder generator needs to sample a `Method` like any model."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pandas as pd

from t2i_debias.baselines.base import GenParams, MethodInputs
from t2i_debias.baselines.registry import make_method


class MethodPipe:
    """Makes a Method look like a diffusers pipeline to the shared folder generator.

    The generator calls `pipe(prompt=[...], generator=[...], ...)` with one CPU generator per image,
    seeded with that image's seed; the seed is read back (`initial_seed`) so the method sees it.
    """

    def __init__(self, method: Any, occupation_of: dict[str, str]) -> None:
        self.method = method
        self.occupation_of = occupation_of

    @property
    def scheduler(self) -> Any:
        """The sampler of the method's pipeline (recorded with its images)."""
        return getattr(getattr(self.method, "pipe", None), "scheduler", None)

    def __call__(self, prompt: Sequence[str], generator: Sequence[Any], num_inference_steps: int,
                 guidance_scale: float, height: int | None = None, width: int | None = None,
                 output_type: str = "pil", **kw: Any) -> Any:
        if kw:
            raise TypeError(f"unsupported pipeline arguments for a baseline: {sorted(kw)}")
        seeds = [int(g.initial_seed()) for g in generator]
        occs = [self.occupation_of[p] for p in prompt]
        gen = GenParams(batch_size=len(prompt), num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, height=height, width=width)
        return SimpleNamespace(images=self.method.generate(list(prompt), occs, seeds, gen))


def load_base(base: str, inputs: MethodInputs) -> Any:
    """A fresh copy of the base pipeline `base` (methods may change it in place), on [run] device in
    [generate] dtype."""
    from t2i_debias.models import load_model, resolve_device, resolve_dtype

    device = resolve_device(inputs.run.device)
    return load_model(base, base, device=device, dtype=resolve_dtype(inputs.generate.dtype, device))


def build_method(inputs: MethodInputs, base: str, name: str, prompts: pd.DataFrame) -> MethodPipe:
    """Load the base `base`, build method `name` on it, and prepare it for the run's occupations."""
    method = make_method(name, load_base(base, inputs), inputs)
    method.prepare(sorted(set(prompts["occupation"])))
    return MethodPipe(method, dict(zip(prompts["prompt"], prompts["occupation"], strict=True)))
