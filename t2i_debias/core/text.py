"""Small English helpers for prompts, captions and log lines: the indefinite article ("a engineer" never), and
numbers as a person reads them."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

# Vowel letters that sound like a consonant ("a university") and silent h ("an hour").
_CONSONANT_SOUND = re.compile(
    r"^(uni(?![nm])|use|usu|uti|ura|uro|ute|uto|ubi|uku|unanim|eu|ewe|one\b|once\b|ouija)", re.I
)
_VOWEL_SOUND_H = re.compile(r"^(hour|honest|honou?r|heir)", re.I)
# Single letters/acronyms read letter by letter: "an MRI technician", "a UX designer".
_ACRONYM = re.compile(r"^([A-Z]{2,})\b")
_AN_LETTERS = set("AEFHILMNORSX")


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for the first word of `phrase`, by sound, not by letter."""
    word = phrase.strip()
    if not word:
        raise ValueError("empty phrase has no article")
    if m := _ACRONYM.match(word):
        return "an" if m.group(1)[0] in _AN_LETTERS else "a"
    if _VOWEL_SOUND_H.match(word):
        return "an"
    if _CONSONANT_SOUND.match(word):
        return "a"
    return "an" if word[0].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    """`phrase` preceded by its indefinite article: 'an engineer', 'a university professor'."""
    return f"{indefinite_article(phrase)} {phrase.strip()}"


_ARTICLE_SLOT = re.compile(r"\b([Aa]n?) \{(\w+)\}")


def fill_template(template: str, **fields: str) -> str:
    """Format `template`, fixing any 'a {field}' / 'an {field}' to the article the value needs.

    "Professional photo of a {occupation}" with occupation="engineer" gives "...of an engineer".
    """

    def fix(m: re.Match[str]) -> str:
        art, name = m.group(1), m.group(2)
        if name not in fields:
            raise KeyError(f"template {template!r} uses {{{name}}}, which is not given")
        new = indefinite_article(fields[name])
        if art[0].isupper():
            new = new.capitalize()
        return f"{new} {{{name}}}"

    try:
        return _ARTICLE_SLOT.sub(fix, template).format(**fields)
    except KeyError as e:
        raise KeyError(f"template {template!r} uses {e}, which is not given") from None


def figure(value: Any, digits: int = 3) -> str:
    """A number for a log line, to `digits` significant digits (0.0857, not 0.08567774936061379); "n/a" for
    None or NaN. Files keep full precision: only what a person reads is rounded."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    value = float(value)
    return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
