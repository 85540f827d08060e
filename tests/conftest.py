"""Shared fixtures: a tiny MiniCity written to disk in the real layout, and small models."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(min(2, torch.get_num_threads()))


_TINY = {}  # the tiny MiniCity, written once per pytest run and shared by every test module


@pytest.fixture(scope="module")
def tiny_minicity(tmp_path_factory):
    """MiniCity at 32x64 with a handful of images per split (seconds to write, once per pytest run: its folder
    lives under pytest's base temporary directory, which outlasts every module). Tests copy it, never write to it."""
    from udalib.data import minicity

    if "root" not in _TINY:
        spec = minicity.MiniCitySpec(seed=3, height=32, width=64, splits={
            "source": {"train": 24, "val": 8},
            "target": {"train": 24, "val": 8, "oracle": 8},
            "rome": {"train": 8, "val": 8},
        })
        _TINY["root"] = minicity.generate(tmp_path_factory.mktemp("data") / "minicity", spec, workers=1)
    return _TINY["root"]


@pytest.fixture(scope="module")
def minicity_home(tmp_path_factory, tiny_minicity):
    """A fresh UDALIB_HOME holding a copy of the tiny MiniCity; udalib reads and writes there for the module."""
    import shutil

    from udalib.data.minicity import MiniCitySpec

    home = tmp_path_factory.mktemp("home")
    shutil.copytree(tiny_minicity, home / "data" / MiniCitySpec().name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UDALIB_HOME", str(home))
        mp.delenv("UDALIB_DATA", raising=False)
        mp.delenv("UDALIB_RUNS", raising=False)
        yield home


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch):
    """Point udalib's data/ and runs/ at a temporary folder."""
    monkeypatch.setenv("UDALIB_HOME", str(tmp_path))
    monkeypatch.delenv("UDALIB_DATA", raising=False)
    monkeypatch.delenv("UDALIB_RUNS", raising=False)
    return tmp_path
