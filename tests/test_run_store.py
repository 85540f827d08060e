"""The run store read as a whole: ``list_runs`` and ``python -m udalib table`` pool the seeds of each experiment
(adaptation runs start from the source run of their own seed), target-BN scores are a field, one rule for finished."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from udalib import results, zoo
from udalib.cli import main
from udalib.experiment import Experiment, group_key, list_runs, run

TARGET = "minicity:target/val"
SEEDS = (0, 1, 2)
TINY = dict(steps=1, batch_size=2, model_args={"width": 4})
LABELS = {"source_only": "source_only", "adabn": "AdaBN", "control": "target batches, lambda 0 (control)",
          "maxsquare": "maxsquare"}


def _rows(seed: int) -> dict[str, Experiment]:
    """The standard rows of ``udalib.zoo`` for one seed, at one training step of a width-4 model."""
    source = Experiment(seed=seed, **TINY)
    return {"source_only": source, "adabn": zoo.adabn_experiment(source),
            "control": zoo.control_experiment(source, steps=1),
            # under the seeds' BatchNorm policy, so that it is also scored with re-estimated target statistics
            "maxsquare": replace(zoo.adaptation_experiment("maxsquare", source, steps=1), bn_stats="both")}


@pytest.fixture(scope="module")
def store(minicity_home):
    """UDALIB_HOME with the tiny MiniCity and 3 seeds of source-only, AdaBN, MaxSquare and its control, trained."""
    home = minicity_home
    for seed in SEEDS:
        for exp in _rows(seed).values():  # source first: the others start from it
            run(exp, progress=False, checkpoint_seconds=None)
    return home / "runs"


def _scores(runs, row: str, key: str) -> list[float]:
    """mIoU under ``key`` in the scores.json of the row's three runs, read as plain JSON."""
    return [json.loads((runs / _rows(s)[row].name / "scores.json").read_text())[key]["miou"] for s in SEEDS]


