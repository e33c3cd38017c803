"""prompts.csv: occupations x templates, articles, held-out split, validation, the stage script."""

from __future__ import annotations

import pandas as pd
import pytest

from t2i_debias.data.prompts import (
    COLUMNS,
    DEFAULT_OCCUPATIONS,
    FACE_TEMPLATE,
    build_prompts,
    occupation_list,
    read_occupation_file,
    read_prompts,
)


def test_default_list_is_the_reference_25():
    occs = occupation_list("default")
    assert len(occs) == 25 and len(set(occs)) == 25
    assert occs[0] == "chef" and "household member" in occs and occs[-1] == "receptionist"


def test_prompts_with_articles_templates_and_split():
    df = build_prompts(["engineer", "household member", "chef"],
                       ["Professional photo of a {occupation}", FACE_TEMPLATE], heldout=["chef"])
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 6
    row = df.set_index("prompt_id").loc["engineer"]
    assert row["prompt"] == "Professional photo of an engineer"
    assert df.set_index("prompt_id").loc["household_member__t1", "prompt"] == \
        "Professional photo of the face of a household member"
    assert set(df.loc[df["occupation"] == "chef", "split"]) == {"heldout"}
    assert set(df.loc[df["occupation"] != "chef", "split"]) == {"train"}


def test_heldout_occupations_missing_from_the_list_are_added_as_heldout():
    df = build_prompts(["chef"], ["a {occupation}"], heldout=["pilot"])
    assert list(df["occupation"]) == ["chef", "pilot"]
    assert list(df["split"]) == ["train", "heldout"]


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="no {occupation} slot"):
        build_prompts(["chef"], ["a photo"])
    with pytest.raises(ValueError, match="duplicate prompt ids"):
        build_prompts(["sous-chef", "sous chef"], ["a {occupation}"])


def test_occupation_files(tmp_path):
    txt = tmp_path / "o.txt"
    txt.write_text("# my list\nnurse\n\nplumber  # trade\nnurse\n")
    assert read_occupation_file(txt) == ["nurse", "plumber"]
    csv = tmp_path / "o.csv"
    pd.DataFrame({"occupation": ["pilot", "", "baker"]}).to_csv(csv, index=False)
    assert read_occupation_file(csv) == ["pilot", "baker"]
    with pytest.raises(FileNotFoundError):
        read_occupation_file(tmp_path / "missing.txt")


def test_read_prompts_rejects_unsafe_ids(tmp_path):
    p = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt_id": ["ok", "../evil"], "occupation": ["a", "b"], "prompt": ["x", "y"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="line 3"):
        read_prompts(p)


def test_stage_script_from_flags(tmp_path):
    from tests.helpers.scripts import load_script

    generate_prompts = load_script("evaluation/generate_prompts.py")

    generate_prompts.main(["--run_dir", str(tmp_path / "run"), "--heldout", "nurse", "doctor"])
    df = read_prompts(tmp_path / "run" / "prompts.csv")
    assert len(df) == len(DEFAULT_OCCUPATIONS)
    assert sorted(df.loc[df["split"] == "heldout", "occupation"]) == ["doctor", "nurse"]
    assert (tmp_path / "run" / "prompts" / "_manifest.json").is_file()


def test_mpii_occupations_from_the_packaged_map():
    occs = occupation_list("mpii")
    assert len(occs) > 10 and len(set(occs)) == len(occs)
    assert "carpenter" in occs and "" not in occs
