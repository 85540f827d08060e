"""The results API: the run store and the benchmark CSVs as tables, one rule for each step.

Every training run writes a run folder (:mod:`udalib.experiment`), whoever started it: a notebook, papermill,
``python -m udalib train``, torchrun. Nothing here has to be told about a run; :func:`load_runs` finds it,
:func:`group_runs` names it (the one naming rule of a table row) and puts it next to its other seeds, and
:func:`runs_frame` turns the runs into a tidy table (one line per run, evaluation set and BatchNorm statistics).
:func:`over_seeds` is the one grouping over seeds (mean, sample standard deviation, number of seeds, seeds ahead and
the per-seed values) that every table uses: :func:`leaderboard` and :func:`selection_board` (notebook 11, the
comparison widgets), ``python -m udalib table``, the benchmark summaries (:func:`benchmark_summary`,
:func:`atlas_margins`, :func:`claim_verdicts`, :func:`selection_summary`, ``benchmarks/*.py``) and CrossCity
(:mod:`udalib.crosscity`). The margin over the controls is :func:`margin_over_controls` (per seed:
:func:`control_margins`). Figures of these tables are drawn by :mod:`udalib.viz`.

The original papers' full-scale numbers (:data:`REPORTED`) are *as reported* by the papers and READMEs
(``ZJULearning/MaxSquareLoss``,
``wasidennis/AdaptSegNet``, ``engrjavediqbal/udass-leaderboard``), not reproduced here.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import paths
from .data.labels import CITYSCAPES_CLASSES, get_class_set
from .experiment import CONFIG, Run, group_key, is_finished, load_run, selection_dataset, split_target_bn, stale_reason
from .zoo import CONTROLS, MEAN_TEACHER_CONTROLS, MEAN_TEACHER_SCORE, margin_over_controls

__all__ = ["ATLAS_TABLE", "BENCHMARK_TABLE", "CLAIMS", "FRAME_COLUMNS", "Groups", "REPORTED", "SELECTION_TABLE",
           "atlas_case_table", "atlas_margins", "benchmark_summary", "board", "case_table", "claim_verdicts",
           "claims_report", "class_iou_long", "class_iou_table", "class_set_miou", "control_margins", "factor_cases",
           "group_runs", "is_stale", "leaderboard", "load_runs", "load_store", "margin_over_controls", "over_seeds",
           "per_seed", "reported_table", "runs_frame", "seed_free_key", "selection_board", "selection_summary",
           "selections", "stale_why", "with_spread", "works_and_breaks"]

Groups = Mapping[str, Sequence[Run]]  # display name -> the runs of one experiment, one per seed
KEY_STALE = "its folder key is not its config's key today (trained with other preset values)"


# ------------------------------------------------------------------------------------------ grouping over seeds
def per_seed(df, value: str = "miou", by: str | Sequence[str] = ("row",), *, seed: str = "seed"):
    """One value per group and seed: the mean of ``value`` over the lines of ``df`` that share ``by`` and ``seed``
    (two run folders of one seed count once, their runs averaged). Lines with a non-empty ``stale`` column (a stale
    run, :func:`stale_why`) are left out. A Series indexed by ``(*by, seed)``, in the order the groups first
    appear; NaN where a seed has no value."""
    by = [by] if isinstance(by, str) else list(by)
    if "stale" in df.columns:
        df = df[df["stale"].fillna("").astype(str) == ""]
    return df.groupby([*by, seed], sort=False)[value].mean()


def over_seeds(df, value: str = "miou", by: str | Sequence[str] = ("row",), *, seed: str = "seed"):
    """Group ``df`` (long: one line per run, or per run and anything else in ``by``) over seeds: the one grouping
    over seeds of every table.

    Per group of ``by``: ``mean``, ``std`` (sample standard deviation, ddof 1; NaN for one seed), ``n`` (seeds with
    a value), ``ahead`` (seeds whose value is above 0: for differences and margins), ``seeds`` and ``values`` (tuples:
    seed numbers and their values, as :func:`per_seed` gives them: the runs of one seed averaged, stale runs left
    out, seeds without a value skipped). Indexed by ``by``, in the order the groups first appear; a group whose
    seeds have no value is not there.
    """
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    values = per_seed(df, value, by, seed=seed).dropna()
    columns = ["mean", "std", "n", "ahead", "seeds", "values"]
    if values.empty:
        index = pd.MultiIndex.from_tuples([], names=by) if len(by) > 1 else pd.Index([], name=by[0])
        return pd.DataFrame(columns=columns, index=index)
    g = values.groupby(level=by if len(by) > 1 else by[0], sort=False)
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count(),
                        "ahead": g.agg(lambda v: int((v > 0).sum())),
                        "seeds": g.agg(lambda v: tuple(int(s) for s in v.index.get_level_values(seed))),
                        "values": g.agg(lambda v: tuple(float(x) for x in v))})
    return out[columns]


# ------------------------------------------------------------------------------------------ the run store
def stale_why(run: Run, runs: Mapping[str, Path] | None = None, *, _memo: dict | None = None) -> str:
    """Why a run's numbers are not those of its config today, or ``""``: a run whose init weights changed after it
    started (:func:`udalib.experiment.stale_reason`; run folder names looked up in ``runs``, name -> folder,
    first), or a run folder named ``<method>-s<seed>-<key>`` whose key is no longer its config's key.

    The key hashes the *resolved* method config (paper defaults, then preset, then overrides), so such a run was
    trained with other preset values (an older udalib). Checkpoint-or-train would not reuse either kind. Folders
    named otherwise (``run_dir=...``) are never stale by their key.
    """
    return stale_reason(run.dir, runs, _memo={} if _memo is None else _memo) or (KEY_STALE if _key_is_stale(run)
                                                                                    else "")


def is_stale(run: Run, runs: Mapping[str, Path] | None = None) -> bool:
    """True for a stale run (:func:`stale_why`)."""
    return stale_why(run, runs) != ""


def _key_is_stale(run: Run) -> bool:
    if not re.fullmatch(rf"{re.escape(run.config.method)}-s{run.config.seed}-[0-9a-f]{{10}}", run.name):
        return False
    try:
        return run.config.name != run.name
    except (TypeError, ValueError, KeyError):  # its method or its method arguments no longer exist
        return True


def load_runs(root: str | os.PathLike | None = None, *, stale: bool = False, on_error=None) -> list[Run]:
    """Every finished run folder (:func:`udalib.experiment.is_finished`) with a ``config.json`` under ``root``
    (default: ``runs/``), without the stale ones (:func:`stale_why`) unless ``stale`` (the folders a stale run was
    moved to, ``<name>.stale-<time>``, are stale too). A folder this udalib cannot read is skipped, and ``on_error``
    (default: one warning for all of them) gets a one-line message naming it."""
    root = Path(root) if root is not None else paths.runs_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {root} does not exist: train something first (the notebooks, or "
                                "`python -m udalib train`), or point UDALIB_RUNS at the folder that holds the runs")
    runs, unreadable = [], []
    for cfg in sorted(root.glob(f"**/{CONFIG}")):
        if is_finished(cfg.parent):
            try:
                runs.append(load_run(cfg.parent))
            except (TypeError, ValueError, KeyError, OSError) as exc:  # written by another udalib version
                if on_error is not None:
                    on_error(f"skipped {cfg.parent}: {' '.join(str(exc).split())}")
                unreadable.append(f"{cfg.parent.name} ({exc})")
    if unreadable and on_error is None:
        warnings.warn(f"skipped {len(unreadable)} run folders this udalib cannot read: {'; '.join(unreadable)}",
                      stacklevel=2)
    if stale:
        return runs
    folders, memo = {r.name: r.dir for r in runs}, {}
    return [r for r in runs if not stale_why(r, folders, _memo=memo)]


def seed_free_key(run: Run, by_name: Mapping[str, Run]) -> str:
    """:func:`udalib.experiment.group_key` of the run, with the runs ``by_name`` (folder name -> Run) as the inits
    it looks up: the seeds of one experiment share it, adaptation runs from the source run of their own seed too."""
    return group_key(run.config, {name: r.config for name, r in by_name.items()})


def _settings(run: Run, by_name: Mapping[str, Run]) -> dict[str, str]:
    """The run's config as flat ``name -> value`` strings (method and model arguments one by one, the init run by
    its label and steps), for telling experiments apart by name."""
    c = run.config
    flat = {k: str(v) for k, v in asdict(c).items() if k not in ("seed", "device", "label", "init", "method_args",
                                                                  "model_args", "evaluate_on")}
    flat |= {k: str(v) for k, v in {**c.model_args, **c.method_args}.items()}
    init = by_name.get(c.init)
    flat["from"] = f"{init.config.label or init.config.method} ({init.config.steps} steps)" if init else str(c.init)
    return flat


def _distinct_names(label: str, families: list[list[Run]], by_name: Mapping[str, Run]) -> list[str]:
    """Names for experiments that share a label: the label and the settings in which they differ (steps first)."""
    if len(families) == 1:
        return [label]
    settings = [_settings(rs[0], by_name) for rs in families]
    keys = sorted({k for s in settings for k in s}, key=lambda k: (k != "steps", k))
    differ = [k for k in keys if len({s.get(k, "default") for s in settings}) > 1]
    names = [" · ".join([label, *(f"{k} {s.get(k, 'default')}" for k in differ)]) for s in settings]
    return [n if names.count(n) == 1 else f"{n} [{rs[0].name}]" for n, rs in zip(names, families)]


def group_runs(runs: Sequence[Run], *, exclude: Sequence[Run] = ()) -> dict[str, list[Run]]:
    """Group runs over seeds: ``{row name: [runs sorted by seed]}``, one entry per experiment (the runs that share
    :func:`udalib.experiment.group_key`, the inits looked up among ``runs``).

    The one naming rule of a table row: the run's label (or its method); experiments that share a label also show
    the settings in which they differ (e.g. ``maxsquare · steps 60``, ``maxsquare · target minicity:rome``), and
    those that differ in none the folder name of their first run. Runs in ``exclude`` (compared by folder) are
    left out, e.g. the ones a notebook already shows under its own names.
    """
    by_name = {r.name: r for r in runs}
    configs = {name: r.config for name, r in by_name.items()}
    skip = {Path(r.dir).resolve() for r in exclude}
    families: dict[str, list[Run]] = {}
    for r in runs:
        if Path(r.dir).resolve() not in skip:
            families.setdefault(group_key(r.config, configs), []).append(r)
    by_label: dict[str, list[list[Run]]] = {}
    for rs in families.values():
        by_label.setdefault(rs[0].config.label or rs[0].config.method, []).append(rs)
    groups = {}
    for label, fams in by_label.items():
        for name, rs in zip(_distinct_names(label, fams, by_name), fams):
            groups[name] = sorted(rs, key=lambda r: r.config.seed)
    return dict(sorted(groups.items()))


def class_set_miou(scores, class_set: str | int = "19") -> float:
    """Mean IoU (%) of :class:`~udalib.eval.metrics.Scores` over a class set ("19", "16" or "13"), by class name.

    Classes of the set that the scores leave NaN (absent from labels and predictions) or do not have are skipped,
    as in the originals' ``nanmean``; for the 19-class set of a 19-class run this is ``scores.miou``.
    """
    iou = dict(zip(scores.class_names, scores.iou))
    values = [iou[c] for c in get_class_set(class_set).names if c in iou and not math.isnan(iou[c])]
    return float(np.mean(values)) if values else math.nan


FRAME_COLUMNS = ["row", "run", "method", "label", "seed", "steps", "target", "adabn", "evaluated_on", "target_bn",
                 "miou", "seconds", "stale"]


def runs_frame(groups: Groups, *, class_set: str | int | None = None, stale: Mapping[str, str] | None = None):
    """The runs of ``groups`` (``{row name: runs}``, :func:`group_runs`) as a tidy DataFrame: one line per (run,
    evaluation set, BatchNorm statistics), the columns of :data:`FRAME_COLUMNS` and one per selection rule.

    ``row`` is the group's name; ``evaluated_on`` the dataset spec; ``target_bn`` whether the scores were taken
    after re-estimating BatchNorm statistics on target images (an AdaBN run, ``adabn``, has no such line: its
    scores already are); ``miou`` the mIoU (%) over ``class_set`` (:func:`class_set_miou`; ``None``: the run's own
    mIoU); ``seconds`` the training time; ``stale`` why the run is stale (``stale``, run name -> reason; empty
    for the others). The columns ``last``, ``validator:im`` and ``target labels`` hold the mIoU of the step each
    selection rule picked (:mod:`udalib.train.select`) on the line of the evaluation set it was scored on (runs
    trained with ``select_every``), NaN elsewhere.
    """
    import pandas as pd

    from .train.select import RULE_LABELS

    stale = stale or {}
    lines = []
    for name, runs in groups.items():
        for r in runs:
            try:
                selected_on = selection_dataset(r.config) if r.selections else None
            except ValueError:
                selected_on = None
            for key, s in r.scores.items():
                spec, target_bn = split_target_bn(key)
                lines.append({
                    "row": name, "run": r.name, "method": r.config.method,
                    "label": r.config.label or r.config.method, "seed": r.config.seed, "steps": r.config.steps,
                    "target": r.config.target, "adabn": bool(r.config.adabn), "evaluated_on": spec,
                    "target_bn": target_bn, "miou": s.miou if class_set is None else class_set_miou(s, class_set),
                    "seconds": s.protocol.get("train_seconds"), "stale": stale.get(r.name, ""),
                    **{rule: r.selected_miou(rule) if spec == selected_on and not target_bn else math.nan
                       for rule in RULE_LABELS}})
    frame = pd.DataFrame(lines, columns=[*FRAME_COLUMNS, *RULE_LABELS])
    return frame.astype({"miou": float, "seconds": float, "adabn": bool, "target_bn": bool})


def load_store(root: str | os.PathLike | None = None, *, class_set: str | int | None = None, on_error=None):
    """Every finished run under ``root`` (default: ``runs/``) as :func:`runs_frame`'s tidy table, named by
    :func:`group_runs` over the runs that are not stale; the stale runs (:func:`stale_why`) are there too, named
    among themselves, with their reason in ``stale``: :func:`over_seeds` leaves them out of every mean."""
    runs = load_runs(root, stale=True, on_error=on_error)
    folders, memo = {r.name: r.dir for r in runs}, {}
    why = {r.name: stale_why(r, folders, _memo=memo) for r in runs}
    fresh = group_runs([r for r in runs if not why[r.name]])
    old = group_runs([r for r in runs if why[r.name]])
    import pandas as pd

    return pd.concat([runs_frame(fresh, class_set=class_set), runs_frame(old, class_set=class_set, stale=why)],
                     ignore_index=True)


def _select(runs: Sequence[Run], seeds: Sequence[int] | None) -> list[Run]:
    return [r for r in runs if seeds is None or r.config.seed in seeds]


def class_iou_long(groups: Groups, dataset: str = "minicity:target/val", *, class_set: str | int = "19",
                   seeds: Sequence[int] | None = None):
    """Per-class IoU (%) as a long DataFrame: one row per (name, seed, class) of the class set.

    Classes NaN in every selected run (absent from the evaluation set and never predicted) are dropped.
    """
    import pandas as pd

    names = get_class_set(class_set).names
    rows = []
    for name, runs in groups.items():
        for r in _select(runs, seeds):
            s = r.scores.get(dataset)
            if s is None:
                continue
            iou = dict(zip(s.class_names, s.iou))
            rows += [{"name": name, "seed": r.config.seed, "class": c, "IoU": iou.get(c, math.nan)} for c in names]
    df = pd.DataFrame(rows, columns=["name", "seed", "class", "IoU"])
    present = df.dropna(subset=["IoU"])["class"].unique()
    return df[df["class"].isin(present)].reset_index(drop=True)


def board(frame, dataset: str = "minicity:target/val", *, baseline: str | None = None, target_bn: bool = True,
          rows: Sequence[str] | None = None):
    """:func:`leaderboard` of a tidy table (:func:`runs_frame`, :func:`load_store`): one line per ``row`` with
    scores on ``dataset`` (in the order of ``rows``, default as they come), stale runs left out."""
    import pandas as pd

    on = frame[frame.evaluated_on == dataset]
    main = over_seeds(on[~on.target_bn], "miou")
    order = [r for r in (rows if rows is not None else dict.fromkeys(on.row)) if r in main.index]
    table = pd.DataFrame({"seeds": [", ".join(map(str, main.loc[r, "seeds"])) for r in order],
                          "mIoU": main["mean"].reindex(order).astype(float),
                          "std": main["std"].reindex(order).astype(float)}, index=pd.Index(order))
    if target_bn:  # re-estimated target statistics; an AdaBN run's own scores already are the target's
        bn = over_seeds(on[on.target_bn | on.adabn], "miou")
        table["target BN mIoU"] = bn["mean"].reindex(order).astype(float)
        table["target BN std"] = bn["std"].reindex(order).astype(float)
    if baseline is not None:
        if baseline not in table.index:
            raise ValueError(f"baseline {baseline!r} has no scores on {dataset!r}; choose one of {list(table.index)}")
        table[f"vs {baseline}"] = table["mIoU"] - table.loc[baseline, "mIoU"]
    return table


def leaderboard(groups: Groups, dataset: str = "minicity:target/val", *, class_set: str | int = "19",
                seeds: Sequence[int] | None = None, baseline: str | None = None, target_bn: bool = True):
    """mIoU (%) on ``dataset`` over ``class_set``, mean and sample standard deviation over the selected seeds
    (:func:`over_seeds`).

    One row per group that has scores on ``dataset``: ``seeds`` (which ones), ``mIoU``, ``std`` (NaN for one
    seed), with ``target_bn`` the same after re-estimating BatchNorm statistics on target images (NaN for runs
    that never saw a target image), and with a ``baseline`` (a group name) ``vs <baseline>``: the difference of
    the means.
    """
    chosen = {name: _select(runs, seeds) for name, runs in groups.items()}
    return board(runs_frame(chosen, class_set=class_set), dataset, baseline=baseline, target_bn=target_bn,
                 rows=list(groups))


def selection_board(groups: Groups, dataset: str = "minicity:target/val", *, seeds: Sequence[int] | None = None):
    """Target mIoU (%) on ``dataset`` of the checkpoint each selection rule picks, mean and sample standard deviation
    over the selected seeds: one row per group, columns ``last``, ``IM-selected (no target labels)`` and
    ``target-selected (uses target labels)`` (:data:`udalib.train.select.RULE_LABELS`), each with its ``<name> std``.

    Only runs trained with ``select_every`` (and scored on ``dataset`` there) have these numbers; other groups get
    NaN. :func:`with_spread` turns it into ``"mean ± std"`` text.
    """
    chosen = {name: _select(runs, seeds) for name, runs in groups.items()}
    return selections(runs_frame(chosen), dataset, rows=list(groups))


def selections(frame, dataset: str, *, rows: Sequence[str] | None = None):
    """:func:`selection_board` of a tidy table (:func:`runs_frame`): the picks of each rule on ``dataset``, mean
    and std over seeds, one line per ``row`` (default: those of the table)."""
    import pandas as pd

    from .train.select import RULE_LABELS

    on = frame[(frame.evaluated_on == dataset) & ~frame.target_bn]
    order = list(rows if rows is not None else dict.fromkeys(on.row))
    table = pd.DataFrame(index=pd.Index(order))
    for rule, label in RULE_LABELS.items():
        s = over_seeds(on, rule)
        table[label] = s["mean"].reindex(order).astype(float)
        table[f"{label} std"] = s["std"].reindex(order).astype(float)
    return table


def with_spread(board, digits: int = 1):
    """A :func:`leaderboard` (or :func:`selection_board`) for reading: each mean and its standard deviation as one
    ``"mean ± std"`` text column (just the mean for one seed, empty where there is no number)."""
    def pm(mean: float, std: float) -> str:
        if math.isnan(mean):
            return ""
        return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    out = board.copy()
    pairs = [("mIoU", "std"), ("target BN mIoU", "target BN std")]
    pairs += [(c, f"{c} std") for c in board.columns if f"{c} std" in board.columns and c != "target BN mIoU"]
    for mean, std in pairs:
        if mean in out:
            out[mean] = [pm(m, s) for m, s in zip(out[mean], out[std])]
            out = out.drop(columns=std)
    return out


def class_iou_table(groups: Groups, dataset: str = "minicity:target/val", *, class_set: str | int = "19",
                    seeds: Sequence[int] | None = None):
    """Per-class IoU (%), mean over the selected seeds (:func:`over_seeds`): one row per group, one column per
    class of the set."""
    df = class_iou_long(groups, dataset, class_set=class_set, seeds=seeds)
    order = [c for c in get_class_set(class_set).names if c in set(df["class"])]
    table = over_seeds(df, "IoU", by=("name", "class"))["mean"].astype(float).unstack("class")
    return table.reindex(index=[n for n in groups if n in table.index], columns=order)


# ------------------------------------------------------------------------------------------ reported numbers
# Per class, from engrjavediqbal/udass-leaderboard and AdaptSegNet's tables, and the MaxSquare README (MaxSquare
# README). GTA5 -> Cityscapes val, 19 classes, DeepLab-v2 ResNet-101 unless the backbone says otherwise.
# Keys are udalib method names (the rows of benchmarks/minicity_table.py); SNR and UDAclustering publish no numbers
# in their repositories, so they have none here.
_GTA5_PER_CLASS = {
    "source_only": (75.8, 16.8, 77.2, 12.5, 21.0, 25.5, 30.1, 20.1, 81.3, 24.6, 70.3, 53.8, 26.4, 49.9, 17.2, 25.9,
                    6.5, 25.3, 36.0),
    "adaptsegnet_multi": (86.5, 36.0, 79.9, 23.4, 23.3, 23.9, 35.2, 14.8, 83.4, 33.3, 75.6, 58.5, 27.6, 73.7, 32.5,
                          35.4, 3.9, 30.1, 28.1),
    "maxsquare_iw_multi": (89.4, 43.0, 82.1, 30.5, 21.3, 30.3, 34.7, 24.0, 85.3, 39.4, 78.2, 63.0, 22.9, 84.6, 36.4,
                           43.0, 5.5, 34.7, 33.5),
    "cbst": (88.0, 56.2, 77.0, 27.4, 22.4, 40.7, 47.3, 40.9, 82.4, 21.6, 60.3, 50.2, 20.4, 83.8, 35.0, 51.0, 15.2,
             20.6, 37.0),
    "mlsl": (89.0, 45.2, 78.2, 22.9, 27.3, 37.4, 46.1, 43.8, 82.9, 18.6, 61.2, 60.4, 26.7, 85.4, 35.9, 44.9, 36.4,
             37.2, 49.3),
}
# method -> (mIoU, what was reported, where)
REPORTED: dict[str, tuple[float, str, str]] = {
    "source_only": (36.6, "source only, R101", "AdaptSegNet paper (MaxSquare README: 36.9)"),
    "minent": (42.2, "MinEnt, R101", "MaxSquare README"),
    "maxsquare": (44.3, "MaxSquare, R101", "MaxSquare README"),
    "maxsquare_iw": (45.2, "MaxSquare+IW, R101", "MaxSquare README"),
    "maxsquare_iw_multi": (46.4, "MaxSquare+IW+Multi, R101", "MaxSquare README"),
    "adaptsegnet": (44.1, "AdaptSegNet single-level, LS-GAN, R101", "AdaptSegNet README"),
    "adaptsegnet_multi": (42.4, "AdaptSegNet multi-level, R101", "AdaptSegNet README"),
    "cbst": (46.2, "CBST, ResNet-38", "udass-leaderboard"),
    "mlsl": (49.0, "MLSL (SISC-PWL), ResNet-38", "udass-leaderboard"),
}


def reported_table():
    """The original papers' GTA5 -> Cityscapes results *as reported* (mIoU and, where published, per-class IoU)."""
    import pandas as pd

    rows = {}
    for method, (miou, what, where) in REPORTED.items():
        per_class = dict(zip(CITYSCAPES_CLASSES, _GTA5_PER_CLASS.get(method, (math.nan,) * 19)))
        rows[method] = {"as reported": what, "source": where, "mIoU": miou, **per_class}
    return pd.DataFrame.from_dict(rows, orient="index")


