"""The mean teacher's MiniCity table: DACS, its ablations and the older methods, with their controls, at 60 and 300
adaptation steps, with the teacher's score and per-class IoU.

Rows: ``udalib.zoo.ALL_ROWS`` (the standard rows and ``zoo.MEAN_TEACHER_ROWS``). One line per (method, seed, steps)
is appended to ``benchmarks/results/minicity_mean_teacher.csv`` as its run finishes; a rerun skips the lines already
there. Trained as the standard table was, one thread per process (``OMP_NUM_THREADS=1``): a run's digits depend on
the thread count, which its key does not record (``benchmarks/RESULTS.md``, "Threads change the digits"), so the
rows this table shares with ``minicity_table.csv`` (source-only, AdaBN, the controls, MinEnt, AdaptSegNet, CBST,
MLSL) are the same runs, number for number (``tests/test_results_tables.py`` checks it), and the 60-step
mean-teacher rows of ``minicity_table.csv`` are read from the same runs. Columns:

- ``target_miou``: target val mIoU (%) of the model as trained (its own running BatchNorm statistics);
- ``target_miou_target_bn``: the same weights with BatchNorm statistics re-estimated on target train images
  (AdaBN of the adapted model); empty for source-only (it never saw a target image), AdaBN's own number for AdaBN;
- ``teacher_miou``: the mean teacher's weights (DACS rows) scored the same way, statistics re-estimated on target
  train images (the teacher normalises with batch statistics while it trains; its running statistics are the source
  model's copies, never read);
- ``train_seconds`` (the run's own, from its scores), ``run`` (its folder), ``cpu`` (this machine), and the per-class
  IoU (%) of the as-trained model, ``iou_<class>`` as in ``minicity_atlas.csv``.

    python benchmarks/mean_teacher_table.py                                  # the standard order, seeds 0-4
    python benchmarks/mean_teacher_table.py --rows dacs control_dacs --seeds 0 1 --steps 300
    python benchmarks/mean_teacher_table.py --design                         # the BatchNorm design study
    python benchmarks/mean_teacher_table.py --summarize                      # the .md beside the CSV

On a CPU shared with other busy processes, one thread per process is also much faster than two threads that wait
on each other (a DACS step took about a second with one thread and over ten with two on a shared 2-core machine).

``--design`` trains, on seeds 100-102 only (never the reported seeds), DACS and its control under the MiniCity
BatchNorm policy (target-only statistics: the evaluated model carries statistics of mixed images) and under the
original's (``bn_stats="both"``: source and mixed batches), with AdaBN, into
``benchmarks/results/mean_teacher_design.csv``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from udalib import zoo
from udalib.data import eval_loader
from udalib.experiment import Experiment, get_or_train, open_data, score_set
from udalib.locks import append_csv_row
from udalib.methods.adabn import adapt_batchnorm
from udalib.results import CLASS_IOU_COLUMNS, class_ious

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "minicity_mean_teacher.csv"
DESIGN_OUT = RESULTS / "mean_teacher_design.csv"
TARGET_VAL = "minicity:target/val"
CLASS_COLUMNS = CLASS_IOU_COLUMNS
COLUMNS = ("method", "seed", "steps", "target_miou", "target_miou_target_bn", "teacher_miou", "train_seconds",
           "run", "cpu", *CLASS_COLUMNS)
DESIGN_COLUMNS = ("variant", "bn_stats", "seed", "steps", "target_miou", "target_miou_target_bn", "teacher_miou",
                  "run")
SEEDS = (0, 1, 2, 3, 4)
DESIGN_SEEDS = (100, 101, 102)
# Groups of (row, adaptation steps), in the order they are trained; within a group seed by seed, so that a method
# and its controls land together: DACS, its control and the baselines first
A = zoo.ADAPT_STEPS
ORDER = [
    [("dacs", A), ("control_dacs", A), ("adabn", A), ("source_only", A)],
    [("dacs_nomix", A), ("control_dacs_nomix", A), ("dacs_alpha0", A)],
    [("control_lambda0", A), ("cbst", A), ("mlsl", A)],
    [("dacs", 300), ("control_dacs", 300)],
    # at weight 0 the segmenter's updates do not depend on mixing: control_dacs_nomix has control_dacs's weights
    # (the same scores with target statistics), so DACS without mixing at 300 steps comes first, its control later
    [("dacs_nomix", 300)],
    [("dacs_mic", A), ("control_dacs_mic", A), ("dacs_rcs", A), ("control_dacs_rcs", A)],
    [("minent_mic", A), ("control_minent_mic", A), ("minent", A), ("control_lambda0", A)],
    [("dacs_mic_ratio0", A), ("control_dacs_mic_ratio0", A)],
    [("adaptsegnet_multi_mic", A), ("control_adaptsegnet_multi_mic", A), ("control_adaptsegnet", A),
     ("adaptsegnet_multi", A)],
    [("control_dacs_nomix", 300), ("control_lambda0", 300)],
]
TEACHER_METHODS = ("dacs", "dacs_mic", "minent_mic", "adaptsegnet_multi_mic")  # the methods with a mean teacher
NOT_ADAPTED = ("source_only", "adabn")  # trained on source alone / no training: their steps are their own


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def experiment(row: str, seed: int, steps: int) -> Experiment:
    """The row's Experiment; an adaptation row with ``steps`` adaptation steps (source-only and AdaBN as they are)."""
    exp = zoo.ALL_ROWS[row](seed)
    return exp if row in NOT_ADAPTED or exp.steps == steps else replace(exp, steps=steps)


