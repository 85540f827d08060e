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


# ------------------------------------------------------------------------- one set of runs behind every table
RESULTS = ROOT / "benchmarks" / "results"


def test_the_standard_table_holds_every_row_and_the_mean_teachers_on_five_seeds():
    import pandas as pd

    from udalib import zoo

    table = pd.read_csv(RESULTS / "minicity_table.csv")
    seeds = table.groupby("method")["seed"].apply(lambda s: sorted(s))
    for row in zoo.ALL_ROWS:
        assert seeds.get(row) == [0, 1, 2, 3, 4], row
    assert not table.duplicated(["method", "seed"]).any()
    mean_teacher = table[table.method.isin(list(zoo.MEAN_TEACHER_ROWS))]
    assert mean_teacher[zoo.MEAN_TEACHER_SCORE].notna().all()  # the column they are compared in


def test_rows_shared_by_two_tables_are_the_same_runs_number_for_number():
    """The mean teacher's table and the standard table (60 steps), the mean teacher's atlas and the atlas (AdaBN,
    source-only, and the composite's rows): trained the same way, so one run has one score everywhere."""
    import pandas as pd

    table = pd.read_csv(RESULTS / "minicity_table.csv")
    mt = pd.read_csv(RESULTS / "minicity_mean_teacher.csv")
    both = table.merge(mt[mt.steps.isin([0, 60])], on=["method", "seed"], suffixes=("", "_mt"))
    assert {"source_only", "adabn", "control_lambda0", "minent", "cbst", "mlsl", "dacs", "dacs_mic"} <= set(both.method)
    assert (both.run == both.run_mt).all()
    # equal to the last digit, but AdaptSegNet multi-level's five runs, which differ by 0.01 at most: the only shared
    # rows whose segmenter learns from a discriminator (at weight 0, control_adaptsegnet, they are equal)
    gap = (both.target_miou - both.target_miou_mt).abs()
    bn_gap = (both.target_miou_target_bn - both.target_miou_target_bn_mt).abs().fillna(0)
    exact = both.method != "adaptsegnet_multi"
    assert gap[exact].max() < 1e-9 and bn_gap[exact].max() < 1e-9
    assert gap[~exact].max() < 0.011 and bn_gap[~exact].max() < 0.011
    atlas = pd.read_csv(RESULTS / "minicity_atlas.csv")
    mt_atlas = pd.read_csv(RESULTS / "minicity_atlas_mean_teacher.csv")
    shared = atlas.merge(mt_atlas, on=["factor", "method", "seed"], suffixes=("", "_mt"))
    assert {"adabn", "source_only"} <= set(shared.method) and len(set(shared.factor)) >= 7
    assert (shared.target_miou - shared.target_miou_mt).abs().max() < 1e-9
    composite = mt_atlas[mt_atlas.factor == "composite"].merge(mt, on=["method", "seed"], suffixes=("", "_mt"))
    composite = composite[composite.steps.isin([0, 60])]
    assert len(composite) and (composite.target_miou - composite.target_miou_mt).abs().max() < 1e-9
