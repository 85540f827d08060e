"""Runs: one plain config in, one run folder out; the checkpoint-or-train helper; the results store.

A run folder holds everything a later notebook, the comparison widgets or ``python -m udalib table``
need, whoever started the run (a notebook, papermill, the command line, torchrun)::

    runs/<name>/config.json    the Experiment, as JSON
               metrics.csv     losses and lr every few steps
               eval.csv        periodic evaluations (when eval_every > 0)
               scores.json     final per-class IoU on every evaluation set, with its protocol
               model.pt        the final model weights (state_dict)
               checkpoint.pt   the last training checkpoint (resume)
               best_model.pt   with select_every > 0: the weights of the best target val mIoU (target labels)
               selection.csv   with select_every > 0: target val mIoU and validator scores every select_every steps
               inputs.json     with an init: the sha256 of the weights file the run started from (stale_reason)

A run started from another run's weights (``init``) is *stale* when those weights changed after it started (the
init run was trained again in its folder): :func:`stale_reason` says why, ``python -m udalib table`` lists it apart
from the means, :func:`find_run` does not return it and :func:`get_or_train` trains it again, after moving the stale
files aside to ``<folder>.stale-<time>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from . import paths
from .methods.base import (
    AS_METHOD_CONFIG,
    NEVER,
    OFF_DEFAULT,
    RUN_KEY,
    BNStats,
    Choice,
    keyed_off_default,
    run_key_rule,
)

SCORES, CONFIG, MODEL = "scores.json", "config.json", "model.pt"
INPUTS = "inputs.json"  # the identity of the weights a run started from; not part of its key (stale_reason)
# the key of scores.json that holds the model selections of a run trained with select_every > 0 (Run.selections);
# every other key is a dataset spec
SELECTIONS = "selections"
# in scores.json, the key suffix of the scores taken after re-estimating BatchNorm statistics on the target; readers
# go through Run.scores_on / split_target_bn rather than matching it
TARGET_BN = " | target BN"
def split_target_bn(key: str) -> tuple[str, bool]:
    """A ``scores.json`` key -> ``(dataset spec, whether BatchNorm statistics were re-estimated on the target)``."""
    if key.endswith(TARGET_BN):
        return key[: -len(TARGET_BN)], True
    return key, False


@dataclass
class Experiment:
    """Everything that defines one training run. Its hash names the run folder."""

    method: str = "source_only"
    source: str = "minicity:source"  # labelled training set, "<dataset>[/<split>]" (split: train)
    target: str | None = None  # unlabelled target training images, e.g. "minicity:target"
    evaluate_on: tuple[str, ...] = ("minicity:source/val", "minicity:target/val")
    model: str = "minideeplab"
    num_classes: int = 19
    steps: int = 400
    batch_size: int = 8
    seed: int = 0
    poly_steps: int | None = None  # horizon of the poly lr decay if not `steps` (the originals: 200k, stopped at 80k)
    init: str | None = None  # run name or folder whose final weights start this run
    pretrained: str | None = None  # ImageNet init file of DeepLab-v2 (DeepLab_resnet_pretrained_init-f81d91e8.pth)
    adabn: bool = False  # after training, re-estimate BatchNorm statistics on the target images (AdaBN)
    # batches that update BatchNorm running statistics: "both" (original) or "target"
    bn_stats: BNStats = keyed_off_default(BNStats.BOTH)
    # named hyper-parameter set of the method (None: the paper's defaults)
    preset: str | None = field(default="minicity", metadata={RUN_KEY: AS_METHOD_CONFIG})
    method_args: dict = field(default_factory=dict, metadata={RUN_KEY: AS_METHOD_CONFIG})  # overrides on the preset
    model_args: dict = field(default_factory=dict)
    data_root: str | None = None  # prepared real datasets (data_scripts/); MiniCity ignores it
    size: tuple[int, int] | None = None  # (H, W) resize of every image; None keeps the stored size
    flip: bool = False  # flip test-time augmentation in the final evaluation
    # every this many steps (and at the last), score the model on the target val set (labels) and with the IM
    # validator on unlabelled target training images, and keep the best target val weights (udalib.train.select);
    # 0: off
    select_every: int = keyed_off_default(0)
    # training images (source and target): Gaussian blur, p 0.5, radius U(0, 1) (MaxSquare family)
    blur: bool = keyed_off_default(False)
    # scoring: a named protocol of udalib.eval.evaluate.PROTOCOLS ("adaptsegnet": 1024x512 input, scored at the
    # full-resolution labels of cityscapes/valfull); None: each evaluation set at its own size, with `flip`
    eval_protocol: str | None = keyed_off_default(None)
    # rare-class sampling of the source training images (DAFormer; udalib.data.rcs): its temperature T (DAFormer:
    # 0.01); None: every source image equally often
    rcs_temperature: float | None = keyed_off_default(None)
    label: str = field(default="", metadata={RUN_KEY: NEVER})  # free text shown in tables (e.g. "MinEnt, lambda 0")
    device: str = field(default="cpu", metadata={RUN_KEY: NEVER})

    def __post_init__(self):
        self.evaluate_on = tuple(self.evaluate_on)
        self.size = tuple(self.size) if self.size is not None else None

    @property
    def method_config(self):
        """The method's parameters, resolved: its config dataclass with the paper defaults, then the ``preset``,
        then ``method_args`` (:func:`udalib.methods.method_config`; errors list the valid names and values).

        The one place a run's method parameters are resolved: the run key, the checks before a run, the training
        and :meth:`Run.method` all read it. Computed from the fields on each access (a few microseconds), so it
        never disagrees with them.
        """
        from .methods import method_config

        return method_config(self.method, self.preset, **self.method_args)

    def build_method(self, model: torch.nn.Module):
        """The :class:`~udalib.methods.Method` this experiment trains, on ``model``: its class with
        :attr:`method_config`, and the experiment's BatchNorm policy (``bn_stats``)."""
        from .methods import METHODS
        from .models import NORMALIZATION

        method = METHODS[self.method][0](model, self.method_config)
        method.bn_stats = BNStats.parse(self.bn_stats, "bn_stats")
        if hasattr(method, "normalization"):  # a method that un-normalises images (DACS's colour jitter)
            method.normalization = NORMALIZATION.get(self.model, "imagenet")
        return method

    def key(self) -> str:
        """A short hash of everything that changes the result (not the device or the label).

        Each field enters by the :data:`~udalib.methods.base.RUN_KEY` rule written beside it (:func:`run_fields`,
        the same fields as :func:`identity`); the method's parameters enter as the resolved config (paper
        defaults, then preset, then overrides), so naming a preset's value explicitly gives the same run as leaving
        it out. A field declared with :func:`~udalib.methods.base.keyed_off_default` (in ``Experiment`` or in a
        method config) is left out at its default, so the stored runs keep their names. A string switch
        (:class:`~udalib.methods.base.Choice`) enters as its ``key_value``.
        """
        cfg = self.method_config
        d = _off_defaults_left_out(type(self), run_fields(self))
        d["method_config"] = {k: v.key_value if isinstance(v, Choice) else v
                              for k, v in _off_defaults_left_out(type(cfg), asdict(cfg)).items()}
        specs = (self.source, self.target or "", *self.evaluate_on)
        from .data.minicity import GENERATOR_VERSION

        if GENERATOR_VERSION > 1 and any(s.startswith("minicity") for s in specs):  # other data: another run
            d["minicity_generator"] = GENERATOR_VERSION
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:10]

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}-{self.key()}"

    @classmethod
    def from_dict(cls, d: dict) -> Experiment:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise TypeError(f"Experiment has no field {', '.join(map(repr, unknown))}; "
                            f"fields: {', '.join(sorted(valid))}")
        return cls(**d)


