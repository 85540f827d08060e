"""Losses against hand-computed values, closed-form gradients and transcriptions of the seed code."""

from __future__ import annotations

import math

import pytest
import torch

from udalib.data.batch import IGNORE_INDEX
from udalib.losses import (
    entropy_loss,
    entropy_map,
    hard_pseudo_label_loss,
    image_wise_class_weights,
    iw_entropy_loss,
    iw_maxsquare_loss,
    maxsquare_loss,
    seg_loss,
    self_produced_guidance,
)

C = 5


def one_hot_logits(labels: torch.Tensor, c: int = C, scale: float = 60.0) -> torch.Tensor:
    """(N, H, W) labels -> logits whose softmax is one-hot to float precision."""
    return scale * torch.nn.functional.one_hot(labels, c).permute(0, 3, 1, 2).double()


def test_seg_loss_ignores_ignored_pixels_and_is_zero_without_labels():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    label = torch.tensor([[[0, IGNORE_INDEX]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))  # only the first pixel counts
    assert seg_loss(logits, label).item() == pytest.approx(expected)
    all_ignored = torch.full((1, 1, 2), IGNORE_INDEX)
    loss = seg_loss(logits.requires_grad_(), all_ignored)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable


def test_entropy_of_uniform_and_one_hot_posteriors():
    uniform = torch.zeros(2, C, 3, 4)
    assert torch.allclose(entropy_map(uniform), torch.full((2, 3, 4), math.log(C)))
    assert entropy_loss(uniform, "original").item() == pytest.approx(math.log(C) / C)  # MaxSquare's softCrossEntropy
    assert entropy_loss(uniform, "log_c").item() == pytest.approx(1.0)  # ADVENT's normalisation
    onehot = one_hot_logits(torch.randint(0, C, (2, 3, 4)))
    assert entropy_loss(onehot).item() == pytest.approx(0.0, abs=1e-12)


def test_original_and_advent_normalisations_differ_by_c_over_log_c():
    x = torch.randn(2, C, 4, 4)
    assert entropy_loss(x, "log_c").item() == pytest.approx(entropy_loss(x, "original").item() * C / math.log(C))
    assert entropy_loss(x, "seed").item() == entropy_loss(x, "original").item()  # the stored runs' spelling
    with pytest.raises(ValueError, match="normalization"):
        entropy_loss(x, "bits")


def test_entropy_matches_the_original_soft_cross_entropy_transcription():
    # MaxSquare utils/loss.py softCrossEntropy(pred, target=softmax(pred)): mean over N*C*H*W of -log_softmax * P
    x = torch.randn(3, C, 5, 6)
    original = torch.mean(-torch.log_softmax(x, 1) * torch.softmax(x, 1))
    assert entropy_loss(x).item() == pytest.approx(original.item(), rel=1e-6)


def test_entropy_gradient_is_the_closed_form():
    # dH/dx_k = -p_k (log p_k + H) for one pixel
    x = torch.randn(1, C, 1, 1, dtype=torch.double, requires_grad=True)
    entropy_map(x).sum().backward()
    p = torch.softmax(x.detach(), 1)
    h = -(p * p.log()).sum()
    assert torch.allclose(x.grad, -p * (p.log() + h))


def test_maxsquare_values_uniform_and_one_hot():
    assert maxsquare_loss(torch.zeros(2, C, 3, 3)).item() == pytest.approx(-0.5 / C**2)
    onehot = one_hot_logits(torch.randint(0, C, (2, 3, 3)))
    assert maxsquare_loss(onehot).item() == pytest.approx(-0.5 / C)  # one entry of C is 1 per pixel


def test_maxsquare_gradient_is_linear_in_p_while_entropy_weights_easy_pixels_more():
    # binary pixel with logits (x, 0): p = sigmoid(x).
    # MaxSquare (seed normalisation, C=2, one pixel): L = -(p^2 + (1-p)^2)/4 -> dL/dx = -(2p-1) p (1-p) / 2
    # entropy: dH/dx = -x p (1-p). For an easy pixel (x large) entropy's gradient is |x|/(2p-1)*2 times larger.
    for x0 in (0.5, 2.0, 5.0):
        x = torch.tensor([[[[x0]], [[0.0]]]], dtype=torch.double, requires_grad=True)
        maxsquare_loss(x).backward()
        p = torch.sigmoid(torch.tensor(x0, dtype=torch.double))
        assert x.grad[0, 0, 0, 0].item() == pytest.approx((-(2 * p - 1) * p * (1 - p) / 2).item())
        x.grad = None
        entropy_map(x).sum().backward()
        assert x.grad[0, 0, 0, 0].item() == pytest.approx((-x0 * p * (1 - p)).item())


def seed_iw_weights(logits: torch.Tensor, ratio: float) -> torch.Tensor:
    """Transcription of the seed's per-image torch.histc loop (IW_MaxSquareloss), one image at a time."""
    out = []
    c = logits.shape[1]
    for i in range(logits.shape[0]):
        pred = logits[i].argmax(0)
        hist = torch.histc(pred.float(), bins=c + 1, min=-1, max=c - 1)[1:]  # bin k counts class k
        w = 1 / torch.max(torch.pow(hist, ratio) * torch.pow(hist.sum(), 1 - ratio), torch.ones(1))
        out.append(w[pred])
    return torch.stack(out)


@pytest.mark.parametrize("ratio", [0.0, 0.2, 1.0])
def test_image_wise_weights_match_the_seed_loop(ratio):
    logits = torch.randn(3, C, 6, 7)
    assert torch.allclose(image_wise_class_weights(logits, ratio), seed_iw_weights(logits, ratio))


def test_image_wise_weights_two_pixel_cases():
    same = one_hot_logits(torch.tensor([[[0, 0]]])).float()  # both pixels predicted class 0: N_0 = N = 2
    assert torch.allclose(image_wise_class_weights(same, 0.2), torch.full((1, 1, 2), 0.5))
    split = one_hot_logits(torch.tensor([[[0, 1]]])).float()  # N_0 = N_1 = 1, N = 2: w = 1 / 2^0.8
    assert torch.allclose(image_wise_class_weights(split, 0.2), torch.full((1, 1, 2), 2**-0.8))
    assert torch.allclose(image_wise_class_weights(split, 0.0), torch.full((1, 1, 2), 0.5))  # 0^0 = 1: 1/N


def test_iw_maxsquare_for_a_batch_is_the_mean_of_per_image_losses_and_matches_the_seed_at_batch_one():
    logits = torch.randn(4, C, 5, 5)
    per_image = torch.stack([iw_maxsquare_loss(logits[i:i + 1]) for i in range(4)])
    assert iw_maxsquare_loss(logits).item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    # seed at B=1: -sum(p^2 * w) / (B * C), weights broadcast over the class dimension
    x = logits[:1]
    seed = -torch.sum(torch.softmax(x, 1) ** 2 * seed_iw_weights(x, 0.2)) / C
    assert iw_maxsquare_loss(x).item() == pytest.approx(seed.item(), rel=1e-6)


def test_iw_weights_are_detached_but_the_loss_has_a_gradient():
    x = torch.randn(1, C, 3, 3, requires_grad=True)
    assert not image_wise_class_weights(x).requires_grad
    iw_maxsquare_loss(x).backward()
    assert x.grad.abs().sum() > 0


def probability_logits(*top: float) -> torch.Tensor:
    """Two-class pixels in a row, (1, 2, 1, len(top)): log-probabilities (top[i], 1 - top[i])."""
    p = torch.tensor(top, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()]).reshape(1, 2, 1, len(top))


