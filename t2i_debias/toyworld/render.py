"""Render 32×32 toy people: the scene shows the occupation, the figure shows gender and skin tone.

The toy world is the one place where the true attributes of every image are known, so a debiasing
claim can be checked against ground truth. Each cue is drawn with jitter (position, shades, clothing
and hair colours) so that classifiers and the diffusion model must learn the cue, not one pixel.

Cues:
- occupation: background colour + a symbol in the top-left corner (doctor: red cross, nurse: blue
  ring, firefighter: flame, chef: white hat, pilot: navy wings, teacher: green board); pilot and
  teacher are the held-out occupations: the base model knows them, the toy MPII copy has none;
- perceived gender: `woman` = long hair + dress, `man` = short hair + trousers;
- skin tone (the race analogue): three tones mapped onto three of DeepFace's race names,
  light -> "white", reddish -> "asian", dark -> "black". The mapping is a naming convenience so that
  the toy labels fit `core.vocab.RACES`; it says nothing about real people. The middle tone is off the
  light-dark line on purpose: a tone halfway between the other two is pushed into "dark" by
  classifier-free guidance (guidance 4 amplifies a small error of the conditional prediction 4x), so
  the base could not draw it when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from t2i_debias.core.vocab import GENDERS

SIZE = 32
# The occupations of the toy MPII copy (what fine-tuning sees), then the held-out ones, which only the base
# model was trained on: they show whether a fine-tune on some occupations debiases the others.
MPII_OCCUPATIONS: tuple[str, ...] = ("doctor", "nurse", "firefighter", "chef")
HELDOUT_OCCUPATIONS: tuple[str, ...] = ("pilot", "teacher")
OCCUPATIONS: tuple[str, ...] = MPII_OCCUPATIONS + HELDOUT_OCCUPATIONS
# Skin-tone level -> race name used as its label (documented analogue, see module docstring).
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "white": (242, 208, 178),
    "asian": (200, 118, 108),
    "black": (92, 58, 36),
}
TOY_RACES: tuple[str, ...] = tuple(SKIN_TONES)

_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "doctor": (196, 222, 250),
    "nurse": (190, 240, 200),
    "firefighter": (236, 120, 60),
    "chef": (250, 232, 140),
    "pilot": (245, 185, 200),
    "teacher": (190, 190, 190),
}
# Bump when the drawing changes in a way the constants above do not show (a new symbol, a new shape): every
# toy model's spec includes `world_spec()`, so a changed world never reuses a model trained on the old one.
DRAWING_VERSION = 2


def world_spec() -> dict[str, object]:
    """What the toy pictures look like, for the specs (cache keys) of every model trained on them."""
    return {"drawing": DRAWING_VERSION, "occupations": list(OCCUPATIONS),
            "skin": {k: list(v) for k, v in SKIN_TONES.items()},
            "backgrounds": {k: list(v) for k, v in _BACKGROUNDS.items()}}


_CLOTHES = [(60, 60, 160), (40, 110, 60), (120, 120, 120), (150, 40, 40), (90, 60, 130), (30, 30, 40)]
_HAIR = [(30, 20, 15), (90, 55, 25), (200, 170, 90), (60, 40, 30)]


@dataclass(frozen=True)
class Person:
    """The true attributes of one toy image."""

    occupation: str
    gender: str
    race: str

    def __post_init__(self) -> None:
        if self.occupation not in OCCUPATIONS:
            raise ValueError(f"unknown toy occupation {self.occupation!r}; known: {OCCUPATIONS}")
        if self.gender not in GENDERS:
            raise ValueError(f"unknown gender {self.gender!r}; known: {GENDERS}")
        if self.race not in TOY_RACES:
            raise ValueError(f"unknown toy race {self.race!r}; known: {TOY_RACES}")


@dataclass(frozen=True)
class Rendered:
    """A rendered image and its head box (x1, y1, x2, y2 in pixels)."""

    image: Image.Image
    head_box: tuple[float, float, float, float]
    person: Person


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> np.ndarray:
    return np.clip(np.array(rgb, dtype=np.float32) + rng.integers(-amount, amount + 1, 3), 0, 255)


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _symbol(canvas: np.ndarray, occupation: str, rng: np.random.Generator) -> None:
    """Draw the occupation's symbol in a 7×7 cell near the top-left corner."""
    oy, ox = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    yy, xx = np.mgrid[0:7, 0:7]
    cell = canvas[oy : oy + 7, ox : ox + 7]
    if occupation == "doctor":  # red cross
        m = ((yy >= 2) & (yy <= 4)) | ((xx >= 2) & (xx <= 4))
        cell[m] = _jitter(rng, (210, 20, 30), 15)
    elif occupation == "nurse":  # blue ring
        d = (yy - 3) ** 2 + (xx - 3) ** 2
        cell[(d <= 10) & (d >= 4)] = _jitter(rng, (30, 60, 200), 15)
    elif occupation == "firefighter":  # flame: yellow triangle with red core
        m = (yy >= 1) & (np.abs(xx - 3) <= (yy - 1) * 0.6)
        cell[m] = _jitter(rng, (255, 230, 40), 15)
        cell[(yy >= 4) & (np.abs(xx - 3) <= 1)] = _jitter(rng, (200, 20, 10), 15)
    elif occupation == "pilot":  # navy wings: a bar with a centre disc
        m = ((yy >= 2) & (yy <= 3)) | _disc(yy, xx, 3, 3, 1.6)
        cell[m] = _jitter(rng, (20, 30, 110), 15)
    elif occupation == "teacher":  # green board with a white chalk line
        cell[(yy >= 1) & (yy <= 5)] = _jitter(rng, (30, 100, 50), 12)
        cell[(yy == 3) & (xx >= 1) & (xx <= 5)] = _jitter(rng, (245, 245, 245), 5)
    else:  # chef: white toque
        cell[(yy >= 4) & (xx >= 1) & (xx <= 5)] = _jitter(rng, (252, 252, 252), 3)
        cell[_disc(yy, xx, 3, 3, 2.6) & (yy < 4)] = _jitter(rng, (252, 252, 252), 3)