def parse_spec(spec: str, default_split: str) -> tuple[str, str, tuple[int, int] | None]:
    """``"cityscapes/val@512x1024"`` -> ``("cityscapes", "val", (512, 1024))``; split and size are optional."""
    spec, _, size = spec.partition("@")
    name, _, split = spec.partition("/")
    if size:
        try:
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"dataset size in {spec + '@' + size!r} must be HxW, e.g. @512x1024") from None
        return name, split or default_split, (h, w)
    return name, split or default_split, None


SELECTION_IMAGES = 100  # unlabelled target training images the validator scores (evenly spaced over the list)


def selection_dataset(exp: Experiment) -> str:
    """The evaluation set of ``exp`` on which ``select_every`` scores checkpoints with target labels: the first of
    ``exp.evaluate_on`` of the target's dataset (``minicity:target`` -> ``minicity:target/val``)."""
    def dataset(spec: str) -> str:
        return spec.partition("@")[0].partition("/")[0]

    for spec in exp.evaluate_on:
        if exp.target and dataset(spec) == dataset(exp.target):
            return spec
    raise ValueError(f"select_every={exp.select_every} scores checkpoints on a labelled val set of the target "
                     f"{exp.target!r}, and evaluate_on {list(exp.evaluate_on)} has none: add one (e.g. "
                     f"{dataset(exp.target or 'minicity:target')}/val) or set select_every=0")


def open_data(spec: str, *, default_split: str, train: bool, exp: Experiment):
    """Open a dataset spec of an Experiment (``DATASET[:DOMAIN][/SPLIT][@HxW]``) in its model's convention."""
    from .data import open_dataset
    from .models import NORMALIZATION

    name, split, size = parse_spec(spec, default_split)
    num_classes = exp.num_classes
    class_set = None if num_classes == 19 else str(num_classes)  # labels on disk are 19-class train ids
    root = None if name.split(":")[0] == "minicity" else exp.data_root  # data_root is for data_scripts/ datasets
    return open_dataset(name, split, root=root, train=train, num_classes=19, class_set=class_set,
                        size=size or exp.size, normalization=NORMALIZATION.get(exp.model, "imagenet"),
                        blur=exp.blur and train)


