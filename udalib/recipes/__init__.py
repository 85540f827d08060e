"""Full-scale recipes: one YAML file per paper experiment: its run-level ``Experiment`` fields, and in ``method_args``
only the method parameters that depart from the method's defaults (its config dataclass, then ``preset``).

Each value carries the original's flag or the paper's symbol as a comment, so a recipe can be checked line by line
against the original README (``tests/test_recipes.py`` does, command by command). ``{data_root}`` in a path is
replaced by the ``data_root`` given at load time.

Loading is strict: an unknown key at the top level, in ``method_args`` or in ``model_args`` is an error that names
the file and lists the valid keys, before any data or weights are read.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..experiment import Experiment

RECIPE_DIR = Path(__file__).parent


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if twice:
            raise ValueError(f"key {', '.join(map(repr, twice))} given twice in the mapping at line "
                             f"{node.start_mark.line + 1}: keep one")
        return super().construct_mapping(node, deep=deep)


def available() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name: str, **overrides) -> Experiment:
    """The Experiment of recipe ``name`` (a file name without ``.yaml``, or a path), then ``overrides``.

    Unknown recipes and unknown keys (in the file or in ``overrides``) are errors that list the valid ones.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name!r}; available recipes: {', '.join(available())}")
    try:
        values = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
        if not isinstance(values, dict):
            raise ValueError(f"expected a mapping of Experiment fields, got a {type(values).__name__}")
        exp = Experiment.from_dict({**values, **overrides})
        check(exp)
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {path.name} is not valid YAML: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"recipe {path.name}: {exc}") from None
    data_root = exp.data_root or ""
    if exp.pretrained:
        exp.pretrained = exp.pretrained.format(data_root=data_root)
    if exp.init:
        exp.init = exp.init.format(data_root=data_root)
    return exp


def check(exp: Experiment) -> None:
    """Raise if the method, its preset, a method parameter, the model or a model argument does not exist, or a
    value has the wrong type or range.

    The model is built on the ``meta`` device: shapes only, no memory, no weights read.
    """
    import torch

    from ..experiment_checks import check_experiment
    from ..models import build_model

    check_experiment(exp, device=False)  # types and ranges of every field and method parameter (the device: at run)
    with torch.device("meta"):
        build_model(exp.model, exp.num_classes, **exp.model_args)


def data_parallel_summary(exp: Experiment, world: int) -> str:
    """What ``world`` data-parallel processes (``torchrun --nproc_per_node``) make of ``exp``: the effective batch,
    the learning rate and the images seen. Each process draws its own batch and the gradients are averaged, so one
    step updates on ``world x batch_size`` images at the recipe's lr, which is not rescaled."""
    lr = exp.method_config.lr
    batch = world * exp.batch_size
    return (f"{world} processes x batch {exp.batch_size} = effective batch {batch} per step (gradients averaged), "
            f"lr {lr:g} as in the recipe (not rescaled), {exp.steps} steps: {batch * exp.steps} source images "
            f"(one process: {exp.batch_size * exp.steps}; --set steps={exp.steps // world} keeps that number)")
