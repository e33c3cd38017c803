"""Write MPII-Human-Pose-format annotation files (`.mat`) plus JPEG images, for tests and the toy world.

The real `mpii_human_pose_v1_u12_1.mat` cannot be shipped, so the loader is proven on files written
here with `scipy.io.savemat` in the same MATLAB layout, reproducing every quirk of DESIGN.md §7:

* `RELEASE` with `annolist` (1xN struct), `img_train` (1xN uint8), `version`, `single_person`
  (Nx1 cell of 1-based ridx column vectors: empty, scalar, or kx1), `act` (Nx1 struct), `video_list`;
* `annorect` empty (0x0), one struct, or 1xk; a field is *absent* from an image's annorect when no
  person of that image has it (test images: only `scale` and `objpos`); head-box-only persons;
* `annopoints.point` one struct or 1xn, `is_visible` numeric, `'0'`/`'1'`, empty or absent;
  coordinates int (stored unsigned) or float, possibly negative;
* `act` fields in a configurable order; an empty act has `act_id = -1` and empty names;
* `vididx` / `frame_sec` empty together; integers stored as uint8 / uint16.

Typical use::

    images = fixture_from_activities_csv(packaged_activities_path(), 50, seed=0)
    mat_path, images_dir = write_fixture("out/", images)
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2i_debias.core.files import atomic_open, atomic_save_image, safe_join

log = logging.getLogger(__name__)

ACT_FIELDS: tuple[str, str, str] = ("cat_name", "act_name", "act_id")
MPII_N_IMAGES = 24987  # images in the real file
MPII_N_VIDEOS = 2821
ACTIVITIES_CSV_NAME = "mpii_train_activities.csv"  # vendored; source and licence in data/MPII_ACTIVITIES.md


def packaged_activities_path() -> Path:
    """The vendored CSV of real MPII activity labels (17,372 training images), shipped with the package."""
    from importlib import resources

    return Path(str(resources.files("t2i_debias.data").joinpath(ACTIVITIES_CSV_NAME)))


@dataclass
class FixturePoint:
    """One keypoint. `is_visible`: 0/1, '0'/'1', None (stored as an empty []), or ABSENT (no field)."""

    id: int
    x: float
    y: float
    is_visible: Any = 1


ABSENT = "__absent__"  # FixturePoint.is_visible value meaning "this point struct has no is_visible field"


@dataclass
class FixturePerson:
    """One annotated person (`annorect` element). None means the field is empty ([]) for this person;
    a field no person of the image has is left out of the struct altogether.

    head_box: (x1, y1, x2, y2) in pixels; objpos: (x, y); points: list of FixturePoint or of
    (id, x, y[, is_visible]) tuples.
    """

    head_box: tuple[float, float, float, float] | None = None
    scale: float | None = None
    objpos: tuple[float, float] | None = None
    points: list[Any] | None = None


@dataclass
class FixtureImage:
    """One annotated image (`annolist` element + its `act`, `img_train`, `single_person` entries).

    act_id -1 with empty category/activity is MPII's "no activity". single_person: 1-based ridx
    list; None = [1] for a lone person with scale and objpos, else []. vididx/frame_sec are both
    None (stored empty) or both set. image: the JPEG content; None = a plain placeholder.
    """

    name: str
    category: str = ""
    activity: str = ""
    act_id: int = -1
    persons: list[FixturePerson] = field(default_factory=list)
    train: bool = True
    image: Any = None  # PIL.Image.Image | None
    single_person: list[int] | None = None
    vididx: int | None = None
    frame_sec: float | None = None


# ----------------------------------------------------------------------------- MATLAB value builders
def _empty() -> np.ndarray:
    """MATLAB's [] (0x0 double)."""
    return np.zeros((0, 0), dtype=np.float64)


