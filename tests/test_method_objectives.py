"""Each method's step is the gradient of its paper's objective, term by term.

For every method: one step on a fixed batch pair (float64, a tiny model, every weight non-zero and different, so
that no term hides another), then the same objective written out here from the paper's equations, differentiated
with ``torch.autograd.grad`` from a copy of the method taken before the step. The step's gradients (``p.grad``
after ``Method.update``: the last backward of each player's optimiser) must equal the hand-computed ones for the
segmenter and for every discriminator or auxiliary head the method trains. A wrong sign, a dropped weight or a
swapped head (``out`` for ``aux``) changes them.

Comparing gradients rather than updates keeps the test about the objective: SGD's head lr multiplier and weight
decay, and Adam's invariance to the scale of a loss, are the optimisers' business.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from udalib.data.augment import strong_augment
from udalib.data.batch import IGNORE_INDEX, SourceBatch, TargetBatch
from udalib.losses.causality import dual_causality_loss
from udalib.losses.clustering import (
    class_centroids,
    clustering_loss,
    feature_rows,
    orthogonality_loss,
    sparsity_loss,
)
from udalib.losses.self_training import ohem_cross_entropy, weak_label_loss, weak_labels
from udalib.methods import build_method
from udalib.models import build_model

C = 19


def batches():
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, C, (2, 32, 64), generator=g)
    label[:, :4] = IGNORE_INDEX  # ignored pixels must stay out of the CE average
    src = SourceBatch(torch.randn(2, 3, 32, 64, generator=g, dtype=torch.float64), label)
    tgt = TargetBatch(torch.randn(2, 3, 32, 64, generator=g, dtype=torch.float64) * 1.5 + 0.3, torch.tensor([0, 1]))
    return src, tgt


def build(name, model="minideeplab", **cfg):
    torch.manual_seed(0)
    method = build_method(name, build_model(model, C, width=8), **cfg)
    method.double()
    for head in (getattr(method, "causality", None), getattr(method, "weak_head", None)):
        if head is not None:
            head.double()
    return method


# ------------------------------------------------------------------ the paper's terms, written out
def ce(logits, label):
    r""":math:`-\frac{1}{|\Omega|}\sum_{\Omega} \log P^{(y)}` over the labelled pixels :math:`\Omega`."""
    keep = label != IGNORE_INDEX
    log_p = logits.log_softmax(dim=1).gather(1, label.clamp(max=logits.shape[1] - 1)[:, None])[:, 0]
    return -log_p[keep].mean()


def entropy_seed(logits):
    r"""ADVENT Eq. 3 as the MaxSquare code computes it: :math:`-\frac{1}{NCHW}\sum P\log P`."""
    p = logits.softmax(dim=1)
    return -(p * p.log()).sum(dim=1).mean() / logits.shape[1]


def maxsquare(logits):
    r"""MaxSquare Eq. 5 over ``N·C·H·W``: :math:`-\frac{1}{2NCHW}\sum P^2`."""
    return -0.5 * logits.softmax(dim=1).pow(2).mean()


def iw_maxsquare(logits, ratio):
    r"""Eq. 7: :math:`-\frac{1}{NC}\sum_n\sum_{h,w,c} P^2 / \max(N_{n,\hat y}^r (HW)^{1-r}, 1)`."""
    n, c, h, w = logits.shape
    p = logits.softmax(dim=1)
    total = 0.0
    for i in range(n):
        pred = p[i].argmax(dim=0)
        counts = torch.stack([(pred == k).sum() for k in range(c)]).double()
        weight = 1.0 / torch.clamp(counts ** ratio * float(h * w) ** (1 - ratio), min=1.0)
        total = total + (p[i].pow(2).sum(dim=0) * weight[pred].detach()).sum()
    return -total / (n * c)


def iw_entropy(logits, ratio):
    r"""The seed's IW_entropy: :math:`\frac{1}{NC}\sum_n\sum_{h,w} E^{(n,h,w)} / \max(N_{n,\hat y}^r (HW)^{1-r}, 1)`."""
    n, c, h, w = logits.shape
    p = logits.softmax(dim=1)
    total = 0.0
    for i in range(n):
        pred = logits[i].argmax(dim=0)
        counts = torch.stack([(pred == k).sum() for k in range(c)]).double()
        weight = 1.0 / torch.clamp(counts ** ratio * float(h * w) ** (1 - ratio), min=1.0)
        total = total + (-(p[i] * p[i].log()).sum(dim=0) * weight[pred].detach()).sum()
    return total / (n * c)


