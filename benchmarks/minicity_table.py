"""The MiniCity results table: method x seed -> target mIoU, with the controls beside every method.

Rows: source-only, AdaBN (source model, BatchNorm statistics re-estimated on target images), the oracle
(target labels), the lambda = 0 control (the adaptation run with its target loss weight at 0: training on target
batches moves BatchNorm statistics even without a target loss; one run serves MinEnt and the MaxSquare family,
which compute identical updates at weight 0), and every adaptation method. The "target BN" columns score the
same weights after re-estimating BatchNorm statistics on target images only.
Runs are shared with the notebooks through ``udalib.zoo`` (checkpoint-or-train), so a finished run is not
trained again.

    python benchmarks/minicity_table.py                       # seeds 0-4, every row
    python benchmarks/minicity_table.py --seeds 0 --only source_only adabn oracle
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from udalib import zoo
from udalib.experiment import get_or_train

TARGET_EVAL = "minicity:target/val"

ROWS = zoo.MINICITY_ROWS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="rows to run (default: all)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "minicity_table.csv"))
    args = parser.parse_args(argv)

    records = []
    for name in args.only or ROWS:
        for seed in args.seeds:
            start = time.perf_counter()
            result = get_or_train(ROWS[name](seed), progress=False)
            bn = result.scores_on(TARGET_EVAL, target_bn=True)
            records.append({"method": name, "seed": seed, "target_miou": round(result.miou(TARGET_EVAL), 2),
                            "target_miou_target_bn": round(bn.miou, 2) if bn is not None else None,
                            "train_seconds": result.scores[TARGET_EVAL].protocol.get("train_seconds"),
                            "wall_seconds_now": round(time.perf_counter() - start, 1), "run": result.name})
            print(f"{name:24s} seed {seed}: {records[-1]['target_miou']:6.2f} mIoU", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(records).to_csv(args.out, index=False)  # after every run: a kill loses one run at most
    df = pd.DataFrame(records)

    table = df.pivot(index="method", columns="seed", values="target_miou")
    table["mean"] = table.mean(axis=1).round(2)
    table["std"] = df.groupby("method").target_miou.std().round(2)
    table["train s (mean)"] = df.groupby("method").train_seconds.mean().round(1)
    if "source_only" in table.index:
        table["vs source-only"] = (table["mean"] - table.loc["source_only", "mean"]).round(2)
    table = table.reindex([m for m in ROWS if m in table.index])
    bn = df.groupby("method").target_miou_target_bn.agg(["mean", "std"]).round(2)
    table["target BN: mean"] = bn["mean"]
    table["target BN: std"] = bn["std"]
    print("\ntarget mIoU (%) on minicity:target/val, by seed\n")
    print(table.to_string())
    print(f"\nsaved {args.out}")
    report_pseudo_labels(df, Path(args.out).with_name("pseudo_label_accuracy.csv"))
    return 0


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
