"""Shared fixtures: a tiny MiniCity written to disk in the real layout, and small models."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_minicity(tmp_path_factory):
    """MiniCity at 32x64 with a handful of images per split (seconds to write)."""
    from udalib.data import minicity

    spec = minicity.MiniCitySpec(seed=3, height=32, width=64, splits={
        "source": {"train": 24, "val": 8},
        "target": {"train": 24, "val": 8, "oracle": 8},
        "rome": {"train": 8, "val": 8},
    })
    return minicity.generate(tmp_path_factory.mktemp("data") / "minicity", spec, workers=1)


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch):
    """Point udalib's data/ and runs/ at a temporary folder."""
    monkeypatch.setenv("UDALIB_HOME", str(tmp_path))
    monkeypatch.delenv("UDALIB_DATA", raising=False)
    monkeypatch.delenv("UDALIB_RUNS", raising=False)
    return tmp_path
