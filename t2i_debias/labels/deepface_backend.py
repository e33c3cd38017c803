"""The `deepface` labels backend: DeepFace's detector and gender / race / age models, batched.

What goes in (DESIGN.md §1.2, issue 3 §4):
- with a head box: the box expanded by `margin` on each side, clipped, through `detector`
  (default `opencv`); without one: the whole image through `detector`.
- Face choice (documented policy): on a head crop only faces whose centre lies inside the head
  box are this person's; others in the crop are neighbours and are ignored. One such face -> ok;
  several -> `multiple_faces` (or the largest, with multiple_faces="largest"). On a whole image
  every detected face counts, so two people give `multiple_faces` under the default policy.
- The detector finds no face at all in a head crop: with `fallback_skip` (default) the whole crop goes to
  the models as DeepFace's `skip` detector would pass it, and the row is `ok` with n_faces=0 and
  the crop as face box. The head box already locates the face, and Haar cascades miss many
  profile / small MPII heads, so skipping those would bias the labelled set toward frontal faces.
  Without `fallback_skip`, or on a whole image, the status is `no_face`. When the detector finds
  faces in a head crop but none at the head box, they are other people's: `no_face`, no fallback.

Speed: `DeepFace.analyze` runs detection and three VGG forwards per image. Here detection runs per
image (DeepFace's own `extract_faces` and preprocessing), then every face of a batch goes through
each model's own `predict` at once, with the networks in channels-last memory format.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image

from t2i_debias.core.options import MULTIPLE_FACES
from t2i_debias.core.vocab import GENDERS, RACES, STATUS_OK, age_group
from t2i_debias.labels.base import Box, Prediction
from t2i_debias.labels.crops import Crop, CropClassifier

log = logging.getLogger(__name__)

FACE_SIZE = (224, 224)
MODEL_NAMES = ("Gender", "Race", "Age")


class RandomWeightsError(RuntimeError):
    """DeepFace would load the random test weights of t2i_debias.tiny in a real run."""


def select_face(faces: list[Box], head: Box | None, policy: str = "skip") -> tuple[int | None, str]:
    """Pick this person's face among detections: (index or None, status). See the module doc."""
    if policy not in MULTIPLE_FACES:
        raise ValueError(f"multiple_faces policy {policy!r}; expected one of {MULTIPLE_FACES}")
    if head is None:
        cands = list(range(len(faces)))
    else:
        hx1, hy1, hx2, hy2 = head
        cands = [i for i, (x1, y1, x2, y2) in enumerate(faces)
                 if hx1 <= (x1 + x2) / 2 <= hx2 and hy1 <= (y1 + y2) / 2 <= hy2]
    if not cands:
        return None, "no_face"
    if len(cands) == 1:
        return cands[0], STATUS_OK
    if policy == "skip":
        return None, "multiple_faces"
    if policy == "first":
        return cands[0], STATUS_OK
    return max(cands, key=lambda i: (faces[i][2] - faces[i][0]) * (faces[i][3] - faces[i][1])), STATUS_OK


def to_bgr(image: Image.Image) -> np.ndarray:
    """PIL RGB -> the BGR uint8 array DeepFace expects (as cv2.imread gives)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def preprocess_face(face_rgb01: np.ndarray) -> np.ndarray:
    """DeepFace.analyze's preprocessing of one extracted face: RGB->BGR, letterbox to 224x224."""
    from deepface.modules import preprocessing

    return preprocessing.resize_image(img=face_rgb01[:, :, ::-1], target_size=FACE_SIZE)[0]


