"""OpenMP's wait policy and MiniCity training speed: one standard adaptation run (MaxSquare, 60 steps from the
seed-0 source model) timed under OMP_WAIT_POLICY=PASSIVE and ACTIVE, each in a fresh process with its own
temporary run store, alternating, ``--repeats`` times; the final mIoU of both is printed to show it is unchanged.

    python benchmarks/omp_wait_policy.py             # 2 repeats, about a minute (trains the source model first)

Writes ``benchmarks/results/omp_wait_policy.csv``. The Makefile runs notebooks with ACTIVE
(``NOTEBOOK_OMP_WAIT_POLICY``) and unit tests with PASSIVE, where several processes share the cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from udalib import paths, zoo
from udalib.experiment import get_or_train

RESULTS = Path(__file__).parent / "results"
CHILD = """
import json, sys, time
from udalib import zoo
from udalib.experiment import run
exp = zoo.adaptation_experiment("maxsquare", zoo.source_experiment(0))
t = time.perf_counter(); r = run(exp, progress=False, checkpoint_seconds=None)
print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "miou": round(r.miou("minicity:target/val"), 2)}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "omp_wait_policy.csv")
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: give at least 1")
    source = get_or_train(zoo.source_experiment(0), progress=False)
    rows = []
    for repeat in range(args.repeats):
        for policy in ("PASSIVE", "ACTIVE"):
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copytree(source.dir, Path(tmp) / source.dir.name)
                env = dict(os.environ, OMP_WAIT_POLICY=policy, UDALIB_RUNS=tmp, UDALIB_DATA=str(paths.data_dir()))
                out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                                     check=True).stdout.strip().splitlines()[-1]
            row = {"repeat": repeat, "policy": policy, **json.loads(out), "threads": os.cpu_count()}
            rows.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
