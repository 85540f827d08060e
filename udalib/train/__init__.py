"""The one training loop, its checkpoints, and data-parallel helpers."""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint, save_checkpoint
from .loop import FitOptions, fit, poly_lr, set_lr
from .select import Selector

__all__ = ["fit", "FitOptions", "Selector", "poly_lr", "set_lr", "CheckpointError", "atomic_save", "load_checkpoint",
           "save_checkpoint"]
