"""The demographic attribute vocabularies shared by labels, captions, metrics and reports."""

from __future__ import annotations

GENDERS: tuple[str, ...] = ("man", "woman")
# DeepFace's six race classes, in DeepFace's own order.
RACES: tuple[str, ...] = ("asian", "indian", "black", "white", "middle eastern", "latino hispanic")
AGE_GROUPS: tuple[str, ...] = ("child", "young", "middle-aged", "senior")

# Shen et al. (ICLR'24) four-way grouping: White, Middle Eastern, Latino Hispanic merged (WMELH).
SHEN4: dict[str, str] = {
    "white": "WMELH",
    "middle eastern": "WMELH",
    "latino hispanic": "WMELH",
    "black": "black",
    "indian": "indian",
    "asian": "asian",
}
SHEN4_CLASSES: tuple[str, ...] = ("WMELH", "black", "indian", "asian")

# The attributes a labels backend may measure; each backend declares those it does
# (DemographicClassifier.measures). An attribute it does not measure is reported as NOT_MEASURED, never as a bias.
MEASURABLE: tuple[str, ...] = ("gender", "race", "age_group")
# Derived attributes and the measured ones they are made of.
DERIVED_FROM: dict[str, tuple[str, ...]] = {"race4": ("race",), "gender_race": ("gender", "race")}
NOT_MEASURED = "not measured"


def is_measured(attribute: str, measures: tuple[str, ...] | list[str]) -> bool:
    """Whether `attribute` (measured or derived) can be computed from the attributes a backend `measures`."""
    return all(a in measures for a in DERIVED_FROM.get(attribute, (attribute,)))


ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "race": RACES,
    "race4": SHEN4_CLASSES,
    "gender_race": tuple(f"{g}|{r}" for g in GENDERS for r in RACES),
}

# Label statuses (labels/labels.csv, bias/<model>/predictions.csv).
STATUS_OK = "ok"
# A classifier whose cues disagree (e.g. the toy world's hair vs clothes) says so instead of guessing.
STATUS_AMBIGUOUS = "ambiguous"
# Why an image file could not be used (t2i_debias.core.image_files): a recorded skip in a per-row stage.
STATUS_MISSING_IMAGE = "missing_image"
STATUS_TOO_LARGE = "too_large"  # PIL's decompression-bomb guard: the header claims too many pixels
STATUS_TRUNCATED = "truncated"
STATUS_NOT_AN_IMAGE = "not_an_image"
STATUS_UNREADABLE = "unreadable_image"  # any other decode error
IMAGE_STATUSES: tuple[str, ...] = (STATUS_MISSING_IMAGE, STATUS_TOO_LARGE, STATUS_TRUNCATED, STATUS_NOT_AN_IMAGE,
                                   STATUS_UNREADABLE)
# A classifier input with nothing to see: every pixel the same colour (a blank or broken file, a diverged model).
STATUS_BLANK = "blank_image"
# A head box that does not overlap its image at all: the file is not the one the annotation describes.
STATUS_BOX_OUTSIDE = "box_outside_image"
SKIP_STATUSES: tuple[str, ...] = (
    "no_face",
    STATUS_AMBIGUOUS,
    *IMAGE_STATUSES,
    "multiple_faces",
    STATUS_BLANK,
    STATUS_BOX_OUTSIDE,
)


def age_group(age: float) -> str:
    """Bucket an age in years into DESIGN.md §1.2's groups: child <18, young <35, middle-aged <60, senior."""
    if age < 18:
        return "child"
    if age < 35:
        return "young"
    if age < 60:
        return "middle-aged"
    return "senior"


def other_gender(gender: str) -> str:
    """Flip a binary perceived-gender label."""
    if gender not in GENDERS:
        raise ValueError(f"unknown gender {gender!r}; expected one of {GENDERS}")
    return GENDERS[1 - GENDERS.index(gender)]
