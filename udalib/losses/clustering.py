r"""Orthogonal and clustered embeddings (Toldo, Michieli, Zanuttigh, "Unsupervised Domain Adaptation in Semantic
Segmentation via Orthogonal and Clustered Embeddings", WACV 2021; ``LTTM/UDAclustering``, its
``feat_reg_ST_loss``): feature-space objectives on class centroids shared by both domains.

Features are rows: a feature map ``(N, F, h, w)`` becomes ``N·h·w`` rows of ``F`` channels (order n, y, x), each
with a class from the labels or predictions resized to the feature grid. Centroids are **not detached**, as in the
original: gradients reach the features through them too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def feature_rows(feat: Tensor) -> Tensor:
    """``(N, F, h, w)`` -> ``(N·h·w, F)``, rows in (n, y, x) order."""
    return feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])


def classes_at_feature_grid(prob: Tensor, size, mode: str) -> Tensor:
    """Class of every feature cell from a full-resolution posterior ``(N, C, H, W)``:

    * ``"bilinear"``: argmax of the posterior resized bilinearly (``align_corners=True``) -- the original's first pass
      (clustering);
    * ``"nearest"``: the full-resolution argmax resized with nearest neighbour -- its second pass (orthogonality,
      sparsity).

    Returns ``(N·h·w,)`` class ids in :func:`feature_rows` order.
    """
    if mode == "bilinear":
        small = F.interpolate(prob, size=tuple(size), mode="bilinear", align_corners=True)
        return small.argmax(dim=1).reshape(-1)
    if mode == "nearest":
        arg = prob.argmax(dim=1, keepdim=True).float()
        return F.interpolate(arg, size=tuple(size), mode="nearest").long().reshape(-1)
    raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")


def labels_at_feature_grid(label: Tensor, size) -> Tensor:
    """Ground-truth labels ``(N, H, W)`` resized with nearest neighbour to the feature grid, flattened (the original's
    ``use_source_gt``); ignored pixels keep their value and fall outside every class."""
    return F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest").long().reshape(-1)


def class_centroids(rows: list[Tensor], classes: list[Tensor], num_classes: int) -> Tensor:
    r"""Centroids shared by the domains: for each class :math:`c`, the mean of the rows of *every* domain assigned
    to :math:`c`,

    .. math:: \mu_c = \frac{1}{|\mathcal{F}^s_c| + |\mathcal{F}^t_c|}\sum_{f \in \mathcal{F}^s_c \cup \mathcal{F}^t_c} f

    and a row of ``+inf`` for a class with no row in any domain (the original's marker of "absent").

    Shape:
        rows: per domain ``(N_d, F)``; classes: per domain ``(N_d,)`` -> ``(num_classes, F)``.
    """
    all_rows, all_classes = torch.cat(rows), torch.cat(classes)
    valid = (all_classes >= 0) & (all_classes < num_classes)
    index = all_classes[valid]
    sums = all_rows.new_zeros(num_classes, all_rows.shape[1]).index_add(0, index, all_rows[valid])
    counts = torch.bincount(index, minlength=num_classes).to(all_rows.dtype)
    centroids = sums / counts.clamp(min=1)[:, None]
    return torch.where(counts[:, None] > 0, centroids, torch.full_like(centroids, float("inf")))


def smooth_centroids(current: Tensor, average: Tensor | None, coeff: float) -> tuple[Tensor, Tensor]:
    r"""Exponential smoothing of the centroids over iterations (``--centroid_smoothing``; off when ``coeff < 0``):

    .. math:: \mu_c \leftarrow \alpha\,\mu_c + (1 - \alpha)\,\bar\mu_c, \qquad \bar\mu_c \leftarrow \mathrm{sg}(\mu_c)

    with the original's handling of absent classes (``inf`` rows): an absent class takes the running average, a class
    without a running average starts it from the current value. Returns ``(smoothed, new_average)``.
    """
    if coeff < 0:
        return current, current.detach() if average is None else average
    average = current.detach() if average is None else average
    average = torch.where(torch.isinf(average), current.detach(), average)
    current = torch.where(torch.isinf(current), average, current)
    smoothed = coeff * current + (1 - coeff) * average.detach()
    return smoothed, smoothed.detach()


def _root(x: Tensor, p: float) -> Tensor:
    """x ** (1 / p), with a finite gradient at 0 for p > 1 (a norm's subgradient there is 0)."""
    return x if p == 1 else x.clamp(min=1e-12).pow(1 / p)


def clustering_loss(rows: list[Tensor], classes: list[Tensor], centroids: Tensor,
                    norm_order: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""The clustering objective's two parts, per the original:

    .. math::
        d_{dom} = \frac{1}{K}\sum_{c:\,N_c > 0} \frac{\lVert \mu_c - \mathcal{F}^{dom}_c \rVert_p}{N_c F},
        \qquad
        d_{cent} = \frac{1}{|S|}\sum_{i \in S} \frac{\lVert \mu_i - \mu_{S\setminus i} \rVert_p}{(|S|-1) F}

    with the original's distance: the p-norm of a *whole* difference matrix (:math:`N_c \times F` rows of one class in
    one domain; the other centroids) divided by its number of elements. :math:`K` counts the classes present in
    that domain, :math:`S` the classes with a centroid. Returns ``(sum over domains of d_dom, d_cent)``; the loss to
    minimise is their difference: pull features to their centroid, push centroids apart. Where the original divides
    by zero (no class in a domain, a single centroid), the term is 0.
    """
    p = norm_order
    num_classes, dim = centroids.shape
    present = torch.isfinite(centroids).all(dim=1)
    safe = torch.where(present[:, None], centroids, torch.zeros_like(centroids))
    pull = centroids.new_zeros(())
    for r, cls in zip(rows, classes, strict=True):
        keep = (cls >= 0) & (cls < num_classes) & present[cls.clamp(0, num_classes - 1)]
        cls, r = cls[keep], r[keep]
        if not len(cls):
            continue
        powered = (safe[cls] - r).abs().pow(p).sum(dim=1)  # per row: sum_f |mu_c - f|^p
        per_class = centroids.new_zeros(num_classes).index_add(0, cls, powered)
        counts = torch.bincount(cls, minlength=num_classes)
        seen = counts > 0
        pull = pull + (_root(per_class[seen], p) / (counts[seen] * dim)).mean()
    mu = centroids[present]
    if len(mu) < 2:
        return pull, centroids.new_zeros(())
    pairwise = (mu[:, None, :] - mu[None, :, :]).abs().pow(p).sum(dim=2)  # (|S|, |S|), zero diagonal
    push = (_root(pairwise.sum(dim=1), p) / ((len(mu) - 1) * dim)).mean()
    return pull, push


def orthogonality_loss(rows: Tensor, centroids: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Orthogonality objective as the original computes it: the entropy of each feature's softmax over its dot products
    with the centroids of the classes present (:math:`S`), averaged over rows and divided by :math:`|S|`,

    .. math:: \mathcal{L}_{orth} = -\frac{1}{N|S|}\sum_{n}\sum_{c \in S} q_{nc}\log q_{nc}, \qquad
              q_n = \mathrm{softmax}_c\big(\langle f_n, \mu_c\rangle / T\big).

    It is 0 when each feature has a large product with one centroid and none with the others -- features aligned
    with mutually orthogonal centroids -- and :math:`\log|S| / |S|` at most (all products equal).

    Shape:
        rows ``(N, F)``, centroids ``(|S|, F)`` (finite rows only) -> scalar.
    """
    z = rows @ centroids.t() / temperature
    return -(F.softmax(z, dim=1) * F.log_softmax(z, dim=1)).mean()


def sparsity_loss(centroids: Tensor, rho: float = 0.5, norm_order: int = 2) -> Tensor:
    r"""Sparsity objective: each centroid scaled by its largest channel, :math:`\hat\mu_c = \mu_c / \max_f \mu_{cf}`
    (features are post-ReLU, so in [0, 1]), then

    .. math:: \mathcal{L}_{sp} = -\frac{1}{|S| F}\sum_{c, f} (\hat\mu_{cf} - \rho)^{p}

    (:math:`|\cdot|^p` for odd :math:`p`). Minimising it pushes every channel away from :math:`\rho = 0.5`, towards
    0 or 1: few active channels per class.

    Shape:
        centroids ``(|S|, F)`` (finite rows only) -> scalar.
    """
    scaled = centroids / centroids.max(dim=1, keepdim=True).values.clamp(min=1e-12)
    diff = scaled - rho
    return -(diff.pow(norm_order) if norm_order % 2 == 0 else diff.abs().pow(norm_order)).mean()
