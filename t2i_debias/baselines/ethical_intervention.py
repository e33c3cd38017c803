"""Ethical natural-language intervention (Bansal et al., EMNLP 2022).

H. Bansal, D. Yin, M. Monajatipoor, K.-W. Chang, "How well can Text-to-Image Generative Models
understand Ethical Natural Language Interventions?", EMNLP 2022.

The prompt is left as it is and a suffix is appended that states the occupation is open to everyone.
Default suffix (DESIGN.md §5): "if all individuals can be a {occupation} irrespective of their gender
and race", with the article fixed to the occupation ("an engineer").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from t2i_debias.baselines.base import GenParams, Method, generate_images
from t2i_debias.core.text import fill_template

DEFAULT_SUFFIX = "if all individuals can be a {occupation} irrespective of their gender and race"


def intervene(prompt: str, occupation: str, suffix: str = DEFAULT_SUFFIX) -> str:
    """`prompt` followed by the intervention for `occupation` (trailing full stop moved to the end)."""
    base = prompt.rstrip()
    end = ""
    if base.endswith("."):
        base, end = base[:-1], "."
    return f"{base} {fill_template(suffix, occupation=occupation)}{end}"


@dataclass
class EthicalIntervention(Method):
    """Appends the ethical intervention suffix to every prompt; the model itself is untouched."""

    name: str = "ethical_intervention"
    citation: str = "Bansal et al., EMNLP 2022"
    DEFAULTS: ClassVar[dict[str, Any]] = {"suffix": DEFAULT_SUFFIX}

    def prompts_for(self, prompts: list[str], occupations: list[str]) -> list[str]:
        """The prompts actually sent to the model."""
        return [intervene(p, o, self.params["suffix"]) for p, o in zip(prompts, occupations, strict=True)]

    def _generate(self, prompts: list[str], occupations: list[str], seeds: list[int],
                  gen: GenParams) -> list[Any]:
        return generate_images(self.pipe, self.prompts_for(prompts, occupations), seeds, gen)
