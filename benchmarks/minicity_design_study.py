"""Candidate MiniCity target designs, each measured at notebook defaults over seeds, with the controls.

A design is a MiniCity domain: the composite ``target`` or ``target-<factor>+<factor>...`` (the source world with
only those shift factors, ``udalib.data.minicity.SHIFT_FACTORS``). For each design and seed:

* source-only: the standard source model (``zoo.source_experiment``), scored on the design's val split;
* AdaBN: that model with BatchNorm statistics re-estimated on the design's train images;
* oracle: the same recipe trained on the design's labelled ``oracle`` split;
* the lambda = 0 control, MinEnt, AdaptSegNet multi-level and CBST, each from the source model on source + the
  design's unlabelled train images, at the notebooks' MiniCity presets and steps.

Every adaptation run here (the control included) keeps BatchNorm running statistics of target batches only
(``Experiment.bn_stats = "target"``; source batches are normalised with their own batch statistics), so "as
trained" is the model with the target's statistics, as AdaBN is; CBST also predicts its pseudo-labels with target
statistics. Same steps, data and evaluation for the methods and their controls.

    python benchmarks/minicity_design_study.py                         # every design, seeds 0 1 2
    python benchmarks/minicity_design_study.py --designs graded --seeds 0 --out /tmp/part.csv
    python benchmarks/minicity_design_study.py --summarize a.csv b.csv  # merge parts, print the table
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from udalib import zoo
from udalib.experiment import Experiment, get_or_train
from udalib.methods import control_args

RESULTS = Path(__file__).parent / "results"
DESIGNS = {
    "v1": "target",  # photometry + palette + texture: the composite as it stands
    "graded": "target-photometry+palette+texture+graded",  # palette and texture strength per image in [0, 1]
    "graded_prior": "target-photometry+palette+texture+graded+prior",  # and denser traffic and crowds
    "converge": "target-photometry+texture+converge",  # source colours, but sidewalk ~ road, foliage dulled
}
ROWS = ("source_only", "adabn", "oracle", "control", "minent", "adaptsegnet_multi", "cbst")


def experiments(domain: str, seed: int) -> dict[str, Experiment]:
    target = f"minicity:{domain}"
    evaluate_on = ("minicity:source/val", f"{target}/val")
    source = zoo.source_experiment(seed)

    def adapt(method: str, label: str, **args) -> Experiment:
        exp = zoo.adaptation_experiment(method, source, label=label, **args)
        return replace(exp, target=target, evaluate_on=evaluate_on, bn_stats="target")

    return {
        "source_only": Experiment(seed=seed, init=source.name, steps=0, evaluate_on=evaluate_on,
                                  label="source-only"),
        "adabn": replace(zoo.adabn_experiment(source), target=target, evaluate_on=evaluate_on),
        "oracle": replace(zoo.oracle_experiment(seed), source=f"{target}/oracle", evaluate_on=evaluate_on),
        "control": adapt("maxsquare", "control, lambda 0", **control_args("maxsquare")),
        "minent": adapt("minent", "MinEnt"),
        "adaptsegnet_multi": adapt("adaptsegnet_multi", "AdaptSegNet multi"),
        "cbst": adapt("cbst", "CBST", pseudo_label_bn="target"),
    }


def summarize(df: pd.DataFrame) -> str:
    table = df.pivot_table(index="design", columns="row", values="target_miou", aggfunc=["mean", "std"])
    lines = ["mIoU % on the design's val split, mean ± std over seeds " + " ".join(map(str, sorted(df.seed.unique())))
             + " (as trained)", ""]
    cols = [r for r in ROWS if r in df.row.unique()]
    lines.append("| design | domain | " + " | ".join(cols) + " | best method − max(AdaBN, control) |")
    lines.append("|---" * (len(cols) + 3) + "|")
    for design in [d for d in DESIGNS if d in table.index]:
        m, s = table.loc[design, "mean"], table.loc[design, "std"]
        cells = [f"{m[c]:.1f} ± {s[c]:.1f}" for c in cols]
        best = max(m[c] for c in ("minent", "adaptsegnet_multi", "cbst") if c in m)
        margin = zoo.margin_over_controls(best, m.get("adabn", float("nan")), m.get("control", float("nan")))
        lines.append(f"| {design} | `{DESIGNS[design]}` | " + " | ".join(cells) + f" | {margin:+.1f} |")
    margins = df.pivot_table(index=["design", "seed"], columns="row", values="target_miou")
    lines += ["", "per seed: method − max(AdaBN, control)", ""]
    for (design, seed), r in margins.iterrows():
        gains = ", ".join(f"{c} {zoo.margin_over_controls(r[c], r['adabn'], r['control']):+.1f}"
                          for c in ("minent", "adaptsegnet_multi", "cbst") if c in r)
        lines.append(f"- {design}, seed {seed}: source-only {r['source_only']:.1f}, oracle {r['oracle']:.1f}, "
                     f"AdaBN {r['adabn']:.1f}, control {r['control']:.1f}; {gains}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--designs", nargs="+", choices=sorted(DESIGNS), default=list(DESIGNS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--out", default=str(RESULTS / "minicity_design_study.csv"))
    p.add_argument("--summarize", nargs="+", metavar="CSV", help="merge these result files and print the table")
    args = p.parse_args(argv)

    if args.summarize:
        df = pd.concat([pd.read_csv(f) for f in args.summarize], ignore_index=True)
        df.to_csv(args.out, index=False)
        text = summarize(df)
        Path(args.out).with_suffix(".md").write_text(text + "\n")
        print(text)
        return 0
    records = []
    for design in args.designs:
        domain = DESIGNS[design]
        for seed in args.seeds:
            get_or_train(zoo.source_experiment(seed), progress=False)  # the source model every row starts from
            exps = experiments(domain, seed)
            for row in args.rows:
                start = time.perf_counter()
                run = get_or_train(exps[row], progress=False)
                records.append({"design": design, "domain": domain, "seed": seed, "row": row,
                                "target_miou": round(run.miou(f"minicity:{domain}/val"), 2),
                                "source_miou": round(run.miou("minicity:source/val"), 2),
                                "seconds": round(time.perf_counter() - start, 1), "run": run.name})
                print(f"{design:14s} seed {seed} {row:18s} {records[-1]['target_miou']:6.2f}", flush=True)
                pd.DataFrame(records).to_csv(args.out, index=False)  # after every run: a kill loses one run
    print(summarize(pd.DataFrame(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