def guidance_labels(main, aux, threshold):
    p, q = main.detach().softmax(dim=1), aux.detach().softmax(dim=1)
    label = ((p + q) / 2).argmax(dim=1)
    confident = (p.amax(dim=1) > threshold) | (q.amax(dim=1) > threshold)
    return torch.where(confident, label, torch.full_like(label, IGNORE_INDEX))


def bce_logits(d, z):
    r"""Vanilla GAN: :math:`-[z\log\sigma(D) + (1-z)\log(1-\sigma(D))]`, averaged over patches."""
    return (F.softplus(-d) if z == 1 else F.softplus(d)).mean()


def gan(d, z, kind):
    return bce_logits(d, z) if kind == "vanilla" else (d - z).pow(2).mean()


# ------------------------------------------------------------------ comparing a step with its objective
def trained(method):
    """The players the method's optimisers update, by name."""
    named = dict(method.model.named_parameters(prefix="model"))
    for part in ("discriminators", "causality", "weak_head"):
        module = getattr(method, part, None)
        if isinstance(module, torch.nn.Module):
            named |= dict(module.named_parameters(prefix=part))
    in_optimizers = {id(p) for opt in method.optimizers.values() for g in opt.param_groups for p in g["params"]}
    return {k: p for k, p in named.items() if id(p) in in_optimizers}


def check(method, reference, losses, src, tgt):
    """``losses``: {player prefix: hand-computed loss of the copy ``reference``}; each player's parameters must
    have the step's gradients."""
    method.step(src, tgt)
    got, params = trained(method), trained(reference)
    assert got.keys() == params.keys()
    for prefix, loss in losses.items():
        names = [k for k in params if k.startswith(prefix)]
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True, retain_graph=True)
        for k, g in zip(names, grads):
            g = torch.zeros_like(params[k]) if g is None else g
            step = got[k].grad if got[k].grad is not None else torch.zeros_like(g)
            assert torch.allclose(step, g, rtol=1e-7, atol=1e-13), k
    moved = sum(float(got[k].grad.abs().sum()) for k in got if got[k].grad is not None)
    assert moved > 0


# ------------------------------------------------------------------ the methods
def test_minent_is_source_ce_plus_weighted_entropy_of_the_target_main_head():
    src, tgt = batches()
    m = build("minent", lr=0.01, lambda_seg=0.3, lambda_target=0.7)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * entropy_seed(t["out"])
    check(m, r, {"model": loss}, src, tgt)


def test_minent_log_c_normalisation_divides_by_log_c():
    src, tgt = batches()
    m = build("minent", lr=0.01, lambda_target=0.7, normalization="log_c")
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    loss = ce(s["out"], src.label) + 0.7 * entropy_seed(t["out"]) * C / math.log(C)
    check(m, r, {"model": loss}, src, tgt)


def test_maxsquare_is_source_ce_plus_weighted_maximum_squares():
    src, tgt = batches()
    m = build("maxsquare", lr=0.01, lambda_seg=0.3, lambda_target=0.7)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * maxsquare(t["out"])
    check(m, r, {"model": loss}, src, tgt)


def test_maxsquare_iw_weights_each_pixel_by_its_image_wise_class_frequency():
    src, tgt = batches()
    m = build("maxsquare_iw", lr=0.01, lambda_seg=0.3, lambda_target=0.7, iw_ratio=0.3)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * iw_maxsquare(t["out"], 0.3)
    check(m, r, {"model": loss}, src, tgt)


def test_maxsquare_iw_multi_adds_the_guidance_ce_on_the_auxiliary_head():
    src, tgt = batches()
    m = build("maxsquare_iw_multi", lr=0.01, lambda_seg=0.3, lambda_target=0.7)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    # a threshold that keeps about half the target pixels, so the guidance has labelled and ignored pixels
    confidence = torch.maximum(t["out"].softmax(1).amax(1), t["aux"].softmax(1).amax(1))
    m.cfg.threshold = r.cfg.threshold = float(confidence.detach().median())
    pseudo = guidance_labels(t["out"], t["aux"], r.cfg.threshold)
    assert 0.2 < (pseudo != IGNORE_INDEX).double().mean() < 0.8
    loss = (ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * iw_maxsquare(t["out"], 0.2)
            + 0.3 * 0.7 * ce(t["aux"], pseudo))
    check(m, r, {"model": loss}, src, tgt)


