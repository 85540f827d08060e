"""Training checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..locks import unique_tmp
from ..methods.base import Method
from ..models.checkpoint import CheckpointError, read_checkpoint


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, flush it to disk, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)  # unique per process and call; a killed writer's leftovers are removed under the lock
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike, method: Method, **extra) -> None:
    """The method's networks and buffers, its optimisers, and the loop's bookkeeping (``extra``)."""
    state = {"method": method.state_dict(),
             "optimizers": {name: opt.state_dict() for name, opt in method.optimizers.items()},
             **extra}
    atomic_save(state, path)


def load_checkpoint(path: str | os.PathLike, method: Method) -> dict:
    """Restore ``method`` (networks, buffers, optimisers) from ``path`` and return the whole state."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or "method" not in state or "optimizers" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint of udalib.train.fit "
                              "(use udalib.models.checkpoint to load model weights)")
    try:
        method.load_state_dict(state["method"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this method/model: {str(exc).splitlines()[0]}; "
                              "it was written by a different configuration: use another run_dir or resume=False") \
            from None
    missing = set(method.optimizers) ^ set(state["optimizers"])
    if missing:
        raise CheckpointError(f"{path}: optimisers {sorted(missing)} do not match this method's "
                              f"{sorted(method.optimizers)}")
    for name, opt in method.optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    return state
