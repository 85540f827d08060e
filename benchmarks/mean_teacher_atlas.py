"""The mean teacher's atlas: where DACS, RCS and MIC work and where they break, one shift factor at a time.

The rows of ``udalib.zoo.MEAN_TEACHER_ROWS`` on each single shift factor of MiniCity and on the composite, as
``benchmarks/minicity_atlas.py`` runs the older methods (``zoo.factor_experiment``: the standard row adapting to
``minicity:target-<factor>`` and scored on its val split), each with its own lambda = 0 control and AdaBN, trained
as the atlas was, one thread per process (``OMP_NUM_THREADS=1``): the AdaBN and source-only lines are the atlas's
own runs, number for number. Source-only is the seed's source model scored on the domain.

One row per (factor, method, seed) is appended to ``benchmarks/results/minicity_atlas_mean_teacher.csv`` as soon
as its run finishes; a rerun skips the rows already there. The columns of ``minicity_atlas.csv``, plus
``target_miou_target_bn`` (the same weights with BatchNorm statistics re-estimated on the domain's train images:
``udalib.zoo.MEAN_TEACHER_SCORE``, the column the mean-teacher rows are compared in) and ``cpu``.

    python benchmarks/mean_teacher_atlas.py                      # the five rows, then the ablations; seeds 0 1 2
    python benchmarks/mean_teacher_atlas.py --shard 0/2 & python benchmarks/mean_teacher_atlas.py --shard 1/2
    python benchmarks/mean_teacher_atlas.py --rows dacs --factors palette --seeds 0
    python benchmarks/mean_teacher_atlas.py --summarize          # the margins table (.md beside the CSV)

The margin of a row on a factor is, per seed, its score minus the better of its AdaBN row and its control on that
seed, in ``zoo.MEAN_TEACHER_SCORE``: ``udalib.results.atlas_margins(df, mean_teacher=True)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mean_teacher_table import cpu_name, target_bn_score
from minicity_atlas import CLASS_COLUMNS, FACTORS, class_ious, domain_of, done_rows, shard, write_summary

from udalib import zoo
from udalib.experiment import get_or_train
from udalib.locks import FolderBusyError, append_csv_row

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "minicity_atlas_mean_teacher.csv"
COLUMNS = ("factor", "domain", "method", "seed", "target_miou", "target_miou_target_bn", "seconds", "run", "cpu",
           *CLASS_COLUMNS)
MAIN = ("dacs", "dacs_rcs", "dacs_mic", "minent_mic", "adaptsegnet_multi_mic")  # the five rows
ABLATIONS = ("dacs_nomix", "dacs_alpha0", "dacs_mic_ratio0")


def rows(methods=MAIN + ABLATIONS) -> list[str]:
    """Each method followed by the controls it needs (each once), then source-only."""
    out: list[str] = []
    for m in methods:
        out += [r for r in (m, *zoo.MEAN_TEACHER_CONTROLS[m]) if r not in out]
    return out + ["source_only"]


def experiment(row: str, factor: str, seed: int):
    return zoo.factor_experiment(row, factor, seed)


def found_or_trained(exp):
    """``get_or_train``, waiting while another process (a shard, ``mean_teacher_table.py``) trains the same run."""
    while True:
        try:
            return get_or_train(exp, progress=False)
        except FolderBusyError:
            time.sleep(10)


def record(run, factor: str, seed: int, row: str, seconds: float, cpu: str) -> dict:
    """One line of the CSV for a finished run on ``factor``."""
    val = f"minicity:{domain_of(factor)}/val"
    exp = run.config
    miou = round(run.miou(val), 2)
    if exp.adabn:
        bn = miou  # its statistics are the domain's already
    elif exp.steps > 0 and exp.target is not None:
        bn = round(target_bn_score(run, val), 2)
    else:
        bn = None  # source-only: it never saw a target image
    return {"factor": factor, "domain": domain_of(factor), "method": row, "seed": seed, "target_miou": miou,
            "target_miou_target_bn": bn, "seconds": round(seconds, 1), "run": run.name, "cpu": cpu,
            **class_ious(run, val)}


def summarize(path: Path) -> str:
    import pandas as pd

    from udalib.results import atlas_margins

    df = pd.read_csv(path)
    mean, std, ahead = atlas_margins(df, mean_teacher=True)
    factors = [f for f in FACTORS if f in mean.columns]
    seeds = " ".join(map(str, sorted(df.seed.unique())))
    lines = [f"# The mean teacher's MiniCity atlas: margin over max(AdaBN, λ=0 control), mIoU points, target BN "
             f"statistics, mean ± std over seeds {seeds}", "", "Cell: mean ± std (seeds ahead / seeds).", "",
             "| method | " + " | ".join(factors) + " |", "|---" * (len(factors) + 1) + "|"]
    for method in mean.index:
        cells = [f"{mean.loc[method, f]:+.1f} ± {std.loc[method, f]:.1f} ({ahead.loc[method, f]})"
                 if mean.loc[method, f] == mean.loc[method, f] else "" for f in factors]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factors", nargs="+", choices=FACTORS, default=list(FACTORS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", choices=MAIN + ABLATIONS, default=list(MAIN + ABLATIONS),
                   help="methods to run, in order (their controls, AdaBN and source-only are added)")
    p.add_argument("--shard", default="0/1", help="K/N: every N-th (factor, seed) pair from the K-th")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--summarize", action="store_true", help="print the margins table and write it beside the CSV")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.summarize:
        return write_summary(p, out, summarize)
    k, n = shard(p, args.shard)
    cpu = cpu_name()
    # the five rows on every (factor, seed) first, then the ablations: the main table fills before the extras
    groups = [g for g in ([m for m in args.rows if m in MAIN], [m for m in args.rows if m in ABLATIONS]) if g]
    for methods in groups:
        wanted = rows(tuple(methods))
        for factor, seed in [(f, s) for f in args.factors for s in args.seeds][k::n]:
            finished = done_rows(out)
            for row in (r for r in wanted if (factor, r, seed) not in finished):
                found_or_trained(zoo.source_experiment(seed))  # the model every row starts from
                start = time.perf_counter()
                run = found_or_trained(experiment(row, factor, seed))
                line = record(run, factor, seed, row, time.perf_counter() - start, cpu)
                append_csv_row(out, line, COLUMNS)
                print(f"{factor:11s} seed {seed} {row:30s} {line['target_miou']:6.2f}  target BN "
                      f"{line['target_miou_target_bn']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
