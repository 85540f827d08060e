"""Self-training in rounds: CBST (Zou et al., ECCV 2018) and MLSL (Iqbal & Ali, WACV 2020), as in
``engrjavediqbal/MLSL`` ``solve_AO.py`` and ``issegm/solve_ST1.py``.

Each round (the loop calls :meth:`SelfTraining.on_round_start` at evenly spaced steps):

1. predict every target training image with the current weights (eval mode, flip-averaged; MLSL also predicts
   random patches on their own and fuses them with the full image: *spatially independent* and *semantically
   consistent* labels);
2. class-balanced thresholds over the whole target set at this round's portion, and the pseudo-labels they select;
3. train on source batches plus target batches with their pseudo-labels (looked up by target index, flipped with
   the image), until the next round.

Pseudo-labels live in the method's ``pseudo_labels`` buffer, so a checkpoint holds them and a resumed run goes on
with the same round. ``keep_history`` also keeps each round's labels (MiniCity: for the notebook's inspector).

Deviations from the seed (MXNet, ResNet-38), stated: udalib runs DeepLab-v2 / MiniDeepLab on the one loop, with
its poly learning rate (the seed: a fixed lr per round, divided by sqrt 2; :func:`~udalib.losses.cbst_schedule`
gives it), separate source and target batches every step (the seed shuffles a source subset and the pseudo-labelled
images into one list; no source portion here), and losses at input resolution (the seed: on the stride-8 grid).

Taught in ``notebooks/07_self_training.ipynb``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import IGNORE_INDEX, SourceBatch, TargetBatch
from ..eval.evaluate import eval_mode, predict
from ..losses import seg_loss
from ..losses.self_training import (
    class_balanced_thresholds,
    class_confidences,
    fuse_patch_predictions,
    ohem_cross_entropy,
    random_patch_boxes,
    select_pseudo_labels,
    spatial_prior,
    weak_label_loss,
    weak_labels,
)
from .adabn import adapt_batchnorm
from .base import MINICITY_ADAPT, Choice, Method, MethodConfig, require_attributes

PREDICT_BATCH = 16  # target images per forward pass when pseudo-labelling
CACHE_BYTES = 1 << 30  # keep the round's posteriors in memory (float16) below this size, else predict twice

class SelfTrainingLoss(Choice):
    """The loss on pseudo-labels (and source labels) of the main head."""

    CE = "ce"  # cross-entropy (CBST, SISC-PWL)
    OHEM = "ohem"  # OHEM softmax (MLSL SISC: thresh 0.6, min_kept 256)


class PseudoLabelBN(Choice):
    """The BatchNorm statistics pseudo-labels are predicted with."""

    MODEL = "model"  # the model's (the original code bases)
    TARGET = "target"  # re-estimated on the target set first (AdaBN), on a copy


# Self-training on MiniCity: 3 rounds in the 60 steps, with the spatial prior (the original --with-prior, for GTA5;
# MiniCity shares its layouts across domains as GTA5 and Cityscapes do; without it, seed 0: 23.0 mIoU, below
# source-only, as confident colour errors get reinforced); MLSL's patches are a quarter of the image (the original: 25
# of 512x512 on 2048x1024) and its loss plain CE (OHEM, the original SISC loss, mines the hardest pixels of noisy
# pseudo-labels: seed 0, 26.9 mIoU against 35.5 with CE); each round's labels kept for notebook 07. Pseudo-labels are
# predicted with target BatchNorm statistics, as the MiniCity runs are trained (zoo.BN_STATS)
MINICITY_SELF_TRAINING = {"rounds": 3, "keep_history": True, "spatial_prior": True, "pseudo_label_bn": "target"}


@dataclass
class CBSTConfig(MethodConfig):
    # the weak-label loss (weak_labels) has no weight of its own: at lambda_target 0 its target term remains
    TARGET_WEIGHTS = ("lambda_target",)
    PRESETS = {"minicity": MINICITY_ADAPT | MINICITY_SELF_TRAINING}

    # lr: DeepLab-v2's (OptimConfig); the seed's ResNet-38: fixed 1e-4 / sqrt(2)^round
    lambda_target: float = 1.0  # weight of the pseudo-label loss (the seed: one list, weight 1)
    rounds: int = 6  # --num-round 6
    tgt_port: float = 0.15  # --init-tgt-port 0.15: portion of each class's pixels kept in round 0
    tgt_port_step: float = 0.05  # + 0.05 per round ...
    tgt_port_max: float = 0.5  # ... while below 0.5
    every: int = 4  # confidences subsampled [0::4] when building the thresholds
    flip: bool = True  # flip-averaged target predictions
    loss: SelfTrainingLoss = SelfTrainingLoss.CE  # "ce" (CBST, SISC-PWL) or "ohem" (MLSL SISC)
    patches: int = 0  # spatially independent patches per image (MLSL SISC: 25); 0 = full image only (CBST)
    patch_size: tuple[int, int] = (512, 512)  # (h, w) of a patch
    weak_labels: bool = False  # SISC-PWL: image-level multi-label head on the features, loss 0.04 * BCE
    keep_history: bool = False  # keep every round's pseudo-labels (analysis; memory: rounds x targets x H x W)
    spatial_prior: bool = False  # --with-prior: multiply posteriors by the per-pixel class frequency of the source
    #                               labels (the seed: GTA5 only, a downloaded file; here computed from the source set)
    pseudo_label_bn: PseudoLabelBN = PseudoLabelBN.MODEL  # "model": the model's BN statistics (the original code);
    #                                                       "target": re-estimated on the target set first (ours)


@dataclass
class MLSLConfig(CBSTConfig):
    PRESETS = {
        "minicity": MINICITY_ADAPT | MINICITY_SELF_TRAINING | {"patches": 4, "patch_size": (32, 64), "loss": "ce"},
        "pwl": {"loss": "ce", "patches": 0, "weak_labels": True},  # MLSL (SISC-PWL)
        "minicity_pwl": MINICITY_ADAPT | MINICITY_SELF_TRAINING | {"loss": "ce", "patches": 0, "weak_labels": True},
    }
    loss: SelfTrainingLoss = SelfTrainingLoss.OHEM  # MLSL (SISC): OHEM softmax
    patches: int = 25  # 25 random 512x512 patches per image


class SelfTraining(Method):
    r"""Rounds of pseudo-labelling and training on :math:`\mathcal{L}_{seg}(x_s, y_s) +
    \lambda_T \mathcal{L}(x_t, \hat y_t)` (+ the weak-label loss with ``weak_labels``)."""

    def __init__(self, model, cfg: CBSTConfig | None = None):
        require_attributes(model, "cbst / mlsl", "num_classes", "feat_channels")
        super().__init__(model, cfg or CBSTConfig())
        c = self.cfg
        if c.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {c.rounds}")
        self.rounds = c.rounds
        self.weak_head = None
        if c.weak_labels:
            self.weak_head = nn.Linear(model.feat_channels, model.num_classes)  # pooled features -> C logits
            mult = max(g.get("lr_mult", 1.0) for g in self.optimizers["model"].param_groups)
            self.optimizers["model"].add_param_group({"params": list(self.weak_head.parameters()),
                                                      "lr": mult * c.lr, "lr_mult": mult})
        # the round's pseudo-labels (uint8, 255 = ignored) and per-round statistics: all saved with the method
        self.register_buffer("pseudo_labels", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("round_index", torch.tensor(-1))
        self.register_buffer("thresholds", torch.ones(c.rounds, model.num_classes))
        self.register_buffer("kept_pixels", torch.zeros(c.rounds, model.num_classes, dtype=torch.long))
        self.register_buffer("history", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("prior", torch.empty(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("pseudo_labels", "history", "prior"):  # sized by the target set: take the checkpoint's shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def portion(self, round_index: int) -> float:
        c = self.cfg
        return min(c.tgt_port + c.tgt_port_step * round_index, max(c.tgt_port_max, c.tgt_port))

    # ----------------------------------------------------------------------------------- pseudo-labels
    @torch.no_grad()
    def target_posterior(self, model: nn.Module, images: Tensor, indices: list[int], round_index: int) -> Tensor:
        """``(B, C, H, W)`` posteriors of target images: flip-averaged, each fused with its own patch predictions
        (MLSL); patches are drawn from a generator seeded by (round, image index), the same in every pass."""
        c = self.cfg
        probs = predict(model, images, flip=c.flip)
        if not c.patches:
            return probs
        h, w = images.shape[-2:]
        size = (min(c.patch_size[0], h), min(c.patch_size[1], w))
        boxes = [random_patch_boxes(h, w, size, c.patches, torch.Generator().manual_seed(1_000_003 * round_index + i))
                 for i in indices]
        crops = torch.stack([image[:, r:r + size[0], q:q + size[1]] for image, bx in zip(images, boxes) for r, q in bx])
        patch_probs = predict(model, crops, flip=c.flip).split(c.patches)
        return torch.stack([fuse_patch_predictions(p, list(pp), bx) for p, pp, bx in zip(probs, patch_probs, boxes)])

    def on_round_start(self, round_index: int, target_dataset, source_dataset=None) -> None:
        device = next(self.model.parameters()).device
        n = len(target_dataset)
        image0 = target_dataset[0][0]
        if self.cfg.spatial_prior and self.prior.numel() == 0:
            if source_dataset is None:
                raise ValueError("spatial_prior needs the labelled source set: on_round_start(r, target, source)")
            prior = spatial_prior((source_dataset[i][1] for i in range(len(source_dataset))), self.model.num_classes)
            if prior.shape[-2:] != image0.shape[-2:]:  # source labels at another size: resize the frequencies
                prior = F.interpolate(prior[None], size=image0.shape[-2:], mode="bilinear", align_corners=True)[0]
            self.prior = prior.to(self.round_index.device)
        cache_ok = n * self.model.num_classes * image0[0].numel() * 2 < CACHE_BYTES
        cache: dict[int, Tensor] = {}
        predictor = self.model
        if self.cfg.pseudo_label_bn == "target":
            predictor = copy.deepcopy(self.model)
            batches = ((torch.stack([target_dataset[i][0] for i in range(b, min(b + PREDICT_BATCH, n))]),)
                       for b in range(0, n, PREDICT_BATCH))  # images only: target labels are never read
            adapt_batchnorm(predictor, batches, device=device)
        elif self.cfg.pseudo_label_bn != "model":
            raise ValueError(f"pseudo_label_bn must be 'model' or 'target', got {self.cfg.pseudo_label_bn!r}")

        def posteriors(start: int) -> Tensor:  # a batch of images; float16 in both passes, cached or not
            indices = list(range(start, min(start + PREDICT_BATCH, n)))
            if indices[0] not in cache:
                images = torch.stack([target_dataset[i][0] for i in indices]).to(device)
                probs = self.target_posterior(predictor, images, indices, round_index).cpu()
                if self.prior.numel():
                    probs = probs * self.prior.cpu()  # probmap = prior * probs, not renormalised (the seed)
                if not cache_ok:
                    return probs.half().float()
                cache[indices[0]] = probs.half()
            return cache[indices[0]].float()

        starts = range(0, n, PREDICT_BATCH)
        with eval_mode(predictor):
            confidences = class_confidences((p for s in starts for p in posteriors(s)), self.model.num_classes,
                                            every=self.cfg.every)
            thresholds = torch.as_tensor(class_balanced_thresholds(confidences, self.portion(round_index)),
                                         dtype=torch.float32)
            labels = torch.cat([select_pseudo_labels(posteriors(s), thresholds) for s in starts])
        self.pseudo_labels = labels.to(torch.uint8).to(self.round_index.device)
        self.round_index.fill_(round_index)
        r = min(round_index, self.cfg.rounds - 1)
        self.thresholds[r] = thresholds
        kept = labels[labels != IGNORE_INDEX]
        self.kept_pixels[r] = torch.bincount(kept, minlength=self.model.num_classes)[: self.model.num_classes]
        if self.cfg.keep_history:
            if self.history.numel() == 0:
                self.history = torch.full((self.cfg.rounds, *labels.shape), IGNORE_INDEX, dtype=torch.uint8)
            self.history[r] = labels.to(torch.uint8)

    def target_labels(self, tgt: TargetBatch) -> Tensor:
        """The stored pseudo-labels of a target batch, flipped like its images."""
        if self.pseudo_labels.numel() == 0:
            raise RuntimeError("no pseudo-labels yet: on_round_start must run before the first step (fit does)")
        labels = self.pseudo_labels[tgt.index.to(self.pseudo_labels.device)].long()
        if tgt.flipped is not None:
            flip = tgt.flipped.to(labels.device).bool()
            labels[flip] = labels[flip].flip(-1)
        return labels.to(tgt.image.device)

    # ----------------------------------------------------------------------------------------- training
    def _seg(self, logits: Tensor, label: Tensor) -> Tensor:
        return ohem_cross_entropy(logits, label) if self.cfg.loss == "ohem" else seg_loss(logits, label)

    def _weak(self, out: dict, label: Tensor) -> Tensor:
        grid = label[:, 4::8, 4::8]  # the seed: labels subsampled to the stride-8 grid
        logits = self.weak_head(out["feat"].mean(dim=(2, 3)))
        return weak_label_loss(logits, weak_labels(grid, self.model.num_classes))

    def step(self, src: SourceBatch, tgt: TargetBatch) -> dict[str, float]:
        c = self.cfg
        out_s = self.source_forward(src.image)
        l_src, logs = self.source_loss(out_s, src, main_loss=self._seg)  # OHEM or CE on the main head, CE on aux
        pseudo = self.target_labels(tgt)
        out_t = self.model(tgt.image)
        l_tgt = self._seg(out_t["out"], pseudo)
        loss = l_src + c.lambda_target * l_tgt
        logs |= {"target": l_tgt.item(), "pseudo_kept": (pseudo != IGNORE_INDEX).float().mean().item()}
        if self.weak_head is not None:
            l_weak = self._weak(out_s, src.label) + self._weak(out_t, pseudo)
            loss = loss + l_weak
            logs["weak"] = l_weak.item()
        self.update(self.optimizers["model"], loss)
        return logs


def pseudo_label_report(method: SelfTraining, true_labels: Tensor) -> dict[int, dict[str, np.ndarray]]:
    """Per round: pixels kept per class and their accuracy against held-out labels (analysis only; needs
    ``keep_history``). ``true_labels``: ``(T', H, W)``, the first T' images of the target set, in its order."""
    report = {}
    for r in range(int(method.round_index) + 1):
        labels = method.history[r][: len(true_labels)].long()  # the first len(true_labels) target images
        kept = labels != IGNORE_INDEX
        c = method.model.num_classes
        counts = torch.bincount(labels[kept], minlength=c)[:c]
        correct = torch.bincount(labels[kept & (labels == true_labels)], minlength=c)[:c]
        report[r] = {"kept": counts.numpy(), "correct": correct.numpy(),
                     "thresholds": method.thresholds[r].numpy(), "portion": method.portion(r)}
    return report


__all__ = ["SelfTraining", "CBSTConfig", "MLSLConfig", "pseudo_label_report"]
