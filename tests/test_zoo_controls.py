"""The controls are never weakened: every adaptation run and its lambda = 0 control and AdaBN row share steps,
batches, target images, BatchNorm policy, starting weights and evaluation sets (the standard MiniCity rows and the
design study's)."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

import pytest

from udalib import zoo
from udalib.methods import control_args, method_config, target_weights

SHARED = ("target", "evaluate_on", "steps", "batch_size", "seed", "init", "bn_stats", "model", "size", "flip",
          "num_classes", "source", "rcs_temperature")


def _weights(exp) -> dict:
    """The method config the run resolves to, without its target weights (which the control sets to 0)."""
    cfg = asdict(method_config(exp.method, exp.preset, **exp.method_args))
    return {k: v for k, v in cfg.items() if k not in target_weights(exp.method)}


UDA_ROWS = sorted(set(zoo.ALL_CONTROLS) - set(zoo.TEST_TIME_ROWS))
# method arguments a lambda = 0 control may leave out: they change nothing its segmenter does at weight 0 (the
# mean teacher's decay only moves the pseudo-labels, which weight 0 ignores)
NO_EFFECT_AT_ZERO = {"alpha"}


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("row", zoo.TEST_TIME_ROWS)
def test_test_time_rows_start_from_the_source_model_with_adabn_as_their_control(row, seed):
    """TENT and BN-alpha declare no target weight, so AdaBN (the same source model and target images, no training)
    is their only control."""
    method = zoo.MINICITY_ROWS[row](seed)
    assert zoo.CONTROLS[row] == ("adabn", "adabn") and target_weights(method.method) == ()
    adabn = zoo.MINICITY_ROWS["adabn"](seed)
    assert method.init == adabn.init == zoo.source_experiment(seed).name
    assert method.target == adabn.target and method.evaluate_on == adabn.evaluate_on and method.seed == seed


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("row", UDA_ROWS)
def test_each_method_and_its_controls_share_everything_but_the_target_weight(row, seed):
    method = zoo.ALL_ROWS[row](seed)
    control_name, adabn_name = zoo.ALL_CONTROLS[row]
    control, adabn = zoo.ALL_ROWS[control_name](seed), zoo.ALL_ROWS[adabn_name](seed)
    for field in SHARED:
        assert getattr(control, field) == getattr(method, field), (row, field)
    # AdaBN: the same starting model, target images and evaluation; no training
    assert adabn.init == method.init and adabn.target == method.target and adabn.adabn and adabn.steps == 0
    assert set(method.evaluate_on) <= set(adabn.evaluate_on) and adabn.seed == method.seed
    # the control's target weights are all 0: it is its method's arguments plus control_args, nothing else ...
    cfg = asdict(method_config(control.method, control.preset, **control.method_args))
    weights = {k: cfg[k] for k in target_weights(control.method)}
    assert weights and all(v == 0 for v in weights.values()), (row, weights)
    kept = {k: v for k, v in method.method_args.items() if k not in NO_EFFECT_AT_ZERO}
    assert control.method_args == {**kept, **control_args(control.method)}, row
    # ... and its segmenter update is otherwise the method family's (same lr, momentum, decay, auxiliary CE)
    mine, theirs = _weights(method), _weights(control)
    for key in ("lr", "momentum", "weight_decay", "lambda_seg"):
        if key in mine and key in theirs:
            assert mine[key] == theirs[key], (row, key)


def test_the_design_studys_controls_share_everything_with_its_methods():
    path = Path(__file__).parents[1] / "benchmarks" / "minicity_design_study.py"
    spec = importlib.util.spec_from_file_location("minicity_design_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    for domain in study.DESIGNS.values():
        exps = study.experiments(domain, seed=1)
        for name in ("minent", "adaptsegnet_multi", "cbst"):
            for field in SHARED:
                assert getattr(exps["control"], field) == getattr(exps[name], field), (domain, name, field)
        assert exps["adabn"].target == exps["control"].target and exps["adabn"].init == exps["control"].init
        assert exps["adabn"].evaluate_on == exps["control"].evaluate_on == exps["source_only"].evaluate_on
        assert exps["oracle"].evaluate_on == exps["control"].evaluate_on


def test_every_adaptation_row_keeps_target_batchnorm_statistics_and_so_do_its_controls():
    for row in UDA_ROWS:
        control, adabn = zoo.ALL_CONTROLS[row]
        assert zoo.ALL_ROWS[row](0).bn_stats == zoo.ALL_ROWS[control](0).bn_stats == zoo.BN_STATS == "target"
        assert zoo.ALL_ROWS[adabn](0).steps == 0 and zoo.ALL_ROWS[adabn](0).adabn  # re-estimated, no training


def test_the_mean_teachers_rows_stay_out_of_the_standard_rows_and_keep_their_ablations():
    """Notebooks 10-12 iterate MINICITY_ROWS: the mean teacher's rows are apart (minicity_table.py trains ALL_ROWS),
    names unique."""
    assert not set(zoo.MEAN_TEACHER_ROWS) & set(zoo.MINICITY_ROWS)
    assert set(zoo.MEAN_TEACHER_CONTROLS) <= set(zoo.MEAN_TEACHER_ROWS)
    rows = {name: make(1) for name, make in zoo.MEAN_TEACHER_ROWS.items()}
    assert all(exp.method.startswith(("dacs", "minent", "adaptsegnet")) and exp.seed == 1 for exp in rows.values())
    assert rows["dacs_rcs"].rcs_temperature == rows["control_dacs_rcs"].rcs_temperature == 0.01
    assert rows["dacs"].rcs_temperature is None and rows["dacs_mic_ratio0"].method_args == {"mask_ratio": 0.0}
    assert rows["dacs"].method_args == {} and rows["dacs_nomix"].method_args == {"mix": False}
    assert rows["dacs_alpha0"].method_args == {"alpha": 0.0}
    assert len({exp.name for exp in rows.values()}) == len(rows)  # each its own run folder
    # DACSConfig.mix enters the run key only off its default: the stored DACS run keeps its folder
    assert zoo.MEAN_TEACHER_ROWS["dacs"](0).name == "dacs-s0-b1558acceb"


def test_benchmark_summary_margins_are_over_the_better_control_per_row(tmp_path):
    """Hand-made table, two seeds: MinEnt's bar is the control's mean (AdaBN lower), SNR-MS's is SNR + AdaBN's."""
    from udalib.results import benchmark_summary

    rows = {"adabn": (38.0, 40.0), "control_lambda0": (39.0, 41.0), "minent": (41.0, 42.0),
            "adabn_snr": (37.0, 39.0), "control_snr_maxsquare": (36.0, 37.0), "snr_maxsquare": (39.5, 38.0)}
    lines = ["method,seed,target_miou,target_miou_target_bn"] + [
        f"{m},{s},{v},{v + 0.5}" for m, vs in rows.items() for s, v in enumerate(vs)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    out = benchmark_summary(["minent", "snr_maxsquare", "adabn"], tmp_path / "t.csv")
    assert list(out.index) == ["minent", "snr_maxsquare", "adabn"]
    assert out.loc["minent", "as trained"] == 41.5 and out.loc["minent", "target BN"] == 42.0
    assert out.loc["minent", "vs max(AdaBN, control)"] == 41.5 - 40.0  # control 40.0 > AdaBN 39.0
    assert out.loc["snr_maxsquare", "vs max(AdaBN, control)"] == 38.75 - 38.0  # SNR + AdaBN 38.0 > control 36.5
    assert out.loc["minent", "seeds ahead"] == 2 and out.loc["snr_maxsquare", "seeds ahead"] == 1  # 38.0 < 39.0
    assert round(out.loc["minent", "± std"], 2) == 0.71
    with pytest.raises(KeyError, match="mlsl not in .*minicity_table.py"):
        benchmark_summary(["mlsl"], tmp_path / "t.csv")
    # a mean-teacher row: its own control, in the target BN column (as trained: 44 - max(40.5, 46) < 0)
    dacs = {"dacs": ((44.0, 48.0), (45.0, 47.0)), "control_dacs": ((46.0, 45.0), (44.0, 46.5))}
    more = [f"{m},{s},{a},{b}" for m, vs in dacs.items() for s, (a, b) in enumerate(vs)]
    (tmp_path / "t.csv").write_text("\n".join(lines + more) + "\n")
    out = benchmark_summary(["dacs", "minent"], tmp_path / "t.csv")
    # target BN: AdaBN 38.0 and 40.0 (its own score, whatever the column says), control 45.0 and 46.5 -> margins 3.0
    # and 0.5
    assert out.loc["dacs", "vs max(AdaBN, control)"] == pytest.approx(1.75)
    assert out.loc["dacs", "seeds ahead"] == 2 and out.loc["minent", "vs max(AdaBN, control)"] == 41.5 - 40.0
    # AdaBN's target BN cell empty (the standard table leaves it so): its score stands in; here AdaBN beats the
    # control on seed 1, so the margin moves
    lines = [ln.replace("adabn,1,40.0,40.5", "adabn,1,47.5,") for ln in lines]
    (tmp_path / "t.csv").write_text("\n".join(lines + more) + "\n")
    assert benchmark_summary(["dacs"], tmp_path / "t.csv").loc["dacs", "vs max(AdaBN, control)"] == pytest.approx(
        (3.0 + 47.0 - 47.5) / 2)
    with pytest.raises(FileNotFoundError, match="run `python benchmarks/minicity_table.py`"):
        benchmark_summary(path=tmp_path / "missing.csv")
