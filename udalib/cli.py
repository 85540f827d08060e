"""``python -m udalib``: what the notebooks do, from the shell (and under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

EPILOG = """examples:
  python -m udalib minicity                                   # generate MiniCity (once; cached)
  python -m udalib train --method source_only --steps 300     # source model on MiniCity
  python -m udalib train --source minicity:target/oracle      # target-supervised oracle
  python -m udalib train --init RUN --steps 0 --adabn --target minicity:target   # AdaBN control
  python -m udalib evaluate --run runs/RUN --dataset minicity:rome/val --flip
  python -m udalib table                                      # every finished run, one table
  python -m udalib run source_gta5 --data-root /data/prepared --device cuda   # a full-scale recipe
  torchrun --nproc_per_node=2 -m udalib train ...             # data-parallel, one process per GPU
"""


def _value(text: str):
    """``--set key=value`` values: JSON where it parses (numbers, true, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        out[key] = _value(value)
    return out


def _train(args) -> int:
    from .experiment import Experiment, run

    exp = Experiment(method=args.method, source=args.source, target=args.target, model=args.model,
                     num_classes=args.num_classes, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                     init=args.init, adabn=args.adabn, preset=None if args.preset == "none" else args.preset,
                     method_args=_pairs(args.set, "--set"), model_args=_pairs(args.model_arg, "--model-arg"),
                     data_root=args.data_root, flip=args.flip, device=args.device, label=args.label,
                     evaluate_on=tuple(args.eval_on) if args.eval_on else Experiment.evaluate_on)
    result = run(exp, args.run_dir, resume=not args.no_resume, progress=not args.quiet,
                 checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, workers=args.workers)
    print(f"run folder: {result.dir}")
    for spec, scores in result.scores.items():
        print(f"{spec:28s} {scores}")
    return 0


def _run_recipe(args) -> int:
    from .experiment import run
    from .recipes import load_recipe

    overrides = {k: v for k, v in (("data_root", args.data_root), ("device", args.device)) if v is not None}
    exp = load_recipe(args.recipe, **overrides, **_pairs(args.set, "--set"))
    result = run(exp, args.run_dir, resume=not args.no_resume, progress=not args.quiet,
                 checkpoint_every=args.checkpoint_every, workers=args.workers)
    print(f"run folder: {result.dir}")
    for spec, scores in result.scores.items():
        print(f"{spec:28s} {scores}")
    return 0


def _evaluate(args) -> int:
    from .data import eval_loader
    from .eval.evaluate import evaluate
    from .experiment import Experiment, load_run, open_data
    from .models import build_model
    from .models.checkpoint import load_checkpoint

    if args.run:
        r = load_run(args.run)
        exp, model = r.config, r.model(args.device)
    elif args.checkpoint:
        exp = Experiment(model=args.model, num_classes=args.num_classes, data_root=args.data_root)
        model = build_model(args.model, args.num_classes)
        load_checkpoint(model, args.checkpoint)
        model.to(args.device)
    else:
        raise SystemExit("error: give --run RUN_DIR or --checkpoint FILE (with --model and --num-classes)")
    exp.data_root = args.data_root or exp.data_root
    dataset = open_data(args.dataset, default_split="val", train=False, exp=exp)
    scores = evaluate(model, eval_loader(dataset), exp.num_classes, device=args.device, flip=args.flip,
                      class_set=args.class_set, protocol={"model_selection": args.selection}, progress=not args.quiet)
    print(scores)
    print(scores.table().round(2).to_string())
    return 0


def _minicity(args) -> int:
    from .data import minicity

    print(minicity.generate(args.root, overwrite=args.overwrite))
    return 0


def _table(args) -> int:
    from .experiment import TARGET_BN, list_runs

    df = list_runs(args.runs)
    if df.empty:
        print(f"no finished runs under {args.runs or 'runs/'}: run `make tutorial` or `python -m udalib train`")
        return 0
    main = df[df.evaluated_on == args.dataset]
    if main.empty:
        print(f"no run was evaluated on {args.dataset}; evaluation sets present: {sorted(df.evaluated_on.unique())}")
        return 0
    summary = main.groupby("label").miou.agg(["mean", "std", "count"])
    bn = df[df.evaluated_on == args.dataset + TARGET_BN].groupby("label").miou.mean()
    summary["target BN mean"] = bn
    summary["train s"] = main.groupby("label").seconds.mean()
    order = ["source_only", "AdaBN", "target batches, lambda 0 (control)"]
    summary = summary.reindex([x for x in order if x in summary.index]
                              + sorted(x for x in summary.index if x not in order and x != "oracle")
                              + (["oracle"] if "oracle" in summary.index else []))
    summary.columns = ["mIoU mean", "std", "seeds", "target BN mean", "train s"]
    print(f"mIoU (%) on {args.dataset}, mean over seeds (last checkpoint; 'target BN': BatchNorm statistics "
          "re-estimated on target images)\n")
    print(summary.round(2).to_string())
    if {"source_only", "oracle"} <= set(summary.index):
        src, orc = summary.loc["source_only", "mIoU mean"], summary.loc["oracle", "mIoU mean"]
        print(f"\ndomain gap: oracle {orc:.1f} - source-only {src:.1f} = {orc - src:.1f} points "
              f"(source-only reaches {100 * src / orc:.0f}% of the oracle)")
    if args.out:
        summary.to_csv(args.out)
        print(f"saved {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    from .experiment import Experiment

    defaults = {f.name: f.default for f in fields(Experiment) if not callable(f.default)}
    p = argparse.ArgumentParser(prog="python -m udalib", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run (any method) and evaluate it",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--method", default=defaults["method"], help="a name from udalib.methods.METHODS")
    t.add_argument("--source", default=defaults["source"], help="labelled set, DATASET[:DOMAIN][/SPLIT]")
    t.add_argument("--target", default=None, help="unlabelled target images, e.g. minicity:target")
    t.add_argument("--model", default=defaults["model"])
    t.add_argument("--num-classes", type=int, default=defaults["num_classes"])
    t.add_argument("--steps", type=int, default=defaults["steps"])
    t.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    t.add_argument("--seed", type=int, default=defaults["seed"])
    t.add_argument("--init", default=None, help="run name or folder whose model.pt starts this run")
    t.add_argument("--adabn", action="store_true", help="re-estimate BatchNorm statistics on the target")
    t.add_argument("--preset", default=defaults["preset"], help="method preset ('none': paper defaults)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method parameter")
    t.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model argument")
    t.add_argument("--eval-on", action="append", default=[], metavar="DATASET", help="evaluation set (repeat)")
    t.add_argument("--data-root", default=None, help="folder of datasets prepared by data_scripts/")
    t.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    t.add_argument("--device", default="cpu")
    t.add_argument("--run-dir", default=None, help="default: runs/<method>-s<seed>-<hash>")
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=0)
    t.add_argument("--workers", type=int, default=0, help="data-loading processes")
    t.add_argument("--label", default="", help="name shown in tables")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    r = sub.add_parser("run", help="run a full-scale recipe (udalib/recipes/*.yaml)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("recipe", help="recipe name, e.g. source_gta5")
    r.add_argument("--data-root", default=None, help="folder of datasets prepared by data_scripts/")
    r.add_argument("--device", default=None, help="overrides the recipe's device")
    r.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="Experiment field override")
    r.add_argument("--run-dir", default=None)
    r.add_argument("--checkpoint-every", type=int, default=1000)
    r.add_argument("--workers", type=int, default=4, help="data-loading processes")
    r.add_argument("--no-resume", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_run_recipe)

    e = sub.add_parser("evaluate", help="score a run or a checkpoint on a dataset",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--run", help="a run folder")
    e.add_argument("--checkpoint", help="a weights file (udalib or the authors' released checkpoints)")
    e.add_argument("--model", default=defaults["model"])
    e.add_argument("--num-classes", type=int, default=defaults["num_classes"])
    e.add_argument("--dataset", default="minicity:target/val")
    e.add_argument("--data-root", default=None)
    e.add_argument("--class-set", default=None, help="19, 16 or 13 (subset mIoU from a 19-class model)")
    e.add_argument("--flip", action="store_true")
    e.add_argument("--selection", default="last checkpoint", help="model-selection rule, recorded")
    e.add_argument("--device", default="cpu")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)

    m = sub.add_parser("minicity", help="generate the MiniCity benchmark (cached)")
    m.add_argument("--root", default=None)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=_minicity)

    tb = sub.add_parser("table", help="results table of every finished run")
    tb.add_argument("--runs", default=None, help="runs folder (default: runs/)")
    tb.add_argument("--dataset", default="minicity:target/val", help="evaluation set to tabulate")
    tb.add_argument("--out", default=None, help="also save the summary as CSV")
    tb.set_defaults(func=_table)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # bad input: one line that says what to do, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