def render(person: Person, seed: int) -> Rendered:
    """Draw one 32×32 RGB image of `person`; the same (person, seed) always gives the same pixels."""
    rng = np.random.default_rng(seed)
    canvas = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    canvas[:] = _jitter(rng, _BACKGROUNDS[person.occupation], 14)
    canvas += rng.normal(0, 3, canvas.shape).astype(np.float32)
    _symbol(canvas, person.occupation, rng)

    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cx = 18.5 + float(rng.uniform(-3, 3))  # figure centre (right of the symbol)
    hy = 9.0 + float(rng.uniform(-1.5, 1.5))  # head centre
    r = 3.6
    skin = _jitter(rng, SKIN_TONES[person.race], 10)
    hair = _jitter(rng, _HAIR[int(rng.integers(len(_HAIR)))], 10)
    cloth = _jitter(rng, _CLOTHES[int(rng.integers(len(_CLOTHES)))], 15)
    legs_top, feet = hy + 14, min(hy + 21, SIZE - 1)

    if person.gender == "woman":
        # long hair behind the head, down to the shoulders
        canvas[_disc(yy, xx, hy, cx, r + 1.4) | ((np.abs(xx - cx) <= r + 1.2) & (yy >= hy) & (yy <= hy + 6.5))] = hair
        # thin legs, then a dress widening from the shoulders down
        canvas[(yy >= legs_top) & (yy <= feet) & (np.abs(np.abs(xx - cx) - 1.8) <= 0.6)] = skin
        t = (yy - (hy + r)) / 11.0
        canvas[(yy >= hy + r) & (yy <= hy + r + 11) & (np.abs(xx - cx) <= 2.8 + 4.2 * t)] = cloth
    else:
        # shirt, then two trouser legs with a gap
        canvas[(yy >= hy + r) & (yy < legs_top) & (np.abs(xx - cx) <= 3.8)] = cloth
        trousers = _jitter(rng, (40, 40, 70), 20)
        canvas[(yy >= legs_top - 1) & (yy <= feet) & (np.abs(xx - cx) <= 3.4) & (np.abs(xx - cx) >= 0.8)] = trousers
    canvas[_disc(yy, xx, hy, cx, r)] = skin
    if person.gender == "man":  # short hair: a cap on the upper part of the head
        canvas[_disc(yy, xx, hy - 0.8, cx, r + 0.3) & (yy <= hy - 1.6)] = hair
    else:  # fringe
        canvas[_disc(yy, xx, hy - 0.8, cx, r + 0.3) & (yy <= hy - 2.2)] = hair

    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    pad = r + 1.5
    box = (round(cx - pad, 2), round(hy - pad, 2), round(cx + pad, 2), round(hy + pad, 2))
    return Rendered(img, box, person)


def contact_sheet(images: list[Image.Image], cols: int = 8, scale: int = 2) -> Image.Image:
    """Tile images into one picture (for eyeballing renders and samples)."""
    if not images:
        raise ValueError("no images to tile")
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im.convert("RGB").resize((w, h)), ((i % cols) * w, (i // cols) * h))
    return sheet.resize((cols * w * scale, rows * h * scale), Image.NEAREST)