@dataclass
class Run:
    """A finished (or resumable) run folder."""

    dir: Path
    config: Experiment
    scores: dict = field(default_factory=dict)  # dataset spec -> Scores
    # rule ("last", "validator:im", "target labels") -> {"step", "miou"[, "score"]}; empty without select_every
    selections: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.dir.name

    def scores_on(self, dataset: str, target_bn: bool = False):
        """The run's scores on ``dataset`` as stored, or None: ``target_bn``, the ones taken after re-estimating
        BatchNorm statistics on target images (written for every run with a target but AdaBN runs)."""
        return self.scores.get(dataset + TARGET_BN if target_bn else dataset)

    def miou(self, dataset: str = "minicity:target/val", target_bn: bool = False) -> float:
        """mIoU (%) on ``dataset``; ``target_bn``: after re-estimating BatchNorm statistics on target images
        (for an AdaBN run, whose statistics already are the target's, both are the same number)."""
        scores = self.scores_on(dataset, target_bn and not self.config.adabn)
        if scores is None:
            raise KeyError(f"run {self.name} has no scores on {dataset!r}{' with target BN' if target_bn else ''}; "
                           f"it has: {', '.join(self.scores)}")
        return scores.miou

    def selected(self, rule: str) -> dict | None:
        """What the selection ``rule`` picked (``"last"``, ``"validator:im"``, ``"target labels"``: see
        :mod:`udalib.train.select`): ``{"step", "miou"[, "score"]}`` with the target val mIoU (%) of the picked
        step, or None for a run trained without ``select_every`` (or an unknown rule)."""
        return self.selections.get(rule)

    def selected_miou(self, rule: str) -> float:
        """The target val mIoU (%) of the step ``rule`` picked; NaN where the run has no such selection."""
        picked = self.selected(rule)
        return float(picked["miou"]) if picked is not None else float("nan")

    def model(self, device: str = "cpu", selected: str = "last") -> torch.nn.Module:
        """The trained model, in eval mode; ``selected="target labels"``: the weights of the best target val mIoU
        (``best_model.pt``, runs trained with ``select_every``)."""
        from .models import build_model
        from .models.checkpoint import load_into, load_state_dict_file
        from .train.select import BEST_MODEL, LAST, TARGET_LABELS

        files = {LAST: MODEL, TARGET_LABELS: BEST_MODEL}
        if selected not in files:
            raise ValueError(f"selected={selected!r}: the weights kept are {sorted(files)}")
        if not (self.dir / files[selected]).is_file():
            raise FileNotFoundError(f"run {self.name} has no {files[selected]}: only runs trained with "
                                    "select_every > 0 keep the target-selected weights")
        model = build_model(self.config.model, self.config.num_classes, **self.config.model_args)
        load_into(model, load_state_dict_file(self.dir / files[selected]))
        return model.to(device).eval()

    def method(self, device: str = "cpu"):
        """The run's :class:`~udalib.methods.Method` as its training left it, in eval mode: rebuilt from
        ``config.json`` (:meth:`Experiment.build_method`) and loaded from the last training checkpoint
        (``checkpoint.pt``): the segmenter, the method's other networks and buffers (AdaptSegNet's discriminators,
        centroids, pseudo-label thresholds) and its optimisers. The segmenter holds the weights of the end of
        training, before any AdaBN (``model.pt`` holds those after it: :meth:`model`)."""
        from .models import build_model
        from .train.checkpoint import load_checkpoint

        path = self.dir / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"run {self.name} has no {CHECKPOINT} (its training checkpoint was removed): "
                                    "Run.model() loads its final weights; train it again for its method's state")
        method = self.config.build_method(build_model(self.config.model, self.config.num_classes,
                                                      **self.config.model_args))
        load_checkpoint(path, method)
        return method.to(device).eval()

    def history(self):
        import pandas as pd

        path = self.dir / "metrics.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()


def run_dir_for(exp: Experiment, root: str | os.PathLike | None = None) -> Path:
    return Path(root) if root is not None else paths.runs_dir() / exp.name


CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
CHECKPOINT_SECONDS = 300.0  # default wall time between periodic checkpoints (a kill loses at most this much)


def read_config(path: str | os.PathLike) -> Experiment:
    """The Experiment stored in a ``config.json``; a broken file is a one-line error that names it."""
    path = Path(path)
    try:
        return Experiment.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable udalib run config ({str(exc).splitlines()[0]}): "
                         "move that run folder away, or use another run folder") from None


def run_fields(exp: Experiment) -> dict:
    """The fields of ``exp`` that make its run, by the :data:`~udalib.methods.base.RUN_KEY` rule beside each: all
    but those that change no result (``device``, ``label``) and those that enter as the resolved method config
    (``preset``, ``method_args``). :meth:`Experiment.key` and :func:`identity` both start from it."""
    return {k: v for k, v in asdict(exp).items() if run_key_rule(Experiment, k) not in (NEVER, AS_METHOD_CONFIG)}


def _off_defaults_left_out(cls: type, values: dict) -> dict:
    """``values`` (fields of the dataclass ``cls``) without those whose rule is to enter the run key only off their
    default (:func:`~udalib.methods.base.keyed_off_default`) and that are at it."""
    defaults = {f.name: f.default for f in fields(cls)}
    return {k: v for k, v in values.items() if not (run_key_rule(cls, k) == OFF_DEFAULT and v == defaults[k])}


def identity(exp: Experiment) -> dict:
    """What makes two experiments the same run: its :func:`run_fields` (every field but the device and the label),
    with the method's parameters resolved (paper defaults, preset, overrides), so naming a preset's value is the
    same run. Fields at their default are kept, so :func:`differences` names both values."""
    d = run_fields(exp)
    try:
        d |= {f"method_config.{k}": v for k, v in asdict(exp.method_config).items()}
    except (TypeError, ValueError):  # a stored method or parameter that no longer exists: compare as written
        d |= {f.name: getattr(exp, f.name) for f in fields(exp)
              if run_key_rule(Experiment, f.name) == AS_METHOD_CONFIG}
    return json.loads(json.dumps(d, default=list))  # tuples and lists compare equal, as they are stored


def differences(stored: Experiment, requested: Experiment) -> list[str]:
    """``["steps: stored 300, requested 5", ...]``: the fields where two experiments differ as runs."""
    a, b = identity(stored), identity(requested)
    return [f"{k}: stored {a.get(k)!r}, requested {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def is_finished(run_dir: str | os.PathLike) -> bool:
    """A finished run folder: its final weights and scores are written (it is never modified again)."""
    run_dir = Path(run_dir)
    return (run_dir / SCORES).is_file() and (run_dir / MODEL).is_file()


def _summary(diffs: list[str]) -> str:
    return "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")


