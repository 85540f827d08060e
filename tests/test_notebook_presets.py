"""One source for each number: a notebook's parameters cell does not retype a method's setting.

A parameter named after a method parameter (``LAMBDA_TARGET`` -> ``lambda_target``) defaults to ``None`` and is
resolved from ``methods.method_config(name, "minicity")`` (the paper's defaults, then ``methods.PRESETS``), so a
preset changed in the library changes the notebook with it."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from udalib.methods import METHODS

SOURCES = sorted((Path(__file__).parents[1] / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
METHOD_PARAMETERS = {f.name for _, config in METHODS.values() for f in fields(config)}


def parameters_cell(text: str) -> str:
    cell = text.split('# %% tags=["parameters"]', 1)[1]
    return cell.split("\n# %%", 1)[0]


def retyped(text: str) -> list[str]:
    """Names of the parameters cell that give a method parameter a literal number or truth value."""
    out = []
    for node in ast.parse(parameters_cell(text)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = node.value
            if isinstance(value, ast.UnaryOp):
                value = value.operand
            literal = isinstance(value, ast.Constant) and isinstance(value.value, (int, float, bool))
            if literal and node.target.id.lower() in METHOD_PARAMETERS:
                out.append(node.target.id)
    return out


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_parameters_do_not_retype_method_settings(source):
    names = retyped(source.read_text())
    assert not names, (f"{source.name}: {', '.join(names)} retype a method setting; default them to None and resolve "
                       f"them from methods.method_config(NAME, 'minicity')")


def test_the_rule_sees_a_retyped_weight():
    cell = '# %% tags=["parameters"]\nSEED: int = 0\nLAMBDA_TARGET: float = 5.0  # x\nSTEPS: int = 60\n# %%\n'
    assert retyped(cell) == ["LAMBDA_TARGET"]
    assert retyped(cell.replace("5.0", "None")) == []


@pytest.mark.parametrize("source", [s for s in SOURCES if "LAMBDA_" in parameters_cell(s.read_text())],
                         ids=lambda p: p.stem)
def test_a_none_parameter_is_resolved(source):
    """Every None parameter named after a method parameter is assigned from a method config before use."""
    text = source.read_text()
    for node in ast.parse(parameters_cell(text)).body:
        if isinstance(node, ast.AnnAssign) and node.target.id.lower() in METHOD_PARAMETERS:
            name = node.target.id
            assert f"{name} = " in text.split('# %% tags=["parameters"]', 1)[1].split("\n# %%", 2)[2], \
                f"{source.name}: {name} is never resolved from the preset after the parameters cell"
