"""metadata.jsonl reader: good lines load; every kind of bad line is rejected with file and line number."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from t2i_debias.augment.reader import MetadataError, Triplet, read_metadata
from t2i_debias.augment.schema import FILE_FIELDS, GENERATED, METADATA_FIELDS, measured_fields


def _record(pid: str) -> dict[str, Any]:
    return {
        "file_name": f"images/anchor/{pid}.png", "positive_file_name": f"images/positive/{pid}.png",
        "negative_file_name": f"images/negative/{pid}.png",
        "anchor_text": "a photo of a chef", "positive_text": "a photo of an Asian woman working as a chef",
        "negative_text": "a photo of a White man working as a chef", "occupation": "chef", "person_id": pid,
        "anchor_gender": "man", "anchor_race": "white", "anchor_age_group": "young",
        "positive_gender": "woman", "positive_race": "asian", "positive_age_group": "young",
        "negative_gender": "man", "negative_race": "white", "negative_age_group": None,
        "generator": "tiny", "seed": 12, "positive_tries": 1, "positive_agreement": None,
        "negative_tries": 2, "negative_agreement": True,
        "positive_measured_gender": "woman", "positive_measured_race": "asian", "positive_measured_age_group": None,
        "positive_measured_gender_conf": 0.75, "positive_measured_race_conf": 1, "positive_measured_age_conf": None,
        "positive_verified": True,
        "negative_measured_gender": None, "negative_measured_race": None, "negative_measured_age_group": None,
        "negative_measured_gender_conf": None, "negative_measured_race_conf": None, "negative_measured_age_conf": None,
        "negative_verified": False,
    }


def _folder(root: Path, lines: list[str]) -> Path:
    for pid in ("1_1", "2_1", "3_1"):
        for m in ("anchor", "positive", "negative"):
            (root / "images" / m).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4)).save(root / "images" / m / f"{pid}.png")
    (root / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def test_good_metadata_reads_in_order(tmp_path: Path) -> None:
    recs = [_record("1_1"), _record("2_1")]
    assert tuple(recs[0]) == METADATA_FIELDS
    got = read_metadata(_folder(tmp_path, [json.dumps(recs[0]), "", json.dumps(recs[1])]))
    assert [t.person_id for t in got] == ["1_1", "2_1"]
    t = got[0]
    assert isinstance(t, Triplet) and t.anchor_path == (tmp_path / "images/anchor/1_1.png").resolve()
    assert t.positive_race == "asian" and t.negative_age_group is None and t.negative_tries == 2
    assert (t.positive_measured_gender, t.positive_measured_gender_conf, t.positive_verified) == ("woman", 0.75, True)
    assert isinstance(t.positive_measured_race_conf, float) and t.positive_measured_race_conf == 1.0
    assert t.negative_measured_race is None and t.negative_verified is False


def _bad(field: str, value: Any) -> dict[str, Any]:
    r = _record("3_1")
    if value is KeyError:
        del r[field]
    else:
        r[field] = value
    return r


@pytest.mark.parametrize("bad, msg", [
    (_bad("positive_file_name", "../outside.png"), "escapes"),
    (_bad("file_name", "/etc/passwd"), "must be relative"),
    (_bad("negative_file_name", "images/negative/nope.png"), "no such file"),
    (_bad("file_name", "images/anchor/../../x.png"), "escapes"),
    (_bad("positive_race", "caucasian"), "positive_race"),
    (_bad("anchor_gender", "male"), "anchor_gender"),
    (_bad("negative_age_group", "teen"), "negative_age_group"),
    (_bad("seed", "12"), "seed"),
    (_bad("positive_tries", 0), "positive_tries"),
    (_bad("negative_agreement", "yes"), "negative_agreement"),
    (_bad("occupation", ""), "occupation"),
    (_bad("anchor_text", KeyError), "missing fields"),
    (_bad("positive_measured_race", "caucasian"), "positive_measured_race"),
    (_bad("negative_measured_age_group", "teen"), "negative_measured_age_group"),
    (_bad("positive_measured_gender_conf", 1.5), "positive_measured_gender_conf"),
    (_bad("positive_measured_race_conf", "0.5"), "positive_measured_race_conf"),
    (_bad("negative_measured_age_conf", True), "negative_measured_age_conf"),
    (_bad("negative_verified", None), "negative_verified"),
    (_bad("positive_verified", 1), "positive_verified"),
    (_bad("negative_verified", True), "nothing was measured"),
    (_bad("positive_measured_gender", KeyError), "rebuild it with --force"),
    ({**_record("3_1"), "extra": 1}, "unknown fields"),
    ("{not json", "Expecting"),
    ([1, 2], "JSON object"),
    (_record("1_1"), "already on line 1"),
])
def test_bad_line_names_file_and_line(tmp_path: Path, bad: Any, msg: str) -> None:
    line = bad if isinstance(bad, str) else json.dumps(bad)
    root = _folder(tmp_path, [json.dumps(_record("1_1")), json.dumps(_record("2_1")), line])
    with pytest.raises(MetadataError) as e:
        read_metadata(root)
    assert "metadata.jsonl:3:" in str(e.value) and msg in str(e.value)


def test_old_metadata_without_measured_fields_says_rebuild(tmp_path: Path) -> None:
    """An enriched/ from before this schema fails on its first line, naming the fix."""
    old = {k: v for k, v in _record("1_1").items() if "measured" not in k and "verified" not in k}
    with pytest.raises(MetadataError, match=r"metadata.jsonl:1: missing fields .*rebuild it with --force"):
        read_metadata(_folder(tmp_path, [json.dumps(old)]))


def test_reader_does_not_load_the_generation_stack() -> None:
    """Reading training data must not import build.py (diffusers, torch, the labels backends)."""
    code = ("import sys, t2i_debias.augment.reader as r; "
            "print(sorted(m for m in ('t2i_debias.augment.build', 'diffusers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_schema_is_stated_once_by_triplet_record() -> None:
    """METADATA_FIELDS is TripletRecord's field order: file names first, each member's measured fields in order."""
    assert METADATA_FIELDS[:len(FILE_FIELDS)] == FILE_FIELDS
    for m in GENERATED:
        names = measured_fields(m)
        start = METADATA_FIELDS.index(names[0])
        assert METADATA_FIELDS[start:start + len(names)] == names
    assert tuple(f.name for f in fields(Triplet)) == (*METADATA_FIELDS, "anchor_path", "positive_path", "negative_path")


def test_missing_metadata_file(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="not found"):
        read_metadata(tmp_path)
