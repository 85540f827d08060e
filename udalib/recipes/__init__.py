"""Full-scale recipes: one YAML file per paper experiment, listing only what differs from ``Experiment``.

Each value carries the seed's flag or the paper's symbol as a comment, so a recipe can be checked line by line
against the seed README. ``{data_root}`` in a path is replaced by the ``data_root`` given at load time.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from ..experiment import Experiment

RECIPE_DIR = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name: str, **overrides) -> Experiment:
    """The Experiment of recipe ``name`` (a file name without ``.yaml``, or a path), then ``overrides``.

    Unknown recipes and unknown keys (in the file or in ``overrides``) are errors that list the valid ones.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name!r}; available recipes: {', '.join(available())}")
    values = yaml.safe_load(path.read_text()) or {}
    exp = Experiment.from_dict(values)
    data_root = overrides.get("data_root", exp.data_root) or ""
    exp = replace(exp, **overrides) if overrides else exp
    if exp.pretrained:
        exp.pretrained = exp.pretrained.format(data_root=data_root)
    if exp.init:
        exp.init = exp.init.format(data_root=data_root)
    return exp
