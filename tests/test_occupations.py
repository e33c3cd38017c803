"""The committed activity -> occupation map: coverage of the real activity strings, grammar, lookups."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from t2i_debias.core.text import fill_template, with_article
from t2i_debias.data.occupations import load_occupation_map, normalize_activity, occupations


def _csv_activities(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["activity"]: r["category"] for r in csv.DictReader(fh) if r["activity"]}


def test_map_covers_every_distinct_activity_of_the_real_csv(activities_csv: Path):
    acts = _csv_activities(activities_csv)
    m = load_occupation_map()
    assert len(acts) == 396
    assert set(m) == set(acts)  # exactly: nothing missing, nothing invented
    assert all(m.categories[a] == c for a, c in acts.items())


def test_known_mappings():
    m = load_occupation_map()
    assert m["carpentry, general"] == "carpenter"
    assert m["fire fighter"] == "firefighter"
    assert m["cook, chef"] == "chef"
    assert m["roofing"] == "roofer"  # home repair
    assert m["automobile repair"] == "mechanic"
    assert m["golf"] is None and m["reading"] is None and m["cooking or food preparation"] is None


GERUND_OK = {"building"}  # none today: any "-ing" head noun must be listed here on purpose
GENDERED = re.compile(r"^(?!hu)\w*(m[ae]n|maid|boy|girl|tress|dess|stess)$")  # fisherman, chambermaid, waitress


def test_occupations_are_neutral_lower_case_noun_phrases():
    occs = occupations()
    assert 40 <= len(occs) <= 120
    for o in occs:
        assert o == o.strip().lower(), o
        assert re.fullmatch(r"[a-z]+(?:[ -][a-z]+)*", o), f"{o!r}: letters, spaces and hyphens only"
        words = o.split()
        assert words[0] not in ("a", "an", "the"), f"{o!r} has a leading article"
        assert not (words[-1].endswith("ing") and words[-1] not in GERUND_OK), f"{o!r}: gerund head noun"
        assert not any(GENDERED.search(w) for w in words), f"{o!r}: gendered word"
        phrase = fill_template("a photo of a {occupation}", occupation=o)
        assert phrase == f"a photo of {with_article(o)}"


def test_articles_read_correctly():
    m = load_occupation_map()
    assert fill_template("a photo of a {occupation}", occupation=m["engineer (e.g., mechanical or electrical)"]) \
        == "a photo of an engineer"
    assert with_article(m["active workstation, treadmill desk, walking"]) == "an office worker"
    assert with_article(m["sitting, teaching stretching or yoga, or light effort exercise class"]) == "a yoga instructor"


@pytest.mark.parametrize("variant, expected", [
    ("  Carpentry,  General ", "carpenter"),  # whitespace and case
    ("picking fruitsvegetables", None),  # slash stripped: still a known (non-occupation) activity
    ("childrens games, adults playing (e.g., hopscotch, 4-square, dodgeball, playground apparatus, t-ball", None),
    ("fire fighter, hauling hoses on ground, carrying/hoisting equipment, breaking down walls etc., wearing full gear",
     "firefighter"),  # full-length original with its slash, longer than 100 chars
])
def test_lookup_of_mangled_variants(variant: str, expected):
    m = load_occupation_map()
    assert variant in m
    assert m[variant] == expected and m.get(variant, "absent") == expected


def test_unknown_activity_is_not_found():
    m = load_occupation_map()
    assert "zorbing" not in m and m.get("zorbing", "absent") == "absent"
    with pytest.raises(KeyError):
        m["zorbing"]


def test_normalize_activity():
    assert normalize_activity(" Children's  games/Play_ ") == "childrens gamesplay"
    assert len(normalize_activity("x" * 150)) == 100


def test_bad_map_files_name_the_line(tmp_path: Path):
    p = tmp_path / "m.csv"
    p.write_text("activity,category,occupation\nroofing,home repair,roofer\nroofing,home repair,roofer\n")
    with pytest.raises(ValueError, match=r"m.csv:3: duplicate activity"):
        load_occupation_map(p)
    p.write_text("activity,occupation\nroofing,roofer\n")
    with pytest.raises(ValueError, match="missing column"):
        load_occupation_map(p)
    p.write_text("activity,category,occupation\nroofing,home repair,Roofer\n")
    with pytest.raises(ValueError, match=r"m.csv:2: .*lower-case"):
        load_occupation_map(p)
    with pytest.raises(FileNotFoundError, match="occupation map not found"):
        load_occupation_map(tmp_path / "nope.csv")
