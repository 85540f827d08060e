"""The results API (udalib.results): the one grouping over seeds on a frame whose numbers are worked out by hand,
the one naming rule of a table row, and the leaderboard of runs built in memory."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from udalib import results, zoo
from udalib.eval.metrics import Scores
from udalib.experiment import Experiment, Run

TARGET = "minicity:target/val"


def _frame() -> pd.DataFrame:
    """Three rows over seeds: ``a`` with seeds 0-2 and a stale seed 3; ``b`` with two run folders of seed 0, no
    value on seed 1 and seed 2; ``c`` with one seed, below 0."""
    lines = [("a", 0, 10.0, ""), ("a", 1, 12.0, ""), ("a", 2, 17.0, ""),
             ("a", 3, 100.0, "its init source_only-s3-0123456789 changed after this run started"),
             ("b", 0, 4.0, ""), ("b", 0, 6.0, ""), ("b", 1, math.nan, ""), ("b", 2, 9.0, ""),
             ("c", 0, -1.0, "")]
    return pd.DataFrame(lines, columns=["row", "seed", "miou", "stale"])


def test_over_seeds_gives_mean_std_n_and_the_seeds_worked_out_by_hand():
    s = results.over_seeds(_frame(), "miou", "row")
    assert list(s.index) == ["a", "b", "c"]  # the order the rows first appear in
    # a: 10, 12, 17 (the stale seed 3 is not in the means): mean 13, sample variance (9 + 1 + 16) / 2 = 13
    assert s.loc["a", "mean"] == pytest.approx(13.0) and s.loc["a", "std"] == pytest.approx(math.sqrt(13.0))
    assert (s.loc["a", "n"], s.loc["a", "ahead"], s.loc["a", "seeds"]) == (3, 3, (0, 1, 2))
    assert s.loc["a", "values"] == (10.0, 12.0, 17.0)
    # b: seed 0's two folders count once (their mean, 5), seed 1 has no value: 5 and 9, mean 7, variance 8
    assert s.loc["b", "mean"] == pytest.approx(7.0) and s.loc["b", "std"] == pytest.approx(math.sqrt(8.0))
    assert (s.loc["b", "n"], s.loc["b", "seeds"], s.loc["b", "values"]) == (2, (0, 2), (5.0, 9.0))
    # c: one seed, no spread; below 0, so not ahead
    assert s.loc["c", "mean"] == -1.0 and math.isnan(s.loc["c", "std"])
    assert (s.loc["c", "n"], s.loc["c", "ahead"]) == (1, 0)


def test_over_seeds_leaves_out_exactly_the_lines_the_store_marks_stale():
    df = _frame()
    with_stale = results.over_seeds(df.assign(stale=""), "miou", "row")  # nothing marked: seed 3 counts
    assert with_stale.loc["a", "n"] == 4 and with_stale.loc["a", "mean"] == pytest.approx(139 / 4)
    assert results.over_seeds(df.drop(columns="stale"), "miou", "row").loc["a", "n"] == 4  # no column: all count
    assert results.per_seed(df, "miou", "row").loc[("a", 2)] == 17.0 and ("a", 3) not in results.per_seed(df)


def test_over_seeds_groups_by_several_columns_and_gives_an_empty_table_for_no_values():
    df = pd.concat([_frame().assign(factor="palette"), _frame().assign(factor="camera", miou=lambda d: d.miou + 1)])
    s = results.over_seeds(df, "miou", ("row", "factor"))
    assert s.loc[("a", "camera"), "mean"] == pytest.approx(14.0) and s.loc[("a", "palette"), "mean"] == 13.0
    empty = results.over_seeds(df.assign(miou=math.nan), "miou", "row")
    assert empty.empty and list(empty.columns) == ["mean", "std", "n", "ahead", "seeds", "values"]


def test_the_margin_over_controls_is_one_function_under_both_names():
    assert results.margin_over_controls is zoo.margin_over_controls
    df = pd.DataFrame({"method": ["maxsquare", "control_lambda0", "adabn"] * 2, "seed": [0, 0, 0, 1, 1, 1],
                       "target_miou": [50.0, 48.0, 47.0, 40.0, 41.0, 44.0]})
    m = results.over_seeds(results.control_margins(df), "margin", "method")
    assert m.loc["maxsquare", "values"] == (2.0, -4.0)
    assert (m.loc["maxsquare", "ahead"], m.loc["maxsquare", "n"]) == (1, 2)


# ------------------------------------------------------------------------------------------ runs in memory
def _scores(miou: float, seconds: float = 1.0) -> Scores:
    return Scores(iou=[miou], miou=miou, pixel_acc=0.0, mean_acc=0.0, class_names=["road"],
                  protocol={"train_seconds": seconds})


def _run(exp: Experiment, miou: float, folder: str | None = None) -> Run:
    return Run(dir=Path("/nowhere") / (folder or exp.name), config=exp, scores={TARGET: _scores(miou)})


def _store() -> list[Run]:
    """Source-only and MaxSquare at 60 and at 30 steps on seeds 0 and 1, each from the source run of its seed."""
    runs = []
    for seed, base in ((0, 30.0), (1, 32.0)):
        source = Experiment(seed=seed, steps=3)
        runs.append(_run(source, base))
        for steps, gain in ((60, 10.0), (30, 5.0)):
            runs.append(_run(zoo.adaptation_experiment("maxsquare", source, steps=steps), base + gain + seed))
    return runs


def test_the_one_naming_rule_tells_experiments_that_share_a_label_apart_by_the_settings_they_differ_in():
    groups = results.group_runs(_store())
    assert list(groups) == ["maxsquare · steps 30", "maxsquare · steps 60", "source_only"]
    assert [r.config.seed for r in groups["maxsquare · steps 60"]] == [0, 1]  # seeds of one experiment together
    # a label of its own keeps the label; one that differs in no setting is told apart by its first run folder
    alone = results.group_runs([r for r in _store() if r.config.steps != 30 or r.config.method != "maxsquare"])
    assert "maxsquare" in alone
    source = Experiment(seed=0, steps=3)
    twins = [_run(source, 30.0), _run(replace(source, evaluate_on=(TARGET,)), 31.0, folder="elsewhere")]
    assert sorted(results.group_runs(twins)) == sorted([f"source_only [{source.name}]", "source_only [elsewhere]"])


def test_the_leaderboard_of_runs_in_memory_is_over_seeds_of_their_frame():
    groups = results.group_runs(_store())
    board = results.leaderboard(groups, TARGET, baseline="source_only")
    assert list(board.index) == list(groups)
    assert board.loc["maxsquare · steps 60", "seeds"] == "0, 1"
    assert board.loc["maxsquare · steps 60", "mIoU"] == pytest.approx(41.5)  # 40 and 43
    assert board.loc["maxsquare · steps 60", "std"] == pytest.approx(math.sqrt(4.5))
    assert board.loc["maxsquare · steps 30", "vs source_only"] == pytest.approx(36.5 - 31.0)
    frame = results.runs_frame(groups)
    assert set(frame.row) == set(groups) and len(frame) == 6 and (frame.stale == "").all()
    assert board["mIoU"].to_dict() == pytest.approx(results.over_seeds(frame, "miou")["mean"].to_dict())
    # only seed 1 asked for: one seed, no spread
    one = results.leaderboard(groups, TARGET, seeds=[1])
    assert one.loc["source_only", "mIoU"] == 32.0 and math.isnan(one.loc["source_only", "std"])
