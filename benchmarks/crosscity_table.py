"""The MiniCity CrossCity table: city x row mIoU over seeds, with the gains of each method per city.

One 13-class source model per seed (MiniCity's labelled photo-like split, playing Cityscapes) is adapted to each
of the four cities in turn; rows are source-only, AdaBN, the lambda = 0 control and the methods (default MaxSquare
and MaxSquare+IW, at notebook 10's defaults). Runs are shared with notebook 10 (checkpoint-or-train).

    python benchmarks/crosscity_table.py                 # seeds 0 1 2 -> benchmarks/results/crosscity_*.csv
    python benchmarks/crosscity_table.py --seeds 0 --steps 60
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from udalib import crosscity as cc

OUT = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=cc.ADAPT_STEPS, help="adaptation steps per city")
    p.add_argument("--methods", nargs="+", default=list(cc.METHODS))
    args = p.parse_args()

    t0 = time.perf_counter()
    scores = cc.transfer(lambda seed: cc.minicity_base(seed, args.steps), args.seeds, methods=args.methods,
                         source=cc.minicity_source)
    OUT.mkdir(exist_ok=True)
    suffix = "" if args.steps == cc.ADAPT_STEPS else f"_{args.steps}steps"
    scores.to_csv(OUT / f"crosscity_scores{suffix}.csv", index=False)
    lines = [f"# MiniCity CrossCity, seeds {args.seeds}, {args.steps} adaptation steps per city "
             f"({time.perf_counter() - t0:.0f} s)"]
    for bn in (False, True):
        table = cc.city_table(scores, target_bn=bn)
        table.round(2).to_csv(OUT / f"crosscity_table{'_target_bn' if bn else ''}{suffix}.csv")
        lines += ["", "mIoU (%), " + ("BatchNorm statistics of the city" if bn else "as trained"),
                  table.round(1).to_string()]
    for method in args.methods:
        lines += ["", f"{method}: mean gain per city and seeds ahead", cc.gains(scores, method).round(2).to_string()]
    text = "\n".join(lines)
    (OUT / f"crosscity_summary{suffix}.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
