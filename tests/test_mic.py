"""MIC, hand-computed: the block mask, the masked image the student sees, the pseudo-labels and their weight, MIC's
own EMA teacher, the teacher DACS + MIC shares, the configs and the lambda = 0 control. The step's gradients against
the objective are in ``test_method_objectives.py``."""

from __future__ import annotations

import pytest
import torch

from udalib.data.batch import SourceBatch, TargetBatch
from udalib.losses.mic import block_mask, mask_image, masked_consistency_loss, teacher_pseudo_labels
from udalib.methods import build_method, control_args, method_config
from udalib.models import build_model

MIC_METHODS = ("minent_mic", "adaptsegnet_multi_mic", "dacs_mic")


def batches(n=2):
    g = torch.Generator().manual_seed(0)
    src = SourceBatch(torch.randn(n, 3, 32, 64, generator=g), torch.randint(0, 19, (n, 32, 64), generator=g))
    tgt = TargetBatch(torch.randn(n, 3, 32, 64, generator=g) * 1.5 + 0.3, torch.arange(n))
    return src, tgt


def method(name, **cfg):
    torch.manual_seed(0)
    return build_method(name, build_model("minideeplab", 19, width=8), "minicity", **cfg)


# ------------------------------------------------------------------------------------------- the block mask
def test_the_mask_hides_seventy_percent_of_the_blocks_over_1000_masks():
    keep = block_mask((1000, 3, 64, 128), 0.7, 4, torch.Generator().manual_seed(0))
    assert keep.shape == (1000, 1, 64, 128) and set(keep.unique().tolist()) == {0.0, 1.0}
    masked = 1 - keep.mean(dim=(1, 2, 3))  # per mask: 16 x 32 cells
    assert abs(float(masked.mean()) - 0.7) < 0.05 and abs(float(masked.mean()) - 0.7) < 0.005
    assert float(masked.std()) == pytest.approx((0.7 * 0.3 / 512) ** 0.5, rel=0.15)  # cells drawn independently


def test_the_mask_is_made_of_whole_blocks_on_the_originals_grid():
    keep = block_mask((4, 3, 64, 128), 0.5, 8, torch.Generator().manual_seed(1))
    blocks = keep.view(4, 1, 8, 8, 16, 8)  # (n, 1, rows, 8 px, cols, 8 px)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    # a block that does not divide the side: round(30 / 8) = 4 cells, resized by nearest neighbour
    uneven = block_mask((2, 3, 30, 30), 0.5, 8, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    cells = (torch.rand((2, 1, 4, 4), generator=g) > 0.5).float()
    rows = (torch.arange(30) * 4 / 30).floor().long()  # nearest: source index floor(i * in / out)
    assert torch.equal(uneven, cells[:, :, rows][..., rows])
    assert torch.equal(block_mask((2, 3, 16, 16), 0.0, 4), torch.ones(2, 1, 16, 16))  # ratio 0: nothing masked


def test_masked_pixels_are_zero_in_the_normalised_image_and_the_others_untouched():
    images = torch.randn(2, 3, 16, 32)
    keep = block_mask(images.shape, 0.7, 4, torch.Generator().manual_seed(0))
    out = mask_image(images, keep)
    assert torch.equal(out[keep.expand_as(out) == 0], torch.zeros(int((keep == 0).sum()) * 3))
    assert torch.equal(out[keep.expand_as(out) == 1], images[keep.expand_as(out) == 1])


def test_pseudo_labels_are_the_teachers_argmax_weighted_by_the_share_of_confident_pixels():
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, :, 0, 0] = torch.tensor([10.0, 0, 0])  # confident class 0
    logits[0, :, 0, 1] = torch.tensor([0, 0, 10.0])  # confident class 2
    logits[0, :, 0, 2] = torch.tensor([0, 1.0, 0])  # unsure class 1
    pseudo, q = teacher_pseudo_labels(logits, 0.968)
    assert pseudo.tolist() == [[[0, 2, 1, 0]]] and float(q) == pytest.approx(2 / 4)
    out = torch.randn(1, 3, 1, 4)
    ce = torch.nn.functional.cross_entropy(out, pseudo, reduction="none")
    assert float(masked_consistency_loss(out, pseudo, q)) == pytest.approx(float(0.5 * ce.mean()))


def test_the_student_sees_the_target_image_with_whole_blocks_at_zero():
    m = method("minent_mic", mic_augment=False)
    src, tgt = batches()
    inputs = []
    forward = m.model.forward
    m.model.forward = lambda x: inputs.append(x.detach().clone()) or forward(x)
    m.step(src, tgt)
    masked = inputs[-1]  # the host's passes first (source, target), MIC's last
    assert len(inputs) == 3 and torch.equal(inputs[1], tgt.image)
    zero = (masked == 0).all(dim=1)
    assert torch.equal(masked[~zero[:, None].expand_as(masked)], tgt.image[~zero[:, None].expand_as(masked)])
    blocks = zero.view(2, 8, 4, 16, 4)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))  # the minicity preset's 4-pixel blocks
    assert 0.55 < float(zero.double().mean()) < 0.85