def _prepare_folder(exp: Experiment, run_dir: Path, resume: bool, write: bool = True) -> Run | None:
    """Check the run folder against ``exp`` before anything is written; the finished run of ``exp`` if it is one.

    Resume only into the same experiment; a finished run is never modified (a stale one, :func:`stale_reason`, is
    moved aside to train afresh); ``resume=False`` discards an unfinished run's checkpoint and logs (never a
    finished run's files). ``write=False`` (torchrun ranks but 0):
    the same checks, nothing deleted.
    """
    cfg = run_dir / CONFIG
    finished = is_finished(run_dir)
    if not cfg.exists():
        if not write:
            return None
        if finished or (run_dir / CHECKPOINT).exists():
            raise ValueError(f"{run_dir} holds run files but no {CONFIG}, so it cannot be checked against this "
                             "experiment: use another run folder (--run-dir)")
        _refuse_foreign(run_dir)
        return None
    stored = read_config(cfg)
    diffs = differences(stored, exp)
    if finished:
        if diffs:
            raise ValueError(f"{run_dir} is a finished run of another experiment ({_summary(diffs)}); a finished "
                             "run is never modified: use another run folder (--run-dir)")
        if not resume:
            raise ValueError(f"{run_dir} is a finished run of this experiment and a finished run is never "
                             "modified: drop --no-resume to load it, or use another run folder (--run-dir)")
        if _set_aside_if_stale(run_dir, write) is None:
            return load_run(run_dir)
        return None
    if not diffs and resume and (run_dir / CHECKPOINT).exists():  # an unfinished run from weights since changed
        _set_aside_if_stale(run_dir, write)
    if diffs and resume:
        raise ValueError(f"{run_dir} holds an unfinished run of another experiment ({_summary(diffs)}): pass "
                         "--no-resume (resume=False) to discard its checkpoint and start this experiment there, "
                         "or use another run folder (--run-dir)")
    if not resume and write:
        for name in (CHECKPOINT, "metrics.csv", "eval.csv", "selection.csv", "best_model.pt", INPUTS):
            (run_dir / name).unlink(missing_ok=True)
    return None


def _set_aside_if_stale(run_dir: Path, write: bool) -> str | None:
    """Why the run in ``run_dir`` is stale (:func:`stale_reason`, its own init only: :func:`get_or_train` brings a
    stale init up to date first), after moving its files aside (``write``) so that it trains afresh; or None."""
    why = stale_reason(run_dir, chain=False)
    if why is not None and write:
        import warnings

        aside = _move_aside(run_dir)
        warnings.warn(f"{run_dir.name} is stale ({why}): its files are moved to {aside.name} and it trains again",
                      stacklevel=4)
    return why


def _refuse_foreign(run_dir: Path) -> None:
    """A folder without ``config.json`` that holds other files is someone else's: never written into."""
    if run_dir.is_dir() and not (run_dir / CONFIG).exists():
        others = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))  # ours: .lock, temp files
        if others:
            raise ValueError(f"{run_dir} is not empty and is not a udalib run folder (it holds {others[0]!r}): "
                             "choose an empty or new run folder (--run-dir)")


