r"""Self-training: CBST's class-balanced pseudo-labels (Zou et al., ECCV 2018) and MLSL's spatially independent and
semantically consistent labels (Iqbal & Ali, WACV 2020, arXiv 1909.13776; ``engrjavediqbal/MLSL``).

Pure functions on posteriors and labels. The round structure that uses them is in
:mod:`udalib.methods.self_training`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import IGNORE_INDEX

# MLSL's fixed class priors pi_c (19 Cityscapes classes) of the weak-label rule, issegm1/data1.py
MLSL_CLASS_PRIORS = (0.3232, 0.085, 0.1693, 0.0193, 0.0075, 0.0107, 0.0018, 0.0013, 0.0765, 0.0220, 0.1364, 0.0039,
                     0.0023, 0.0274, 0.0169, 0.0181, 0.0143, 0.0019, 0.0031)


def class_confidences(probs: Iterable[Tensor], num_classes: int, *, every: int = 4,
                      extra_zero: bool = True) -> list[np.ndarray]:
    """CBST's per-class confidence lists over a whole target set.

    For each image ``(C, H, W)`` and class ``c``: the maximum probability of the pixels predicted as ``c``, every
    ``every``-th value in row-major order (``[0::4]`` in the original). ``extra_zero`` reproduces the original's lists,
    which all start with one extra ``0.0`` (``engrjavediqbal/MLSL`` ``issegm/solve_ST1.py``, ``_val_impl``); it
    matters only at ``portion = 1`` (see
    :func:`class_balanced_thresholds`). A class never predicted has an empty list (with the extra zero: ``[0.0]``).
    """
    lists: list[list[np.ndarray]] = [[np.zeros(1)] if extra_zero else [] for _ in range(num_classes)]
    for prob in probs:
        conf, pred = prob.max(dim=0)
        conf, pred = conf.reshape(-1).numpy(), pred.reshape(-1).numpy()
        for c in np.unique(pred):
            lists[c].append(conf[pred == c][::every])
    return [np.concatenate(parts) if parts else np.zeros(0) for parts in lists]


def global_threshold(confidences: list[np.ndarray], portion: float, *, extra_zero: bool = True) -> np.ndarray:
    r"""CBST's ``kc-policy global``: one threshold for every class, from all lists pooled (the top ``portion`` of
    all pixels, whatever their class), with the same rules as :func:`class_balanced_thresholds`.

    ``extra_zero`` reproduces the original's pool, which starts with one more ``0.0`` of its own before the class lists
    (themselves each with their extra zero from :func:`class_confidences`): ``array_pixel = 0.0`` then
    ``np.append`` of every class's list (``engrjavediqbal/MLSL`` ``issegm/solve_ST1.py``, lines 773 and 976-984).
    With :math:`n` pooled values, :math:`k = \lfloor (n + 1)\, p \rfloor` instead of :math:`\lfloor n p
    \rfloor`, which moves the threshold one value down whenever the two differ."""
    pool = [np.zeros(1)] if extra_zero else []
    pooled = class_balanced_thresholds([np.concatenate(pool + list(confidences))], portion)[0]
    return np.full(len(confidences), pooled)


def class_balanced_thresholds(confidences: list[np.ndarray], portion: float) -> np.ndarray:
    r"""Class-balanced thresholds (CBST's ``kc-policy cb``): for each class, the confidence above which the top
    ``portion`` of its pixels lie,

    .. math:: k_c = \lfloor n_c \cdot p \rfloor, \qquad
              \theta_c = \mathrm{sort}_\downarrow(\text{conf}_c)[k_c - 1] \;\text{ if } k_c > 0, \text{ else } 1

    where :math:`n_c` counts the class's list (0 for a class never predicted). A threshold of 0 becomes 1, so a
    class with no pixels (or :math:`k_c = 0`) selects nothing: as the original, which writes 0 and replaces it by 1.0.
    Quirk kept from ``engrjavediqbal/MLSL`` (``issegm/solve_ST1.py``): with the extra 0.0 in every list, ``portion
    = 1`` gives
    :math:`\theta_c = 0 \to 1`, selecting nothing; without it, every predicted pixel.

    Returns ``(C,)`` float thresholds in (0, 1].
    """
    thresholds = np.zeros(len(confidences))
    for c, conf in enumerate(confidences):
        k = int(math.floor(len(conf) * portion))
        if k > 0:
            thresholds[c] = np.sort(conf)[::-1][k - 1]
    thresholds[thresholds == 0] = 1.0
    return thresholds


def select_pseudo_labels(prob: Tensor, thresholds: Tensor) -> Tensor:
    r"""Pseudo-labels from class-balanced thresholds: rescale each class's probability by its threshold,
    :math:`\hat y = \arg\max_c p_c / \theta_c`, and keep a pixel only if :math:`\max_c p_c / \theta_c \ge 1`
    (ignored pixels get 255).

    Shape:
        prob ``(N, C, H, W)``, thresholds ``(C,)`` -> ``(N, H, W)`` int64.
    """
    scaled = prob / thresholds.to(prob)[None, :, None, None]
    best, label = scaled.max(dim=1)
    return torch.where(best >= 1, label, torch.full_like(label, IGNORE_INDEX))


def random_patch_boxes(height: int, width: int, size: tuple[int, int], count: int,
                       generator: torch.Generator) -> list[tuple[int, int]]:
    """Top-left corners of MLSL's spatially independent patches: ``startRow ~ U{0..H - h - 1}`` and
    ``startCol ~ U{0..W - w - 1}`` (the original's ``randint(0, H - 512)``, whose last row and column are never a start;
    ``engrjavediqbal/MLSL`` ``issegm/data.py``, ``FileIter._read``), drawn from a seeded generator instead of the
    global numpy RNG."""
    ph, pw = size
    rows = torch.randint(0, max(height - ph, 1), (count,), generator=generator).tolist()
    cols = torch.randint(0, max(width - pw, 1), (count,), generator=generator).tolist()
    return list(zip(rows, cols))


def fuse_patch_predictions(full: Tensor, patches: list[Tensor], boxes: list[tuple[int, int]]) -> Tensor:
    r"""MLSL's spatially independent + semantically consistent fusion: the full-image posterior plus every patch's
    own posterior (predicted without the rest of the image), averaged per pixel over the maps that cover it:

    .. math:: \bar p(x) = \frac{p_{full}(x) + \sum_{k:\,x \in P_k} p_k(x)}{1 + |\{k: x \in P_k\}|}

    Shape:
        full ``(C, H, W)``; patches ``(C, h, w)`` each, top-left corners ``boxes`` -> ``(C, H, W)``.
    """
    total = full.clone()
    count = torch.ones(full.shape[-2:], dtype=full.dtype)
    for patch, (r, c) in zip(patches, boxes, strict=True):
        h, w = patch.shape[-2:]
        total[:, r:r + h, c:c + w] += patch
        count[r:r + h, c:c + w] += 1
    return total / count


def weak_labels(label: Tensor, num_classes: int, priors=MLSL_CLASS_PRIORS, ratio: float = 0.0225) -> Tensor:
    r"""MLSL's pseudo weak (image-level) labels: class :math:`c` is present in a label grid of :math:`h w` cells iff

    .. math:: n_c \ge \text{ratio} \cdot h w \cdot \pi_c

    with fixed class priors :math:`\pi` (the original: ratio 0.0225 on a 63x63 grid). Applied alike to source labels
    and target pseudo-labels; ignored cells (255) count for no class.

    Shape:
        label ``(N, h, w)`` -> ``(N, C)`` float in {0, 1}.
    """
    flat = label.reshape(label.shape[0], -1)
    counts = torch.stack([(flat == c).sum(dim=1) for c in range(num_classes)], dim=1).float()
    need = ratio * flat.shape[1] * torch.as_tensor(priors[:num_classes], dtype=torch.float32)
    return ((counts >= need) & (counts > 0)).float()


def weak_label_loss(logits: Tensor, targets: Tensor, grad_scale: float = 0.04) -> Tensor:
    r"""The image-level head's loss (SISC-PWL): sigmoid cross-entropy whose gradient per class is
    ``grad_scale`` :math:`\cdot(\sigma(x_c) - y_c)`, as MXNet's ``LogisticRegressionOutput(grad_scale=0.04)``:
    the sum over classes and images of the binary cross-entropy, times ``grad_scale``.

    Shape:
        logits, targets ``(N, C)`` -> scalar.
    """
    return grad_scale * F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")


def ohem_cross_entropy(logits: Tensor, label: Tensor, thresh: float = 0.6, min_kept: int = 256) -> Tensor:
    r"""Online hard example mining softmax loss (MLSL SISC, ``util/symbol/layer.py``): among the valid pixels,
    keep those whose probability of their label is at most :math:`\max(\text{thresh}, p_{(m)})`, with
    :math:`p_{(m)}` the ``min_kept``-th smallest label probability; keep all when there are at most ``min_kept``
    valid pixels. The loss is the mean cross-entropy over the kept pixels.

    With ``min_kept = 0`` only ``thresh`` applies (:math:`p \le \text{thresh}`), and when no pixel is kept the
    loss is 0 with a zero gradient: the original's ``OhemSoftmax.backward`` (``engrjavediqbal/MLSL``
    ``util/symbol/layer.py``, lines 44-55 and 76) skips :math:`p_{(m)}` unless ``min_kept > 0`` and divides the
    gradient by :math:`\max(1, \#\text{kept})`.

    Shape:
        logits ``(N, C, H, W)``, label ``(N, H, W)`` -> scalar.
    """
    if min_kept < 0:
        raise ValueError(f"min_kept must be 0 or more, got {min_kept}")
    valid = label != IGNORE_INDEX
    if not valid.any():
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits, dim=1)
    safe = torch.where(valid, label, torch.zeros_like(label))
    label_log_p = log_p.gather(1, safe[:, None])[:, 0]
    p = label_log_p.detach().exp()[valid]
    if p.numel() <= min_kept:
        kept = valid
    else:
        threshold = max(thresh, p.kthvalue(min_kept).values.item()) if min_kept > 0 else thresh
        kept = valid & (label_log_p.detach().exp() <= threshold)
        if not kept.any():
            return logits.sum() * 0.0
    return -label_log_p[kept].mean()


def spatial_prior(labels: Iterable[Tensor], num_classes: int) -> Tensor:
    """Per-pixel class frequency of source label maps (CBST/MLSL ``--with-prior``, GTA5 only in the original, where the
    file is downloaded, not computed). Multiplying a posterior by it favours classes where they usually are.

    Shape:
        label maps ``(H, W)`` (all the same size) -> ``(C, H, W)``, each pixel summing to 1 over the classes seen.
    """
    total = None
    for label in labels:
        one_hot = F.one_hot(torch.where(label == IGNORE_INDEX, num_classes, label), num_classes + 1)
        counts = one_hot[..., :num_classes].permute(2, 0, 1).float()
        total = counts if total is None else total + counts
    return total / total.sum(dim=0, keepdim=True).clamp(min=1)


def cbst_schedule(round_index: int, *, tgt_port: float = 0.15, tgt_step: float = 0.05, tgt_max: float = 0.5,
                  src_port: float = 0.03, src_step: float = 0.0025, src_max: float = 0.06,
                  lr: float = 1e-4) -> dict[str, float]:
    r"""The round schedule of CBST/MLSL (``solve_AO.py``): after each round the target portion grows by 0.05 (while
    below 0.5), the source portion by 0.0025 (while below 0.06), and the fixed learning rate is divided by
    :math:`\sqrt 2`. Returns the values *for* round ``round_index`` (0-based)."""
    tgt, src = tgt_port, src_port
    for _ in range(round_index):
        tgt = tgt + tgt_step if tgt < tgt_max - 1e-9 else tgt
        src = src + src_step if src < src_max - 1e-9 else src
    return {"tgt_port": round(tgt, 6), "src_port": round(src, 6), "lr": lr / math.sqrt(2) ** round_index}


# ------------------------------------------------------------------------------ training crops and source portion
def class_sizes(confidences: list[np.ndarray], *, extra_zero: bool = True) -> np.ndarray:
    """``cls_size`` of ``engrjavediqbal/MLSL`` ``issegm/solve_ST1.py`` (lines 985-993): the length of each class's
    confidence list (its extra 0.0 included) for the classes predicted at least once, 0 for the others."""
    floor = 1 if extra_zero else 0
    return np.array([len(conf) if len(conf) > floor else 0 for conf in confidences], dtype=np.float64)


def mine_classes(sizes: np.ndarray, number: int = 3, thresh: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    r"""The classes that training crops are centred on (``issegm/solve_ST1.py``, lines 998-1002): with the share
    :math:`s_c = n_c / \sum_k n_k` of each class's list,

    * ``mine_id`` = the ``number`` classes of smallest share (classes never predicted, share 0, come first: a
      quirk kept; ties in index order here, where the reference's ``np.argsort`` leaves them unspecified);
    * ``mine_id_priority`` = every class with :math:`s_c <` ``thresh``.

    Returns ``(mine_ids, priority)``, int64 arrays."""
    share = sizes / max(float(np.sum(sizes)), 1e-12)
    return np.argsort(share, kind="stable")[:number].astype(np.int64), np.nonzero(share < thresh)[0].astype(np.int64)


def scale_crop_side(crop: int, scale_range: tuple[float, float], origin: int, generator: torch.Generator) -> int:
    r"""Side, in pixels of the full-resolution image, of a training crop that is then resized to ``crop`` x
    ``crop`` (``issegm/data.py``, ``FileIter._read``, lines 235-250): ``target_size`` ~
    :math:`U\{\lfloor a \cdot O \rfloor .. \lfloor b \cdot O \rfloor\}` with ``scale_range`` = (a, b) and
    ``origin`` :math:`O` (``--origin-size`` 2048, the longer side of ``max_shape``), rate = target_size / O,
    side = :math:`\lfloor crop / rate \rfloor`."""
    lo, hi = int(scale_range[0] * origin), int(scale_range[1] * origin)
    target_size = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    return int(crop / (target_size / origin))


def crop_box(label: Tensor, side: int, mine_ids, priority, mine_port: float,
             generator: torch.Generator) -> tuple[int, int, int]:
    """Top-left corner ``(row, col)`` of a square training crop of ``side`` pixels on a label map ``(H, W)``, and the
    class it was mined for (-1 for a uniform crop), as ``issegm/data.py`` ``FileIter._read`` (lines 276-301):

    * with probability ``mine_port`` the crop is *mined*: among the pixels whose crop stays inside the image
      (centre rows ``side // 2 .. H - side // 2 - 2``, columns alike), the ``priority`` classes present are chosen
      from first, else the ``mine_ids`` present; one of them uniformly, then one of its pixels uniformly, and the
      crop is centred there (``side // 2`` above and left of it);
    * otherwise (or when no mined class is present) the corner is uniform, ``U{0..H - side}`` (0 when the crop is
      larger than the image, whose outside is then padding).

    The reference pads the image by a border of half a label stride before cropping; the corners here are on
    the image itself."""
    h, w = label.shape[-2:]
    half = side // 2
    mined = bool(torch.rand(1, generator=generator) < mine_port)
    if mined:
        region = label[half:max(1, h - half - 1), half:max(1, w - half - 1)]  # the centres whose crop fits
        present = set(torch.unique(region).tolist())
        chosen = [int(c) for c in priority if int(c) in present] or [int(c) for c in mine_ids if int(c) in present]
        if chosen:
            cls = chosen[int(torch.rand(1, generator=generator) * len(chosen))]
            rows, cols = torch.nonzero(region == cls, as_tuple=True)  # row-major, as np.where
            k = int(torch.randint(0, len(rows), (1,), generator=generator))
            return int(rows[k]), int(cols[k]), cls  # centre (row + half) minus half
    top = int(torch.randint(0, max(1, h - side + 1), (1,), generator=generator))
    left = int(torch.randint(0, max(1, w - side + 1), (1,), generator=generator))
    return top, left, -1


def crop_resize(image: Tensor, label: Tensor, top: int, left: int, side: int, size: int) -> tuple[Tensor, Tensor]:
    """The crop ``[top, top + side) x [left, left + side)`` of an image ``(3, H, W)`` and its labels ``(H, W)``
    (outside the image: 0, the mean colour after normalisation, and ignored labels), resized to ``size`` x ``size``
    (bilinear for the image, nearest for the labels)."""
    h, w = label.shape[-2:]
    pad = (max(0, -left), max(0, left + side - w), max(0, -top), max(0, top + side - h))
    if any(pad):
        image = F.pad(image, pad)
        label = F.pad(label, pad, value=IGNORE_INDEX)
        top, left = top + pad[2], left + pad[0]
    image = image[:, top:top + side, left:left + side]
    label = label[top:top + side, left:left + side]
    if side != size:
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0, 0].to(label.dtype)
    return image, label


def source_subset(num_source: int, portion: float, seed: int = 0) -> np.ndarray:
    """The source images of a round (``issegm/data.py`` ``parse_split_file``, lines 33-34, with ``int(num_source *
    src_port)`` of ``issegm/solve_ST1.py`` line 631): ``np.random.seed(seed); np.random.choice(num_source, k,
    replace=False)``. With the same seed every round (``--source-sample-policy cumulative``) each round's subset
    starts with the previous one's."""
    k = int(num_source * portion)
    return np.random.RandomState(seed).choice(num_source, k, replace=False)
