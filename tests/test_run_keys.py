"""Run keys are stable: the configs of stored MiniCity runs, of every method at every preset and of every recipe,
as written when their folders were named, still hash to those names.

``tests/reference/run_keys.json`` holds each config as ``config.json`` stores it and the folder name it had; a
renamed config field, a moved default or a preset that changes value moves a run to a new folder and fails here
(a new field is declared ``keyed_off_default(...)``, ``udalib/methods/base.py``, so it enters a key only off
its default).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from udalib.experiment import Experiment

REFERENCE = json.loads((Path(__file__).parent / "reference" / "run_keys.json").read_text())


@pytest.mark.parametrize("entry", REFERENCE, ids=[f"{e['source']}:{e['name']}" for e in REFERENCE])
def test_stored_config_still_hashes_to_its_folder_name(entry):
    assert Experiment.from_dict(entry["config"]).name == entry["name"]


RECIPES = {e["source"].removeprefix("recipe "): e["name"] for e in REFERENCE if e["source"].startswith("recipe ")}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_recipe_file_still_names_the_run_it_named(recipe):
    """A recipe restates no default: leaving a paper default out of its YAML gives the same run."""
    from udalib.recipes import load_recipe

    assert load_recipe(recipe).name == RECIPES[recipe], (
        f"recipe {recipe} now names another run: if its values changed on purpose, write its new name in "
        "tests/reference/run_keys.json")


def test_reference_covers_every_method():
    from udalib.methods import METHODS

    assert {e["config"]["method"] for e in REFERENCE if e["source"] == "run store"} == set(METHODS)
