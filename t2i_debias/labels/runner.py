"""Labelling engine of the labels stage: one row per MPII person in `labels/labels.csv`, resumable after a kill.

Every person read from `mpii/persons.csv` gets exactly one row with a status (persons in = rows
out). Results are cached by the crop's content hash in an append-only journal
(`labels/.journal.jsonl`, one fsync'ed JSON line per result, keyed by crop hash + classifier
settings), so a rerun, or a kill -9 and a rerun, recomputes nothing already labelled; labels.csv
is written atomically at the end. `classify_files` is the same engine for any list of image files
(e.g. generated images in the bias evaluation).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
from PIL import Image

from t2i_debias.core.errors import RunLockedError
from t2i_debias.core.files import hash_obj, safe_join
from t2i_debias.core.image_files import is_constant
from t2i_debias.core.vocab import STATUS_BLANK, STATUS_BOX_OUTSIDE, STATUS_OK
from t2i_debias.labels.base import Box, DemographicClassifier, Prediction
from t2i_debias.labels.crops import (
    Crop,
    ImageLoadError,
    box_overlaps,
    image_sha256,
    load_image,
    make_crop,
    valid_box,
)

log = logging.getLogger(__name__)

LABEL_COLUMNS: tuple[str, ...] = (
    "person_id", "image", "occupation", "status", "gender", "gender_conf", "race", "race_conf", "age",
    "age_group", "face_x1", "face_y1", "face_x2", "face_y2", "n_faces", "crop_sha256", "backend",
)
PERSON_COLUMNS: tuple[str, ...] = ("person_id", "image", "occupation", "head_x1", "head_y1", "head_x2", "head_y2")
JOURNAL = ".journal.jsonl"
# Statuses worth caching: a deterministic answer about the crop. Errors may be transient (OOM, I/O).
CACHEABLE = (STATUS_OK, "no_face", "multiple_faces")


# ----------------------------------------------------------------------------- journal
class Journal:
    """Append-only JSONL cache of predictions keyed by crop hash + classifier settings.

    Each line is flushed and fsync'ed, so a kill loses at most the line being written; a
    truncated last line is ignored (and cut off before appending). Held under an exclusive lock.
    """

    def __init__(self, path: str | Path, classifier_key: str) -> None:
        self.path = Path(path)
        self.classifier_key = classifier_key
        self.entries: dict[str, dict[str, Any]] = {}
        self.ignored = 0
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            self._fh.close()
            raise RunLockedError(f"{self.path} is locked: another labels run is writing to this folder; wait for it "
                                 "to finish or stop it") from e
        self._load()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def _load(self) -> None:
        assert self._fh is not None
        self._fh.seek(0)
        data = self._fh.read()
        good_end = data.rfind(b"\n") + 1  # bytes after the last newline are a line cut by a kill
        for n, line in enumerate(data[:good_end].splitlines(), 1):
            try:
                rec = json.loads(line)
                if rec["clf"] == self.classifier_key:
                    self.entries[rec["key"]] = rec["pred"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                self.ignored += 1
                log.warning("%s line %d is not a journal record; ignored", self.path, n)
        if good_end < len(data):
            self.ignored += 1
            log.warning("%s ends with a truncated line (killed run?); it is dropped", self.path)
            self._fh.truncate(good_end)
        self._fh.seek(0, os.SEEK_END)

    def get(self, key: str) -> Prediction | None:
        rec = self.entries.get(key)
        return None if rec is None else prediction_from_dict(rec)

    def add(self, items: Sequence[tuple[str, Prediction]]) -> None:
        """Append results (one line each), then flush and fsync once."""
        assert self._fh is not None, "use Journal as a context manager"
        for key, pred in items:
            rec = {"clf": self.classifier_key, "key": key, "pred": prediction_to_dict(pred)}
            self._fh.write((json.dumps(rec, sort_keys=True) + "\n").encode("ascii"))
            self.entries[key] = rec["pred"]
        self._fh.flush()
        os.fsync(self._fh.fileno())


def prediction_to_dict(pred: Prediction) -> dict[str, Any]:
    d = asdict(pred)
    d["face_box"] = list(pred.face_box) if pred.face_box is not None else None
    return d


def prediction_from_dict(d: dict[str, Any]) -> Prediction:
    d = dict(d)
    if d.get("face_box") is not None:
        d["face_box"] = tuple(d["face_box"])
    return Prediction(**d)


def classifier_key(classifier: DemographicClassifier) -> str:
    """Hash of the settings that determine a classifier's answers."""
    return hash_obj(classifier.describe())[:16]


# ----------------------------------------------------------------------------- engine
@dataclass
class Item:
    """One thing to classify: an image file and an optional head box."""

    path: Path
    box: Box | None = None


@dataclass
class Result:
    """A prediction plus the crop hash it was cached under ('' when no image could be read)."""

    prediction: Prediction
    crop_sha256: str = ""
    cached: bool = False


