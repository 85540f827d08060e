"""The MiniCity results table: method x seed -> target mIoU, with the controls beside every method.

Rows: source-only, AdaBN (source model, BatchNorm statistics re-estimated on target images), the oracle
(target labels), the lambda = 0 control (the adaptation run with its target loss weight at 0: training on target
batches moves BatchNorm statistics even without a target loss; one run serves MinEnt and the MaxSquare family,
which compute identical updates at weight 0), and every adaptation method; then the mean teacher's rows
(``udalib.zoo.MEAN_TEACHER_ROWS``: DACS, DACS + RCS, MIC on DACS, MinEnt and AdaptSegNet, the ablations, each with
its own lambda = 0 control). The "target BN" columns score the same weights after re-estimating BatchNorm
statistics on target images only (for the mean teacher's rows, the column they are compared in:
``zoo.MEAN_TEACHER_SCORE``). Every row is trained with one thread per process (``OMP_NUM_THREADS=1``, two processes
on the 2-core machine): the thread count changes a run's digits and its key does not record it, so a table that
mixed thread counts would compare a method with controls trained from another source model
(``benchmarks/RESULTS.md``, "Threads change the digits"). ``benchmarks/mean_teacher_table.py`` adds the mean
teacher's 300-step rows, its teacher's scores and per-class IoU in ``minicity_mean_teacher.csv``, from the same
runs. ``--only`` replaces the lines of the rows it runs and keeps every other line.
Runs are shared with the notebooks through ``udalib.zoo`` (checkpoint-or-train), so a finished run is not
trained again.

    python benchmarks/minicity_table.py                       # seeds 0-4, every row
    python benchmarks/minicity_table.py --seeds 0 --only source_only adabn oracle
    python benchmarks/minicity_table.py --select-every 10 --seeds 0 1 2   # model selection, below

With ``--select-every N`` the rows that adapt to the target (the adaptation methods and their controls) are trained
again with ``Experiment.select_every = N`` (their own run folders: the run key differs; the weights trained are the
same): every N steps and at the last, the target val mIoU (target labels) and the information-maximisation
validator on unlabelled target training images are recorded (``udalib.train.select``). Per row and seed, one line of
``benchmarks/results/minicity_selection.csv`` is appended as its run finishes (a rerun skips the lines already
there): the target mIoU of the last step, of the step IM selects (no target labels) and of the step the target
labels select (what the original code bases report). ``minicity_selection.md`` summarises them over seeds, with the
regret of IM selection (target-selected minus IM-selected).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from udalib import zoo
from udalib.experiment import get_or_train
from udalib.results import class_ious, over_seeds, per_seed, selection_summary

TARGET_EVAL = "minicity:target/val"

# every row: the standard rows (udalib.zoo.MINICITY_ROWS), then the mean teacher's (zoo.MEAN_TEACHER_ROWS: DACS, RCS,
# MIC on its three hosts, the ablations, each with its own lambda = 0 control) at their notebook defaults
ROWS = zoo.ALL_ROWS
RESULTS = Path(__file__).parent / "results"
# the standard rows that train on target images: the ones a target val set could select checkpoints of
SELECTION_ROWS = [name for name, make in zoo.MINICITY_ROWS.items()
                  if make(0).target and make(0).steps > 0 and not make(0).adabn]
SELECTION_COLUMNS = ["method", "seed", "steps", "select_every", "last_step", "last", "im_step", "im_score", "im",
                     "target_step", "target", "run"]
RULES = {"last": "last", "im": "validator:im", "target": "target labels"}


def run_selection(rows, seeds, every: int, out: Path) -> None:
    """Train (or find) every row x seed with ``select_every=every`` and append its line to ``out``, skipping the
    lines already there; rows outer, so that finished rows have all their seeds."""
    done = set()
    if out.is_file() and out.stat().st_size:
        old = pd.read_csv(out)
        done = {(m, int(s), int(e)) for m, s, e in zip(old.method, old.seed, old.select_every)}
    for name in rows:
        if name not in SELECTION_ROWS:
            raise SystemExit(f"row {name!r} does not train on target images; choose from {', '.join(SELECTION_ROWS)}")
        for seed in seeds:
            if (name, seed, every) in done:
                continue
            standard = {make(seed).name: make(seed) for make in ROWS.values()}
            exp = replace(ROWS[name](seed), select_every=every)
            if exp.init in standard:  # the run it starts from (the source model): found, or trained first
                get_or_train(standard[exp.init], progress=False)
            result = get_or_train(exp, progress=False)
            sel = result.selections
            line = {"method": name, "seed": seed, "steps": exp.steps, "select_every": every,
                    "last_step": sel["last"]["step"], "last": sel["last"]["miou"],
                    "im_step": sel["validator:im"]["step"], "im_score": sel["validator:im"]["score"],
                    "im": sel["validator:im"]["miou"], "target_step": sel["target labels"]["step"],
                    "target": sel["target labels"]["miou"], "run": result.name}
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([line], columns=SELECTION_COLUMNS).to_csv(out, mode="a", index=False,
                                                                  header=not out.is_file() or not out.stat().st_size)
            print(f"{name:24s} seed {seed}: last {line['last']:6.2f}  IM-selected {line['im']:6.2f} (step "
                  f"{line['im_step']})  target-selected {line['target']:6.2f} (step {line['target_step']})",
                  flush=True)


# selection_summary (udalib.results): per row, mean and sample std over seeds of the three selections' target mIoU,
# and the regret of IM selection (target-selected minus IM-selected, per seed, then averaged), in the order of ROWS


def selection_markdown(table: pd.DataFrame, every: int) -> str:
    """The summary as a Markdown table: mean ± std over seeds."""
    def pm(row, col):
        std = row[f"{col} std"]
        return f"{row[col]:.2f}" if pd.isna(std) else f"{row[col]:.2f} ± {std:.2f}"

    lines = [f"Target val mIoU (%) of the checkpoint each rule selects, scored every {every} steps and at the last; "
             "mean ± std over seeds. Regret: target-selected minus IM-selected; IM gain: IM-selected minus last.",
             "", "| row | seeds | last | IM-selected (no target labels) | target-selected (uses target labels) | "
             "regret of IM | IM gain over last |", "|---|---|---|---|---|---|---|"]
    for name, row in table.iterrows():
        lines.append(f"| {name} | {int(row['seeds'])} | {pm(row, 'last')} | {pm(row, 'im')} | {pm(row, 'target')} | "
                     f"{pm(row, 'regret')} | {pm(row, 'gain')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="rows to run (default: all)")
    parser.add_argument("--out", default=None, help="result CSV (default: results/minicity_table.csv, or "
                        "results/minicity_selection.csv with --select-every)")
    parser.add_argument("--select-every", type=int, default=0, metavar="N",
                        help="train the rows that adapt to the target with model selection every N steps (see above)")
    args = parser.parse_args(argv)
    if args.select_every < 0:
        parser.error(f"--select-every {args.select_every}: give a number of steps of at least 1 (0: off)")
    if args.select_every:
        out = Path(args.out) if args.out else RESULTS / "minicity_selection.csv"
        run_selection(args.only or SELECTION_ROWS, args.seeds, args.select_every, out)
        table = selection_summary(pd.read_csv(out))
        markdown = selection_markdown(table, args.select_every)
        out.with_suffix(".md").write_text(markdown)
        print("\n" + markdown + f"\nsaved {out} and {out.with_suffix('.md')}")
        return 0
    args.out = args.out or str(RESULTS / "minicity_table.csv")

    out = Path(args.out)
    before = pd.read_csv(out) if out.is_file() and out.stat().st_size else None
    records = []
    for name in args.only or ROWS:
        for seed in args.seeds:
            start = time.perf_counter()
            result = get_or_train(ROWS[name](seed), progress=False)
            records.append({"method": name, "seed": seed, "target_miou": round(result.miou(TARGET_EVAL), 2),
                            "target_miou_target_bn": target_bn_column(name, result),
                            "train_seconds": result.scores[TARGET_EVAL].protocol.get("train_seconds"),
                            "wall_seconds_now": round(time.perf_counter() - start, 1), "run": result.name,
                            "threads": torch.get_num_threads(), **class_ious(result, TARGET_EVAL)})
            print(f"{name:24s} seed {seed}: {records[-1]['target_miou']:6.2f} mIoU", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            merged(before, pd.DataFrame(records)).to_csv(out, index=False)  # after every run: a kill loses one
    df = pd.DataFrame(records)
    print("\ntarget mIoU (%) on minicity:target/val, by seed\n")
    print(seed_table(df).to_string())
    print(f"\nsaved {args.out}")
    report_pseudo_labels(df, Path(args.out).with_name("pseudo_label_accuracy.csv"))
    return 0


def merged(before: pd.DataFrame | None, records: pd.DataFrame) -> pd.DataFrame:
    """The table with this invocation's lines in place of the lines of the same (method, seed) it had, and every
    other line kept (``--only`` adds rows, it never drops the rest), in the order of ``ROWS``, then by seed."""
    if before is None or before.empty:
        table = records
    else:
        done = set(zip(records.method, records.seed))
        table = pd.concat([before[[(m, s) not in done for m, s in zip(before.method, before.seed)]], records],
                          ignore_index=True)
    order = {name: i for i, name in enumerate(ROWS)}
    rank = table.method.map(lambda m: order.get(m, len(order)))
    return table.assign(_rank=rank).sort_values(["_rank", "seed"], kind="stable").drop(columns="_rank")


def target_bn_column(name: str, run) -> float | None:
    """The ``target_miou_target_bn`` cell: AdaBN's own score (its statistics are the target's); the run's stored score
    with BatchNorm statistics re-estimated on target train images (runs that train with source batches in their
    statistics); else, for a mean-teacher row, computed now (``zoo.MEAN_TEACHER_SCORE``, the column those rows are
    compared in); else empty."""
    if run.config.adabn:  # its statistics are the target's already: the same number (Run.miou)
        return round(run.miou(TARGET_EVAL, target_bn=True), 2)
    bn = run.scores_on(TARGET_EVAL, target_bn=True)
    if bn is not None:
        return round(bn.miou, 2)
    if name in zoo.MEAN_TEACHER_ROWS and run.config.steps > 0:
        from mean_teacher_table import target_bn_score  # the sibling script (this folder is on sys.path)

        return round(target_bn_score(run, TARGET_EVAL), 2)
    return None


def seed_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table printed after the runs, from the rows of ``results/minicity_table.csv``: per row of ``ROWS``, the
    target mIoU of each seed, their mean and std (``udalib.results.over_seeds``), the mean training time, the
    difference of the mean to source-only's and the mean and std with target BatchNorm statistics."""
    table = per_seed(df, "target_miou", "method").unstack("seed")
    trained = over_seeds(df, "target_miou", "method")
    table["mean"] = trained["mean"].astype(float).round(2)
    table["std"] = trained["std"].astype(float).round(2)
    table["train s (mean)"] = over_seeds(df, "train_seconds", "method")["mean"].astype(float).round(1)
    if "source_only" in table.index:
        table["vs source-only"] = (table["mean"] - table.loc["source_only", "mean"]).round(2)
    table = table.reindex([m for m in ROWS if m in table.index])
    bn = over_seeds(df, "target_miou_target_bn", "method")
    table["target BN: mean"] = bn["mean"].astype(float).round(2)
    table["target BN: std"] = bn["std"].astype(float).round(2)
    return table


