"""The `clip` labels backend: zero-shot perceived gender / race / age group with CLIP prompts.

As UCE and ITI-GEN evaluate: each attribute's class is the label prompt ("a photo of a woman", ...)
whose text embedding is most similar to the image embedding; the confidence is the softmax over
that attribute's prompts at CLIP's own logit scale. The model is a transformers id or folder,
`open_clip:ARCH/PRETRAINED`, or `tiny:clip` (the random tiny model of t2i_debias.tiny, for tests).
There is no face detector: the input is the head-box crop with margin (or the whole image), every
readable input is `ok`, `age` stays empty (only the age group is predicted).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from t2i_debias.core.text import fill_template
from t2i_debias.core.vocab import AGE_GROUPS, GENDERS, MEASURABLE, RACES, STATUS_OK
from t2i_debias.labels.base import Prediction
from t2i_debias.labels.crops import Crop, CropClassifier

# The phrase put into the template for each class (readable English, not the CSV vocabulary).
PHRASES: dict[str, dict[str, str]] = {
    "gender": {"man": "man", "woman": "woman"},
    "race": {"asian": "Asian person", "indian": "Indian person", "black": "Black person",
             "white": "White person", "middle eastern": "Middle Eastern person",
             "latino hispanic": "Latino Hispanic person"},
    "age_group": {"child": "child", "young": "young adult", "middle-aged": "middle-aged person",
                  "senior": "elderly person"},
}
CLASSES: dict[str, tuple[str, ...]] = {"gender": GENDERS, "race": RACES, "age_group": AGE_GROUPS}


def label_prompts(template: str = "a photo of a {label}") -> dict[str, list[str]]:
    """The prompt of every class of every attribute, articles fixed ("a photo of an Asian person")."""
    return {attr: [fill_template(template, label=PHRASES[attr][c]) for c in classes]
            for attr, classes in CLASSES.items()}


class _HFClip:
    """transformers CLIPModel + CLIPProcessor."""

    def __init__(self, path: str, device: str) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.device = device

    @staticmethod
    def _pooled(out: Any) -> Any:
        return out if hasattr(out, "norm") else out.pooler_output  # transformers 5 returns a ModelOutput

    def text(self, prompts: list[str]) -> Any:
        inp = self.processor(text=prompts, padding=True, return_tensors="pt").to(self.device)
        return self._pooled(self.model.get_text_features(input_ids=inp["input_ids"],
                                                         attention_mask=inp["attention_mask"]))

    def image(self, images: list[Image.Image]) -> Any:
        inp = self.processor(images=images, return_tensors="pt").to(self.device)
        return self._pooled(self.model.get_image_features(pixel_values=inp["pixel_values"]))

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


class _OpenClip:
    """open_clip model, transform and tokenizer (`open_clip:ARCH/PRETRAINED`)."""

    def __init__(self, spec: str, device: str) -> None:
        import open_clip

        arch, _, pretrained = spec.partition("/")
        self.model, _, self.transform = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None,
                                                                              device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.device = device

    def text(self, prompts: list[str]) -> Any:
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))

    def image(self, images: list[Image.Image]) -> Any:
        import torch

        return self.model.encode_image(torch.stack([self.transform(im) for im in images]).to(self.device))

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def resolve_clip(spec: str) -> tuple[str, str]:
    """(kind, location) of a CLIP spec: ("open_clip", "ARCH/PRETRAINED") or ("hf", id-or-folder)."""
    if spec.startswith("open_clip:"):
        return "open_clip", spec.split(":", 1)[1]
    if spec == "tiny:clip":
        from t2i_debias.tiny.clip import tiny_clip_dir

        return "hf", str(tiny_clip_dir())
    return "hf", spec


class ClipClassifier(CropClassifier):
    """Zero-shot CLIP labels; see the module docstring."""

    name = "clip"

    def __init__(self, model: str = "openai/clip-vit-large-patch14", template: str = "a photo of a {label}",
                 margin: float = 1.0, batch_size: int = 32, device: str = "cpu") -> None:
        import torch

        self.spec = model
        self.template = template
        self.margin = margin
        self.batch_size = max(1, int(batch_size))
        kind, loc = resolve_clip(model)
        self.clip = _OpenClip(loc, device) if kind == "open_clip" else _HFClip(loc, device)
        self.prompts = label_prompts(template)
        with torch.no_grad():
            self.text_feats = {a: torch.nn.functional.normalize(self.clip.text(p).float(), dim=-1)
                               for a, p in self.prompts.items()}
        self.scale = self.clip.logit_scale()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.spec, "template": self.template, "margin": self.margin}

    def probabilities(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        """Softmax over each attribute's prompts, (N, K) per attribute."""
        import torch

        out: dict[str, list[np.ndarray]] = {a: [] for a in CLASSES}
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                feats = torch.nn.functional.normalize(self.clip.image(images[i:i + self.batch_size]).float(), dim=-1)
                for a, txt in self.text_feats.items():
                    out[a].append(torch.softmax(self.scale * feats @ txt.T, dim=-1).cpu().numpy())
        return {a: np.concatenate(v) if v else np.zeros((0, len(CLASSES[a]))) for a, v in out.items()}

    def predict_crops(self, crops: list[Crop]) -> list[Prediction]:
        """Labels for ready-made crops."""
        probs = self.probabilities([c.image for c in crops])
        preds = []
        for j, c in enumerate(crops):
            p = {a: probs[a][j] for a in CLASSES}
            g, r, ag = (int(p[a].argmax()) for a in MEASURABLE)
            box = c.to_image_box((0.0, 0.0, float(c.image.width), float(c.image.height)))
            preds.append(Prediction(status=STATUS_OK, gender=GENDERS[g], gender_conf=float(p["gender"][g]),
                                    race=RACES[r], race_conf=float(p["race"][r]), age=None,
                                    age_group=AGE_GROUPS[ag], face_box=box, n_faces=None,
                                    extra={"age_group_conf": float(p["age_group"][ag])}))
        return preds
