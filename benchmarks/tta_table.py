"""Test-time baselines beside AdaBN: TENT and BN-alpha on the MiniCity composite and on the `prior` factor.

For each seed: the standard source model (``udalib.zoo.source_experiment``), then

* ``adabn``: BatchNorm statistics re-estimated on the target's train images (no training);
* ``tent``: TENT, BatchNorm affine parameters trained on the target's mean entropy, 60 steps (MiniCity preset);
* ``bn_alpha``: BN-alpha, running statistics (1 - alpha) source + alpha target, estimated over 60 target batches,
  at the MiniCity preset (alpha 0.5) and at alpha 1 (the same estimate as AdaBN, from 480 of the 600 images);
* ``maxsquare``: the standard MaxSquare run, the UDA method these baselines are compared with.

Each on the composite target (``minicity:target``) and on ``minicity:target-prior`` (the source world with denser
traffic: a label-prior shift, where statistics-based adaptation is expected to hurt). One row per (domain, row,
seed) is appended to ``benchmarks/results/tta_table.csv`` as soon as its run finishes; a rerun skips the rows there.

    python benchmarks/tta_table.py                    # seeds 0-4, both domains
    python benchmarks/tta_table.py --seeds 0 --domains composite
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from udalib import zoo
from udalib.experiment import get_or_train
from udalib.results import over_seeds, per_seed

OUT = Path(__file__).parent / "results" / "tta_table.csv"
DOMAINS = ("composite", "prior")
ROWS = ("source_only", "adabn", "tent", "bn_alpha", "bn_alpha_1", "maxsquare")
COLUMNS = ("domain", "row", "seed", "target_miou", "run")


def experiment(row: str, domain: str, seed: int):
    """The Experiment of ``row`` on ``domain`` ("composite" or a shift factor) for ``seed``."""
    if row in ("source_only", "adabn", "maxsquare"):
        return zoo.factor_experiment(row, domain, seed)
    source = zoo.source_experiment(seed)
    method, args = ("bn_alpha", {"alpha": 1.0}) if row == "bn_alpha_1" else (row, {})
    exp = zoo.adaptation_experiment(method, source, label=row, **args)
    if domain == "composite":
        return exp
    name = zoo.factor_domain_name(domain)
    return replace(exp, target=name, evaluate_on=("minicity:source/val", f"{name}/val"))


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, row): mIoU mean and sample std over seeds, and the difference to AdaBN taken per seed: its mean,
    the seeds on which the row is ahead of AdaBN and the seeds compared (NaN for AdaBN itself)."""
    stats = over_seeds(df, "target_miou", ("domain", "row"))
    wide = per_seed(df, "target_miou", ("domain", "row")).unstack("row")  # (domain, seed) x row
    diffs = wide.sub(wide["adabn"], axis=0).drop(columns="adabn").stack().rename("diff").reset_index()
    vs = over_seeds(diffs, "diff", ("domain", "row"))
    out = []
    for domain in [d for d in DOMAINS if d in stats.index.get_level_values(0)]:
        for row in [r for r in ROWS if (domain, r) in stats.index]:
            d = vs.loc[(domain, row)] if (domain, row) in vs.index else None
            out.append({"domain": domain, "row": row, "mean": stats.loc[(domain, row), "mean"],
                        "std": stats.loc[(domain, row), "std"],
                        "vs adabn": d["mean"] if d is not None else float("nan"),
                        "seeds ahead": int(d["ahead"]) if d is not None else None,
                        "seeds": int(d["n"]) if d is not None else None})
    return pd.DataFrame(out).set_index(["domain", "row"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    done = set()
    if args.out.is_file():
        done = {(r["domain"], r["row"], int(r["seed"])) for r in csv.DictReader(open(args.out, newline=""))}
    for seed in args.seeds:
        for domain in args.domains:
            for row in ROWS:
                if (domain, row, seed) in done:
                    continue
                run = get_or_train(experiment(row, domain, seed), progress=False)
                miou = run.miou(f"{zoo.factor_domain_name(domain)}/val")
                new = not args.out.is_file()
                with open(args.out, "a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=COLUMNS)
                    if new:
                        w.writeheader()
                    w.writerow({"domain": domain, "row": row, "seed": seed, "target_miou": round(miou, 2),
                                "run": run.name})
                print(f"{domain:9s} seed {seed} {row:11s} {miou:6.2f}", flush=True)
    print(summary(pd.read_csv(args.out)).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
