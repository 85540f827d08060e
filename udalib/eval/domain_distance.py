r"""Domain distance and joint error -- the two data-dependent terms of the bound of S. Ben-David, J. Blitzer,
K. Crammer, A. Kulesza, F. Pereira, J. W. Vaughan, "A theory of learning from different domains", Machine Learning
79 (2010), Theorem 2.

For every hypothesis :math:`h` of a class :math:`\mathcal{H}`:

.. math::

    \epsilon_T(h) \;\le\; \epsilon_S(h) + \tfrac{1}{2}\, d_{\mathcal{H}\Delta\mathcal{H}}(\mathcal{D}_S, \mathcal{D}_T)
    + \lambda, \qquad \lambda = \min_{h' \in \mathcal{H}} \big(\epsilon_S(h') + \epsilon_T(h')\big).

Neither term of the right-hand side beyond :math:`\epsilon_S` can be computed exactly. This module estimates both
on frozen features with linear classifiers (logistic regression fitted by L-BFGS), each scored on images it was not
fitted on:

* :func:`proxy_a_distance`: a *domain* classifier tells source features from target features; with its held-out
  error :math:`\epsilon`, the proxy A-distance is :math:`\hat d_{\mathcal{A}} = 2(1 - 2\epsilon)` (Ben-David et al.,
  NIPS 2006, Section 4; Ganin et al., JMLR 2016, Section 5.1.2): 2 for domains a linear rule separates, about 0
  for domains it cannot tell apart.
* :func:`joint_error`: one linear *pixel* classifier fitted on source and target labels together; its held-out
  errors :math:`(\epsilon_S, \epsilon_T)` add up to an estimate of :math:`\lambda` for the linear class on these
  features. :func:`source_probe_error` fits the same classifier on source labels alone: the :math:`h` whose
  :math:`\epsilon_T(h)` the bound speaks of.

Features come as ``(N, D)`` (one vector per image) or ``(N, P, D)`` (``P`` samples per image, e.g. the cells of the
feature grid); the split into fitted and held-out samples is always by *image*, so that no image lends pixels to
both sides. :func:`spearman` and :func:`relation_verdict` read a measured distance against measured outcomes.
Taught in ``notebooks/02_when_can_adaptation_work.ipynb``.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import IGNORE_INDEX


def pad_from_error(error: float) -> float:
    r"""The proxy A-distance of a domain classifier with held-out error ``error``: :math:`2(1 - 2\epsilon)`.

    2 when the classifier never errs (the domains are separable), 0 at chance (:math:`\epsilon = 0.5`); slightly
    negative when a classifier of indistinguishable domains lands above chance on the held-out samples.
    """
    return 2.0 * (1.0 - 2.0 * error)


def split_images(n: int, held_out: float = 0.5, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A random split of ``n`` image indices into ``(fitted, held_out)``, ``round(held_out * n)`` of them held out
    (at least one on each side). The same ``(n, held_out, seed)`` gives the same split on every machine."""
    if n < 2:
        raise ValueError(f"need at least 2 images to split into fitted and held-out ones, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(max(round(held_out * n), 1), n - 1)
    return perm[k:], perm[:k]


def _flat(x: Tensor) -> Tensor:
    """``(N, D)`` or ``(N, P, D)`` -> ``(N * P, D)``."""
    return x.reshape(-1, x.shape[-1]) if x.dim() == 3 else x


def fit_linear(x: Tensor, y: Tensor, num_classes: int, *, weights: Tensor | None = None,
               weight_decay: float = 1e-3, max_iter: int = 100) -> tuple[Tensor, ...]:
    r"""Multinomial logistic regression by full-batch L-BFGS on standardised features :math:`\tilde x`:

    .. math:: \min_{W, b}\; \frac{\sum_i w_i\, \mathrm{CE}(W \tilde x_i + b,\, y_i)}{\sum_i w_i}
        + \mathrm{wd}\, \lVert W \rVert^2

    Returns ``(W, b, mean, std)``, which :func:`predict_linear` applies. It runs on one CPU thread, whatever
    ``torch.get_num_threads()`` says: a problem this small is no faster on more, and one thread makes the result
    the same, bit for bit, in a notebook and in a benchmark process.

    Shape:
        ``x`` ``(M, D)``; ``y`` ``(M,)`` in ``[0, num_classes)``; ``weights`` ``(M,)``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = x.double()
        mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
        z = (x - mean) / std
        w_i = torch.ones(len(y), dtype=z.dtype) if weights is None else weights.double()
        w_i = w_i / w_i.sum()
        W = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, requires_grad=True)
        b = torch.zeros(num_classes, dtype=z.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (w_i * F.cross_entropy(z @ W.T + b, y, reduction="none")).sum() + weight_decay * W.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return W.detach(), b.detach(), mean, std


def predict_linear(x: Tensor, params: tuple[Tensor, ...]) -> Tensor:
    """Class predictions ``(M,)`` of :func:`fit_linear`'s classifier ``params`` on ``x`` ``(M, D)``."""
    W, b, mean, std = params
    return (((x.double() - mean) / std) @ W.T + b).argmax(1)


def _balanced(n_s: int, n_t: int) -> Tensor:
    """Sample weights that give each domain half of the total: ``1/n_s`` for source samples, ``1/n_t`` target."""
    return torch.cat([torch.full((n_s,), 1.0 / n_s), torch.full((n_t,), 1.0 / n_t)])


def domain_classifier_error(features_s: Tensor, features_t: Tensor, *, held_out: float = 0.5, seed: int = 0,
                            weight_decay: float = 1e-3) -> float:
    r"""Held-out error :math:`\epsilon` of a linear classifier that tells source (0) from target (1) features.

    Fitted on the images outside each domain's held-out split (:func:`split_images`, seeds ``seed`` and
    ``seed + 1``), the two domains weighted equally; :math:`\epsilon` is the mean of the two domains' held-out error
    rates, so chance is 0.5 whatever the sample sizes.

    Shape:
        ``features_s`` ``(N_s, D)`` or ``(N_s, P, D)``; ``features_t`` ``(N_t, D)`` or ``(N_t, P, D)``.
    """
    fit_s, test_s = split_images(len(features_s), held_out, seed)
    fit_t, test_t = split_images(len(features_t), held_out, seed + 1)
    xs, xt = _flat(features_s[fit_s]), _flat(features_t[fit_t])
    y = torch.cat([torch.zeros(len(xs), dtype=torch.long), torch.ones(len(xt), dtype=torch.long)])
    params = fit_linear(torch.cat([xs, xt]), y, 2, weights=_balanced(len(xs), len(xt)), weight_decay=weight_decay)
    err_s = (predict_linear(_flat(features_s[test_s]), params) != 0).double().mean()
    err_t = (predict_linear(_flat(features_t[test_t]), params) != 1).double().mean()
    return float((err_s + err_t) / 2)


def proxy_a_distance(features_s: Tensor, features_t: Tensor, **kwargs) -> float:
    r"""Proxy A-distance :math:`\hat d_{\mathcal{A}} = 2(1 - 2\epsilon)` between two sets of features, with
    :math:`\epsilon` the held-out error of a linear domain classifier (:func:`domain_classifier_error`, which takes
    ``kwargs``): an estimate of the :math:`d_{\mathcal{H}\Delta\mathcal{H}}` term of the bound for a linear class on
    these features. 2 for separable domains, about 0 for identical ones.

    Shape:
        ``features_s`` ``(N_s, D)`` or ``(N_s, P, D)``; ``features_t`` ``(N_t, D)`` or ``(N_t, P, D)``.
    """
    return pad_from_error(domain_classifier_error(features_s, features_t, **kwargs))


def _probe_errors(features_s: Tensor, labels_s: Tensor, features_t: Tensor, labels_t: Tensor, *, use_target: bool,
                  held_out: float, seed: int, weight_decay: float) -> tuple[float, float]:
    fit_s, test_s = split_images(len(features_s), held_out, seed)
    fit_t, test_t = split_images(len(features_t), held_out, seed + 1)

    def valid(feats: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        x, y = _flat(feats), labels.reshape(-1).long()
        keep = y != IGNORE_INDEX
        return x[keep], y[keep]

    xs, ys = valid(features_s[fit_s], labels_s[fit_s])
    xt, yt = valid(features_t[fit_t], labels_t[fit_t]) if use_target else (xs[:0], ys[:0])
    classes = torch.unique(torch.cat([ys, yt]))  # the classes seen in fitting, numbered 0..K-1
    x, y = torch.cat([xs, xt]), torch.searchsorted(classes, torch.cat([ys, yt]))
    weights = _balanced(len(ys), len(yt)) if use_target else None
    params = fit_linear(x, y, len(classes), weights=weights, weight_decay=weight_decay)
    errors = []
    for feats, labels, test in ((features_s, labels_s, test_s), (features_t, labels_t, test_t)):
        x, y = valid(feats[test], labels[test])
        errors.append(float((classes[predict_linear(x, params)] != y).double().mean()))
    return errors[0], errors[1]


def joint_error(features_s: Tensor, labels_s: Tensor, features_t: Tensor, labels_t: Tensor, *,
                held_out: float = 0.5, seed: int = 0, weight_decay: float = 1e-3) -> tuple[float, float]:
    r"""Held-out errors :math:`(\epsilon_S(h^*), \epsilon_T(h^*))` of the best joint linear classifier
    :math:`h^* = \arg\min_h \epsilon_S(h) + \epsilon_T(h)`, fitted on source and target labels together; their sum
    estimates :math:`\lambda`.

    The classifier minimises the mean cross-entropy over the fitted source samples plus that over the fitted target
    samples (each domain weighted equally, as in :math:`\epsilon_S + \epsilon_T`); each error is the share of wrongly
    classified held-out samples of its domain (:func:`split_images`, seeds ``seed`` and ``seed + 1``). Samples
    labelled ``IGNORE_INDEX`` are left out. :math:`\lambda` is near 0 when one linear rule labels both domains, and
    reaches 1 when the domains' labels contradict each other on the same features (binary case).

    Shape:
        ``features_*`` ``(N, P, D)`` (or ``(N, D)``); ``labels_*`` ``(N, P)`` (or ``(N,)``): class ids or
        ``IGNORE_INDEX``.
    """
    return _probe_errors(features_s, labels_s, features_t, labels_t, use_target=True, held_out=held_out, seed=seed,
                         weight_decay=weight_decay)


def source_probe_error(features_s: Tensor, labels_s: Tensor, features_t: Tensor, labels_t: Tensor, *,
                       held_out: float = 0.5, seed: int = 0, weight_decay: float = 1e-3) -> tuple[float, float]:
    r"""Held-out errors :math:`(\epsilon_S(h_S), \epsilon_T(h_S))` of the linear classifier :math:`h_S` fitted on
    source labels alone (the fitted target images are not used): the left-hand side of the bound and the first
    term of its right-hand side, for the hypothesis a source-only model would pick. Same splits and shapes as
    :func:`joint_error`."""
    return _probe_errors(features_s, labels_s, features_t, labels_t, use_target=False, held_out=held_out, seed=seed,
                         weight_decay=weight_decay)


def domain_terms(features_s: Tensor, labels_s: Tensor, features_t: Tensor, labels_t: Tensor, *,
                 held_out: float = 0.5, seed: int = 0) -> dict[str, float]:
    r"""Every measured term of the bound for one pair of domains, from per-cell features and labels
    (:func:`feature_samples`):

    * ``pad_image``: :func:`proxy_a_distance` on one vector per image (the features averaged over the grid), with
      ``error_image`` its domain classifier's held-out error;
    * ``pad_pixel``: the same on single cells of the grid (``error_pixel``);
    * ``joint_source``, ``joint_target``, ``lambda``: :func:`joint_error` and their sum;
    * ``probe_source``, ``probe_target``: :func:`source_probe_error`.

    Shape:
        ``features_*`` ``(N, P, D)``; ``labels_*`` ``(N, P)``.
    """
    kw = {"held_out": held_out, "seed": seed}
    error_image = domain_classifier_error(features_s.mean(1), features_t.mean(1), **kw)
    error_pixel = domain_classifier_error(features_s, features_t, **kw)
    joint_s, joint_t = joint_error(features_s, labels_s, features_t, labels_t, **kw)
    probe_s, probe_t = source_probe_error(features_s, labels_s, features_t, labels_t, **kw)
    return {"pad_image": pad_from_error(error_image), "error_image": error_image,
            "pad_pixel": pad_from_error(error_pixel), "error_pixel": error_pixel,
            "joint_source": joint_s, "joint_target": joint_t, "lambda": joint_s + joint_t,
            "probe_source": probe_s, "probe_target": probe_t}


@torch.no_grad()
def feature_samples(model: torch.nn.Module, images: Tensor, labels: Tensor | None = None, *, cells: int = 0,
                    batch_size: int = 32, device: str = "cpu", seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """The model's backbone features (its named output ``feat``) at the cells of its feature grid, and the label at
    each cell's centre pixel: ``(N, P, D)`` and ``(N, P)``, the inputs of :func:`domain_terms`. ``cells=0`` keeps
    every cell (``P = h * w``); otherwise ``P = cells`` cells per image, drawn without replacement (one draw for all
    images, from ``seed``). The model runs in eval mode (its own BatchNorm statistics).

    Shape:
        ``images`` ``(N, 3, H, W)``; ``labels`` ``(N, H, W)`` or None.
    """
    model.eval().to(device)
    parts = []
    for i in range(0, len(images), batch_size):
        f = model(images[i:i + batch_size].to(device))["feat"].float()  # (B, D, h, w)
        parts.append(f.flatten(2).transpose(1, 2).cpu())  # (B, h * w, D)
    samples = torch.cat(parts)
    h, w = f.shape[-2:]
    keep = torch.arange(h * w)
    if 0 < cells < h * w:
        keep = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))[:cells].sort().values
    samples = samples[:, keep]
    if labels is None:
        return samples, None
    H, W = labels.shape[-2:]
    rows = ((torch.arange(h) + 0.5) * H / h).long().clamp(max=H - 1)  # the centre pixel of each cell
    cols = ((torch.arange(w) + 0.5) * W / w).long().clamp(max=W - 1)
    return samples, labels[:, rows][:, :, cols].reshape(len(labels), h * w)[:, keep]


def domain_images(spec: str, n: int, *, root: str | os.PathLike | None = None, normalization: str = "imagenet",
                  class_set: str | None = None) -> tuple[Tensor, Tensor]:
    """``n`` labelled images of a dataset split, evenly spaced over it, normalised for the model: ``(images
    (n, 3, H, W), labels (n, H, W))``.

    ``spec`` is ``DATASET[:DOMAIN]/SPLIT[@HxW]`` (``minicity:target-palette/val``, ``cityscapes/val@512x1024``).
    MiniCity images are rendered in memory (:func:`udalib.data.minicity.make_sample`: the files on disk, pixel for
    pixel), so a single-factor domain needs no build on disk; other datasets are read from ``root`` with
    :func:`udalib.data.open_dataset` (``class_set``: ``"16"`` or ``"13"`` for SYNTHIA or CrossCity labels).
    """
    from ..data import minicity, normalize, open_dataset

    spec, _, size = spec.partition("@")
    name, _, split = spec.partition("/")
    if not split:
        raise ValueError(f"dataset spec {spec!r} names no split: write it as {spec}/val")
    if name.startswith("minicity:") and not size:
        domain = name.split(":", 1)[1]
        total = minicity.spec_for(domain).splits[domain][split]
        pairs = [minicity.make_sample(domain, split, i * total // n) for i in range(min(n, total))]
        images = torch.stack([normalize(image, normalization) for image, _ in pairs])
        return images, torch.from_numpy(np.stack([label for _, label in pairs]).astype(np.int64))
    hw = tuple(int(v) for v in size.lower().split("x")) if size else None
    ds = open_dataset(name, split, root=root, size=hw, normalization=normalization, class_set=class_set)
    items = [ds[i * len(ds) // n] for i in range(min(n, len(ds)))]
    return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])


def spearman(a, b) -> float:
    r"""Spearman's rank correlation :math:`\rho` of two equally long sequences: Pearson's correlation of their
    ranks, tied values sharing the mean of their ranks. NaN where either sequence is constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):  # ties: the mean of their ranks
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def spearman_critical(n: int, alpha: float = 0.05) -> float:
    r"""The smallest :math:`|\rho|` that a two-sided test rejects "no relation" at level ``alpha`` for ``n`` untied
    pairs: from the exact null distribution of :math:`\rho` over all :math:`n!` orders for ``n`` up to 8, else from
    200,000 random orders (a fixed generator, so the same value every time)."""
    if n < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {n}")
    base = np.arange(n, dtype=float)
    if n <= 8:
        orders = np.array(list(itertools.permutations(range(n))), dtype=float)
    else:
        rng = np.random.default_rng(0)
        orders = np.argsort(rng.random((200_000, n)), axis=1).astype(float)
    d2 = ((orders - base) ** 2).sum(axis=1)
    rho = np.sort(np.abs(1 - 6 * d2 / (n * (n * n - 1))))  # Spearman's formula without ties
    # the smallest value r with P(|rho| >= r) <= alpha
    tail = 1 - np.searchsorted(rho, rho, side="left") / len(rho)
    return float(rho[tail <= alpha + 1e-12].min())


def relation_verdict(rhos, critical: float) -> str:
    r"""A verdict, in words, on the rank correlations ``rhos`` measured on several seeds (one :math:`\rho` each),
    with ``critical`` the :math:`|\rho|` needed for significance on one seed (:func:`spearman_critical`):

    * "no monotone relation" when the mean :math:`|\rho|` is below 0.3;
    * "a monotone relation (increasing|decreasing) on every seed" when every seed's :math:`\rho` has the same
      sign and reaches ``critical``;
    * otherwise "a weak (mean :math:`|\rho|` below 0.5) / moderate (below 0.7) / strong ... trend, not significant
      on every seed".
    """
    r = np.asarray(rhos, float)
    r = r[~np.isnan(r)]
    mean = float(r.mean()) if len(r) else 0.0
    if abs(mean) < 0.3:
        return "no monotone relation"
    direction = "increasing" if mean > 0 else "decreasing"
    if np.all(np.sign(r) == np.sign(mean)) and np.all(np.abs(r) >= critical):
        return f"a monotone relation, {direction}, on every seed"
    strength = "weak" if abs(mean) < 0.5 else "moderate" if abs(mean) < 0.7 else "strong"
    return f"a {strength} {direction} trend, not significant on every seed"