def test_iw_entropy_weights_each_pixel_entropy_by_its_image_wise_class_frequency():
    # P = (0.8, 0.2), (0.6, 0.4), (0.3, 0.7): classes 0, 0, 1, so N_0 = 2, N_1 = 1, N = 3
    # entropies: H(0.8) = 0.500402, H(0.6) = 0.673012, H(0.7) = 0.610864
    x = probability_logits(0.8, 0.6, 0.3)
    # r = 0.5: w_0 = 1 / sqrt(2 * 3) = 0.408248, w_1 = 1 / sqrt(1 * 3) = 0.577350;
    # (0.408248 * (0.500402 + 0.673012) + 0.577350 * 0.610864) / (N C = 2) = 0.415863
    assert iw_entropy_loss(x, 0.5).item() == pytest.approx(0.415863, abs=1e-5)
    # r = 1: w_k = 1 / N_k: (0.5 * 1.173414 + 0.610864) / 2 = 0.598785
    assert iw_entropy_loss(x, 1.0).item() == pytest.approx(0.598785, abs=1e-5)
    # r = 0: every weight 1 / HW = 1/3, i.e. the seed's plain entropy loss (the mean over N C H W)
    assert iw_entropy_loss(x, 0.0).item() == pytest.approx(entropy_loss(x).item(), rel=1e-9)


