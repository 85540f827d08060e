"""Self-training in rounds: CBST (Zou et al., ECCV 2018) and MLSL (Iqbal & Ali, WACV 2020, arXiv 1909.13776), as in
``engrjavediqbal/MLSL`` ``solve_AO.py`` and ``issegm/solve_ST1.py``.

Each round (the loop calls :meth:`SelfTraining.on_round_start` at evenly spaced steps):

1. predict every target training image with the current weights (eval mode, flip-averaged; MLSL also predicts
   random patches on their own and fuses them with the full image: *spatially independent* and *semantically
   consistent* labels);
2. class-balanced thresholds over the whole target set at this round's portion, and the pseudo-labels they select;
3. train on source batches plus target batches with their pseudo-labels (looked up by target index, flipped with
   the image), until the next round.

Pseudo-labels below ``DISK_BYTES`` (MiniCity) live in the method's ``pseudo_labels`` buffer, so a checkpoint holds
them. Larger ones (Cityscapes train at 1024x512: 1.5 GB) go to one ``.npy`` file per round in ``label_dir`` (the run
folder's ``pseudo_labels/``, set by :meth:`SelfTraining.bind`), written atomically and memory-mapped; the checkpoint
then holds the file's path (``label_file``) and the round, and a resumed run reopens the same labels.
``keep_history`` also keeps each round's labels (MiniCity: for the notebook's inspector).

The full-scale geometry of ``engrjavediqbal/MLSL`` is in the config, off by default (MiniCity predicts and trains
whole images): pseudo-labels predicted at ``infer_size`` (``--test-scales 2048``) with the SI patches drawn on that
image; training crops of ``crop_size`` (``--crop-size 500``, 504 after rounding to the stride 8) at a random scale
(``--scale-rate-range 0.7,1.3``), centred on a rare class with probability ``mine_port`` (``--mine-port 0.8``); a
source portion (``--init-src-port 0.03``): each step's images then come from one list of a source subset and the
pseudo-labelled target images, as the reference's; ``lr_policy = "round"``: a fixed lr per round, divided by
sqrt 2 after each. Deviations, stated: udalib runs DeepLab-v2 / MiniDeepLab, its losses at input resolution (the
reference: on the stride-8 grid), pseudo-labels at the loaded resolution (posteriors predicted at ``infer_size`` are
resized back), and with ``lr_policy = "poly"`` (MiniCity) the poly learning rate.

Taught in ``notebooks/08_self_training.ipynb``.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import IGNORE_INDEX, SourceBatch, TargetBatch
from ..eval.evaluate import eval_mode, predict
from ..locks import unique_tmp
from ..losses import seg_loss
from ..losses.self_training import (
    cbst_schedule,
    class_balanced_thresholds,
    class_confidences,
    class_sizes,
    crop_box,
    crop_resize,
    fuse_patch_predictions,
    mine_classes,
    ohem_cross_entropy,
    random_patch_boxes,
    scale_crop_side,
    select_pseudo_labels,
    source_subset,
    spatial_prior,
    weak_label_loss,
    weak_labels,
)
from .adabn import adapt_batchnorm
from .base import MINICITY_ADAPT, Choice, Method, MethodConfig, keyed_off_default, require_attributes

PREDICT_BATCH = 16  # target images per forward pass when pseudo-labelling
CACHE_BYTES = 1 << 30  # keep the round's posteriors in memory (float16) below this size, else predict twice
DISK_BYTES = 1 << 28  # pseudo-labels of a round above this size go to a memory-mapped file in label_dir
FEAT_STRIDE = 8  # training crops are rounded up to a multiple of it (the reference's make_divisible)

class SelfTrainingLoss(Choice):
    """The loss on pseudo-labels (and source labels) of the main head."""

    CE = "ce"  # cross-entropy (CBST, SISC-PWL)
    OHEM = "ohem"  # OHEM softmax (MLSL SISC: thresh 0.6, min_kept 256)


class PseudoLabelBN(Choice):
    """The BatchNorm statistics pseudo-labels are predicted with."""

    MODEL = "model"  # the model's (the original code bases)
    TARGET = "target"  # re-estimated on the target set first (AdaBN), on a copy


class LrPolicy(Choice):
    """The learning rate over the training."""

    POLY = "poly"  # the loop's poly decay (MiniCity)
    ROUND = "round"  # fixed per round, divided by sqrt 2 after each (MLSL solve_AO.py:151)


class WeakHead(Choice):
    """The image-level head of the weak-label loss (SISC-PWL)."""

    LINEAR = "linear"  # global pool -> fc C (MiniCity)
    FC512 = "fc512"  # global pool -> fc 512 -> fc C (MLSL util1/symbol/resnet_v2.py:362-366, rn_top_1)


# Self-training on MiniCity: 3 rounds in the 60 steps, with the spatial prior (the original --with-prior, for GTA5;
# MiniCity shares its layouts across domains as GTA5 and Cityscapes do; without it, seed 0: 23.0 mIoU, below
# source-only, as confident colour errors get reinforced); MLSL's patches are a quarter of the image (the original: 25
# of 512x512 on 2048x1024) and its loss plain CE (OHEM, the original SISC loss, mines the hardest pixels of noisy
# pseudo-labels: seed 0, 26.9 mIoU against 35.5 with CE); each round's labels kept for notebook 08. Pseudo-labels are
# predicted with target BatchNorm statistics, as the MiniCity runs are trained (zoo.BN_STATS)
MINICITY_SELF_TRAINING = {"rounds": 3, "keep_history": True, "spatial_prior": True, "pseudo_label_bn": "target"}


@dataclass
class CBSTConfig(MethodConfig):
    # the weak-label loss (weak_labels) has no weight of its own: at lambda_target 0 its target term remains
    TARGET_WEIGHTS = ("lambda_target",)
    PRESETS = {"minicity": MINICITY_ADAPT | MINICITY_SELF_TRAINING}

    # lr: DeepLab-v2's (OptimConfig); the original's ResNet-38: fixed 1e-4 / sqrt(2)^round
    lambda_target: float = 1.0  # weight of the pseudo-label loss (the original: one list, weight 1)
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
    #                               labels (original: GTA5 only, a downloaded file; here computed from the source set)
    pseudo_label_bn: PseudoLabelBN = PseudoLabelBN.MODEL  # "model": the model's BN statistics (the original code);
    #                                                       "target": re-estimated on the target set first (ours)
    # full-scale geometry and schedule of engrjavediqbal/MLSL (README commands), all off by default and in the
    # run key only off it
    # --test-scales 2048: longer side of the target images (bicubic) when pseudo-labelling; the SI patches are drawn
    # on that image; 0: as loaded
    infer_size: int = keyed_off_default(0)
    # --crop-size 500 (504 after rounding up to the stride 8): training crops; 0: whole images
    crop_size: int = keyed_off_default(0)
    scale_range: tuple[float, float] = keyed_off_default((1.0, 1.0))  # --scale-rate-range 0.7,1.3: target/origin
    # --origin-size / --origin-size-tgt 2048 (max_shape (1024, 2048) for both domains)
    origin_size: int = keyed_off_default(2048)
    # longer side of the raw (source, target) images the reference crops (GTA5 1914, Cityscapes 2048); 0: the loaded
    # size
    raw_size: tuple[int, int] = keyed_off_default((0, 0))
    mine_port: float = keyed_off_default(0.0)  # --mine-port 0.8: probability of a crop centred on a rare class
    mine_ids: int = keyed_off_default(3)  # --mine-id-number 3: the rare classes (smallest share of the pseudo-labels)
    mine_thresh: float = keyed_off_default(0.001)  # --mine-thresh 0.001: classes below this share come first
    # --init-src-port 0.03: portion of the source images mixed into each round's list; 0: a source batch and a
    # target batch every step (udalib's)
    src_port: float = keyed_off_default(0.0)
    src_port_step: float = keyed_off_default(0.0025)  # solve_AO.py --step-src-port 0.0025 ...
    src_port_max: float = keyed_off_default(0.06)  # ... while below --max-src-port 0.06
    # "round": fixed lr per round, / sqrt(2) after each (solve_AO.py)
    lr_policy: LrPolicy = keyed_off_default(LrPolicy.POLY)
    weak_head: WeakHead = keyed_off_default(WeakHead.LINEAR)  # "fc512": pool -> fc 512 -> fc C (issegm1 rn_top_1)


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
        if c.src_port > 0 and not c.crop_size:
            raise ValueError("src_port > 0 mixes source and target images in one batch: set crop_size (e.g. 500)")
        if c.src_port > 0 and c.lambda_target not in (0.0, 1.0):
            raise ValueError("with src_port > 0 the batch is one list (one loss): lambda_target must be 1 (or 0, "
                             f"the control), got {c.lambda_target}")
        self.weak_head = None
        if c.weak_labels:
            if c.weak_head == "fc512":  # issegm1 rn_top_1: pool -> fc 512 -> fc C, no activation between
                self.weak_head = nn.Sequential(nn.Linear(model.feat_channels, 512), nn.Linear(512, model.num_classes))
            else:
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
        # rare classes of the round for the mined crops: classes by increasing share, and those below mine_thresh
        self.register_buffer("mine_order", torch.arange(model.num_classes))
        self.register_buffer("mine_priority", torch.zeros(model.num_classes, dtype=torch.bool))
        self.register_buffer("label_file", torch.empty(0, dtype=torch.uint8))  # utf-8 path of the round's labels
        self.label_dir: Path | None = None  # where large pseudo-labels go (bind: the run folder's pseudo_labels/)
        self._disk_labels: np.ndarray | None = None  # the round's labels, memory-mapped, when on disk
        self._source_set = None
        self._subset: np.ndarray | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("label_file", "mine_order", "mine_priority"):  # absent from checkpoints written before them
            if prefix + name not in state_dict:
                state_dict[prefix + name] = getattr(self, name).clone()
        for name in ("pseudo_labels", "history", "prior", "label_file"):  # sized by the data: the checkpoint's shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._disk_labels = None
        if self.label_file.numel():
            self._disk_labels = self._open_labels(Path(bytes(self.label_file.tolist()).decode()))

    def _open_labels(self, path: Path) -> np.ndarray:
        if not path.exists() and self.label_dir is not None and (Path(self.label_dir) / path.name).exists():
            path = Path(self.label_dir) / path.name  # the run folder was moved
        if not path.exists():
            raise FileNotFoundError(f"pseudo-labels {path} of the checkpoint are missing: restore the file or start "
                                    "the run afresh (--no-resume)")
        return np.load(path, mmap_mode="r")

    def bind(self, source_dataset, target_dataset, run_dir: str | os.PathLike | None) -> None:
        """Give the method its data and run folder before ``fit`` (the experiment does): the source set its
        source portion reads, and ``run_dir / "pseudo_labels"`` for large pseudo-labels."""
        self._source_set = source_dataset
        if run_dir is not None:
            self.label_dir = Path(run_dir) / "pseudo_labels"
            if self.label_file.numel() and self._disk_labels is None:
                self._disk_labels = self._open_labels(Path(bytes(self.label_file.tolist()).decode()))

    def lr_factor(self, step: int, steps: int) -> float | None:
        """The loop's lr is ``initial lr x lr_factor`` when not None: ``lr_policy = "round"``, a fixed lr per round
        divided by sqrt 2 after each (``solve_AO.py``, line 151); None (poly) otherwise."""
        if self.cfg.lr_policy != "round":
            return None
        r = max(r for r in range(self.rounds) if r * steps // self.rounds <= step)
        return 1.0 / math.sqrt(2) ** r

    def source_portion(self, round_index: int) -> float:
        """Portion of the source images in round ``round_index``'s list: ``src_port`` + ``src_port_step`` per round
        while below ``src_port_max`` (``solve_AO.py``, lines 154-155)."""
        c = self.cfg
        return cbst_schedule(round_index, src_port=c.src_port, src_step=c.src_port_step,
                             src_max=c.src_port_max)["src_port"]

    def patch_boxes(self, height: int, width: int, round_index: int, index: int) -> list[tuple[int, int]]:
        """Top-left corners of target image ``index``'s SI patches in round ``round_index``, on the image as
        predicted (``height`` x ``width``: at ``infer_size`` when set); the same in every pass."""
        c = self.cfg
        size = (min(c.patch_size[0], height), min(c.patch_size[1], width))
        return random_patch_boxes(height, width, size, c.patches,
                                  torch.Generator().manual_seed(1_000_003 * round_index + index))

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        """Size the target images are predicted at: the longer side at ``infer_size`` (``ts.Scale``), or as loaded."""
        if not self.cfg.infer_size:
            return height, width
        scale = self.cfg.infer_size / max(height, width)
        return round(height * scale), round(width * scale)

    def portion(self, round_index: int) -> float:
        c = self.cfg
        return min(c.tgt_port + c.tgt_port_step * round_index, max(c.tgt_port_max, c.tgt_port))

    # ----------------------------------------------------------------------------------- pseudo-labels
    @torch.no_grad()
    def target_posterior(self, model: nn.Module, images: Tensor, indices: list[int], round_index: int) -> Tensor:
        """``(B, C, H, W)`` posteriors of target images: flip-averaged, each fused with its own patch predictions
        (MLSL); patches are drawn from a generator seeded by (round, image index), the same in every pass."""
        c = self.cfg
        loaded = images.shape[-2:]
        size = self.inference_size(*loaded)
        if size != tuple(loaded):  # ts.Scale(test_scale, Image.CUBIC)
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False)
        probs = predict(model, images, flip=c.flip)
        if c.patches:
            h, w = images.shape[-2:]
            ph, pw = min(c.patch_size[0], h), min(c.patch_size[1], w)
            boxes = [self.patch_boxes(h, w, round_index, i) for i in indices]
            crops = torch.stack([image[:, r:r + ph, q:q + pw] for image, bx in zip(images, boxes) for r, q in bx])
            patch_probs = predict(model, crops, flip=c.flip).split(c.patches)
            probs = torch.stack([fuse_patch_predictions(p, list(pp), bx)
                                 for p, pp, bx in zip(probs, patch_probs, boxes)])
        if probs.shape[-2:] != loaded:  # back to the loaded resolution, where the labels are used
            probs = F.interpolate(probs, size=loaded, mode="bilinear", align_corners=False)
        return probs

    def on_round_start(self, round_index: int, target_dataset, source_dataset=None) -> None:
        c = self.cfg
        device = next(self.model.parameters()).device
        n = len(target_dataset)
        image0 = target_dataset[0][0]
        if source_dataset is not None:
            self._source_set = source_dataset
        if c.spatial_prior and self.prior.numel() == 0:
            if source_dataset is None:
                raise ValueError("spatial_prior needs the labelled source set: on_round_start(r, target, source)")
            prior = spatial_prior((source_dataset[i][1] for i in range(len(source_dataset))), self.model.num_classes)
            if prior.shape[-2:] != image0.shape[-2:]:  # source labels at another size: resize the frequencies
                prior = F.interpolate(prior[None], size=image0.shape[-2:], mode="bilinear", align_corners=True)[0]
            self.prior = prior.to(self.round_index.device)
        if c.src_port > 0:
            if self._source_set is None:
                raise ValueError("src_port needs the labelled source set: on_round_start(r, target, source)")
            self._subset = source_subset(len(self._source_set), self.source_portion(round_index))
        cache_ok = n * self.model.num_classes * image0[0].numel() * 2 < CACHE_BYTES
        cache: dict[int, Tensor] = {}
        predictor = self.model
        if c.pseudo_label_bn == "target":
            predictor = copy.deepcopy(self.model)
            batches = ((torch.stack([target_dataset[i][0] for i in range(b, min(b + PREDICT_BATCH, n))]),)
                       for b in range(0, n, PREDICT_BATCH))  # images only: target labels are never read
            adapt_batchnorm(predictor, batches, device=device)
        elif c.pseudo_label_bn != "model":
            raise ValueError(f"pseudo_label_bn must be 'model' or 'target', got {c.pseudo_label_bn!r}")
        h, w = image0.shape[-2:]
        ih, iw = self.inference_size(h, w)
        batch = max(1, PREDICT_BATCH * h * w // (ih * iw))  # fewer images per pass at a larger inference size

        def posteriors(start: int) -> Tensor:  # a batch of images; float16 in both passes, cached or not
            indices = list(range(start, min(start + batch, n)))
            if indices[0] not in cache:
                images = torch.stack([target_dataset[i][0] for i in indices]).to(device)
                probs = self.target_posterior(predictor, images, indices, round_index).cpu()
                if self.prior.numel():
                    probs = probs * self.prior.cpu()  # probmap = prior * probs, not renormalised (the original)
                if not cache_ok:
                    return probs.half().float()
                cache[indices[0]] = probs.half()
            return cache[indices[0]].float()

        starts = range(0, n, batch)
        r = min(round_index, c.rounds - 1)
        on_disk = self.label_dir is not None and n * h * w > DISK_BYTES
        with eval_mode(predictor):
            confidences = class_confidences((p for s in starts for p in posteriors(s)), self.model.num_classes,
                                            every=c.every)
            thresholds = torch.as_tensor(class_balanced_thresholds(confidences, self.portion(round_index)),
                                         dtype=torch.float32)
            if on_disk:  # written beside its final name, renamed when complete: a killed pass leaves no label file
                path = Path(self.label_dir) / f"round_{round_index}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = unique_tmp(path).with_suffix(".npy")
                labels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, h, w))
            else:
                labels = torch.empty((n, h, w), dtype=torch.uint8)
            if c.keep_history and self.history.numel() == 0:
                self.history = torch.full((c.rounds, n, h, w), IGNORE_INDEX, dtype=torch.uint8)
            kept = torch.zeros(self.model.num_classes, dtype=torch.long)
            for s in starts:
                chunk = select_pseudo_labels(posteriors(s), thresholds).to(torch.uint8)
                labels[s:s + len(chunk)] = chunk.numpy() if on_disk else chunk
                valid = chunk[chunk != IGNORE_INDEX].long()
                kept += torch.bincount(valid, minlength=self.model.num_classes)[: self.model.num_classes]
                if c.keep_history:
                    self.history[r, s:s + len(chunk)] = chunk
        if on_disk:
            labels.flush()
            del labels
            os.replace(tmp, path)
            self._disk_labels = np.load(path, mmap_mode="r")
            self.pseudo_labels = torch.empty(0, dtype=torch.uint8, device=self.round_index.device)
            self.label_file = torch.tensor(list(str(path.resolve()).encode()), dtype=torch.uint8,
                                           device=self.round_index.device)
        else:
            self._disk_labels = None
            self.pseudo_labels = labels.to(self.round_index.device)
            self.label_file = torch.empty(0, dtype=torch.uint8, device=self.round_index.device)
        self.round_index.fill_(round_index)
        self.thresholds[r] = thresholds
        self.kept_pixels[r] = kept
        mine_ids, priority = mine_classes(class_sizes(confidences), self.model.num_classes, c.mine_thresh)
        self.mine_order.copy_(torch.as_tensor(mine_ids))
        self.mine_priority.zero_()
        self.mine_priority[torch.as_tensor(priority, dtype=torch.long)] = True

    def target_labels(self, tgt: TargetBatch) -> Tensor:
        """The stored pseudo-labels of a target batch, flipped like its images."""
        if self._disk_labels is not None:
            labels = torch.from_numpy(np.stack([self._disk_labels[int(i)] for i in tgt.index])).long()
        elif self.pseudo_labels.numel() == 0:
            raise RuntimeError("no pseudo-labels yet: on_round_start must run before the first step (fit does)")
        else:
            labels = self.pseudo_labels[tgt.index.to(self.pseudo_labels.device)].long()
        if tgt.flipped is not None:
            flip = tgt.flipped.to(labels.device).bool()
            labels[flip] = labels[flip].flip(-1)
        return labels.to(tgt.image.device)

    # ----------------------------------------------------------------------------------------- training
    def _seg(self, logits: Tensor, label: Tensor) -> Tensor:
        return ohem_cross_entropy(logits, label) if self.cfg.loss == "ohem" else seg_loss(logits, label)

    def _weak(self, out: dict, label: Tensor) -> Tensor:
        grid = label[:, 4::8, 4::8]  # the original: labels subsampled to the stride-8 grid
        logits = self.weak_head(out["feat"].mean(dim=(2, 3)))
        return weak_label_loss(logits, weak_labels(grid, self.model.num_classes))

    def _crop(self, image: Tensor, label: Tensor, raw_long: int) -> tuple[Tensor, Tensor]:
        """One training crop of an image ``(3, H, W)`` and its labels: a random scale, mined or uniform, resized to
        ``crop_size`` rounded up to the stride (504 for 500). The scale applies to the raw image (longer side
        ``raw_long``); the crop's side in loaded pixels follows from it."""
        c = self.cfg
        size = math.ceil(c.crop_size / FEAT_STRIDE) * FEAT_STRIDE
        loaded = max(label.shape[-2:])
        side = max(1, round(scale_crop_side(size, c.scale_range, c.origin_size, None) * loaded / (raw_long or loaded)))
        top, left, _ = crop_box(label, side, self.mine_order[: c.mine_ids].tolist(),
                                torch.nonzero(self.mine_priority)[:, 0].tolist(), c.mine_port, None)
        return crop_resize(image, label, top, left, side, size)

    def _crops(self, images: Tensor, labels: Tensor, raw_long: int) -> tuple[Tensor, Tensor]:
        pairs = [self._crop(image, label, raw_long) for image, label in zip(images, labels)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def _mixed_step(self, tgt: TargetBatch, pseudo: Tensor) -> dict[str, float]:
        """``src_port`` > 0: each image of the batch is a source image of the round's subset with probability
        :math:`n_s / (n_s + n_t)` (the reference's one shuffled list of both), else the loop's target image; one
        loss over the batch (OHEM or CE), the auxiliary head on its source images. The loop loads no source
        batch (:attr:`draws_source_batches`)."""
        c = self.cfg
        n_s = len(self._subset)
        n_t = len(self._disk_labels) if self._disk_labels is not None else len(self.pseudo_labels)
        q = n_s / (n_s + n_t)
        images, labels, from_source = [], [], []
        for k in range(len(tgt.image)):
            if n_s and float(torch.rand(1)) < q:
                image, label, *_ = self._source_set[int(self._subset[int(torch.randint(0, n_s, (1,)))])]
                if float(torch.rand(1)) < 0.5:  # random horizontal flip, p = 0.5
                    image, label = image.flip(-1), label.flip(-1)
                image, label = self._crop(image.to(tgt.image.device), label.to(pseudo.device), c.raw_size[0])
                from_source.append(True)
            else:
                image, label = self._crop(tgt.image[k], pseudo[k], c.raw_size[1])
                from_source.append(False)
            images.append(image)
            labels.append(label)
        image, label = torch.stack(images), torch.stack(labels)
        is_source = torch.tensor(from_source, device=label.device)[:, None, None]
        source_only = torch.where(is_source, label, torch.full_like(label, IGNORE_INDEX))
        if c.lambda_target == 0:  # the control: target images only move BatchNorm statistics
            label = source_only
        out = self.model(image)
        loss = self._seg(out["out"], label) if (label != IGNORE_INDEX).any() else out["out"].sum() * 0.0
        logs = {"seg": loss.item(), "source_images": float(sum(from_source))}
        if c.lambda_seg and "aux" in out and (source_only != IGNORE_INDEX).any():
            loss = loss + c.lambda_seg * seg_loss(out["aux"], source_only)
        if self.weak_head is not None:
            l_weak = self._weak(out, label)
            loss = loss + l_weak
            logs["weak"] = l_weak.item()
        self.update(self.optimizers["model"], loss)
        return logs

    @property
    def draws_source_batches(self) -> bool:
        """With ``src_port`` > 0 the source images come from the round's subset (:meth:`_mixed_step`): the loop
        loads no source batch."""
        return not self.cfg.src_port > 0

    def step(self, src: SourceBatch | None, tgt: TargetBatch) -> dict[str, float]:
        c = self.cfg
        pseudo = self.target_labels(tgt)
        if c.src_port > 0:
            return self._mixed_step(tgt, pseudo)
        tgt_image = tgt.image
        if c.crop_size:
            src = SourceBatch(*self._crops(src.image, src.label, c.raw_size[0]))
            tgt_image, pseudo = self._crops(tgt.image, pseudo, c.raw_size[1])
        out_s = self.source_forward(src.image)
        l_src, logs = self.source_loss(out_s, src, main_loss=self._seg)  # OHEM or CE on the main head, CE on aux
        out_t = self.model(tgt_image)
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


__all__ = ["SelfTraining", "CBSTConfig", "MLSLConfig", "LrPolicy", "WeakHead", "pseudo_label_report"]
