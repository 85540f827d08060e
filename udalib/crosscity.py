"""CrossCity transfer: one source model, adapted to each city in turn, evaluated on every city.

Full scale it is MaxSquare's ``tools/solve_crosscity.py``: a DeepLab-v2 trained on Cityscapes with 13 classes,
adapted to one NTHU city (Rome, Rio, Tokyo, Taipei) from its 3,200 unlabelled train images and scored on its 100
labelled test images. On MiniCity the labelled photo-like split (``minicity:target/oracle``) plays Cityscapes and
the generator's four cities play NTHU; labels are mapped to the same 13 classes (MiniCity's ``pole`` is not among
them and becomes ignore).

Every city gets the controls next to the methods, so a gain can be read against the right baseline:

==================  ==========================================================================
row                 what it is
==================  ==========================================================================
``source-only``     the source model, no target image seen
``AdaBN``           the source model with BatchNorm statistics re-estimated on the city's images
``control``         the adaptation run with the target loss weight at 0 (BatchNorm statistics
                    move, the target loss does not act)
a method            e.g. ``maxsquare``, ``maxsquare_iw``: the adaptation run itself
==================  ==========================================================================

Each run is an ordinary :class:`~udalib.experiment.Experiment`, so its folder lands in the results store and
is reused by the next call (checkpoint-or-train). Taught in ``notebooks/10_crosscity_transfer.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .data.labels import CITIES
from .experiment import Experiment, Run, get_or_train
from .methods import control_args
from .results import margin_over_controls, over_seeds, per_seed

METHODS = ("maxsquare", "maxsquare_iw")
SOURCE_ONLY, ADABN, CONTROL = "source-only", "AdaBN", "control"
CONTROLS = (SOURCE_ONLY, ADABN, CONTROL)
NUM_CLASSES = 13
SOURCE_STEPS = 300  # MiniCity source model, as notebook 01's
ADAPT_STEPS = 20  # per city and method: notebook 10 (the source and 16 runs) takes about 110 s
# ZJULearning/MaxSquareLoss README, Cityscapes -> CrossCity, mIoU (%) as reported (not reproduced here)
REPORTED = {"rome": {SOURCE_ONLY: 51.0, "maxsquare": 53.9, "maxsquare_iw": 54.5},
            "rio": {SOURCE_ONLY: 48.9, "maxsquare": 52.0, "maxsquare_iw": 53.3},
            "tokyo": {SOURCE_ONLY: 47.8, "maxsquare": 49.7, "maxsquare_iw": 50.5},
            "taipei": {SOURCE_ONLY: 46.3, "maxsquare": 49.8, "maxsquare_iw": 50.6}}


def city_spec(spec: str, city: str) -> str:
    """``"nthu:rome/test@512x1024"`` with ``city="tokyo"`` -> ``"nthu:tokyo/test@512x1024"``."""
    dataset, sep, rest = spec.partition(":")
    if not sep:
        raise ValueError(f"{spec!r} names no city: expected '<dataset>:<city>[/split][@HxW]', e.g. "
                         "'nthu:rome/test@512x1024' or 'minicity:rome/val'")
    tail = rest[len(rest.split("/")[0].split("@")[0]):]
    return f"{dataset}:{city}{tail}"


def minicity_source(seed: int = 0, steps: int = SOURCE_STEPS, batch_size: int = 8,
                    cities: tuple[str, ...] = CITIES) -> Experiment:
    """MiniDeepLab, 13 classes, trained on MiniCity's labelled photo-like split (MiniCity's Cityscapes)."""
    return Experiment(seed=seed, steps=steps, batch_size=batch_size, num_classes=NUM_CLASSES,
                      source="minicity:target/oracle", evaluate_on=tuple(f"minicity:{c}/val" for c in cities),
                      label="CrossCity source (13 classes)")


def minicity_base(seed: int = 0, steps: int = ADAPT_STEPS, source: Experiment | None = None) -> Experiment:
    """The MiniCity adaptation template: MaxSquare (MiniCity preset) from ``source`` (default
    :func:`minicity_source`), targeted at a city; :class:`CrossCity` replaces the city. Like every MiniCity
    adaptation run it keeps BatchNorm running statistics of target batches only (:data:`udalib.zoo.BN_STATS`), so
    the lambda = 0 control lands on AdaBN and a method's margin over both is its own loss's work."""
    from .zoo import BN_STATS

    source = source or minicity_source(seed)
    city = source.evaluate_on[0].split(":")[1].split("/")[0]
    return replace(source, method="maxsquare", init=source.name, steps=steps, target=f"minicity:{city}", label="",
                   bn_stats=BN_STATS)


@dataclass
class CrossCity:
    """One transfer study: ``base`` is an adaptation Experiment (its ``init`` the source model, its ``target`` and
    ``evaluate_on[0]`` a city, as in the ``crosscity_*`` recipes); each city and row replace those fields."""

    base: Experiment
    cities: tuple[str, ...] = CITIES
    methods: tuple[str, ...] = METHODS
    controls: tuple[str, ...] = CONTROLS

    def __post_init__(self):
        from .methods import METHODS as REGISTRY

        self.cities, self.methods, self.controls = tuple(self.cities), tuple(self.methods), tuple(self.controls)
        unknown = [m for m in self.methods if m not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; choose among {', '.join(sorted(REGISTRY))}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ValueError(f"unknown control {bad[0]!r}; choose among {', '.join(CONTROLS)}")
        if not self.base.init:
            raise ValueError("the CrossCity base experiment needs init=<source model run or checkpoint>")
        if not self.base.target or not self.base.evaluate_on:
            raise ValueError("the CrossCity base experiment needs a target city and an evaluation set, e.g. "
                             "target='nthu:rome', evaluate_on=['nthu:rome/test@512x1024']")

    def eval_specs(self) -> tuple[str, ...]:
        return tuple(city_spec(self.base.evaluate_on[0], c) for c in self.cities)

    def experiment(self, row: str, city: str) -> Experiment:
        """The Experiment of ``row`` (a control or a method) adapted to ``city``, evaluated on every city."""
        b = replace(self.base, evaluate_on=self.eval_specs(), target=city_spec(self.base.target, city))
        if row == SOURCE_ONLY:  # scored once, on every city: it never sees a target image
            return replace(b, method="source_only", steps=0, target=None, method_args={}, label=SOURCE_ONLY)
        if row == ADABN:
            return replace(b, method="source_only", steps=0, adabn=True, method_args={}, label=ADABN)
        if row == CONTROL:  # with the weight at 0 the MaxSquare family computes the same update
            return replace(b, method_args={**b.method_args, **control_args(b.method)}, label=CONTROL)
        # the base's method_args belong to its method; another method runs with its own preset (or paper defaults)
        return replace(b, method=row, method_args=b.method_args if row == b.method else {}, label=row)

    def runs(self, **kwargs) -> dict[tuple[str, str], Run]:
        """Train (or find) every run: ``{(row, adapted_to): Run}``; source-only is keyed by every city."""
        out = {}
        rows = [r for r in self.controls if r != SOURCE_ONLY] + list(self.methods)
        if SOURCE_ONLY in self.controls:
            source = get_or_train(self.experiment(SOURCE_ONLY, self.cities[0]), **kwargs)
            out |= {(SOURCE_ONLY, c): source for c in self.cities}
        for city in self.cities:
            for row in rows:
                out[(row, city)] = get_or_train(self.experiment(row, city), **kwargs)
        return out

    def scores(self, runs: dict[tuple[str, str], Run]):
        """Long table: one row per (row, adapted_to, evaluated_on) with mIoU as trained and with target BN."""
        import pandas as pd

        records = []
        for (row, adapted), run in runs.items():
            for city, spec in zip(self.cities, self.eval_specs()):
                bn = run.scores_on(spec, target_bn=True)
                records.append({"seed": run.config.seed, "row": row,
                                "adapted_to": adapted, "evaluated_on": city, "miou": run.miou(spec),
                                "miou_target_bn": run.miou(spec) if run.config.adabn else (bn.miou if bn else None)})
        return pd.DataFrame(records)


def transfer(base_for_seed, seeds=(0,), *, cities=CITIES, methods=METHODS, controls=CONTROLS, source=None,
             progress: bool = False):
    """Run the study for each seed and return the long score table of all of them.

    ``base_for_seed(seed)`` gives the base adaptation Experiment; ``source(seed)``, if given, the source model's
    Experiment, trained first when no run folder has it (MiniCity; full scale starts from a checkpoint file).
    """
    import pandas as pd

    frames = []
    for seed in seeds:
        study = CrossCity(base_for_seed(seed), cities=cities, methods=methods, controls=controls)  # checks first
        if source is not None:
            get_or_train(source(seed), progress=progress)
        frames.append(study.scores(study.runs(progress=progress)))
    return pd.concat(frames, ignore_index=True)


def city_table(scores, *, target_bn: bool = False, order=None):
    """City x row table of mIoU (%) on the city each run was adapted to, mean over seeds, plus the mean city."""
    col = "miou_target_bn" if target_bn else "miou"
    own = scores[scores.adapted_to == scores.evaluated_on]
    table = over_seeds(own, col, ("adapted_to", "row"))["mean"].astype(float).unstack("row")
    cities = [c for c in CITIES if c in table.index] + [c for c in table.index if c not in CITIES]
    rows = order or [r for r in CONTROLS if r in table.columns] + [r for r in table.columns if r not in CONTROLS]
    table = table.loc[cities, rows]
    table.loc["mean"] = table.mean()
    table.index.name, table.columns.name = "city", None
    return table


def gains(scores, method: str, *, target_bn: bool = False):
    """Per city and seed, ``method`` minus source-only, minus the control and minus the better of AdaBN and the
    control (taken seed by seed); then the mean over seeds and the number of seeds where the method is ahead."""
    col = "miou_target_bn" if target_bn else "miou"
    import pandas as pd

    own = scores[scores.adapted_to == scores.evaluated_on]
    wide = per_seed(own, col, ("adapted_to", "row")).unstack("row")  # (city, seed) x row

    def over(diff):  # per city: mean over seeds, seeds ahead, seeds compared
        s = over_seeds(diff.rename("diff").reset_index(), "diff", "adapted_to")
        return s["mean"].astype(float), s["ahead"].astype(int), s["n"].astype(int)

    out = {}
    for ref in (SOURCE_ONLY, CONTROL):
        if ref in wide.columns and method in wide.columns:
            out[f"vs {ref}"], out[f"seeds ahead of {ref}"], out[f"seeds, {ref}"] = over(wide[method] - wide[ref])
    if {ADABN, CONTROL, method} <= set(wide.columns):  # the margin only the method's own term can claim
        out["vs max(AdaBN, control)"], out["seeds ahead of both"], _ = over(
            margin_over_controls(wide[method], wide[ADABN], wide[CONTROL]))
    table = pd.DataFrame(out)
    return table.loc[[c for c in CITIES if c in table.index] + [c for c in table.index if c not in CITIES]]


def cross_matrix(scores, row: str, *, target_bn: bool = False):
    """Adapted-to x evaluated-on mIoU (%) of one row, mean over seeds: does adapting to one city help the others?"""
    col = "miou_target_bn" if target_bn else "miou"
    m = over_seeds(scores[scores.row == row], col, ("adapted_to", "evaluated_on"))["mean"].astype(float)
    m = m.unstack("evaluated_on")
    order = [c for c in CITIES if c in m.index]
    return m.loc[order, [c for c in CITIES if c in m.columns]]