def table_steps(row: str, steps: int) -> int:
    """The ``steps`` column: the adaptation steps of an adaptation row; 0 for source-only and AdaBN (no
    adaptation), which serve every step count."""
    return 0 if row in NOT_ADAPTED else steps


def _target_bn(model: torch.nn.Module, exp: Experiment, val: str = TARGET_VAL):
    """``model`` (a copy) with BatchNorm statistics re-estimated on ``exp``'s target train images, scored on
    ``val``."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        adapt_batchnorm(model, eval_loader(open_data(exp.target, default_split="train", train=False, exp=exp)))
    return score_set(model, open_data(val, default_split="val", train=False, exp=exp), exp,
                     "last checkpoint, target BN statistics")


def target_bn_score(run, val: str = TARGET_VAL) -> float:
    """A finished run's mIoU (%) on ``val`` with BatchNorm statistics re-estimated on its target's train images:
    stored at training (runs under ``bn_stats="both"``), else computed here."""
    stored = run.scores_on(val, target_bn=True)
    return (stored if stored is not None else _target_bn(run.model(), run.config, val)).miou


def scores(run) -> dict:
    """target_miou, target_miou_target_bn, teacher_miou and the per-class IoU of a finished run."""
    exp = run.config
    out = {"target_miou": round(run.miou(TARGET_VAL), 2), "target_miou_target_bn": None, "teacher_miou": None}
    if exp.adabn:
        out["target_miou_target_bn"] = out["target_miou"]
    elif exp.target is not None and exp.steps > 0:
        out["target_miou_target_bn"] = round(target_bn_score(run), 2)
    if exp.method in TEACHER_METHODS:
        method = run.method()
        teacher = method.mic_teacher if hasattr(method, "mic_teacher") else method.teacher  # MIC's, or DACS's
        out["teacher_miou"] = round(_target_bn(teacher.ema, exp).miou, 2)
    return out | class_ious(run, TARGET_VAL)


def done(path: Path, key: tuple[str, ...]) -> set[tuple]:
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {tuple(r[k] for k in key) for r in csv.DictReader(f)}


def run_table(groups, seeds, out: Path) -> None:
    """Train (or find) and score every (row, steps) of each group for each seed, seed by seed within a group."""
    finished = done(out, ("method", "seed", "steps"))
    cpu = cpu_name()
    for group in groups:
        for seed, (row, steps) in ((s, pair) for s in seeds for pair in group):
            if (row, str(seed), str(table_steps(row, steps))) in finished:
                continue
            get_or_train(zoo.source_experiment(seed), progress=False)  # the model every row starts from
            run = get_or_train(experiment(row, seed, steps), progress=False)
            line = {"method": row, "seed": seed, "steps": table_steps(row, steps), **scores(run),
                    "train_seconds": run.scores[TARGET_VAL].protocol.get("train_seconds"), "run": run.name,
                    "cpu": cpu}
            append_csv_row(out, line, COLUMNS)
            finished.add((row, str(seed), str(line["steps"])))
            print(f"{row:20s} seed {seed} steps {line['steps']:3d}: {line['target_miou']:6.2f}  target BN "
                  f"{line['target_miou_target_bn']}  teacher {line['teacher_miou']}", flush=True)


def design_variants(seed: int) -> dict[str, Experiment]:
    rows = zoo.ALL_ROWS
    dacs, control = rows["dacs"](seed), rows["control_dacs"](seed)
    return {"dacs": dacs, "control_dacs": control, "adabn": rows["adabn"](seed),
            "dacs_both": replace(dacs, bn_stats="both"), "control_dacs_both": replace(control, bn_stats="both")}


def design_summary(path: Path) -> str:
    """The design study as a Markdown table: per variant, mean ± std over seeds of each score."""
    import pandas as pd

    df = pd.read_csv(path)
    lines = [f"# DACS and BatchNorm statistics on MiniCity: seeds {' '.join(map(str, sorted(df.seed.unique())))}, "
             f"{int(df.steps.max())} adaptation steps", "", "Target val mIoU (%), mean ± std over seeds.", "",
             "| variant | bn_stats | as trained | target BN | teacher |", "|---|---|---|---|---|"]
    for variant, part in df.groupby("variant", sort=False):
        lines.append(f"| {variant} | {part.bn_stats.iloc[0]} | {_pm(part.target_miou)} | "
                     f"{_pm(part.target_miou_target_bn)} | {_pm(part.teacher_miou)} |")
    return "\n".join(lines) + "\n"


def run_design(seeds, out: Path) -> None:
    finished = done(out, ("variant", "seed"))
    for seed in seeds:
        get_or_train(zoo.source_experiment(seed), progress=False)
        for variant, exp in design_variants(seed).items():
            if (variant, str(seed)) in finished:
                continue
            run = get_or_train(exp, progress=False)
            s = scores(run)
            line = {"variant": variant, "bn_stats": exp.bn_stats, "seed": seed, "steps": exp.steps,
                    "target_miou": s["target_miou"], "target_miou_target_bn": s["target_miou_target_bn"],
                    "teacher_miou": s["teacher_miou"], "run": run.name}
            append_csv_row(out, line, DESIGN_COLUMNS)
            print(f"{variant:18s} seed {seed}: {line['target_miou']:6.2f}  target BN {line['target_miou_target_bn']}"
                  f"  teacher {line['teacher_miou']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", choices=sorted(zoo.ALL_ROWS), help="rows to run (default: ORDER)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--steps", type=int, default=None, help="adaptation steps of --rows (default: the zoo's)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--design", action="store_true", help="the BatchNorm design study, seeds 100-102")
    p.add_argument("--summarize", action="store_true", help="print the summary and write it beside the CSV")
    args = p.parse_args(argv)
    if args.design:
        out = args.out or DESIGN_OUT
        if not args.summarize:
            run_design(args.seeds if args.seeds != list(SEEDS) else DESIGN_SEEDS, out)
        text = design_summary(out)
        out.with_suffix(".md").write_text(text)
        print(text)
        return 0
    out = args.out or OUT
    if args.summarize:
        text = summarize(out)
        out.with_suffix(".md").write_text(text)
        print(text)
        return 0
    groups = [[(r, args.steps or zoo.ADAPT_STEPS) for r in args.rows]] if args.rows else ORDER
    start = time.perf_counter()
    run_table(groups, args.seeds, out)
    print(f"done in {time.perf_counter() - start:.0f} s: {out}")
    return 0


def margins(df, column: str = "target_miou"):
    """Per (method, steps, seed): ``column`` of each row of ``zoo.ALL_CONTROLS`` and its margin over max(AdaBN, its
    control at the same steps) (``zoo.margin_over_controls``), where the method and both controls are there."""
    import pandas as pd

    adabn = df[df.method == "adabn"].set_index("seed")[column]
    out = []
    for (method, steps), part in df.groupby(["method", "steps"]):
        if method not in zoo.ALL_CONTROLS:
            continue
        control_name, adabn_name = zoo.ALL_CONTROLS[method]
        bar = df[df.method == adabn_name].set_index("seed")[column] if adabn_name != "adabn" else adabn
        control = df[(df.method == control_name) & (df.steps == steps)].set_index("seed")[column]
        mine = part.set_index("seed")[column]
        seeds = mine.index.intersection(bar.index).intersection(control.index)
        if len(seeds):
            out.append(pd.DataFrame({"method": method, "steps": steps, "seed": seeds, "value": mine[seeds].values,
                                     "margin": zoo.margin_over_controls(mine[seeds], bar[seeds],
                                                                        control[seeds]).values}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["method", "steps", "seed", "value", "margin"])


# (claim, row that should win, row it should beat), at the same steps and seed
CLAIMS = (
    ("DACS > CBST", "dacs", "cbst"), ("DACS > MLSL", "dacs", "mlsl"),
    ("ClassMix helps: DACS > DACS without mixing", "dacs", "dacs_nomix"),
    ("the mean teacher helps: DACS > DACS with alpha 0", "dacs", "dacs_alpha0"),
    ("RCS helps DACS", "dacs_rcs", "dacs"), ("MIC helps DACS", "dacs_mic", "dacs"),
    ("MIC's masking matters: DACS + MIC > mask ratio 0", "dacs_mic", "dacs_mic_ratio0"),
    ("MIC helps MinEnt", "minent_mic", "minent"),
    ("MIC helps AdaptSegNet", "adaptsegnet_multi_mic", "adaptsegnet_multi"),
)


def claims(df, column: str):
    """Per claim and steps: the per-seed difference winner - loser in ``column``, over the seeds both have."""
    rows = []
    for claim, win, lose in CLAIMS:
        for steps in sorted(set(df[df.method == win].steps) & set(df[df.method == lose].steps)):
            a = df[(df.method == win) & (df.steps == steps)].set_index("seed")[column]
            b = df[(df.method == lose) & (df.steps == steps)].set_index("seed")[column]
            d = (a - b).dropna()
            if len(d):
                rows.append((claim, steps, d))
    return rows


def _pm(values) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    return f"{values.mean():.2f}" if len(values) < 2 else f"{values.mean():.2f} ± {values.std():.2f}"


def summarize(path: Path) -> str:
    """Per (method, steps): mean ± std over seeds of the target mIoU as trained, with target BatchNorm statistics and
    of the teacher; the margin over max(AdaBN, control) as trained and with target statistics, per seed, and how
    many seeds are ahead."""
    import pandas as pd

    df = pd.read_csv(path)
    order = list(dict.fromkeys([r for group in ORDER for r, _ in group] + list(df.method)))
    trained, bn = margins(df, "target_miou"), margins(df, "target_miou_target_bn")
    cpus = ", ".join(sorted(df.cpu.dropna().unique()))
    lines = [f"# The mean teacher on MiniCity: target val mIoU (%), every row trained on {cpus}", "",
             f"Mean ± std over seeds ({' '.join(map(str, sorted(df.seed.unique())))}); *steps*: adaptation steps (0: "
             "no adaptation). *as trained*: the model's own BatchNorm statistics; *target BN*: statistics "
             "re-estimated on target train images; *teacher*: the mean teacher's weights, target BN. Margin: the "
             "row minus max(AdaBN, its λ=0 control at the same steps), per seed (`udalib.zoo.margin_over_controls`),"
             " then mean ± std; *ahead*: seeds with a positive margin.", "",
             "| row | steps | seeds | as trained | target BN | teacher | margin (as trained) | ahead | "
             "margin (target BN) | ahead |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, steps), part in sorted(df.groupby(["method", "steps"]),
                                        key=lambda kv: (kv[0][1] > zoo.ADAPT_STEPS, order.index(kv[0][0]))):
        cells = [method, str(steps), str(part.seed.nunique()), _pm(part.target_miou),
                 _pm(part.target_miou_target_bn), _pm(part.teacher_miou)]
        for m in (trained, bn):
            mine = m[(m.method == method) & (m.steps == steps)]
            cells += [_pm(mine.margin), f"{int((mine.margin > 0).sum())}/{len(mine)}" if len(mine) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"The mean-teacher rows are compared in `{zoo.MEAN_TEACHER_SCORE}` (`udalib.zoo.MEAN_TEACHER_SCORE`:"
              " the design study, `mean_teacher_design.csv`); the as-trained column carries the statistics of the "
              "images the run forwarded last (mixed images for DACS and its control)."]
    lines += ["", "Claims: the per-seed difference (first row minus second, same seed and steps), mean ± std, and the "
              "seeds where the first is ahead.", "", "| claim | steps | target BN | ahead | as trained | ahead |",
              "|---|---|---|---|---|---|"]
    as_trained = {(c, s): d for c, s, d in claims(df, "target_miou")}
    for claim, steps, d in claims(df, "target_miou_target_bn"):
        e = as_trained.get((claim, steps), d.iloc[:0])
        lines.append(f"| {claim} | {steps} | {_pm(d)} | {int((d > 0).sum())}/{len(d)} | {_pm(e)} | "
                     f"{int((e > 0).sum())}/{len(e)} |")
    for name, m in (("target BN", bn), ("as trained", trained)):
        per_seed = m.pivot_table(index=["method", "steps"], columns="seed", values="margin")
        if not per_seed.empty:
            lines += ["", f"Margin over max(AdaBN, control) per seed, {name}:", "", per_seed.round(2).to_markdown()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