def test_maxsquare_target_loss_entropy_is_the_seeds_entropy_and_iw_entropy_modes():
    src, tgt = batches()
    for iw_ratio in (None, 0.3):  # --target_mode entropy, IW_entropy
        m = build("maxsquare", lr=0.01, lambda_seg=0.3, lambda_target=0.7, target_loss="entropy", iw_ratio=iw_ratio)
        r = copy.deepcopy(m)
        s, t = r.model(src.image), r.model(tgt.image)
        target = entropy_seed(t["out"]) if iw_ratio is None else iw_entropy(t["out"], iw_ratio)
        loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * target
        check(m, r, {"model": loss}, src, tgt)


def test_maxsquare_target_loss_hard_is_ce_towards_the_confident_argmax():
    src, tgt = batches()
    m = build("maxsquare", lr=0.01, lambda_seg=0.3, lambda_target=0.7, target_loss="hard")
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    confidence, argmax = t["out"].detach().softmax(1).max(1)
    m.cfg.threshold = r.cfg.threshold = float(confidence.median())  # about half the target pixels labelled
    label = torch.where(confidence > r.cfg.threshold, argmax, torch.full_like(argmax, IGNORE_INDEX))
    assert 0.2 < (label != IGNORE_INDEX).double().mean() < 0.8
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * ce(t["out"], label)
    check(m, r, {"model": loss}, src, tgt)


@pytest.mark.parametrize("kind", ["vanilla", "ls"])
def test_adaptsegnet_multi_segmenter_fools_both_frozen_discriminators_then_each_learns_the_domains(kind):
    src, tgt = batches()
    m = build("adaptsegnet_multi", lr=0.01, lambda_seg=0.3, lambda_adv_target1=0.2, lambda_adv_target2=0.7,
              gan=kind, ndf=4)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    d = r.discriminators
    seg = (ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label)
           + 0.2 * gan(d["aux"](t["aux"].softmax(1)), 0, kind) + 0.7 * gan(d["out"](t["out"].softmax(1)), 0, kind))
    # the discriminators see the maps of the same forward passes, detached: source -> 0, target -> 1, halved
    disc = sum(0.5 * gan(d[k](s[k].detach().softmax(1)), 0, kind) + 0.5 * gan(d[k](t[k].detach().softmax(1)), 1, kind)
               for k in ("aux", "out"))
    check(m, r, {"model": seg, "discriminators": disc}, src, tgt)


def test_adaptsegnet_single_level_has_one_discriminator_on_the_main_output():
    src, tgt = batches()
    m = build("adaptsegnet", lr=0.01, lambda_seg=0.3, lambda_adv_target2=0.7, ndf=4)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    d = r.discriminators["out"]
    seg = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * bce_logits(d(t["out"].softmax(1)), 0)
    disc = 0.5 * bce_logits(d(s["out"].detach().softmax(1)), 0) + 0.5 * bce_logits(d(t["out"].detach().softmax(1)), 1)
    check(m, r, {"model": seg, "discriminators": disc}, src, tgt)


