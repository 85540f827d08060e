"""Candidate composites for ``minicity:target``, each measured with *every* row of the standard table.

The design study (``minicity_design_study.py``) scores a few rows on ``target-<factors>`` domains. This script goes
one step further for a candidate composite: in this process it makes ``minicity:target`` that composite (the
source, its splits and sizes unchanged), then runs ``benchmarks/minicity_table.py`` in a private data and runs
home, so source-only, AdaBN, the oracle, every method and every control are trained and scored exactly as for the
standard table, on the candidate's target. The shipped generator is not changed; the candidate's images live
only in that home.

    python benchmarks/minicity_candidates.py palette+texture --seeds 0 1 2 --home /tmp/candidates
    python benchmarks/minicity_candidates.py --summarize benchmarks/results/minicity_candidates.csv

Results: ``benchmarks/results/minicity_candidates.csv`` (one row per candidate, method and seed) and ``.md``
(each method's margin over the better of AdaBN and its lambda = 0 control, ``udalib.zoo.CONTROLS``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"


def margins(df: pd.DataFrame) -> str:
    """Per candidate: each method's mean, its margin over max(AdaBN, its control) per seed, and the gap rows."""
    from udalib import zoo

    lines = []
    for candidate, part in df.groupby("candidate", sort=False):
        t = part.pivot(index="method", columns="seed", values="target_miou")
        seeds = " ".join(map(str, t.columns))
        so, ab, orc = (t.loc[r].mean() for r in ("source_only", "adabn", "oracle"))
        lines += [f"## `{candidate}`, seeds {seeds}", "",
                  f"source-only {so:.1f} ({100 * so / orc:.0f} % of the oracle, {orc:.1f}); AdaBN {ab:.1f} "
                  f"({ab - so:+.1f}); SNR on source alone {t.loc['snr'].mean():.1f} ({t.loc['snr'].mean() - so:+.1f})",
                  "", "| method | mIoU | − max(AdaBN, control) | std | seeds ahead | seeds ≥ +2 |",
                  "|---|---|---|---|---|---|"]
        for method, (control, adabn) in zoo.CONTROLS.items():
            d = zoo.margin_over_controls(t.loc[method], t.loc[adabn], t.loc[control])
            lines.append(f"| {method} | {t.loc[method].mean():.1f} | {d.mean():+.1f} | {d.std():.1f} | "
                         f"{int((d > 0).sum())}/{len(d)} | {int((d >= 2).sum())}/{len(d)} |")
        lines.append("")
    return "\n".join(lines)


OVERVIEW_METHODS = ("minent", "maxsquare", "maxsquare_iw_multi", "adaptsegnet_multi", "clustered_embeddings", "cbst",
                    "snr_maxsquare")


def overview(df: pd.DataFrame, seeds=None, methods=OVERVIEW_METHODS) -> dict:
    """One candidate's rows (``df`` of one candidate) on ``seeds`` (default: all) in one line: source-only, AdaBN
    and oracle means, and each of ``methods``' margin over max(AdaBN, its control), per seed, averaged."""
    from udalib import zoo
    from udalib.results import margin_over_controls, over_seeds, per_seed

    if seeds is not None:
        df = df[df.seed.isin(list(seeds))]
    t = per_seed(df, "target_miou", "method").unstack("seed")
    means = over_seeds(df, "target_miou", "method")["mean"]
    out = {r: float(means[r]) for r in ("source_only", "adabn", "oracle")}
    for method in methods:
        control, adabn = zoo.CONTROLS[method]
        margin = margin_over_controls(t.loc[method], t.loc[adabn], t.loc[control]).rename("margin").reset_index()
        out[method] = float(over_seeds(margin.assign(method=method), "margin", "method").loc[method, "mean"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("factors", nargs="?", help="the candidate composite, e.g. palette+texture")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--home", help="folder for the candidate's data and runs (required unless --summarize)")
    p.add_argument("--out", help="the candidate's table (default: HOME/table.csv)")
    p.add_argument("--summarize", nargs="+", metavar="CSV", help="print (and write .md beside the first) margins")
    args = p.parse_args(argv)
    if args.summarize:
        df = pd.concat([pd.read_csv(f) for f in args.summarize], ignore_index=True)
        text = margins(df)
        Path(args.summarize[0]).with_suffix(".md").write_text(
            "# Candidate MiniCity targets, every row of the standard table (mIoU % as trained)\n\n" + text)
        print(text)
        return 0
    if not args.factors or not args.home:
        p.error("give the candidate's factors and --home, e.g. palette+texture --home /tmp/candidates")
    home = Path(args.home).resolve()
    os.environ["UDALIB_DATA"], os.environ["UDALIB_RUNS"] = str(home / "data"), str(home / "runs")

    from udalib.data import minicity as mc

    factors = tuple(args.factors.split("+"))
    mc.TARGET_FACTORS = factors
    mc.TARGET_LOOK, mc.TARGET_SCENE = mc.compose("target", factors)  # raises on an unknown factor
    mc.LOOKS["target"], mc.SCENES["target"] = mc.TARGET_LOOK, mc.TARGET_SCENE
    sys.path.insert(0, str(Path(__file__).parent))
    import minicity_table

    out = Path(args.out or home / "table.csv")
    code = minicity_table.main(["--seeds", *map(str, args.seeds), "--out", str(out)])
    df = pd.read_csv(out)
    df.insert(0, "candidate", args.factors)
    df.to_csv(out, index=False)
    print(margins(df))
    return code


if __name__ == "__main__":
    sys.exit(main())