def _discard_if_empty(run_dir: Path) -> None:
    """After a failure: remove a folder this call created if it holds nothing worth keeping (no checkpoint)."""
    keep = (CHECKPOINT, MODEL, SCORES, "metrics.csv", "eval.csv", "best_model.pt")
    if any((run_dir / name).exists() for name in keep):
        return
    for p in run_dir.iterdir():
        if p.name == CONFIG or p.name.startswith((LOCK, ".")):
            p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a run folder written by :func:`run`."""
    from .eval.metrics import Scores

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir} is not a udalib run folder (no {CONFIG})")
    config = read_config(run_dir / CONFIG)
    scores, selections = {}, {}
    if (run_dir / SCORES).exists():
        try:
            stored = json.loads((run_dir / SCORES).read_text())
            selections = dict(stored.pop(SELECTIONS, {}))
            scores = {k: Scores(**v) for k, v in stored.items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{run_dir / SCORES} is not readable ({str(exc).splitlines()[0]}): move that run "
                             "folder away, or evaluate its model.pt again") from None
    return Run(run_dir, config, scores, selections)


def _resolve_init(init: str) -> Path:
    path = Path(init)
    for candidate in (path / MODEL, paths.runs_dir() / init / MODEL, path):
        if candidate.is_file():
            return candidate
    if path.suffix in (".pth", ".pt", ".pkl"):  # a weights file, e.g. a released checkpoint named by a recipe
        raise FileNotFoundError(f"init checkpoint {init} does not exist: put the authors' released weights there "
                                "(README, 'Real datasets': DATA_ROOT/checkpoints/), or start from a run of yours "
                                "with --set init=runs/<run folder>")
    raise FileNotFoundError(f"init {init!r}: no {MODEL} in that run folder or under {paths.runs_dir()}; "
                            "train the source model first (notebook 01, or `python -m udalib train`)")


def run(exp: Experiment, run_dir: str | os.PathLike | None = None, *, resume: bool = True,
        progress: bool = True, checkpoint_every: int = 0, checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
        eval_every: int = 0, stop_after: int | None = None, workers: int = 0, amp: bool | None = None) -> Run:
    """Train ``exp`` (or continue it), evaluate it on ``exp.evaluate_on`` and write its run folder.

    ``exp.init`` starts the weights from another run or a weights file (the originals' ``--continue_training``: weights
    only, a fresh optimiser and poly schedule); an existing ``checkpoint.pt`` in the run folder resumes exactly,
    but only if the folder's ``config.json`` is the same experiment (else a one-line error names the differing
    fields). A finished run folder is returned as it is, never modified, unless it is stale (:func:`stale_reason`:
    the weights of its init changed after it started): then its files, and those of an unfinished stale run, are
    moved to ``<folder>.stale-<time>`` and it trains afresh. ``config.json`` is written atomically after every
    check, with ``inputs.json``, the sha256 of the init weights (kept as it was when a checkpoint is resumed).
    While it runs, the folder is locked: a second process gets an error naming the first.
    Checkpoints are written every ``checkpoint_every`` steps and every ``checkpoint_seconds`` of wall time.
    ``amp``: bf16 autocast in training (default: on for CUDA, see :func:`udalib.train.fit`); evaluation is fp32.
    """
    from . import locks
    from .validation import check_experiment

    check_experiment(exp)
    for name, value in (("checkpoint_every", checkpoint_every), ("eval_every", eval_every), ("workers", workers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} must be an integer of at least 0 (0: off)")
    if checkpoint_seconds is not None and not checkpoint_seconds > 0:
        raise ValueError(f"checkpoint_seconds={checkpoint_seconds!r} must be above 0 (None: off)")
    run_dir = run_dir_for(exp, run_dir)
    main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes and locks the folder
    if not main:
        done = _prepare_folder(exp, run_dir, resume, write=False) if run_dir.is_dir() else None
        if done is not None:
            return done
        if run_dir.is_dir() and stale_reason(run_dir, chain=False) is not None:
            resume = False  # rank 0 moves the stale checkpoint aside: start afresh, as it does
        return _run(exp, run_dir, resume=resume, progress=progress, checkpoint_every=checkpoint_every,
                    checkpoint_seconds=checkpoint_seconds, eval_every=eval_every, stop_after=stop_after,
                    workers=workers, amp=amp, main=False)
    _refuse_foreign(run_dir)  # before the lock file is made in it
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with locks.hold(run_dir / LOCK, what=f"run folder {run_dir}",
                    hint="wait for it to finish, or use another run folder (--run-dir)"):
        try:
            done = _prepare_folder(exp, run_dir, resume)
            if done is not None:
                return done
            locks.remove_temp_files(run_dir)  # left by a killed writer: we hold the lock, so none is live
            return _run(exp, run_dir, resume=resume, progress=progress, checkpoint_every=checkpoint_every,
                        checkpoint_seconds=checkpoint_seconds, eval_every=eval_every, stop_after=stop_after,
                        workers=workers, amp=amp, main=True)
        except BaseException:
            if created:
                _discard_if_empty(run_dir)
            raise


def _run(exp: Experiment, run_dir: Path, *, resume: bool, progress: bool, checkpoint_every: int,
         checkpoint_seconds: float | None, eval_every: int, stop_after: int | None, workers: int,
         amp: bool | None, main: bool) -> Run:
    from .data import eval_loader
    from .data.rcs import rare_class_sampling
    from .locks import atomic_write_text
    from .methods import adapt_batchnorm
    from .models import build_model
    from .models.checkpoint import load_imagenet_init, load_into, load_state_dict_file
    from .train import distributed, fit
    from .train.checkpoint import atomic_save

    device = distributed.local_device(exp.device)
    torch.manual_seed(exp.seed)
    model = build_model(exp.model, exp.num_classes, **exp.model_args)
    if exp.pretrained:
        load_imagenet_init(model, exp.pretrained)
    inputs = {}
    if exp.init:
        init_file = _resolve_init(exp.init)
        inputs["init"] = {"name": exp.init, "file": str(init_file.resolve()), "sha256": weights_identity(init_file)}
        init = load_state_dict_file(init_file)
        # keys a model may start without (SNR blocks from a plain source checkpoint): skipped only when absent
        optional = tuple(p for p in getattr(model, "optional_init_prefixes", ())
                         if not any(key.startswith(p) for key in init))
        load_into(model, init, skip_prefixes=optional)
    method = exp.build_method(model)
    method.progress_label = exp.label or run_dir.name  # what the progress bar is called

    source = rare_class_sampling(open_data(exp.source, default_split="train", train=True, exp=exp),
                                 exp.rcs_temperature)  # the same dataset unless rcs_temperature is set
    target = open_data(exp.target, default_split="train", train=True, exp=exp) if exp.target else None
    eval_sets = {spec: open_data(spec, default_split="val", train=False, exp=exp) for spec in exp.evaluate_on}
    if hasattr(method, "bind"):  # self-training: the source set of its source portion, the folder of its labels
        method.bind(source, target, run_dir)
    if main:  # every check passed and every dataset opened: only now is the folder this experiment's
        atomic_write_text(run_dir / CONFIG, json.dumps(asdict(exp), indent=1, default=list))
        if not (resume and (run_dir / CHECKPOINT).exists()):  # a resumed run keeps the record of its start
            if inputs:
                atomic_write_text(run_dir / INPUTS, json.dumps(inputs, indent=1))
            else:
                (run_dir / INPUTS).unlink(missing_ok=True)

    def score(dataset, selection: str):
        return score_set(method.model, dataset, exp, selection, device=device)

    def periodic(_method) -> dict:
        return {spec: score(ds, "periodic").miou for spec, ds in eval_sets.items()}

    selector = _selector(exp, eval_sets, score, run_dir, device) if exp.select_every and main else None
    t0 = time.perf_counter()
    fit(method, source, target, steps=exp.steps, batch_size=exp.batch_size, seed=exp.seed, device=device,
        run_dir=run_dir, resume=resume, progress=progress, checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds, evaluate=periodic if eval_every else None, eval_every=eval_every,
        stop_after=stop_after, poly_steps=exp.poly_steps, workers=workers, amp=amp,
        callbacks=(selector,) if selector is not None else ())
    if stop_after is not None and stop_after < exp.steps:
        return load_run(run_dir)
    if exp.adabn:
        adapt_batchnorm(method.model, eval_loader(open_data(exp.target, default_split="train", train=False,
                                                            exp=exp)), device=device)
    if not distributed.is_main():
        return Run(run_dir, exp)
    scores = {spec: score(ds, "last checkpoint") for spec, ds in eval_sets.items()}
    atomic_save(method.model.state_dict(), run_dir / MODEL)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in method.model.modules())
    if target is not None and not exp.adabn and exp.bn_stats != "target" and has_bn:  # (VGG-16 has no BatchNorm)
        # the same weights with BatchNorm statistics of the target alone: training alternates source and target
        # batches, so the running statistics are a mixture of both domains (see notebook 03). Under
        # bn_stats="target" the running statistics already are the target's, and re-estimating them would only
        # repeat the evaluation (a quarter of a MiniCity run's time)
        target_images = eval_loader(open_data(exp.target, default_split="train", train=False, exp=exp))
        adapt_batchnorm(method.model, target_images, device=device)
        scores |= {spec + TARGET_BN: score(ds, "last checkpoint, target BN statistics")
                   for spec, ds in eval_sets.items()}
    out = {k: v.as_dict() for k, v in scores.items()}
    for v in out.values():
        v["protocol"]["train_seconds"] = round(time.perf_counter() - t0, 1)
    if selector is not None:
        from .train.loop import write_csv

        write_csv(run_dir / "selection.csv", selector.history)
        out[SELECTIONS] = selector.selections()
    atomic_write_text(run_dir / SCORES, json.dumps(out, indent=1))  # last: from now on the run is finished
    return load_run(run_dir)


def _selector(exp: Experiment, eval_sets: dict, score, run_dir: Path, device):
    """The :class:`~udalib.train.select.Selector` of a run with ``select_every``: target val mIoU on
    :func:`selection_dataset` (target labels) and the validators of :func:`udalib.validate.score_model` on
    :data:`SELECTION_IMAGES` unlabelled target training images (their list holds no labels; the images alone are
    passed on)."""
    from torch.utils.data import Subset

    from .data import eval_loader
    from .train.select import BEST_MODEL, Selector
    from .validate import score_model

    labelled = eval_sets[selection_dataset(exp)]
    images = open_data(exp.target, default_split="train", train=False, exp=exp)
    n = min(SELECTION_IMAGES, len(images))
    unlabelled = eval_loader(_ImagesOnly(Subset(images, [i * len(images) // n for i in range(n)])))

    def validate(model) -> dict:
        return score_model(model, unlabelled, num_classes=exp.num_classes, seed=exp.seed, device=device)

    return Selector(exp.select_every, steps=exp.steps, target_miou=lambda _model: score(labelled, "periodic").miou,
                    validate=validate, best_path=run_dir / BEST_MODEL)


class _ImagesOnly(torch.utils.data.Dataset):
    """The images of a dataset, without its labels."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0]
