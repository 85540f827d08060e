"""Hours each full-scale recipe takes, from the step times ``benchmarks/method_families.py`` measured.

For every recipe of ``udalib/recipes/`` whose method belongs to a measured family: its ``steps`` times the family's
seconds per step, plus, for self-training (CBST, MLSL), one pseudo-labelling pass per round over the target
training set (``rounds`` x target images x the measured seconds per target image). A recipe that is not the
family's own (another MaxSquare variant, a VGG-16 model, SYNTHIA sizes, batch 1 instead of 2) is marked ``proxy``
with what differs: its figure is the family's step time, not its own. Source-only recipes (``source_only``,
``snr``) have no family here and are listed without hours.

One GPU against four under ``torchrun --nproc_per_node=4`` (what ``udalib.recipes.data_parallel_summary`` states):
each process draws its own batch of the recipe's ``batch_size`` and the gradients are averaged, so a step keeps the
per-GPU batch and updates on 4x the images. Assumed: a step takes as long on each of four GPUs as on one (the
gradient all-reduce, about 170 MB per step for ResNet-101, is not measured here). Then

* ``hours_4gpu_recipe_steps``: the recipe's steps as written: the same hours as one GPU, 4x the images seen;
* ``hours_4gpu_same_images``: ``--set steps=<steps // 4>`` (the images one GPU sees): a quarter of the training
  hours. The pseudo-labelling passes do not shrink: every process labels the whole target set.

    python benchmarks/project_hours.py benchmarks/results/method_families_cuda.csv

Writes ``project_hours_<device>.csv`` and ``.md`` beside the input (``--out`` for another folder).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import pandas as pd

from udalib.experiment import parse_spec
from udalib.recipes import available
from udalib.recipes import load_recipe as _load_recipe

WORLD = 4
load_recipe = functools.lru_cache(maxsize=None)(_load_recipe)  # read-only here: each file checked once
FAMILY_OF_METHOD = {  # method -> the measured family whose step stands for it
    "maxsquare": "maxsquare_iw_multi", "maxsquare_iw": "maxsquare_iw_multi", "maxsquare_iw_multi": "maxsquare_iw_multi",
    "minent": "maxsquare_iw_multi", "adaptsegnet": "adaptsegnet_multi", "adaptsegnet_multi": "adaptsegnet_multi",
    "snr_maxsquare": "snr_ms", "clustered_embeddings": "clustering", "cbst": "cbst", "mlsl": "mlsl",
    "dacs": "dacs", "dacs_mic": "dacs_mic",
}
TRAIN_IMAGES = {("cityscapes", "train"): 2975}  # target sets a pass labels (the recipes' comments: 2975 images)
COLUMNS = ("recipe", "method", "model", "steps", "batch", "family", "basis", "seconds_per_step", "rounds",
           "target_images", "pass_s_per_target_image", "train_hours_1gpu", "pass_hours", "hours_1gpu",
           "hours_4gpu_recipe_steps", "hours_4gpu_same_images")


def differences(exp, family_row: pd.Series) -> list[str]:
    """What differs between recipe ``exp`` and the recipe the family was measured on."""
    measured = load_recipe(family_row["recipe"])
    diffs = [f"method {exp.method}" if exp.method != measured.method else "",
             f"model {exp.model}" if exp.model != measured.model else "",
             f"batch {exp.batch_size}" if exp.batch_size != measured.batch_size else "",
             f"source {exp.source}" if parse_spec(exp.source, "train")[2] != parse_spec(measured.source, "train")[2]
             else "",
             f"target {exp.target}" if exp.target and measured.target and parse_spec(exp.target, "train")[2]
             != parse_spec(measured.target, "train")[2] else "",
             "method arguments" if exp.method == measured.method and (exp.preset, exp.method_args)
             != (measured.preset, measured.method_args) else ""]
    return [d for d in diffs if d]


def project(families: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe: hours on one GPU and on four (see the module docstring)."""
    ok = families[families["status"] == "ok"].set_index("family")
    rows = []
    for name in available():
        exp = load_recipe(name)
        family = FAMILY_OF_METHOD.get(exp.method)
        row = dict.fromkeys(COLUMNS, "")
        row.update(recipe=name, method=exp.method, model=exp.model, steps=exp.steps, batch=exp.batch_size,
                   family=family or "")
        if family is None:
            row["basis"] = "not measured: source-only training has no family in method_families.py"
        elif family not in ok.index:
            row["basis"] = f"not measured: family {family} has no successful row"
        else:
            f = ok.loc[family]
            diffs = differences(exp, f) if f["recipe"] != name else []
            row["basis"] = "measured (this recipe)" if f["recipe"] == name else (
                "proxy: " + ("; ".join(diffs) if diffs else "same sizes and model, other recipe"))
            seconds = float(f["seconds_per_step"])
            train = exp.steps * seconds / 3600
            passes = 0.0
            if exp.method in ("cbst", "mlsl"):
                cfg = exp.method_config
                dataset, split, _ = parse_spec(exp.target, "train")
                images = TRAIN_IMAGES.get((dataset, split))
                per_image = float(f["pass_s_per_target_image"])
                if images is None:
                    raise ValueError(f"recipe {name}: the size of target set {exp.target} is not known here: "
                                     "add it to TRAIN_IMAGES")
                passes = cfg.rounds * images * per_image / 3600
                row.update(rounds=cfg.rounds, target_images=images, pass_s_per_target_image=per_image,
                           pass_hours=round(passes, 2))
            row.update(seconds_per_step=seconds, train_hours_1gpu=round(train, 2), hours_1gpu=round(train + passes, 2),
                       hours_4gpu_recipe_steps=round(train + passes, 2),
                       hours_4gpu_same_images=round((exp.steps // WORLD) * seconds / 3600 + passes, 2))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def markdown(table: pd.DataFrame) -> str:
    head = ["recipe", "steps x batch", "basis", "s/step", "pass hours", "hours, 1 GPU",
            "hours, 4 GPUs (recipe steps, 4x images)", "hours, 4 GPUs (steps / 4, same images)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        lines.append("| " + " | ".join(str(v) for v in (
            r.recipe, f"{r.steps} x {r.batch}", r.basis, r.seconds_per_step, r.pass_hours or "-", r.hours_1gpu or "-",
            r.hours_4gpu_recipe_steps or "-", r.hours_4gpu_same_images or "-")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families_csv", type=Path, help="method_families_<device>.csv of benchmarks/method_families.py")
    p.add_argument("--out", type=Path, default=None, help="folder of the outputs (default: the input's folder)")
    args = p.parse_args(argv)
    if not args.families_csv.is_file():
        p.error(f"{args.families_csv} does not exist: run benchmarks/method_families.py first (it writes "
                "method_families_<device>.csv)")
    families = pd.read_csv(args.families_csv)
    missing = {"family", "recipe", "status", "seconds_per_step", "pass_s_per_target_image",
               "size_fraction", "device"} - set(families.columns)
    if missing:
        p.error(f"{args.families_csv} lacks the columns {', '.join(sorted(missing))}: give the CSV that "
                "benchmarks/method_families.py writes")
    table = project(families)
    suffix = args.families_csv.stem.removeprefix("method_families_") or "cpu"
    stem = (args.out or args.families_csv.parent) / f"project_hours_{suffix}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(stem.with_suffix(".csv"), index=False)
    sizes = sorted(set(families["size_fraction"]))
    device = next((d for d in families["device"] if isinstance(d, str) and d), "unknown device")
    caveat = "" if sizes == [1.0] else (f" **Measured at {', '.join(map(str, sizes))} x the recipe sizes, not the "
                                        "full sizes: these hours are not the recipes' hours.**")
    header = (f"Hours per recipe on {device}, from {args.families_csv.name} (step times on synthetic images, random "
              f"init). 4 GPUs: torchrun with the per-GPU batch kept, a step assumed as long as on one GPU "
              f"(all-reduce not measured); pseudo-labelling passes are not split between processes.{caveat}")
    stem.with_suffix(".md").write_text(header + "\n\n" + markdown(table) + "\n")
    print(header + "\n\n" + markdown(table))
    print(f"\nwrote {stem}.csv and {stem}.md")
    bad = [v for v in table["hours_1gpu"] if v != "" and not math.isfinite(float(v))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
