"""Model selection during training (``Experiment.select_every``): the step each rule picks, the kept weights, exact
resume, the stored record and the table columns."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from udalib import results, zoo
from udalib.cli import main
from udalib.data import SegmentationList
from udalib.experiment import Experiment, list_runs, load_run, run
from udalib.methods import build_method
from udalib.models import build_model
from udalib.train import FitOptions, Selector, fit
from udalib.train.select import BEST_MODEL, RULE_LABELS

TARGET = "minicity:target/val"
TINY = dict(batch_size=2, model_args={"width": 4})
IM, LABELS = "validator:im", "target labels"


def _method(seed=0):
    torch.manual_seed(seed)
    return build_method("maxsquare", build_model("minideeplab", 19, width=4), "minicity")


def _data(root):
    return (SegmentationList(root, "lists/source_train.txt", hflip=True, cache=True),
            SegmentationList(root, "lists/target_train.txt", hflip=True, cache=True))


class Scripted:
    """Scores read from a list, one per call, in order (a fake evaluation)."""

    def __init__(self, values, key=None):
        self.values, self.key, self.calls = list(values), key, 0

    def __call__(self, _model):
        v = self.values[self.calls]
        self.calls += 1
        return {self.key: v, "entropy": -v} if self.key else v


def _weights_every_step(store):
    def cb(i, method, _logs):
        store[i + 1] = {k: v.clone() for k, v in method.model.state_dict().items()}
    return cb


def test_each_rule_picks_its_step_and_best_model_holds_the_weights_of_the_target_selected_step(tiny_minicity,
                                                                                               tmp_path):
    src, tgt = _data(tiny_minicity)
    # scored at steps 3, 6, 9 and 11 (the last); target mIoU best at 6 (tied at 9: the earlier is kept), IM best at 9
    miou = Scripted([40.0, 47.0, 47.0, 45.0])
    im = Scripted([0.2, 0.1, 0.5, 0.3], key="im")
    selector = Selector(3, steps=11, target_miou=miou, validate=im, best_path=tmp_path / BEST_MODEL)
    weights = {}
    fit(_method(), src, tgt, options=FitOptions(steps=11, batch_size=2, progress=False,
                                                callbacks=(_weights_every_step(weights), selector)))
    assert [h["step"] for h in selector.history] == [3, 6, 9, 11]
    assert miou.calls == im.calls == 4
    assert selector.selections() == {"last": {"step": 11, "miou": 45.0},
                                     IM: {"step": 9, "miou": 47.0, "score": 0.5},
                                     LABELS: {"step": 6, "miou": 47.0}}
    best = torch.load(tmp_path / BEST_MODEL, weights_only=True)
    assert all(torch.equal(best[k], weights[6][k]) for k in best)
    assert not all(torch.equal(best[k], weights[9][k]) for k in best)  # the weights did move after step 6
    assert list(RULE_LABELS.values()) == ["last", "IM-selected (no target labels)",
                                          "target-selected (uses target labels)"]


def test_selection_changes_no_update_and_resumes_exactly(tiny_minicity, tmp_path):
    """Evaluating under a forked random state: the same weights as without a Selector; a run stopped at step 5
    and resumed selects what the uninterrupted one does and keeps the same best_model.pt."""
    src, tgt = _data(tiny_minicity)

    def selector(folder):
        state = {"n": 0}

        def scores(model):  # depends on the weights, and draws random numbers as a DataLoader does
            torch.rand(3)
            state["n"] += 1
            return float(next(iter(model.parameters())).detach().sum())
        return Selector(2, steps=9, target_miou=scores, validate=lambda m: {"im": -scores(m)},
                        best_path=folder / BEST_MODEL)

    plain = _method()
    fit(plain, src, tgt, options=FitOptions(steps=9, batch_size=2, progress=False))
    rng = torch.get_rng_state()  # what a method drawing random numbers in its step would see next
    straight_dir, resumed_dir = tmp_path / "a", tmp_path / "b"
    straight = _method()
    s1 = selector(straight_dir)
    fit(straight, src, tgt, options=FitOptions(steps=9, batch_size=2, progress=False, run_dir=straight_dir,
                                               callbacks=(s1,)))
    assert torch.equal(torch.get_rng_state(), rng)
    for a, b in zip(plain.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    fit(_method(), src, tgt, options=FitOptions(steps=9, batch_size=2, progress=False, run_dir=resumed_dir,
                                                stop_after=5, callbacks=(selector(resumed_dir),)))
    s2 = selector(resumed_dir)  # a fresh process: its history comes from the checkpoint
    resumed = _method()
    fit(resumed, src, tgt, options=FitOptions(steps=9, batch_size=2, progress=False, run_dir=resumed_dir,
                                              callbacks=(s2,)))
    assert s2.history == s1.history and [h["step"] for h in s1.history] == [2, 4, 6, 8, 9]
    assert s2.selections() == s1.selections()
    a, b = (torch.load(d / BEST_MODEL, weights_only=True) for d in (straight_dir, resumed_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint written without the Selector cannot be resumed with one (its history would be missing)
    fit(_method(), src, tgt, options=FitOptions(steps=9, batch_size=2, progress=False, run_dir=tmp_path / "c",
                                                stop_after=3))
    with pytest.raises(ValueError, match="holds no state for callback 0"):
        fit(_method(), src, tgt, options=FitOptions(steps=9, batch_size=2, progress=False, run_dir=tmp_path / "c",
                                                    callbacks=(selector(tmp_path / "c"),)))


@pytest.fixture(scope="module")
def home(minicity_home):
    return minicity_home


SEEDS = (0, 1, 2)


def _adapted(seed: int, select_every: int = 2) -> Experiment:
    source = Experiment(seed=seed, steps=1, **TINY)
    return replace(zoo.adaptation_experiment("maxsquare", source, steps=5), select_every=select_every)


@pytest.fixture(scope="module")
def store(home):
    for seed in SEEDS:
        run(Experiment(seed=seed, steps=1, **TINY), progress=False, checkpoint_seconds=None)
        run(_adapted(seed), progress=False, checkpoint_seconds=None)
    return home / "runs"


def test_the_key_is_unchanged_at_the_default_and_the_run_stores_its_selections(store):
    # at the default the standard runs keep the names they had before the field existed
    assert zoo.source_experiment(0).name == "source_only-s0-55c927408f"
    assert zoo.MINICITY_ROWS["minent"](0).name == "minent-s0-5cc96042c7"
    assert _adapted(0, select_every=0).key() != _adapted(0).key() != _adapted(0, select_every=3).key()
    folder = store / _adapted(0).name
    stored = json.loads((folder / "scores.json").read_text())
    sel = stored["selections"]
    assert set(sel) == {"last", IM, LABELS}
    history = pd.read_csv(folder / "selection.csv")
    assert list(history.step) == [2, 4, 5]
    # the last step's score is the stored final score; every pick is a row of the history, by its own column
    assert sel["last"] == {"step": 5, "miou": pytest.approx(stored[TARGET]["miou"])}
    assert sel[LABELS]["miou"] == pytest.approx(history.miou.max())
    assert sel[LABELS]["step"] == history.step[history.miou.idxmax()]
    assert sel[IM]["step"] == history.step[history.im.idxmax()]
    assert sel[IM]["miou"] == pytest.approx(history.miou[history.im.idxmax()])
    assert sel[IM]["score"] == pytest.approx(history.im.max())
    r = load_run(folder)
    assert r.selected_miou(LABELS) == pytest.approx(sel[LABELS]["miou"]) and TARGET in r.scores
    assert "selections" not in r.scores
    assert r.model(selected=LABELS) is not None and (folder / BEST_MODEL).is_file()
    # a run without selection: no record, NaN
    old = load_run(store / Experiment(seed=0, steps=1, **TINY).name)
    assert old.selections == {} and np.isnan(old.selected_miou(LABELS))
    with pytest.raises(FileNotFoundError, match="select_every > 0"):
        old.model(selected=LABELS)


def test_a_run_with_selection_trains_the_same_weights_as_without(store):
    with_sel = load_run(store / _adapted(0).name)
    without = run(_adapted(0, select_every=0), progress=False, checkpoint_seconds=None)
    assert without.miou(TARGET) == with_sel.miou(TARGET)
    a, b = (torch.load(r.dir / "model.pt", weights_only=True) for r in (with_sel, without))
    assert all(torch.equal(a[k], b[k]) for k in a)
    shutil.rmtree(without.dir)


# hand-written selections, one mIoU per rule and seed, all different: each column must read its own rule
PICKED = {"last": (40.0, 42.0, 47.0), IM: (41.0, 45.0, 50.0), LABELS: (44.0, 46.0, 51.0)}


@pytest.fixture()
def picked_store(store, tmp_path):
    """A copy of the store whose selection runs hold the selections of ``PICKED``."""
    runs = tmp_path / "runs"
    shutil.copytree(store, runs)
    for k, seed in enumerate(SEEDS):
        path = runs / _adapted(seed).name / "scores.json"
        stored = json.loads(path.read_text())
        stored["selections"] = {rule: {**stored["selections"][rule], "miou": v[k]} for rule, v in PICKED.items()}
        path.write_text(json.dumps(stored))
    return runs


def _sel(store, rule):
    return [json.loads((store / _adapted(s).name / "scores.json").read_text())["selections"][rule]["miou"]
            for s in SEEDS]


def test_the_table_shows_the_three_selections_pooled_over_seeds(picked_store, capsys):
    store = picked_store
    assert [_sel(store, rule) for rule in PICKED] == [list(v) for v in PICKED.values()]
    out = store.parent / "table.csv"
    assert main(["table", "--runs", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out, index_col=0)
    assert "45.33 ± 4.51" in printed  # IM-selected of maxsquare, as printed
    for rule, label in RULE_LABELS.items():
        assert label in printed
        values = _sel(store, rule)
        assert table.loc["maxsquare", f"{label} mean"] == pytest.approx(np.mean(values))
        assert table.loc["maxsquare", f"{label} std"] == pytest.approx(np.std(values, ddof=1))
        assert np.isnan(table.loc["source_only", f"{label} mean"])  # trained without selection: no number
    # the results function gives the same numbers
    board = results.selection_board(results.group_runs(results.load_runs(store)), TARGET)
    assert board.loc["maxsquare", RULE_LABELS[LABELS]] == pytest.approx(np.mean(_sel(store, LABELS)))
    assert board.loc["maxsquare", RULE_LABELS[IM] + " std"] == pytest.approx(np.std(_sel(store, IM), ddof=1))
    assert np.isnan(board.loc["source_only", RULE_LABELS["last"]])
    assert board.loc["maxsquare", RULE_LABELS["last"]] == pytest.approx(np.mean(PICKED["last"]))
    shown = results.with_spread(board)
    assert shown.loc["maxsquare", RULE_LABELS[IM]] == "45.3 ± 4.5" and shown.loc["source_only", RULE_LABELS[IM]] == ""
    # list_runs: the picks on the row of the set they were scored on, NaN on every other row
    df = list_runs(store)
    scored = df[(df.method == "maxsquare") & (df.evaluated_on == TARGET) & ~df.target_bn].sort_values("seed")
    assert list(scored[IM]) == list(PICKED[IM])
    assert df[(df.evaluated_on != TARGET) | (df.method != "maxsquare")][list(RULE_LABELS)].isna().all().all()


def test_without_selections_the_table_is_unchanged(home, tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in SEEDS:
        exp = Experiment(seed=seed, steps=1, **TINY)
        shutil.copytree(home / "runs" / exp.name, runs / exp.name)
    assert main(["table", "--runs", str(runs), "--out", str(tmp_path / "t.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "t.csv", index_col=0).columns) == ["mIoU mean", "std", "seeds",
                                                                            "target BN mean", "train s"]
    assert "selected" not in capsys.readouterr().out


@pytest.mark.parametrize("changes, message", [
    ({"target": None}, "select_every needs unlabelled target images"),
    ({"adabn": True}, "use one of the two"),
    ({"evaluate_on": ("minicity:source/val",)}, "has none: add one"),
    ({"select_every": -1}, "must be at least 0"),
])
def test_bad_selection_settings_are_one_line(changes, message):
    from udalib.experiment_checks import check_experiment

    with pytest.raises(ValueError, match=message):
        check_experiment(replace(_adapted(0), **changes), device=False)


def _benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "minicity_table.py"
    spec = importlib.util.spec_from_file_location("minicity_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_appends_one_line_per_run_skips_them_on_rerun_and_summarises_by_hand(tmp_path, monkeypatch):
    bench = _benchmark()
    trained = []

    def fake(exp, **_kwargs):  # a finished run with hand-written selections (last, IM, target labels)
        trained.append(exp)
        picks = {0: (40.0, 44.0, 45.0), 1: (50.0, 49.0, 53.0)}[exp.seed]
        return type("R", (), {"name": exp.name, "selections": {
            "last": {"step": 60, "miou": picks[0]}, IM: {"step": 30, "miou": picks[1], "score": 0.5},
            LABELS: {"step": 40, "miou": picks[2]}}})()

    monkeypatch.setattr(bench, "get_or_train", fake)
    out = tmp_path / "sel.csv"
    bench.run_selection(["minent"], [0, 1], 10, out)
    assert all(e.select_every == 10 for e in trained if e.method == "minent")
    first = pd.read_csv(out)
    assert list(first.method) == ["minent", "minent"] and list(first.im) == [44.0, 49.0]
    trained.clear()
    bench.run_selection(["minent"], [0, 1], 10, out)  # both lines there: nothing trained, nothing appended
    assert trained == [] and len(pd.read_csv(out)) == 2
    table = bench.selection_summary(pd.read_csv(out))
    row = table.loc["minent"]
    assert (row["last"], row["im"], row["target"]) == (45.0, 46.5, 49.0)
    assert row["regret"] == pytest.approx(2.5) and row["regret std"] == pytest.approx(np.std([1.0, 4.0], ddof=1))
    assert row["gain"] == pytest.approx(1.5)  # IM-selected minus last: +4 and -1
    assert "| minent | 2 | 45.00 ± 7.07 | 46.50 ± 3.54 | 49.00 ± 5.66 | 2.50 ± 2.12 | 1.50 ± 3.54 |" in \
        bench.selection_markdown(table, 10)
    with pytest.raises(SystemExit, match="does not train on target images"):
        bench.run_selection(["source_only"], [0], 10, out)


def test_the_table_keeps_every_line_an_only_run_does_not_redo_in_row_order():
    bench = _benchmark()
    before = pd.DataFrame({"method": ["source_only", "source_only", "minent", "adabn"], "seed": [0, 1, 0, 0],
                           "target_miou": [30.0, 31.0, 45.0, 40.0]})
    new = pd.DataFrame({"method": ["dacs", "minent"], "seed": [0, 0], "target_miou": [50.0, 46.0],
                        "threads": [1, 1]})
    table = bench.merged(before, new)
    assert list(zip(table.method, table.seed, table.target_miou)) == [
        ("source_only", 0, 30.0), ("source_only", 1, 31.0), ("adabn", 0, 40.0), ("minent", 0, 46.0),
        ("dacs", 0, 50.0)]  # minent's line replaced, the others kept, the mean teacher's row after the standard ones
    assert list(bench.ROWS)[:2] == ["source_only", "adabn"] and "dacs" in bench.ROWS
    assert bench.merged(None, new).equals(bench.merged(pd.DataFrame(), new))
