"""The margin over max(AdaBN, control): one definition (udalib.zoo.margin_over_controls), read by the MiniCity
table, the atlas, the case tables, CrossCity and the benchmark summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from udalib import crosscity
from udalib.zoo import margin_over_controls


def test_the_margin_is_the_method_minus_the_better_bar():
    assert margin_over_controls(50.0, 47.5, 48.0) == 2.0  # the control is the better reference
    assert margin_over_controls(50.0, 49.0, 44.0) == 1.0  # AdaBN is
    assert margin_over_controls(40.0, 45.0, 42.0) == -5.0  # behind both: negative
    assert margin_over_controls(50.0, math.nan, 48.0) == 2.0  # one reference missing: the other one
    assert math.isnan(margin_over_controls(50.0, math.nan, math.nan))
    assert np.array_equal(margin_over_controls(np.array([50.0, 40.0]), np.array([45.0, 44.0]), np.array([47.0, 41.0])),
                          [3.0, -4.0])


def test_pandas_inputs_are_aligned_on_their_labels():
    method = pd.Series({0: 50.0, 1: 40.0, 2: 30.0})
    adabn = pd.Series({2: 31.0, 1: 44.0, 0: 45.0})  # another order: aligned, not positional
    control = pd.Series({1: 39.0, 0: 48.0, 2: 25.0})
    assert margin_over_controls(method, adabn, control).to_dict() == {0: 2.0, 1: -4.0, 2: -1.0}


def test_crosscity_gains_read_the_same_margin():
    rows = [(city, seed, row, miou) for city in ("rome", "oslo") for seed in (0, 1)
            for row, miou in ((crosscity.ADABN, 40.0 + seed), (crosscity.CONTROL, 41.0 - seed),
                              ("minent", 43.0 + (city == "oslo")))]
    scores = pd.DataFrame([{"seed": s, "row": r, "adapted_to": c, "evaluated_on": c, "miou": m,
                            "miou_target_bn": m} for c, s, r, m in rows])
    g = crosscity.gains(scores, "minent")
    # seed 0: references 40 and 41 -> 41; seed 1: 41 and 40 -> 41; rome 43 - 41 = 2, oslo 44 - 41 = 3
    assert g["vs max(AdaBN, control)"].to_dict() == {"rome": 2.0, "oslo": 3.0}
    assert g["seeds ahead of both"].to_dict() == {"rome": 2, "oslo": 2}


def test_a_row_whose_adabn_run_is_also_its_control(monkeypatch):
    from udalib import zoo
    from udalib.results import control_margins

    monkeypatch.setitem(zoo.CONTROLS, "tent", ("adabn", "adabn"))  # a test-time row: AdaBN is its control
    df = pd.DataFrame([{"method": m, "seed": s, "target_miou": v} for s in (0, 1)
                       for m, v in (("adabn", 40.0 + s), ("tent", 42.0))])
    assert control_margins(df).set_index("seed")["margin"].to_dict() == {0: 2.0, 1: 1.0}
