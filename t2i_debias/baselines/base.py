"""The common interface of the SOTA baselines: one `Method` per debiasing approach, all on one base model.

A method owns the base pipeline it is given (UCE and Shen et al. change its weights in place), turns
(prompt, occupation, seed) triplets into images, and states its paper and defaults so the comparison
table and the manifests can record exactly what ran.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from t2i_debias.core.config import AnalysisSection, GenerateSection, LabelsSection, RunSection, SotaSection

log = logging.getLogger(__name__)


class NotApplicable(RuntimeError):
    """The method cannot run on this base model / configuration; the message is the recorded reason."""


@dataclass(frozen=True)
class MethodInputs:
    """What a baseline reads from the run's config: its [sota] options, the run's seed and device, the
    sampling settings and the classifier ([labels], [analysis]). One bundle, so every method has the same
    signature whichever of these it reads."""

    sota: SotaSection
    run: RunSection
    generate: GenerateSection
    labels: LabelsSection
    analysis: AnalysisSection


@dataclass
class GenParams:
    """Sampling settings shared by every method, so all of them meet the same noise and steps."""

    batch_size: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None


def generate_images(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], gen: GenParams,
                    **kw: Any) -> list[Any]:
    """Batched generation where image i starts from `torch.Generator().manual_seed(seeds[i])`.

    Goes through the evaluation stage's `t2i_debias.sampling.generate_images` so baselines and the
    evaluated models share one sampler; a private equivalent is used only while that module is absent.
    """
    try:
        from t2i_debias.sampling import generate_images as shared
    except ImportError:  # the evaluation issue's module is not there yet
        shared = _generate_images_fallback
    return shared(pipe, list(prompts), list(seeds), batch_size=gen.batch_size,
                  num_inference_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
                  height=gen.height, width=gen.width, **kw)


def _generate_images_fallback(pipe: Any, prompts: list[str], seeds: list[int], batch_size: int,
                              num_inference_steps: int, guidance_scale: float, height: int | None = None,
                              width: int | None = None, **kw: Any) -> list[Any]:
    """Same contract as t2i_debias.sampling.generate_images (per-image CPU generators, batched calls)."""
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    out: list[Any] = []
    for start in range(0, len(prompts), max(1, batch_size)):
        p = prompts[start:start + batch_size]
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start:start + batch_size]]
        with torch.no_grad():
            res = pipe(prompt=p, generator=gens, num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, height=height, width=width, output_type="pil", **kw)
        out.extend(res.images)
    return out


@dataclass
class Method:
    """A debiasing method applied to one base pipeline.

    Subclasses set `name`/`citation` and `DEFAULTS`, keep their settings in `params` (recorded in manifests
    and the table), say which settings come from the run (`params_from`, given its `MethodInputs`) and
    whether they can run on its base (`applicable`), and override `prepare` (one-off work that needs the
    occupations, e.g. a weight edit) and/or `_generate`. The SOTA stage asks these and branches on no method name.
    """

    pipe: Any
    params: dict[str, Any] = field(default_factory=dict)
    name: str = "base"
    citation: str = "the unmodified base model"
    prepared: bool = False
    DEFAULTS: ClassVar[dict[str, Any]] = {}  # the paper's settings; `params` given override them

    def __post_init__(self) -> None:
        self.params = {**copy.deepcopy(self.DEFAULTS), **self.params}  # no list shared between methods

    @classmethod
    def params_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        """Settings taken from the run ([sota], and what the method reads beside it); none here."""
        return {}

    @classmethod
    def settings_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        """What else determines the method's images (recorded in its generation manifest); nothing here."""
        return {}

    @classmethod
    def applicable(cls, inputs: MethodInputs, load_base: Callable[[], Any]) -> str | None:
        """None when the method can run on this run's base (`load_base()` gives a fresh copy), else why not."""
        return None

    @classmethod
    def build(cls, pipe: Any, params: dict[str, Any], inputs: MethodInputs | None = None) -> Method:
        """The method on `pipe` with `params` (DEFAULTS fill the rest); `inputs` for what a method builds from
        the run (UCE's classifier)."""
        return cls(pipe=pipe, params=params)

    def prepare(self, occupations: Sequence[str]) -> None:
        """One-off set-up for the evaluation occupations (no-op unless the method needs it)."""
        self.prepared = True

    def generate(self, prompts: Sequence[str], occupations: Sequence[str], seeds: Sequence[int],
                 gen: GenParams | None = None) -> list[Any]:
        """One image per (prompt, occupation, seed); image i uses seed `seeds[i]`."""
        if not (len(prompts) == len(occupations) == len(seeds)):
            raise ValueError(f"prompts ({len(prompts)}), occupations ({len(occupations)}) and seeds "
                             f"({len(seeds)}) must have the same length")
        if not self.prepared:
            self.prepare(sorted(set(occupations)))
        return self._generate(list(prompts), list(occupations), [int(s) for s in seeds], gen or GenParams())

    def _generate(self, prompts: list[str], occupations: list[str], seeds: list[int],
                  gen: GenParams) -> list[Any]:
        return generate_images(self.pipe, prompts, seeds, gen)

    def info(self) -> dict[str, Any]:
        """What ran: method name, paper and settings."""
        return {"method": self.name, "citation": self.citation, "params": dict(self.params)}
