"""The mean teacher's atlas: which runs it trains on a factor, the column its margins are read in, and each row
against its own controls."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from udalib import zoo
from udalib.results import atlas_margins, works_and_breaks

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _script():
    sys.path.insert(0, str(BENCHMARKS))  # it imports its sibling scripts, as when run from the command line
    try:
        spec = importlib.util.spec_from_file_location("mean_teacher_atlas", BENCHMARKS / "mean_teacher_atlas.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_it_runs_the_five_rows_then_the_ablations_each_with_its_own_controls():
    atlas = _script()
    assert atlas.MAIN == ("dacs", "dacs_rcs", "dacs_mic", "minent_mic", "adaptsegnet_multi_mic")
    rows = atlas.rows(atlas.MAIN)
    assert rows[:3] == ["dacs", "control_dacs", "adabn"] and rows[-1] == "source_only"
    for m in atlas.MAIN:
        control, adabn = zoo.MEAN_TEACHER_CONTROLS[m]
        assert {m, control, adabn} <= set(rows)
    assert len(rows) == len(set(rows))  # AdaBN once
    assert {"dacs_nomix", "control_dacs_nomix", "dacs_alpha0", "dacs_mic_ratio0"} <= set(atlas.rows())


def test_a_factor_row_is_the_mean_teacher_row_retargeted():
    atlas = _script()
    moved, standard = atlas.experiment("dacs_mic", "camera", 2), zoo.MEAN_TEACHER_ROWS["dacs_mic"](2)
    assert moved.target == "minicity:target-camera" and moved.evaluate_on[-1] == "minicity:target-camera/val"
    assert (moved.method, moved.method_args, moved.steps, moved.init) == (
        standard.method, standard.method_args, standard.steps, standard.init)
    assert atlas.experiment("dacs", "composite", 2) == zoo.MEAN_TEACHER_ROWS["dacs"](2)


def _long(values: dict, factor: str) -> list[dict]:
    """``{method: [(as trained, target BN) per seed]}`` -> long rows."""
    return [{"factor": factor, "method": m, "seed": s, "target_miou": a, zoo.MEAN_TEACHER_SCORE: b}
            for m, per_seed in values.items() for s, (a, b) in enumerate(per_seed)]


def test_margins_are_read_in_the_target_bn_column_against_each_rows_own_control():
    df = pd.DataFrame(
        _long({"dacs": [(40.0, 50.0), (41.0, 52.0)], "control_dacs": [(45.0, 47.0), (30.0, 49.0)],
               "adabn": [(46.0, 46.0), (48.0, 48.0)],
               # the MinEnt + MIC row has its own control; control_dacs would make its margin +3 and +3.5
               "minent_mic": [(44.0, 50.0), (44.0, 52.5)], "control_minent_mic": [(40.0, 51.0), (40.0, 50.0)]},
              "palette")
        + _long({"dacs": [(50.0, 50.0), (50.0, 50.0)], "control_dacs": [(45.0, 51.0), (45.0, 50.5)],
                 "adabn": [(47.0, 47.0), (47.0, 47.0)], "minent_mic": [(50.0, 50.0), (50.0, 50.0)],
                 "control_minent_mic": [(45.0, 45.0), (45.0, 45.0)]}, "camera"))
    mean, std, ahead = atlas_margins(df, mean_teacher=True)
    assert list(mean.index) == ["dacs", "minent_mic"] and list(mean.columns) == ["palette", "camera"]
    # palette, dacs: 50 - max(46, 47) = 3 and 52 - max(48, 49) = 3 (as trained it would lose: 40 - 46, 41 - 48)
    assert mean.loc["dacs", "palette"] == pytest.approx(3.0) and ahead.loc["dacs", "palette"] == "2/2"
    assert mean.loc["minent_mic", "palette"] == pytest.approx(np.mean([50 - 51, 52.5 - 50]))
    assert std.loc["minent_mic", "palette"] == pytest.approx(np.std([-1.0, 2.5], ddof=1))
    assert ahead.loc["minent_mic", "palette"] == "1/2"
    assert mean.loc["dacs", "camera"] == pytest.approx(np.mean([-1.0, -0.5]))
    assert works_and_breaks("dacs", mean) == {"works": ("palette", 3.0), "breaks": ("camera", -0.75)}
    # the older atlas reads the as-trained column against zoo.CONTROLS: none of these rows is there
    assert atlas_margins(df)[0].empty


def test_a_line_scores_adabn_as_trained_and_source_only_without_target_statistics(monkeypatch):
    atlas = _script()
    calls = []
    monkeypatch.setattr(atlas, "target_bn_score", lambda run, val: calls.append(val) or 55.557)
    monkeypatch.setattr(atlas, "class_ious", lambda run, val: {})

    class Run:
        name = "r"

        def __init__(self, **config):
            self.config = type("C", (), {"adabn": False, "steps": 60, "target": "minicity:target-prior", **config})

        def miou(self, val):
            return 44.444

    line = atlas.record(Run(), "prior", 1, "dacs", 3.21, "cpu")
    assert (line["target_miou"], line["target_miou_target_bn"], line["domain"]) == (44.44, 55.56, "target-prior")
    assert calls == ["minicity:target-prior/val"]
    assert atlas.record(Run(adabn=True), "prior", 1, "adabn", 0, "cpu")["target_miou_target_bn"] == 44.44
    assert atlas.record(Run(steps=0), "prior", 1, "source_only", 0, "cpu")["target_miou_target_bn"] is None
    assert calls == ["minicity:target-prior/val"]
