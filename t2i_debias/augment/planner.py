"""The plan of each triplet: the anchor crop rule, the counterfactual, its captions and the triplet seed.

`triplet_seed` derives a triplet's seed from `run.seed` and the person id only, so a plan is stable
under reordering, `max_triplets` and resumption (DESIGN.md §1.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from PIL import Image

from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.counterfactual import CounterfactualChooser, Demographics
from t2i_debias.augment.inputs import Person
from t2i_debias.augment.schema import GENERATED, TripletRecord
from t2i_debias.core.files import hash_obj
from t2i_debias.core.options import NEGATIVE_PROMPT_MODES
from t2i_debias.core.vocab import other_gender

MPII_SCALE_PX = 200.0  # MPII `scale` is the person height divided by 200 px


# ----------------------------------------------------------------------------- anchor crop
def anchor_crop_box(width: int, height: int, head_box: tuple[float, float, float, float] | None,
                    scale: float | None, objpos: tuple[float, float] | None,
                    crop_scale: float = 1.0, crop_shift: float = 0.3) -> tuple[int, int, int, int]:
    """Square crop (x1, y1, x2, y2) of one person in a `width` x `height` image.

    Rule: side S = crop_scale * scale * 200 px (MPII's `scale` is the person's height / 200 px);
    centre = head-box centre moved down by crop_shift * S, so the head sits in the upper part with
    the body below it. Without a head box the centre is `objpos` (the person's centre); without
    `scale` S is 3 head-box heights. Without either, the centred largest square of the image.
    S is capped at the image's shorter side and the square is moved (not padded) to lie inside.
    """
    short = min(width, height)
    if head_box is not None:
        hx1, hy1, hx2, hy2 = head_box
        side = crop_scale * scale * MPII_SCALE_PX if scale else 3.0 * crop_scale * abs(hy2 - hy1)
        cx, cy = (hx1 + hx2) / 2, (hy1 + hy2) / 2 + crop_shift * side
    elif scale and objpos is not None:
        side = crop_scale * scale * MPII_SCALE_PX
        cx, cy = objpos
    else:
        side, cx, cy = short, width / 2, height / 2
    side = int(round(min(max(side, 1.0), short)))
    x1 = int(round(min(max(cx - side / 2, 0), width - side)))
    y1 = int(round(min(max(cy - side / 2, 0), height - side)))
    return x1, y1, x1 + side, y1 + side


def crop_anchor(image: Image.Image, person: Person, resolution: int, crop_scale: float = 1.0,
                crop_shift: float = 0.3) -> Image.Image:
    """The person's square crop (anchor_crop_box), RGB, resized to resolution x resolution."""
    image = image.convert("RGB")
    box = anchor_crop_box(image.width, image.height, person.head_box, person.scale, person.objpos,
                          crop_scale, crop_shift)
    return image.crop(box).resize((resolution, resolution), Image.Resampling.BICUBIC)


# ----------------------------------------------------------------------------- plan
@dataclass
class PlannedTriplet:
    """Everything needed to produce one triplet; `key()` changes whenever its output would.

    `positive_prompt` / `negative_prompt` are the generation prompts of the positive and the negative
    *member*; `positive_avoid` / `negative_avoid` are the pipeline's `negative_prompt` for each (None = none).
    """

    person: Person
    positive: Demographics
    negative: Demographics
    anchor_text: str
    positive_text: str
    negative_text: str
    positive_prompt: str
    negative_prompt: str
    seed: int
    positive_avoid: str | None = None
    negative_avoid: str | None = None

    @property
    def person_id(self) -> str:
        return self.person.person_id

    def file_name(self, member: str) -> str:
        return f"images/{member}/{self.person_id}.png"

    def key(self, settings: dict[str, Any]) -> str:
        return hash_obj({"triplet": asdict(self), "settings": settings})

    def record(self, generator: str, tries: dict[str, int], agreement: dict[str, bool | None],
               measured: dict[str, dict[str, Any]], texts: dict[str, str] | None = None) -> TripletRecord:
        """One metadata.jsonl line (schema.TripletRecord); `measured[m]` from `verify.measurement()`.

        `texts` overrides the positive/negative captions (an unverified member kept with on_unverified=keep).
        """
        a, p, n = self.person.demographics, self.positive, self.negative
        texts = {"positive": self.positive_text, "negative": self.negative_text, **(texts or {})}
        per_member: dict[str, Any] = {}
        for m in GENERATED:
            per_member.update({f"{m}_measured_{k}": v for k, v in measured[m].items()})
            per_member[f"{m}_verified"] = agreement[m] is True
        return TripletRecord(
            file_name=self.file_name("anchor"),
            positive_file_name=self.file_name("positive"),
            negative_file_name=self.file_name("negative"),
            anchor_text=self.anchor_text, positive_text=texts["positive"], negative_text=texts["negative"],
            occupation=self.person.occupation, person_id=self.person_id,
            anchor_gender=a.gender, anchor_race=a.race, anchor_age_group=a.age_group,
            positive_gender=p.gender, positive_race=p.race, positive_age_group=p.age_group,
            negative_gender=n.gender, negative_race=n.race, negative_age_group=n.age_group,
            generator=generator, seed=self.seed,
            positive_tries=tries["positive"], positive_agreement=agreement["positive"],
            negative_tries=tries["negative"], negative_agreement=agreement["negative"],
            **per_member,
        )


def triplet_seed(run_seed: int, person_id: str) -> int:
    """A 31-bit seed from the run seed and the person id: stable under reordering and max_triplets."""
    return int(hash_obj({"seed": run_seed, "person_id": person_id})[:8], 16) & 0x7FFFFFFF


class TripletPlanner:
    """Chooses each person's counterfactual and captions, in input order, as the stage reaches them.

    The race balance (counterfactual.py) counts only written triplets: the stage calls `release()`
    for every planned triplet it did not write (rejected or skipped). `races` limits the races a
    positive may take (empty = all of DeepFace's six), e.g. to those a classifier or world can show.
    `negative_prompt` = "opposite_gender" gives each generated member the pipeline negative prompt
    of its own generation prompt with the other gender, so guidance pushes along gender only.
    """

    def __init__(self, composer: CaptionComposer, seed: int, change_age: bool = False,
                 races: Sequence[str] = (), negative_prompt: str = "none") -> None:
        if negative_prompt not in NEGATIVE_PROMPT_MODES:
            raise ValueError(f"[augment] negative_prompt {negative_prompt!r} is not one of {NEGATIVE_PROMPT_MODES}")
        self.composer, self.seed, self.negative_prompt = composer, seed, negative_prompt
        self.chooser = (CounterfactualChooser(seed, change_age=change_age, races=races) if races
                        else CounterfactualChooser(seed, change_age=change_age))

    def _avoid(self, occupation: str, demo: Demographics) -> str | None:
        if self.negative_prompt == "none":
            return None
        return self.composer.generation(occupation, replace(demo, gender=other_gender(demo.gender)))

    def plan(self, person: Person) -> PlannedTriplet:
        """The next triplet; counts its positive's race until `release()`."""
        c, occ, anchor = self.composer, person.occupation, person.demographics
        pos, neg = self.chooser.positive(occ, anchor), self.chooser.negative(anchor)
        return PlannedTriplet(
            person, pos, neg, c.anchor(occ), c.attribute(occ, pos), c.attribute(occ, neg),
            c.generation(occ, pos), c.generation(occ, neg), triplet_seed(self.seed, person.person_id),
            self._avoid(occ, pos), self._avoid(occ, neg),
        )

    def release(self, t: PlannedTriplet) -> None:
        """`t` was not written: its positive no longer counts for the balance."""
        self.chooser.release(t.person.occupation, t.positive)


def plan_triplets(people: Sequence[Person], composer: CaptionComposer, seed: int,
                  change_age: bool = False, max_triplets: int = 0,
                  races: Sequence[str] = (), negative_prompt: str = "none") -> list[PlannedTriplet]:
    """The plan when every triplet is written (a preview: the stage re-plans as triplets are written or not)."""
    planner = TripletPlanner(composer, seed, change_age, races, negative_prompt)
    return [planner.plan(p) for p in (people[:max_triplets] if max_triplets > 0 else people)]


__all__ = ["NEGATIVE_PROMPT_MODES", "PlannedTriplet", "TripletPlanner", "anchor_crop_box", "crop_anchor",
           "plan_triplets", "triplet_seed"]
