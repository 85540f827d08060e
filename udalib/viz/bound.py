"""Ben-David et al.'s bound measured on MiniCity, as tables and figures (notebook 02): the terms per shift factor
(``benchmarks/domain_distance.py``, :mod:`udalib.eval.domain_distance`) read against the atlas's outcomes
(``benchmarks/minicity_atlas.py``)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..eval.domain_distance import relation_verdict, spearman, spearman_critical
from ..results import ATLAS_TABLE, control_margins

DISTANCE_TABLE = ATLAS_TABLE.with_name("domain_distance.csv")
DISTANCES = {"pad_image": "PAD per image", "pad_pixel": "PAD per cell"}


def load_distances(path: str | os.PathLike | None = None):
    """``benchmarks/results/domain_distance.csv``: one row per (seed, factor)."""
    import pandas as pd

    path = DISTANCE_TABLE if path is None else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {path}; run `python benchmarks/domain_distance.py` to write it")
    # a row measured twice (two processes on the same seed) is the same measurement: keep one
    return pd.read_csv(path).drop_duplicates(["seed", "factor"], keep="last").reset_index(drop=True)


def factor_outcomes(atlas=None, test_time: tuple[str, ...] = ("tent", "bn_alpha")):
    """The atlas per (seed, factor): ``source-only mIoU`` on the factor's val split, ``AdaBN gain`` (AdaBN minus
    source-only, points), each method's margin over max(AdaBN, its lambda = 0 control) (a column per method) and
    ``mean margin``, the mean over the methods that train with source batches (all but ``test_time``)."""
    import pandas as pd

    if atlas is None:
        atlas = pd.read_csv(ATLAS_TABLE)
    margins = control_margins(atlas, by=("factor",)).pivot_table(index=["seed", "factor"], columns="method",
                                                                  values="margin")
    base = atlas.pivot_table(index=["seed", "factor"], columns="method", values="target_miou")
    from ..zoo import CONTROLS

    margins = margins[[m for m in CONTROLS if m in margins.columns]]  # the atlas's order of the methods
    trained = [m for m in margins.columns if m not in test_time]
    out = pd.DataFrame({"source-only mIoU": base["source_only"], "AdaBN gain": base["adabn"] - base["source_only"],
                        "mean margin": margins[trained].mean(axis=1)})
    return out.join(margins)


def rank_relation(distances, outcomes, distance_cols=tuple(DISTANCES), outcome_cols=None):
    """Spearman's rho between a distance and an outcome over the factors, seed by seed (the random seeds both tables
    have), then its mean and standard deviation over the seeds and the verdict in words
    (:func:`~udalib.eval.domain_distance.relation_verdict`, at the two-sided 5 % critical value for the number of
    factors). One row per (distance, outcome)."""
    import pandas as pd

    table = distances.set_index(["seed", "factor"])
    joined = table[list(distance_cols)].join(outcomes, how="inner")
    outcome_cols = list(outcomes.columns) if outcome_cols is None else list(outcome_cols)
    seeds = sorted(joined.index.get_level_values("seed").unique())
    n = joined.groupby(level="seed").size().min()
    critical = spearman_critical(int(n))
    rows = []
    for d in distance_cols:
        for o in outcome_cols:
            rhos = [spearman(joined.loc[s, d], joined.loc[s, o]) for s in seeds]
            rows.append({"distance": DISTANCES.get(d, d), "outcome": o, **{f"rho seed {s}": r for s, r in
                                                                         zip(seeds, rhos)},
                         "rho mean": float(np.mean(rhos)), "rho std": float(np.std(rhos, ddof=1)) if len(rhos) > 1
                         else float("nan"), "verdict": relation_verdict(rhos, critical)})
    out = pd.DataFrame(rows).set_index(["distance", "outcome"])
    out.attrs.update(critical=critical, factors=int(n), seeds=seeds)
    return out


def bound_bars(terms, title: str = "the bound's terms per shift factor, linear classifiers on source features"
               ) -> Figure:
    """Per factor (rows of ``terms``, one seed): the right-hand side of the bound stacked (the source-only probe's
    source error, half the per-cell PAD, lambda) beside its left-hand side, the source-only probe's target error."""
    x = np.arange(len(terms))
    fig, ax = plt.subplots(figsize=(1.0 * len(terms) + 3, 3.6))
    bottom = np.zeros(len(terms))
    for col, label, scale in (("probe_source", "ε_S(h_S): source error", 1.0),
                              ("pad_pixel", "½ PAD (per cell)", 0.5), ("lambda", "λ = ε_S(h*) + ε_T(h*)", 1.0)):
        v = scale * terms[col].to_numpy(float)
        ax.bar(x - 0.2, v, 0.4, bottom=bottom, label=label)
        bottom += v
    ax.bar(x + 0.2, terms["probe_target"], 0.4, color="black", label="ε_T(h_S): target error (left-hand side)")
    ax.set_xticks(x, list(terms.index), rotation=30, ha="right")
    ax.set_xlabel("target domain (shift factor)")
    ax.set_ylabel("error rate (share of pixels) / distance")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def relation_scatter(distances, outcomes, distance: str, outcome_cols) -> Figure:
    """One panel per outcome: each factor's distance (mean over seeds, bar: std) against the outcome (mean over
    seeds, bar: std), the factor's name beside its point."""
    joined = distances.set_index(["seed", "factor"])[[distance]].join(outcomes[list(outcome_cols)], how="inner")
    g = joined.groupby(level="factor")
    mean, std = g.mean(), g.std()
    fig, axes = plt.subplots(1, len(outcome_cols), figsize=(4.2 * len(outcome_cols), 3.6), squeeze=False)
    for ax, o in zip(axes[0], outcome_cols):
        ax.errorbar(mean[distance], mean[o], xerr=std[distance], yerr=std[o], fmt="o", capsize=2)
        for k, f in enumerate(mean.sort_values(o).index):  # neighbours in y: labels above and below in turn
            ax.annotate(f, (mean.loc[f, distance], mean.loc[f, o]), fontsize=8, xytext=(4, 3 if k % 2 else -9),
                        textcoords="offset points")
        ax.set_xlabel(f"{DISTANCES.get(distance, distance)} (0: indistinguishable, 2: separable)")
        ax.set_ylabel(f"{o} (mIoU points)" if "mIoU" not in o else f"{o} (%)")
        ax.axhline(0, color="grey", lw=0.5)
    fig.suptitle("domain distance against what the atlas measured, mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def rho_heatmap(relation, title: str = "Spearman ρ over the factors, mean over seeds") -> Figure:
    """``rank_relation``'s mean rho as a distance x outcome heat map (diverging, -1 to 1), each cell "mean ± std"."""
    wide = relation["rho mean"].unstack("outcome")
    spread = relation["rho std"].unstack("outcome").reindex_like(wide)
    order = [o for o in dict.fromkeys(relation.index.get_level_values("outcome"))]
    wide, spread = wide[order], spread[order]
    fig, ax = plt.subplots(figsize=(0.9 * wide.shape[1] + 3, 0.6 * wide.shape[0] + 2.2))
    im = ax.imshow(wide.to_numpy(float), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    for i in range(wide.shape[0]):
        for j in range(wide.shape[1]):
            ax.text(j, i, f"{wide.iat[i, j]:+.2f}\n±{spread.iat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(wide.shape[1]), list(wide.columns), rotation=35, ha="right")
    ax.set_yticks(range(wide.shape[0]), list(wide.index))
    ax.set_xlabel("outcome measured by the atlas")
    ax.set_ylabel("distance")
    fig.colorbar(im, ax=ax, label="Spearman ρ", shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
