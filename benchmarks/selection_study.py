"""Which label-free validator picks good checkpoints? A grid of MiniCity adaptation runs, every checkpoint scored
by every validator of ``udalib.eval.validators`` and by the target labels.

Grid: methods x target-loss weights (multiples of the MiniCity preset's weight: 0, the preset, and one too large)
x seeds; each run starts from the standard source model of its seed and is scored every ``--every`` steps. The
validators see the target val images only (their labels are read for the target mIoU alone) and the labelled
source val set (source mIoU, ATC's threshold). Every checkpoint is one row of ``benchmarks/results/selection.csv``,
appended as soon as it is scored; a rerun skips the rows already there (a run whose checkpoints are all written is
not trained again). A run that diverges (non-finite loss) writes its remaining checkpoints as ``diverged`` rows.

The summary, per validator and method, over that method's checkpoints (all weights and steps) of one seed, then
averaged over seeds:

* Spearman correlation between the validator and target mIoU;
* weighted Spearman: the same on ranks, with each checkpoint weighted by its target-mIoU rank (scaled to [0, 1])
  to the power ``--power``, so that ordering the good checkpoints counts more than ordering the bad ones (as the
  weighted Spearman of Musgrave, Belongie and Lim, "Benchmarking Validation Methods for Unsupervised Domain
  Adaptation", 2022);
* regret: the target mIoU of the best checkpoint minus that of the checkpoint the validator selects (its largest
  score; every validator is higher-is-better), in mIoU points.

    python benchmarks/selection_study.py                    # the whole grid (hours on 2 CPU cores)
    python benchmarks/selection_study.py --methods minent --seeds 0 --out /tmp/part.csv
    python benchmarks/selection_study.py --summarize benchmarks/results/selection.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from udalib import zoo
from udalib.experiment import Experiment, get_or_train

RESULTS = Path(__file__).parent / "results"
VALIDATORS = ("source_miou", "entropy", "im", "snd", "bnm", "atc")
# the target weight each cell scales: one of the method's declared target weights (udalib.methods.target_weights);
# single-level AdaptSegNet adapts its main output only, so lambda_adv_target2 (its auxiliary weight is unused)
WEIGHT = {"minent": "lambda_target", "maxsquare": "lambda_target", "maxsquare_iw": "lambda_target",
          "adaptsegnet": "lambda_adv_target2"}
MULTIPLIERS = (0.0, 1.0, 10.0)  # of the preset's weight: the control, the preset, one too large
TARGET_VAL, SOURCE_VAL = "minicity:target/val", "minicity:source/val"
KEY = ("method", "weight", "seed", "steps", "step")
COLUMNS = (*KEY, "multiplier", "target_miou", *VALIDATORS, "diverged", "seconds")


def source_experiment(seed: int, *, steps: int, batch_size: int, model_args: dict) -> Experiment:
    """The standard source model (``zoo.source_experiment``), or a smaller one for tests."""
    exp = zoo.source_experiment(seed, steps=steps, batch_size=batch_size)
    return replace(exp, model_args=dict(model_args), evaluate_on=(SOURCE_VAL, TARGET_VAL))


def cell_experiment(method: str, multiplier: float, source: Experiment, steps: int) -> Experiment:
    """One run of the grid: ``method`` at ``multiplier`` times its MiniCity target weight, from ``source``."""
    from udalib.methods import method_config

    if method not in WEIGHT:
        raise ValueError(f"method {method!r} has no target weight to vary here; choose from {', '.join(WEIGHT)}")
    name = WEIGHT[method]
    weight = multiplier * getattr(method_config(method, "minicity"), name)
    return zoo.adaptation_experiment(method, source, steps=steps, **{name: weight})


def read_rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame(columns=list(COLUMNS))


def _row_key(row) -> tuple:
    return (str(row["method"]), round(float(row["weight"]), 10), int(row["seed"]), int(row["steps"]),
            int(row["step"]))


def append_row(path: Path, row: dict) -> None:
    """One checkpoint's row, appended (with the header if the file is new) and flushed: a kill loses one row."""
    new = not path.is_file() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k) for k in COLUMNS})


