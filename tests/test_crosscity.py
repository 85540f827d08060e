"""CrossCity transfer: the runs the driver asks for, the tables it builds, and one tiny study end to end."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from udalib import crosscity as cc
from udalib.cli import main
from udalib.data import eval_loader
from udalib.data.minicity import MiniCitySpec
from udalib.eval.evaluate import evaluate
from udalib.experiment import get_or_train, open_data
from udalib.methods import adapt_batchnorm, method_config
from udalib.recipes import load_recipe


def test_city_spec_replaces_only_the_city():
    assert cc.city_spec("nthu:rome/test@512x1024", "tokyo") == "nthu:tokyo/test@512x1024"
    assert cc.city_spec("nthu:rome@512x1024", "rio") == "nthu:rio@512x1024"
    assert cc.city_spec("minicity:rome/val", "taipei") == "minicity:taipei/val"
    assert cc.city_spec("minicity:rome", "rio") == "minicity:rio"
    with pytest.raises(ValueError, match="names no city"):
        cc.city_spec("cityscapes/val", "rome")


def test_rows_of_a_full_scale_study_follow_the_seed_command():
    study = cc.CrossCity(load_recipe("crosscity_maxsquare", data_root="/data"))
    tests = ("nthu:rome/test@512x1024", "nthu:rio/test@512x1024", "nthu:tokyo/test@512x1024",
             "nthu:taipei/test@512x1024")
    assert study.eval_specs() == tests
    ms = study.experiment("maxsquare", "tokyo")
    assert (ms.target, ms.evaluate_on, ms.init) == ("nthu:tokyo@512x1024", tests,
                                                    "/data/checkpoints/Cityscapes_source_class13.pth")
    cfg = ms.method_config  # --lr 2.5e-4 --lambda_target 0.1: the paper defaults, which the recipe leaves to them
    assert (cfg.lr, cfg.lambda_target, ms.num_classes) == (2.5e-4, 0.1, 13)
    src = study.experiment("source-only", "tokyo")
    assert (src.method, src.steps, src.target, src.adabn) == ("source_only", 0, None, False)
    bn = study.experiment("AdaBN", "rio")
    assert (bn.steps, bn.adabn, bn.target) == (0, True, "nthu:rio@512x1024")
    ctl = study.experiment("control", "taipei")
    assert (ctl.method, ctl.method_args["lambda_target"], ctl.steps) == ("maxsquare", 0.0, ms.steps)
    # another method runs with its paper defaults (preset None), not with MaxSquare's arguments
    iw = study.experiment("maxsquare_iw", "rome")
    cfg = method_config(iw.method, iw.preset, **iw.method_args)
    assert (cfg.iw_ratio, cfg.lambda_target, cfg.lr) == (0.2, 0.1, 2.5e-4)
    # every run has its own folder
    names = {study.experiment(r, c).name for r in ("AdaBN", "control", "maxsquare", "maxsquare_iw")
             for c in cc.CITIES}
    assert len(names) == 16


def test_crosscity_recipes_match_the_seed_readme():
    # README: solve_crosscity.py --city_name 'Rome' --source_dataset 'cityscapes' --pretrained_ckpt_file
    # Cityscapes_source_class13.pth --crop_size "1024,512" --target_crop_size "1024,512" --epoch_num 10
    # --target_mode "maxsquare" --lr 2.5e-4 --lambda_target 0.1 --num_classes 13
    for name, method in (("crosscity_maxsquare", "maxsquare"), ("crosscity_maxsquare_iw", "maxsquare_iw")):
        exp = load_recipe(name, data_root="/d")
        cfg = method_config(exp.method, exp.preset, **exp.method_args)
        assert (exp.method, exp.num_classes, exp.batch_size) == (method, 13, 1)
        assert (cfg.lr, cfg.lambda_target) == (2.5e-4, 0.1)
        assert cfg.iw_ratio == (0.2 if method == "maxsquare_iw" else None)
        assert exp.source == "cityscapes/train@512x1024" and exp.target == "nthu:rome@512x1024"
        assert exp.init.endswith("Cityscapes_source_class13.pth")
        assert exp.steps == 10 * 2975 and exp.poly_steps == 10 * 2976


def test_bad_studies_are_refused_with_what_to_do():
    base = load_recipe("crosscity_maxsquare", data_root="/d")
    with pytest.raises(ValueError, match="unknown method 'maxsqare'; choose among"):
        cc.CrossCity(base, methods=("maxsqare",))
    with pytest.raises(ValueError, match="unknown control 'oracle'"):
        cc.CrossCity(base, controls=("oracle",))
    with pytest.raises(ValueError, match="needs init"):
        cc.CrossCity(replace(base, init=None))


def _scores():
    """Two seeds, two cities, hand-made numbers."""
    rows = []
    values = {  # (row, adapted_to, evaluated_on): (seed 0, seed 1)
        ("source-only", "rome", "rome"): (40, 42), ("source-only", "rio", "rio"): (50, 50),
        ("source-only", "rome", "rio"): (50, 50), ("source-only", "rio", "rome"): (40, 42),
        ("control", "rome", "rome"): (44, 46), ("control", "rio", "rio"): (51, 49),
        ("maxsquare", "rome", "rome"): (45, 48), ("maxsquare", "rio", "rio"): (49, 52),
        ("maxsquare", "rome", "rio"): (47, 47), ("maxsquare", "rio", "rome"): (41, 41),
    }
    for (row, adapted, evaluated), (a, b) in values.items():
        for seed, v in ((0, a), (1, b)):
            rows.append(dict(seed=seed, row=row, adapted_to=adapted, evaluated_on=evaluated, miou=v,
                             miou_target_bn=v + 1))
    return pd.DataFrame(rows)


def test_city_table_gains_and_cross_matrix_by_hand():
    s = _scores()
    t = cc.city_table(s)
    assert list(t.index) == ["rome", "rio", "mean"] and list(t.columns) == ["source-only", "control", "maxsquare"]
    assert t.loc["rome", "maxsquare"] == 46.5 and t.loc["rio", "control"] == 50
    assert t.loc["mean", "maxsquare"] == (46.5 + 50.5) / 2
    assert cc.city_table(s, target_bn=True).loc["rome", "source-only"] == 42
    g = cc.gains(s, "maxsquare")
    assert g.loc["rome", "vs source-only"] == pytest.approx(((45 - 40) + (48 - 42)) / 2)
    assert g.loc["rio", "vs control"] == pytest.approx(((49 - 51) + (52 - 49)) / 2)
    assert g.loc["rio", "seeds ahead of control"] == 1 and g.loc["rome", "seeds ahead of source-only"] == 2
    assert "vs max(AdaBN, control)" not in g  # no AdaBN row: no margin over both
    adabn = s[s.row == "control"].assign(row="AdaBN", miou=lambda d: d.miou + [1, -3, 0, 0][: len(d)])
    g = cc.gains(pd.concat([s, adabn]), "maxsquare")
    # rome: seed 0 45 - max(45, 44) = 0, seed 1 48 - max(43, 46) = 2 -> 1; one seed strictly ahead
    assert g.loc["rome", "vs max(AdaBN, control)"] == pytest.approx(1.0) and g.loc["rome", "seeds ahead of both"] == 1
    m = cc.cross_matrix(s, "maxsquare")
    assert m.loc["rome", "rio"] == 47 and m.loc["rio", "rome"] == 41 and m.loc["rio", "rio"] == 50.5


@pytest.fixture()
def home_with_tiny_minicity(tmp_path, monkeypatch, tiny_minicity):
    monkeypatch.setenv("UDALIB_HOME", str(tmp_path))
    monkeypatch.delenv("UDALIB_DATA", raising=False)
    monkeypatch.delenv("UDALIB_RUNS", raising=False)
    shutil.copytree(tiny_minicity, tmp_path / "data" / MiniCitySpec().name)
    return tmp_path


def test_a_tiny_minicity_study_end_to_end(home_with_tiny_minicity):
    source = cc.minicity_source(0, steps=4, batch_size=4, cities=("rome",))
    base = replace(cc.minicity_base(0, steps=2, source=source), batch_size=4)
    scores = cc.transfer(lambda seed: base, (0,), cities=("rome",), source=lambda seed: source)
    assert sorted(scores.row) == sorted(["source-only", "AdaBN", "control", "maxsquare", "maxsquare_iw"])
    own = scores.set_index("row").miou

    # the source-only row is the source model scored on the city, and AdaBN its BN statistics from the city
    model = get_or_train(source, progress=False).model()
    val = open_data("minicity:rome/val", default_split="val", train=False, exp=source)
    assert own["source-only"] == pytest.approx(evaluate(model, eval_loader(val), 13).miou)
    assert own["source-only"] == pytest.approx(get_or_train(source).miou("minicity:rome/val"))
    adapt_batchnorm(model, eval_loader(open_data("minicity:rome", default_split="train", train=False, exp=source)))
    assert own["AdaBN"] == pytest.approx(evaluate(model, eval_loader(val), 13).miou)
    # MiniCity runs keep target-only running statistics, so there is no "target BN" re-estimate to score; under the
    # seeds' policy (both domains) the run is also scored with statistics re-estimated on the city
    assert math.isnan(scores.set_index("row").miou_target_bn["maxsquare"])
    study = cc.CrossCity(base, cities=("rome",))
    both = get_or_train(replace(study.experiment("maxsquare", "rome"), bn_stats="both"), progress=False)
    assert not math.isnan(study.scores({("maxsquare", "rome"): both}).miou_target_bn[0])

    # a misspelt method is refused before anything is trained
    assert main(["crosscity", "--cities", "rome", "--steps", "2", "--quiet", "--methods", "maxsquaree"]) == 2


def test_crosscity_command_refuses_a_non_crosscity_recipe(capsys):
    assert main(["crosscity", "--recipe", "gta5_maxsquare", "--data-root", "/d"]) == 2
    assert "not a CrossCity recipe" in capsys.readouterr().err
