"""Fault injection, CSV/JSONL inputs: non-UTF-8 bytes, missing columns, duplicate ids and unknown classes are
errors naming the file and line (issue 13, defects 5 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias.augment import inputs as augment_inputs
from t2i_debias.augment import reader
from t2i_debias.core.errors import InputError, UserError
from t2i_debias.labels import runner
from t2i_debias.stages import analysis as analysis_stage
from tests.helpers.augment_inputs import write_inputs

PEOPLE = [{"occupation": "chef", "gender": "man", "race": "white"},
          {"occupation": "chef", "gender": "woman", "race": "asian"},
          {"occupation": "nurse", "gender": "woman", "race": "black"}]


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_inputs(tmp_path, PEOPLE)


def _latin1_on_line(path: Path, line: int) -> None:
    """Put a Latin-1 'é' (byte 0xe9, invalid UTF-8) into the given 1-based line of a text file."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"chef", b"ch\xe9f", 1) if b"chef" in lines[line - 1] \
        else lines[line - 1] + b"\xe9"
    path.write_bytes(b"\n".join(lines))


# ----------------------------------------------------------------------------- encoding (defect 6)
def test_non_utf8_persons_csv_in_labels_names_file_and_line(inputs) -> None:
    persons, _, _ = inputs
    _latin1_on_line(persons, 3)
    with pytest.raises(InputError, match=rf"^{persons}:3: not UTF-8 text \(byte 0xe9"):
        runner.read_persons(persons)


def test_non_utf8_labels_csv_in_augment_names_file_and_line(inputs) -> None:
    persons, labels, _ = inputs
    _latin1_on_line(labels, 2)
    with pytest.raises(augment_inputs.AugmentInputError, match=rf"^{labels}:2: not UTF-8"):
        augment_inputs.load_people(persons, labels)


def test_non_utf8_labels_csv_in_analysis_names_file_and_line(inputs, tmp_path) -> None:
    _, labels, _ = inputs
    _latin1_on_line(labels, 4)
    with pytest.raises(InputError, match=rf"^{labels}:4: not UTF-8"):
        analysis_stage.analyze_folder(labels, tmp_path / "analysis")


def test_non_utf8_metadata_jsonl_names_file_and_line(tmp_path) -> None:
    root = tmp_path / "enriched"
    root.mkdir()
    rec = {"person_id": "x"}
    (root / "metadata.jsonl").write_bytes(json.dumps(rec).encode() + b"\n" + b'{"anchor_text": "caf\xe9"}\n')
    with pytest.raises(reader.MetadataError, match=rf"^{root / 'metadata.jsonl'}:2: not UTF-8"):
        reader.read_metadata(root)


# ----------------------------------------------------------------------------- labels.csv shape (defect 5)
def _labels(inputs) -> tuple[Path, pd.DataFrame]:
    _, labels, _ = inputs
    return labels, pd.read_csv(labels, dtype=str, keep_default_na=False)


@pytest.mark.parametrize("column", ["race", "occupation", "gender", "status"])
def test_analysis_missing_column_is_an_error_naming_it(inputs, tmp_path, column) -> None:
    labels, df = _labels(inputs)
    df.drop(columns=[column]).to_csv(labels, index=False)
    with pytest.raises(InputError, match=rf"^{labels}: missing column\(s\) \['{column}'\]"):
        analysis_stage.analyze_folder(labels, tmp_path / "analysis")
    assert not (tmp_path / "analysis" / "summary.json").exists()


def test_analysis_duplicate_person_is_an_error_naming_both_lines(inputs, tmp_path) -> None:
    labels, df = _labels(inputs)
    pd.concat([df, df.iloc[[0]]]).to_csv(labels, index=False)
    with pytest.raises(InputError, match=rf"^{labels}:5: duplicate person_id '0_1' \(first on line 2\)"):
        analysis_stage.analyze_folder(labels, tmp_path / "analysis")


def test_analysis_unknown_class_names_the_csv_line(inputs, tmp_path) -> None:
    labels, df = _labels(inputs)
    df.loc[2, "race"] = "martian"
    df.to_csv(labels, index=False)
    with pytest.raises(InputError, match=rf"^{labels}:4: unknown race 'martian'"):
        analysis_stage.analyze_folder(labels, tmp_path / "analysis")


def test_analysis_still_accepts_a_good_file(inputs, tmp_path) -> None:
    labels, _ = _labels(inputs)
    analysis_stage.analyze_folder(labels, tmp_path / "analysis")
    summary = json.loads((tmp_path / "analysis" / "summary.json").read_text())
    assert summary["n_persons"] == 3 and summary["overall"]["attributes"]["race"]["counts"]["black"] == 1


def test_persons_csv_duplicate_id_and_missing_column(inputs) -> None:
    persons, _, _ = inputs
    df = pd.read_csv(persons, dtype=str, keep_default_na=False)
    pd.concat([df, df.iloc[[1]]]).to_csv(persons, index=False)
    with pytest.raises(InputError, match=rf"^{persons}:5: duplicate person_id '1_1' \(first on line 3\)"):
        runner.read_persons(persons)
    df.drop(columns=["image"]).to_csv(persons, index=False)
    with pytest.raises(UserError, match=r"missing column\(s\) \['image'\]"):
        runner.read_persons(persons)