def score_set(model: torch.nn.Module, dataset, exp: Experiment, selection: str, *, device="cpu"):
    """``model``'s :class:`~udalib.eval.metrics.Scores` on ``dataset`` as ``exp`` scores its evaluation sets: under
    its named ``eval_protocol`` (:func:`~udalib.eval.evaluate.evaluate_protocol`; ``"adaptsegnet"``: the images fed
    at 1024x512, the main logits upsampled to the full-resolution labels, as AdaptSegNet ``compute_iou.py``), else
    at the set's own size with ``exp.flip``. ``selection`` says how the checkpoint was chosen."""
    from .data import eval_loader
    from .eval.evaluate import evaluate, evaluate_protocol

    if exp.eval_protocol:
        return evaluate_protocol(model, eval_loader(dataset), exp.num_classes, exp.eval_protocol,
                                 model_selection=selection, device=device)
    return evaluate(model, eval_loader(dataset), exp.num_classes, device=device, flip=exp.flip,
                    protocol={"model_selection": selection})


def get_or_train(exp: Experiment, run_dir: str | os.PathLike | None = None, **kwargs) -> Run:
    """Checkpoint-or-train: the finished run of ``exp`` if its folder has one, else train it now.

    This is what lets every notebook run on its own, in any order: a later notebook asks for the source
    model with the same Experiment and gets the one notebook 01 trained, or trains it.

    A run whose init weights changed after it started (:func:`stale_reason`) is trained again in its folder, its
    stale files moved aside to ``<folder>.stale-<time>`` (nothing written is deleted); an init that is a stale run
    itself is trained again first, the same way, so a chain (source -> adaptation -> a run from the adapted model)
    is brought up to date from its root.
    """
    done = find_run(exp, run_dir)
    if done is not None:
        return done
    _refresh_init(exp, **kwargs)
    return run(exp, run_dir_for(exp, run_dir), **kwargs)


def _refresh_init(exp: Experiment, **kwargs) -> None:
    """Before ``exp`` trains from an init run that is stale itself, bring that run up to date (:func:`get_or_train`
    on its stored config, in its folder, on ``exp``'s device)."""
    folder = _init_run_folder(exp.init) if exp.init else None
    if folder is not None and stale_reason(folder) is not None:
        get_or_train(replace(read_config(folder / CONFIG), device=exp.device), folder, **kwargs)


def find_run(exp: Experiment, run_dir: str | os.PathLike | None = None) -> Run | None:
    """The finished run of ``exp`` (weights and scores on every ``exp.evaluate_on`` set), or None: never trains.
    A stale run (:func:`stale_reason`: the weights it started from changed since) is not returned."""
    folder = run_dir_for(exp, run_dir)
    if is_finished(folder):
        done = load_run(folder)
        if (done.config.key() == exp.key() and set(exp.evaluate_on) <= set(done.scores)
                and stale_reason(folder) is None):
            return done
    return None


_SHA256: dict[tuple, str] = {}  # (path, inode, size, mtime) -> sha256: each weights file is read once per process


