"""Unified Concept Editing for debiasing (Gandikota et al., WACV 2024).

R. Gandikota, H. Orgad, Y. Belinkov, J. Materzyńska, D. Bau, "Unified Concept Editing in Diffusion
Models", WACV 2024.

Only the cross-attention key and value projections (attn2.to_k, attn2.to_v) change. For each such
weight W the edit is the closed-form least-squares solution

    W' = (λW + s_e Σ_edit v* cᵀ + s_p Σ_keep (W c) cᵀ) (λI + s_e Σ_edit c cᵀ + s_p Σ_keep c cᵀ)⁻¹

where c runs over the token embeddings of the edited concept texts (from the concept's last token on)
and of the preserved texts (all tokens). The target of a concept is its own output plus a weighted
sum of attribute directions: v* = W c + Σ_a w_a ‖W c‖ u_a, u_a = W c_a / ‖W c_a‖, where c_a is the same
text with the occupation replaced by the attribute ("photo of doctor" -> "photo of female").
The weights w_a are tuned as in the authors' script: generate, classify, w_a = step·(1/K − ratio_a),
edit again, until every ratio is within `max_gap` of 1/K or `iterations` are spent. Here the project's
own demographic classifier measures the ratios (the authors used CLIP zero-shot).
Defaults (authors' debias script): λ = 0.5, s_e = 1, s_p = 0.1, step 0.1, max gap 0.05, templates
"image of / photo of / portrait of / picture of / {concept}", attributes gender (male, female).
Ours: race as a second attribute group, over the races the run's classifier can return (`races`:
DeepFace's six, the toy world's three; a class the classifier never outputs could never reach 1/K),
`iterations` = 10 (authors: up to 30).

Cost: each tuning round generates one set of images per concept still being edited and reads every
attribute group from it (one generation and one classification, not one per group). The preserved
texts' Gram matrix Σ cᵀc, and each edit's, are formed once per edit step, not once per layer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from t2i_debias.baselines.base import GenParams, Method, MethodInputs
from t2i_debias.core.config import GenerateSection, LabelsSection, SotaSection
from t2i_debias.core.text import figure
from t2i_debias.core.vocab import GENDERS, RACES

log = logging.getLogger(__name__)

TEMPLATES: tuple[str, ...] = ("image of {c}", "photo of {c}", "portrait of {c}", "picture of {c}", "{c}")
GENDER_WORDS: tuple[str, ...] = ("male", "female")  # in GENDERS' order
ATTRIBUTES: tuple[str, ...] = ("gender", "race")


def attribute_groups(races: Sequence[str] = RACES) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Attribute group -> (words put in place of the concept, matching classifier labels)."""
    unknown = sorted(set(races) - set(RACES))
    if not races or unknown:
        raise ValueError(f"uce: races must be a non-empty subset of {RACES}; unknown: {unknown}")
    return {"gender": (GENDER_WORDS, GENDERS), "race": (tuple(r.title() for r in races), tuple(races))}

# Concepts kept as they are (UCE preserves other professions); edited concepts are dropped from it.
DEFAULT_PRESERVE: tuple[str, ...] = (
    "attendant", "cashier", "teacher", "nurse", "assistant", "secretary", "cleaner", "receptionist", "clerk",
    "counselor", "designer", "hairdresser", "writer", "housekeeper", "baker", "librarian", "tailor", "driver",
    "supervisor", "janitor", "cook", "laborer", "developer", "carpenter", "manager", "lawyer", "farmer",
    "salesperson", "physician", "guard", "analyst", "mechanic", "sheriff", "doctor", "chef",
)

# ratio_fn(pipe, concept, {group: class labels}) -> {group: fraction of images classified as each label}.
# One call measures every group from the same images.
RatioFn = Callable[[Any, str, dict[str, tuple[str, ...]]], dict[str, np.ndarray]]


def cross_attention_kv(unet: Any) -> dict[str, torch.nn.Linear]:
    """Every cross-attention key/value projection of the U-Net, by parameter-name prefix."""
    out: dict[str, torch.nn.Linear] = {}
    for name, mod in unet.named_modules():
        if name.endswith("attn2") and getattr(mod, "is_cross_attention", True):
            out[f"{name}.to_k"] = mod.to_k
            out[f"{name}.to_v"] = mod.to_v
    if not out:
        raise ValueError("no cross-attention (attn2) layers found in the U-Net")
    return out