BENCHMARK_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "minicity_table.csv"


def benchmark_summary(rows: Sequence[str] | None = None, path: str | os.PathLike | None = None,
                      digits: int | None = 2):
    """The five-seed MiniCity table (``benchmarks/minicity_table.py`` writes it), as mean and std over seeds.

    One line per row of :data:`udalib.zoo.ALL_ROWS` (``rows`` picks and orders them): mIoU % on target val as
    trained and with target BatchNorm statistics, and, for an adaptation row, its margin over the better of its
    AdaBN row and its lambda = 0 control (:data:`udalib.zoo.CONTROLS`), the gain that only its own loss can claim:
    :func:`control_margins`, per seed, averaged over seeds. A mean-teacher row (:data:`udalib.zoo.MEAN_TEACHER_ROWS`)
    has its margin over its own controls (:data:`udalib.zoo.MEAN_TEACHER_CONTROLS`) in the target BN column
    (:data:`udalib.zoo.MEAN_TEACHER_SCORE`), the column those rows are compared in. Values rounded to ``digits``
    decimals (``None``: not rounded, for a table that rounds them itself: rounding twice can move the last digit).
    """
    import pandas as pd

    path = Path(path or BENCHMARK_TABLE)
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark table at {path}; run `python benchmarks/minicity_table.py` to write it")
    df = pd.read_csv(path)
    trained = over_seeds(df, "target_miou", "method")
    stats = pd.DataFrame({"seeds": trained["n"].astype(int), "mean": trained["mean"].astype(float),
                          "std": trained["std"].astype(float),
                          "target_bn": over_seeds(df, "target_miou_target_bn", "method")["mean"].astype(float)
                          .reindex(trained.index)})
    per_seed_margins = [control_margins(df)]
    if MEAN_TEACHER_SCORE in df.columns:  # the mean teacher's rows, in the column they are compared in
        adabn = df.method.isin({pair[1] for pair in MEAN_TEACHER_CONTROLS.values()})  # AdaBN: the same number
        scored = df.assign(**{MEAN_TEACHER_SCORE: df[MEAN_TEACHER_SCORE].where(~adabn, df["target_miou"])})
        per_seed_margins.append(control_margins(scored, controls=MEAN_TEACHER_CONTROLS, value=MEAN_TEACHER_SCORE))
    margins = over_seeds(pd.concat(per_seed_margins, ignore_index=True), "margin", "method")  # per seed, then mean
    stats["margin"] = margins["mean"].astype(float).reindex(stats.index)
    stats["seeds ahead"] = margins["ahead"].reindex(stats.index).astype("Int64")
    missing = [r for r in rows or () if r not in stats.index]
    if missing:
        raise KeyError(f"{', '.join(missing)} not in {path}; run `python benchmarks/minicity_table.py` to add it")
    out = stats.loc[list(rows)] if rows else stats
    out = out.rename(columns={"mean": "as trained", "std": "± std", "target_bn": "target BN",
                              "margin": "vs max(AdaBN, control)"})
    return out if digits is None else out.round(digits)


