"""The mechanism atlas and the claims: which runs the atlas trains for a factor, the per-seed margin over the better
of AdaBN and the lambda = 0 control, the verdict rule, and the heat map."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from udalib import zoo
from udalib.results import CLAIMS, atlas_margins, claim_verdicts, control_margins
from udalib.viz import plots

matplotlib.use("Agg")
SHARED = ("evaluate_on", "steps", "batch_size", "seed", "init", "bn_stats", "model", "size", "flip", "num_classes",
          "source", "method", "method_args", "adabn")


def _atlas():
    path = Path(__file__).parents[1] / "benchmarks" / "minicity_atlas.py"
    spec = importlib.util.spec_from_file_location("minicity_atlas", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_atlas_runs_every_method_with_its_controls_on_every_factor():
    atlas = _atlas()
    rows = atlas.rows()
    assert set(zoo.CONTROLS) <= set(rows)
    assert {c for pair in zoo.CONTROLS.values() for c in pair} <= set(rows)
    assert len([f for f in atlas.FACTORS if f != "composite"]) >= 6


@pytest.mark.parametrize("row", ["maxsquare", "control_lambda0", "adabn", "adaptsegnet_multi", "snr_maxsquare",
                                 "adabn_snr", "cbst"])
def test_a_factor_row_is_the_standard_row_retargeted_and_nothing_else(row):
    atlas = _atlas()
    standard = zoo.MINICITY_ROWS[row](1)
    moved = atlas.experiment(row, "converge", 1)
    assert moved.target == "minicity:target-converge" and standard.target == zoo.TARGET
    assert moved.evaluate_on == ("minicity:source/val", "minicity:target-converge/val")
    for field in SHARED:
        if field != "evaluate_on":
            assert getattr(moved, field) == getattr(standard, field), (row, field)
    assert moved.key() != standard.key()
    assert atlas.experiment(row, "composite", 1) == standard  # the composite's rows are the standard table's


def test_source_models_are_scored_on_a_factor_without_training():
    atlas = _atlas()
    for row in ("source_only", "snr"):
        standard = zoo.MINICITY_ROWS[row](2)
        moved = atlas.experiment(row, "palette", 2)
        assert moved.init == standard.name and moved.steps == 0 and moved.model == standard.model
        assert "minicity:target-palette/val" in moved.evaluate_on


def _long(values: dict, factor: str = "f") -> pd.DataFrame:
    return pd.DataFrame([{"factor": factor, "method": m, "seed": s, "target_miou": v}
                         for m, per_seed in values.items() for s, v in enumerate(per_seed)])


def test_margins_are_over_the_better_control_on_each_seed_not_on_the_means():
    # seed 0: AdaBN is the better control, seed 1: the control is; the mean-of-max differs from max-of-means
    df = _long({"maxsquare": [45.0, 44.0], "control_lambda0": [40.0, 43.5], "adabn": [42.0, 41.0]})
    m = control_margins(df, by=("factor",)).set_index("seed")
    assert m.loc[0, "margin"] == pytest.approx(3.0) and m.loc[1, "margin"] == pytest.approx(0.5)
    mean, std, ahead = atlas_margins(df)
    assert mean.loc["maxsquare", "f"] == pytest.approx(1.75)  # max of the means would give 2.25
    assert std.loc["maxsquare", "f"] == pytest.approx(np.std([3.0, 0.5], ddof=1))
    assert ahead.loc["maxsquare", "f"] == "2/2"
    # a method without its own control (AdaptSegNet's trains the discriminator) gets no margin
    both = control_margins(pd.concat([df, _long({"adaptsegnet": [50.0, 50.0]})]), by=("factor",))
    assert set(both["method"]) == {"maxsquare"}


def test_each_method_is_measured_against_its_own_controls():
    df = _long({"snr_maxsquare": [40.0], "control_snr_maxsquare": [39.0], "adabn_snr": [41.0],
                "control_lambda0": [10.0], "adabn": [10.0]})
    m = control_margins(df, by=("factor",)).set_index("method")
    assert m.loc["snr_maxsquare", "margin"] == pytest.approx(-1.0)  # against SNR's AdaBN (41), not the plain model's


def test_claims_hold_only_when_the_winner_is_ahead_on_the_mean_and_all_seeds_but_one():
    df = _long({"maxsquare": [41, 42, 40, 43, 39], "minent": [40, 41, 41, 42, 38],  # ahead 4 of 5: holds
                "maxsquare_iw": [40, 43, 39, 44, 38],  # vs maxsquare: ahead 2 of 5 although +0.0 mean
                "mlsl": [50, 50, 50, 50, 50], "cbst": [49, 49, 49, 51, 51]})  # ahead 3 of 5: does not hold
    v = claim_verdicts(df)
    assert v.loc["MaxSquare > MinEnt", "verdict"] == "holds on MiniCity"
    assert v.loc["MaxSquare > MinEnt", "difference"] == pytest.approx(0.6)
    assert v.loc["MaxSquare > MinEnt", "seeds ahead"] == "4/5"
    assert v.loc["+IW > MaxSquare", "verdict"] == "does not hold"
    assert v.loc["MLSL > CBST", "verdict"] == "does not hold"
    assert "+Multi > +IW" not in v.index  # maxsquare_iw_multi is not in the table
    assert all(len(c) == 4 for c in CLAIMS)


def test_the_atlas_heat_map_is_centred_at_zero_and_labels_every_cell():
    df = pd.concat([_long({"maxsquare": [45.0, 44.0], "control_lambda0": [40.0, 43.5], "adabn": [42.0, 41.0]}, "a"),
                    _long({"maxsquare": [40.0, 40.0], "control_lambda0": [44.0, 43.0], "adabn": [42.0, 41.0]}, "b")])
    mean, std, ahead = atlas_margins(df)
    fig = plots.atlas_heatmap(mean, std, ahead)
    ax = fig.axes[0]
    image = ax.get_images()[0]
    lo, hi = image.get_clim()
    assert lo == -hi and hi == pytest.approx(3.5)  # symmetric around 0: the larger magnitude (-3.5 on b)
    texts = [t.get_text() for t in ax.texts]
    assert "+1.8±1.8\n2/2" in texts and "-3.5±0.7\n0/2" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    # one extreme cell does not set the scale: it is capped, and its text still gives the value
    mean.loc["maxsquare", "b"] = -9.8
    capped = plots.atlas_heatmap(mean, std, ahead, cap=5.0).axes[0]
    assert capped.get_images()[0].get_clim() == (-5.0, 5.0)
    assert any(t.get_text().startswith("-9.8") for t in capped.texts)


def test_works_and_breaks_picks_the_single_factors_with_the_largest_and_smallest_margin():
    from udalib.results import works_and_breaks

    mean = pd.DataFrame({"palette": [2.0, 1.0], "converge": [-1.5, 3.0], "composite": [9.0, -9.0]},
                        index=["minent", "cbst"])
    assert works_and_breaks("minent", mean) == {"works": ("palette", 2.0), "breaks": ("converge", -1.5)}
    assert works_and_breaks("cbst", mean) == {"works": ("converge", 3.0), "breaks": ("palette", 1.0)}  # not composite
    with pytest.raises(KeyError, match="minicity_atlas.py --methods mlsl"):
        works_and_breaks("mlsl", mean)


def test_a_case_table_has_per_class_iou_the_miou_and_the_margin_over_the_better_control():
    from udalib.results import case_table

    class FakeScores:
        def __init__(self, iou):
            self.iou = iou

        def table(self):
            return pd.DataFrame({"IoU (%)": self.iou})

    class FakeRun:
        def __init__(self, iou):
            self.scores = {"d": FakeScores(iou)}

        def miou(self, dataset):
            return float(np.nanmean(list(self.scores[dataset].iou.values())))

    runs = {"source-only": FakeRun({"road": 50.0, "pole": 0.0}), "AdaBN": FakeRun({"road": 60.0, "pole": 10.0}),
            "control": FakeRun({"road": 62.0, "pole": 8.0}), "minent": FakeRun({"road": 65.0, "pole": 9.0})}
    t = case_table(runs, "d")
    assert list(t.columns) == ["source-only", "AdaBN", "control", "minent", "margin"]
    assert t.loc["road", "margin"] == 3.0 and t.loc["pole", "margin"] == -1.0  # over 62 (control), over 10 (AdaBN)
    assert t.loc["mIoU", "minent"] == 37.0 and t.loc["mIoU", "margin"] == 2.0  # 37 - max(35, 35)


def test_case_runs_are_the_atlas_runs_of_the_method_and_its_own_controls():
    seen = []
    original = zoo.get_or_train
    try:
        zoo.get_or_train = lambda exp, **kw: seen.append(exp) or exp
        runs = zoo.case_runs("snr_maxsquare", "converge", 2)
    finally:
        zoo.get_or_train = original
    assert list(runs) == ["source-only", "AdaBN", "control", "snr_maxsquare"]
    expected = [zoo.factor_experiment(r, "converge", 2) for r in ("snr", "adabn_snr", "control_snr_maxsquare",
                                                                   "snr_maxsquare")]
    assert seen == expected


def test_factor_cases_shows_the_best_and_worst_factor_with_their_four_runs(monkeypatch):
    from udalib import results

    cases = {"works": ("palette", 2.5), "breaks": ("camera", -9.4)}
    monkeypatch.setattr(results, "works_and_breaks", lambda row: cases)
    asked = []
    monkeypatch.setattr(zoo, "case_runs", lambda row, factor, seed, **kw: asked.append((row, factor, seed)) or factor)
    monkeypatch.setattr(results, "case_table", lambda runs, dataset: pd.DataFrame({"mIoU": [len(dataset)]}))
    out = results.factor_cases("adaptsegnet_multi", 3)
    assert asked == [("adaptsegnet_multi", "palette", 3), ("adaptsegnet_multi", "camera", 3)]
    assert list(out.columns.get_level_values(0)) == ["works: palette (atlas +2.5)", "breaks: camera (atlas -9.4)"]
    assert out[("works: palette (atlas +2.5)", "mIoU")].iloc[0] == len("minicity:target-palette/val")


def test_claims_report_gives_each_named_claim_with_its_verdict(monkeypatch):
    from udalib import results

    df = _long({"maxsquare": [41, 42, 40, 43, 39], "minent": [40, 41, 41, 42, 38]})
    monkeypatch.setattr(results, "claim_verdicts", lambda: claim_verdicts(df))
    table = results.claims_report(["MaxSquare > MinEnt"])
    assert list(table.index) == ["MaxSquare > MinEnt"] and "paper" not in table.columns
    row = table.loc["MaxSquare > MinEnt"]
    assert (row["winner mIoU"], row["beaten mIoU"], row["seeds ahead"]) == ("41.0 ± 1.6", "40.4 ± 1.5", "4/5")
    assert row["difference"] == pytest.approx(0.6) and row["± std"] == pytest.approx(0.89, abs=0.01)
    assert row["verdict"] == "holds on MiniCity"


def _case_rows(values: dict[str, list[tuple[float, float]]], factor: str = "palette") -> pd.DataFrame:
    """Atlas rows with two classes: ``{method: [(road, pole) of seed 0, (road, pole) of seed 1, ...]}``; the mIoU
    column is their mean."""
    rows = []
    for method, per_seed in values.items():
        for seed, (road, pole) in enumerate(per_seed):
            rows.append({"factor": factor, "method": method, "seed": seed, "target_miou": (road + pole) / 2,
                         "iou_road": road, "iou_pole": pole})
    return pd.DataFrame(rows)


def test_an_atlas_case_averages_each_class_over_seeds_and_takes_the_margin_seed_by_seed():
    from udalib.results import atlas_case_table

    df = _case_rows({"source_only": [(50, 0), (52, 2)], "adabn": [(60, 10), (70, 10)],
                     "control_lambda0": [(64, 8), (62, 12)], "minent": [(65, 9), (71, 14)],
                     "maxsquare": [(0, 0), (0, 0)]})
    df = pd.concat([df, _case_rows({"minent": [(99, 99), (99, 99)]}, factor="camera")])  # another factor: unused
    t = atlas_case_table("minent", "palette", df)
    assert list(t.columns) == ["source-only", "AdaBN", "control", "minent", "margin"]
    assert list(t.index) == ["road", "pole", "mIoU"]
    assert t.loc["road", "source-only"] == 51.0 and t.loc["pole", "minent"] == 11.5
    # road: seed 0 65 - max(60, 64) = 1, seed 1 71 - max(70, 62) = 1 -> 1 (on the means it would be 68 - 65 = 3)
    assert t.loc["road", "margin"] == 1.0
    assert t.loc["pole", "margin"] == 0.5  # 9 - 10 = -1 and 14 - 12 = 2
    # mIoU: seed 0 37 - max(35, 36) = 1, seed 1 42.5 - max(40, 37) = 2.5 -> 1.75
    assert t.loc["mIoU", "margin"] == pytest.approx(1.8) and t.loc["mIoU", "control"] == 36.5


def test_an_atlas_case_of_snr_ms_starts_from_the_snr_model_and_refuses_missing_class_columns():
    from udalib.results import atlas_case_table

    df = _case_rows({"source_only": [(1, 1)], "snr": [(40, 20)], "adabn_snr": [(50, 20)],
                     "control_snr_maxsquare": [(52, 18)], "snr_maxsquare": [(55, 21)]})
    t = atlas_case_table("snr_maxsquare", "palette", df)
    assert t.loc["road", "source-only"] == 40.0 and t.loc["road", "margin"] == 3.0
    with pytest.raises(ValueError, match="backfill-classes"):
        atlas_case_table("snr_maxsquare", "palette", df.assign(iou_pole=np.nan))


def test_factor_cases_without_a_seed_reads_both_cases_from_the_atlas(monkeypatch):
    from udalib import results

    cases = {"works": ("palette", 2.5), "breaks": ("camera", -9.4)}
    monkeypatch.setattr(results, "works_and_breaks", lambda row: cases)
    monkeypatch.setattr(zoo, "case_runs", lambda *a, **k: pytest.fail("nothing is trained without a seed"))
    monkeypatch.setattr(results, "atlas_case_table", lambda row, factor: pd.DataFrame({"m": [len(factor)]}))
    out = results.factor_cases("cbst")
    assert list(out.columns) == [("works: palette (atlas +2.5)", "m"), ("breaks: camera (atlas -9.4)", "m")]
    assert list(out.iloc[0]) == [len("palette"), len("camera")]


def test_the_atlas_script_records_per_class_iou_and_backfills_old_rows(tmp_path):
    atlas = _atlas()
    assert atlas.CLASS_COLUMNS[:2] == ("iou_road", "iou_sidewalk") and "iou_traffic_sign" in atlas.CLASS_COLUMNS

    class FakeScores:
        def table(self):
            names = [c.removeprefix("iou_").replace("_", " ") for c in atlas.CLASS_COLUMNS]
            return pd.DataFrame({"IoU (%)": [10.0 + i + 0.123 for i in range(len(names))]}, index=names)

    class FakeRun:
        scores = {"minicity:target-palette/val": FakeScores()}

    assert atlas.class_ious(FakeRun(), "minicity:target-palette/val")["iou_sidewalk"] == 11.12
    path = tmp_path / "atlas.csv"
    pd.DataFrame([{"factor": "palette", "domain": "target-palette", "method": "minent", "seed": 0,
                   "target_miou": 50.0, "seconds": 1.0, "run": "r0"},
                  {"factor": "palette", "domain": "target-palette", "method": "adabn", "seed": 0,
                   "target_miou": 40.0, "seconds": 1.0, "run": "gone"}]).to_csv(path, index=False)
    (tmp_path / "runs" / "r0").mkdir(parents=True)
    original = atlas.load_run
    atlas.load_run = lambda folder: FakeRun()
    try:
        assert atlas.backfill_classes(path, tmp_path / "runs") == 1
    finally:
        atlas.load_run = original
    out = pd.read_csv(path)
    assert tuple(out.columns) == atlas.COLUMNS and out.loc[0, "iou_car"] == round(10.0 + 8 + 0.123, 2)
    assert out.loc[1, list(atlas.CLASS_COLUMNS)].isna().all() and out.loc[1, "target_miou"] == 40.0
