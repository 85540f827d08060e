"""The terms of Ben-David et al.'s bound on MiniCity, one shift factor at a time (notebook 02).

For each seed, the source model of that seed (``udalib.zoo.source_experiment``, notebook 01's run: trained on the
source alone, so one model serves every factor, as in the atlas) gives frozen features of labelled source val images
and of the val images of each single-factor domain of the atlas (``udalib.zoo.ATLAS_FACTORS``,
``minicity:target-<factor>``) and of the composite ``minicity:target``. On them
``udalib.eval.domain_distance.domain_terms`` measures the proxy A-distance (per image and per cell of the feature
grid), the joint error lambda of the best joint linear pixel classifier and the errors of the source-only linear
classifier. One row per (seed, factor) is appended to ``benchmarks/results/domain_distance.csv`` as soon as it is
measured; a rerun skips the rows already there. Notebook 02 reads the file for seeds 0-2 and checks its own seed-0
measurement against it.

    python benchmarks/domain_distance.py                    # every factor, seeds 0 1 2
    python benchmarks/domain_distance.py --seeds 0 --factors palette camera
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from udalib import zoo
from udalib.eval import domain_distance as dd
from udalib.experiment import get_or_train
from udalib.locks import append_csv_row

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "domain_distance.csv"
FACTORS = (*zoo.ATLAS_FACTORS, "composite")  # the atlas's columns, in its order
SOURCE = "minicity:source/val"
IMAGES = 100  # images per domain (source val has 100), half of them held out
CELLS = 32  # cells of the 8 x 16 feature grid per image for the pixel-level terms
TERMS = ("pad_image", "error_image", "pad_pixel", "error_pixel", "joint_source", "joint_target", "lambda",
         "probe_source", "probe_target")
COLUMNS = ("seed", "factor", "domain", *TERMS, "images", "cells", "seconds", "run")


def domain_spec(factor: str) -> str:
    """The factor's labelled val split: ``minicity:target-<factor>/val`` (the composite: ``minicity:target/val``)."""
    return zoo.factor_domain_name(factor) + "/val"


def measure(model, source: tuple, factor: str, seed: int, *, images: int = IMAGES, cells: int = CELLS) -> dict:
    """The row of ``factor``: ``domain_terms`` between the source features ``source`` (``feature_samples``' pair)
    and the factor's, with the split drawn from ``seed``."""
    x, y = dd.domain_images(domain_spec(factor), images)
    target = dd.feature_samples(model, x, y, cells=cells)
    terms = dd.domain_terms(*source, *target, seed=seed)
    return {"seed": seed, "factor": factor, "domain": zoo.factor_domain_name(factor),
            **{k: round(v, 4) for k, v in terms.items()}, "images": images, "cells": cells}


def done_rows(path: Path) -> set[tuple[int, str]]:
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {(int(r["seed"]), r["factor"]) for r in csv.DictReader(f)}


def append(path: Path, record: dict) -> None:
    """Append one row under a lock; the header goes with the first row."""
    append_csv_row(path, record, COLUMNS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factors", nargs="+", choices=FACTORS, default=list(FACTORS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    finished = done_rows(out)
    for seed in args.seeds:
        todo = [f for f in args.factors if (seed, f) not in finished]
        if not todo:
            continue
        run = get_or_train(zoo.source_experiment(seed), progress=False)
        model = run.model()
        source = dd.feature_samples(model, *dd.domain_images(SOURCE, IMAGES), cells=CELLS)
        for factor in todo:
            start = time.perf_counter()
            row = measure(model, source, factor, seed)
            append(out, {**row, "seconds": round(time.perf_counter() - start, 1), "run": run.name})
            print(f"seed {seed} {factor:11s} " + " ".join(f"{k} {row[k]:.3f}" for k in TERMS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
