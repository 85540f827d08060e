"""Losses as pure functions of tensors, one paper per file, the paper's equation in each docstring."""

from .adversarial import SOURCE, TARGET, adversarial_loss, discriminator_loss, gan_loss
from .causality import dual_causality_loss, mean_pixel_entropy
from .dacs import class_mix_classes, class_mix_mask, confidence_weight, mix, pixel_weighted_ce
from .entropy import entropy_loss, entropy_map
from .maxsquare import (
    hard_pseudo_label_loss,
    image_wise_class_weights,
    iw_entropy_loss,
    iw_maxsquare_loss,
    maxsquare_loss,
    self_produced_guidance,
)
from .mic import block_mask, mask_image, masked_consistency_loss, teacher_pseudo_labels
from .segmentation import seg_loss

__all__ = ["seg_loss", "entropy_map", "entropy_loss", "maxsquare_loss", "image_wise_class_weights",
           "iw_maxsquare_loss", "iw_entropy_loss", "hard_pseudo_label_loss", "self_produced_guidance", "SOURCE",
           "TARGET", "gan_loss",
           "discriminator_loss", "adversarial_loss", "mean_pixel_entropy", "dual_causality_loss", "class_mix_classes",
           "class_mix_mask", "mix", "confidence_weight", "pixel_weighted_ce", "block_mask", "mask_image",
           "teacher_pseudo_labels", "masked_consistency_loss"]