def run_cell(exp: Experiment, source_run, *, multiplier: float, every: int, done: set, out: Path,
             pixels: int) -> int:
    """Train one run of the grid, scoring every ``every`` steps the checkpoints not in ``done``; returns how many
    rows it wrote."""
    from udalib.data import eval_loader
    from udalib.eval.evaluate import evaluate
    from udalib.eval.validators import score_model
    from udalib.experiment import build
    from udalib.train import fit

    weight = exp.method_args[WEIGHT[exp.method]]
    checkpoints = [s for s in range(every, exp.steps + 1, every)]
    todo = [s for s in checkpoints if (exp.method, round(weight, 10), exp.seed, exp.steps, s) not in done]
    if not todo:
        return 0
    # the run as udalib.experiment.run builds it, from the source run's weights (exp.init names that run)
    built = build(replace(exp, init=str(source_run.dir)))
    target_val = eval_loader(built.eval_sets[TARGET_VAL])
    source_val = eval_loader(built.eval_sets[SOURCE_VAL])
    base = {"method": exp.method, "weight": weight, "multiplier": multiplier, "seed": exp.seed, "steps": exp.steps}
    written, t0 = [], time.perf_counter()

    def score(i, m, _logs) -> None:
        step = i + 1
        if step not in todo:
            return
        scores = score_model(m.model, target_val, source_loader=source_val, num_classes=exp.num_classes,
                             pixels=pixels, seed=exp.seed, device=exp.device)
        miou = evaluate(m.model, target_val, exp.num_classes, device=exp.device).miou
        append_row(out, {**base, "step": step, "target_miou": miou, **scores, "diverged": False,
                         "seconds": round(time.perf_counter() - t0, 1)})
        written.append(step)

    try:
        fit(built.method, built.source, built.target, options=built.fit_options(
            steps=max(todo), poly_steps=exp.steps, progress=False, callbacks=(score,)))
    except FloatingPointError:  # a weight too large: the remaining checkpoints are recorded as diverged
        for step in todo:
            if step not in written:
                append_row(out, {**base, "step": step, "target_miou": math.nan, "diverged": True})
                written.append(step)
    return len(written)


def run_grid(out: str | Path, *, methods=("minent", "maxsquare"), multipliers=MULTIPLIERS, seeds=(0, 1, 2),
             steps: int = zoo.ADAPT_STEPS, every: int = 10, source_steps: int = zoo.SOURCE_STEPS,
             batch_size: int = zoo.BATCH_SIZE, model_args: dict | None = None, pixels: int = 1024,
             log=None) -> int:
    """Score every checkpoint of the grid into ``out``, skipping the rows it already holds; returns the number of
    rows written."""
    if not isinstance(every, int) or every < 1 or steps < every:
        raise ValueError(f"every={every!r} must be an integer from 1 to steps={steps}")
    for method in methods:
        if method not in WEIGHT:
            raise ValueError(f"method {method!r} has no target weight to vary here; choose from {', '.join(WEIGHT)}")
    out = Path(out)
    done = {_row_key(r) for _, r in read_rows(out).iterrows()}
    written = 0
    for seed in seeds:
        src_exp = source_experiment(seed, steps=source_steps, batch_size=batch_size, model_args=model_args or {})
        source_run = None
        for method in methods:
            for multiplier in multipliers:
                exp = cell_experiment(method, multiplier, src_exp, steps)
                if source_run is None:  # only when some row is missing: a finished study trains nothing
                    weight = exp.method_args[WEIGHT[method]]
                    if all((method, round(weight, 10), seed, steps, s) in done for s in range(every, steps + 1, every)):
                        continue
                    source_run = get_or_train(src_exp, progress=False)
                n = run_cell(exp, source_run, multiplier=multiplier, every=every, done=done, out=out, pixels=pixels)
                written += n
                if log is not None and n:
                    log(f"{method} x{multiplier:g} seed {seed}: {n} checkpoints")
    return written


