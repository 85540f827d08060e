"""README.md and benchmarks/RESULTS.md: every measured table is what ``benchmarks/write_results.py`` writes from
``benchmarks/results/*.csv`` (``make results`` rewrites them)."""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def load_writer():
    spec = importlib.util.spec_from_file_location("write_results", ROOT / "benchmarks" / "write_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writer = load_writer()


@pytest.fixture(scope="module")
def files():
    return writer.written()


def test_every_results_block_names_a_table_and_both_files_have_blocks(files):
    for path, (text, _) in files.items():
        names = writer.block_names(text)
        assert names, f"{path.name} has no <!-- results: NAME --> block"
        assert set(names) <= set(writer.TABLES), f"{path.name}: unknown blocks {set(names) - set(writer.TABLES)}"
        assert text.count("<!-- results:") == text.count("<!-- /results -->") == len(names), \
            f"{path.name}: a results block is not closed by <!-- /results -->"
    used = {n for text, _ in files.values() for n in writer.block_names(text)}
    assert used == set(writer.TABLES), f"tables written nowhere: {set(writer.TABLES) - used}"


def test_readme_and_results_md_tables_are_those_the_csvs_give(files):
    for path, (text, expected) in files.items():
        diff = "".join(difflib.unified_diff(text.splitlines(True), expected.splitlines(True), path.name,
                                            f"{path.name} from the CSVs", n=0))
        assert text == expected, f"{path.name} differs from benchmarks/results/*.csv; run `make results`:\n{diff}"


def test_a_hand_edited_number_is_caught(files):
    path = writer.FILES[0]
    text, expected = files[path]
    block = next(writer.BLOCK.finditer(text))
    number = re.search(r"\d+\.\d", block["body"])  # the first measured number of the first table
    start = block.start("body") + number.start()
    edited = text[:start] + str((int(number[0][0]) + 1) % 10) + text[start + 1:]
    assert edited != text
    tables = {m["name"]: m["body"] for m in writer.BLOCK.finditer(expected)}
    assert writer.render(edited, tables) != edited  # the check sees the edit ...
    assert writer.render(edited, tables) == expected  # ... and the script writes the CSV's number back


def test_render_replaces_only_the_body_between_the_markers():
    text = "prose 1.0\n<!-- results: t -->\n| a |\n|---|\n| 1.0 |\n<!-- /results -->\nprose 2.0\n"
    out = writer.render(text, {"t": "| a |\n|---|\n| 3.0 |"})
    assert out == "prose 1.0\n<!-- results: t -->\n\n| a |\n|---|\n| 3.0 |\n\n<!-- /results -->\nprose 2.0\n"
    assert writer.render(out, {"t": "| a |\n|---|\n| 3.0 |"}) == out  # idempotent
    with pytest.raises(KeyError, match="names no table"):
        writer.render(text, {})