def _num(v: float | int) -> np.ndarray:
    """A 1x1 numeric: non-negative ints as uint8/uint16 (as in the real file), others as double."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = int(v)
        if 0 <= v < 256:
            return np.array([[v]], dtype=np.uint8)
        if 0 <= v < 65536:
            return np.array([[v]], dtype=np.uint16)
        return np.array([[v]], dtype=np.float64)
    return np.array([[float(v)]], dtype=np.float64)


def _struct_array(records: Sequence[dict[str, Any]], fields: Sequence[str], shape: str = "row") -> np.ndarray:
    """A MATLAB struct array (1xk or kx1) with the given field order; missing values become []."""
    arr = np.empty((1, len(records)) if shape == "row" else (len(records), 1),
                   dtype=[(f, object) for f in fields])
    flat = arr.reshape(-1)
    for i, rec in enumerate(records):
        for f in fields:
            v = rec.get(f)
            flat[i][f] = _empty() if v is None else v
    return arr


def _struct(rec: dict[str, Any], fields: Sequence[str] | None = None) -> np.ndarray:
    """A 1x1 MATLAB struct."""
    return _struct_array([rec], list(fields or rec.keys()))


def _point_struct(points: Sequence[Any]) -> np.ndarray:
    pts = [p if isinstance(p, FixturePoint) else FixturePoint(*p) for p in points]
    has_vis = any(p.is_visible != ABSENT for p in pts)
    fields = ["x", "y", "id"] + (["is_visible"] if has_vis else [])
    recs = []
    for p in pts:
        rec = {"x": _num(p.x), "y": _num(p.y), "id": _num(int(p.id))}
        if has_vis and p.is_visible != ABSENT:
            v = p.is_visible
            rec["is_visible"] = None if v is None else (str(v) if isinstance(v, str) else _num(int(v)))
        recs.append(rec)
    return _struct_array(recs, fields)


def _annorect(persons: Sequence[FixturePerson]) -> np.ndarray:
    """An image's annorect: [] when empty, else a 1xk struct array whose fields are those any person has."""
    if not persons:
        return _empty()
    fields: list[str] = []
    if any(p.head_box is not None for p in persons):
        fields += ["x1", "y1", "x2", "y2"]
    if any(p.points is not None for p in persons):
        fields.append("annopoints")
    if any(p.scale is not None for p in persons) or not fields:
        fields.append("scale")
    if any(p.objpos is not None for p in persons):
        fields.append("objpos")
    recs = []
    for p in persons:
        rec: dict[str, Any] = {}
        if p.head_box is not None:
            rec.update({k: _num(v) for k, v in zip(("x1", "y1", "x2", "y2"), p.head_box, strict=True)})
        if p.points is not None:
            rec["annopoints"] = _struct({"point": _point_struct(p.points)}) if p.points else _empty()
        if p.scale is not None:
            rec["scale"] = _num(float(p.scale))
        if p.objpos is not None:
            rec["objpos"] = _struct({"x": _num(p.objpos[0]), "y": _num(p.objpos[1])})
        recs.append(rec)
    return _struct_array(recs, fields)


def _ridx_cell(ridx: Sequence[int]) -> np.ndarray:
    """A single_person cell entry: [] / 1x1 / kx1 of 1-based ridx (uint8)."""
    if not ridx:
        return _empty()
    return np.array(list(ridx), dtype=np.uint8 if max(ridx) < 256 else np.uint16).reshape(-1, 1)


def _default_single(img: FixtureImage) -> list[int]:
    if len(img.persons) == 1 and img.persons[0].scale is not None and img.persons[0].objpos is not None:
        return [1]
    return []