ATLAS_TABLE = BENCHMARK_TABLE.with_name("minicity_atlas.csv")


def _class_iou_columns() -> tuple[str, ...]:
    from .data.minicity import MINICITY_TRAINIDS

    return tuple(f"iou_{CITYSCAPES_CLASSES[i].replace(' ', '_')}" for i in MINICITY_TRAINIDS)


# the per-class IoU (%) columns of the MiniCity CSVs, one per MiniCity class (``iou_road``, ``iou_traffic_sign``, ...)
CLASS_IOU_COLUMNS = _class_iou_columns()


def class_ious(run: Run, dataset: str) -> dict[str, float]:
    """``{"iou_road": 87.31, ...}``: a run's per-class IoU (%) on ``dataset`` in the columns of
    :data:`CLASS_IOU_COLUMNS`, rounded to 2 decimals."""
    iou = run.scores[dataset].table()["IoU (%)"]
    return {col: round(float(iou[col.removeprefix("iou_").replace("_", " ")]), 2) for col in CLASS_IOU_COLUMNS}


def control_margins(df, by: Sequence[str] = (), controls: Mapping[str, tuple[str, str]] | None = None,
                    value: str = "target_miou"):
    """Each adaptation method's margin over the better of its AdaBN row and its lambda = 0 control
    (``controls``, default :data:`udalib.zoo.CONTROLS`), *per seed*: the gain that only its own loss can claim.

    ``df``: long rows with columns ``method``, ``seed``, ``value`` and the columns ``by`` (e.g. ``factor``);
    the margin is taken within each ``by`` group and seed. Returns the rows of the methods whose method and
    controls are all present, with a ``margin`` column (and the method's score as ``target_miou``).
    """
    import pandas as pd

    keys = [*by, "seed"]
    wide = df.pivot_table(index=keys, columns="method", values=value)
    out = []
    for method, pair in (CONTROLS if controls is None else controls).items():
        if method not in wide.columns or not all(c in wide.columns for c in pair):
            continue
        part = wide[list(dict.fromkeys([method, *pair]))].dropna()  # a test-time row: AdaBN is its control too
        control, adabn = pair
        margin = margin_over_controls(part[method], part[adabn], part[control])
        out.append(pd.DataFrame({"method": method, "target_miou": part[method], "margin": margin}).reset_index())
    if not out:
        return pd.DataFrame(columns=[*keys, "method", "target_miou", "margin"])
    return pd.concat(out, ignore_index=True)


