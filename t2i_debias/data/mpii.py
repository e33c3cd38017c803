"""MPII Human Pose loader: `mpii_human_pose_v1_u12_1.mat` -> every person of the file (`MpiiRelease`);
`data.persons` selects them and writes `mpii/persons.csv`.

Reading: by default `matreader.read_mat` (fast, skips keypoints unless asked); `reader="scipy"`
uses `scipy.io.loadmat(squeeze_me=False, struct_as_record=True)`, which keeps every MATLAB
dimension explicit, so one person is a 1x1 struct array like many. `parse_release` accepts the
`RELEASE` struct in any of these shapes, including loadmat's `squeeze_me=True` /
`struct_as_record=False` variants, and handles every quirk of DESIGN.md §7 (empty/bare/array
annorect, absent fields, head-box-only persons, point struct vs array, is_visible numeric/str/
empty/absent, act fields by name, empty act -> act_id -1, 1-based single_person scalar or array,
vididx/frame_sec empty together, unsigned integer types, 9-digit image names).

Every person in the file is parsed; `data.persons.select_persons` writes it to persons.csv or counts it under
a reason in `mpii/load_report.json`.
"""

from __future__ import annotations

import logging
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2i_debias.core.errors import InputError
from t2i_debias.data.matreader import SKIPPED, MatFormatError, MatVariableError, read_mat

log = logging.getLogger(__name__)

_ABSENT = object()


class MpiiFormatError(InputError):
    """The annotation data does not have the MPII layout; the message names the file and the element."""


@dataclass
class MpiiPerson:
    """One `annorect` element with its image's annotations. points: (id, x, y, is_visible|None)."""

    image_index: int  # 0-based position in annolist
    ridx: int  # 1-based position in annorect
    image: str
    split: str
    category: str
    activity: str
    act_id: int
    head_box: tuple[float, float, float, float] | None
    scale: float | None
    objpos: tuple[float, float] | None
    n_people: int
    single_person: bool
    points: list[tuple[int, float, float, int | None]] | None = None


@dataclass
class MpiiRelease:
    """The parsed file: every person, plus per-image facts that have no person row."""

    persons: list[MpiiPerson]
    n_images: int
    images_without_people: int
    stats: Counter = field(default_factory=Counter)
    version: str = ""


# ----------------------------------------------------------------------------- shape-agnostic access
def _items(x: Any) -> list[Any]:
    """Elements of a struct array / cell / numeric vector, column-major; [] when empty or absent."""
    if x is None or x is _ABSENT or x is SKIPPED:
        return []
    if isinstance(x, list):
        return x
    if isinstance(x, tuple):
        return list(x)
    if isinstance(x, np.ndarray):
        if x.size == 0:
            return []
        if x.ndim == 0:
            return [x[()]]
        return list(x.reshape(-1, order="F"))
    if isinstance(x, str):
        return [x] if x else []
    return [x]


def _struct1(x: Any, where: str) -> Any:
    """The single struct element of `x`, or None when empty/absent."""
    items = _items(x)
    while len(items) == 1 and isinstance(items[0], np.ndarray) and items[0].dtype == object:
        items = _items(items[0])  # a struct wrapped in a cell
    if not items:
        return None
    if len(items) > 1:
        raise MpiiFormatError(f"{where}: expected one struct, found {len(items)}")
    return items[0]


def _field(s: Any, name: str) -> Any:
    """Field `name` of a struct element (dict, numpy record, loadmat mat_struct); _ABSENT if it has none."""
    if isinstance(s, dict):
        return s.get(name, _ABSENT)
    if isinstance(s, np.void):
        names = s.dtype.names or ()
        return s[name] if name in names else _ABSENT
    if isinstance(s, np.ndarray) and s.size == 1:
        return _field(s.reshape(-1)[0], name)
    if isinstance(s, list) and len(s) == 1:
        return _field(s[0], name)
    if hasattr(s, "_fieldnames"):  # scipy.io.matlab.mat_struct (struct_as_record=False)
        return getattr(s, name) if name in s._fieldnames else _ABSENT
    raise MpiiFormatError(f"expected a struct with field {name!r}, got {type(s).__name__}")


