"""The terms of Ben-David et al.'s bound (udalib.eval.domain_distance) against hand-computed cases.

Every value here is worked out in the comment beside it: a domain classifier that never errs, one at chance, one
whose error is the Bayes error of two Gaussians, one whose error is fixed by construction; joint errors of label
rules that agree, contradict, or agree on part of the features. ``tests/check_mutants.py`` edits the module (a
flipped sign, a dropped factor 2, unbalanced weights) and expects these tests to fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from udalib.data import IGNORE_INDEX
from udalib.eval import domain_distance as dd


def gaussian(n: int, dim: int, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x[:, 0] += shift
    return x


# ---------------------------------------------------------------------------------------------- proxy A-distance
@pytest.mark.parametrize("error, pad", [(0.0, 2.0), (0.5, 0.0), (0.25, 1.0), (0.1, 1.6), (0.6, -0.4)])
def test_pad_is_two_times_one_minus_two_epsilon(error, pad):
    # 2 (1 - 2 * 0.25) = 1; 2 (1 - 2 * 0.1) = 1.6; above chance, 2 (1 - 1.2) = -0.4
    assert dd.pad_from_error(error) == pytest.approx(pad)


def test_separable_domains_have_pad_two():
    # the target sits 20 standard deviations away along the first axis: a linear rule never errs
    s, t = gaussian(200, 4, seed=1), gaussian(200, 4, shift=20.0, seed=2)
    assert dd.domain_classifier_error(s, t) == 0.0
    assert dd.proxy_a_distance(s, t) == 2.0


def test_identical_distributions_have_pad_near_zero():
    # the same distribution: the held-out error is 0.5 up to sampling (2,000 held-out samples: sd of PAD ~ 0.045)
    s, t = gaussian(2000, 5, seed=3), gaussian(2000, 5, seed=4)
    assert abs(dd.proxy_a_distance(s, t)) < 0.2


def test_pad_of_two_gaussians_is_that_of_their_bayes_error():
    # N(-1, 1) against N(+1, 1): the best rule is the threshold at 0, its error Phi(-1) = 0.1587, and
    # PAD = 2 (1 - 2 * 0.1587) = 1.365. 10,000 held-out samples per domain: sd of PAD ~ 0.01
    s, t = gaussian(20000, 1, shift=-1.0, seed=5), gaussian(20000, 1, shift=1.0, seed=6)
    bayes = 0.5 * math.erfc(1 / math.sqrt(2))
    assert bayes == pytest.approx(0.1587, abs=1e-4)
    assert dd.domain_classifier_error(s, t) == pytest.approx(bayes, abs=0.01)
    assert dd.proxy_a_distance(s, t) == pytest.approx(2 * (1 - 2 * bayes), abs=0.04)


def cells(values: list[float], n: int) -> torch.Tensor:
    """``n`` images, each with the given 1-D cell features: ``(n, len(values), 1)``."""
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1).repeat(n, 1, 1)


def test_domain_error_is_the_mean_of_the_two_domains_error_rates():
    # every source image has 1 of 5 cells at +1 (the rest at -1); every target cell is at +1. With the domains
    # weighted equally the best rule calls +1 "target": it errs on 1/5 of the source cells and on no target cell, so
    # eps = (0.2 + 0) / 2 = 0.1 and PAD = 2 (1 - 0.2) = 1.6, whatever the number of images per domain. With 40
    # source images against 4 target images, unweighted, the 20 fitted source cells at +1 would outvote the 10 target
    # ones; and a pooled error rate would be 20 / 110 = 0.18
    s, t = cells([1, -1, -1, -1, -1], 40), cells([1, 1, 1, 1, 1], 4)
    assert dd.domain_classifier_error(s, t) == pytest.approx(0.1)
    assert dd.proxy_a_distance(s, t) == pytest.approx(1.6)


def test_split_is_by_image_disjoint_and_reproducible():
    fit, held = dd.split_images(10, 0.3, seed=7)
    assert len(held) == 3 and len(fit) == 7
    assert sorted(torch.cat([fit, held]).tolist()) == list(range(10))
    again = dd.split_images(10, 0.3, seed=7)
    assert torch.equal(fit, again[0]) and torch.equal(held, again[1])
    with pytest.raises(ValueError, match="at least 2 images"):
        dd.split_images(1)


# ---------------------------------------------------------------------------------------------- joint error
def labelled_line(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of 20 cells with 1-D features N(0, 1) and the label [x > 0]."""
    x = gaussian(n * 20, 1, seed=seed).view(n, 20, 1)
    return x, (x[..., 0] > 0).long()


