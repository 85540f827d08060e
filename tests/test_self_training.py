"""Self-training (CBST, MLSL): thresholds, selection, patch fusion, weak labels, OHEM and the round schedule against
hand-computed cases; the round structure on the loop, flips, and resume with the stored pseudo-labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from udalib.data import SegmentationList
from udalib.data.batch import IGNORE_INDEX, TargetBatch
from udalib.losses.self_training import (
    cbst_schedule,
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
from udalib.methods import build_method
from udalib.models import build_model
from udalib.train import FitOptions, fit


def test_class_confidences_subsample_every_fourth_and_start_with_the_seed_zero():
    # one image, 3 classes, 8 pixels in a row: predictions 0 0 0 0 0 1 1 2
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.85, 0.55])
    pred = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    prob = torch.zeros(3, 1, 8)
    prob[pred, 0, torch.arange(8)] = conf
    prob[(pred + 1) % 3, 0, torch.arange(8)] = (1 - conf) / 2  # below the max everywhere
    lists = class_confidences([prob], 3, every=1, extra_zero=False)
    assert [list(np.round(x, 2)) for x in lists] == [[0.9, 0.8, 0.7, 0.6, 0.5], [0.95, 0.85], [0.55]]
    lists = class_confidences([prob], 4, every=4)
    assert np.allclose(lists[0], [0.0, 0.9, 0.5])  # the seed's extra 0, then [0::4] of class 0's values
    assert np.allclose(lists[1], [0.0, 0.95]) and np.allclose(lists[3], [0.0])  # class 3: never predicted


def test_class_balanced_thresholds_on_a_hand_built_score_set():
    lists = [np.array([0.0, 0.9, 0.8, 0.7, 0.6]),  # a class, with the seed's extra zero
             np.array([0.0]),  # a class with no pixels
             np.array([0.0, 0.99, 0.3])]
    thr = class_balanced_thresholds(lists, 0.4)
    # k = floor(5 * 0.4) = 2 -> the 2nd largest, 0.8; empty class -> 1; k = floor(3 * 0.4) = 1 -> 0.99
    assert np.allclose(thr, [0.8, 1.0, 0.99])
    assert np.allclose(class_balanced_thresholds(lists, 0.0), [1.0, 1.0, 1.0])  # portion 0: nothing selected
    # portion 1: the seed's extra zero becomes the threshold, 0 -> 1: nothing selected (kept quirk of MLSL
    # issegm/solve_ST1.py)
    assert np.allclose(class_balanced_thresholds(lists, 1.0), [1.0, 1.0, 1.0])
    # without the extra zero, portion 1 keeps every predicted pixel: the smallest confidence
    no_zero = [x[1:] for x in lists]
    assert np.allclose(class_balanced_thresholds(no_zero, 1.0), [0.6, 1.0, 0.3])


def test_pseudo_labels_rescale_by_the_class_threshold_and_ignore_the_rest():
    prob = torch.tensor([[0.6, 0.5, 0.95], [0.4, 0.5, 0.05]]).reshape(1, 2, 1, 3)
    thr = torch.tensor([0.9, 0.3])
    # pixel 0: 0.6/0.9 = 0.67 < 0.4/0.3 = 1.33 -> class 1 (the rare class wins); pixel 1: 0.56 vs 1.67 -> 1;
    # pixel 2: 0.95/0.9 = 1.06 -> 0
    assert select_pseudo_labels(prob, thr).tolist() == [[[1, 1, 0]]]
    strict = torch.tensor([0.99, 0.99])
    assert select_pseudo_labels(prob, strict).tolist() == [[[IGNORE_INDEX] * 3]]


def test_patch_fusion_averages_over_the_maps_that_cover_each_pixel():
    # every map differs from pixel to pixel and from the others, so that none of them, the full image included,
    # can drop out of the average unnoticed
    full = torch.tensor([[[3.0, 6.0, 9.0], [0.0, 3.0, 6.0], [2.0, 4.0, 8.0]]])
    patches = [torch.tensor([[[1.0, 2.0], [3.0, 5.0]]]), torch.tensor([[[4.0, 8.0], [7.0, 9.0]]])]
    boxes = [(0, 0), (0, 1)]  # patch 1 on columns 0-1, patch 2 on columns 1-2, both on rows 0-1
    fused = fuse_patch_predictions(full, patches, boxes)
    # column 0: (full + patch 1) / 2; column 1: (full + both) / 3; column 2: (full + patch 2) / 2; row 2: full only
    assert torch.allclose(fused[0, 0], torch.tensor([(3 + 1) / 2, (6 + 2 + 4) / 3, (9 + 8) / 2]))
    assert torch.allclose(fused[0, 1], torch.tensor([(0 + 3) / 2, (3 + 5 + 7) / 3, (6 + 9) / 2]))
    assert torch.equal(fused[0, 2], full[0, 2])


def test_random_patch_boxes_stay_inside_and_never_start_on_the_last_position():
    g = torch.Generator().manual_seed(0)
    boxes = random_patch_boxes(10, 20, (4, 8), 500, g)
    rows, cols = zip(*boxes)
    assert min(rows) == 0 and max(rows) == 10 - 4 - 1  # randint(0, H - h): H - h itself is never drawn
    assert min(cols) == 0 and max(cols) == 20 - 8 - 1
    again = random_patch_boxes(10, 20, (4, 8), 500, torch.Generator().manual_seed(0))
    assert again == boxes  # seeded: the same patches in both pseudo-labelling passes


def test_weak_labels_follow_the_prior_rule():
    label = torch.full((1, 10, 10), IGNORE_INDEX)
    label[0, :5] = 0  # 50 cells of class 0
    label[0, 5, :2] = 1  # 2 cells of class 1
    priors = (0.2, 0.1, 0.5)
    # need >= ratio * 100 * pi: class 0: 0.5 * 100 * 0.2 = 10 -> yes; class 1: 0.5 * 100 * 0.1 = 5 -> no; class 2 none
    assert weak_labels(label, 3, priors=priors, ratio=0.5).tolist() == [[1.0, 0.0, 0.0]]
    assert weak_labels(label, 3, priors=priors, ratio=0.2).tolist() == [[1.0, 1.0, 0.0]]  # class 1: 2 >= 2


def test_weak_label_loss_gradient_is_the_seed_scale_times_sigmoid_minus_target():
    logits = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 1.0]])
    weak_label_loss(logits, target).backward()
    assert torch.allclose(logits.grad, 0.04 * (torch.sigmoid(logits.detach()) - target))


def test_ohem_keeps_the_hard_pixels():
    # 4 valid pixels with label-probabilities 0.9, 0.8, 0.5, 0.2 (two classes), one ignored
    p = torch.tensor([0.9, 0.8, 0.5, 0.2, 0.5])
    logits = torch.stack([torch.log(p), torch.log(1 - p)]).reshape(1, 2, 1, 5)
    label = torch.tensor([[[0, 0, 0, 0, IGNORE_INDEX]]])
    ce = -torch.log(p[:4])
    # at most min_kept valid pixels: all kept
    assert ohem_cross_entropy(logits, label, min_kept=4).item() == pytest.approx(ce.mean().item())
    # min_kept 2: threshold max(0.6, 2nd smallest 0.5) = 0.6 -> keep 0.5 and 0.2
    assert ohem_cross_entropy(logits, label, min_kept=2).item() == pytest.approx(ce[2:].mean().item())
    # min_kept 3: max(0.6, 0.8) = 0.8 -> keep 0.8, 0.5, 0.2
    assert ohem_cross_entropy(logits, label, min_kept=3).item() == pytest.approx(ce[1:].mean().item())


def test_ohem_with_min_kept_0_applies_only_the_threshold():
    # the seed (util/symbol/layer.py) looks up the min_kept-th probability only when min_kept > 0
    p = torch.tensor([0.9, 0.8, 0.5, 0.2, 0.5])
    logits = torch.stack([torch.log(p), torch.log(1 - p)]).reshape(1, 2, 1, 5).requires_grad_()
    label = torch.tensor([[[0, 0, 0, 0, IGNORE_INDEX]]])
    # thresh 0.6 keeps 0.5 and 0.2: (-log 0.5 - log 0.2) / 2 = (0.693147 + 1.609438) / 2
    assert ohem_cross_entropy(logits, label, min_kept=0).item() == pytest.approx(1.151293, abs=1e-5)
    # thresh 0.85 keeps 0.8, 0.5, 0.2: (0.223144 + 0.693147 + 1.609438) / 3
    assert ohem_cross_entropy(logits, label, thresh=0.85, min_kept=0).item() == pytest.approx(0.841910, abs=1e-5)
    # thresh 0.1 keeps nothing: the seed's gradient is 0 (divided by max(1, 0 kept)), the loss 0, not NaN
    loss = ohem_cross_entropy(logits, label, thresh=0.1, min_kept=0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="min_kept must be 0 or more"):
        ohem_cross_entropy(logits, label, min_kept=-1)


def test_spatial_prior_is_the_per_pixel_class_frequency():
    a = torch.tensor([[0, 1], [IGNORE_INDEX, 1]])
    b = torch.tensor([[0, 0], [IGNORE_INDEX, 1]])
    prior = spatial_prior([a, b], 2)
    assert torch.allclose(prior[:, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(prior[:, 0, 1], torch.tensor([0.5, 0.5]))
    assert torch.equal(prior[:, 1, 0], torch.zeros(2))  # never labelled


def test_round_schedule():
    assert cbst_schedule(0) == {"tgt_port": 0.15, "src_port": 0.03, "lr": 1e-4}
    r5 = cbst_schedule(5)
    assert r5["tgt_port"] == pytest.approx(0.4) and r5["src_port"] == pytest.approx(0.0425)
    assert r5["lr"] == pytest.approx(1e-4 / math.sqrt(2) ** 5)
    assert cbst_schedule(20)["tgt_port"] == pytest.approx(0.5) and cbst_schedule(20)["src_port"] == pytest.approx(0.06)


# ----------------------------------------------------------------------------------------------- the method
def _method(name="cbst", seed=0, **kw):
    torch.manual_seed(seed)
    return build_method(name, build_model("minideeplab", 19, width=8), "minicity", **kw)


def test_a_round_labels_every_target_image_and_records_its_statistics(tiny_minicity):
    target = SegmentationList(tiny_minicity, "lists/target_train.txt")
    source = SegmentationList(tiny_minicity, "lists/source_train.txt")
    method = _method(rounds=2)
    method.on_round_start(1, target, source)
    assert method.pseudo_labels.shape == (len(target), 32, 64) and int(method.round_index) == 1
    kept = method.pseudo_labels[method.pseudo_labels != IGNORE_INDEX]
    assert torch.equal(method.kept_pixels[1], torch.bincount(kept.long(), minlength=19)[:19])
    assert method.portion(1) == pytest.approx(0.2)
    assert torch.equal(method.history[1], method.pseudo_labels)
    # the same round of a copy with the cache disabled (two passes) gives the same labels
    import udalib.methods.self_training as st

    twin = _method(rounds=2)
    old, st.CACHE_BYTES = st.CACHE_BYTES, 0
    try:
        twin.on_round_start(1, target, source)
    finally:
        st.CACHE_BYTES = old
    assert torch.equal(twin.pseudo_labels, method.pseudo_labels)


def test_mlsl_patches_change_the_labels_and_target_bn_prediction_runs(tiny_minicity):
    target = SegmentationList(tiny_minicity, "lists/target_train.txt")
    source = SegmentationList(tiny_minicity, "lists/source_train.txt")
    cbst, mlsl = _method("cbst", rounds=1), _method("mlsl", rounds=1, patch_size=(16, 32))
    cbst.on_round_start(0, target, source)
    mlsl.on_round_start(0, target, source)
    assert not torch.equal(cbst.pseudo_labels, mlsl.pseudo_labels)
    bn = _method("cbst", rounds=1, pseudo_label_bn="target")
    before = {k: v.clone() for k, v in bn.model.state_dict().items()}
    bn.on_round_start(0, target, source)
    assert all(torch.equal(before[k], v) for k, v in bn.model.state_dict().items())  # predicted on a copy


def test_pseudo_labels_follow_the_flip_of_their_image(tiny_minicity):
    target = SegmentationList(tiny_minicity, "lists/target_train.txt")
    method = _method(rounds=1, spatial_prior=False)
    method.on_round_start(0, target)
    method.pseudo_labels[3] = torch.arange(64).repeat(32, 1) % 19  # asymmetric labels
    batch = TargetBatch(torch.zeros(2, 3, 32, 64), torch.tensor([3, 3]), torch.tensor([False, True]))
    labels = method.target_labels(batch)
    assert torch.equal(labels[0], method.pseudo_labels[3].long())
    assert torch.equal(labels[1], method.pseudo_labels[3].long().flip(-1))


def test_fit_starts_each_round_at_evenly_spaced_steps(tiny_minicity):
    source = SegmentationList(tiny_minicity, "lists/source_train.txt")
    target = SegmentationList(tiny_minicity, "lists/target_train.txt")
    method = _method(rounds=3)
    calls = []
    original = method.on_round_start
    method.on_round_start = lambda r, ds, src: (calls.append(r), original(r, ds, src))
    fit(method, source, target, options=FitOptions(steps=6, batch_size=4, progress=False))
    assert calls == [0, 1, 2] and int(method.round_index) == 2
    assert method.history.shape[0] == 3 and (method.history[2] != IGNORE_INDEX).any()


def test_the_spatial_prior_needs_the_source_set_and_changes_the_labels(tiny_minicity):
    target = SegmentationList(tiny_minicity, "lists/target_train.txt")
    source = SegmentationList(tiny_minicity, "lists/source_train.txt")
    with pytest.raises(ValueError, match="spatial_prior needs the labelled source set"):
        _method(rounds=1).on_round_start(0, target)
    with_prior, without = _method(rounds=1), _method(rounds=1, spatial_prior=False)
    with_prior.on_round_start(0, target, source)
    without.on_round_start(0, target)
    assert torch.allclose(with_prior.prior, spatial_prior((source[i][1] for i in range(len(source))), 19))
    assert not torch.equal(with_prior.pseudo_labels, without.pseudo_labels)


def test_unknown_options_are_clear_errors():
    with pytest.raises(ValueError, match="method 'cbst' parameter loss='focal' is not valid: expected one of 'ce', "
                                         "'ohem'$"):
        _method(loss="focal")
    with pytest.raises(ValueError, match="parameter pseudo_label_bn='source' is not valid: expected one of 'model', "
                                         "'target'$"):
        _method(pseudo_label_bn="source")
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        _method(rounds=0)


def test_the_global_policy_pools_every_class():
    from udalib.losses.self_training import global_threshold

    lists = [np.array([0.9, 0.8, 0.7, 0.6]), np.array([]), np.array([0.99, 0.3])]
    # pooled without the seed's extra zero: 0.99 0.9 0.8 0.7 0.6 0.3 -> k = floor(6 * 0.5) = 3 -> 0.8 for every class
    assert np.allclose(global_threshold(lists, 0.5, extra_zero=False), [0.8, 0.8, 0.8])


def test_the_global_policy_pools_the_seeds_extra_zero():
    from udalib.losses.self_training import global_threshold

    # the seed's lists (class_confidences, extra_zero=True): class 2 never predicted keeps only its 0.0
    lists = [np.array([0.0, 0.9, 0.7]), np.array([0.0, 0.8]), np.array([0.0])]
    # the seed pools array_pixel = 0.0 first: 0.9 0.8 0.7 0 0 0 0 (7 values) -> k = floor(7 * 0.3) = 2 -> 0.8;
    # the 6 lists' values alone would give floor(6 * 0.3) = 1 -> 0.9
    assert np.allclose(global_threshold(lists, 0.3), [0.8, 0.8, 0.8])
    assert np.allclose(global_threshold(lists, 0.3, extra_zero=False), [0.9, 0.9, 0.9])
    # k = floor(7 * 0.1) = 0: no threshold -> 1 (the seed: its last sorted value, the extra 0.0 -> 1.0)
    assert np.allclose(global_threshold(lists, 0.1), [1.0, 1.0, 1.0])