def test_iw_entropy_matches_the_seed_loop_and_keeps_the_gradient_through_p():
    x = torch.randn(1, C, 4, 5, dtype=torch.float64, requires_grad=True)
    log_p = torch.log_softmax(x, 1)
    seed = torch.sum(-log_p * log_p.exp() * seed_iw_weights(x.detach(), 0.2)) / C  # IWsoftCrossEntropy at B = 1
    assert iw_entropy_loss(x, 0.2).item() == pytest.approx(seed.item(), rel=1e-6)  # the seed's weights: float32
    (g_seed,) = torch.autograd.grad(seed, x)
    (g,) = torch.autograd.grad(iw_entropy_loss(x, 0.2), x)
    assert torch.allclose(g, g_seed)
    batch = torch.randn(3, C, 4, 5)
    per_image = torch.stack([iw_entropy_loss(batch[i:i + 1]) for i in range(3)])
    assert iw_entropy_loss(batch).item() == pytest.approx(per_image.mean().item(), rel=1e-6)


def test_hard_pseudo_labels_keep_the_pixels_confident_above_the_threshold():
    x = probability_logits(0.8, 0.6, 0.3).requires_grad_()
    # 0.65: pixels 1 (class 0 at 0.8) and 3 (class 1 at 0.7): (-log 0.8 - log 0.7) / 2 = (0.223144 + 0.356675) / 2
    assert hard_pseudo_label_loss(x, 0.65).item() == pytest.approx(0.289909, abs=1e-5)
    # 0.75: pixel 1 only: -log 0.8
    assert hard_pseudo_label_loss(x, 0.75).item() == pytest.approx(0.223144, abs=1e-5)
    # 0.5: all three, pixel 2 towards class 0 at 0.6: (0.223144 + 0.510826 + 0.356675) / 3
    assert hard_pseudo_label_loss(x, 0.5).item() == pytest.approx(0.363548, abs=1e-5)
    # no confident pixel: 0 with a zero gradient (the seed's mean over no pixel is NaN)
    loss = hard_pseudo_label_loss(x, 0.9)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_guidance_keeps_pixels_where_either_head_is_confident_above_the_threshold():
    thr = 0.9
    # four pixels: main confident (0.95 on class 1); aux confident (0.95 on class 2); neither;
    # exactly at the threshold (0.9 on class 0, strict '>' rejects it)
    def logits_from(probs):
        return torch.tensor(probs).T.log().view(1, 3, 1, 4)

    main = logits_from([[0.025, 0.95, 0.025], [0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])
    aux = logits_from([[0.2, 0.5, 0.3], [0.025, 0.025, 0.95], [0.5, 0.2, 0.3], [0.8, 0.1, 0.1]])
    label = self_produced_guidance(main, aux, thr)
    # pixel 0: mean probs (0.1125, 0.725, 0.1625) -> 1; pixel 1: (0.2125, 0.1625, 0.625) -> 2
    assert label.tolist() == [[[1, 2, IGNORE_INDEX, IGNORE_INDEX]]]
    assert self_produced_guidance(main, aux, 0.85).tolist() == [[[1, 2, IGNORE_INDEX, 0]]]