ATLAS_MEAN_TEACHER_TABLE = BENCHMARK_TABLE.with_name("minicity_atlas_mean_teacher.csv")


def atlas_margins(df=None, mean_teacher: bool = False):
    """The atlas (``benchmarks/minicity_atlas.py``) as three method x factor tables: the mean margin over
    max(AdaBN, control) over seeds, its standard deviation, and "seeds ahead / seeds" (strings).

    ``mean_teacher``: the mean teacher's atlas (``benchmarks/mean_teacher_atlas.py``), its rows against their own
    controls (:data:`udalib.zoo.MEAN_TEACHER_CONTROLS`) in :data:`udalib.zoo.MEAN_TEACHER_SCORE`."""
    import pandas as pd

    table_path = ATLAS_MEAN_TEACHER_TABLE if mean_teacher else ATLAS_TABLE
    if df is None:
        if not table_path.is_file():
            script = "mean_teacher_atlas.py" if mean_teacher else "minicity_atlas.py"
            raise FileNotFoundError(f"no atlas at {table_path}; run `python benchmarks/{script}` to write it")
        df = pd.read_csv(table_path)
    controls = MEAN_TEACHER_CONTROLS if mean_teacher else CONTROLS
    m = control_margins(df, by=("factor",), controls=controls,
                        value=MEAN_TEACHER_SCORE if mean_teacher else "target_miou")
    order = [f for f in dict.fromkeys(df["factor"])]
    methods = [c for c in controls if c in set(m["method"])]
    g = over_seeds(m, "margin", ("method", "factor"))

    def table(column):
        return column.unstack("factor").reindex(index=methods, columns=order)

    ahead = g["ahead"].astype(int).astype(str) + "/" + g["n"].astype(int).astype(str)
    return table(g["mean"].astype(float)), table(g["std"].astype(float)), table(ahead)


