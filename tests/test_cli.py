"""``python -m udalib``: help, a tiny end-to-end train/evaluate/table, one-line errors; Experiment keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from udalib.cli import main
from udalib.data.minicity import MiniCitySpec
from udalib.experiment import Experiment, list_runs, load_run

REPO = Path(__file__).resolve().parent.parent


def _python_m_udalib(*args, home):
    env = {**os.environ, "UDALIB_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("UDALIB_DATA", None)
    env.pop("UDALIB_RUNS", None)
    return subprocess.run([sys.executable, "-m", "udalib", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def test_help_lists_the_commands(tmp_path, capsys):
    top = _python_m_udalib("--help", home=tmp_path)  # the real entry point, in a fresh interpreter
    assert top.returncode == 0, top.stderr
    for word in ("train", "evaluate", "minicity", "table", "run"):
        assert word in top.stdout
    assert "python -m udalib train --method source_only" in top.stdout  # the examples epilog

    with pytest.raises(SystemExit) as info:  # in-process: a second interpreter would cost seconds of imports
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help to the terminal width
    assert text.startswith("usage: python -m udalib train")
    for flag in ("--method", "--source", "--target", "--steps", "--set", "--adabn", "--eval-on", "--preset"):
        assert flag in text
    assert "a name from udalib.methods.METHODS (default: source_only)" in text
    assert "labelled set, DATASET[:DOMAIN][/SPLIT] (default: minicity:source)" in text


def test_an_unknown_method_is_one_error_line_and_exit_code_2(tmp_path):
    result = _python_m_udalib("train", "--method", "dann", "--steps", "1", home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unknown method 'dann'; registered methods: ")
    assert "minent" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_train_arguments_in_process(isolated_home, capsys):
    assert main(["train", "--method", "dann", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method 'dann'") and err.count("\n") == 1

    assert main(["train", "--set", "lamda_target=1", "--method", "minent", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "method 'minent' has no parameter 'lamda_target'" in err and "lambda_target" in err

    assert main(["train", "--preset", "gpu", "--quiet"]) == 2
    assert "has no preset 'gpu'" in capsys.readouterr().err

    assert main(["train", "--set", "lr", "--quiet"]) == 2
    assert capsys.readouterr().err == "error: --set expects key=value, got 'lr'\n"
    assert main(["train", "--model-arg", "width:8", "--quiet"]) == 2
    assert capsys.readouterr().err == "error: --model-arg expects key=value, got 'width:8'\n"


def test_a_negative_count_names_the_option_minimum(isolated_home, capsys):
    """``--batch-size -2`` must say "at least 1" (its minimum), not the "at least 0" of ``--steps``."""
    for flag, value in (("--batch-size", "-2"), ("--batch-size", "0"), ("--num-classes", "-1")):
        with pytest.raises(SystemExit) as info:
            main(["train", flag, value, "--quiet"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: argument {flag}: expected an integer of at least 1, got {value} "), err
        assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["train", "--steps", "-5", "--quiet"])
    assert "expected an integer of at least 0, got -5" in capsys.readouterr().err


def test_evaluate_without_a_model_is_an_error(isolated_home):
    with pytest.raises(SystemExit, match="give --run RUN_DIR or --checkpoint FILE"):
        main(["evaluate", "--quiet"])


@pytest.fixture()
def home_with_tiny_minicity(isolated_home, tiny_minicity):
    """UDALIB_HOME whose default MiniCity folder is the tiny fixture (a finished build is reused as is)."""
    shutil.copytree(tiny_minicity, isolated_home / "data" / MiniCitySpec().name)
    return isolated_home


def test_train_evaluate_and_table_end_to_end(home_with_tiny_minicity, capsys):
    home = home_with_tiny_minicity
    code = main(["train", "--steps", "2", "--batch-size", "4", "--model-arg", "width=8", "--set", "lr=0.02",
                 "--label", "tiny", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    runs = list((home / "runs").iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    assert f"run folder: {run_dir}" in out

    exp = Experiment(steps=2, batch_size=4, model_args={"width": 8}, method_args={"lr": 0.02}, label="tiny")
    assert run_dir.name == exp.name  # runs/<method>-s<seed>-<hash of the config>
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method_args"] == {"lr": 0.02} and config["model_args"] == {"width": 8}  # JSON-parsed values
    assert config["steps"] == 2 and config["preset"] == "minicity"

    run = load_run(run_dir)
    assert set(run.scores) == {"minicity:source/val", "minicity:target/val"}
    for spec, scores in run.scores.items():
        assert 0 <= scores.miou <= 100
        assert spec in out
        assert scores.protocol["model_selection"] == "last checkpoint"
    assert (run_dir / "model.pt").is_file() and (run_dir / "metrics.csv").is_file()

    # evaluate the run folder again: the same weights and data give the same mIoU
    assert main(["evaluate", "--run", str(run_dir), "--dataset", "minicity:target/val", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"mIoU {run.miou('minicity:target/val'):.2f}% over " in out

    # the table reads the finished run
    assert main(["table", "--out", str(home / "table.csv")]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "minicity:target/val" in out
    df = list_runs(home / "runs")
    assert set(df.evaluated_on) == {"minicity:source/val", "minicity:target/val"}
    table = pd.read_csv(home / "table.csv", index_col=0)
    assert list(table.index) == ["tiny"]
    assert table.loc["tiny"].iloc[0] == pytest.approx(run.miou("minicity:target/val"))  # mean over one seed


def test_table_without_runs_says_what_to_do(isolated_home, capsys):
    assert main(["table"]) == 0
    assert "no finished runs" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- Experiment
def test_from_dict_rejects_unknown_keys_and_lists_the_fields():
    with pytest.raises(TypeError) as info:
        Experiment.from_dict({"method": "minent", "stpes": 10, "lr": 0.1})
    msg = str(info.value)
    assert "Experiment has no field 'lr', 'stpes'" in msg
    assert "fields: " in msg and "steps" in msg and "method_args" in msg
    exp = Experiment.from_dict({"method": "minent", "steps": 10, "evaluate_on": ["a/val"], "size": [32, 64]})
    assert exp.steps == 10 and exp.evaluate_on == ("a/val",) and exp.size == (32, 64)


def test_key_follows_the_result_not_the_device_or_the_label():
    base = Experiment(method="minent", target="minicity:target", steps=100)
    key = base.key()
    assert len(key) == 10 and key == Experiment(method="minent", target="minicity:target", steps=100).key()
    # the same run wherever it runs and whatever it is called
    assert replace(base, device="cuda").key() == key
    assert replace(base, label="MinEnt, lambda 2").key() == key
    # anything that changes the result changes the key
    for changed in (replace(base, steps=101), replace(base, seed=1), replace(base, batch_size=4),
                    replace(base, method_args={"lambda_target": 0.5}), replace(base, method="maxsquare"),
                    replace(base, preset=None), replace(base, model_args={"width": 8}),
                    replace(base, target="minicity:rome")):
        assert changed.key() != key, changed
    # naming the preset's own value explicitly is the same run
    assert replace(base, method_args={"lambda_target": 2.0}).key() == key
    assert base.name == f"minent-s0-{key}"


def test_experiment_config_round_trips_through_json():
    exp = Experiment(method="maxsquare", target="minicity:target", size=(32, 64), method_args={"lr": 0.1})
    from dataclasses import asdict

    again = Experiment.from_dict(json.loads(json.dumps(asdict(exp), default=list)))
    assert again == exp and again.key() == exp.key()


def test_minicity_ignores_the_real_data_root(home_with_tiny_minicity, tmp_path):
    """Experiment.data_root is for data_scripts/ datasets: "MiniCity ignores it" (a GTA5 run evaluated on
    MiniCity must not generate MiniCity into the folder of the prepared real datasets)."""
    from udalib.experiment import open_data

    prepared = tmp_path / "prepared"
    (prepared / "gta5").mkdir(parents=True)
    exp = Experiment(data_root=str(prepared))
    ds = open_data("minicity:target/val", default_split="val", train=False, exp=exp)
    assert ds.root == home_with_tiny_minicity / "data" / MiniCitySpec().name
    assert len(ds) == 8
    assert [p.name for p in prepared.iterdir()] == ["gta5"]  # nothing written into the real datasets' folder
    assert not (tmp_path / "prepared.partial").exists()


# ------------------------------------------------------------------------------------------- run RECIPE --set
def test_run_set_merges_a_method_parameter_into_the_recipe():
    """``run gta5_maxsquare --set lambda_target=0.2``: that parameter changes, every other recipe value stays
    (``legacy_param_multiplicity`` among them); Experiment fields are set by name as before."""
    from dataclasses import asdict

    from udalib.cli import recipe_experiment
    from udalib.recipes import load_recipe

    recipe = load_recipe("gta5_maxsquare")
    exp = recipe_experiment("gta5_maxsquare", ["lambda_target=0.2"])
    assert exp.method_config.lambda_target == 0.2 != recipe.method_config.lambda_target
    assert asdict(replace(exp.method_config, lambda_target=recipe.method_config.lambda_target)) == asdict(
        recipe.method_config)
    assert replace(exp, method_args=recipe.method_args) == recipe
    assert exp.method_args == recipe.method_args | {"lambda_target": 0.2}
    assert recipe_experiment("gta5_maxsquare", ["steps=10"]) == replace(recipe, steps=10)
    assert recipe_experiment("gta5_mlsl", ["method.flip=false", "exp.flip=false"]).method_args["flip"] is False


def test_run_set_errors_and_dry_run(isolated_home, capsys):
    """A name that is both a method parameter and an Experiment field, or the whole method_args, is one error line;
    ``--dry-run`` prints the resolved run and trains nothing."""
    assert main(["run", "gta5_mlsl", "--set", "flip=false", "--quiet"]) == 2
    assert capsys.readouterr().err == ("error: --set flip=...: 'flip' is both a parameter of method 'mlsl' and an "
                                       "Experiment field: write method.flip=... or exp.flip=...\n")
    assert main(["run", "gta5_maxsquare", "--set", "method_args={}", "--quiet"]) == 2
    assert "would replace the recipe's method parameters" in capsys.readouterr().err
    assert main(["run", "gta5_maxsquare", "--set", "lambda_target=0.2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    first, _, config = out.partition("\n")
    resolved = json.loads(config)
    assert resolved["method_config"]["lambda_target"] == 0.2 and resolved["method_config"]["legacy_param_multiplicity"]
    assert first.endswith(Experiment.from_dict({k: v for k, v in resolved.items() if k != "method_config"}).name)
    assert not (isolated_home / "runs").exists() or not any((isolated_home / "runs").iterdir())
