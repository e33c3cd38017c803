"""The toy world's biased population and its MPII-format copy (images + `.mat` + occupation map).

The planted bias is exact, not sampled: for each occupation, round(p·n) people are men and the
skin tones follow their shares by largest remainder, so tests can check the proportions exactly.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from t2i_debias.toyworld.render import MPII_OCCUPATIONS, OCCUPATIONS, TOY_RACES, Person, Rendered, render

log = logging.getLogger(__name__)

# P(man | occupation): the planted gender bias.
MALE_SHARE: dict[str, float] = {"doctor": 0.90, "nurse": 0.10, "firefighter": 0.85, "chef": 0.50,
                                "pilot": 0.85, "teacher": 0.20}
# P(skin tone | occupation), in TOY_RACES order (white, asian, black): the planted race bias.
RACE_SHARE: dict[str, tuple[float, float, float]] = {
    "doctor": (0.70, 0.20, 0.10),
    "nurse": (0.20, 0.60, 0.20),
    "firefighter": (0.60, 0.10, 0.30),
    "chef": (0.34, 0.33, 0.33),
    "pilot": (0.65, 0.20, 0.15),
    "teacher": (0.30, 0.30, 0.40),
}
# MPII-style (category, activity) of each toy occupation; occupations_toy.csv maps them back.
ACTIVITIES: dict[str, tuple[str, str, int]] = {
    "doctor": ("occupation", "toy doctor examining a patient", 9001),
    "nurse": ("occupation", "toy nurse caring for a patient", 9002),
    "firefighter": ("occupation", "toy fire fighter at a fire", 9003),
    "chef": ("occupation", "toy cook chef in a kitchen", 9004),
}
OCCUPATION_MAP = Path(__file__).with_name("occupations_toy.csv")


@dataclass(frozen=True)
class Sample:
    """One member of the toy population: who, and the seed of their picture."""

    person: Person
    seed: int

    def render(self) -> Rendered:
        return render(self.person, self.seed)


def _counts(shares: list[float], n: int) -> list[int]:
    """Split n by `shares` with the largest-remainder rule (sums to n exactly)."""
    raw = np.asarray(shares, dtype=float) / sum(shares) * n
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: n - int(out.sum())]:
        out[i] += 1
    return out.tolist()


def biased_population(n_per_occupation: int, seed: int,
                      male_share: dict[str, float] | None = None,
                      race_share: dict[str, tuple[float, ...]] | None = None,
                      occupations: tuple[str, ...] = MPII_OCCUPATIONS) -> list[Sample]:
    """The biased population of `occupations`: exact gender and skin-tone shares per occupation, shuffled by
    `seed`. The default is the MPII copy's occupations; the base model trains on every OCCUPATIONS."""
    male_share = male_share or MALE_SHARE
    race_share = race_share or RACE_SHARE
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for occ in occupations:
        n_men = int(round(male_share[occ] * n_per_occupation))
        genders = ["man"] * n_men + ["woman"] * (n_per_occupation - n_men)
        races = [r for r, k in zip(TOY_RACES, _counts(list(race_share[occ]), n_per_occupation), strict=True)
                 for _ in range(k)]
        rng.shuffle(races)  # skin tone independent of gender within an occupation
        for g, r in zip(genders, races, strict=True):
            out.append(Sample(Person(occ, g, r), int(rng.integers(0, 2**31 - 1))))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def balanced_population(n_per_cell: int, seed: int) -> list[Sample]:
    """Every (occupation, gender, skin tone) cell equally often: held-out data for classifiers and FID."""
    rng = np.random.default_rng(seed)
    out = [Sample(Person(o, g, r), int(rng.integers(0, 2**31 - 1)))
           for o in OCCUPATIONS for g in ("man", "woman") for r in TOY_RACES for _ in range(n_per_cell)]
    return [out[i] for i in rng.permutation(len(out))]


def write_occupation_map(path: Path) -> Path:
    """Write the (activity, category, occupation) map of the toy activities (the committed CSV's content)."""
    from t2i_debias.core.files import atomic_open

    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["activity", "category", "occupation"])
        for occ, (cat, act, _) in ACTIVITIES.items():
            w.writerow([act, cat, occ])
    return path


def write_mpii(out_dir: str | Path, samples: list[Sample], test_fraction: float = 0.0,
               mat_name: str = "mpii_human_pose_v1_u12_1.mat") -> tuple[Path, Path]:
    """Write `samples` as an MPII-format fixture (one person per image, with a head box) via B1's writer.

    Returns (mat_path, images_dir). The person's `objpos` is the image centre and `scale` makes the
    MPII person box (200·scale pixels tall) cover the whole 32-pixel image, so a crop keeps the scene.
    """
    from t2i_debias.data.mpii_fixture import FixtureImage, FixturePerson, write_fixture

    images = []
    n_test = int(round(test_fraction * len(samples)))
    for i, s in enumerate(samples):
        r = s.render()
        cat, act, act_id = ACTIVITIES[s.person.occupation]
        x1, y1, x2, y2 = r.head_box
        person = FixturePerson(head_box=(x1, y1, x2, y2), scale=32 / 200, objpos=(16.0, 16.0), points=None)
        images.append(FixtureImage(name=f"{i + 1:09d}.jpg", category=cat, activity=act, act_id=act_id,
                                   persons=[person], train=i >= n_test, image=r.image))
    return write_fixture(Path(out_dir), images, mat_name=mat_name)


def truth_table(samples: list[Sample]) -> list[dict[str, Any]]:
    """Ground truth per image (image name as written by `write_mpii`): for checking labels."""
    return [{"image": f"{i + 1:09d}.jpg", "occupation": s.person.occupation, "gender": s.person.gender,
             "race": s.person.race} for i, s in enumerate(samples)]