SELECTION_TABLE = BENCHMARK_TABLE.with_name("minicity_selection.csv")


def selection_summary(df=None):
    """The checkpoints each selection rule picks (``benchmarks/minicity_table.py --select-every N`` writes
    ``minicity_selection.csv``), per row of :data:`udalib.zoo.MINICITY_ROWS` and in their order: ``seeds``, the mean
    and sample std over seeds (``<col> std``) of the target mIoU of the ``last``, the ``im``-selected and the
    ``target``-selected checkpoint, of the ``regret`` of IM selection (target-selected minus IM-selected, per
    seed) and of its ``gain`` over the last checkpoint (IM-selected minus last, per seed)."""
    import pandas as pd

    from .zoo import MINICITY_ROWS

    if df is None:
        df = pd.read_csv(SELECTION_TABLE)
    df = df.assign(regret=df["target"] - df["im"], gain=df["im"] - df["last"])
    table = pd.DataFrame({"seeds": over_seeds(df, "last", "method")["n"].astype(int)})
    for col in ("last", "im", "target", "regret", "gain"):
        s = over_seeds(df, col, "method")
        table[col] = s["mean"].astype(float)
        table[f"{col} std"] = s["std"].astype(float)
    return table.reindex([m for m in MINICITY_ROWS if m in table.index])