def build_release(images: Sequence[FixtureImage], act_field_order: Sequence[str] = ACT_FIELDS,
                  empty_act_names: str = "empty", n_videos: int | None = None) -> dict[str, Any]:
    """The `RELEASE` struct as savemat input (nested numpy structured/object arrays).

    empty_act_names: how an empty act's names are stored: "empty" ([]) or "string" ('').
    """
    if sorted(act_field_order) != sorted(ACT_FIELDS):
        raise ValueError(f"act_field_order must be a permutation of {ACT_FIELDS}, got {act_field_order}")
    if empty_act_names not in ("empty", "string"):
        raise ValueError(f"empty_act_names must be 'empty' or 'string', got {empty_act_names!r}")
    n = len(images)
    annolist = np.empty((1, n), dtype=[("image", object), ("annorect", object),
                                       ("frame_sec", object), ("vididx", object)])
    single = np.empty((n, 1), dtype=object)
    acts = []
    max_vid = 0
    for i, img in enumerate(images):
        if (img.vididx is None) != (img.frame_sec is None):
            raise ValueError(f"image {img.name}: vididx and frame_sec must be set or empty together")
        el = annolist[0, i]
        el["image"] = _struct({"name": img.name})
        el["annorect"] = _annorect(img.persons)
        el["frame_sec"] = _empty() if img.frame_sec is None else _num(float(img.frame_sec))
        el["vididx"] = _empty() if img.vididx is None else _num(int(img.vididx))
        max_vid = max(max_vid, img.vididx or 0)
        single[i, 0] = _ridx_cell(img.single_person if img.single_person is not None else _default_single(img))
        if img.act_id == -1 and not img.activity and not img.category:
            blank = _empty() if empty_act_names == "empty" else ""
            acts.append({"cat_name": blank, "act_name": blank, "act_id": np.array([[-1]], dtype=np.int16)})
        else:
            acts.append({"cat_name": img.category, "act_name": img.activity,
                         "act_id": np.array([[img.act_id]], dtype=np.int16)})
    n_videos = max(max_vid, n_videos or 0)
    video_list = np.empty((1, n_videos), dtype=object)
    for v in range(n_videos):
        video_list[0, v] = f"{v:011x}"[:11]  # YouTube-id-like strings
    return {
        "annolist": annolist,
        "img_train": np.array([[1 if img.train else 0 for img in images]], dtype=np.uint8),
        "version": "12",
        "single_person": single,
        "act": _struct_array(acts, list(act_field_order), shape="col"),
        "video_list": video_list,
    }


def _placeholder(img: FixtureImage) -> Any:
    """A plain grey JPEG big enough to hold the image's annotations, with head boxes drawn darker."""
    from PIL import Image, ImageDraw

    xs, ys = [64.0], [64.0]
    for p in img.persons:
        if p.head_box is not None:
            xs += [p.head_box[0], p.head_box[2]]
            ys += [p.head_box[1], p.head_box[3]]
        if p.objpos is not None:
            xs.append(p.objpos[0])
            ys.append(p.objpos[1])
    w, h = min(int(max(xs)) + 16, 2048), min(int(max(ys)) + 16, 2048)
    im = Image.new("RGB", (w, h), (160, 160, 160))
    draw = ImageDraw.Draw(im)
    for p in img.persons:
        if p.head_box is not None:
            x1, y1, x2, y2 = p.head_box
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], fill=(90, 70, 60))
    return im


def write_fixture(out_dir: str | Path, images: Sequence[FixtureImage], mat_name: str = "mpii_human_pose_v1_u12_1.mat",
                  write_images: bool = True, act_field_order: Sequence[str] = ACT_FIELDS,
                  empty_act_names: str = "empty", compress: bool = True,
                  n_videos: int | None = None) -> tuple[Path, Path]:
    """Write `<out_dir>/<mat_name>` and `<out_dir>/images/<name>` JPEGs; return (mat_path, images_dir).

    write_images=False writes only the `.mat` (for benchmarks; the loader then reports every image
    missing). Images with `image=None` get a placeholder. Every file is written atomically.
    """
    import scipy.io

    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    release = build_release(images, act_field_order, empty_act_names, n_videos)
    mat_path = out / mat_name
    with atomic_open(mat_path, "wb") as fh:
        scipy.io.savemat(fh, {"RELEASE": release}, do_compression=compress, oned_as="row")
    if write_images:
        for img in images:
            atomic_save_image(safe_join(images_dir, img.name), img.image if img.image is not None
                              else _placeholder(img), format="JPEG")
    return mat_path, images_dir


# ----------------------------------------------------------------------------- fixtures from the real CSV
def image_name(i: int) -> str:
    """An MPII-style image name: 9 digits plus .jpg."""
    return f"{i:09d}.jpg"


def head_box_from_points(neck: tuple[float, float], top: tuple[float, float]) -> tuple[float, float, float, float]:
    """A square head box spanning upper neck to head top (side = their distance), as MPII draws it."""
    cx, cy = (neck[0] + top[0]) / 2, (neck[1] + top[1]) / 2
    half = max(math.dist(neck, top), 1.0) / 2
    return (round(cx - half, 2), round(cy - half, 2), round(cx + half, 2), round(cy + half, 2))


