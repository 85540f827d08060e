"""The one training loop, its checkpoints, and data-parallel helpers."""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint, save_checkpoint
from .loop import fit, poly_lr, set_lr

__all__ = ["fit", "poly_lr", "set_lr", "CheckpointError", "atomic_save", "load_checkpoint", "save_checkpoint"]
