"""What a mean teacher and MIC cost on MiniCity: the wall time of the MiniCity adaptation runs of MinEnt, MinEnt + MIC,
DACS and DACS + MIC (``udalib.zoo.adaptation_experiment``: the minicity preset, 60 steps, target-only BatchNorm
statistics) from the same source model, in one process.

Each repeat trains the four methods one after the other, in a rotated order (repeat r starts with method r mod 4),
so that a change of the machine's load falls on all of them; a method's figure is the median of its repeats, and
its ratio to MinEnt's median is reported. Only the training loop (``udalib.train.fit``, no run folder, no
evaluation) is timed, from the source model's weights each time. One row per method is appended to
``benchmarks/results/mean_teacher_cost.csv``.

    python benchmarks/mean_teacher_cost.py                 # 60 steps, 3 repeats, seed 0's source model
    python benchmarks/mean_teacher_cost.py --steps 4 --repeats 1 --out /tmp/cost.csv   # a check of the plumbing

Time it on a quiet machine: timings on a shared CPU swing several-fold with the other work on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from udalib import zoo
from udalib.experiment import build
from udalib.locks import append_csv_row
from udalib.train import fit

RESULTS = Path(__file__).parent / "results"
METHODS = ("minent", "minent_mic", "dacs", "dacs_mic")
FIELDS = ["date", "method", "seed", "steps", "repeats", "device", "threads", "load_average", "median_seconds",
          "seconds", "ratio_to_minent", "source_run"]


def time_training(method_name: str, source, steps: int) -> float:
    """Seconds of ``fit`` for ``method_name``'s MiniCity adaptation run from ``source``'s weights."""
    built = build(zoo.adaptation_experiment(method_name, source.config, steps=steps))  # the run, through the seam
    t0 = time.perf_counter()
    fit(built.method, built.source, built.target, options=built.fit_options(progress=False))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="the source model's seed (default 0)")
    p.add_argument("--steps", type=int, default=zoo.ADAPT_STEPS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "mean_teacher_cost.csv")
    args = p.parse_args(argv)
    if min(args.steps, args.repeats) < 1:
        p.error("--steps and --repeats must be at least 1")
    source = zoo.source_run(args.seed, progress=False)  # trained first if absent (notebook 01's run)
    seconds = {m: [] for m in METHODS}
    for r in range(args.repeats):
        for k in range(len(METHODS)):
            name = METHODS[(r + k) % len(METHODS)]
            seconds[name].append(time_training(name, source, args.steps))
            print(f"repeat {r + 1}: {name} {seconds[name][-1]:.1f} s", flush=True)
    median = {m: statistics.median(t) for m, t in seconds.items()}
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    device = f"CPU {platform.machine()}, {os.cpu_count()} cores"
    for m in METHODS:
        ratio = median[m] / median["minent"]
        print(f"{m}: median {median[m]:.1f} s over {args.repeats} repeats, {ratio:.2f} x MinEnt")
        append_csv_row(args.out, {"date": date, "method": m, "seed": args.seed, "steps": args.steps,
                                  "repeats": args.repeats, "device": device, "threads": torch.get_num_threads(),
                                  "load_average": round(os.getloadavg()[0], 1), "median_seconds": round(median[m], 2),
                                  "seconds": " ".join(f"{t:.2f}" for t in seconds[m]),
                                  "ratio_to_minent": round(ratio, 3), "source_run": source.name}, FIELDS)
    print(f"appended {len(METHODS)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
