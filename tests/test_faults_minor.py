"""Fault injection, the minor items of issue 13: a full disk names the file; the labels cache key follows the
DeepFace weight files in $DEEPFACE_HOME."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from t2i_debias.core import files
from t2i_debias.core.errors import UserError


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "labels" / "labels.csv"
    files.atomic_write_text(target, "old\n")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError) as e:
        files.atomic_write_text(target, "new\n")
    assert isinstance(e.value, UserError) and e.value.errno == errno.ENOSPC
    assert str(target) in str(e.value) and "free space" in str(e.value)
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["labels.csv"]


def test_the_labels_cache_key_follows_the_deepface_weight_files(tmp_path: Path, monkeypatch) -> None:
    from t2i_debias.labels import deepface_backend
    from t2i_debias.tiny.deepface import MODELS, weights_dir

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    folder = weights_dir()
    folder.mkdir(parents=True)
    for _, fname in MODELS.values():
        (folder / fname).write_bytes(b"random test weights")
    first = deepface_backend.weights_fingerprint()
    assert all(v is not None for v in first.values())
    gender = MODELS["Gender"][1]
    (folder / gender).write_bytes(b"the real weights, another size")  # swapped in by the user
    second = deepface_backend.weights_fingerprint()
    assert second[gender] != first[gender]
    clf = object.__new__(deepface_backend.DeepFaceClassifier)  # describe() only: no DeepFace models loaded
    clf.detector, clf.fallback_skip, clf.margin, clf.multiple_faces, clf.align, clf.random_weights = (
        "opencv", True, 1.0, "skip", True, False)
    from t2i_debias.labels.runner import classifier_key

    key = classifier_key(clf)
    (folder / gender).write_bytes(b"yet other weights, longer than before")
    assert classifier_key(clf) != key