@dataclass
class Stats:
    """How many results came from the journal and how many were computed."""

    cached: int = 0
    computed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def _crop(classifier: DemographicClassifier, image: Image.Image, box: Box | None) -> Crop:
    """What the classifier sees: backends with a `margin` crop around the box; others see the whole image."""
    margin = getattr(classifier, "margin", None)
    return make_crop(image, box, margin) if margin is not None else make_crop(image, None, 0.0)


def _crop_key(crop: Crop) -> tuple[str, str]:
    """(crop_sha256, cache key) of a classifier input."""
    sha = image_sha256(crop.image)
    return sha, hash_obj({"crop": sha, "head": crop.head})


def crop_problem(classifier: DemographicClassifier, image: Image.Image, box: Box | None, crop: Crop) -> str | None:
    """Why a person's crop cannot be labelled though its file reads: the head box misses the image
    (box_outside_image), or the crop is one colour everywhere (blank_image); None when it can."""
    if getattr(classifier, "margin", None) is not None and valid_box(box) and not box_overlaps(box, *image.size):
        return STATUS_BOX_OUTSIDE
    return STATUS_BLANK if is_constant(crop.image) else None


class _ImageCache:
    """The last few decoded images: MPII persons of one image come in a row."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.items: dict[Path, Image.Image | ImageLoadError] = {}

    def get(self, path: Path) -> Image.Image:
        if path not in self.items:
            try:
                self.items[path] = load_image(path)
            except ImageLoadError as e:
                self.items[path] = e
            while len(self.items) > self.size:
                self.items.pop(next(iter(self.items)))
        got = self.items[path]
        if isinstance(got, ImageLoadError):
            raise got
        return got


_Pending = tuple[int, Image.Image, Box | None, str, str]  # (item index, image, head box, crop sha256, cache key)


def _settled(classifier: DemographicClassifier, cache: _ImageCache, item: Item, journal: Journal | None,
             check_crops: bool) -> Result | tuple[Image.Image, str, str]:
    """An item's Result when it needs no classifier (unreadable image, nothing to label, journal hit), else
    (image, crop sha256, cache key) to classify."""
    try:
        image = cache.get(item.path)
    except ImageLoadError as e:
        (log.debug if e.status == "missing_image" else log.warning)("skipped (%s): %s", e.status, e)
        return Result(Prediction(status=e.status))
    crop = _crop(classifier, image, item.box)
    why = crop_problem(classifier, image, item.box, crop) if check_crops else None
    if why is not None:
        log.warning("skipped (%s): %s, head box %s, image %dx%d", why, item.path, item.box, *image.size)
        return Result(Prediction(status=why))
    sha, key = _crop_key(crop)
    hit = journal.get(key) if journal is not None else None
    return Result(hit, sha, cached=True) if hit is not None else (image, sha, key)


def _classify_batch(classifier: DemographicClassifier, pending: list[_Pending], journal: Journal | None
                    ) -> list[tuple[int, Result]]:
    """(item index, Result) of one batch; a failing batch is recorded per row (error:<type>), the run goes on;
    deterministic answers are appended to `journal`."""
    try:
        preds = classifier.predict([p[1] for p in pending], [p[2] for p in pending])
        if len(preds) != len(pending):
            raise RuntimeError(f"{classifier.name} returned {len(preds)} predictions for {len(pending)} images")
    except Exception as e:  # a failing batch is recorded per row; the run goes on
        log.warning("%s failed on a batch of %d: %s: %s", classifier.name, len(pending), type(e).__name__, e)
        preds = [Prediction(status=f"error:{type(e).__name__}") for _ in pending]
    done = [(key, pred) for (_, _, _, _, key), pred in zip(pending, preds, strict=True) if pred.status in CACHEABLE]
    if journal is not None and done:
        journal.add(done)
    return [(i, Result(pred, sha)) for (i, _, _, sha, _), pred in zip(pending, preds, strict=True)]


def classify_items(classifier: DemographicClassifier, items: Sequence[Item], batch_size: int = 32,
                   journal: Journal | None = None, desc: str = "labels", check_crops: bool = False
                   ) -> tuple[list[Result], Stats]:
    """Classify every item, in order, reusing and extending `journal`; one Result per item, never fewer.

    `check_crops`: a crop with nothing to label (`crop_problem`) gets that skip status, never `ok`.
    """
    from tqdm.auto import tqdm

    results: list[Result | None] = [None] * len(items)
    stats = Stats()
    cache = _ImageCache()
    pending: list[_Pending] = []

    def flush() -> None:
        if pending:
            for i, result in _classify_batch(classifier, pending, journal):
                results[i] = result
            stats.computed += len(pending)
            bar.update(len(pending))
            pending.clear()

    with tqdm(total=len(items), desc=desc, unit="img", dynamic_ncols=True, mininterval=1.0) as bar:
        for i, item in enumerate(items):
            got = _settled(classifier, cache, item, journal, check_crops)
            if isinstance(got, Result):
                results[i] = got
                stats.cached += got.cached
                bar.update(1)
                continue
            pending.append((i, got[0], item.box, got[1], got[2]))
            if len(pending) >= batch_size:
                flush()
        flush()
    out = [r for r in results if r is not None]
    if len(out) != len(items):  # cannot happen: every branch above sets its result
        raise RuntimeError(f"{len(items)} items but {len(out)} results")
    for r in out:
        stats.statuses[r.prediction.status] = stats.statuses.get(r.prediction.status, 0) + 1
    return out, stats


def classify_files(classifier: DemographicClassifier, paths: Sequence[str | Path],
                   boxes: Sequence[Box | None] | None = None, batch_size: int = 32,
                   journal: Journal | None = None, desc: str = "classify") -> list[Prediction]:
    """One Prediction per image file, in order (missing_image / unreadable_image for bad files)."""
    boxes = list(boxes) if boxes is not None else [None] * len(paths)
    if len(boxes) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(boxes)} boxes")
    items = [Item(Path(p), b) for p, b in zip(paths, boxes, strict=True)]
    results, _ = classify_items(classifier, items, batch_size, journal, desc)
    return [r.prediction for r in results]


# ----------------------------------------------------------------------------- persons.csv -> labels.csv
def read_persons(path: str | Path) -> list[dict[str, str]]:
    """Rows of persons.csv as strings; bad encoding, a missing column or a duplicate person_id is an error
    naming the file (and line)."""
    from t2i_debias.core.tables import read_csv

    return read_csv(path, PERSON_COLUMNS, unique="person_id").to_dict("records")


def person_box(row: dict[str, str], where: str) -> Box | None:
    """The head box of a persons.csv row; None when empty or degenerate; error on non-numbers."""
    vals = [row[c].strip() for c in ("head_x1", "head_y1", "head_x2", "head_y2")]
    if not any(vals):
        return None
    try:
        box = tuple(float(v) for v in vals)
    except ValueError as e:
        raise ValueError(f"{where}: head box {vals} is not numeric") from e
    if not valid_box(box):
        log.warning("%s: degenerate head box %s; using the whole image", where, vals)
        return None
    return box  # type: ignore[return-value]


def _fmt(v: Any, digits: int) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), digits) if isinstance(v, float) else v


def label_row(person: dict[str, str], result: Result, backend: str) -> dict[str, Any]:
    """One labels.csv row (LABEL_COLUMNS) from a person and its result."""
    p = result.prediction
    box = p.face_box or (None, None, None, None)
    row = {"person_id": person["person_id"], "image": person["image"], "occupation": person["occupation"],
           "status": p.status, "gender": p.gender, "gender_conf": _fmt(p.gender_conf, 6), "race": p.race,
           "race_conf": _fmt(p.race_conf, 6), "age": _fmt(p.age, 2), "age_group": p.age_group,
           "face_x1": _fmt(box[0], 2), "face_y1": _fmt(box[1], 2), "face_x2": _fmt(box[2], 2),
           "face_y2": _fmt(box[3], 2), "n_faces": p.n_faces, "crop_sha256": result.crop_sha256, "backend": backend}
    return row


# ----------------------------------------------------------------------------- generated images
PREDICTION_COLUMNS: tuple[str, ...] = (
    "model", "prompt_id", "occupation", "prompt", "seed", "file", "status", "gender", "gender_conf", "race",
    "race_conf", "age", "age_group", "face_x1", "face_y1", "face_x2", "face_y2", "n_faces", "backend",
)


def classify_generated(model_dir: Path, classifier: DemographicClassifier, journal_path: Path | None = None,
                       batch_size: int = 32, desc: str | None = None) -> pd.DataFrame:
    """predictions.csv rows for every image listed in `model_dir/metadata.csv`, in its order."""
    from t2i_debias.sampling import read_metadata

    meta = read_metadata(model_dir)
    paths = [safe_join(model_dir, f) for f in meta["file"]]
    desc = desc or f"bias {model_dir.name}"
    if journal_path is not None:
        with Journal(journal_path, classifier_key(classifier)) as journal:
            preds = classify_files(classifier, paths, batch_size=batch_size, journal=journal, desc=desc)
    else:
        preds = classify_files(classifier, paths, batch_size=batch_size, desc=desc)
    rows = []
    for m, pred in zip(meta.to_dict("records"), preds, strict=True):
        if _is_true(m.get("constant", False)):
            pred = Prediction(status=STATUS_BLANK)
        row = {"model": m.get("model", model_dir.name), "prompt_id": m["prompt_id"],
               "occupation": m.get("occupation", ""), "prompt": m.get("prompt", ""), "seed": m["seed"],
               "file": m["file"], **pred.to_row(), "backend": classifier.name}
        rows.append(row)
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in PREDICTION_COLUMNS]
    return df.reindex(columns=list(PREDICTION_COLUMNS) + extra)


def _is_true(v: Any) -> bool:
    """A metadata.csv boolean cell (pandas reads True/False, a hand-written file may say true/1)."""
    return str(v).strip().lower() in ("true", "1")
