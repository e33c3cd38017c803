"""Known answers of the caption composer: articles, APA capitalisation, age words, templates."""

from __future__ import annotations

import pytest

from t2i_debias.augment.captions import CaptionComposer, person_phrase
from t2i_debias.augment.counterfactual import Demographics as D
from t2i_debias.core.config import AugmentSection

C = CaptionComposer()
CA = CaptionComposer(with_age=True)


@pytest.mark.parametrize("occupation, want", [
    ("engineer", "a photo of an engineer"),
    ("university professor", "a photo of a university professor"),
    ("chef", "a photo of a chef"),
    ("electrician", "a photo of an electrician"),
    ("  fire   fighter ", "a photo of a fire fighter"),
])
def test_anchor_caption(occupation: str, want: str) -> None:
    assert C.anchor(occupation) == want


@pytest.mark.parametrize("occupation, demo, want", [
    ("chef", D("woman", "asian"), "a photo of an Asian woman working as a chef"),
    ("engineer", D("woman", "indian"), "a photo of an Indian woman working as an engineer"),
    ("engineer", D("man", "asian"), "a photo of an Asian man working as an engineer"),
    ("engineer", D("man", "middle eastern"), "a photo of a Middle Eastern man working as an engineer"),
    ("university professor", D("woman", "black"), "a photo of a Black woman working as a university professor"),
    ("orchestra conductor", D("man", "white"), "a photo of a White man working as an orchestra conductor"),
    ("umpire", D("woman", "latino hispanic"), "a photo of a Hispanic woman working as an umpire"),
])
def test_attribute_caption(occupation: str, demo: D, want: str) -> None:
    assert C.attribute(occupation, demo) == want


def test_generation_caption_asks_for_a_face() -> None:
    assert C.generation("plumber", D("man", "indian")) == (
        "a photo of the face of an Indian man working as a plumber, looking at the camera, clearly visible face")


@pytest.mark.parametrize("demo, want", [
    (D("woman", "indian", "senior"), "an elderly Indian woman"),
    (D("man", "asian", "young"), "a young Asian man"),
    (D("man", "white", "middle-aged"), "a middle-aged White man"),
    (D("woman", "black", "child"), "a Black girl"),
    (D("man", "middle eastern", "child"), "a Middle Eastern boy"),
    (D("woman", "latino hispanic", None), "a Hispanic woman"),
])
def test_age_words_and_articles(demo: D, want: str) -> None:
    assert CA.attribute("engineer", demo) == f"a photo of {want} working as an engineer"


def test_age_words_only_when_asked() -> None:
    assert person_phrase(D("woman", "indian", "senior")) == "Indian woman"
    sec = AugmentSection()
    assert not CaptionComposer.from_config(sec).with_age
    sec.change_age = True  # a changed age must be visible in the caption
    assert CaptionComposer.from_config(sec).attribute("chef", D("man", "asian", "senior")) == (
        "a photo of an elderly Asian man working as a chef")


def test_custom_templates_and_race_words() -> None:
    c = CaptionComposer(anchor_template="A portrait of a {occupation}",
                        attribute_template="A {person}, a {occupation}",
                        race_words={"latino hispanic": "Latino", "asian": "East Asian"})
    assert c.anchor("actor") == "A portrait of an actor"
    assert c.attribute("actor", D("man", "latino hispanic")) == "A Latino man, an actor"
    assert c.attribute("usher", D("woman", "asian")) == "An East Asian woman, an usher"


@pytest.mark.parametrize("kwargs, msg", [
    ({"attribute_template": "a photo of a {occupation}"}, "{person}"),
    ({"generation_template": "a {person}"}, "{occupation}"),
    ({"anchor_template": "a photo"}, "{occupation}"),
    ({"race_words": {"martian": "Martian"}}, "unknown races"),
])
def test_bad_templates_rejected(kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg.replace("{", r"\{").replace("}", r"\}")):
        CaptionComposer(**kwargs)


def test_empty_occupation_rejected() -> None:
    with pytest.raises(ValueError, match="empty occupation"):
        C.anchor("   ")
