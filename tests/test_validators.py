"""Label-free validators against hand-computed values on tiny tensors, and score_model on a fixed-output model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from udalib.eval.validators import (
    atc_accuracy,
    atc_threshold,
    batch_nuclear_norm,
    information_maximization,
    max_softmax,
    neg_mean_entropy,
    score_model,
    soft_neighborhood_density,
    source_miou,
)

LOG2, LOG3 = math.log(2), math.log(3)


def two_pixels():
    """p1 = (1/2, 1/2, 0), p2 = (1/2, 1/4, 1/4) as a (1, 3, 1, 2) map: classes on dim 1."""
    return torch.tensor([[0.5, 0.5], [0.5, 0.25], [0.0, 0.25]]).view(1, 3, 1, 2)


# ---------------------------------------------------------------------------------------------- entropy, IM
def test_negated_mean_entropy_by_hand():
    # H(p1) = log 2, H(p2) = 1/2 log 2 + 2 * 1/4 log 4 = 3/2 log 2; the mean 5/4 log 2, negated (higher = better)
    assert neg_mean_entropy(two_pixels()) == pytest.approx(-1.25 * LOG2, abs=1e-12)
    # the same pixels as rows (pixels, C)
    rows = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25]])
    assert neg_mean_entropy(rows) == pytest.approx(-1.25 * LOG2, abs=1e-12)


def test_information_maximization_by_hand():
    # mean p = (1/2, 3/8, 1/8): H = 1/2 log 2 + 3/8 log(8/3) + 1/8 log 8 = 2 log 2 - 3/8 log 3
    # IM = H(mean p) - mean H(p) = 2 log 2 - 3/8 log 3 - 5/4 log 2 = 3/4 log 2 - 3/8 log 3 (~0.10788)
    expected = 0.75 * LOG2 - 0.375 * LOG3
    assert information_maximization(two_pixels()) == pytest.approx(expected, abs=1e-12)
    # one class everywhere, however confident, is not informative
    assert information_maximization(torch.tensor([[0.9, 0.1], [0.9, 0.1]])) == pytest.approx(0.0, abs=1e-12)


def test_logits_and_bad_shapes_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="pass logits.softmax"):
        neg_mean_entropy(torch.tensor([[2.0, -1.0, 0.5]]))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(pixels, C\)"):
        information_maximization(torch.ones(3))


# -------------------------------------------------------------------------------------------------------- SND
def snd_by_hand(theta: float, tau: float = 0.05) -> float:
    """Unit vectors at angles 0, theta, 2 theta: s12 = s23 = cos theta, s13 = cos 2 theta. Rows 1 and 3 choose
    between cos theta and cos 2 theta (a two-way softmax), row 2 between two equal similarities (log 2)."""
    q = 1 / (1 + math.exp((math.cos(theta) - math.cos(2 * theta)) / tau))
    h = -q * math.log(q) - (1 - q) * math.log(1 - q)
    return (2 * h + LOG2) / 3


def test_snd_of_three_vectors_by_hand():
    theta = 0.1
    x = torch.tensor([[1.0, 0.0], [5 * math.cos(theta), 5 * math.sin(theta)],  # lengths differ: L2-normalised
                      [0.5 * math.cos(2 * theta), 0.5 * math.sin(2 * theta)]], dtype=torch.float64)
    expected = snd_by_hand(theta)  # ~0.68567; without the temperature ~0.6931, with the diagonal ~0.0
    assert soft_neighborhood_density(x) == pytest.approx(expected, abs=1e-9)
    assert soft_neighborhood_density(x, temperature=1.0) == pytest.approx(snd_by_hand(theta, 1.0), abs=1e-9)
    # a (1, D, 1, 3) map is the same three pixels
    assert soft_neighborhood_density(x.T.reshape(1, 2, 1, 3)) == pytest.approx(expected, abs=1e-9)


def test_snd_samples_pixels_with_the_generator():
    x = torch.rand(50, 4, generator=torch.Generator().manual_seed(1))
    a = soft_neighborhood_density(x, pixels=10, generator=torch.Generator().manual_seed(0))
    b = soft_neighborhood_density(x, pixels=10, generator=torch.Generator().manual_seed(0))
    c = soft_neighborhood_density(x, pixels=10, generator=torch.Generator().manual_seed(1))
    assert a == b and a != c
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:10]
    assert a == pytest.approx(soft_neighborhood_density(x[idx]), abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 pixels"):
        soft_neighborhood_density(x, pixels=1)


# -------------------------------------------------------------------------------------------------------- BNM
def test_bnm_by_hand():
    # A = [[1/2, 1/2, 0], [0, 1/2, 1/2]]: A A^T = [[1/2, 1/4], [1/4, 1/2]], trace 1, det 3/16, and
    # (s1 + s2)^2 = trace + 2 sqrt(det) = 1 + sqrt(3)/2; divided by the K = 2 rows
    a = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    expected = math.sqrt(1 + math.sqrt(3) / 2) / 2  # ~0.68301 (Frobenius: 0.5; divided by C: ~0.4553)
    assert batch_nuclear_norm(a) == pytest.approx(expected, abs=1e-12)
    # one-hot rows of different classes: the nuclear norm is K, so 1 per row, the maximum
    assert batch_nuclear_norm(torch.eye(3)) == pytest.approx(1.0, abs=1e-12)


# -------------------------------------------------------------------------------------------------------- ATC
def test_atc_threshold_and_accuracy_on_five_pixels():
    conf = torch.tensor([0.9, 0.6, 0.8, 0.3, 0.7])
    correct = torch.tensor([True, True, False, False, True])  # accuracy 3/5: three pixels must lie above t
    t = atc_threshold(conf, correct)
    assert t == pytest.approx(0.6)  # above 0.6: 0.7, 0.8, 0.9
    # target: 0.65 and 0.95 are above 0.6; 0.6 itself is not (strictly above)
    assert atc_accuracy(torch.tensor([0.65, 0.6, 0.95, 0.1]), t) == 0.5
    assert atc_threshold(conf, torch.ones(5, dtype=torch.bool)) == -math.inf  # all correct: every pixel above
    assert atc_threshold(conf, torch.zeros(5, dtype=torch.bool)) == pytest.approx(0.9)  # none: no pixel above
    # ties stay together: three pixels at 0.5, accuracy 2/4; above 0.5 one pixel (|1-2| = 1) beats above -inf
    # four (|4-2| = 2)
    assert atc_threshold(torch.tensor([0.5, 0.5, 0.5, 0.9]), torch.tensor([1, 0, 0, 1])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one confidence per correctness flag"):
        atc_threshold(conf, correct[:4])


def test_max_softmax_is_the_largest_class_probability():
    assert max_softmax(two_pixels()).flatten().tolist() == [0.5, 0.5]


# ---------------------------------------------------------------------------------------------- source mIoU
def test_source_miou_from_a_matrix_or_from_predictions():
    # rows = ground truth: IoU_0 = 2 / (3 + 2 - 2) = 2/3, IoU_1 = 1 / (1 + 2 - 1) = 1/2; mean 7/12
    cm = torch.tensor([[2, 1], [0, 1]])
    assert source_miou(cm) == pytest.approx(100 * 7 / 12)
    pred, label = torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 0, 0, 1, 255])  # 255: ignored
    assert source_miou(pred=pred, label=label, num_classes=2) == pytest.approx(100 * 7 / 12)
    with pytest.raises(ValueError, match="either a confusion matrix"):
        source_miou()


# --------------------------------------------------------------------------------------------- score_model
class FixedLogits(nn.Module):
    """Logits that depend on the image only through its first channel (each image's pixels differ)."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.proj = nn.Conv2d(1, num_classes, 1)
        self.bn = nn.BatchNorm2d(1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.tensor([1.0, -2.0, 0.5]).view(3, 1, 1, 1))
            self.proj.bias.copy_(torch.tensor([0.0, 0.3, -0.2]))

    def forward(self, x):
        return {"out": self.proj(self.bn(x[:, :1])), "aux": torch.zeros(1)}


def loaders():
    g = torch.Generator().manual_seed(0)
    target = [(torch.randn(2, 3, 4, 5, generator=g), torch.zeros(2, 4, 5), torch.arange(2)) for _ in range(3)]
    source = [(torch.randn(2, 3, 4, 5, generator=g), torch.randint(0, 3, (2, 4, 5), generator=g)) for _ in range(2)]
    source[0][1][0, :2] = 255  # unlabelled source pixels: in neither the mIoU nor the ATC threshold
    return target, source


def test_score_model_agrees_with_the_validators_on_all_pixels():
    model, (target, source) = FixedLogits().train(), loaders()
    with torch.no_grad():
        model.eval()
        p_t = torch.cat([model(img)["out"].softmax(1) for img, *_ in target])
        p_s = torch.cat([model(img)["out"].softmax(1) for img, *_ in source])
        model.train()
    lab_s = torch.cat([lab for _, lab in source])
    scores = score_model(model, target, source_loader=source, num_classes=3, pixels=1000)  # > 120 pixels: all
    assert model.training and model.bn.training  # flags restored
    assert scores["entropy"] == pytest.approx(neg_mean_entropy(p_t), abs=1e-6)
    assert scores["im"] == pytest.approx(information_maximization(p_t), abs=1e-6)
    assert scores["snd"] == pytest.approx(soft_neighborhood_density(p_t), abs=1e-6)
    assert scores["bnm"] == pytest.approx(batch_nuclear_norm(p_t), abs=1e-6)
    conf, pred = p_s.max(1)
    assert scores["source_miou"] == pytest.approx(source_miou(pred=pred, label=lab_s, num_classes=3))
    valid = lab_s != 255
    t = atc_threshold(conf[valid], pred[valid] == lab_s[valid])
    assert scores["atc"] == pytest.approx(atc_accuracy(max_softmax(p_t), t))


def test_score_model_samples_deterministically_and_without_source_gives_nan():
    model, (target, _) = FixedLogits(), loaders()
    a = score_model(model, target, num_classes=3, pixels=16, seed=0)
    b = score_model(model, target, num_classes=3, pixels=16, seed=0)
    c = score_model(model, target, num_classes=3, pixels=16, seed=1)
    assert a == pytest.approx(b, nan_ok=True) and a["snd"] != c["snd"]
    assert math.isnan(a["source_miou"]) and math.isnan(a["atc"])
    # the sample does not depend on the batching: one batch of all six images gives the same pixels
    merged = [(torch.cat([img for img, *_ in target]),)]
    assert score_model(model, merged, num_classes=3, pixels=16, seed=0) == pytest.approx(a, nan_ok=True)
    with pytest.raises(ValueError, match="not num_classes=19"):
        score_model(model, target, num_classes=19)