def test_the_table_has_one_row_per_standard_row_with_the_mean_over_three_seeds(store, capsys):
    out = store.parent / "table.csv"
    assert main(["table", "--runs", str(store), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[" not in printed  # no row told apart by a key: every row is one experiment over its seeds
    table = pd.read_csv(out, index_col=0)
    assert sorted(table.index) == sorted(LABELS.values())
    for row, label in LABELS.items():
        miou = _scores(store, row, TARGET)
        assert table.loc[label, "seeds"] == 3
        assert table.loc[label, "mIoU mean"] == pytest.approx(np.mean(miou))
        assert table.loc[label, "std"] == pytest.approx(np.std(miou, ddof=1))
        if row == "maxsquare":  # statistics of both domains: scored again with target BatchNorm statistics
            bn = _scores(store, row, TARGET + " | target BN")
            assert table.loc[label, "target BN mean"] == pytest.approx(np.mean(bn))
        else:
            assert np.isnan(table.loc[label, "target BN mean"])


def test_list_runs_gives_one_seed_free_key_per_experiment_and_target_bn_as_a_field(store):
    df = list_runs(store)
    assert len(set(df.run)) == 12 and len(set(df.experiment)) == 4
    assert set(df.evaluated_on) == {"minicity:source/val", TARGET}  # no suffix in the dataset column
    for row in LABELS:
        names = {_rows(s)[row].name for s in SEEDS}  # the run folders keep their per-seed names
        part = df[df.run.isin(names)]
        assert set(part.run) == names and part.experiment.nunique() == 1
        has_bn = row == "maxsquare"  # the control keeps target statistics (zoo.BN_STATS): nothing to re-estimate
        assert set(part.target_bn) == ({False, True} if has_bn else {False})
        if has_bn:
            bn = part[part.target_bn & (part.evaluated_on == TARGET)].sort_values("seed").miou
            assert list(bn) == pytest.approx(_scores(store, row, TARGET + " | target BN"))
    # notebook 11's grouping is the same key
    groups = results.group_runs(results.load_runs(store))
    assert sorted(groups) == sorted(LABELS.values()) and all(len(g) == 3 for g in groups.values())


def test_group_key_resolves_the_init_by_store_folder_by_path_and_by_name_alone(store):
    configs = {e.name: e for s in SEEDS for e in _rows(s).values()}
    adapted = [_rows(s)["maxsquare"] for s in SEEDS]
    keys = {group_key(e, configs) for e in adapted}
    assert len(keys) == 1
    key = keys.pop()
    assert group_key(adapted[1]) != key  # without the store the init is a name of seed 1: another key
    # the init as a run folder path: read from its config.json
    assert group_key(replace(adapted[1], init=str(store / adapted[1].init))) == key
    # the source run of seed 1 is gone: its name, another seed of a source run that is there, still finds it
    without = {n: e for n, e in configs.items() if n != adapted[1].init}
    assert group_key(adapted[1], without) == key
    # a run of seed 1 from the source run of seed 0 is another experiment, and so is one from a weights file
    from_seed0 = replace(adapted[1], init=adapted[0].init)
    assert group_key(from_seed0, configs) not in (key, group_key(adapted[0], configs))
    assert group_key(replace(adapted[2], init=adapted[0].init), configs) == group_key(from_seed0, configs)
    assert group_key(replace(adapted[1], init="weights.pth"), configs) != key
    # a run whose init is itself ends (no endless recursion)
    assert len(group_key(replace(adapted[0], init=adapted[0].name), {adapted[0].name: replace(adapted[0],
                                                                                            init=adapted[0].name)}))
    # the run keys and names that name the folders are unchanged by any of this
    assert [(store / e.name).is_dir() for e in adapted] == [True] * 3


def _store_with_a_shared_label(store, tmp_path):
    """A copy of ``store`` with the MaxSquare runs again, as if adapted to another target domain: two experiments
    share the label "maxsquare"."""
    copy = tmp_path / "runs"
    shutil.copytree(store, copy)
    for seed in SEEDS:
        exp = _rows(seed)["maxsquare"]
        other = copy / (exp.name + "-other")
        shutil.copytree(copy / exp.name, other)
        (other / "config.json").write_text(json.dumps({**json.loads((other / "config.json").read_text()),
                                                       "target": "minicity:target-texture"}))
    return copy


def test_labels_shared_by_experiments_of_other_targets_show_the_target(store, tmp_path, capsys):
    copy = _store_with_a_shared_label(store, tmp_path)
    out = tmp_path / "table.csv"
    assert main(["table", "--runs", str(copy), "--out", str(out)]) == 0
    table = pd.read_csv(out, index_col=0)
    # the one naming rule of a row (udalib.results.group_runs): the label and the setting that tells them apart
    assert {"maxsquare · target minicity:target", "maxsquare · target minicity:target-texture"} <= set(table.index)
    assert "maxsquare" not in table.index and (table.seeds == 3).all()


def test_one_rule_for_finished_runs(store, tmp_path, capsys):
    copy = tmp_path / "runs"
    shutil.copytree(store, copy)
    source = _rows(0)["source_only"]
    (copy / source.name / "model.pt").unlink()  # scores but no weights: not finished
    assert source.name not in set(list_runs(copy).run)
    assert source.name not in {r.name for r in results.load_runs(copy)}
    assert main(["table", "--runs", str(copy), "--out", str(tmp_path / "t.csv")]) == 0
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["source_only", "seeds"] == 2


def test_the_table_names_the_evaluation_sets_when_none_matches(store, capsys):
    assert main(["table", "--runs", str(store), "--dataset", "minicity:rome/val"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "no run was evaluated on minicity:rome/val; pass --dataset with one of" in out
    assert "'minicity:source/val', 'minicity:target/val'" in out


def test_udalib_table_and_the_viz_leaderboard_give_the_same_rows(store, tmp_path, capsys):
    from udalib import results as api

    copy = _store_with_a_shared_label(store, tmp_path)
    out = tmp_path / "table.csv"
    assert main(["table", "--runs", str(copy), "--out", str(out)]) == 0
    table = pd.read_csv(out, index_col=0)
    board = results.leaderboard(results.group_runs(results.load_runs(copy)), TARGET)
    assert sorted(table.index) == sorted(board.index) and len(board) == 5
    board = board.loc[table.index]
    assert list(table["mIoU mean"]) == pytest.approx(list(board["mIoU"]))
    assert list(table["std"]) == pytest.approx(list(board["std"]))
    assert list(table["seeds"]) == [len(s.split(", ")) for s in board["seeds"]]
    # both are over_seeds of the store's tidy table
    frame = api.load_store(copy)
    on = frame[(frame.evaluated_on == TARGET) & ~frame.target_bn]
    assert api.over_seeds(on, "miou")["mean"].astype(float).loc[table.index].tolist() == \
        pytest.approx(list(table["mIoU mean"]))