def weights_identity(path: str | os.PathLike) -> str:
    """The sha256 of a weights file's bytes: what a run records of the weights it started from (``inputs.json``)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def _init_file(init: str, runs: Mapping[str, Path] | None = None) -> Path | None:
    """The weights file ``init`` names now, as training resolves it (:func:`_resolve_init`; a run folder name is
    looked up in ``runs``, folder name -> folder, first), or None where it is gone."""
    candidates = [Path(runs[init]) / MODEL] if runs and init in runs else []
    candidates += [Path(init) / MODEL, paths.runs_dir() / init / MODEL, Path(init)]
    return next((c for c in candidates if c.is_file()), None)


def _init_run_folder(init: str, runs: Mapping[str, Path] | None = None) -> Path | None:
    """The run folder whose ``model.pt`` ``init`` names, or None (a weights file of another kind, or gone)."""
    file = _init_file(init, runs)
    if file is None or file.name != MODEL or not (file.parent / CONFIG).is_file():
        return None
    return file.parent


def read_inputs(run_dir: str | os.PathLike) -> dict | None:
    """The run's ``inputs.json`` (``{"init": {"name", "file", "sha256"}}``), or None: a run without an init, or one
    trained before udalib recorded its inputs."""
    path = Path(run_dir) / INPUTS
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def stale_reason(run_dir: str | os.PathLike, runs: Mapping[str, Path] | None = None, *, chain: bool = True,
                 _memo: dict | None = None) -> str | None:
    """Why the run in ``run_dir`` no longer starts from the weights it was trained from, or None.

    A run with an ``init`` (another run's ``model.pt``, or a weights file) records, when it starts training, the
    sha256 of that file (:func:`weights_identity`) in ``inputs.json``, beside its config and outside its key: the
    run folder keeps its name. It is stale when

    - the init file now has another sha256 (the init run was trained again in its folder, or the file replaced);
    - ``chain``: its init is a run folder that is stale itself (source -> adaptation -> a run from the adapted model);
    - it has no ``inputs.json`` (runs trained before udalib recorded their inputs) and its init is a run folder
      whose ``model.pt`` was modified after this run's own finished ``model.pt``: modification times are all such a
      run has to go by (a copy of a run store that does not keep them can mark such runs stale wrongly; training
      them again records their inputs).

    An init that is gone, or a run without an init, has nothing to compare: None. Run folder names are looked up in
    ``runs`` (folder name -> folder, e.g. the store being read) before the runs folder.
    """
    run_dir = Path(run_dir)
    memo = {} if _memo is None else _memo
    key = (run_dir.resolve(), chain)
    if key in memo:
        return memo[key]
    memo[key] = None  # a cycle of inits reads as not stale
    try:
        init = read_config(run_dir / CONFIG).init
    except (ValueError, OSError):
        return None
    why = None
    file = _init_file(init, runs) if init else None
    if file is not None:
        recorded = read_inputs(run_dir)
        folder = _init_run_folder(init, runs)
        if recorded is not None and "init" in recorded:
            now, then = weights_identity(file), recorded["init"].get("sha256")
            if now != then:
                why = (f"the weights of its init {init} changed after it started (sha256 {str(then)[:12]} recorded, "
                       f"{now[:12]} now)")
        elif folder is not None and (run_dir / MODEL).is_file() and \
                file.stat().st_mtime > (run_dir / MODEL).stat().st_mtime:
            why = (f"its init {init} was written after it finished (modification times of model.pt: the run has no "
                   f"{INPUTS})")
        if why is None and chain and folder is not None:
            inner = stale_reason(folder, runs, chain=True, _memo=memo)
            if inner is not None:
                why = f"its init {init} is stale: {inner}"
    memo[key] = why
    return why


def _move_aside(run_dir: Path) -> Path:
    """Move every file of ``run_dir`` but its lock into a new sibling ``<name>.stale-<time>``; return it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = run_dir.with_name(f"{run_dir.name}.stale-{stamp}"), 1
    while aside.exists():
        aside, n = run_dir.with_name(f"{run_dir.name}.stale-{stamp}-{n}"), n + 1
    aside.mkdir()
    for p in sorted(run_dir.iterdir()):
        if not p.name.startswith(LOCK):  # the lock (and its owner file) stays: this process holds it
            os.replace(p, aside / p.name)
    return aside


def compare_runs(runs: dict[str, Run], *, baseline: Run, control: Run | None = None,
                 dataset: str = "minicity:target/val", source_dataset: str | None = "minicity:source/val"):
    """The notebooks' results table: one row per named run, mIoU on ``dataset`` as trained and with target BN
    statistics (empty for runs that never saw a target image; the column only where a trained run has such a score,
    i.e. it kept the originals' mixed statistics), on ``source_dataset``, and the differences to the ``baseline``
    (source-only) and, if given, to the ``control`` (the same run with its target weight at 0).
    """
    import pandas as pd

    def target_bn(r: Run) -> float | None:
        has = r.config.adabn or r.scores_on(dataset, target_bn=True) is not None
        return r.miou(dataset, target_bn=True) if has else None

    rows = {}
    for name, r in runs.items():
        rows[name] = {"target mIoU": r.miou(dataset), "target mIoU, target BN": target_bn(r)}
        if source_dataset is not None:
            rows[name]["source mIoU"] = r.miou(source_dataset) if source_dataset in r.scores else None
    table = pd.DataFrame(rows).T.astype(float)
    table["vs source-only"] = table["target mIoU"] - baseline.miou(dataset)
    if control is not None:
        table["vs control"] = table["target mIoU"] - control.miou(dataset)
        if target_bn(control) is not None:
            table["vs control, target BN"] = table["target mIoU, target BN"] - target_bn(control)
    if all(r.config.adabn or target_bn(r) is None for r in runs.values()):
        # no trained run has a target-BN score (target-only running statistics: zoo.BN_STATS): nothing to compare
        table = table.drop(columns="target mIoU, target BN")
    return table


def per_class_iou(runs: dict[str, Run], dataset: str = "minicity:target/val"):
    """Per-class IoU (%) on ``dataset``, one column per named run; classes absent everywhere are dropped."""
    import pandas as pd

    return pd.DataFrame({name: r.scores[dataset].table()["IoU (%)"] for name, r in runs.items()}).dropna(how="all")


def group_key(exp: Experiment, runs: Mapping[str, Experiment] | None = None, *, _seen: frozenset = frozenset()
              ) -> str:
    """A short hash of the experiment without its seed: the runs that are seeds of one another share it.

    An ``init`` that is another run enters as that run's own seed-free key (recursively), so the adaptation runs
    of seeds 0, 1, 2 from the source runs of seeds 0, 1, 2 share a key; an init of another seed than the run's
    adds that seed (runs of seeds 1, 2 from the source run of seed 0 share another key). The init run is looked up
    by its folder name in ``runs`` (run folder name -> Experiment, e.g. a whole run store), else read from the
    ``config.json`` of the folder ``init`` names, else, for a run folder that is gone, found as another seed of a
    run in ``runs`` (its name hashes its config, so the match is checked); other inits (a weights file, a gone run
    with no other seed at hand) enter as written. Run names and keys (:meth:`Experiment.key`) are not affected:
    they still name the folders.
    """
    d = identity(exp)
    d.pop("seed", None)
    if exp.init is not None:
        parent = _init_experiment(exp.init, runs or {})
        if parent is not None and exp.init not in _seen:
            d["init"] = {"run": group_key(parent, runs, _seen=_seen | {exp.init})}
            if parent.seed != exp.seed:
                d["init"]["seed"] = parent.seed
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:10]


