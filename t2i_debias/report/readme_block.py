"""Generated blocks in a Markdown file: the text between two marker comments, replaced or read back.

Generic (no world named here): the toy world's README table is written by `python -m
t2i_debias.toyworld.readme_block`, the training ablation's by scripts/ablation.py, both through these functions.
"""

from __future__ import annotations


class ReadmeError(ValueError):
    """A README or results file this module cannot use; the message names the file and the fix."""


def replace_block(text: str, block: str, where: str, begin: str, end: str) -> str:
    """`text` with the part from `begin` to `end` (markers included) replaced by `block`."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ReadmeError(f"{where}: needs exactly one {begin} followed by one {end} (put them where the "
                          "table goes)")
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + block + text[stop:]


def current_block(text: str, where: str, begin: str, end: str) -> str:
    """The block as it stands in `text` (markers included)."""
    replace_block(text, "", where, begin, end)  # validates the markers
    return text[text.index(begin):text.index(end) + len(end)]
