"""The mechanism atlas: where each method works and where it breaks, one shift factor at a time.

For every adaptation method of ``udalib.zoo.CONTROLS``, with its AdaBN row and its lambda = 0 control, on each
single shift factor of ``udalib.data.minicity.SHIFT_FACTORS`` (the source world with only that factor,
``minicity:target-<factor>``: the same streets as the target, image for image) and on the composite
``minicity:target``: the runs of the standard table (``udalib.zoo.MINICITY_ROWS``, notebook defaults), each
adapting to that domain's unlabelled train images and scored on its val split. Source-only and SNR-on-source are
the seed's source models scored on the domain (no training). One row per (factor, method, seed) is appended to
``benchmarks/results/minicity_atlas.csv`` as soon as its run finishes; a rerun skips the rows already there, so the
script can be stopped and started again at any point. Runs are cached by key (checkpoint-or-train), so the
composite's rows reuse the standard table's runs.

    python benchmarks/minicity_atlas.py                              # every factor, seeds 0 1 2
    python benchmarks/minicity_atlas.py --factors palette converge --seeds 0
    python benchmarks/minicity_atlas.py --shard 0/2 & python benchmarks/minicity_atlas.py --shard 1/2   # 2 processes
    python benchmarks/minicity_atlas.py --summarize                  # the margins table (.md beside the CSV)

The margin of a method on a factor is, per seed, its target mIoU minus the better of its AdaBN row and its control
on that seed; ``udalib.results.atlas_margins`` averages it over seeds and ``udalib.viz.plots.atlas_heatmap``
draws it (notebook 11).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

from udalib import zoo
from udalib.experiment import get_or_train, load_run
from udalib.locks import append_csv_row, hold
from udalib.results import CLASS_IOU_COLUMNS, class_ious

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "minicity_atlas.csv"
# the single factors (``udalib.zoo.ATLAS_FACTORS``), then the composite
FACTORS = (*zoo.ATLAS_FACTORS, "composite")
# per-class IoU (%) on the domain's val split, one column per MiniCity class (``iou_traffic_sign``, ...): what
# notebooks 03-08 read for "where it works, where it breaks"
CLASS_COLUMNS = CLASS_IOU_COLUMNS
COLUMNS = ("factor", "domain", "method", "seed", "target_miou", "seconds", "run", *CLASS_COLUMNS)
SOURCE_ROWS = zoo.SOURCE_TRAINED_ROWS  # trained on source: scored on the domain, no training


def domain_of(factor: str) -> str:
    return zoo.factor_domain_name(factor).split(":", 1)[1]


def rows() -> list[str]:
    """Every method of ``zoo.CONTROLS``, then the controls and AdaBN rows they need, then the source models."""
    needed = list(zoo.CONTROLS)
    for pair in zoo.CONTROLS.values():
        needed += [r for r in pair if r not in needed]
    return needed + list(SOURCE_ROWS)


experiment = zoo.factor_experiment  # (row, factor, seed) -> the Experiment; "composite": the standard row


def done_rows(path: Path) -> set[tuple[str, str, int]]:
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {(r["factor"], r["method"], int(r["seed"])) for r in csv.DictReader(f)}


def append(path: Path, record: dict) -> None:
    """Append one row under a lock (two shards may write the same file); the header goes with the first row."""
    append_csv_row(path, record, COLUMNS)


def backfill_classes(path: Path, runs_dir: Path) -> int:
    """Rewrite ``path`` with the per-class columns filled from each row's run folder (rows written before the
    columns existed); returns how many rows were filled. A row whose run folder is missing keeps empty cells."""
    import pandas as pd

    df = pd.read_csv(path)
    filled = 0
    for col in CLASS_COLUMNS:
        if col not in df:
            df[col] = float("nan")
    for i, r in df.iterrows():
        if df.loc[i, list(CLASS_COLUMNS)].notna().all() or not (runs_dir / r["run"]).is_dir():
            continue
        ious = class_ious(load_run(runs_dir / r["run"]), f"minicity:{r['domain']}/val")
        for col, v in ious.items():
            df.loc[i, col] = v
        filled += 1
    with hold(path.with_name(path.name + ".lock"), what=str(path), wait=60):
        df[list(COLUMNS)].to_csv(path, index=False)
    return filled


def summarize(path: Path) -> str:
    import pandas as pd

    from udalib.results import atlas_margins, over_seeds

    df = pd.read_csv(path)
    mean, std, ahead = atlas_margins(df)
    factors = [f for f in FACTORS if f in mean.columns]
    seeds = " ".join(map(str, sorted(df.seed.unique())))
    lines = [f"# The MiniCity atlas: margin over max(AdaBN, λ=0 control), mIoU points, mean ± std over seeds {seeds}",
             "", "Cell: mean ± std (seeds ahead / seeds).", "",
             "| method | " + " | ".join(factors) + " |", "|---" * (len(factors) + 1) + "|"]
    for method in mean.index:
        cells = [f"{mean.loc[method, f]:+.1f} ± {std.loc[method, f]:.1f} ({ahead.loc[method, f]})"
                 if f in mean.columns and mean.loc[method, f] == mean.loc[method, f] else "" for f in factors]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    base = over_seeds(df[df.method.isin(["source_only", "adabn"])], "target_miou", ("method", "factor"))
    base = base["mean"].astype(float).unstack("factor").sort_index()
    lines += ["", "Source-only and AdaBN (mIoU %, mean over seeds):", "",
              "| row | " + " | ".join(factors) + " |", "|---" * (len(factors) + 1) + "|"]
    for row in base.index:
        lines.append(f"| {row} | " + " | ".join(f"{base.loc[row, f]:.1f}" if f in base.columns else ""
                                                for f in factors) + " |")
    return "\n".join(lines) + "\n"


def write_summary(parser: argparse.ArgumentParser, out: Path, summarize) -> int:
    """``--summarize``: ``summarize(out)`` printed and written beside the CSV (``.md``); a missing CSV stops with a
    one-line message naming the script that writes it."""
    if not out.is_file():
        parser.error(f"no atlas at {out}; run python benchmarks/{parser.prog} first")
    text = summarize(out)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def shard(parser: argparse.ArgumentParser, text: str) -> tuple[int, int]:
    """``--shard K/N`` -> ``(K, N)``; anything else stops with a one-line message."""
    try:
        k, n = (int(x) for x in text.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        parser.error(f"--shard {text!r}: give K/N with 0 <= K < N, e.g. 0/2")
    return k, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factors", nargs="+", choices=FACTORS, default=list(FACTORS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=rows(), help="rows to run (default: every method and its "
                   "controls); the controls a method needs are always added")
    p.add_argument("--shard", default="0/1", help="K/N: run every N-th (factor, seed) pair from the K-th, so N "
                   "processes share the work (default 0/1: all)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--summarize", action="store_true", help="print the margins table and write it beside the CSV")
    p.add_argument("--backfill-classes", action="store_true",
                   help="fill the per-class columns of rows written without them, from their run folders")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.backfill_classes:
        from udalib import paths

        if not out.is_file():
            p.error(f"no atlas at {out}; run python benchmarks/minicity_atlas.py first")
        print(f"filled the per-class columns of {backfill_classes(out, paths.runs_dir())} rows of {out}")
        return 0
    if args.summarize:
        return write_summary(p, out, summarize)
    k, n = shard(p, args.shard)
    wanted = rows()
    if args.methods:
        chosen = set(args.methods)
        for m in args.methods:
            chosen.update(zoo.CONTROLS.get(m, ()))
        wanted = [r for r in wanted if r in chosen]
    pairs = [(f, s) for f in args.factors for s in args.seeds][k::n]  # factor by factor: whole columns first
    finished = done_rows(out)
    for factor, seed in pairs:
        todo = [r for r in wanted if (factor, r, seed) not in finished]
        if not todo:
            continue
        for source_row in ("source_only", "snr"):  # the models every row of this seed starts from
            get_or_train(zoo.MINICITY_ROWS[source_row](seed), progress=False)
        for row in todo:
            start = time.perf_counter()
            exp = experiment(row, factor, seed)
            run = get_or_train(exp, progress=False)
            target = f"minicity:{domain_of(factor)}/val"
            append(out, {"factor": factor, "domain": domain_of(factor), "method": row, "seed": seed,
                         "target_miou": round(run.miou(target), 2), "seconds": round(time.perf_counter() - start, 1),
                         "run": run.name, **class_ious(run, target)})
            print(f"{factor:11s} seed {seed} {row:22s} {run.miou(target):6.2f}", flush=True)
    if not args.methods and os.environ.get("ATLAS_NO_SUMMARY") is None and out.is_file():
        print(summarize(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
