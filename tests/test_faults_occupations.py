"""Fault injection, occupation files and prompt lengths: comments, byte-order marks, non-ASCII names, Unicode
spellings and control characters in an occupations file, and prompts longer than the tokenizer reads, each
either work or fail with one line naming the file and row (issue 23, defects 10 and 13)."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias.core.config import Config
from t2i_debias.core.errors import InputError
from t2i_debias.core.layout import RunLayout
from t2i_debias.data.prompts import read_occupation_file, read_prompts
from t2i_debias.stages import prompts as prompts_stage


def _cfg(tmp_path: Path, occupations: str) -> Config:
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    occ = tmp_path / "occ.txt"
    occ.write_text(occupations, encoding="utf-8")
    cfg.prompts.occupations = str(occ)
    return cfg


def test_hash_starts_a_comment_only_at_the_line_start_or_after_whitespace(tmp_path) -> None:
    f = tmp_path / "o.txt"
    f.write_text("# my list\nC# developer\nplumber  # trade\nF# programmer\n\t# indented comment\n")
    assert read_occupation_file(f) == ["C# developer", "plumber", "F# programmer"]


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path) -> None:
    txt, csv = tmp_path / "o.txt", tmp_path / "o.csv"
    txt.write_bytes("\ufeffnurse\nchef\n".encode())
    csv.write_bytes("\ufeffoccupation\npilot\n".encode())
    assert read_occupation_file(txt) == ["nurse", "chef"]
    assert read_occupation_file(csv) == ["pilot"]


def test_names_without_ascii_letters_get_prompts(tmp_path) -> None:
    cfg = _cfg(tmp_path, "医生\nطبيب\nnurse\n")
    prompts_stage.run_stage(cfg)
    df = read_prompts(RunLayout(cfg.run_dir).prompts_csv)
    assert list(df["occupation"]) == ["医生", "طبيب", "nurse"]
    assert df["prompt_id"].str.startswith("xn_").sum() == 2 and df["prompt_id"].is_unique
    assert df["prompt"].iloc[0] == "Professional photo of a 医生"


def test_a_name_with_nothing_to_name_a_folder_by_is_one_line_naming_the_row(tmp_path) -> None:
    cfg = _cfg(tmp_path, "nurse\n---\n")
    with pytest.raises(InputError) as e:
        prompts_stage.run_stage(cfg)
    assert "occ.txt line 2" in str(e.value) and "\n" not in str(e.value)


def test_nfd_and_nfc_spellings_are_one_occupation_with_a_warning(tmp_path, caplog) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café owner"), unicodedata.normalize("NFD", "café owner")
    assert nfc != nfd
    f = tmp_path / "o.txt"
    f.write_text(f"{nfc}\nchef\n{nfd}\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="t2i_debias.data.prompts"):
        assert read_occupation_file(f) == [nfc, "chef"]
    assert any("line 3" in r.getMessage() and "line 1" in r.getMessage() for r in caplog.records)
    g = tmp_path / "nfd_only.txt"
    g.write_text(f"{nfd}\n", encoding="utf-8")
    assert read_occupation_file(g) == [nfc]  # stored as NFC


@pytest.mark.parametrize("bad", ["nur\x00se", "\u202enurse", "nurse\u2066x\u2069", "a\x1bb"])
def test_nul_and_bidi_controls_are_rejected_naming_the_file_and_row(tmp_path, bad) -> None:
    f = tmp_path / "o.txt"
    f.write_text(f"chef\n{bad}\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_occupation_file(f)
    assert str(e.value).startswith(f"{f} line 2:") and "U+" in str(e.value) and "\n" not in str(e.value)
    c = tmp_path / "o.csv"
    pd.DataFrame({"occupation": ["chef", bad]}).to_csv(c, index=False)
    with pytest.raises(InputError, match="line 3"):
        read_occupation_file(c)


def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path) -> None:
    f = tmp_path / "o.txt"
    f.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_occupation_file(f)


def test_a_prompt_over_the_tokenizer_limit_is_an_error_naming_the_occupation_row_and_limit(tmp_path) -> None:
    long_a = "senior principal " * 40 + "engineer"
    long_b = "senior principal " * 40 + "architect"  # the same first 77 tokens as long_a: same images
    cfg = _cfg(tmp_path, f"nurse\n{long_a}\n{long_b}\n")
    with pytest.raises(InputError) as e:
        prompts_stage.run_stage(cfg)
    msg = str(e.value)
    assert "occ.txt line 2" in msg and "77" in msg and "senior principal" in msg and "\n" not in msg, msg
    assert not RunLayout(cfg.run_dir).prompts_csv.exists()
    _cfg(tmp_path, "nurse\nchef\n")
    prompts_stage.run_stage(cfg)  # short names pass the same check
    assert len(read_prompts(RunLayout(cfg.run_dir).prompts_csv)) == 2
