r"""Label-free validators: scores of a model's predictions on unlabelled target images, for choosing a checkpoint
or a hyper-parameter without target labels.

**Sign convention: higher is better for every validator.** Scores that the papers minimise (mean entropy) are
negated here, so that "select the checkpoint with the largest score" is the rule for all of them.

Every validator is a pure function of class probabilities: a tensor ``(N, C, H, W)`` (softmax over dim 1) or a
matrix of pixel rows ``(P, C)``. Logits are refused (convert with ``logits.softmax(dim=1)``): flip-averaged
predictions are probabilities, and a validator must not guess which of the two it got.

* :func:`source_miou` -- mIoU on the labelled source validation set (%), the classical proxy;
* :func:`neg_mean_entropy` -- minus the mean pixel entropy (Grandvalet & Bengio's criterion as ADVENT minimises it);
* :func:`information_maximization` -- confident *and* diverse predictions (Shi & Sha, "Information-theoretical
  learning of discriminative clusters for unsupervised domain adaptation", ICML 2012);
* :func:`soft_neighborhood_density` -- SND (Saito et al., "Tune it the Right Way: Unsupervised Validation of Domain
  Adaptation via Soft Neighborhood Density", ICCV 2021);
* :func:`batch_nuclear_norm` -- BNM (Cui et al., "Towards Discriminability and Diversity: Batch Nuclear-norm
  Maximization under Label Insufficient Situations", CVPR 2020);
* :func:`atc_threshold`, :func:`atc_accuracy` -- ATC (Garg et al., "Leveraging Unlabeled Data to Predict
  Out-of-Distribution Performance", ICLR 2022): predicted target pixel accuracy.

:func:`score_model` runs a model over target (and optionally source) loaders and returns all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SND_TEMPERATURE = 0.05  # the SND paper's temperature (Sec. 3)


def _rows(probs: Tensor, name: str = "probs") -> Tensor:
    """``(N, C, H, W)`` or ``(P, C)`` probabilities -> ``(P, C)`` float64 rows, refusing anything that is not."""
    if not isinstance(probs, Tensor) or probs.dim() not in (2, 4):
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"{name} must be a tensor (N, C, H, W) or (pixels, C) of class probabilities, got {shape}")
    rows = probs.detach().double()
    rows = rows.movedim(1, -1).reshape(-1, rows.shape[1]) if rows.dim() == 4 else rows
    if rows.shape[0] == 0 or rows.shape[1] < 2:
        raise ValueError(f"{name} needs at least one pixel and two classes, got {tuple(probs.shape)}")
    if not torch.isfinite(rows).all() or (rows < 0).any() or not torch.allclose(rows.sum(1), torch.ones(1,
                                                                                  dtype=rows.dtype), atol=1e-4):
        raise ValueError(f"{name} must be probabilities that sum to 1 over the class dimension (dim 1): pass "
                         "logits.softmax(dim=1), not logits")
    return rows


def _entropy(rows: Tensor) -> Tensor:
    """Shannon entropy (natural log) of each row, with :math:`0 \\log 0 = 0`."""
    return -torch.special.xlogy(rows, rows).sum(dim=-1)


def _sample(rows: Tensor, k: int | None, generator: torch.Generator | None) -> Tensor:
    """``k`` rows drawn uniformly without replacement (all rows, in order, when ``k`` is None or not smaller)."""
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
        raise ValueError(f"pixels={k!r}: sample at least 2 pixels (None: all of them)")
    if k is None or k >= rows.shape[0]:
        return rows
    return rows[torch.randperm(rows.shape[0], generator=generator)[:k]]


def source_miou(cm: Tensor | None = None, *, pred: Tensor | None = None, label: Tensor | None = None,
                num_classes: int | None = None) -> float:
    r"""mIoU (%) on labelled source validation data, from a confusion matrix or from predictions and labels.

    .. math:: \mathrm{mIoU} = \operatorname{nanmean}_c \frac{M_{cc}}{\sum_j M_{cj} + \sum_i M_{ic} - M_{cc}}

    (:mod:`udalib.eval.metrics`; absent classes are skipped). Higher is better. Give ``cm`` ``(C, C)``, or ``pred``
    and ``label`` (class ids of equal shape, 255 ignored) with ``num_classes``.
    """
    from .metrics import confusion_matrix, scores_from_matrix

    if (cm is None) == (pred is None or label is None):
        raise ValueError("source_miou needs either a confusion matrix (cm) or pred, label and num_classes")
    if cm is None:
        if num_classes is None:
            raise ValueError("source_miou(pred=..., label=...) needs num_classes as well")
        cm = confusion_matrix(pred, label, num_classes)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (C, C) confusion matrix, got {tuple(cm.shape)}")
    return scores_from_matrix(cm.cpu()).miou


def neg_mean_entropy(probs: Tensor) -> float:
    r"""Minus the mean pixel entropy of the target predictions (higher = more confident = better).

    .. math:: V_{ent} = -\frac{1}{P} \sum_{p=1}^{P} H(p_p), \qquad H(q) = -\sum_{c=1}^{C} q_c \log q_c

    In ``[-\log C, 0]``; natural log, not divided by :math:`C` or :math:`\log C`.

    Shape: ``(N, C, H, W)`` or ``(P, C)`` probabilities -> float.
    """
    return float(-_entropy(_rows(probs)).mean())


def information_maximization(probs: Tensor) -> float:
    r"""Information maximisation: the entropy of the mean prediction minus the mean pixel entropy.

    .. math:: V_{IM} = H\Big(\frac{1}{P}\sum_{p} p_p\Big) - \frac{1}{P}\sum_{p} H(p_p)

    the mutual information between a pixel and its predicted class under the empirical pixel distribution; higher
    is better: each pixel confident (small second term) and the classes used evenly over the set (large first
    term), so a model that predicts one class everywhere, confidently, scores 0. In ``[0, \log C]``.

    Shape: ``(N, C, H, W)`` or ``(P, C)`` probabilities -> float.
    """
    rows = _rows(probs)
    return float(_entropy(rows.mean(dim=0)) - _entropy(rows).mean())


def soft_neighborhood_density(x: Tensor, *, pixels: int | None = None, generator: torch.Generator | None = None,
                              temperature: float = SND_TEMPERATURE) -> float:
    r"""Soft neighbourhood density (SND) of ``K`` sampled pixels; higher is better.

    With :math:`f_i` the L2-normalised rows (probability vectors, as the paper uses the classifier's softmax
    output, or features), the similarities to every *other* sampled pixel are turned into a distribution by a
    softmax at temperature :math:`\tau` (0.05 in the paper), and SND is the mean entropy of those distributions:

    .. math::
        s_{ij} = f_i^\top f_j, \qquad
        P_{ij} = \frac{\exp(s_{ij}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)} \ (j \ne i), \qquad
        V_{SND} = -\frac{1}{K}\sum_{i=1}^{K}\sum_{j \ne i} P_{ij} \log P_{ij}

    The diagonal (a pixel's similarity to itself, always the largest) is left out of each softmax exactly; the
    SND code base fills it with :math:`-1/\tau` instead, a weight of :math:`e^{-1/\tau} \approx 2\cdot10^{-9}`
    relative to an orthogonal neighbour. High density (many close neighbours, spread-out softmax) marks
    well-clustered target predictions.

    ``x``: ``(N, C, H, W)`` or ``(P, D)`` (probabilities or features; any finite values). ``pixels``: sample ``K``
    rows uniformly without replacement with ``generator`` (None: all rows; the similarity matrix is ``K x K``).
    """
    if not isinstance(x, Tensor) or x.dim() not in (2, 4):
        raise ValueError("soft_neighborhood_density needs a tensor (N, C, H, W) or (pixels, D)")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be above 0 (the paper's: 0.05)")
    rows = x.detach().double()
    rows = rows.movedim(1, -1).reshape(-1, rows.shape[1]) if rows.dim() == 4 else rows
    if not torch.isfinite(rows).all():
        raise ValueError("soft_neighborhood_density got non-finite values: check the model's outputs")
    rows = _sample(rows, pixels, generator)
    if rows.shape[0] < 2:
        raise ValueError(f"soft_neighborhood_density needs at least 2 pixels, got {rows.shape[0]}")
    f = F.normalize(rows, dim=1)
    sim = f @ f.T / temperature
    sim.fill_diagonal_(-math.inf)  # a pixel is not its own neighbour
    p = sim.softmax(dim=1)
    return float(_entropy(p).mean())


def batch_nuclear_norm(probs: Tensor, *, pixels: int | None = None,
                       generator: torch.Generator | None = None) -> float:
    r"""Batch nuclear norm (BNM) of the prediction matrix of ``K`` sampled pixels, per row; higher is better.

    .. math:: V_{BNM} = \frac{1}{K}\,\lVert A \rVert_\star = \frac{1}{K}\sum_{i} \sigma_i(A), \qquad
              A \in [0, 1]^{K \times C} \text{ the rows } p_1, \dots, p_K

    The nuclear norm grows with both confidence (rows near one-hot) and diversity (rows of different classes,
    i.e. a larger rank); the paper maximises it over a batch, divided by the batch size. In ``(0, \min(K, C)/K]``.
    ``pixels``/``generator``: as :func:`soft_neighborhood_density` (None: all rows).

    Shape: ``(N, C, H, W)`` or ``(P, C)`` probabilities -> float.
    """
    rows = _sample(_rows(probs), pixels, generator)
    return float(torch.linalg.matrix_norm(rows, ord="nuc") / rows.shape[0])


def max_softmax(probs: Tensor) -> Tensor:
    """The confidence score ATC uses here: each pixel's largest class probability (the paper's ATC-MC).

    Shape: ``(N, C, H, W)`` -> ``(N, H, W)``; ``(P, C)`` -> ``(P,)``.
    """
    return probs.amax(dim=1)


def atc_threshold(source_conf: Tensor, source_correct: Tensor) -> float:
    r"""ATC's threshold: the confidence :math:`t` above which the share of source pixels equals their accuracy.

    .. math:: t = \arg\min_t \Big|\, \#\{i : s_i > t\} - \#\{i : \hat y_i = y_i\} \,\Big|

    over labelled source validation pixels with confidence :math:`s_i` (:func:`max_softmax`). The candidates are
    :math:`-\infty` and every score; ties go to the lowest candidate (the ATC code base scans the sorted scores
    upward and keeps the first strict minimum). Counting the pixels above each candidate, rather than the scan's
    running false-positive/false-negative difference, keeps tied scores together.

    Shape: ``source_conf`` any shape, ``source_correct`` the same shape (bool or 0/1) -> float.
    """
    conf, correct = source_conf.detach().reshape(-1).double(), source_correct.detach().reshape(-1)
    if conf.shape != correct.shape or conf.numel() == 0:
        raise ValueError(f"atc_threshold needs one confidence per correctness flag and at least one pixel, got "
                         f"{tuple(source_conf.shape)} and {tuple(source_correct.shape)}")
    if not torch.isfinite(conf).all():
        raise ValueError("atc_threshold got non-finite confidences: check the model's outputs")
    k = int(correct.bool().sum())
    candidates = torch.cat([conf.new_tensor([-math.inf]), conf.sort().values])
    above = conf.numel() - torch.searchsorted(conf.sort().values, candidates, right=True)  # #{s > t}
    return float(candidates[int((above - k).abs().argmin())])  # argmin: the first (lowest) of equal minima


def atc_accuracy(target_conf: Tensor, threshold: float) -> float:
    r"""ATC's predicted target accuracy: the share of target pixels whose confidence is above the threshold.

    .. math:: \widehat{\mathrm{acc}}_T = \frac{1}{P}\,\#\{i : s_i > t\}

    with :math:`t` from :func:`atc_threshold`; a fraction in ``[0, 1]``, higher is better.
    """
    conf = target_conf.detach().reshape(-1)
    if conf.numel() == 0:
        raise ValueError("atc_accuracy needs at least one target pixel")
    return float((conf.double() > threshold).double().mean())


def score_model(model: nn.Module, target_loader: Iterable, *, source_loader: Iterable | None = None,
                num_classes: int, pixels: int = 1024, seed: int = 0, device: str | torch.device = "cpu",
                max_batches: int | None = None) -> dict[str, float]:
    """Every validator of ``model`` (main head, ``model(x)["out"]``), in eval mode; higher is better for all.

    Returns ``{"entropy", "im", "snd", "bnm", "source_miou", "atc"}``: ``entropy`` (:func:`neg_mean_entropy`) and
    ``im`` (:func:`information_maximization`) over every target pixel; ``snd`` and ``bnm`` over ``pixels`` target
    pixels drawn uniformly without replacement from the whole set (each pixel gets a random key from a generator
    seeded with ``seed``, the smallest keys are kept: the same sample for the same loader order, whatever the
    batching); with ``source_loader`` (labelled ``(image, label, ...)`` batches), ``source_miou`` (%, the number
    :func:`udalib.eval.evaluate.evaluate` gives) and ``atc`` (predicted target pixel accuracy, a fraction, from the
    max-softmax threshold fitted on the labelled source pixels); without it these two are NaN.

    Pixels are taken at the resolution :func:`~udalib.eval.evaluate.evaluate` scores at: logits are upsampled
    (bilinear, ``align_corners=True``) to the image size on the target and to the label size on the source. The
    target loader's labels, if any, are never read. The model must be on ``device``; its train/eval flags are
    restored afterwards. Memory: one image's probabilities at a time, ``pixels`` sampled rows, and one confidence
    per target and labelled source pixel (for ATC).
    """
    from .evaluate import _batches, eval_mode
    from .metrics import ConfusionMatrix

    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} must be the model's number of classes (at least 2)")
    if not isinstance(pixels, int) or isinstance(pixels, bool) or pixels < 2:
        raise ValueError(f"pixels={pixels!r}: sample at least 2 target pixels for SND and BNM")
    g = torch.Generator().manual_seed(seed)
    ent_sum, n_pix = 0.0, 0
    prob_sum = torch.zeros(num_classes, dtype=torch.float64)
    keys, kept = torch.empty(0), torch.empty(0, num_classes, dtype=torch.float64)
    target_conf = []

    def probabilities(image: Tensor, size) -> Tensor:
        logits = model(image.to(device))["out"]
        if logits.shape[1] != num_classes:
            raise ValueError(f"the model predicts {logits.shape[1]} classes, not num_classes={num_classes}")
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
        return logits.float().softmax(dim=1)

    with eval_mode(model), torch.no_grad():
        for batch in _batches(target_loader, max_batches, False):
            image = batch[0] if isinstance(batch, (tuple, list)) else batch
            probs = probabilities(image, image.shape[-2:]).cpu()
            for one in probs:  # image by image: float64 rows of one image at a time
                rows = _rows(one[None])
                ent_sum += float(_entropy(rows).sum())
                n_pix += rows.shape[0]
                prob_sum += rows.sum(dim=0)
                target_conf.append(rows.amax(dim=1).float())
                new_keys = torch.rand(rows.shape[0], generator=g)
                if new_keys.numel() > pixels:  # the global sample's pixels of this image are among its own smallest
                    new_keys, order = new_keys.topk(pixels, largest=False, sorted=False)
                    rows = rows[order]
                keys, kept = torch.cat([keys, new_keys]), torch.cat([kept, rows])
                if keys.numel() > pixels:
                    keys, order = keys.topk(pixels, largest=False, sorted=False)
                    kept = kept[order]
        if n_pix == 0:
            raise ValueError("score_model: the target loader yielded no images")
        mean_p = prob_sum / n_pix
        kept = kept[keys.argsort()]  # a fixed order of the sample (SND and BNM do not depend on it)
        scores = {"entropy": -ent_sum / n_pix,
                  "im": float(_entropy(mean_p) - ent_sum / n_pix),
                  "snd": soft_neighborhood_density(kept) if kept.shape[0] >= 2 else math.nan,
                  "bnm": batch_nuclear_norm(kept),
                  "source_miou": math.nan, "atc": math.nan}
        if source_loader is None:
            return scores
        cm = ConfusionMatrix(num_classes)
        source_conf, source_correct = [], []
        for image, label, *_ in _batches(source_loader, max_batches, False):
            label = label.long()
            p = probabilities(image, label.shape[-2:]).cpu()
            conf, pred = p.max(dim=1)
            cm.update(pred, label)
            valid = (label >= 0) & (label < num_classes)
            source_conf.append(conf[valid])
            source_correct.append((pred == label)[valid])
    if not source_conf or sum(c.numel() for c in source_conf) == 0:
        raise ValueError("score_model: the source loader yielded no labelled pixel; pass a labelled source val set")
    t = atc_threshold(torch.cat(source_conf), torch.cat(source_correct))
    scores["source_miou"] = source_miou(cm.matrix)
    scores["atc"] = atc_accuracy(torch.cat(target_conf), t)
    return scores
