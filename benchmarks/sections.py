"""BENCHMARKS.md is written by several benchmarks, each owning the part between its own markers."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

# Where a section goes the first time: (the file's text, the section) -> the new text.
Placer = Callable[[str, str], str]


def at_the_end(text: str, section: str) -> str:
    return text.rstrip("\n") + "\n\n" + section + "\n"


def before_heading(heading: str) -> Placer:
    """The first time, put the section before `heading` (a line such as "## Load test"), else at the end."""
    def place(text: str, section: str) -> str:
        anchor = "\n" + heading
        if anchor not in text:
            return at_the_end(text, section)
        head, tail = text.split(anchor, 1)
        return head.rstrip("\n") + "\n\n" + section + "\n\n" + heading + tail
    return place


def replace_section(path: Path, section: str, start: str, end: str, first_time: Placer = at_the_end) -> None:
    """Write `section` (it begins with `start` and ends with `end`) into the Markdown file: over the
    old text between the same markers, or, the first time, where `first_time` puts it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = first_time(text, section)
    path.write_text(text)