# Each original paper's central claim on the MiniCity table: (claim, paper, row that should win, row it should beat).
CLAIMS = (
    ("MaxSquare > MinEnt", "MaxSquare (Chen et al., ICCV 2019)", "maxsquare", "minent"),
    ("+IW > MaxSquare", "MaxSquare (Chen et al., ICCV 2019)", "maxsquare_iw", "maxsquare"),
    ("+Multi > +IW", "MaxSquare (Chen et al., ICCV 2019)", "maxsquare_iw_multi", "maxsquare_iw"),
    ("AdaptSegNet multi-level > single-level", "AdaptSegNet (Tsai et al., CVPR 2018)", "adaptsegnet_multi",
     "adaptsegnet"),
    ("SNR trained on source > source-only", "SNR (Jin et al., arXiv 2101.00588)", "snr", "source_only"),
    ("SNR-MS > MaxSquare", "SNR (Jin et al., arXiv 2101.00588)", "snr_maxsquare", "maxsquare"),
    ("clustering + orthogonality + sparsity > its IW-MaxSquare base", "Toldo et al. (WACV 2021)",
     "clustered_embeddings", "maxsquare_iw"),
    ("MLSL > CBST", "MLSL (Iqbal & Ali, WACV 2020)", "mlsl", "cbst"),
)