def _person_from_row(row: dict[str, str], rng: random.Random, quirks: bool, with_points: bool) -> FixturePerson:
    scale = float(row["scale"])
    neck = (float(row["upper_neck_x"]), float(row["upper_neck_y"]))
    top = (float(row["head_top_x"]), float(row["head_top_y"]))
    box = head_box_from_points(neck, top)
    if quirks and rng.random() < 0.5:  # integer coordinates, as many rows of the real file have
        box = tuple(float(round(v)) for v in box)  # type: ignore[assignment]
    objpos = (round(neck[0], 2), round(neck[1] + 100 * scale * 0.5, 2))
    head_only = quirks and rng.random() < 0.05
    if head_only:
        return FixturePerson(head_box=box, scale=None, objpos=None, points=[] if with_points else None)
    if not with_points:
        return FixturePerson(head_box=box, scale=scale, objpos=objpos)
    pts: list[FixturePoint] = []
    vis_choices: list[Any] = [1, 0, "1", "0", None] if quirks else [1]
    for pid, (x, y) in ((8, neck), (9, top)):
        x = int(round(x)) if quirks and rng.random() < 0.3 and x >= 0 else x
        pts.append(FixturePoint(pid, x, y, rng.choice(vis_choices)))
    n_extra = 14 if rng.random() < 0.75 else rng.randint(0, 14)  # most real persons have all 16 joints
    for pid in rng.sample([0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15], n_extra):
        pts.append(FixturePoint(pid, round(neck[0] + rng.uniform(-80, 80) * scale, 3),
                                round(neck[1] + rng.uniform(-10, 150) * scale, 3), rng.choice(vis_choices)))
    if quirks and rng.random() < 0.05:  # a person with a single annotated point (point is a bare struct)
        pts = pts[:1]
    if quirks and rng.random() < 0.05:  # is_visible absent for this person
        for p in pts:
            p.is_visible = ABSENT
    return FixturePerson(head_box=box, scale=scale, objpos=objpos, points=pts)


def _test_person(rng: random.Random) -> FixturePerson:
    return FixturePerson(scale=round(rng.uniform(0.8, 6.0), 4),
                         objpos=(float(rng.randint(0, 1280)), float(rng.randint(0, 720))))


def fixture_from_activities_csv(csv_path: str | Path, n_images: int | None = None, seed: int = 0,
                                n_test: int = 0, extra_activities: int = 0, max_people: int = 4,
                                quirks: bool = True, with_points: bool = True) -> list[FixtureImage]:
    """FixtureImages drawn from the real (image, category, activity, scale, neck, head top) CSV.

    n_images: training images drawn without replacement (None = every row, in file order). Each gets
    1..max_people persons (the CSV's person first, then jittered copies). n_test: extra test images
    (img_train 0, persons with only scale/objpos) with activities drawn from the CSV.
    extra_activities: additional synthetic activities (test images) so the activity count can
    match the real file's 410. quirks=False gives plain, quirk-free annotations; with_points=False
    leaves out keypoints (annopoints), which makes large fixtures much quicker to write.
    """
    import csv

    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    rng = random.Random(seed)
    chosen = rows if n_images is None else rng.sample(rows, min(n_images, len(rows)))
    acts = sorted({(r["category"], r["activity"]) for r in rows if r["activity"]})
    act_ids = {a: i + 1 for i, a in enumerate(acts)}
    images: list[FixtureImage] = []
    used = set()
    for row in chosen:
        persons = [_person_from_row(row, rng, quirks, with_points)]
        for _ in range(rng.randint(0, max_people - 1) if rng.random() < 0.4 else 0):
            persons.append(_person_from_row(row, rng, quirks, with_points))
        key = (row["category"], row["activity"])
        sp = [r + 1 for r, p in enumerate(persons) if p.scale is not None and rng.random() < 0.8]
        vid = rng.randint(1, MPII_N_VIDEOS) if rng.random() < 0.9 else None
        images.append(FixtureImage(
            name=row["image"], category=row["category"], activity=row["activity"],
            act_id=act_ids.get(key, -1), persons=persons, train=True, single_person=sp,
            vididx=vid, frame_sec=None if vid is None else float(rng.randint(1, 300)),
        ))
        used.add(int(row["image"].split(".")[0]))
    extra = [(f"synthetic category {k % 3}", f"synthetic activity {k}") for k in range(extra_activities)]
    extra_ids = {a: len(acts) + 1 + i for i, a in enumerate(extra)}
    next_name = 1
    for t in range(n_test):
        while next_name in used:
            next_name += 1
        used.add(next_name)
        if t < len(extra):
            (cat, act), aid = extra[t], extra_ids[extra[t]]
        elif rng.random() < 0.1:
            cat, act, aid = "", "", -1
        else:
            cat, act = rng.choice(acts)
            aid = act_ids[(cat, act)]
        lo = 1 if t < len(extra) else 0  # every synthetic activity has people
        persons = [_test_person(rng) for _ in range(rng.randint(lo, max(max_people, lo)))]
        images.append(FixtureImage(name=image_name(next_name), category=cat, activity=act, act_id=aid,
                                   persons=persons, train=False,
                                   single_person=[r + 1 for r in range(len(persons)) if rng.random() < 0.7]))
    return images