def _number(x: Any, where: str) -> float | None:
    """A scalar as float; None when empty, absent or NaN. Strings like '1' are accepted."""
    while True:
        if isinstance(x, float):
            return None if math.isnan(x) else (x if type(x) is float else float(x))
        if isinstance(x, int) and not isinstance(x, bool):
            return float(x)
        if x is None or x is _ABSENT or x is SKIPPED:
            return None
        if isinstance(x, np.generic):
            if x.dtype.kind in "iufb":
                v = float(x)
                return None if math.isnan(v) else v
            x = str(x)
        if isinstance(x, str):
            s = x.strip()
            if not s:
                return None
            try:
                return float(s)
            except ValueError:
                raise MpiiFormatError(f"{where}: expected a number, got {x!r}") from None
        if isinstance(x, (list, tuple, np.ndarray)):
            items = _items(x)
            if not items:
                return None
            if len(items) > 1:
                raise MpiiFormatError(f"{where}: expected one number, got {len(items)} values")
            x = items[0]
            continue
        raise MpiiFormatError(f"{where}: expected a number, got {type(x).__name__}")


def _numbers(x: Any, where: str) -> list[float]:
    """All numbers of a scalar / vector / nested cell (single_person entries)."""
    out: list[float] = []
    for it in _items(x):
        if isinstance(it, (np.ndarray, list, tuple)):
            out.extend(_numbers(it, where))
        else:
            v = _number(it, where)
            if v is not None:
                out.append(v)
    return out


def _text(x: Any, where: str) -> str:
    """A char array as a stripped str; '' when empty or absent."""
    if isinstance(x, str):
        return x.strip()
    if x is None or x is _ABSENT or x is SKIPPED:
        return ""
    if isinstance(x, np.ndarray):
        if x.size == 0:
            return ""
        if x.dtype.kind == "U":
            return "".join(x.reshape(-1).tolist()).strip()
        if x.dtype == object and x.size == 1:
            return _text(x.reshape(-1)[0], where)
    if isinstance(x, (list, tuple)):
        if not x:
            return ""
        if all(isinstance(v, str) for v in x):
            return "".join(x).strip()
        if len(x) == 1:
            return _text(x[0], where)
    raise MpiiFormatError(f"{where}: expected text, got {type(x).__name__}: {x!r:.80}")


def _visible(x: Any, where: str) -> int | None:
    """is_visible as 0/1; None when empty or absent ('1'/'0' strings and numbers both occur)."""
    v = _number(x, where)
    return None if v is None else int(v != 0)


# ----------------------------------------------------------------------------- parsing
def _release(mat: dict[str, Any], source: str) -> Any:
    if "RELEASE" not in mat:
        raise MpiiFormatError(f"{source}: no RELEASE variable (found: {', '.join(k for k in mat if not k.startswith('__'))})")
    return _struct1(mat["RELEASE"], f"{source}: RELEASE")


def _get(s: Any, name: str, where: str) -> Any:
    v = _field(s, name)
    if v is _ABSENT:
        raise MpiiFormatError(f"{where}: missing field {name!r}")
    return v


def _person(r: Any, where: str, keypoints: bool) -> tuple[Any, ...]:
    """(head_box, scale, objpos, points) of one annorect element; absent fields read as empty."""
    box = tuple(_number(_field(r, k), f"{where}.{k}") for k in ("x1", "y1", "x2", "y2"))
    head = box if all(v is not None for v in box) else None
    scale = _number(_field(r, "scale"), f"{where}.scale")
    op = _struct1(_field(r, "objpos"), f"{where}.objpos")
    objpos = None
    if op is not None:
        ox, oy = _number(_field(op, "x"), f"{where}.objpos.x"), _number(_field(op, "y"), f"{where}.objpos.y")
        objpos = (ox, oy) if ox is not None and oy is not None else None
    points = None
    if keypoints:
        points = []
        ap = _struct1(_field(r, "annopoints"), f"{where}.annopoints")
        if ap is not None:
            for k, pt in enumerate(_items(_field(ap, "point"))):
                pw = f"{where}.annopoints.point({k + 1})"
                pid, x, y = (_number(_field(pt, f), f"{pw}.{f}") for f in ("id", "x", "y"))
                if pid is None or x is None or y is None:
                    raise MpiiFormatError(f"{pw}: point without id/x/y")
                points.append((int(pid), x, y, _visible(_field(pt, "is_visible"), f"{pw}.is_visible")))
    return head, scale, objpos, points, any(v is not None for v in box) and head is None


