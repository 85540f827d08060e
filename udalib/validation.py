"""Checks of an Experiment and its method parameters before any data or weights are read.

Every value is checked against the type of its dataclass field (``steps: "abc"`` in a recipe, ``--set lr=nan``)
and against its range (``--steps -5``, ``--batch-size 0``); each failure is a ``ValueError`` of one line that
names the field, the value and what is expected.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from dataclasses import fields, is_dataclass


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if origin in (dict,) or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def matches(value, tp) -> bool:
    """Whether ``value`` (as read from JSON, YAML or Python) fits the annotation ``tp``; bools are not numbers."""
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # a string switch (udalib.methods.base.Choice)
        return isinstance(value, str) and value in {m.value for m in tp}
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if tp is list or origin is list:
        return isinstance(value, (list, tuple))
    return True  # a type this checker does not know: left to the code that uses it


def check_types(obj, what: str) -> None:
    """Every field of the dataclass instance ``obj`` against its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not matches(value, hints[f.name]):
            raise ValueError(f"{what} {f.name}={value!r} is not valid: expected {_describe(hints[f.name])}")


# ranges of method parameters, by name (each config dataclass of udalib.methods uses these names)
def _method_range(name: str, value) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if name.startswith("lr") and not value > 0:
        return "a learning rate above 0"
    if name == "momentum" and not 0 <= value < 1:
        return "a momentum in [0, 1)"
    if (name == "weight_decay" or name.startswith("lambda_")) and value < 0:
        return "a weight of at least 0"
    if name in ("mask_ratio", "mic_alpha") and not 0 <= value < 1:
        return "a value in [0, 1)"
    if name == "mic_threshold" and not 0 <= value <= 1:
        return "a probability in [0, 1]"
    if name == "mask_block" and value < 1:
        return "a block side of at least 1 pixel"
    return None


def check_method_config(cfg, method: str) -> None:
    """Types and ranges of a method's resolved config (paper defaults, preset, overrides)."""
    if not is_dataclass(cfg):
        return
    check_types(cfg, f"method {method!r} parameter")
    for f in fields(cfg):
        expected = _method_range(f.name, getattr(cfg, f.name))
        if expected:
            raise ValueError(f"method {method!r} parameter {f.name}={getattr(cfg, f.name)!r} is out of range: "
                             f"expected {expected} (--set {f.name}=VALUE)")


def check_device(device: str) -> None:
    """A device string torch knows, and CUDA only where a CUDA device is present."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device is usable here (no GPU or no NVIDIA driver): "
                         "use --device cpu, or install the driver")


def check_experiment(exp, *, device: bool = True) -> None:
    """Types and ranges of every field of ``exp`` and of its method parameters; raises a one-line ValueError."""
    check_types(exp, "Experiment field")
    if exp.steps < 0:
        raise ValueError(f"steps={exp.steps}: the number of training steps must be at least 0")
    if exp.steps == 0 and not exp.init:
        raise ValueError("steps=0 trains nothing: give --init RUN (e.g. for an AdaBN control) or steps of at least 1")
    if exp.batch_size < 1:
        raise ValueError(f"batch_size={exp.batch_size}: a batch holds at least 1 image")
    if exp.seed < 0:
        raise ValueError(f"seed={exp.seed}: seeds are integers of at least 0")
    if exp.num_classes < 2:
        raise ValueError(f"num_classes={exp.num_classes}: a segmentation needs at least 2 classes (19, 16 or 13)")
    if exp.poly_steps is not None and exp.poly_steps < max(exp.steps, 1):
        raise ValueError(f"poly_steps={exp.poly_steps} is below steps={exp.steps}: the poly decay must not end "
                         "before training does; leave poly_steps unset or raise it")
    if exp.size is not None and min(exp.size) < 1:
        raise ValueError(f"size={list(exp.size)}: height and width must be at least 1")
    if exp.eval_protocol is not None:
        from .eval.evaluate import PROTOCOLS

        if exp.eval_protocol not in PROTOCOLS:
            raise ValueError(f"eval_protocol={exp.eval_protocol!r} is not a protocol; choose one of "
                             f"{', '.join(PROTOCOLS)} (or leave it unset)")
        if exp.flip != PROTOCOLS[exp.eval_protocol].flip:
            raise ValueError(f"eval_protocol {exp.eval_protocol!r} sets flip={PROTOCOLS[exp.eval_protocol].flip}: "
                             f"drop flip={exp.flip} (or leave eval_protocol unset)")
    if exp.rcs_temperature is not None and not exp.rcs_temperature > 0:
        raise ValueError(f"rcs_temperature={exp.rcs_temperature}: the rare-class sampling temperature must be above 0 "
                         "(DAFormer: 0.01), or None for uniform sampling")
    if exp.adabn and not exp.target:
        raise ValueError("adabn=True needs target images: give --target (e.g. minicity:target)")
    if exp.select_every < 0:
        raise ValueError(f"select_every={exp.select_every} must be at least 0 (0: off)")
    if exp.select_every:
        if not exp.target:
            raise ValueError("select_every needs unlabelled target images for its validator: give --target "
                             "(e.g. minicity:target), or set select_every=0")
        if exp.adabn:
            raise ValueError("select_every scores checkpoints during training and adabn re-estimates BatchNorm "
                             "statistics after it: use one of the two")
        if exp.steps < 1:
            raise ValueError("select_every needs training steps to select from: set steps of at least 1, or "
                             "select_every=0")
        from .experiment import selection_dataset

        selection_dataset(exp)
    check_method_config(exp.method_config, exp.method)
    if device:
        check_device(exp.device)
