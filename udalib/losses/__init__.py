"""Losses as pure functions of tensors, one paper per file, the paper's equation in each docstring."""

from .segmentation import seg_loss

__all__ = ["seg_loss"]
