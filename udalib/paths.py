"""Where udalib keeps generated data, runs and cached checkpoints.

``UDALIB_HOME`` overrides everything. Otherwise, when udalib is installed from a checkout (``pip install -e .``),
the checkout's root is used, so ``make tutorial``, the notebooks (which run in ``notebooks/``) and the command
line all share one ``data/`` and one ``runs/``. An installed wheel falls back to ``~/.cache/udalib``.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    if os.environ.get("UDALIB_HOME"):
        return Path(os.environ["UDALIB_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.home() / ".cache" / "udalib"


def data_dir() -> Path:
    return Path(os.environ.get("UDALIB_DATA", home() / "data")).expanduser()


def runs_dir() -> Path:
    return Path(os.environ.get("UDALIB_RUNS", home() / "runs")).expanduser()
