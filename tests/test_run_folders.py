"""Run folders have an identity: resume only into the same experiment, finished runs are never modified,
config.json is written atomically after validation, every bad input is one line; folder locks."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest

from udalib import locks
from udalib.cli import main
from udalib.data.minicity import MiniCitySpec
from udalib.experiment import Experiment, load_run, run
from udalib.experiment_checks import check_experiment

TINY = dict(steps=2, batch_size=4, model_args={"width": 8}, method_args={"lr": 0.02})


@pytest.fixture()
def home(isolated_home, tiny_minicity):
    shutil.copytree(tiny_minicity, isolated_home / "data" / MiniCitySpec().name)
    return isolated_home


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_a_finished_run_is_never_modified_by_another_experiment(home):
    exp = Experiment(**TINY)
    folder = home / "runs" / "mine"
    first = run(exp, folder, progress=False)
    before = _snapshot(folder)
    assert set(before) >= {"config.json", "model.pt", "scores.json", "checkpoint.pt", "metrics.csv"}

    other = replace(exp, method="maxsquare", target="minicity:target")
    with pytest.raises(ValueError, match=r"is a finished run of another experiment \(method: stored 'source_only', "
                                         r"requested 'maxsquare'.*use another run folder") as info:
        run(other, folder, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"method_config.lr: stored 0.02, requested 0.5"):
        run(replace(exp, method_args={"lr": 0.5}), folder, progress=False)
    with pytest.raises(ValueError, match=r"num_classes: stored 19, requested 13"):
        run(replace(exp, num_classes=13), folder, progress=False)
    with pytest.raises(ValueError, match="finished run of this experiment.*drop --no-resume"):
        run(exp, folder, progress=False, resume=False)
    assert _snapshot(folder) == before  # not a byte changed, config.json included
    assert load_run(folder).config == exp

    again = run(replace(exp, device="cpu", label="renamed"), folder, progress=False)  # the same run: loaded
    assert again.scores == first.scores and _snapshot(folder) == before


def test_resume_only_into_the_same_experiment(home):
    exp = Experiment(**{**TINY, "steps": 4})
    folder = home / "runs" / "half"
    run(exp, folder, progress=False, stop_after=2)
    assert not (folder / "scores.json").exists() and (folder / "checkpoint.pt").exists()
    config = (folder / "config.json").read_text()

    changed = replace(exp, method_args={"lr": 0.5})
    with pytest.raises(ValueError, match=r"unfinished run of another experiment \(method_config.lr: stored 0.02, "
                                         r"requested 0.5\): pass --no-resume"):
        run(changed, folder, progress=False)
    assert (folder / "config.json").read_text() == config  # the refused change wrote nothing
    assert load_run(folder).config == exp

    done = run(changed, folder, progress=False, resume=False)  # the way out: start afresh there
    assert load_run(folder).config.method_args == {"lr": 0.5}
    assert [row["step"] for row in done.history().to_dict("records")] == [4]  # 4 fresh steps, not 2 resumed
    assert json.loads((folder / "config.json").read_text())["method_args"] == {"lr": 0.5}


def test_a_folder_that_is_not_a_run_folder_is_refused(home):
    folder = home / "elsewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and is not a udalib run folder"):
        run(Experiment(**TINY), folder, progress=False)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_failed_run_leaves_no_folder_behind(home):
    folder = home / "runs" / "failed"
    with pytest.raises(ValueError, match="unknown MiniCity domain"):
        run(Experiment(**TINY, source="minicity:nowhere"), folder, progress=False)
    assert not folder.exists()


def test_a_second_process_on_a_run_folder_is_told_who_holds_it(home):
    folder = home / "runs" / "busy"
    folder.mkdir(parents=True)
    with locks.hold(folder / ".lock", what="test"):
        with pytest.raises(locks.FolderBusyError, match=rf"run folder .*busy is in use by process {os.getpid()} "
                                                        r"on .*wait for it to finish, or use another run folder"):
            run(Experiment(**TINY), folder, progress=False)
    assert not (folder / "config.json").exists()
    run(Experiment(**TINY), folder, progress=False)  # released: now it runs
    assert (folder / "scores.json").exists() and not (folder / ".lock.owner").exists()


@pytest.mark.parametrize("changes, message", [
    ({"steps": -5}, "steps=-5: the number of training steps must be at least 0"),
    ({"steps": 0}, "steps=0 trains nothing: give --init RUN"),
    ({"batch_size": 0}, "batch_size=0: a batch holds at least 1 image"),
    ({"steps": "abc"}, "Experiment field steps='abc' is not valid: expected an integer"),
    ({"steps": True}, "Experiment field steps=True is not valid: expected an integer"),
    ({"size": [32]}, "Experiment field size=(32,) is not valid: expected a list of 2 values"),
    ({"poly_steps": 3}, "poly_steps=3 is below steps=400"),
    ({"method_args": {"lr": float("nan")}}, "parameter lr=nan is not valid: expected a finite number"),
    ({"method_args": {"lr": "fast"}}, "parameter lr='fast' is not valid: expected a finite number"),
    ({"method_args": {"lr": -1}}, "parameter lr=-1 is out of range: expected a learning rate above 0"),
    ({"method_args": {"momentum": 1.5}}, "parameter momentum=1.5 is out of range"),
    ({"adabn": True}, "adabn=True needs target images"),
    ({"device": "gpu"}, "device 'gpu' is not a torch device"),
])
def test_every_field_is_checked_before_anything_is_read(changes, message):
    exp = replace(Experiment(), **changes)
    with pytest.raises(ValueError) as info:
        check_experiment(exp)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_cuda_device_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device is usable here .*use --device cpu"):
        check_experiment(Experiment(device="cuda"))


def test_a_recipe_value_of_the_wrong_type_fails_at_load():
    from udalib.recipes import load_recipe

    with pytest.raises(ValueError, match=r"recipe source_gta5.yaml: Experiment field steps='abc' is not valid"):
        load_recipe("source_gta5", steps="abc")


@pytest.mark.parametrize("argv, message", [
    (["train", "--steps", "-5"], "error: argument --steps: expected an integer of at least 0, got -5"),
    (["train", "--batch-size", "0"], "error: argument --batch-size: expected an integer of at least 1, got 0"),
    (["train", "--steps", "ten"], "error: argument --steps: expected an integer, got 'ten'"),
    (["train", "--steps", "0"], "error: steps=0 trains nothing"),
    (["train", "--set", "lr=nan"], "error: method 'source_only' parameter lr=nan is not valid"),
    (["train", "--checkpoint-minutes", "-1"], "error: argument --checkpoint-minutes: expected minutes of at least 0"),
])
def test_bad_command_lines_are_one_line_and_write_nothing(isolated_home, capsys, argv, message):
    try:
        code = main([*argv, "--quiet"])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not (isolated_home / "runs").exists() or not any((isolated_home / "runs").iterdir())


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(isolated_home, capsys, monkeypatch):
    import udalib.cli as cli

    def boom(args):
        raise RuntimeError("CUDA driver initialization failed\nsecond line")

    monkeypatch.setattr(cli, "_table", boom)
    parser = cli.parser
    monkeypatch.setattr(cli, "parser", lambda: _with_func(parser(), boom))
    assert main(["table"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: RuntimeError: CUDA driver initialization failed second line "
                   "(rerun with --debug for the traceback)\n")
    with pytest.raises(RuntimeError, match="CUDA driver"):
        main(["table", "--debug"])


def _with_func(p, func):
    for action in p._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return p


def test_table_groups_seeds_of_one_experiment_and_skips_broken_or_unfinished_folders(home, capsys):
    import pandas as pd

    from udalib.experiment import group_key

    runs = home / "runs"
    exp = Experiment(**TINY, label="tiny")
    run(exp, runs / "a", progress=False)

    def copy(name, **changes):
        shutil.copytree(runs / "a", runs / name)
        config = json.loads((runs / name / "config.json").read_text()) | changes
        (runs / name / "config.json").write_text(json.dumps(config))

    copy("seed1", seed=1)
    copy("longer", steps=3)  # another experiment under the same label
    copy("unfinished", seed=2)
    (runs / "unfinished" / "scores.json").unlink()
    copy("broken")
    (runs / "broken" / "config.json").write_text("{")

    assert main(["table", "--out", str(home / "t.csv")]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipped {runs / 'broken'}: {runs / 'broken' / 'config.json'} is not a readable" in err
    table = pd.read_csv(home / "t.csv", index_col=0)
    key_a, key_long = group_key(exp), group_key(replace(exp, steps=3))
    assert key_a == group_key(replace(exp, seed=1)) != key_long
    # one row per experiment, named by the one naming rule (udalib.results.group_runs): the label, then the setting
    # the experiments sharing it differ in; the unfinished seed 2 is not counted
    assert table.seeds.to_dict() == {"tiny · steps 2": 2, "tiny · steps 3": 1}


def test_a_truncated_png_is_one_line_that_names_the_file(tmp_path, tiny_minicity):
    from udalib.data.dataset import SegmentationList

    root = tmp_path / "mc"
    shutil.copytree(tiny_minicity, root)
    image = root / "source" / "images" / "val_00001.png"
    image.write_bytes(image.read_bytes()[:60])
    label = root / "source" / "labels" / "val_00002.png"
    label.write_bytes(label.read_bytes()[:60])
    ds = SegmentationList(root, "lists/source_val.txt")
    ds.load(0)
    with pytest.raises(ValueError, match=rf"image {image} listed in .* is unreadable \(.*\); re-run"):
        ds.load(1)
    with pytest.raises(ValueError, match=rf"label {label} listed in .* is unreadable"):
        ds.load(2)


def test_a_non_finite_loss_is_one_line_that_says_which_checkpoint_is_kept(home, monkeypatch, capsys):
    from udalib.methods.source_only import SourceOnly

    real = SourceOnly.step
    calls = [0]

    def step(self, src, tgt):
        calls[0] += 1
        logs = real(self, src, tgt)
        return {**logs, "seg": float("nan")} if calls[0] == 3 else logs

    monkeypatch.setattr(SourceOnly, "step", step)
    folder = home / "runs" / "nan"
    code = main(["train", "--steps", "4", "--batch-size", "4", "--model-arg", "width=8", "--run-dir", str(folder),
                 "--checkpoint-every", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: step 3: non-finite loss (seg=nan); the checkpoint of step 2 in {folder} is kept. "
                          "Lower the learning rate")
    calls[0] = 0
    assert main(["train", "--steps", "4", "--batch-size", "4", "--model-arg", "width=8", "--run-dir",
                 str(home / "runs" / "nan2"), "--quiet"]) == 1
    assert "; no checkpoint was written." in capsys.readouterr().err
    assert not (home / "runs" / "nan2").exists()  # a failed run leaves no folder holding only config.json


def test_evaluate_on_a_missing_cuda_device_is_one_line(isolated_home, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["evaluate", "--checkpoint", "x.pt", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("error: device 'cuda': no CUDA device is usable here (no GPU or no NVIDIA "
                                       "driver): use --device cpu, or install the driver\n")


def test_append_csv_row_writes_the_header_once_and_refuses_an_unknown_column(tmp_path):
    import csv

    from udalib.locks import append_csv_row

    path = tmp_path / "rows.csv"
    append_csv_row(path, {"a": 1, "b": 2}, ["a", "b"])
    append_csv_row(path, {"a": 3, "b": 4}, ["a", "b"])
    with open(path, newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert path.read_text().count("a,b") == 1
    with pytest.raises(ValueError):
        append_csv_row(path, {"a": 5, "c": 6}, ["a", "b"])
