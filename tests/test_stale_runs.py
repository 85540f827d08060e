"""Runs know the weights they started from: a run records the sha256 of its init weights (``inputs.json``, outside
its key); when its source run is trained again in place, the runs trained from the old weights are stale. The table
lists them apart from the means and checkpoint-or-train trains them again, chains (source -> adaptation -> a run
from the adapted model) from their root, keeping the stale files in ``<folder>.stale-<time>``."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pandas as pd
import pytest

from udalib import results, zoo
from udalib.cli import main
from udalib.experiment import (
    INPUTS,
    MODEL,
    Experiment,
    find_run,
    get_or_train,
    list_runs,
    load_run,
    read_inputs,
    run,
    stale_reason,
    weights_identity,
)
from udalib.models.checkpoint import load_state_dict_file
from udalib.train.checkpoint import atomic_save

TARGET = "minicity:target/val"
TINY = dict(steps=1, batch_size=2, model_args={"width": 4}, evaluate_on=(TARGET,))
QUIET = dict(progress=False, checkpoint_seconds=None)


@pytest.fixture()
def runs(minicity_home, tmp_path, monkeypatch):
    """An empty runs folder of its own for each test, beside the module's tiny MiniCity."""
    monkeypatch.setenv("UDALIB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _chain(seed: int) -> tuple[Experiment, Experiment, Experiment]:
    """Source-only, MaxSquare from it, MinEnt from the MaxSquare model: one training step each."""
    source = Experiment(seed=seed, **TINY)
    adapted = zoo.adaptation_experiment("maxsquare", source, steps=1)
    after = zoo.adaptation_experiment("minent", adapted, steps=1, label="minent after maxsquare")
    return source, adapted, after


def _train_again_in_place(source: Experiment, runs, tmp_path) -> None:
    """The source run trained again into its own folder with other weights (what a changed udalib or MiniCity does
    to a run of the same config): 3 steps instead of 1, written over its model.pt as training writes it."""
    other = run(replace(source, steps=3), tmp_path / "elsewhere", **QUIET)
    atomic_save(load_state_dict_file(other.dir / MODEL), runs / source.name / MODEL)


def test_a_run_records_the_sha256_of_its_init_weights_outside_its_key(runs):
    source, adapted, _ = _chain(0)
    get_or_train(source, **QUIET)
    before = adapted.name
    r = get_or_train(adapted, **QUIET)
    assert r.name == before  # the record is not in the key: the folder keeps its name
    inputs = read_inputs(r.dir)
    assert inputs["init"]["name"] == source.name
    assert inputs["init"]["sha256"] == weights_identity(runs / source.name / MODEL)
    assert read_inputs(runs / source.name) is None  # no init, nothing to record
    assert stale_reason(r.dir) is None and find_run(adapted) is not None


def test_the_table_lists_runs_from_changed_weights_apart_and_leaves_them_out_of_the_means(runs, tmp_path, capsys):
    chains = {seed: _chain(seed) for seed in (0, 1)}
    for exps in chains.values():
        for exp in exps:
            get_or_train(exp, **QUIET)
    _train_again_in_place(chains[0][0], runs, tmp_path)
    stale = {chains[0][1].name, chains[0][2].name}  # MaxSquare from it, and MinEnt from that (the chain)

    df = list_runs(runs)
    assert set(df[df.stale != ""].run) == stale
    reasons = df.drop_duplicates("run").set_index("run").stale
    assert "changed" in reasons[chains[0][1].name] and "is stale" in reasons[chains[0][2].name]
    assert {r.name for r in results.load_runs(runs)} & stale == set()  # the widgets leave them out too

    out = tmp_path / "table.csv"
    assert main(["table", "--runs", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    listed = printed.split("stale runs")[1]
    assert all(name in listed for name in stale) and chains[1][1].name not in listed
    table = pd.read_csv(out, index_col=0)
    for k, label in ((1, "maxsquare"), (2, "minent after maxsquare")):
        assert table.loc[label, "seeds"] == 1  # seed 1 alone: the stale seed 0 is not averaged in
        assert table.loc[label, "mIoU mean"] == pytest.approx(load_run(runs / chains[1][k].name).miou(TARGET))
    assert table.loc["source_only", "seeds"] == 2  # the source run itself is not stale
    assert find_run(chains[0][1]) is None and find_run(chains[0][2]) is None
    assert find_run(chains[1][2]) is not None


def test_get_or_train_trains_a_stale_chain_again_from_its_root_and_keeps_the_stale_files(runs, tmp_path):
    source, adapted, after = _chain(0)
    for exp in (source, adapted, after):
        get_or_train(exp, **QUIET)
    old = {exp.name: (runs / exp.name / MODEL).read_bytes() for exp in (adapted, after)}
    _train_again_in_place(source, runs, tmp_path)

    with pytest.warns(UserWarning, match="is stale"):
        r = get_or_train(after, **QUIET)  # MaxSquare first (its init changed), then MinEnt from the new MaxSquare
    assert r.dir == runs / after.name
    for exp, init in ((adapted, source), (after, adapted)):
        folder = runs / exp.name
        assert read_inputs(folder)["init"]["sha256"] == weights_identity(runs / init.name / MODEL)
        assert (folder / MODEL).read_bytes() != old[exp.name]  # trained again: new weights
        assert stale_reason(folder) is None
        aside = sorted(runs.glob(f"{exp.name}.stale-*"))
        assert len(aside) == 1 and (aside[0] / MODEL).read_bytes() == old[exp.name]  # nothing written is lost
        assert stale_reason(aside[0]) is not None
    assert find_run(after) is not None
    assert get_or_train(after, **QUIET).dir == r.dir  # up to date: returned as it is

    df = list_runs(runs)  # the folders moved aside are listed as stale, the new runs are not
    assert set(df[df.stale != ""].run) == {p.name for p in runs.glob("*.stale-*")}


def test_runs_without_a_record_fall_back_to_modification_times(runs):
    source, adapted, _ = _chain(0)
    get_or_train(source, **QUIET)
    done = get_or_train(adapted, **QUIET)
    (done.dir / INPUTS).unlink()  # as a run trained before runs recorded their inputs
    src_model, own = runs / source.name / MODEL, done.dir / MODEL
    t = own.stat().st_mtime
    os.utime(src_model, (t - 60, t - 60))
    assert stale_reason(done.dir) is None  # the source was written before the run finished
    os.utime(src_model, (t + 60, t + 60))
    assert "modification times" in stale_reason(done.dir)
    assert find_run(adapted) is None


def test_a_resumed_run_keeps_the_record_of_the_weights_it_started_from(runs, tmp_path):
    source, adapted, _ = _chain(0)
    get_or_train(source, **QUIET)
    longer = replace(adapted, steps=2)
    run(longer, stop_after=1, **QUIET)  # stopped halfway: a checkpoint from the first source weights
    first = read_inputs(runs / longer.name)["init"]["sha256"]
    _train_again_in_place(source, runs, tmp_path)
    with pytest.warns(UserWarning, match="is stale"):  # not resumed from the old weights: moved aside, afresh
        r = run(longer, **QUIET)
    assert read_inputs(r.dir)["init"]["sha256"] == weights_identity(runs / source.name / MODEL) != first
    aside = sorted(runs.glob(f"{longer.name}.stale-*"))
    assert len(aside) == 1 and json.loads((aside[0] / INPUTS).read_text())["init"]["sha256"] == first
