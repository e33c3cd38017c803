"""Calibrated projection of prompt embeddings (Chuang et al., 2023).

C.-Y. Chuang, V. Jampani, Y. Li, A. Torralba, S. Jegelka, "Debiasing Vision-Language Models via Biased
Prompts", arXiv:2302.00070 (2023).

1. Spurious directions V: normalised EOS embeddings of attribute prompts ("A photo of a male.", ...).
   P0 = I − U Uᵀ, with U an orthonormal basis of span(V), projects them out (P0² = P0).
2. Calibration on positive pairs S (the same occupation with two different attributes):
   M = mean_{(i,j)∈S} (z_i − z_j)(z_i − z_j)ᵀ,  P = P0 (I + λ M)⁻¹   (the paper's closed form; λ = 500).
3. Every token of the conditional prompt embedding (the text encoder output the U-Net attends to) is
   mapped by P: E ← E Pᵀ; the unconditional embedding is left as it is, like the public implementation.

The output of P lies in the range of P0, so the spurious directions are absent from the debiased
embedding (Vᵀ P = 0). P itself is idempotent only for λ = 0. The public generative script applies
(I + λ M)⁻¹ alone; `use_projection=False` reproduces that.
Defaults: λ = 500, attributes gender and race, pair prompts "A photo of a {attribute} {occupation}.".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import StableDiffusionPipeline

from t2i_debias.baselines.base import GenParams, Method, MethodInputs, generate_images
from t2i_debias.core.text import with_article
from t2i_debias.core.vocab import RACES

# Attribute words per attribute; a pair prompt names the occupation with each of them.
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "race": tuple(r.title() for r in RACES),
}
# Extra spurious prompts per attribute (besides "A photo of a {word} person.").
EXTRA_SPURIOUS: dict[str, tuple[str, ...]] = {
    "gender": ("A photo of a male.", "A photo of a female.", "A photo of a man.", "A photo of a woman."),
}


def spurious_prompts(attributes: Sequence[str]) -> list[str]:
    """Prompts whose embeddings span the directions to remove."""
    out: list[str] = []
    for a in attributes:
        out += list(EXTRA_SPURIOUS.get(a, ()))
        out += [f"A photo of {with_article(w)} person." for w in ATTRIBUTE_WORDS[a]]
    return out


def pair_prompts(occupations: Sequence[str], attributes: Sequence[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Positive-pair prompts (same occupation, two attribute values) and their index pairs S."""
    prompts: list[str] = []
    pairs: list[tuple[int, int]] = []
    for occ in occupations:
        for a in attributes:
            start = len(prompts)
            prompts += [f"A photo of {with_article(f'{w} {occ}')}." for w in ATTRIBUTE_WORDS[a]]
            n = len(ATTRIBUTE_WORDS[a])
            pairs += [(start + i, start + j) for i, j in itertools.combinations(range(n), 2)]
    return prompts, pairs


@torch.no_grad()
def eos_embeddings(pipe: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Normalised last-layer embedding at the EOS token (the highest token id in CLIP's vocabulary)."""
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    ids = tok.input_ids.to(pipe.text_encoder.device)
    hidden = pipe.text_encoder(ids)[0].float()
    eos = hidden[torch.arange(hidden.shape[0]), ids.argmax(-1)]
    return torch.nn.functional.normalize(eos, dim=-1).cpu().double()


def projection_out(directions: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """P0 = I − U Uᵀ for U an orthonormal basis of the row space of `directions` (n, D)."""
    _, s, vh = torch.linalg.svd(directions.double(), full_matrices=False)
    basis = vh[s > rtol * s.max()]
    return torch.eye(directions.shape[1], dtype=torch.float64) - basis.T @ basis


def calibration(embeddings: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """M = mean over pairs of (z_i − z_j)(z_i − z_j)ᵀ."""
    idx = torch.tensor(list(pairs), dtype=torch.long)
    diff = embeddings[idx[:, 0]] - embeddings[idx[:, 1]]
    return diff.T @ diff / len(pairs)


def debias_matrix(spurious: torch.Tensor, candidates: torch.Tensor, pairs: Sequence[tuple[int, int]],
                  lam: float = 500.0, use_projection: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, P0): the calibrated projection P = P0 (I + λM)⁻¹ and the plain projection P0."""
    p0 = projection_out(spurious)
    g = lam * calibration(candidates, pairs) + torch.eye(p0.shape[0], dtype=torch.float64)
    g_inv = torch.linalg.inv(g)
    return (p0 @ g_inv if use_projection else g_inv), p0


class DebiasVLPipeline(StableDiffusionPipeline):
    """StableDiffusionPipeline whose conditional prompt embeddings are mapped by `debias_P` (E ← E Pᵀ)."""

    debias_P: torch.Tensor | None = None

    def encode_prompt(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        prompt_embeds, negative = super().encode_prompt(*args, **kwargs)
        if self.debias_P is not None:
            p = self.debias_P.to(device=prompt_embeds.device, dtype=torch.float32)
            prompt_embeds = (prompt_embeds.float() @ p.T).to(prompt_embeds.dtype)
        return prompt_embeds, negative


@dataclass
class DebiasVL(Method):
    """Projects the attribute directions out of the prompt embeddings, calibrated on occupation pairs."""

    name: str = "debiasvl"
    citation: str = "Chuang et al., arXiv:2302.00070 (2023)"
    DEFAULTS: ClassVar[dict[str, Any]] = {"lam": 500.0, "attributes": ["gender", "race"], "use_projection": True}

    @classmethod
    def params_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        return {"lam": inputs.sota.debiasvl_lambda}

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.params["attributes"]) - set(ATTRIBUTE_WORDS)
        if unknown:
            raise ValueError(f"debiasvl: unknown attributes {sorted(unknown)}; known: {sorted(ATTRIBUTE_WORDS)}")
        self.debias_pipe = DebiasVLPipeline(**self.pipe.components, requires_safety_checker=False)
        self.debias_pipe.set_progress_bar_config(disable=True)
        self.P: torch.Tensor | None = None
        self.P0: torch.Tensor | None = None
        self.spurious: torch.Tensor | None = None

    def prepare(self, occupations: Sequence[str]) -> None:
        attrs = self.params["attributes"]
        self.spurious = eos_embeddings(self.pipe, spurious_prompts(attrs))
        prompts, pairs = pair_prompts(occupations, attrs)
        cands = eos_embeddings(self.pipe, prompts)
        self.P, self.P0 = debias_matrix(self.spurious, cands, pairs, float(self.params["lam"]),
                                        bool(self.params["use_projection"]))
        self.debias_pipe.debias_P = self.P
        self.prepared = True

    def _generate(self, prompts: list[str], occupations: list[str], seeds: list[int],
                  gen: GenParams) -> list[Any]:
        return generate_images(self.debias_pipe, prompts, seeds, gen)
