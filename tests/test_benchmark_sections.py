"""BENCHMARKS.md sections: each benchmark rewrites only the text between its own markers."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sections import before_heading, replace_section

START, END = "<!-- b:start -->", "<!-- b:end -->"


def test_a_section_replaces_only_its_own_markers(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold\n{END}\n\n## Load test\nkept\n")
    replace_section(path, f"{START}\nnew\n{END}", START, END)
    assert path.read_text() == f"# Benchmarks\n\nintro\n\n{START}\nnew\n{END}\n\n## Load test\nkept\n"


def test_the_first_time_a_section_goes_where_it_is_placed(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n\n## Load test\nkept\n")
    replace_section(path, f"{START}\nnew\n{END}", START, END, before_heading("## Load test"))
    assert path.read_text() == f"# Benchmarks\n\nintro\n\n{START}\nnew\n{END}\n\n## Load test\nkept\n"
    other = tmp_path / "other.md"
    other.write_text("# Benchmarks\n")
    replace_section(other, f"{START}\nx\n{END}", START, END, before_heading("## Missing"))
    assert other.read_text() == f"# Benchmarks\n\n{START}\nx\n{END}\n"
