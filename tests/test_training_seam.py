"""The training seam: ``build(exp)`` makes a run, ``train`` / ``fit`` train it, with one options object each."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from udalib.experiment import Built, Experiment, RunOptions, build, open_data, run, train
from udalib.train import FitOptions, fit

ROOT = Path(__file__).parents[1]
TINY = dict(steps=3, batch_size=4, model_args={"width": 4}, target="minicity:target",
            evaluate_on=("minicity:source/val", "minicity:target/val"))
BENCHMARKS = ("selection_study.py", "method_families.py", "train_throughput.py")


@pytest.fixture()
def home(isolated_home, tiny_minicity):
    from udalib.data.minicity import MiniCitySpec

    shutil.copytree(tiny_minicity, isolated_home / "data" / MiniCitySpec().name)
    return isolated_home


def _losses(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "metrics.csv").drop(columns="seconds")


def test_fit_takes_the_method_its_data_and_one_options_object():
    params = inspect.signature(fit).parameters
    assert len(params) <= 6
    assert list(params) == ["method", "source", "target", "options"]
    assert params["options"].kind is inspect.Parameter.KEYWORD_ONLY
    # every setting has its default in FitOptions, but the number of steps
    required = [f.name for f in dataclasses.fields(FitOptions)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert required == ["steps"]
    resolved = FitOptions(steps=5).resolved()
    assert resolved.device == torch.device("cpu") and resolved.amp is False and resolved.channels_last is False
    assert resolved.poly_steps == 5 and FitOptions(steps=5, poly_steps=9).resolved().poly_steps == 9
    assert FitOptions(steps=5, device="cuda").resolved().amp is True  # resolving touches no GPU


def test_run_options_take_fits_defaults_and_check_their_values():
    fit_defaults = {f.name: f.default for f in dataclasses.fields(FitOptions)}
    for f in dataclasses.fields(RunOptions):
        if f.name != "checkpoint_seconds":  # a run folder is checkpointed every few minutes; fit alone is not
            assert f.default == fit_defaults[f.name], f.name
    assert RunOptions().checkpoint_seconds > 0 and fit_defaults["checkpoint_seconds"] is None
    with pytest.raises(ValueError, match="workers=-1 must be an integer of at least 0"):
        RunOptions(workers=-1)
    with pytest.raises(ValueError, match="checkpoint_seconds=0 must be above 0"):
        RunOptions(checkpoint_seconds=0)


def test_build_then_train_is_run_and_the_hand_built_loop(home):
    exp = Experiment(**TINY)
    done = run(exp, home / "runs" / "by_run", progress=False)

    built = build(exp, home / "runs" / "by_seam")
    assert isinstance(built, Built) and set(built.eval_sets) == set(exp.evaluate_on)
    assert not (home / "runs" / "by_seam").exists()  # building writes nothing
    seam = train(built, RunOptions(progress=False))
    pd.testing.assert_frame_equal(_losses(seam.dir), _losses(done.dir))
    for a, b in zip(done.model().state_dict().values(), seam.model().state_dict().values()):
        assert torch.equal(a, b)
    assert {k: s.miou for k, s in seam.scores.items()} == {k: s.miou for k, s in done.scores.items()}

    # the same run built by hand, as the benchmarks did before the seam: the same losses, step for step
    from udalib.models import build_model

    torch.manual_seed(exp.seed)
    method = exp.build_method(build_model(exp.model, exp.num_classes, **exp.model_args))
    source = open_data(exp.source, default_split="train", train=True, exp=exp)
    target = open_data(exp.target, default_split="train", train=True, exp=exp)
    rows = fit(method, source, target, options=FitOptions(steps=exp.steps, batch_size=exp.batch_size, seed=exp.seed,
                                                          progress=False))
    assert pd.DataFrame(rows).drop(columns="seconds").equals(_losses(done.dir))


def test_fit_options_of_a_built_run_are_its_schedule(home):
    exp = Experiment(**TINY | {"poly_steps": 7, "seed": 3})
    options = build(exp, data=False).fit_options(progress=False)
    assert (options.steps, options.batch_size, options.seed, options.poly_steps) == (3, 4, 3, 7)
    assert options.run_dir is None and not options.progress  # no files unless asked


def _fit_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) == "fit" or getattr(node.func, "attr", None) == "fit")]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmarks_build_through_the_seam(name):
    path = ROOT / "benchmarks" / name
    text = path.read_text()
    assert "from udalib.experiment import" in text and "build" in text
    calls = _fit_calls(path)
    assert calls, f"{name} trains with udalib.train.fit"
    for call in calls:  # one options object, no loop settings of its own
        assert [k.arg for k in call.keywords] == ["options"], ast.unparse(call)