def causality_terms(heads, snr_features, label):
    """SNR's per-block terms: the classifier's CE on detached enhanced features, and the dual causality loss of
    the three feature maps through a frozen copy of that classifier."""
    l_caus = l_cls = 0.0
    for feats, head in zip(snr_features, heads.heads):
        h, w = feats.enhanced.shape[-2:]
        small = F.interpolate(label[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()
        l_cls = l_cls + ce(head(feats.enhanced.detach()), small)
        frozen = [F.conv2d(x, head.weight.detach(), head.bias.detach())
                  for x in (feats.normalized, feats.enhanced, feats.contaminated)]
        l_caus = l_caus + dual_causality_loss(*frozen)
    return l_caus, l_cls


def test_snr_maxsquare_adds_the_weighted_causality_terms_on_source_and_trains_their_classifiers():
    src, tgt = batches()
    m = build("snr_maxsquare", "minideeplab_snr", lr=0.01, lambda_seg=0.3, lambda_target=0.7, lambda_causality=0.4)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    l_caus, l_cls = causality_terms(r.causality, s["snr"], src.label)
    loss = (ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.4 * (l_caus + l_cls)
            + 0.7 * maxsquare(t["out"]))
    check(m, r, {"model": loss, "causality": loss}, src, tgt)


def test_snr_on_source_alone_is_ce_plus_the_weighted_causality_terms():
    src, _ = batches()
    m = build("snr", "minideeplab_snr", lr=0.01, lambda_seg=0.3, lambda_causality=0.4)
    r = copy.deepcopy(m)
    s = r.model(src.image)
    l_caus, l_cls = causality_terms(r.causality, s["snr"], src.label)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.4 * (l_caus + l_cls)
    check(m, r, {"model": loss, "causality": loss}, src, None)


def test_clustered_embeddings_is_iw_maxsquare_plus_the_three_weighted_feature_terms():
    src, tgt = batches()
    m = build("clustered_embeddings", lr=0.01, lambda_seg=0.3, lambda_entropy=0.7, lambda_cluster=0.05,
              lambda_ortho=0.2, lambda_sparse=0.6)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    rows = [feature_rows(s["feat"]), feature_rows(t["feat"])]

    def classes(out, mode):  # each domain's posterior resized to its own feature grid, then its argmax
        size = out["feat"].shape[-2:]
        p = out["out"].softmax(1)
        p = F.interpolate(p, size=size, mode=mode) if mode == "nearest" else \
            F.interpolate(p, size=size, mode=mode, align_corners=True)
        return p.argmax(1).flatten()

    bilinear = [classes(s, "bilinear"), classes(t, "bilinear")]
    pull, push = clustering_loss(rows, bilinear, class_centroids(rows, bilinear, C), 1.0)
    nearest = [classes(s, "nearest"), classes(t, "nearest")]
    centroids = class_centroids(rows, nearest, C)
    seen = centroids[torch.isfinite(centroids).all(dim=1)]
    loss = (ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * iw_maxsquare(t["out"], 0.2)
            + 0.05 * (pull - push) + 0.2 * orthogonality_loss(torch.cat(rows), seen, 1.0)
            + 0.6 * sparsity_loss(seen, 0.5, 2))
    check(m, r, {"model": loss}, src, tgt)


def prepared(name, src, tgt, **cfg):
    m = build(name, lr=0.01, lambda_seg=0.3, lambda_target=0.7, **cfg)
    m.on_round_start(0, [(image, None, i, False) for i, image in enumerate(tgt.image)],
                     [(image, label, i, False) for i, (image, label) in enumerate(zip(src.image, src.label))])
    pseudo = m.target_labels(tgt)
    assert 0 < (pseudo != IGNORE_INDEX).double().mean() < 1  # labelled and ignored pixels both present
    return m, pseudo


def test_cbst_is_source_ce_plus_weighted_ce_on_the_stored_pseudo_labels():
    src, tgt = batches()
    m, pseudo = prepared("cbst", src, tgt, tgt_port=0.5)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * ce(t["out"], pseudo)
    check(m, r, {"model": loss}, src, tgt)


def test_mlsl_sisc_uses_ohem_on_the_main_head_of_both_domains():
    src, tgt = batches()
    m, pseudo = prepared("mlsl", src, tgt, tgt_port=0.5, patches=2, patch_size=(16, 32))
    with torch.no_grad():  # a confident classifier, so that OHEM drops the easy pixels and differs from CE
        for name, p in m.model.named_parameters():
            if name.startswith("head."):
                p.mul_(20)
        easy = m.model(src.image)["out"].argmax(dim=1)
    src.label[:, 16:] = easy[:, 16:]  # half of the source pixels are the model's own prediction
    s = m.model(src.image)["out"].detach()
    for logits, label in ((s, src.label), (m.model(tgt.image)["out"].detach(), pseudo)):
        p_label = logits.softmax(1).gather(1, label.clamp(max=C - 1)[:, None])[:, 0][label != IGNORE_INDEX]
        assert 0.1 < (p_label > 0.6).double().mean() < 0.9  # OHEM keeps some pixels and drops others
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    loss = (ohem_cross_entropy(s["out"], src.label) + 0.3 * ce(s["aux"], src.label)
            + 0.7 * ohem_cross_entropy(t["out"], pseudo))
    check(m, r, {"model": loss}, src, tgt)


def test_mlsl_pwl_adds_the_weak_label_loss_of_both_domains_and_trains_its_head():
    src, tgt = batches()
    m, pseudo = prepared("mlsl", src, tgt, tgt_port=0.5, loss="ce", patches=0, weak_labels=True)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)

    def weak(out, label):  # image-level labels from the stride-8 grid, the head on globally pooled features
        return weak_label_loss(r.weak_head(out["feat"].mean(dim=(2, 3))), weak_labels(label[:, 4::8, 4::8], C))

    loss = (ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * ce(t["out"], pseudo)
            + weak(s, src.label) + weak(t, pseudo))
    check(m, r, {"model": loss, "weak_head": loss}, src, tgt)


def test_dacs_is_source_ce_plus_the_weighted_ce_of_the_class_mixed_images_with_the_teachers_labels():
    src, tgt = batches()
    src.label[0][src.label[0] == 18] = 17  # image 0: 18 classes and 255, an odd count (10 of 19 pasted, not 9)
    m = build("dacs", lr=0.01, lambda_seg=0.3, lambda_target=0.7, color_jitter=False, blur=False)
    r = copy.deepcopy(m)
    s = r.model(src.image)
    with torch.no_grad():  # the teacher: the same weights, BatchNorm on the target batch's own statistics
        confidence, pseudo = copy.deepcopy(r.model).train()(tgt.image)["out"].softmax(1).max(1)
    m.cfg.threshold = r.cfg.threshold = float(confidence.median())
    w_t = (confidence >= r.cfg.threshold).double().mean()  # the share of confident target pixels
    assert 0.2 < w_t < 0.8
    torch.manual_seed(7)  # the classes the step draws: (n + n % 2) / 2 of the n values of each source label
    masks = []
    for y in src.label:
        classes = torch.unique(y)  # 255 included, as in the original
        n = len(classes)
        chosen = classes[torch.randperm(n)[: (n + n % 2) // 2]]
        masks.append((y[..., None] == chosen).any(-1))
    mask = torch.stack(masks)
    image = torch.where(mask[:, None], src.image, tgt.image)
    label = torch.where(mask, src.label, pseudo)
    weight = torch.where(mask, 1.0, w_t)
    assert (label == IGNORE_INDEX).any() and (~mask).any() and mask.any()  # ignored pixels count in the mean
    logits = r.model(image)["out"]
    nll = -logits.log_softmax(1).gather(1, label.clamp(max=C - 1)[:, None])[:, 0] * (label != IGNORE_INDEX)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * (weight * nll).mean()
    torch.manual_seed(7)
    check(m, r, {"model": loss}, src, tgt)


def test_dacs_without_mixing_is_source_ce_plus_the_weighted_ce_of_the_augmented_target_with_the_teachers_labels():
    """``mix=False``, the "no mixing" ablation: the teacher's labels on the plain target image, the same strong
    augmentation (colour jitter and blur on), the confidence weight on every pixel, nothing pasted."""
    src, tgt = batches()
    m = build("dacs", lr=0.01, lambda_seg=0.3, lambda_target=0.7, mix=False)
    r = copy.deepcopy(m)
    s = r.model(src.image)
    with torch.no_grad():
        confidence, pseudo = copy.deepcopy(r.model).train()(tgt.image)["out"].softmax(1).max(1)
    m.cfg.threshold = r.cfg.threshold = float(confidence.median())
    w_t = (confidence >= r.cfg.threshold).double().mean()
    assert 0.2 < w_t < 0.8
    torch.manual_seed(7)  # the augmentation's draws: the first random numbers of the step
    image = strong_augment(tgt.image, r.normalization, True, True)
    assert not torch.allclose(image, tgt.image)
    logits = r.model(image)["out"]
    nll = -logits.log_softmax(1).gather(1, pseudo[:, None])[:, 0]
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * (w_t * nll).mean()
    torch.manual_seed(7)
    check(m, r, {"model": loss}, src, tgt)


# ------------------------------------------------------------------ MIC on its three hosts
def mic_term(r, tgt, threshold):
    r"""MIC's term by hand: the teacher (the segmenter's weights, BatchNorm on the target batch) labels the full
    target image; :math:`q_T` is the share of its pixels at or above the threshold; the student sees the image with
    the cells of a 4-pixel grid zeroed where :math:`\mathcal{U}(0, 1) \le 0.7` (drawn from torch's generator after
    the host's draws); CE against the pseudo-labels, times :math:`q_T`, over all pixels."""
    with torch.no_grad():
        confidence, pseudo = copy.deepcopy(r.model).train()(tgt.image)["out"].softmax(1).max(1)
    q = (confidence >= threshold).double().mean()
    cells = (torch.rand(2, 1, 8, 16) > 0.7).double()
    keep = cells.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # blocks of 4 x 4 pixels
    assert 0.1 < keep.mean() < 0.5 and 0.2 < q < 0.8
    return q * ce_all(r.model(tgt.image * keep)["out"], pseudo), confidence


def ce_all(logits, label):
    """CE averaged over every pixel."""
    return -logits.log_softmax(1).gather(1, label[:, None])[:, 0].mean()


def median_confidence(model, image):
    with torch.no_grad():
        return float(copy.deepcopy(model).train()(image)["out"].softmax(1).amax(1).median())


def test_minent_mic_adds_the_confidence_weighted_ce_of_the_masked_target_image_with_its_own_teachers_labels():
    src, tgt = batches()
    m = build("minent_mic", lr=0.01, lambda_seg=0.3, lambda_target=0.7, lambda_mic=0.6, mask_block=4,
              mic_augment=False)
    m.cfg.mic_threshold = median_confidence(m.model, tgt.image)  # the teacher starts as a copy of the segmenter
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    torch.manual_seed(7)
    l_mic, _ = mic_term(r, tgt, m.cfg.mic_threshold)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * entropy_seed(t["out"]) + 0.6 * l_mic
    torch.manual_seed(7)
    check(m, r, {"model": loss}, src, tgt)


def test_adaptsegnet_multi_mic_adds_the_masked_term_to_the_segmenter_and_leaves_the_discriminators_theirs():
    src, tgt = batches()
    m = build("adaptsegnet_multi_mic", lr=0.01, lambda_seg=0.3, lambda_adv_target1=0.2, lambda_adv_target2=0.7,
              ndf=4, lambda_mic=0.6, mask_block=4, mic_augment=False)
    m.cfg.mic_threshold = median_confidence(m.model, tgt.image)
    r = copy.deepcopy(m)
    s, t = r.model(src.image), r.model(tgt.image)
    d = r.discriminators
    torch.manual_seed(7)
    l_mic, _ = mic_term(r, tgt, m.cfg.mic_threshold)
    seg = (ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.2 * bce_logits(d["aux"](t["aux"].softmax(1)), 0)
           + 0.7 * bce_logits(d["out"](t["out"].softmax(1)), 0) + 0.6 * l_mic)
    disc = sum(0.5 * bce_logits(d[k](s[k].detach().softmax(1)), 0) + 0.5 * bce_logits(d[k](t[k].detach().softmax(1)), 1)
               for k in ("aux", "out"))
    torch.manual_seed(7)
    check(m, r, {"model": seg, "discriminators": disc}, src, tgt)


def test_dacs_mic_adds_the_masked_term_on_dacs_teacher_labels_and_weight_in_the_same_update():
    src, tgt = batches()
    m = build("dacs_mic", lr=0.01, lambda_seg=0.3, lambda_target=0.7, color_jitter=False, blur=False, lambda_mic=0.6,
              mask_block=4, mic_augment=False)
    m.cfg.threshold = median_confidence(m.model, tgt.image)
    r = copy.deepcopy(m)
    s = r.model(src.image)
    torch.manual_seed(7)  # DACS's ClassMix draws first, then MIC's mask (the original's order)
    masks = []
    for y in src.label:
        classes = torch.unique(y)
        n = len(classes)
        masks.append((y[..., None] == classes[torch.randperm(n)[: (n + n % 2) // 2]]).any(-1))
    mask = torch.stack(masks)
    l_mic, confidence = mic_term(r, tgt, m.cfg.threshold)
    pseudo = copy.deepcopy(r.model).train()(tgt.image)["out"].detach().argmax(1)
    w_t = (confidence >= m.cfg.threshold).double().mean()
    label, weight = torch.where(mask, src.label, pseudo), torch.where(mask, 1.0, w_t)
    logits = r.model(torch.where(mask[:, None], src.image, tgt.image))["out"]
    nll = -logits.log_softmax(1).gather(1, label.clamp(max=C - 1)[:, None])[:, 0] * (label != IGNORE_INDEX)
    loss = ce(s["out"], src.label) + 0.3 * ce(s["aux"], src.label) + 0.7 * (weight * nll).mean() + 0.6 * l_mic
    torch.manual_seed(7)
    check(m, r, {"model": loss}, src, tgt)