def claim_verdicts(df=None, claims=CLAIMS):
    """Each paper's central claim checked on the MiniCity table (``benchmarks/results/minicity_table.csv``): the
    two rows' mean ± std over seeds, the mean paired difference (same seed, same source model) with its standard
    deviation, the seeds on which the claimed winner is ahead, and a verdict. The claim *holds on MiniCity* when
    the winner is ahead on the mean and on at least all seeds but one; otherwise it *does not hold*. Rows missing
    from the table are skipped."""
    import pandas as pd

    if df is None:
        if not BENCHMARK_TABLE.is_file():
            raise FileNotFoundError(f"no benchmark table at {BENCHMARK_TABLE}; "
                                    "run `python benchmarks/minicity_table.py` to write it")
        df = pd.read_csv(BENCHMARK_TABLE)
    wide = per_seed(df, "target_miou", "method").unstack("method")  # seed x method
    out = {}
    for claim, paper, a, b in claims:
        if a not in wide.columns or b not in wide.columns:
            continue
        pair = wide[[a, b]].dropna()  # paired: only seeds both rows have
        long = pair.assign(difference=pair[a] - pair[b]).reset_index().melt(id_vars="seed", var_name="row")
        s = over_seeds(long, "value", "row")
        n, ahead = int(s.loc["difference", "n"]), int(s.loc["difference", "ahead"])
        holds = s.loc["difference", "mean"] > 0 and ahead >= max(n - 1, 1)
        out[claim] = {"paper": paper, "winner": a, "beaten": b,
                      "winner mIoU": f"{s.loc[a, 'mean']:.1f} ± {s.loc[a, 'std']:.1f}",
                      "beaten mIoU": f"{s.loc[b, 'mean']:.1f} ± {s.loc[b, 'std']:.1f}",
                      "difference": round(s.loc["difference", "mean"], 2),
                      "± std": round(s.loc["difference", "std"], 2),
                      "seeds ahead": f"{ahead}/{n}", "verdict": "holds on MiniCity" if holds else "does not hold"}
    return pd.DataFrame.from_dict(out, orient="index")