def parse_release(mat: dict[str, Any], keypoints: bool = False, source: str = "<mat>") -> MpiiRelease:
    """Every person of a loaded MPII file (`{"RELEASE": ...}` from read_mat or scipy.io.loadmat).

    Errors name `source` and the MATLAB element, e.g. "RELEASE.annolist(12).annorect(2).x1".
    """
    rel = _release(mat, source)
    annolist = _items(_get(rel, "annolist", f"{source}: RELEASE"))
    n = len(annolist)
    img_train = _numbers(_get(rel, "img_train", f"{source}: RELEASE"), f"{source}: RELEASE.img_train")
    acts = _items(_get(rel, "act", f"{source}: RELEASE"))
    single = _items(_get(rel, "single_person", f"{source}: RELEASE"))
    for name, seq in (("img_train", img_train), ("act", acts), ("single_person", single)):
        if len(seq) != n:
            raise MpiiFormatError(f"{source}: RELEASE.{name} has {len(seq)} entries, annolist has {n}")
    version = _text(_field(rel, "version"), f"{source}: RELEASE.version")
    stats: Counter = Counter()
    persons: list[MpiiPerson] = []
    no_people = 0
    for i, ann in enumerate(annolist):
        w = f"{source}: RELEASE.annolist({i + 1})"
        img = _struct1(_get(ann, "image", w), f"{w}.image")
        name = "" if img is None else _text(_field(img, "name"), f"{w}.image.name")
        t = img_train[i]
        if t not in (0.0, 1.0):
            raise MpiiFormatError(f"{source}: RELEASE.img_train({i + 1}) is {t}, expected 0 or 1")
        split = "train" if t == 1.0 else "test"
        aw = f"{source}: RELEASE.act({i + 1})"
        act = _struct1(acts[i], aw)
        if act is None:
            cat, activity, act_id = "", "", -1
        else:
            cat = _text(_field(act, "cat_name"), f"{aw}.cat_name")
            activity = _text(_field(act, "act_name"), f"{aw}.act_name")
            aid = _number(_field(act, "act_id"), f"{aw}.act_id")
            act_id = -1 if aid is None else int(aid)
        sp = {int(v) for v in _numbers(single[i], f"{source}: RELEASE.single_person({i + 1})")}
        vid = _number(_field(ann, "vididx"), f"{w}.vididx")
        fsec = _number(_field(ann, "frame_sec"), f"{w}.frame_sec")
        if (vid is None) != (fsec is None):
            stats["video_fields_inconsistent"] += 1
        rects = _items(_field(ann, "annorect"))
        if not rects:
            no_people += 1
        if sp - set(range(1, len(rects) + 1)):
            stats["single_person_ridx_out_of_range"] += 1
        for r, rect in enumerate(rects, start=1):
            head, scale, objpos, points, partial = _person(rect, f"{w}.annorect({r})", keypoints)
            stats["partial_head_box"] += partial
            persons.append(MpiiPerson(i, r, name, split, cat, activity, act_id, head, scale, objpos,
                                      len(rects), r in sp, points))
    return MpiiRelease(persons, n, no_people, +stats, version)


def load_mat(path: str | Path, reader: str = "fast", keypoints: bool = False) -> dict[str, Any]:
    """Load the RELEASE variable: reader "fast" (matreader; falls back to scipy on formats it does not
    cover) or "scipy" (scipy.io.loadmat, squeeze_me=False, struct_as_record=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {path} (set --mat_file or [mpii] mat_file)")
    fast_error: Exception | None = None
    if reader == "fast":
        try:
            return read_mat(path, ["RELEASE"], skip_fields=() if keypoints else ("annopoints",))
        except MatVariableError as e:  # a readable MAT file that is not MPII's: scipy would not find it either
            raise MpiiFormatError(f"{e}; is {path.name} the MPII annotation file "
                                  "(mpii_human_pose_v1_u12_1.mat)?") from e
        except (MatFormatError, struct.error, UnicodeDecodeError) as e:
            fast_error = e
            log.warning("fast reader cannot read %s (%s); falling back to scipy.io.loadmat", path, e)
    elif reader != "scipy":
        raise ValueError(f"unknown MPII reader {reader!r}; use 'fast' or 'scipy'")
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True, variable_names=["RELEASE"])
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, zlib.error, ... for a damaged file
        why = f"{fast_error}; scipy.io.loadmat: {type(e).__name__}: {e}" if fast_error else f"{type(e).__name__}: {e}"
        raise MpiiFormatError(f"{path}: cannot be read as a MATLAB annotation file ({why}); "
                              "download mpii_human_pose_v1_u12_1.mat again") from e
    if "RELEASE" not in mat:
        found = [n for n, _, _ in scipy.io.whosmat(path)]
        raise MpiiFormatError(f"{path}: no RELEASE variable (found: {', '.join(found) or 'no variables'}); is it "
                              "the MPII annotation file (mpii_human_pose_v1_u12_1.mat)?")
    return mat


def load_release(path: str | Path, reader: str = "fast", keypoints: bool = False) -> MpiiRelease:
    """Read and parse an MPII annotation file."""
    return parse_release(load_mat(path, reader, keypoints), keypoints, str(path))
