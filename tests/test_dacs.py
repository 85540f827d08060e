"""DACS and its mean teacher, hand-computed: the EMA and its warm start, the teacher's BatchNorm, ClassMix, the
confidence weight, the pixel-weighted CE, the strong augmentation and the checkpoint of the teacher.
The step's gradients against the objective are in ``test_method_objectives.py``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from udalib.data.augment import blur_kernel_size, color_jitter, gaussian_blur, strong_augment
from udalib.data.batch import IGNORE_INDEX, SourceBatch, TargetBatch
from udalib.losses.dacs import class_mix_classes, class_mix_mask, confidence_weight, mix, pixel_weighted_ce
from udalib.methods import MeanTeacher, build_method
from udalib.models import build_model


def batches(n=2):
    g = torch.Generator().manual_seed(0)
    src = SourceBatch(torch.randn(n, 3, 32, 64, generator=g), torch.randint(0, 19, (n, 32, 64), generator=g))
    tgt = TargetBatch(torch.randn(n, 3, 32, 64, generator=g) * 1.5 + 0.3, torch.arange(n))
    return src, tgt


def dacs(**cfg):
    torch.manual_seed(0)
    return build_method("dacs", build_model("minideeplab", 19, width=8), "minicity", **cfg)


# ------------------------------------------------------------------------------------------ the mean teacher
def test_the_ema_and_its_warm_start_follow_the_formula_on_a_hand_computed_case():
    student = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        student.weight.fill_(1.0)
    teacher = MeanTeacher(student, alpha=0.6)
    # alpha_t = min(1 - 1/(t+1), 0.6): 0 (a copy), 0.5 (the plain average), then 0.6 (alpha reached)
    for w, decay, expected in ((3.0, 0.0, 3.0), (5.0, 0.5, 4.0), (7.0, 0.6, 0.6 * 4.0 + 0.4 * 7.0)):
        assert teacher.decay() == pytest.approx(decay)
        with torch.no_grad():
            student.weight.fill_(w)
        teacher.update(student)
        assert float(teacher.ema.weight) == pytest.approx(expected, abs=1e-6)
    assert int(teacher.updates) == 3 and teacher.decay() == pytest.approx(0.6)
    assert not teacher.ema.weight.requires_grad


def test_the_teacher_averages_parameters_only_and_leaves_its_batchnorm_buffers_as_copied():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    teacher = MeanTeacher(model, alpha=0.99)
    buffers = {k: b.clone() for k, b in teacher.ema.named_buffers()}
    model.train()
    model(torch.randn(2, 3, 8, 8))  # the segmenter's running statistics move
    teacher(torch.randn(2, 3, 8, 8) + 1)  # the teacher's own forward does not move its own
    teacher.update(model)
    for k, b in teacher.ema.named_buffers():
        assert torch.equal(b, buffers[k]), k
    assert not torch.equal(teacher.ema[1].running_mean, model[1].running_mean)
    for a, b in zip(teacher.ema.parameters(), model.parameters()):  # alpha_0 = 0: the parameters are copied
        assert torch.equal(a, b)


def test_the_teacher_normalises_with_the_target_batchs_statistics_even_when_the_method_is_in_eval_mode():
    m = dacs()
    m.eval()
    _, tgt = batches()
    out = m.teacher(tgt.image)["out"]
    reference = copy.deepcopy(m.model)
    with torch.no_grad():
        train_mode = reference.train()(tgt.image)["out"]
        eval_mode = reference.eval()(tgt.image)["out"]
    assert torch.allclose(out, train_mode, atol=1e-6)
    assert not torch.allclose(out, eval_mode, atol=1e-3)
    assert not out.requires_grad


def test_after_each_step_the_teacher_is_the_ema_of_the_segmenter():
    m = dacs(alpha=0.6)
    src, tgt = batches()
    expected = [p.detach().clone() for p in m.model.parameters()]
    for t in range(3):
        m.step(src, tgt)
        a = min(1 - 1 / (t + 1), 0.6)
        expected = [a * e + (1 - a) * p.detach() for e, p in zip(expected, m.model.parameters())]
        for got, want in zip(m.teacher.ema.parameters(), expected):
            torch.testing.assert_close(got, want)
    assert int(m.teacher.updates) == 3


def test_a_checkpoint_restores_the_teacher_and_its_counter_exactly(tmp_path):
    from udalib.train.checkpoint import load_checkpoint, save_checkpoint

    src, tgt = batches()
    m = dacs()
    for _ in range(2):
        m.step(src, tgt)
    save_checkpoint(tmp_path / "c.pt", m)
    torch.manual_seed(123)
    resumed = build_method("dacs", build_model("minideeplab", 19, width=8), "minicity")  # other weights
    load_checkpoint(tmp_path / "c.pt", resumed)
    assert int(resumed.teacher.updates) == 2
    for (k, a), b in zip(m.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    torch.manual_seed(5)
    logs = m.step(src, tgt)
    torch.manual_seed(5)
    assert resumed.step(src, tgt) == logs
    for a, b in zip(m.teacher.parameters(), resumed.teacher.parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ ClassMix
@pytest.mark.parametrize("values, mix_ignore, n", [((0, 3, 5), True, 3), ((0, 3, 5, 7), True, 4),
                                                   ((0, 3, 5, IGNORE_INDEX), True, 4),
                                                   ((0, 3, 5, IGNORE_INDEX), False, 3), ((4,), True, 1)])
def test_classmix_draws_half_the_present_classes_rounded_up(values, mix_ignore, n):
    label = torch.tensor(values).repeat_interleave(3).view(1, -1).expand(4, -1)
    seen = set()
    for seed in range(40):
        classes = class_mix_classes(label, mix_ignore, torch.Generator().manual_seed(seed))
        assert len(classes) == (n + n % 2) // 2 and len(set(classes.tolist())) == len(classes)
        assert set(classes.tolist()) <= set(values) - ({IGNORE_INDEX} if not mix_ignore else set())
        seen |= set(classes.tolist())
    assert len(seen) == n  # every class can be drawn


def test_classmix_pastes_the_chosen_classes_of_the_source_on_a_hand_built_case():
    label_s = torch.tensor([[[1, 1, 2], [3, 255, 2]]])  # (1, 2, 3)
    mask = class_mix_mask(label_s[0], torch.tensor([2, 255]))[None]
    assert mask.tolist() == [[[False, False, True], [False, True, True]]]
    x_s, x_t = torch.full((1, 3, 2, 3), 10.0), torch.arange(18.0).view(1, 3, 2, 3)
    image = mix(mask, x_s, x_t)
    assert image[0, 1].tolist() == [[6.0, 7.0, 10.0], [9.0, 10.0, 10.0]]
    pseudo = torch.tensor([[[7, 8, 9], [0, 4, 5]]])
    assert mix(mask, label_s, pseudo).tolist() == [[[7, 8, 2], [0, 255, 2]]]
    weight = mix(mask, torch.ones(1, 2, 3), torch.full((1, 2, 3), 0.25))
    assert weight.tolist() == [[[0.25, 0.25, 1.0], [0.25, 1.0, 1.0]]]


def test_the_confidence_weight_is_the_share_of_target_pixels_at_or_above_the_threshold():
    confidence = torch.tensor([[[0.97, 0.5], [0.968, 0.9]], [[0.99, 0.2], [0.3, 0.4]]])
    assert float(confidence_weight(confidence, 0.968)) == pytest.approx(3 / 8)
    assert float(confidence_weight(confidence, 0.95)) == pytest.approx(3 / 8)
    assert float(confidence_weight(confidence, 0.35)) == pytest.approx(6 / 8)


def test_the_pixel_weighted_ce_averages_over_every_pixel_ignored_ones_included():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]]]])  # (1, 3, 1, 2)
    label = torch.tensor([[[0, 255]]])
    weight = torch.tensor([[[0.5, 1.0]]])
    nll = -math.log(math.exp(2) / (math.exp(2) + 1 + math.e))
    assert float(pixel_weighted_ce(logits, label, weight)) == pytest.approx(0.5 * nll / 2)
    label = torch.tensor([[[0, 1]]])
    nll1 = -math.log(math.e / (1 + math.e + math.exp(-1)))
    assert float(pixel_weighted_ce(logits, label, weight)) == pytest.approx((0.5 * nll + nll1) / 2)


# ------------------------------------------------------------------------------------ strong augmentation
def test_blur_kernels_are_the_odd_side_near_a_tenth_of_the_image():
    assert [blur_kernel_size(s) for s in (32, 64, 512, 1024, 10, 5)] == [3, 7, 51, 103, 1, 1]


@pytest.mark.parametrize("normalization", ["imagenet", "caffe"])
def test_jitter_of_strength_zero_gives_the_image_back_and_jitter_stays_in_the_pixel_range(normalization):
    from udalib.data.dataset import normalize

    g = torch.Generator().manual_seed(0)
    images = torch.stack([normalize(torch.randint(0, 256, (8, 12, 3), generator=g).byte().numpy(), normalization)
                          for _ in range(2)])
    torch.testing.assert_close(color_jitter(images, normalization, strength=0.0), images, atol=1e-3, rtol=0)
    lo, hi = (normalize(torch.full((1, 1, 3), v, dtype=torch.uint8).numpy(), normalization).view(3)
              for v in (0, 255))
    out = color_jitter(images, normalization)
    assert not torch.allclose(out, images)
    assert (out >= lo.view(1, 3, 1, 1) - 1e-4).all() and (out <= hi.view(1, 3, 1, 1) + 1e-4).all()


def test_gaussian_blur_keeps_a_constant_image_and_smooths_an_impulse():
    flat = torch.full((1, 3, 32, 64), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)
    impulse = torch.zeros(1, 3, 32, 64)
    impulse[..., 16, 32] = 1.0
    out = gaussian_blur(impulse, 1.0)
    assert out[0, 0, 16, 32] < 1 and out[0, 0].sum() == pytest.approx(1.0, abs=1e-5)
    assert out[0, 0, 16, 31] == pytest.approx(out[0, 0, 16, 33])


def test_strong_augmentation_is_off_when_both_switches_are_off_and_draws_from_torchs_generator():
    images = torch.randn(2, 3, 16, 32)
    assert torch.equal(strong_augment(images, jitter=False, blur=False), images)
    torch.manual_seed(3)
    a = strong_augment(images)
    torch.manual_seed(3)
    assert torch.equal(strong_augment(images), a)


# ------------------------------------------------------------------------------------------ the method
def test_dacs_defaults_are_the_originals_config():
    from udalib.methods import method_config

    c = method_config("dacs")
    assert (c.lr, c.momentum, c.weight_decay, c.lambda_seg) == (2.5e-4, 0.9, 5e-4, 0.0)
    assert (c.lambda_target, c.alpha, c.threshold, c.color_jitter, c.blur, c.mix_ignore) == \
        (1.0, 0.99, 0.968, True, True, True)


def test_dacs_mixes_every_pair_of_a_batch_and_refuses_batches_of_different_shapes():
    m = dacs()
    src, tgt = batches(3)  # the original mixes two pairs only; here any batch size
    logs = m.step(src, tgt)
    assert set(logs) == {"seg", "mix", "pseudo_weight"} and 0 <= logs["pseudo_weight"] <= 1
    with pytest.raises(ValueError, match="batches of the same shape"):
        m.step(src, TargetBatch(tgt.image[:2], tgt.index[:2]))


def test_experiment_tells_dacs_how_its_images_are_normalised():
    from udalib.experiment import Experiment

    for model, normalization in (("minideeplab", "imagenet"), ("deeplabv2", "caffe")):
        exp = Experiment(method="dacs", model=model, target="minicity:target")
        kwargs = {"blocks": (1, 1, 1, 1)} if model == "deeplabv2" else {"width": 8}
        assert exp.build_method(build_model(model, 19, **kwargs)).normalization == normalization