def test_joint_error_is_zero_when_one_rule_labels_both_domains():
    (xs, ys), (xt, yt) = labelled_line(100, 8), labelled_line(100, 9)
    eps_s, eps_t = dd.joint_error(xs, ys, xt, yt)
    assert eps_s + eps_t < 0.02


def test_joint_error_is_one_when_the_labels_contradict():
    # the target labels are the opposite rule on the same features: every h errs on one domain or the other at each
    # x, so eps_S(h) + eps_T(h) = 1 for all h
    (xs, ys), (xt, yt) = labelled_line(100, 10), labelled_line(100, 11)
    eps_s, eps_t = dd.joint_error(xs, ys, xt, 1 - yt)
    assert eps_s + eps_t == pytest.approx(1.0, abs=0.05)


def test_joint_error_of_a_partly_contested_feature():
    # 1-D cells at -1 and +1. Source images: 3 cells at -1 (class 0), 1 at +1 (class 1). Target images: 1 cell at -1
    # (class 0), 3 at +1 (class 0), and one ignored cell. At +1 the source puts a quarter of its weight on class 1
    # and the target three quarters of its weight on class 0, so the joint rule says 0 there:
    # eps_S = 1/4, eps_T = 0, lambda = 1/4. The source-only rule says 1 at +1: eps_S = 0, eps_T = 3/4.
    # 40 source images against 10 target images: unweighted, the 40 source cells at +1 would outvote the 30 target
    # ones, and the joint rule would be the source-only rule.
    xs, ys = cells([-1, -1, -1, 1], 40), torch.tensor([[0, 0, 0, 1]]).repeat(40, 1)
    xt, yt = cells([-1, 1, 1, 1, 5], 10), torch.tensor([[0, 0, 0, 0, IGNORE_INDEX]]).repeat(10, 1)
    assert dd.joint_error(xs, ys, xt, yt) == pytest.approx((0.25, 0.0))
    assert dd.source_probe_error(xs, ys, xt, yt) == pytest.approx((0.0, 0.75))


def test_joint_error_with_several_classes_and_ignored_labels():
    # three well separated classes along one axis in both domains, some labels ignored: lambda = 0; a class the
    # target has and the source-only rule never saw counts as an error of that rule
    g = torch.Generator().manual_seed(12)
    ys = torch.randint(0, 3, (60, 16), generator=g)
    yt = torch.randint(0, 4, (60, 16), generator=g)
    xs, xt = (10.0 * y.unsqueeze(-1).double() for y in (ys, yt))
    ys[:, 0] = IGNORE_INDEX
    assert dd.joint_error(xs, ys, xt, yt) == pytest.approx((0.0, 0.0))
    eps_s, eps_t = dd.source_probe_error(xs, ys, xt, yt)
    held_t = dd.split_images(60, seed=1)[1]
    assert eps_s == 0.0 and eps_t == pytest.approx((yt[held_t] == 3).double().mean().item())


