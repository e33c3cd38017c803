"""Fair Diffusion: SEGA semantic guidance towards a randomly chosen gender (Friedrich et al., 2023).

F. Friedrich, M. Brack, L. Struppek, D. Hintersdorf, P. Schramowski, S. Luccioni, K. Kersting,
"Fair Diffusion: Instructing Text-to-Image Generation Models on Fairness", arXiv:2302.10893 (2023).
Guidance: M. Brack et al., "SEGA: Instructing Text-to-Image Models using Semantic Guidance", NeurIPS 2023.

For each image a fair coin, seeded by (method seed, image seed, prompt), picks the target gender; SEGA
then guides towards "<target> person" and away from "<other> person". The base model's own components
run inside diffusers' SemanticStableDiffusionPipeline, so the initial noise equals the base model's.
Defaults are those of the authors' generation script: edit guidance 4, threshold 0.95, momentum scale
0.5, momentum β 0.6, warm-up 5 of 50 steps (kept as that fraction, 0.1, of the steps actually run).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from t2i_debias.baselines.base import GenParams, Method, MethodInputs, generate_images

# Target -> (editing prompts, reverse flags): guide towards the first concept, away from the second.
CONCEPTS: dict[str, str] = {"man": "male person", "woman": "female person"}


def edit_for(target: str) -> tuple[list[str], list[bool]]:
    """SEGA editing prompts and directions that push towards `target` ("man" | "woman")."""
    other = "woman" if target == "man" else "man"
    return [CONCEPTS[target], CONCEPTS[other]], [False, True]


def choose_target(seed: int, prompt: str, method_seed: int = 0) -> str:
    """The gender one image is guided towards: a fair coin seeded by the image seed and its prompt."""
    rng = np.random.default_rng([int(method_seed), int(seed), zlib.crc32(prompt.encode())])
    return ("man", "woman")[int(rng.integers(2))]


def semantic_pipeline(pipe: Any) -> Any:
    """diffusers' SemanticStableDiffusionPipeline assembled from `pipe`'s own modules (no copy)."""
    from diffusers.pipelines.deprecated.semantic_stable_diffusion import SemanticStableDiffusionPipeline

    c = pipe.components
    sega = SemanticStableDiffusionPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
        scheduler=c["scheduler"], safety_checker=None, feature_extractor=c.get("feature_extractor"),
        requires_safety_checker=False,
    )
    sega.set_progress_bar_config(disable=True)
    return sega


@dataclass
class FairDiffusion(Method):
    """Per-image SEGA guidance towards a seeded random gender."""

    name: str = "fair_diffusion"
    citation: str = "Friedrich et al., arXiv:2302.10893 (2023)"
    DEFAULTS: ClassVar[dict[str, Any]] = {"edit_guidance_scale": 4.0, "edit_threshold": 0.95,
                                          "edit_momentum_scale": 0.5, "edit_mom_beta": 0.6,
                                          "edit_warmup_fraction": 0.1, "seed": 0}

    @classmethod
    def params_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        return {"edit_guidance_scale": inputs.sota.fair_diffusion_edit_guidance, "seed": inputs.run.seed}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sega = semantic_pipeline(self.pipe)

    def targets(self, prompts: list[str], seeds: list[int]) -> list[str]:
        """The target gender of each image."""
        return [choose_target(s, p, int(self.params["seed"])) for p, s in zip(prompts, seeds, strict=True)]

    def edit_kwargs(self, target: str, num_inference_steps: int) -> dict[str, Any]:
        """SemanticStableDiffusionPipeline arguments that guide towards `target`."""
        prompts, reverse = edit_for(target)
        warmup = int(round(float(self.params["edit_warmup_fraction"]) * num_inference_steps))
        p = self.params
        return {"editing_prompt": prompts, "reverse_editing_direction": reverse,
                "edit_warmup_steps": [warmup] * 2, "edit_guidance_scale": [p["edit_guidance_scale"]] * 2,
                "edit_threshold": [p["edit_threshold"]] * 2, "edit_momentum_scale": p["edit_momentum_scale"],
                "edit_mom_beta": p["edit_mom_beta"], "edit_weights": [1.0, 1.0]}

    def _generate(self, prompts: list[str], occupations: list[str], seeds: list[int],
                  gen: GenParams) -> list[Any]:
        # SEGA applies one set of editing prompts to a whole call: batch the images per target.
        targets = self.targets(prompts, seeds)
        out: list[Any] = [None] * len(prompts)
        for target in ("man", "woman"):
            idx = [i for i, t in enumerate(targets) if t == target]
            if not idx:
                continue
            imgs = generate_images(self.sega, [prompts[i] for i in idx], [seeds[i] for i in idx], gen,
                                   **self.edit_kwargs(target, gen.num_inference_steps))
            for i, im in zip(idx, imgs, strict=True):
                out[i] = im
        return out
