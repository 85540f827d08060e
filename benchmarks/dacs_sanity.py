"""A sanity check of DACS on MiniCity: one DACS run and one MinEnt run from the same source model, in one process.

Both are the standard MiniCity adaptation runs of ``udalib.zoo`` (``adaptation_experiment``: the minicity preset,
60 steps, target-only BatchNorm statistics) of one seed, so the numbers are a hint, not a result. It reports the
wall time of each training (in this process, one after the other, on the same machine), their ratio, and the
target val mIoU of each; a row per method is appended to ``benchmarks/results/dacs_sanity.csv``.

    UDALIB_RUNS=runs python benchmarks/dacs_sanity.py              # trains the source model first if absent (~30 s)
    python benchmarks/dacs_sanity.py --steps 10 --seed 1

A finished run is reused (checkpoint-or-train), and then its time is not measured: pass a fresh ``UDALIB_RUNS``
folder to time both trainings.

``--per-step K`` times steps instead of trainings, for a machine too loaded to train both: the two methods, built
from the source model's weights with their minicity presets, take K steps each on the same MiniCity batch pair
(batch 8), alternating MinEnt and DACS step by step so that both see the same load; the ratio is that of the median
step times (rows with ``steps`` = K and no mIoU).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from udalib import zoo
from udalib.experiment import find_run, get_or_train

RESULTS = Path(__file__).parent / "results"
TARGET_VAL = "minicity:target/val"
FIELDS = ["date", "method", "seed", "steps", "device", "threads", "train_seconds", "seconds_ratio_to_minent",
          "miou_target_val", "miou_source_val", "run"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=zoo.ADAPT_STEPS)
    p.add_argument("--out", type=Path, default=RESULTS / "dacs_sanity.csv")
    p.add_argument("--per-step", type=int, default=0, metavar="K", help="time K alternating steps, train nothing")
    args = p.parse_args(argv)
    if args.per_step:
        return per_step(args)

    source = zoo.source_run(args.seed, progress=False)
    seconds, runs = {}, {}
    for method in ("minent", "dacs"):
        exp = zoo.adaptation_experiment(method, zoo.source_experiment(args.seed), steps=args.steps)
        if find_run(exp) is not None:
            print(f"{method}: {exp.name} already finished, its time is not measured")
        t0 = time.perf_counter()
        runs[method] = get_or_train(exp, progress=False)
        seconds[method] = time.perf_counter() - t0
        print(f"{method}: {seconds[method]:.1f} s, target val mIoU {runs[method].miou(TARGET_VAL):.2f}")
    print(f"source model {source.name}: target val mIoU {source.miou(TARGET_VAL):.2f}")
    ratio = seconds["dacs"] / seconds["minent"]
    print(f"DACS / MinEnt wall time: {ratio:.2f}")

    append(args.out, [{"method": method, "seed": args.seed, "steps": args.steps,
                       "train_seconds": round(seconds[method], 1),
                       "seconds_ratio_to_minent": round(seconds[method] / seconds["minent"], 2),
                       "miou_target_val": round(run.miou(TARGET_VAL), 2),
                       "miou_source_val": round(run.miou("minicity:source/val"), 2), "run": run.name}
                      for method, run in runs.items()])
    return 0


def per_step(args) -> int:
    """Median step time of MinEnt and DACS, alternating, on one MiniCity batch pair."""
    from udalib.data.batch import SourceBatch, TargetBatch
    from udalib.experiment import open_data

    source = zoo.source_run(args.seed, progress=False)
    methods = {}
    for name in ("minent", "dacs"):
        exp = zoo.adaptation_experiment(name, zoo.source_experiment(args.seed), steps=args.per_step)
        methods[name] = exp.build_method(source.model()).train()
    src_set = open_data(exp.source, default_split="train", train=True, exp=exp)
    tgt_set = open_data(exp.target, default_split="train", train=True, exp=exp)
    src = SourceBatch(torch.stack([src_set[i][0] for i in range(8)]), torch.stack([src_set[i][1] for i in range(8)]))
    tgt = TargetBatch(torch.stack([tgt_set[i][0] for i in range(8)]), torch.arange(8))
    times = {name: [] for name in methods}
    for _ in range(args.per_step):
        for name, method in methods.items():
            t0 = time.perf_counter()
            method.step(src, tgt)
            times[name].append(time.perf_counter() - t0)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    for name, t in times.items():
        print(f"{name}: steps {', '.join(f'{x:.2f}' for x in t)} s; median {median[name]:.2f} s")
    print(f"DACS / MinEnt step time: {median['dacs'] / median['minent']:.2f}")
    append(args.out, [{"method": name, "seed": args.seed, "steps": args.per_step,
                       "train_seconds": round(median[name] * args.per_step, 2),
                       "seconds_ratio_to_minent": round(median[name] / median["minent"], 2)} for name in methods])
    return 0


def append(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        device = f"CPU {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.0f}"
        for row in rows:
            writer.writerow({"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "device": device,
                             "threads": torch.get_num_threads(), **row})


if __name__ == "__main__":
    raise SystemExit(main())