def works_and_breaks(row: str, mean=None) -> dict[str, tuple[str, float]]:
    """From the atlas (:func:`atlas_margins`, single factors only): ``{"works": (factor, margin), "breaks":
    (factor, margin)}``, the factor with the method's largest mean margin over max(AdaBN, control) and the one with
    its smallest."""
    if mean is None:
        mean = atlas_margins()[0]
    if row not in mean.index:
        raise KeyError(f"{row} is not in the atlas; run `python benchmarks/minicity_atlas.py --methods {row}`")
    single = mean.drop(columns="composite", errors="ignore").loc[row].dropna()
    return {"works": (single.idxmax(), float(single.max())), "breaks": (single.idxmin(), float(single.min()))}


def case_table(runs: Mapping[str, Run], dataset: str):
    """Per-class IoU (%) of a case's runs (:func:`udalib.zoo.case_runs`) on ``dataset``, the mIoU as the last row,
    and the last run's margin over the better of ``"AdaBN"`` and ``"control"``, class by class."""
    import pandas as pd

    table = pd.DataFrame({name: r.scores[dataset].table()["IoU (%)"] for name, r in runs.items()}).dropna(how="all")
    table.loc["mIoU"] = [r.miou(dataset) for r in runs.values()]
    method = list(runs)[-1]
    table["margin"] = margin_over_controls(table[method], table["AdaBN"], table["control"])
    return table.round(1)


def claims_report(names: Sequence[str]):
    """Notebooks 04-08: the rows of :func:`claim_verdicts` for the claims ``names`` (without the paper column)."""
    return claim_verdicts().loc[list(names)].drop(columns=["paper"])


def atlas_case_table(row: str, factor: str, df=None):
    """Per-class IoU (%) of one case read from the atlas (``benchmarks/minicity_atlas.py``'s per-class columns):
    source-only, AdaBN, the lambda = 0 control and ``row`` on ``factor``, each the mean over the atlas's seeds; the
    mIoU as the last row; and ``margin``, the method minus the better of AdaBN and the control, taken per seed and
    then averaged (so the mIoU row's margin is the atlas's margin)."""
    import pandas as pd

    if df is None:
        if not ATLAS_TABLE.is_file():
            raise FileNotFoundError(f"no atlas at {ATLAS_TABLE}; run `python benchmarks/minicity_atlas.py` to write it")
        df = pd.read_csv(ATLAS_TABLE)
    control, adabn = CONTROLS[row]
    names = {"snr" if row == "snr_maxsquare" else "source_only": "source-only", adabn: "AdaBN", control: "control",
             row: row}
    classes = [c for c in df.columns if c.startswith("iou_")]
    cases = df[(df.factor == factor) & df.method.isin(list(names))]
    if cases.empty or cases[classes].isna().any().any():
        raise ValueError(f"the atlas has no per-class rows of {row} on {factor}; run `python "
                         f"benchmarks/minicity_atlas.py --backfill-classes` (or the atlas itself) first")
    values = cases.set_index(["method", "seed"])[[*classes, "target_miou"]]
    values.columns = [c.removeprefix("iou_").replace("_", " ") for c in classes] + ["mIoU"]
    seeds = sorted(set.intersection(*(set(values.loc[m].index) for m in names)))
    per_seed = {names[m]: values.loc[m].loc[seeds] for m in names}
    table = pd.DataFrame({name: v.mean() for name, v in per_seed.items()})
    table["margin"] = margin_over_controls(per_seed[row], per_seed["AdaBN"], per_seed["control"]).mean()
    table.index.name = "class"
    return table.round(1)


def factor_cases(row: str, seed: int | None = None, **train_kwargs):
    """Notebooks 03-08, "where it works, where it breaks": the atlas's best and worst single factor for ``row``
    (:func:`works_and_breaks`), each as a per-class table of source-only, AdaBN, the lambda = 0 control and the
    method, side by side; each column group is named by the case, the factor and its atlas margin.

    ``seed=None`` reads the tables from the atlas (:func:`atlas_case_table`, mean over its seeds); a seed trains (or
    finds) that seed's four runs of each case now (:func:`udalib.zoo.case_runs`) and shows them (:func:`case_table`).
    """
    import pandas as pd

    from . import zoo

    tables = {}
    for case, (factor, margin) in works_and_breaks(row).items():
        name = f"{case}: {factor} (atlas {margin:+.1f})"
        if seed is None:
            tables[name] = atlas_case_table(row, factor)
        else:
            runs = zoo.case_runs(row, factor, seed, **train_kwargs)
            tables[name] = case_table(runs, f"{zoo.factor_domain_name(factor)}/val")
    return pd.concat(tables, axis=1)
