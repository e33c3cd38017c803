"""Generated blocks in a Markdown file: the text between two marker comments, replaced or read back.

`python -m t2i_debias.report.readme_block` (documented in the README and DESIGN.md) writes the README's
toy-world table; the toy world owns that table (t2i_debias.toyworld.readme_block), so the command is
handed to it, by module name, only when run as a script: importing this module loads nothing of the toy.
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


if __name__ == "__main__":  # the documented command: the toy world's table, which only it can write
    import runpy

    runpy.run_module("t2i_debias.toyworld.readme_block", run_name="__main__", alter_sys=True)
