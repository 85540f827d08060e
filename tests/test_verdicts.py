"""udalib.verdicts: a claim's verdict read from a table of seeds, on cases computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from udalib import verdicts as v
from udalib.verdicts import Claim, Side


def _table(rows):
    """rows: (method, steps, [target mIoU per seed 0..], extra columns per seed or None)."""
    out = []
    for method, steps, values, extra in rows:
        for seed, x in enumerate(values):
            out.append({"method": method, "seed": seed, "steps": steps, "target_miou": x,
                        **{k: vals[seed] for k, vals in (extra or {}).items()}})
    return pd.DataFrame(out)


DF = _table([
    ("a", 60, [50, 52, 49, 51, 50], {"teacher_miou": [51, 53, 48, 52, 51],
                                     "iou_pole": [10, 12, 14, 10, 10], "iou_traffic_sign": [20, 20, 20, 20, 20]}),
    ("b", 60, [49, 51, 50, 50, 49], {"iou_pole": [8, 8, 8, 8, 8], "iou_traffic_sign": [20, 20, 20, 20, 21]}),
    ("c", 60, [51, 53, 50, 52, 51], None),
    ("a", 300, [53, 54, 52, 53, 52], None),
    ("adabn", 0, [48, 53, 47, 49, 50], None),
    ("control", 60, [49, 50, 48, 52, 49], None),
])


def test_a_claim_holds_when_ahead_on_the_mean_and_on_all_seeds_but_one():
    r = v.verdict(DF, Claim("a > b", "p", Side("a", 60), (Side("b", 60),)))
    # differences 1, 1, -1, 1, 1: mean 0.6, ahead on 4 of 5
    assert r["verdict"] == v.HOLDS and r["seeds ahead"] == "4/5" and r["difference"] == 0.6
    assert r["± std"] == round(pd.Series([1, 1, -1, 1, 1]).std(), 2)
    assert r["winner mIoU"] == "50.4 ± 1.1" and r["reason"] == "ahead on 4 of 5 seeds, by +0.6 ± 0.9 points"


def test_a_claim_behind_on_the_mean_does_not_hold_and_says_by_how_much():
    r = v.verdict(DF, Claim("a > c", "p", Side("a", 60), (Side("c", 60),)))
    assert r["verdict"] == v.FAILS and r["seeds ahead"] == "0/5" and r["difference"] == -1.0
    assert r["reason"].startswith("behind by 1.0 ± 0.0 points on average, ahead on 0 of 5 seeds")


def test_ahead_on_the_mean_but_not_on_enough_seeds_does_not_hold():
    # differences 10, -1, -1, -1, -1: mean 1.2, ahead on 1 of 5
    df = _table([("x", 60, [60, 49, 49, 49, 49], None), ("y", 60, [50, 50, 50, 50, 50], None)])
    r = v.verdict(df, Claim("x > y", "p", Side("x", 60), (Side("y", 60),)))
    assert r["difference"] == 1.2 and r["seeds ahead"] == "1/5" and r["verdict"] == v.FAILS
    assert "on only 1 of 5 seeds" in r["reason"]


def test_against_two_sides_the_better_one_on_each_seed():
    r = v.verdict(DF, Claim("a > controls", "p", Side("a", 60), (Side("adabn"), Side("control", 60))))
    # max(adabn, control) = 49, 53, 48, 52, 50; a - max = 1, -1, 1, -1, 0
    assert r["beaten"] == "max(adabn / control (60 steps))" and r["beaten mIoU"] == "50.4 ± 2.1"
    assert r["seeds ahead"] == "2/5" and r["difference"] == 0.0 and r["verdict"] == v.FAILS


def test_sides_read_steps_the_teacher_and_classes():
    r = v.verdict(DF, Claim("300 > 60", "p", Side("a", 300), (Side("a", 60),)))
    assert r["difference"] == 2.4 and r["verdict"] == v.HOLDS
    r = v.verdict(DF, Claim("teacher", "p", Side("a", 60, "teacher_miou"), (Side("a", 60),)))
    assert r["winner"] == "a (60 steps), its teacher" and r["difference"] == 0.6 and r["seeds ahead"] == "4/5"
    rare = ("pole", "traffic sign")
    r = v.verdict(DF, Claim("classes", "p", Side("a", 60, classes=rare), (Side("b", 60, classes=rare),)))
    # mean of the two classes: a 15, 16, 17, 15, 15; b 14, 14, 14, 14, 14.5
    assert r["difference"] == 1.5 and r["seeds ahead"] == "5/5" and r["verdict"] == v.HOLDS


def test_rows_missing_from_the_table_are_not_measured_and_ambiguous_steps_are_refused():
    r = v.verdict(DF, Claim("a > z", "p", Side("a", 60), (Side("z", 60),)))
    assert r["verdict"] == v.UNMEASURED and r["reason"] == "no rows of z (60 steps) in the table"
    assert math.isnan(r["difference"])
    with pytest.raises(ValueError, match="several rows per seed"):
        v.verdict(DF, Claim("a > b", "p", Side("a"), (Side("b", 60),)))


def test_the_table_and_its_markdown():
    claims = (Claim("a > b", "p", Side("a", 60), (Side("b", 60),)), Claim("a > z", "q", Side("a", 60),
                                                                         (Side("z", 60),)))
    table = v.verdicts(DF, claims)
    assert list(table.index) == ["a > b", "a > z"] and list(table["verdict"]) == [v.HOLDS, v.UNMEASURED]
    text = v.markdown(table)
    assert "| a > b | p | `a (60 steps)` 50.4 ± 1.1 | `b (60 steps)` 49.8 ± 0.8 | +0.60 ± 0.89 | 4/5 | holds" in text
    assert text.endswith("\n\n* Not measured: a > z (no rows of z (60 steps) in the table).")
    fails = v.verdicts(DF, (Claim("a > c", "p", Side("a", 60), (Side("c", 60),)),))
    assert v.markdown(fails).endswith("* **a > c** does not hold: behind by 1.0 ± 0.0 points on average, ahead on 0 "
                                      "of 5 seeds.")
    assert "Not measured" not in v.markdown(fails) and "\n\n" not in v.markdown(table.iloc[:1])


def test_every_mean_teacher_claim_is_not_measured_on_an_empty_table():
    table = v.verdicts(pd.DataFrame(columns=["method", "seed", "steps", "target_miou"]))
    assert len(table) == len(v.MEAN_TEACHER_CLAIMS) and set(table["verdict"]) == {v.UNMEASURED}


def test_too_few_shared_seeds_are_not_measured_and_target_bn_is_a_column():
    few = DF[DF.seed < 2]
    r = v.verdict(few, Claim("a > b", "p", Side("a", 60), (Side("b", 60),)))
    assert r["verdict"] == v.UNMEASURED and r["reason"] == "2 seeds in the table, 3 needed"
    assert v.verdict(few, Claim("a > b", "p", Side("a", 60), (Side("b", 60),)), min_seeds=2)["verdict"] == v.HOLDS
    df = DF.assign(target_miou_target_bn=DF.target_miou + 1)
    r = v.verdict(df, Claim("bn", "p", Side("a", 60, "target_miou_target_bn"), (Side("a", 60),)))
    assert r["winner"] == "a (60 steps), target BN" and r["difference"] == 1.0
