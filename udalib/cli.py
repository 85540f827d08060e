"""``python -m udalib``: what the notebooks do, from the shell (and under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import fields

EPILOG = """examples:
  python -m udalib minicity                                   # generate MiniCity (once; cached)
  python -m udalib train --method source_only --steps 300     # source model on MiniCity
  python -m udalib train --source minicity:target/oracle      # target-supervised oracle
  python -m udalib train --init RUN --steps 0 --adabn --target minicity:target   # AdaBN control
  python -m udalib evaluate --run runs/RUN --dataset minicity:rome/val --flip
  python -m udalib table                                      # every finished run, mean over seeds
  python -m udalib crosscity --seeds 0 1 2                    # MiniCity CrossCity: 4 cities x methods x controls
  python -m udalib data check /data/prepared                  # which real datasets are ready, and the fixes
  python -m udalib run source_gta5 --data-root /data/prepared --device cuda   # a full-scale recipe
  torchrun --nproc_per_node=2 -m udalib train ...             # data-parallel, one process per GPU
"""


RUN_HELP = """Train and evaluate a full-scale recipe: udalib/recipes/RECIPE.yaml, an original README command with the
papers' hyper-parameters (the same recipe runs from the method's notebook: papermill ... -p RECIPE RECIPE).
Rerunning the same command after a kill resumes exactly from the run folder's checkpoint.pt; a recipe's `init`
(the originals' --continue_training) starts from other weights. On CUDA the loop trains with bf16 autocast,
channels_last and cudnn.benchmark; evaluation stays fp32.

--set KEY=VALUE sets a method parameter, merged into the recipe's method_args (its other values kept), or else an
Experiment field (steps, seed, ...); a name that is both (flip of cbst and mlsl: the evaluation's and the
pseudo-labels') is an error until written method.flip=... or exp.flip=...; model_args={...} is merged into the
recipe's model_args. --dry-run prints the resolved run (its folder, the Experiment, the method config) and trains
nothing.

Several GPUs (DDP, one process per GPU, NCCL; gloo on CPU):
  torchrun --standalone --nproc_per_node=N -m udalib run RECIPE --data-root /data/prepared --device cuda
Each process trains on its own batch of the recipe's batch_size images and the gradients are averaged: the
effective batch is N x batch_size (the originals: B = 1, so N) at the recipe's learning rate, not rescaled, and
`steps` counts updates, so the run sees N times the images; --set steps=STEPS/N (and poly_steps) keeps
the originals' number of images. BatchNorm statistics are each process's own batch (as the originals' batch-1 BN),
copied from rank 0 after every step. The first line printed states the effective batch and lr of the run.
"""


class _RawDescriptionWithDefaults(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default."""


def _value(text: str):
    """``--set key=value`` values: JSON where it parses (numbers, true, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return float(text)  # nan, inf: numbers that JSON does not spell, rejected by the checks with their name
    except ValueError:
        return text


def _seconds(minutes: float) -> float | None:
    return minutes * 60 if minutes > 0 else None


def _count(text: str) -> int:
    """An integer of at least 0 (argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 0, got {value}")
    return value


def _positive(text: str) -> int:
    """An integer of at least 1 (argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:  # negatives too: the message names this option's minimum, not _count's
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {value}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected minutes of at least 0 (0: off), got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where the help is."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _pairs(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        out[key] = _value(value)
    return out


def _run_options(args, **more):
    """The :class:`~udalib.experiment.RunOptions` of ``train`` and ``run RECIPE``'s flags."""
    from .experiment import RunOptions

    return RunOptions(resume=not args.no_resume, progress=not args.quiet, checkpoint_every=args.checkpoint_every,
                      checkpoint_seconds=_seconds(args.checkpoint_minutes), workers=args.workers, **more)


def _train(args) -> int:
    from .experiment import Experiment, run

    exp = Experiment(method=args.method, source=args.source, target=args.target, model=args.model,
                     num_classes=args.num_classes, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                     init=args.init, adabn=args.adabn, preset=None if args.preset == "none" else args.preset,
                     method_args=_pairs(args.set, "--set"), model_args=_pairs(args.model_arg, "--model-arg"),
                     data_root=args.data_root, flip=args.flip, device=args.device, label=args.label,
                     select_every=args.select_every,
                     evaluate_on=tuple(args.eval_on) if args.eval_on else Experiment.evaluate_on)
    result = run(exp, args.run_dir, _run_options(args, eval_every=args.eval_every))
    print(f"run folder: {result.dir}")
    for spec, scores in result.scores.items():
        print(f"{spec:28s} {scores}")
    return 0


def recipe_experiment(recipe: str, sets: list[str], **overrides):
    """The Experiment ``run RECIPE`` trains: the recipe, then ``overrides`` (Experiment fields: ``--data-root``,
    ``--device``), then each ``--set KEY=VALUE``: a parameter of the recipe's method is merged into its
    ``method_args`` (the recipe's other values kept), any other name sets an Experiment field; a name that is
    both is an error until written ``method.KEY`` or ``exp.KEY``."""
    from .experiment import Experiment
    from .methods import METHODS
    from .recipes import load_recipe

    values = _pairs(sets, "--set")
    base = load_recipe(recipe, **overrides)
    method = values.get("method", values.get("exp.method", base.method))
    params = {f.name for f in fields(METHODS[method][1])} if method in METHODS else set()
    run_fields = {f.name for f in fields(Experiment)}
    method_args, exp_values = dict(base.method_args), {}
    for key, value in values.items():
        scope, _, name = key.rpartition(".")
        if scope not in ("", "method", "exp"):
            raise ValueError(f"--set {key}=...: the only prefixes are method. and exp.")
        in_method, in_exp = name in params and scope != "exp", name in run_fields and scope != "method"
        if in_method and in_exp:
            raise ValueError(f"--set {key}=...: {name!r} is both a parameter of method {method!r} and an Experiment "
                             f"field: write method.{name}=... or exp.{name}=...")
        if in_method:
            method_args[name] = value
        elif name == "method_args":
            raise ValueError("--set method_args=... would replace the recipe's method parameters: set each one, "
                             "--set KEY=VALUE")
        elif name == "model_args" and isinstance(value, dict):
            exp_values[name] = {**base.model_args, **value}
        elif in_exp:
            exp_values[name] = value
        else:
            raise ValueError(f"--set {key}=...: method {method!r} has no parameter {name!r} and Experiment has no "
                             f"field {name!r}; parameters: {', '.join(sorted(params))}; Experiment fields: "
                             f"{', '.join(sorted(run_fields))}")
    return load_recipe(recipe, **{**exp_values, **overrides, "method_args": method_args})


def _run_recipe(args) -> int:
    import os
    from dataclasses import asdict

    from .experiment import run, run_dir_for
    from .recipes import data_parallel_summary

    overrides = {k: v for k, v in (("data_root", args.data_root), ("device", args.device)) if v is not None}
    exp = recipe_experiment(args.recipe, args.set, **overrides)
    if args.dry_run:
        print(f"run folder: {run_dir_for(exp, args.run_dir)}")
        print(json.dumps(asdict(exp) | {"method_config": asdict(exp.method_config)}, indent=1, default=list))
        return 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and os.environ.get("RANK", "0") == "0":
        print(f"torchrun: {data_parallel_summary(exp, world)}")
    result = run(exp, args.run_dir, _run_options(args))
    print(f"run folder: {result.dir}")
    for spec, scores in result.scores.items():
        print(f"{spec:28s} {scores}")
    return 0


def _evaluate(args) -> int:
    from .data import eval_loader
    from .eval.evaluate import evaluate
    from .experiment import Experiment, load_run, open_data
    from .experiment_checks import check_device
    from .models import build_model
    from .models.checkpoint import load_checkpoint

    check_device(args.device)
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
    if args.protocol:
        from .eval.evaluate import evaluate_protocol

        if args.flip:
            raise ValueError(f"--protocol {args.protocol} fixes flip itself: drop --flip")
        scores = evaluate_protocol(model, eval_loader(dataset), exp.num_classes, args.protocol,
                                   model_selection=args.selection, class_set=args.class_set, device=args.device,
                                   progress=not args.quiet)
    else:
        scores = evaluate(model, eval_loader(dataset), exp.num_classes, device=args.device, flip=args.flip,
                          class_set=args.class_set, protocol={"model_selection": args.selection},
                          progress=not args.quiet)
    print(scores)
    print(scores.table().round(2).to_string())
    return 0


def _crosscity(args) -> int:
    from dataclasses import replace

    from . import crosscity as cc

    if args.recipe:
        from .recipes import load_recipe

        overrides = {k: v for k, v in (("data_root", args.data_root), ("device", args.device)) if v is not None}
        recipe = load_recipe(args.recipe, **overrides)
        if recipe.num_classes != cc.NUM_CLASSES or not (recipe.target or "").startswith("nthu:"):
            raise ValueError(f"recipe {args.recipe!r} is not a CrossCity recipe (13 classes, target nthu:<city>); "
                             "use crosscity_maxsquare or crosscity_maxsquare_iw")
        base = lambda seed: replace(recipe, seed=seed, steps=args.steps or recipe.steps)  # noqa: E731
        source = None  # starts from the recipe's init checkpoint
    else:
        base = lambda seed: replace(cc.minicity_base(seed, args.steps or cc.ADAPT_STEPS), device=args.device or "cpu")  # noqa: E731
        source = lambda seed: replace(cc.minicity_source(seed), device=args.device or "cpu")  # noqa: E731
    scores = cc.transfer(base, args.seeds, cities=args.cities, methods=args.methods, controls=args.controls,
                         source=source, progress=not args.quiet)
    seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    for bn in (False, True):
        what = "with BatchNorm statistics of the city" if bn else "as trained"
        print(f"\nmIoU (%) on each city's labelled split after adapting to that city, {what}, mean of {seeds} "
              "(last checkpoint):\n")
        print(cc.city_table(scores, target_bn=bn).round(1).to_string())
    for method in args.methods:
        print(f"\n{method}: gain per city (mean over seeds) and seeds where it is ahead:\n")
        print(cc.gains(scores, method).round(2).to_string())
    if args.out:
        scores.to_csv(args.out, index=False)
        print(f"\nsaved every score (row, adapted_to, evaluated_on, seed) to {args.out}")
    return 0


def _minicity(args) -> int:
    from .data import minicity

    print(minicity.generate(args.root, overwrite=args.overwrite))
    return 0


def _data_check(args) -> int:
    from .data.check import check_root, format_report

    statuses = check_root(args.root, tuple(args.dataset) or None, full=args.full, progress=not args.quiet)
    print(format_report(statuses))
    return 0 if all(s.ok for s in statuses) else 1


def _table(args) -> int:
    from pathlib import Path

    import pandas as pd

    from . import paths, results

    where = Path(args.runs) if args.runs else paths.runs_dir()
    df = results.load_store(where, on_error=lambda message: print(f"warning: {message}", file=sys.stderr)) \
        if where.is_dir() else results.runs_frame({})
    if df.empty:
        print(f"no finished runs under {where}: run `make tutorial` or `python -m udalib train`")
        return 0
    found = sorted(set(df.evaluated_on))
    df = df[df.evaluated_on == args.dataset]
    if df.empty:
        print(f"no run was evaluated on {args.dataset}; pass --dataset with one of the evaluation sets present: "
              f"{found}")
        return 0
    stale, df = df[df.stale != ""], df[df.stale == ""]  # stale runs: listed apart, never in the means
    if df.empty:
        print(f"every run evaluated on {args.dataset} is stale")
        _print_stale(stale)
        return 0
    # one row per experiment (its runs differ only in the seed), named by udalib.results.group_runs
    main = df[~df.target_bn]
    folders = main.groupby(["row", "seed"]).run.nunique()
    if (folders > 1).any():  # the same seed twice (e.g. two folders of one run): say so
        rows = ", ".join(dict.fromkeys(folders[folders > 1].index.get_level_values("row")))
        print(f"warning: {rows}: several run folders of the same seed; each seed counted once, its runs averaged",
              file=sys.stderr)
    trained = results.over_seeds(main, "miou")
    summary = pd.DataFrame({"mIoU mean": trained["mean"], "std": trained["std"], "seeds": trained["n"]}).astype(float)
    summary["seeds"] = summary["seeds"].astype(int)
    summary["target BN mean"] = results.over_seeds(df[df.target_bn], "miou")["mean"].reindex(summary.index)
    summary["train s"] = results.over_seeds(main, "seconds")["mean"].reindex(summary.index)
    summary = summary.astype({"target BN mean": float, "train s": float})
    summary.index.name = "label"
    order = ["source_only", "AdaBN", "target batches, lambda 0 (control)"]
    summary = summary.reindex([x for x in order if x in summary.index]
                              + sorted(x for x in summary.index if x not in order and x != "oracle")
                              + (["oracle"] if "oracle" in summary.index else []))
    summary = _with_selections(summary, df, args.dataset)
    print(f"mIoU (%) on {args.dataset}, mean over seeds (last checkpoint; 'target BN': BatchNorm statistics "
          "re-estimated on target images)\n")
    print(_shown(summary).to_string())
    if summary.columns.size > 5:
        print("\nselections (runs trained with select_every): mIoU of the step each rule picked -- the last step; the "
              "largest IM score on unlabelled target training images; the best target val mIoU (uses target labels)")
    if {"source_only", "oracle"} <= set(summary.index):
        src, orc = summary.loc["source_only", "mIoU mean"], summary.loc["oracle", "mIoU mean"]
        print(f"\ndomain gap: oracle {orc:.1f} - source-only {src:.1f} = {orc - src:.1f} points "
              f"(source-only reaches {100 * src / orc:.0f}% of the oracle)")
    _print_stale(stale)
    if args.out:
        summary.to_csv(args.out)
        print(f"saved {args.out}")
    return 0


def _print_stale(stale) -> None:
    """The stale runs (udalib.results.stale_why), one line each, apart from the table and its means."""
    if stale.empty:
        return
    rows = stale[~stale.target_bn].sort_values(["label", "seed", "run"])
    print(f"\nstale runs, not in the means above ({rows.run.nunique()}): the weights they started from changed after "
          "they were trained, or their folder key is not their config's; get_or_train trains them again")
    for r in rows.itertuples():
        print(f"  {r.run}  {r.label}  seed {r.seed}  mIoU {r.miou:.2f}  stale: {r.stale}")


def _with_selections(summary, frame, dataset: str):
    """The table with, where any run was trained with select_every, the mIoU of the step each selection rule
    picked (udalib.train.select), mean and std over seeds: last, IM-selected, target-selected
    (udalib.results.selections)."""
    from .results import selections
    from .train.select import RULE_LABELS

    if not frame[list(RULE_LABELS)].notna().any().any():
        return summary
    picks = selections(frame, dataset, rows=list(summary.index))
    for label in RULE_LABELS.values():
        summary[f"{label} mean"] = picks[label]
        summary[f"{label} std"] = picks[f"{label} std"]
    return summary


def _shown(summary):
    """The table as printed: rounded, each selection's mean and std as one "mean ± std" column."""
    from .results import with_spread
    from .train.select import RULE_LABELS

    if summary.columns.size == 5:
        return summary.round(2)
    named = summary.round(2).rename(columns={f"{label} mean": label for label in RULE_LABELS.values()})
    return with_spread(named, digits=2)


def parser() -> argparse.ArgumentParser:
    from .data.labels import CITIES
    from .experiment import Experiment

    defaults = {f.name: f.default for f in fields(Experiment) if not callable(f.default)}
    p = _Parser(prog="python -m udalib", description=__doc__, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one run (any method) and evaluate it",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--method", default=defaults["method"], help="a name from udalib.methods.METHODS")
    t.add_argument("--source", default=defaults["source"], help="labelled set, DATASET[:DOMAIN][/SPLIT]")
    t.add_argument("--target", default=None, help="unlabelled target images, e.g. minicity:target")
    t.add_argument("--model", default=defaults["model"])
    t.add_argument("--num-classes", type=_positive, default=defaults["num_classes"])
    t.add_argument("--steps", type=_count, default=defaults["steps"], help="0 only with --init")
    t.add_argument("--batch-size", type=_positive, default=defaults["batch_size"])
    t.add_argument("--seed", type=_count, default=defaults["seed"])
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
    t.add_argument("--checkpoint-every", type=_count, default=0, help="also checkpoint every N steps (0: off)")
    t.add_argument("--checkpoint-minutes", type=_minutes, default=5.0,
                   help="checkpoint every so many minutes of wall time (0: off); always at the end")
    t.add_argument("--eval-every", type=_count, default=0)
    t.add_argument("--select-every", type=_count, default=0,
                   help="every N steps score the target val mIoU and the IM validator, keep best_model.pt (0: off)")
    t.add_argument("--workers", type=_count, default=0, help="data-loading processes")
    t.add_argument("--label", default="", help="name shown in tables")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    r = sub.add_parser("run", help="run a full-scale recipe (udalib/recipes/*.yaml)", description=RUN_HELP,
                       formatter_class=_RawDescriptionWithDefaults)
    r.add_argument("recipe", help="recipe name, e.g. source_gta5")
    r.add_argument("--data-root", default=None, help="folder of datasets prepared by data_scripts/")
    r.add_argument("--device", default=None, help="overrides the recipe's device")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter (merged into the recipe's method_args), else an Experiment field; "
                        "method.KEY / exp.KEY where a name is both (repeat)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved run and its folder; train nothing")
    r.add_argument("--run-dir", default=None)
    r.add_argument("--checkpoint-every", type=_count, default=1000, help="checkpoint every N steps (0: off)")
    r.add_argument("--checkpoint-minutes", type=_minutes, default=5.0,
                   help="checkpoint every so many minutes of wall time (0: off); always at the end")
    r.add_argument("--workers", type=_count, default=4, help="data-loading processes")
    r.add_argument("--no-resume", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_run_recipe)

    e = sub.add_parser("evaluate", help="score a run or a checkpoint on a dataset",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--run", help="a run folder")
    e.add_argument("--checkpoint", help="a weights file (udalib or the authors' released checkpoints)")
    e.add_argument("--model", default=defaults["model"])
    e.add_argument("--num-classes", type=_positive, default=defaults["num_classes"])
    e.add_argument("--dataset", default="minicity:target/val")
    e.add_argument("--data-root", default=None)
    e.add_argument("--class-set", default=None, help="19, 16 or 13 (subset mIoU from a 19-class model)")
    e.add_argument("--flip", action="store_true")
    e.add_argument("--protocol", choices=["maxsquare", "adaptsegnet"], default=None,
                   help="a named protocol (udalib.eval.evaluate.PROTOCOLS): maxsquare = labels at 1024x512 + flip; "
                        "adaptsegnet = full-resolution labels (--dataset cityscapes/valfull), no flip")
    e.add_argument("--selection", default="last checkpoint", help="model-selection rule, recorded")
    e.add_argument("--device", default="cpu")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)

    m = sub.add_parser("minicity", help="generate the MiniCity benchmark (cached)")
    m.add_argument("--root", default=None)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=_minicity)

    d = sub.add_parser("data", help="the real datasets prepared by data_scripts/")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="what DATA_ROOT holds, what is missing, and the command that fixes it")
    dc.add_argument("root", help="DATA_ROOT, the --out of data_scripts/prepare_*.py")
    dc.add_argument("--dataset", action="append", default=[], choices=["gta5", "synthia", "cityscapes", "nthu"],
                    help="check only this dataset (repeat; default: all four)")
    dc.add_argument("--full", action="store_true", help="open and decode every image and label (sizes, label ids); "
                    "default: a sample of 5 files per list")
    dc.add_argument("--quiet", action="store_true", help="no progress bar")
    dc.set_defaults(func=_data_check)

    cc = sub.add_parser("crosscity", help="CrossCity transfer: adapt to each city in turn, evaluate on every city",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cc.add_argument("--recipe", default=None, help="full scale: crosscity_maxsquare or crosscity_maxsquare_iw "
                    "(default: MiniCity)")
    cc.add_argument("--data-root", default=None, help="folder of datasets prepared by data_scripts/ (with --recipe)")
    cc.add_argument("--cities", nargs="+", default=list(CITIES), choices=CITIES)
    cc.add_argument("--methods", nargs="+", default=["maxsquare", "maxsquare_iw"], help="adaptation methods")
    cc.add_argument("--controls", nargs="*", default=["source-only", "AdaBN", "control"],
                    choices=["source-only", "AdaBN", "control"], help="baselines run beside the methods")
    cc.add_argument("--seeds", nargs="+", type=_count, default=[0])
    cc.add_argument("--steps", type=_positive, default=None, help="adaptation steps per city (default: MiniCity 30, "
                    "the recipe's otherwise)")
    cc.add_argument("--device", default=None)
    cc.add_argument("--out", default=None, help="save the long score table as CSV")
    cc.add_argument("--quiet", action="store_true")
    cc.set_defaults(func=_crosscity)

    tb = sub.add_parser("table", help="results table of every finished run: one row per experiment, mean over seeds")
    tb.add_argument("--runs", default=None, help="runs folder (default: runs/)")
    tb.add_argument("--dataset", default="minicity:target/val", help="evaluation set to tabulate")
    tb.add_argument("--out", default=None, help="also save the summary as CSV")
    tb.set_defaults(func=_table)
    return p


def _one_line(exc: BaseException) -> str:
    """The error as one line: udalib's own messages as they are, anything else with its type."""
    from .locks import FolderBusyError
    from .models.checkpoint import CheckpointError

    text = " ".join(str(exc).split()) or type(exc).__name__

    if isinstance(exc, (FloatingPointError, CheckpointError, FolderBusyError)) or _is_input_error(exc):
        return text
    return f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = parser().parse_args([a for a in argv if a != "--debug"])
    if debug:
        return args.func(args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as exc:  # every error: one line that says what to do; --debug shows the traceback
        hint = "" if _is_input_error(exc) else " (rerun with --debug for the traceback)"
        print(f"error: {_one_line(exc)}{hint}", file=sys.stderr)
        return 2 if _is_input_error(exc) else 1


def _is_input_error(exc: BaseException) -> bool:
    """Bad input (exit code 2): what the user gave is wrong and the message says how to fix it."""
    from .locks import FolderBusyError
    from .models.checkpoint import CheckpointError

    return isinstance(exc, (ValueError, TypeError, FileNotFoundError, FileExistsError, CheckpointError,
                            FolderBusyError))


if __name__ == "__main__":
    sys.exit(main())
