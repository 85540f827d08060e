"""Model selection during training: which checkpoint would each rule keep?

The original code bases evaluate on the labelled target validation set every few thousand iterations and keep the
best snapshot (``MaxSquareLoss tools/train_source.py``, ``Trainer.train``, which ``tools/solve_gta5.py`` inherits:
after each epoch it validates on the target val set and saves ``best.pth`` when the mIoU beats ``best_MIou``), a
choice that uses target labels a real user does not have. A :class:`Selector` scores the model every ``every``
steps and at the last step, in three ways side by side:

* ``"last"``: the model at the end of training (what udalib reports everywhere else);
* ``"validator:<name>"``: the checkpoint with the largest label-free validator score (:mod:`udalib.eval.validators`,
  information maximisation by default: the best validator of ``benchmarks/selection_study.py`` on MiniCity),
  computed on a fixed set of *unlabelled* target training images;
* ``"target labels"``: the checkpoint with the largest target validation mIoU, as the original code bases select.

Ties go to the earliest checkpoint (the original code replaces its snapshot only on a strictly larger mIoU).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_save

LAST, TARGET_LABELS = "last", "target labels"
VALIDATOR = "im"
BEST_MODEL = "best_model.pt"  # the weights the target labels select, as the original code bases keep them
# how tables name each rule
RULE_LABELS = {LAST: "last", f"validator:{VALIDATOR}": "IM-selected (no target labels)",
               TARGET_LABELS: "target-selected (uses target labels)"}


def validator_rule(name: str = VALIDATOR) -> str:
    """The selection rule of validator ``name``: ``"validator:im"``."""
    return f"validator:{name}"


class Selector:
    """A callback of :func:`udalib.train.fit`: every ``every`` steps and at step ``steps``, scores the model with
    ``target_miou(model) -> float`` (target validation mIoU, %, uses labels) and ``validate(model) -> dict``
    (label-free validator scores, higher is better, e.g. :func:`udalib.eval.validators.score_model` on unlabelled
    target images), and keeps the weights of the best target mIoU so far in ``best_path`` (atomically).

    Evaluation runs under a forked random state, so training with a Selector makes exactly the updates it makes
    without one. ``state_dict``/``load_state_dict`` carry the scores through a training checkpoint (``fit`` saves
    them), so a resumed run selects what the uninterrupted run would have.
    """

    def __init__(self, every: int, *, steps: int, target_miou: Callable[[nn.Module], float],
                 validate: Callable[[nn.Module], dict], validator: str = VALIDATOR,
                 best_path: str | os.PathLike | None = None):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every={every!r} must be an integer of at least 1")
        self.every, self.steps, self.validator = every, steps, validator
        self.target_miou, self.validate = target_miou, validate
        self.best_path = Path(best_path) if best_path is not None else None
        self.history: list[dict] = []  # one row per scored step: step, miou, every validator's score

    def __call__(self, i: int, method, logs: dict) -> None:
        step = i + 1
        if step % self.every and step != self.steps:
            return
        model = method.model
        devices = [model_device(model)] if model_device(model).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # evaluation draws no number that training would have drawn
            miou = float(self.target_miou(model))
            scores = {k: float(v) for k, v in self.validate(model).items()}
        method.train()
        if self.validator not in scores:
            raise ValueError(f"the validator scores have no {self.validator!r}: they have {sorted(scores)}")
        best = self.best(TARGET_LABELS)
        self.history.append({"step": step, "miou": miou, **scores})
        if self.best_path is not None and (best is None or miou > best["miou"]):
            atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, self.best_path)

    def best(self, rule: str) -> dict | None:
        """The history row ``rule`` selects (``"last"``, ``"target labels"``, ``"validator:<name>"``), or None
        before the first scored step. Ties: the earliest step."""
        if not self.history:
            return None
        if rule == LAST:
            return self.history[-1]
        key = "miou" if rule == TARGET_LABELS else rule.removeprefix("validator:")
        if rule != TARGET_LABELS and (not rule.startswith("validator:") or key not in self.history[0]):
            raise ValueError(f"unknown selection rule {rule!r}: use 'last', 'target labels' or 'validator:NAME' "
                             f"with NAME one of {sorted(k for k in self.history[0] if k not in ('step', 'miou'))}")
        return max(self.history, key=lambda row: row[key])  # max keeps the first of equal rows

    def selections(self) -> dict:
        """``{"last": {"step", "miou"}, "validator:im": {"step", "miou", "score"}, "target labels": {"step",
        "miou"}}``: the step each rule selects and that step's target mIoU (empty before the first scored step)."""
        if not self.history:
            return {}
        rule = validator_rule(self.validator)
        picked = self.best(rule)
        return {LAST: {"step": self.history[-1]["step"], "miou": self.history[-1]["miou"]},
                rule: {"step": picked["step"], "miou": picked["miou"], "score": picked[self.validator]},
                TARGET_LABELS: {k: self.best(TARGET_LABELS)[k] for k in ("step", "miou")}}

    def state_dict(self) -> dict:
        return {"history": [dict(row) for row in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history = [dict(row) for row in state["history"]]


def model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device