# -------------------------------------------------------------------------------------------- the teachers
def test_mics_own_teacher_is_the_ema_of_the_segmenter_before_each_step_with_alpha_0999():
    m = method("minent_mic")
    assert m.cfg.mic_alpha == 0.999 and m.mic_teacher.alpha == 0.999
    src, tgt = batches()
    expected = [p.detach().clone() for p in m.model.parameters()]
    for t in range(3):
        a = min(1 - 1 / (t + 1), 0.999)  # updated from the segmenter as it is before step t (the original's order)
        expected = [a * e + (1 - a) * p.detach() for e, p in zip(expected, m.model.parameters())]
        m.step(src, tgt)
        for got, want in zip(m.mic_teacher.ema.parameters(), expected):
            torch.testing.assert_close(got, want)
    assert int(m.mic_teacher.updates) == 3
    m.mic_teacher.updates.fill_(5000)
    assert m.mic_teacher.decay() == 0.999  # capped at alpha once 1 - 1/(t+1) passes it


def test_dacs_mic_labels_with_dacs_teacher_and_threshold_and_owns_no_other():
    m = method("dacs_mic")
    assert m.mic_teacher is m.teacher and m.cfg.threshold == 0.968
    assert not any(k.startswith("mic_teacher") for k in m.state_dict())
    assert not hasattr(m.cfg, "mic_alpha")  # DACS's alpha (mask_alpha="same")
    src, tgt = batches()
    m.step(src, tgt)
    assert int(m.teacher.updates) == 1  # updated once per step, by DACS


def test_dacs_mic_runs_the_teacher_once_per_step_and_mic_learns_dacs_pseudo_labels():
    m = method("dacs_mic", mask_ratio=0.0, mic_augment=False)
    src, tgt = batches()
    # the labels and weight MIC must train on: the teacher's (before the step's EMA update) on the plain target
    # batch, at DACS's threshold
    pseudo, weight = teacher_pseudo_labels(m.teacher(tgt.image)["out"], m.cfg.threshold)
    calls, forward = [], m.teacher.ema.forward
    m.teacher.ema.forward = lambda x: calls.append(x) or forward(x)
    drawn, mic = [], m.mic_pseudo_labels
    m.mic_pseudo_labels = lambda image: drawn.append(mic(image)) or drawn[-1]
    m.step(src, tgt)
    assert len(calls) == 1 and torch.equal(calls[0], tgt.image)
    assert torch.equal(drawn[0][0], pseudo) and torch.equal(drawn[0][1], weight)
    with pytest.raises(RuntimeError, match="no pseudo-labels"):
        m.mic_pseudo_labels(tgt.image)  # taken once: a second term of the same step would reuse nothing stale


def test_a_checkpoint_restores_mics_teacher_and_a_resumed_step_is_identical(tmp_path):
    from udalib.train.checkpoint import load_checkpoint, save_checkpoint

    src, tgt = batches()
    m = method("adaptsegnet_multi_mic")
    for _ in range(2):
        m.step(src, tgt)
    save_checkpoint(tmp_path / "c.pt", m)
    torch.manual_seed(9)
    resumed = build_method("adaptsegnet_multi_mic", build_model("minideeplab", 19, width=8), "minicity")
    load_checkpoint(tmp_path / "c.pt", resumed)
    assert int(resumed.mic_teacher.updates) == 2
    torch.manual_seed(5)
    logs = m.step(src, tgt)
    torch.manual_seed(5)
    assert resumed.step(src, tgt) == logs


# --------------------------------------------------------------------------------------- configs and control
@pytest.mark.parametrize("name", MIC_METHODS)
def test_mic_defaults_are_the_originals_deeplab_v2_settings_and_minicity_blocks_are_4_pixels(name):
    host = name.removesuffix("_mic")
    c, h = method_config(name), method_config(host)
    assert (c.lambda_mic, c.mask_ratio, c.mask_block, c.mic_augment) == (1.0, 0.7, 32, True)
    assert all(getattr(c, f) == v for f, v in vars(h).items())  # the host's own parameters as the host has them
    mini = method_config(name, "minicity")
    assert mini.mask_block == 4 and all(getattr(mini, f) == v for f, v in vars(method_config(host, "minicity")).items())
    if name != "dacs_mic":
        assert (c.mic_alpha, c.mic_threshold) == (0.999, 0.968)


@pytest.mark.parametrize("name", MIC_METHODS)
def test_the_control_zeroes_the_hosts_target_weights_and_mics(name):
    host = name.removesuffix("_mic")
    assert control_args(name) == control_args(host) | {"lambda_mic": 0.0}


@pytest.mark.parametrize(("field", "value"), [("mask_ratio", 1.0), ("mask_ratio", -0.1), ("mask_block", 0),
                                              ("mic_alpha", 1.0), ("lambda_mic", -1.0), ("mic_threshold", 1.5)])
def test_mic_parameters_out_of_range_are_refused(field, value):
    from udalib.experiment import Experiment
    from udalib.experiment_checks import check_experiment

    with pytest.raises(ValueError, match=field):
        check_experiment(Experiment(method="minent_mic", target="minicity:target", method_args={field: value}),
                         device=False)


def test_the_ablation_without_masking_trains_on_the_full_target_image():
    m = method("dacs_mic", mask_ratio=0.0, mic_augment=False)
    src, tgt = batches()
    inputs = []
    forward = m.model.forward
    m.model.forward = lambda x: inputs.append(x.detach().clone()) or forward(x)
    m.step(src, tgt)
    assert torch.equal(inputs[-1], tgt.image)
