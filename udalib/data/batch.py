"""The two batch types that every method's ``step`` receives.

The target batch has no ``label`` field: target labels never reach a method. The training loop drops
them in exactly one place (``udalib.train.loop``), and only evaluation reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

IGNORE_INDEX = 255  # one ignore value everywhere, in every label table and every loss


@dataclass
class SourceBatch:
    image: Tensor  # (N, 3, H, W) float
    label: Tensor  # (N, H, W) int64, IGNORE_INDEX where unlabelled

    def to(self, device, non_blocking: bool = False) -> SourceBatch:
        return SourceBatch(self.image.to(device, non_blocking=non_blocking),
                           self.label.to(device, non_blocking=non_blocking))


@dataclass
class TargetBatch:
    image: Tensor  # (N, 3, H, W) float -- no label field, on purpose
    index: Tensor  # (N,) positions in the target dataset, for pseudo-label look-up
    flipped: Tensor | None = None  # (N,) bool: the image was flipped horizontally by augmentation

    def to(self, device, non_blocking: bool = False) -> TargetBatch:
        return TargetBatch(self.image.to(device, non_blocking=non_blocking), self.index, self.flipped)