class DeepFaceClassifier(CropClassifier):
    """Perceived gender, race (DeepFace's six) and age via DeepFace, with batched model calls."""

    name = "deepface"

    def __init__(self, detector: str = "opencv", fallback_skip: bool = True, margin: float = 1.0,
                 batch_size: int = 32, multiple_faces: str = "skip", align: bool = True,
                 device: str = "auto", allow_random_weights: bool = False) -> None:
        if multiple_faces not in MULTIPLE_FACES:
            raise ValueError(f"labels.multiple_faces={multiple_faces!r}; expected one of {MULTIPLE_FACES}")
        self.detector = detector
        self.fallback_skip = fallback_skip
        self.margin = margin
        self.batch_size = max(1, int(batch_size))
        self.multiple_faces = multiple_faces
        self.align = align
        self.random_weights = _random_weights_present()
        if self.random_weights and not allow_random_weights:
            from t2i_debias.tiny.deepface import weights_dir

            raise RandomWeightsError(
                f"{weights_dir()} holds the RANDOM DeepFace weights that t2i_debias.tiny builds for tests; "
                "labels from them are meaningless. Point DEEPFACE_HOME elsewhere (or delete them) so DeepFace "
                "loads its real weights, or run with --smoke.")
        self.clients = _build_clients(device)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "detector": self.detector, "fallback_skip": self.fallback_skip,
                "margin": self.margin, "multiple_faces": self.multiple_faces, "align": self.align,
                "random_weights": self.random_weights, "weights": weights_fingerprint()}

    # ------------------------------------------------------------------ detection
    def _detect(self, bgr: np.ndarray, detector: str) -> list[dict[str, Any]]:
        """DeepFace's extract_faces; [] when its detector finds no face."""
        from deepface.modules import detection
        from deepface.modules.exceptions import FaceNotDetected

        try:
            return detection.extract_faces(img_path=bgr, detector_backend=detector, enforce_detection=True,
                                           align=self.align)
        except FaceNotDetected:
            return []

    def locate(self, crop: Crop) -> tuple[Prediction, np.ndarray | None]:
        """Detect and choose the face in one crop: a Prediction without attributes + its model input."""
        bgr = to_bgr(crop.image)
        faces = self._detect(bgr, self.detector) if self.detector != "skip" else []
        boxes: list[Box] = [(f["facial_area"]["x"], f["facial_area"]["y"],
                             f["facial_area"]["x"] + f["facial_area"]["w"],
                             f["facial_area"]["y"] + f["facial_area"]["h"]) for f in faces]
        if self.detector == "skip":
            idx, status = None, "no_face"
        else:
            idx, status = select_face(boxes, crop.head, self.multiple_faces)
        if idx is not None:
            pred = Prediction(status=STATUS_OK, face_box=crop.to_image_box(boxes[idx]), n_faces=len(faces))
            return pred, preprocess_face(faces[idx]["face"])
        no_detection = self.detector == "skip" or (not faces and crop.is_head_crop and self.fallback_skip)
        if no_detection:
            whole = self._detect(bgr, "skip")[0]
            box = (0.0, 0.0, float(crop.image.width), float(crop.image.height))
            pred = Prediction(status=STATUS_OK, face_box=crop.to_image_box(box), n_faces=len(faces))
            return pred, preprocess_face(whole["face"])
        return Prediction(status=status, n_faces=len(faces)), None

    # ------------------------------------------------------------------ models
    def classify_faces(self, faces: np.ndarray) -> list[dict[str, Any]]:
        """Run the three models' own `predict` on a (n, 224, 224, 3) BGR [0,1] batch."""
        n = faces.shape[0]
        gender = np.atleast_2d(self.clients["Gender"].predict(faces)).reshape(n, -1)
        race = np.atleast_2d(self.clients["Race"].predict(faces)).reshape(n, -1)
        age = np.atleast_1d(self.clients["Age"].predict(faces)).reshape(n)
        from deepface.models.demography.DemographyUtils import GENDER_LABELS, RACE_LABELS

        g_labels = [lab.lower() for lab in GENDER_LABELS]
        r_labels = [lab.lower() for lab in RACE_LABELS]
        if set(g_labels) != set(GENDERS) or set(r_labels) != set(RACES):
            raise RuntimeError(f"DeepFace labels {GENDER_LABELS}/{RACE_LABELS} do not match {GENDERS}/{RACES}")
        out = []
        for i in range(n):
            gp = gender[i] / gender[i].sum()
            rp = race[i] / race[i].sum()
            gi, ri = int(np.argmax(gp)), int(np.argmax(rp))
            a = float(age[i])
            out.append({"gender": g_labels[gi], "gender_conf": float(gp[gi]), "race": r_labels[ri],
                        "race_conf": float(rp[ri]), "age": a, "age_group": age_group(a)})
        return out

    def predict_crops(self, crops: list[Crop]) -> list[Prediction]:
        """Labels for ready-made crops (the runner hashes crops before calling this)."""
        preds: list[Prediction] = []
        inputs: list[tuple[int, np.ndarray]] = []
        for i, crop in enumerate(crops):
            try:
                pred, face = self.locate(crop)
            except Exception as e:  # one bad crop must not stop a 40k-person run: record it
                log.warning("deepface detection failed on input %d: %s: %s", i, type(e).__name__, e)
                pred, face = Prediction(status=f"error:{type(e).__name__}"), None
            preds.append(pred)
            if face is not None:
                inputs.append((i, face))
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start:start + self.batch_size]
            try:
                results = self.classify_faces(np.stack([f for _, f in chunk]).astype(np.float32))
            except Exception as e:  # a failing batch marks its rows, the run goes on
                log.warning("deepface models failed on a batch of %d: %s: %s", len(chunk), type(e).__name__, e)
                for i, _ in chunk:
                    preds[i] = Prediction(status=f"error:{type(e).__name__}", n_faces=preds[i].n_faces)
                continue
            for (i, _), res in zip(chunk, results, strict=True):
                for k, v in res.items():
                    setattr(preds[i], k, v)
        return preds


def weights_fingerprint() -> dict[str, list[int] | None]:
    """(size, mtime) of each weight file DeepFace will load from $DEEPFACE_HOME: part of the labels cache key,
    so swapping in other (e.g. real for random) weights relabels everything instead of reusing old labels."""
    from t2i_debias.tiny.deepface import MODELS, weights_dir

    folder = weights_dir()
    out: dict[str, list[int] | None] = {}
    for _, fname in MODELS.values():
        st = (folder / fname).stat() if (folder / fname).is_file() else None
        out[fname] = None if st is None else [st.st_size, st.st_mtime_ns]
    return out


def _random_weights_present() -> bool:
    """True when the weights DeepFace would load are t2i_debias.tiny's random ones."""
    from t2i_debias.tiny.deepface import MODELS, read_marker, weights_dir

    folder = weights_dir()
    marker = read_marker(folder)
    return any(fname in marker and (folder / fname).exists() for _, fname in MODELS.values())


def _build_clients(device: str) -> dict[str, Any]:
    """DeepFace's (singleton) Gender / Race / Age clients, on `device`, channels-last for speed."""
    import torch
    from deepface.modules import modeling

    clients = {name: modeling.build_model(task="facial_attribute", model_name=name) for name in MODEL_NAMES}
    for client in clients.values():
        if hasattr(client, "model") and isinstance(client.model, torch.nn.Module):
            if device not in ("auto", ""):
                client.device = torch.device(device)
            client.model = client.model.to(client.device, memory_format=torch.channels_last).eval()
    return clients