def _init_experiment(init: str, runs: Mapping[str, Experiment]) -> Experiment | None:
    """The Experiment of the run that ``init`` names, or None: a folder name in ``runs``, a run folder, or a run
    named ``<method>-s<seed>-<key>`` that is not there but is another seed of a run in ``runs`` (its name, which
    hashes its whole config, is checked, so the match is exact)."""
    name = Path(init).name
    for candidate in (init, name):
        if candidate in runs:
            return runs[candidate]
    try:
        if (Path(init) / CONFIG).is_file():
            return read_config(Path(init) / CONFIG)
    except (ValueError, OSError):
        return None
    method, sep, rest = name.rpartition("-s")
    seed, _, key = rest.partition("-")
    if not sep or not seed.isdigit() or len(key) != 10:
        return None
    for exp in runs.values():
        if exp.method == method:
            other = replace(exp, seed=int(seed))
            with contextlib.suppress(TypeError, ValueError, KeyError):  # a method or parameter that is gone
                if other.name == name:
                    return other
    return None


def _selection_spec(r: Run) -> str | None:
    """The evaluation set a run's selections were scored on (:func:`selection_dataset`), or None without any."""
    if not r.selections:
        return None
    try:
        return selection_dataset(r.config)
    except ValueError:
        return None


def list_runs(root: str | os.PathLike | None = None, *, on_error=None):
    """Every finished run under ``root`` as a DataFrame: one row per (run, evaluation set, BatchNorm statistics).

    Finished means :func:`is_finished`. ``experiment`` is :func:`group_key` with the runs under ``root`` as the
    inits it looks up: rows that share it are seeds of one experiment. ``evaluated_on`` is the dataset spec and
    ``target_bn`` says whether the scores were taken after re-estimating BatchNorm statistics on target images;
    ``target`` is the run's target training set (None without one). The columns ``last``, ``validator:im`` and
    ``target labels`` hold the mIoU of the step each selection rule picked (:mod:`udalib.train.select`) on the row
    of the evaluation set it was scored on (runs trained with ``select_every``), NaN elsewhere. A folder whose
    files cannot be read is skipped, and ``on_error`` (default: a warning) gets a one-line message naming it.
    ``stale`` says why a run is stale (:func:`stale_reason`, its init looked up among these runs first), empty for
    the others: a stale run's numbers are not those its config gives today.
    """
    import warnings

    import pandas as pd

    from .train.select import RULE_LABELS

    root = Path(root) if root is not None else paths.runs_dir()
    runs = []
    for cfg in sorted(root.glob(f"**/{CONFIG}")):
        if not is_finished(cfg.parent):
            continue
        try:
            runs.append(load_run(cfg.parent))
        except (ValueError, TypeError, OSError) as exc:
            message = f"skipped {cfg.parent}: {' '.join(str(exc).split())}"
            on_error(message) if on_error is not None else warnings.warn(message, stacklevel=2)
    by_name = {r.name: r.config for r in runs}
    folders, memo = {r.name: r.dir for r in runs}, {}
    rows = []
    for r in runs:
        group = group_key(r.config, by_name)
        stale = stale_reason(r.dir, folders, _memo=memo) or ""
        selected_on = _selection_spec(r)
        for key, s in r.scores.items():
            spec, target_bn = split_target_bn(key)
            rows.append({"run": r.name, "method": r.config.method, "label": r.config.label or r.config.method,
                         "seed": r.config.seed, "steps": r.config.steps, "target": r.config.target,
                         "evaluated_on": spec, "target_bn": target_bn, "miou": s.miou,
                         "seconds": s.protocol.get("train_seconds"), "dir": str(r.dir), "experiment": group,
                         "stale": stale,
                         **{rule: r.selected_miou(rule) if spec == selected_on and not target_bn else float("nan")
                            for rule in RULE_LABELS}})
    columns = ["run", "method", "label", "seed", "steps", "target", "evaluated_on", "target_bn", "miou", "seconds",
               "dir", "experiment", "stale", *RULE_LABELS]
    return pd.DataFrame(rows, columns=columns)
