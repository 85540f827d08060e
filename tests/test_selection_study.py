"""benchmarks/selection_study.py: its rank statistics by hand, and a tiny grid that appends rows and skips them."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def load_study():
    path = Path(__file__).parents[1] / "benchmarks" / "selection_study.py"
    spec = importlib.util.spec_from_file_location("selection_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


study = load_study()


def test_spearman_weighted_spearman_and_regret_by_hand():
    score, miou = [1, 2, 3, 4], [10, 20, 40, 30]  # ranks 0 1 2 3 against 0 1 3 2: the top two swapped
    # Spearman: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert study.spearman(score, miou) == pytest.approx(0.8)
    # weighted, power 1: w = (0, 1/3, 1, 2/3) / 2; weighted means 13/6 and 7/3; cov 4/36, variances 17/36, 20/36
    assert study.weighted_spearman(score, miou, power=1) == pytest.approx(4 / math.sqrt(340))
    assert study.weighted_spearman(score, miou, power=0) == pytest.approx(0.8)
    # the best checkpoint ranked last: ranks 0 1 2 3 against 3 0 1 2; Spearman 1 - 6 * 12 / 60 = -0.2; weighted
    # (w = (1, 0, 1/3, 2/3) / 2): means 4/3 and 7/3, cov -7/9, variances 17/9 and 5/9, so -7 / sqrt(85)
    assert study.spearman(score, [40, 10, 20, 30]) == pytest.approx(-0.2)
    assert study.weighted_spearman(score, [40, 10, 20, 30], power=1) == pytest.approx(-7 / math.sqrt(85))
    # the validator picks the last checkpoint (30); the best is 40
    assert study.regret(score, miou) == 10
    assert study.regret([5, 5, 1], [1, 3, 2]) == 2  # equal scores: the first is selected
    assert study.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)  # ties at their average rank


def test_summary_averages_seeds_and_leaves_out_diverged_and_unscored_checkpoints():
    rows = []
    for seed, (score, miou) in enumerate([([1, 2, 3, 4], [10, 20, 40, 30]), ([4, 3, 2, 1], [10, 20, 30, 40])]):
        for step, (s, y) in enumerate(zip(score, miou)):
            rows.append({"method": "minent", "seed": seed, "step": step, "target_miou": y, "diverged": False,
                         **{v: s for v in study.VALIDATORS}})
    rows.append({"method": "minent", "seed": 0, "step": 9, "target_miou": math.nan, "diverged": True,
                 **{v: 100 for v in study.VALIDATORS}})
    rows[0]["atc"] = math.nan
    table = study.summarize(pd.DataFrame(rows), power=1).set_index("validator")
    assert table.loc["entropy", "spearman"] == pytest.approx((0.8 - 1.0) / 2)
    assert table.loc["entropy", "regret"] == pytest.approx((10 + 30) / 2)
    assert table.loc["entropy", "regret_std"] == pytest.approx(np.std([10, 30], ddof=1))
    assert table.loc["entropy", "spearman_std"] == pytest.approx(np.std([0.8, -1.0], ddof=1))
    assert table.loc["entropy", "seeds"] == 2
    # seed 0 without its first checkpoint for ATC: scores 2 3 4 against 20 40 30
    assert table.loc["atc", "spearman"] == pytest.approx((0.5 - 1.0) / 2)


def test_a_tiny_grid_appends_rows_and_a_rerun_skips_them(tiny_minicity, tmp_path, monkeypatch):
    monkeypatch.setenv("UDALIB_DATA", str(tiny_minicity.parent))
    monkeypatch.setenv("UDALIB_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "selection.csv"
    grid = dict(methods=("minent",), multipliers=(0.0, 1.0, math.inf), seeds=(0,), steps=4, every=2, source_steps=2,
                batch_size=4, model_args={"width": 4}, pixels=64)
    assert study.run_grid(out, **grid) == 6
    df = pd.read_csv(out)
    assert sorted(df["weight"].unique()) == [0.0, 2.0, math.inf]  # the MiniCity preset's lambda_target is 2
    assert list(df["step"]) == [2, 4, 2, 4, 2, 4]
    sane = df[df["weight"] < math.inf]
    assert not sane["diverged"].any() and sane[["target_miou", *study.VALIDATORS]].notna().all().all()
    # an infinite weight: the first update makes the weights non-finite, fit stops, the rows say so
    assert df[df["weight"] == math.inf]["diverged"].all() and df[df["weight"] == math.inf]["target_miou"].isna().all()

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished grid trains nothing")

    monkeypatch.setattr(study, "get_or_train", no_training)
    assert study.run_grid(out, **grid) == 0
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:-3]))  # a kill lost the last rows
    monkeypatch.undo()
    monkeypatch.setenv("UDALIB_DATA", str(tiny_minicity.parent))
    monkeypatch.setenv("UDALIB_RUNS", str(tmp_path / "runs"))
    assert study.run_grid(out, **grid) == 3
    again = pd.read_csv(out)
    pd.testing.assert_frame_equal(again.drop(columns="seconds").iloc[:4],
                                  df.drop(columns="seconds").iloc[:4], check_dtype=False)
    # the rescored checkpoint at step 4 of the preset's run is the same model and scores as before
    redo = again[(again["weight"] == 2.0) & (again["step"] == 4)].drop(columns="seconds").reset_index(drop=True)
    first = df[(df["weight"] == 2.0) & (df["step"] == 4)].drop(columns="seconds").reset_index(drop=True)
    pd.testing.assert_frame_equal(redo, first, check_dtype=False)
    table = study.summarize(again)
    assert set(table["validator"]) == set(study.VALIDATORS) and (table["method"] == "minent").all()


def test_bad_grid_arguments_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="has no target weight to vary here; choose from"):
        study.run_grid(tmp_path / "x.csv", methods=("tent",))
    with pytest.raises(ValueError, match="every=0 must be an integer from 1 to steps=4"):
        study.run_grid(tmp_path / "x.csv", steps=4, every=0)


def test_each_cell_scales_one_of_the_methods_declared_target_weights():
    from udalib.methods import control_args, target_weights

    for method, field in study.WEIGHT.items():
        assert field in target_weights(method), method
    # at multiplier 0 a cell is its method's lambda = 0 control (the other declared weights of single-level
    # AdaptSegNet act on no output, so zeroing only the main one gives the same updates)
    src = study.source_experiment(0, steps=2, batch_size=2, model_args={})
    exp = study.cell_experiment("maxsquare", 0.0, src, 4)
    assert exp.method_args == control_args("maxsquare")