def full_size_fixture(csv_path: str | Path, seed: int = 0) -> list[FixtureImage]:
    """A fixture the size of the real file: 24,987 images (17,372 train from the CSV), ~40k people,
    410 distinct non-empty activities."""
    n_acts = len({r for r in _activities(csv_path) if r})
    return fixture_from_activities_csv(csv_path, None, seed, n_test=MPII_N_IMAGES - len(list(_activities(csv_path))),
                                       extra_activities=max(410 - n_acts, 0), max_people=4)


def _activities(csv_path: str | Path) -> Iterable[str]:
    import csv

    with open(csv_path, newline="", encoding="utf-8") as fh:
        return [r["activity"] for r in csv.DictReader(fh)]


# ----------------------------------------------------------------------------- smoke-run data
def smoke_fixture(csv_path: str | Path, n_images: int = 12, seed: int = 0,
                  occupation_map: str | Path | None = None) -> list[FixtureImage]:
    """Quirk-free images drawn from the real CSV among activities that map to an occupation, each
    with cartoon faces at its head boxes, so a smoke run's labels stage finds faces.

    Smoke runs (`configs/smoke.toml`) use this to exercise every stage on tiny models in minutes.
    """
    import csv

    from PIL import ImageFilter

    from t2i_debias.data.occupations import load_occupation_map
    from t2i_debias.tiny.deepface import draw_cartoon_face

    occ = load_occupation_map(occupation_map)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if occ.get(r["activity"])]
    if not rows:
        raise ValueError(f"{csv_path}: no row has an activity that maps to an occupation")
    rng = random.Random(seed)
    chosen = rng.sample(rows, min(n_images, len(rows)))
    images = fixture_from_activities_csv_rows(chosen, rng)
    for img in images:
        canvas = _placeholder(FixtureImage(img.name, persons=img.persons))
        canvas.paste((150, 150, 150), (0, 0, *canvas.size))
        for p in img.persons:
            if p.head_box is not None:
                x1, y1, x2, y2 = p.head_box
                draw_cartoon_face(canvas, (x1 + x2) / 2, (y1 + y2) / 2, 0.8 * abs(x2 - x1))
        img.image = canvas.filter(ImageFilter.GaussianBlur(1))
    return images


def fixture_from_activities_csv_rows(rows: Sequence[dict[str, str]], rng: random.Random) -> list[FixtureImage]:
    """One plain (quirk-free, one-person) training FixtureImage per CSV row."""
    acts = sorted({(r["category"], r["activity"]) for r in rows})
    act_ids = {a: i + 1 for i, a in enumerate(acts)}
    return [FixtureImage(name=r["image"], category=r["category"], activity=r["activity"],
                         act_id=act_ids[(r["category"], r["activity"])],
                         persons=[_person_from_row(r, rng, quirks=False, with_points=False)], train=True)
            for r in rows]