# ------------------------------------------------------------------------------------------------ analysis
def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0 (smallest) with ties at their average rank."""
    return pd.Series(x).rank(method="average").to_numpy() - 1


def _pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    w = w / w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    cov = (w * (x - mx) * (y - my)).sum()
    var = (w * (x - mx) ** 2).sum() * (w * (y - my) ** 2).sum()
    return float(cov / math.sqrt(var)) if var > 0 else math.nan


def spearman(score, miou) -> float:
    """Spearman correlation: the Pearson correlation of the ranks (ties at their average rank)."""
    x, y = _ranks(np.asarray(score, float)), _ranks(np.asarray(miou, float))
    return _pearson(x, y, np.ones_like(x))


def weighted_spearman(score, miou, power: float = 2.0) -> float:
    r"""The weighted Pearson correlation of the ranks, each checkpoint weighted by its target-mIoU rank scaled to
    [0, 1], to the power ``power``:

    .. math:: w_i = \Big(\frac{r^{y}_i}{n - 1}\Big)^{p}, \qquad
              \rho_w = \frac{\sum_i w_i (r^x_i - \bar r^x)(r^y_i - \bar r^y)}
              {\sqrt{\sum_i w_i (r^x_i - \bar r^x)^2 \sum_i w_i (r^y_i - \bar r^y)^2}}

    with ranks from 0 and weighted means :math:`\bar r`. ``power = 0`` is the plain Spearman correlation.
    """
    x, y = _ranks(np.asarray(score, float)), _ranks(np.asarray(miou, float))
    if len(y) < 2:
        return math.nan
    return _pearson(x, y, (y / (len(y) - 1)) ** power)


def regret(score, miou) -> float:
    """Best target mIoU minus the target mIoU of the checkpoint with the largest score (the first of equals)."""
    score, miou = np.asarray(score, float), np.asarray(miou, float)
    return float(miou.max() - miou[int(np.argmax(score))])


def summarize(df: pd.DataFrame, power: float = 2.0) -> pd.DataFrame:
    """Per validator and method: Spearman, weighted Spearman and regret over each seed's checkpoints (diverged
    and unscored ones left out), averaged over seeds, with their standard deviation over seeds (``*_std``, sample
    std); ``seeds`` counts them."""
    df = df[~df["diverged"].astype(bool)] if "diverged" in df else df
    rows = []
    for validator in VALIDATORS:
        for method, by_method in df.groupby("method", sort=True):
            stats = []
            for _, g in by_method.groupby("seed"):
                g = g[np.isfinite(g[validator].astype(float)) & np.isfinite(g["target_miou"].astype(float))]
                if len(g) < 2:
                    continue
                s, y = g[validator].to_numpy(float), g["target_miou"].to_numpy(float)
                stats.append((spearman(s, y), weighted_spearman(s, y, power), regret(s, y)))
            if stats:
                a = np.array(stats)
                m = np.nanmean(a, axis=0)
                sd = np.nanstd(a, axis=0, ddof=1) if len(stats) > 1 else np.full(3, np.nan)
                rows.append({"validator": validator, "method": method, "spearman": m[0], "spearman_std": sd[0],
                             "weighted_spearman": m[1], "weighted_spearman_std": sd[1], "regret": m[2],
                             "regret_std": sd[2], "seeds": len(stats)})
    return pd.DataFrame(rows, columns=["validator", "method", "spearman", "spearman_std", "weighted_spearman",
                                       "weighted_spearman_std", "regret", "regret_std", "seeds"])


def best_checkpoints(df: pd.DataFrame) -> pd.Series:
    """Per method: the target mIoU of its best checkpoint (target labels) per seed, averaged over seeds (diverged
    checkpoints left out)."""
    df = df[~df["diverged"].astype(bool)] if "diverged" in df else df
    return df.groupby(["method", "seed"])["target_miou"].max().groupby(level=0).mean()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=sorted(WEIGHT), default=["minent", "maxsquare"])
    p.add_argument("--multipliers", type=float, nargs="+", default=list(MULTIPLIERS),
                   help="target weights as multiples of the MiniCity preset's (default: 0 1 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=zoo.ADAPT_STEPS)
    p.add_argument("--every", type=int, default=10, help="score a checkpoint every this many steps")
    p.add_argument("--pixels", type=int, default=1024, help="target pixels sampled for SND and BNM")
    p.add_argument("--power", type=float, default=2.0, help="exponent of the weighted Spearman's rank weights")
    p.add_argument("--out", default=str(RESULTS / "selection.csv"))
    p.add_argument("--summarize", metavar="CSV", help="only print the summary of this result file")
    args = p.parse_args(argv)

    if not args.summarize:
        run_grid(args.out, methods=args.methods, multipliers=args.multipliers, seeds=args.seeds, steps=args.steps,
                 every=args.every, pixels=args.pixels, log=lambda s: print(s, flush=True))
    table = summarize(read_rows(Path(args.summarize or args.out)), args.power)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