@torch.no_grad()
def _encode(pipe: Any, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
    """Last hidden states (n, L, D) and the index of each text's last word token."""
    tok = pipe.tokenizer(list(texts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    emb = pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0].double()
    return emb, [int(m.sum().item()) - 2 for m in tok.attention_mask]


def _aligned(emb: torch.Tensor, idx: list[int]) -> list[torch.Tensor]:
    """Token slices starting at each text's last word token, cut to one common length."""
    length = emb.shape[1] - max(idx)
    return [emb[i, k:k + length] for i, k in enumerate(idx)]


@torch.no_grad()
def uce_edit(pipe: Any, edits: Sequence[tuple[str, list[str], list[float]]], preserve: Sequence[str] = (),
             lamb: float = 0.5, erase_scale: float = 1.0, preserve_scale: float = 0.1,
             with_to_k: bool = True) -> list[str]:
    """Apply one closed-form UCE step in place; `edits` = (concept text, attribute texts, weights).

    Returns the names of the edited Linear modules. Weights other than attn2.to_k/to_v are untouched.
    Uses Σ_keep (W c)ᵀ c = W Σ_keep cᵀc: the Gram matrices of the texts do not depend on the layer.
    """
    layers = {k: v for k, v in cross_attention_kv(pipe.unet).items() if with_to_k or k.endswith("to_v")}
    # Token embeddings of the edits (aligned slices) and of the preserved texts (all tokens).
    edit_ctx: list[tuple[torch.Tensor, torch.Tensor, list[float]]] = []
    gram_edit: torch.Tensor | None = None
    for concept, attrs, weights in edits:
        emb, idx = _encode(pipe, [concept, *attrs])
        sl = _aligned(emb, idx)
        edit_ctx.append((sl[0], torch.stack(sl[1:]) if attrs else sl[0][:0], list(weights)))
        g = sl[0].T @ sl[0]
        gram_edit = g if gram_edit is None else gram_edit + g
    gram_keep = None
    if preserve:
        keep = _encode(pipe, list(preserve))[0]
        flat = keep.reshape(-1, keep.shape[-1])
        gram_keep = flat.T @ flat
    for linear in layers.values():
        w = linear.weight.detach().double()  # solved in float64, stored in the layer's dtype
        dev = w.device
        mat1 = lamb * w.clone()
        mat2 = lamb * torch.eye(w.shape[1], device=dev, dtype=torch.float64)
        for ctx, attr_ctx, weights in edit_ctx:
            c = ctx.to(dev)
            o = c @ w.T
            target = o.clone()
            if weights:
                u = attr_ctx.to(dev) @ w.T  # (n_attr, L, out)
                scale = torch.tensor(weights, device=dev, dtype=torch.float64) * o.norm()
                target += ((scale / u.flatten(1).norm(dim=1))[:, None, None] * u).sum(0)
            mat1 += erase_scale * target.T @ c
        if gram_edit is not None:
            mat2 += erase_scale * gram_edit.to(dev)
        if gram_keep is not None:
            gk = gram_keep.to(dev)
            mat1 += preserve_scale * w @ gk
            mat2 += preserve_scale * gk
        # W' = mat1 mat2⁻¹, with mat2 symmetric positive definite: solve mat2 W'ᵀ = mat1ᵀ.
        linear.weight.copy_(torch.linalg.solve(mat2, mat1.T).T.to(linear.weight.dtype))
    return list(layers)


def concept_texts(concept: str) -> list[str]:
    """UCE's prompt variants of one concept."""
    return [t.format(c=concept) for t in TEMPLATES]


def attribute_texts(text: str, concept: str, words: Sequence[str]) -> list[str]:
    """`text` with the concept replaced by each attribute word."""
    return [text.replace(concept, w) for w in words]


def classifier_ratio_fn(classifier: Any, seeds: Sequence[int], gen: GenParams,
                        template: str = "photo of {c}") -> RatioFn:
    """A RatioFn that generates `len(seeds)` images of a concept once and classifies them once.

    Every requested group is read from the same predictions. Images the classifier skips (no face,
    ambiguous) are left out; with none left the ratios are NaN (no update).
    """
    from t2i_debias.baselines.base import generate_images

    def ratio(pipe: Any, concept: str, groups: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
        images = generate_images(pipe, [template.format(c=concept)] * len(seeds), list(seeds), gen)
        preds = [p for p in classifier.predict(images, [None] * len(images)) if getattr(p, "status", "ok") == "ok"]
        out = {}
        for group, labels in groups.items():
            got = [getattr(p, group) for p in preds]
            out[group] = (np.array([sum(g == lab for g in got) / len(got) for lab in labels]) if got
                          else np.full(len(labels), np.nan))
        return out

    return ratio


def uce_ratio_fn(sota: SotaSection, generate: GenerateSection, labels: LabelsSection, smoke: bool = False,
                 device: str = "cpu") -> RatioFn:
    """UCE's ratio measurement with the run's own classifier ([labels]) and sampling settings."""
    from t2i_debias.labels.registry import make_classifier

    gen = GenParams(batch_size=generate.batch_size, num_inference_steps=sota.uce_steps,
                    guidance_scale=generate.guidance_scale,
                    height=generate.resolution or None, width=generate.resolution or None)
    seeds = [generate.base_seed + 10_000 + i for i in range(sota.uce_samples)]  # not the evaluation seeds
    classifier = make_classifier(labels, device=device, smoke=bool(smoke))
    return classifier_ratio_fn(classifier, seeds, gen)


@dataclass
class UCE(Method):
    """Closed-form cross-attention edit whose attribute weights are tuned until the classes balance."""

    name: str = "uce"
    citation: str = "Gandikota et al., WACV 2024"
    ratio_fn: RatioFn | None = None
    DEFAULTS: ClassVar[dict[str, Any]] = {"lamb": 0.5, "erase_scale": 1.0, "preserve_scale": 0.1, "with_to_k": True,
                                          "attributes": list(ATTRIBUTES), "races": list(RACES), "iterations": 10,
                                          "weight_step": 0.1, "max_gap": 0.05}

    @classmethod
    def params_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        """Race balance over the races the run's classifier can return ([analysis] race_classes, else its own)."""
        from t2i_debias.labels.registry import race_classes

        races = race_classes(inputs.labels.backend, inputs.analysis.race_classes)
        return {"iterations": inputs.sota.uce_iterations, "races": list(races)}

    @classmethod
    def settings_from(cls, inputs: MethodInputs) -> dict[str, Any]:
        """Its edit is tuned with the run's classifier and sampling settings."""
        return {"labels": dataclasses.asdict(inputs.labels),
                "uce": {k: getattr(inputs.sota, k) for k in ("uce_samples", "uce_steps")}}

    @classmethod
    def build(cls, pipe: Any, params: dict[str, Any], inputs: MethodInputs | None = None) -> UCE:
        """`params["ratio_fn"]`, else one measuring with the run's classifier (`inputs`)."""
        params = dict(params)
        ratio_fn = params.pop("ratio_fn", None)
        if ratio_fn is None and inputs is not None:
            ratio_fn = uce_ratio_fn(inputs.sota, inputs.generate, inputs.labels, smoke=inputs.run.smoke,
                                    device=str(pipe.device))
        return cls(pipe=pipe, params=params, ratio_fn=ratio_fn)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.groups = attribute_groups(self.params["races"])
        unknown = set(self.params["attributes"]) - set(self.groups)
        if unknown:
            raise ValueError(f"uce: unknown attributes {sorted(unknown)}; known: {sorted(self.groups)}")
        self.history: list[dict[str, Any]] = []

    def edits_for(self, occupations: Sequence[str], weights: dict[tuple[str, str], np.ndarray]
                  ) -> list[tuple[str, list[str], list[float]]]:
        """(concept text, attribute texts, weights) for every template, occupation and attribute group."""
        out = []
        for occ in occupations:
            for text in concept_texts(occ):
                attrs: list[str] = []
                ws: list[float] = []
                for g in self.params["attributes"]:
                    words = self.groups[g][0]
                    attrs += attribute_texts(text, occ, words)
                    ws += [float(x) for x in weights.get((occ, g), np.zeros(len(words)))]
                out.append((text, attrs, ws))
        return out

    def prepare(self, occupations: Sequence[str]) -> None:
        p = self.params
        if self.ratio_fn is None:
            raise ValueError("uce needs a ratio_fn (a classifier) to tune its attribute weights")
        preserve = [c for c in DEFAULT_PRESERVE if c.lower() not in {o.lower() for o in occupations}]
        todo = list(occupations)
        n_iter = int(p["iterations"])
        for it in range(n_iter):
            weights: dict[tuple[str, str], np.ndarray] = {}
            gaps: dict[str, float] = {}
            groups = {g: self.groups[g][1] for g in p["attributes"]}
            for occ in tqdm(todo, desc=f"uce tuning {it + 1}/{n_iter}", unit="concept", mininterval=1.0):
                measured = self.ratio_fn(self.pipe, occ, groups)  # one generation for every group
                for g in p["attributes"]:
                    r = np.asarray(measured[g], dtype=float)
                    if r.shape != (len(groups[g]),):
                        raise ValueError(f"uce: ratio_fn gave {r.shape[0] if r.ndim else 0} ratios for {g!r} "
                                         f"({occ!r}); expected one per label {groups[g]}")
                    if np.isnan(r).any():
                        log.warning("uce: no face found for %r (%s) in iteration %d; not edited", occ, g, it)
                        continue
                    desired = np.full(len(r), 1.0 / len(r))
                    gaps[f"{occ}|{g}"] = float(np.abs(r - desired).max())
                    if gaps[f"{occ}|{g}"] >= p["max_gap"]:
                        weights[(occ, g)] = p["weight_step"] * (desired - r)
            self.history.append({"iteration": it, "max_gap": gaps})
            worst = max(gaps, key=gaps.__getitem__, default=None)
            log.info("uce: iteration %d/%d: %d of %d concepts off balance; largest gap %s (%s), target < %s",
                     it + 1, n_iter, len({o for o, _ in weights}), len(todo),
                     figure(gaps[worst]) if worst else "n/a", worst or "none measured", figure(p["max_gap"]))
            if not weights:
                break
            todo_now = sorted({o for o, _ in weights})
            # A balanced concept joins the preserved set, as in the authors' script.
            preserve += [c for c in todo if c not in todo_now and c not in preserve]
            uce_edit(self.pipe, self.edits_for(todo_now, weights), preserve, p["lamb"], p["erase_scale"],
                     p["preserve_scale"], p["with_to_k"])
            todo = todo_now
        self.prepared = True

    def info(self) -> dict[str, Any]:
        return {**super().info(), "history": self.history}