def test_domain_terms_gathers_the_terms():
    xs, ys = cells([-1, -1, -1, 1], 40), torch.tensor([[0, 0, 0, 1]]).repeat(40, 1)
    xt, yt = cells([-1, 1, 1, 1], 10), torch.zeros(10, 4, dtype=torch.long)
    terms = dd.domain_terms(xs, ys, xt, yt)
    # per cell: +1 is a quarter of the source cells and three quarters of the target's: the rule "+1 is target"
    # errs on 1/4 of the source cells and 1/4 of the target cells, eps = 1/4, PAD = 1. Per image (the mean over
    # the cells, -0.5 against +0.5): separable, PAD = 2
    assert terms["pad_pixel"] == pytest.approx(1.0) and terms["error_pixel"] == pytest.approx(0.25)
    assert terms["pad_image"] == 2.0
    assert terms["lambda"] == pytest.approx(terms["joint_source"] + terms["joint_target"]) == pytest.approx(0.25)
    assert (terms["probe_source"], terms["probe_target"]) == pytest.approx((0.0, 0.75))
    # random target labels: no rule does better than chance on the target, eps_T(h*) ~ 0.5, and lambda is the sum
    (xs, ys), (xt, _) = labelled_line(60, 13), labelled_line(60, 14)
    noise = torch.randint(0, 2, xt.shape[:2], generator=torch.Generator().manual_seed(15))
    terms = dd.domain_terms(xs, ys, xt, noise)
    assert terms["joint_target"] == pytest.approx(0.5, abs=0.05) and terms["joint_source"] < 0.05
    assert terms["lambda"] == pytest.approx(terms["joint_source"] + terms["joint_target"])


# ---------------------------------------------------------------------------------------------- features
class GridModel(torch.nn.Module):
    """``feat``: the image's first channel average-pooled to a 2 x 4 grid (so every cell is known)."""

    def forward(self, x):
        return {"feat": torch.nn.functional.avg_pool2d(x[:, :1], 8)}


def test_feature_samples_take_the_label_at_each_cell_centre():
    images = torch.arange(2 * 16 * 32, dtype=torch.float32).view(2, 1, 16, 32).repeat(1, 3, 1, 1)
    labels = torch.arange(16 * 32).view(16, 32).repeat(2, 1, 1)
    feats, lab = dd.feature_samples(GridModel(), images, labels)
    assert feats.shape == (2, 8, 1) and lab.shape == (2, 8)
    # cell (r, c) of the 2 x 4 grid covers rows 8r..8r+7 and columns 8c..8c+7: its centre pixel is (8r+4, 8c+4)
    assert lab[0].tolist() == [(8 * r + 4) * 32 + 8 * c + 4 for r in range(2) for c in range(4)]
    assert feats[1, 5, 0] == images[1, 0, 8:16, 8:16].mean()
    some, some_lab = dd.feature_samples(GridModel(), images, labels, cells=3)
    assert some.shape == (2, 3, 1) and set(some_lab[0].tolist()) <= set(lab[0].tolist())


def test_minicity_images_are_rendered_in_memory():
    from udalib.data import minicity, normalize

    images, labels = dd.domain_images("minicity:target-camera/val", 3)
    total = minicity.FACTOR_SPLITS["val"]
    image, label = minicity.make_sample("target-camera", "val", total // 3)
    assert torch.equal(images[1], normalize(image)) and torch.equal(labels[1], torch.from_numpy(label).long())
    with pytest.raises(ValueError, match="names no split"):
        dd.domain_images("minicity:source", 2)


# ---------------------------------------------------------------------------------------------- the relation
def test_spearman_by_hand():
    # ranks differ by 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert dd.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert dd.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their ranks: (1, 2.5, 2.5, 4) against (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5) = 0.9487
    assert dd.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(dd.spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_critical_values_are_the_table_ones():
    # two-sided 5 % critical values of Spearman's rho (e.g. Zar, Biostatistical Analysis, Table B.20)
    assert dd.spearman_critical(8) == pytest.approx(0.738, abs=1e-3)
    assert dd.spearman_critical(7) == pytest.approx(0.786, abs=1e-3)
    assert dd.spearman_critical(10) == pytest.approx(0.648, abs=0.01)


def test_relation_verdict():
    assert dd.relation_verdict([0.1, -0.2, 0.25], 0.738) == "no monotone relation"
    assert dd.relation_verdict([-0.8, -0.9, -0.75], 0.738) == "a monotone relation, decreasing, on every seed"
    assert dd.relation_verdict([0.8, 0.5, 0.4], 0.738) == "a moderate increasing trend, not significant on every seed"
    assert dd.relation_verdict([0.4, 0.3, 0.35], 0.738) == "a weak increasing trend, not significant on every seed"
    assert dd.relation_verdict([0.9, 0.69, 0.8], 0.738) == "a strong increasing trend, not significant on every seed"
    assert dd.relation_verdict(np.array([np.nan, np.nan]), 0.738) == "no monotone relation"