def report_pseudo_labels(df: pd.DataFrame, out: Path) -> None:
    """Per self-training run and round: pixels kept and their accuracy against MiniCity's regenerated target-train
    labels (analysis only: the methods never see them)."""
    import numpy as np
    import torch

    from udalib.data import minicity
    from udalib.experiment import load_run
    from udalib.methods.self_training import pseudo_label_report
    from udalib.paths import runs_dir

    rows, truth = [], None
    for rec in df[df.method.isin(["cbst", "mlsl"])].itertuples():
        run = load_run(runs_dir() / rec.run)
        method = run.method()  # the pseudo-labels of every round, from the training checkpoint
        if truth is None:
            truth = torch.stack([torch.from_numpy(minicity.make_sample("target", "train", i)[1].astype(np.int64))
                                 for i in range(method.pseudo_labels.shape[0])])
        for r, v in pseudo_label_report(method, truth).items():
            rows.append({"method": rec.method, "seed": rec.seed, "round": r, "portion": v["portion"],
                         "kept %": round(100 * v["kept"].sum() / truth.numel(), 2),
                         "accuracy %": round(100 * v["correct"].sum() / max(v["kept"].sum(), 1), 2)})
    if rows:
        table = pd.DataFrame(rows)
        table.to_csv(out, index=False)
        print("\npseudo-label accuracy per round (target train, regenerated labels; mean over seeds)\n")
        print(table.groupby(["method", "round"])[["portion", "kept %", "accuracy %"]].mean().round(2).to_string())
        print(f"\nsaved {out}")


if __name__ == "__main__":
    sys.exit(main())
