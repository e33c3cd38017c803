"""Deterministic, offline caption composer for the triplets (replaces the reference's hosted LLM).

Three kinds of caption per triplet member:
- anchor (neutral):   "a photo of a chef"
- attribute:          "a photo of an Asian woman working as a chef"
- generation prompt:  "a photo of the face of an Indian man working as a plumber, looking at the
                       camera, clearly visible face" (asks the generator for a face the classifier can read)

Articles follow the sound of the next word (t2i_debias.core.text.fill_template: "an engineer",
"a university professor", "an elderly Black man").

Style guide: racial and ethnic group names follow the APA Publication Manual (7th ed., §5.7):
they are proper nouns and capitalised, *including* "Black" and "White" (AP capitalises Black but
not white; we follow APA so that all six groups are treated alike). DeepFace's "latino hispanic"
is rendered "Hispanic", a term APA lists and which, unlike Latino/Latina, does not change with
gender. Any rendering can be overridden with `[augment] race_words`.
Age words (used when `age_in_captions` or `change_age`): child -> boy/girl, young -> "young",
middle-aged -> "middle-aged", senior -> "elderly", placed before the race ("a young Asian woman").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from t2i_debias.augment.counterfactual import Demographics
from t2i_debias.core.text import fill_template
from t2i_debias.core.vocab import RACES

RACE_WORDS: dict[str, str] = {
    "asian": "Asian",
    "indian": "Indian",
    "black": "Black",
    "white": "White",
    "middle eastern": "Middle Eastern",
    "latino hispanic": "Hispanic",
}
AGE_ADJECTIVES: dict[str, str] = {"young": "young", "middle-aged": "middle-aged", "senior": "elderly"}
CHILD_NOUNS: dict[str, str] = {"man": "boy", "woman": "girl"}


def person_phrase(demo: Demographics, with_age: bool = False,
                  race_words: Mapping[str, str] | None = None) -> str:
    """'Asian woman', 'Middle Eastern man', or with age 'elderly Indian woman' / 'Black boy'."""
    words = {**RACE_WORDS, **(race_words or {})}
    noun = demo.gender
    parts = [words[demo.race]]
    if with_age and demo.age_group is not None:
        if demo.age_group == "child":
            noun = CHILD_NOUNS[demo.gender]
        else:
            parts.insert(0, AGE_ADJECTIVES[demo.age_group])
    return " ".join([*parts, noun])


def _check_template(template: str, needs: tuple[str, ...], what: str) -> None:
    for name in needs:
        if "{" + name + "}" not in template:
            raise ValueError(f"{what} {template!r} must contain {{{name}}}")


@dataclass
class CaptionComposer:
    """Fills the three caption templates; `from_config(cfg.augment)` builds it from a run config."""

    anchor_template: str = "a photo of a {occupation}"
    attribute_template: str = "a photo of a {person} working as a {occupation}"
    generation_template: str = (
        "a photo of the face of a {person} working as a {occupation}, looking at the camera, clearly visible face"
    )
    race_words: dict[str, str] = field(default_factory=dict)
    with_age: bool = False

    def __post_init__(self) -> None:
        _check_template(self.anchor_template, ("occupation",), "anchor_template")
        _check_template(self.attribute_template, ("person", "occupation"), "attribute_template")
        _check_template(self.generation_template, ("person", "occupation"), "generation_template")
        unknown = set(self.race_words) - set(RACES)
        if unknown:
            raise ValueError(f"race_words has unknown races {sorted(unknown)}; known: {RACES}")

    @classmethod
    def from_config(cls, section: Any) -> CaptionComposer:
        """From an `[augment]` section: age words are on when asked for or when age is changed."""
        return cls(section.anchor_template, section.attribute_template, section.generation_template,
                   dict(section.race_words), bool(section.age_in_captions or section.change_age))

    def person(self, demo: Demographics) -> str:
        return person_phrase(demo, self.with_age, self.race_words)

    def anchor(self, occupation: str) -> str:
        """Neutral caption: no demographic words."""
        return fill_template(self.anchor_template, occupation=_occ(occupation))

    def attribute(self, occupation: str, demo: Demographics) -> str:
        """Caption naming the demographics (the training caption of positives and negatives)."""
        return fill_template(self.attribute_template, occupation=_occ(occupation), person=self.person(demo))

    def generation(self, occupation: str, demo: Demographics) -> str:
        """Prompt given to the generator: the demographics plus a clearly visible face."""
        return fill_template(self.generation_template, occupation=_occ(occupation), person=self.person(demo))


def _occ(occupation: str) -> str:
    occ = " ".join(occupation.split())
    if not occ:
        raise ValueError("empty occupation")
    return occ
