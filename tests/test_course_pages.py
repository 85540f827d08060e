"""The course's front page (``notebooks/README.md``) and glossary agree with the notebooks and the README: every
notebook is linked, each running time is the one the README measured, every glossary entry names a notebook."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FRONT = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
GLOSSARY = (ROOT / "notebooks" / "glossary.md").read_text(encoding="utf-8")


def test_the_front_page_links_every_notebook_and_the_glossary():
    linked = set(re.findall(r"\]\(([0-9]{2}_\w+\.ipynb)\)", FRONT))
    assert set(NOTEBOOKS) <= linked, f"not linked from notebooks/README.md: {sorted(set(NOTEBOOKS) - linked)}"
    assert linked <= set(NOTEBOOKS), f"linked but missing: {sorted(linked - set(NOTEBOOKS))}"
    assert "](glossary.md)" in FRONT and "](README.md)" in GLOSSARY


def test_the_front_page_running_times_are_the_ones_the_readme_measured():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    m = re.search(r"for notebooks 00 to \d\d: ([\d, and]+) s\b", readme)
    assert m, "README.md no longer lists the measured time of each notebook ('for notebooks 00 to 11: ... s')"
    seconds = [int(s) for s in re.findall(r"\d+", m.group(1))]
    assert len(seconds) == len(NOTEBOOKS), "README.md lists one time per notebook, in order"
    rows = {row[0]: row[2] for row in (
        [c.strip() for c in line.strip("|").split("|")] for line in FRONT.splitlines()
        if re.match(r"\| \d\d [A-Za-z]", line))}
    for name, s in zip(NOTEBOOKS, seconds):
        number = name[:2]
        row = next((v for k, v in rows.items() if k.startswith(number + " ")), None)
        assert row == f"{s} s", f"notebooks/README.md gives notebook {number} {row!r}; README.md measured {s} s"


def test_every_glossary_entry_names_a_notebook_of_the_course():
    entries = re.findall(r"^\* \*\*(.+?)\*\*.*?\((\d\d)[;)]", GLOSSARY, flags=re.MULTILINE)
    assert len(entries) >= 20
    numbers = {name[:2] for name in NOTEBOOKS} | {"02"}  # notebook 02 (theory) is named before its file exists
    assert {n for _, n in entries} <= numbers, [e for e in entries if e[1] not in numbers]
