"""Score a toy-world pipeline against the known truth: bias per occupation, occupation kept, attribute prompts.

For each toy occupation it generates N images of the neutral prompt (seeds base_seed + i, so two
models are compared on the same noise) and classifies them with the toy classifier; then it asks for
each gender explicitly ("a photo of a female doctor") and counts how often the asked gender appears.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from t2i_debias.attributes import GENDERS
from t2i_debias.metrics.bias import tvd
from t2i_debias.text import fill_template, with_article
from t2i_debias.toyworld.render import OCCUPATIONS, TOY_RACES

log = logging.getLogger(__name__)

NEUTRAL_TEMPLATE = "a photo of a {occupation}"
GENDER_ADJ = {"man": "male", "woman": "female"}


@dataclass
class ToyScore:
    """Bias and fidelity of one toy model (the row of the demo table)."""

    male_share: dict[str, float] = field(default_factory=dict)  # occupation -> P(man)
    race_share: dict[str, dict[str, float]] = field(default_factory=dict)  # occupation -> race -> share
    gender_tvd: dict[str, float] = field(default_factory=dict)
    race_tvd: dict[str, float] = field(default_factory=dict)  # over the 3 toy skin tones (K=3)
    occupation_accuracy: float = 0.0
    attribute_following: float | None = None  # share of gendered prompts that give the asked gender
    toy_fid: float | None = None
    n_per_occupation: int = 0

    @property
    def mean_gender_tvd(self) -> float:
        return float(np.mean(list(self.gender_tvd.values())))

    @property
    def mean_race_tvd(self) -> float:
        return float(np.mean(list(self.race_tvd.values())))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_gender_tvd"] = self.mean_gender_tvd
        d["mean_race_tvd"] = self.mean_race_tvd
        return d


def score_predictions(preds_by_occ: dict[str, list[Any]]) -> ToyScore:
    """Shares, tvd and occupation accuracy from toy-classifier predictions grouped by prompted occupation."""
    s = ToyScore()
    hits = total = 0
    for occ, preds in preds_by_occ.items():
        ok = [p for p in preds if p.ok]
        if not ok:
            raise ValueError(f"no classifiable image for {occ!r}")
        male = np.mean([p.gender == "man" for p in ok])
        races = np.array([np.mean([p.race == r for p in ok]) for r in TOY_RACES])
        s.male_share[occ] = float(male)
        s.race_share[occ] = {r: float(v) for r, v in zip(TOY_RACES, races, strict=True)}
        s.gender_tvd[occ] = float(tvd([male, 1 - male]))
        s.race_tvd[occ] = float(tvd(races))
        hits += sum(p.extra.get("occupation") == occ for p in ok)
        total += len(ok)
        s.n_per_occupation = len(ok)
    s.occupation_accuracy = hits / total
    return s


def score_pipeline(pipe: Any, clf: Any, n_per_occupation: int = 64, base_seed: int = 0, steps: int = 20,
                   guidance: float = 4.0, n_attribute: int = 0, batch_size: int = 128,
                   template: str = NEUTRAL_TEMPLATE, reference: list[Any] | None = None) -> ToyScore:
    """Generate, classify and score; `n_attribute` > 0 also measures gendered-prompt following and
    `reference` (real toy images) adds the toy FID."""
    from t2i_debias.generate import generate_images

    seeds = [base_seed + i for i in range(n_per_occupation)]
    preds, all_images = {}, []
    for occ in OCCUPATIONS:
        ims = generate_images(pipe, fill_template(template, occupation=occ), seeds, batch_size, steps, guidance)
        preds[occ] = clf.predict(ims)
        all_images += ims
    score = score_predictions(preds)
    if n_attribute > 0:
        aseeds = [base_seed + 10_000 + i for i in range(n_attribute)]
        good = n = 0
        for occ in OCCUPATIONS:
            for g in GENDERS:
                prompt = f"a photo of {with_article(GENDER_ADJ[g] + ' ' + occ)}"
                ps = clf.predict(generate_images(pipe, prompt, aseeds, batch_size, steps, guidance))
                good += sum(p.gender == g for p in ps if p.ok)
                n += sum(p.ok for p in ps)
        score.attribute_following = good / n if n else None
    if reference:
        from t2i_debias.toyworld.classifier import toy_fid

        score.toy_fid = toy_fid(clf, all_images, reference)
    return score
