"""SNR: the block's algebra, the dual causality loss against hand-computed values, optimizer coverage (the
reference's omission corrected), reference-mode behaviour and loading a checkpoint without SNR keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from udalib.data.batch import SourceBatch, TargetBatch
from udalib.losses import dual_causality_loss, mean_pixel_entropy
from udalib.methods import build_method
from udalib.methods.snr import CausalityHeads
from udalib.models import build_model
from udalib.models.checkpoint import CheckpointError, load_into
from udalib.models.deeplabv2 import DeepLabV2
from udalib.models.snr import SNR_KEY_PREFIXES, DeepLabV2SNR, SNRBlock, restitution

REF = Path(__file__).parent / "reference"


def forced_gate(block: SNRBlock, value: float) -> SNRBlock:
    """Make the gate output ``value`` (0 or 1 up to float precision) whatever its input."""
    with torch.no_grad():
        block.gate.fc2.weight.zero_()
        block.gate.fc2.bias.fill_(40.0 if value == 1 else -40.0)
    return block


def test_enhanced_and_contaminated_split_the_style_residual():
    torch.manual_seed(0)
    block = SNRBlock(8, reduction=4)
    with torch.no_grad():  # a non-trivial IN affine and gate
        block.IN.weight.uniform_(0.5, 2)
        block.IN.bias.uniform_(-1, 1)
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    s = block(x)
    residual = x - s.normalized
    r_plus, r_minus = s.enhanced - s.normalized, s.contaminated - s.normalized
    assert torch.allclose(r_plus + r_minus, residual, atol=1e-5)  # R+ + R- = R
    assert torch.allclose(r_plus, s.gate * residual, atol=1e-6)
    assert s.gate.shape == (2, 8, 1, 1) and ((s.gate > 0) & (s.gate < 1)).all()
    assert torch.allclose(s.enhanced + s.contaminated, s.normalized + x, atol=1e-5)


def test_gate_at_one_is_the_identity_and_at_zero_plain_instance_norm():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6) * 2 + 3
    s1 = forced_gate(SNRBlock(8, reduction=4), 1)(x)
    assert torch.allclose(s1.enhanced, x, atol=1e-5) and torch.allclose(s1.contaminated, s1.normalized, atol=1e-5)
    s0 = forced_gate(SNRBlock(8, reduction=4), 0)(x)
    assert torch.allclose(s0.enhanced, s0.normalized, atol=1e-5) and torch.allclose(s0.contaminated, x, atol=1e-5)
    # the normalized part is per-image, per-channel standardised (gamma 1, beta 0 at init) -- at eval time too
    block = SNRBlock(8, reduction=4).eval()
    n = block(x).normalized
    assert torch.allclose(n.mean(dim=(2, 3)), torch.zeros(2, 8), atol=1e-5)
    assert torch.allclose(n.var(dim=(2, 3), unbiased=False), torch.ones(2, 8), atol=1e-3)


def test_restitution_is_the_same_algebra_under_the_reference_names():
    model = DeepLabV2SNR(19, blocks=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 256, 4, 4)
    s = restitution(x, model.IN1, model.style_reid_laye1)
    a = torch.sigmoid(model.style_reid_laye1.fc2(torch.relu(model.style_reid_laye1.fc1(
        (x - model.IN1(x)).mean(dim=(2, 3), keepdim=True)))))
    assert torch.allclose(s.enhanced, model.IN1(x) + a * (x - model.IN1(x)), atol=1e-6)


def test_mean_pixel_entropy_on_a_two_pixel_case():
    # pixel 1: p = (1/2, 1/2) -> log 2; pixel 2: one-hot -> 0; the mean over pixels is log(2) / 2
    logits = torch.tensor([[[[0.0, 60.0]], [[0.0, 0.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    assert mean_pixel_entropy(logits).item() == pytest.approx(math.log(2) / 2)


def test_dual_causality_loss_values():
    c = 4
    uniform = torch.zeros(1, c, 2, 2, dtype=torch.float64)
    one_hot = 60 * torch.nn.functional.one_hot(torch.zeros(1, 2, 2, dtype=torch.long), c).permute(0, 3, 1, 2)
    one_hot = one_hot.double()
    # all three equally uncertain: softplus(0) + softplus(0)
    assert dual_causality_loss(uniform, uniform, uniform).item() == pytest.approx(2 * math.log(2))
    # enhanced certain, IN and contaminated uniform: softplus(0 - log C) + softplus(0)
    assert dual_causality_loss(uniform, one_hot, uniform).item() == pytest.approx(
        math.log(1 + 1 / c) + math.log(2))
    # the wanted order H+ < H_IN < H-: both terms small; the reversed order: both large
    good = dual_causality_loss(uniform * 0 + 0.5 * one_hot / 60, one_hot, uniform).item()
    bad = dual_causality_loss(uniform * 0 + 0.5 * one_hot / 60, uniform, one_hot).item()
    h_mid = mean_pixel_entropy(0.5 * one_hot / 60).item()
    assert good == pytest.approx(math.log(1 + math.exp(-h_mid)) + math.log(1 + math.exp(h_mid - math.log(c))))
    assert bad == pytest.approx(math.log(1 + math.exp(math.log(c) - h_mid)) + math.log(1 + math.exp(h_mid)))
    assert good < 2 * math.log(2) < bad


def test_descending_the_causality_loss_sharpens_enhanced_and_blurs_contaminated():
    torch.manual_seed(0)
    base = torch.randn(1, 5, 3, 3, dtype=torch.float64)
    t_plus = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    t_minus = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    dual_causality_loss(base, t_plus * base, t_minus * base).backward()
    assert t_plus.grad < 0  # sharper (larger scale) enhanced logits lower the loss
    assert t_minus.grad > 0  # sharper contaminated logits raise it


def test_causality_heads_measure_without_shaping():
    # the classifiers' CE does not reach the features; the causality term does not reach the classifiers
    torch.manual_seed(0)
    heads = CausalityHeads((4,), num_classes=3)
    block = SNRBlock(4, reduction=2)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    label = torch.randint(0, 3, (2, 12, 12))
    l_caus, l_cls = heads([block(x)], label)
    (g_x,) = torch.autograd.grad(l_cls, x, allow_unused=True, retain_graph=True)
    assert g_x is None
    g_w = torch.autograd.grad(l_caus, heads.heads[0].weight, allow_unused=True)[0]
    assert g_w is None
    assert torch.autograd.grad(l_caus, x)[0].abs().sum() > 0


def snr_params(model: nn.Module) -> set[int]:
    return {id(p) for m in model.snr_modules() for p in m.parameters()}


@pytest.mark.parametrize("build", [lambda: build_model("minideeplab_snr", 19, width=8),
                                   lambda: DeepLabV2SNR(19, blocks=(1, 1, 1, 1))])
def test_paper_mode_optimises_every_snr_parameter_once_reference_mode_none(build):
    torch.manual_seed(0)
    paper = build_method("snr_maxsquare", build())
    ids = [id(p) for g in paper.optimizers["model"].param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert snr_params(paper.model) <= set(ids)
    assert {id(p) for p in paper.causality.parameters()} <= set(ids)
    assert {id(p) for p in paper.model.parameters() if p.requires_grad} | {
        id(p) for p in paper.causality.parameters()} == set(ids)
    reference = build_method("snr_maxsquare", build(), mode="reference")
    ids = {id(p) for g in reference.optimizers["model"].param_groups for p in g["params"]}
    assert not snr_params(reference.model) & ids and reference.causality is None


def test_reference_mode_groups_equal_the_reference_file():
    from test_deeplab import on_meta, read_optim_groups

    model = on_meta(lambda: DeepLabV2SNR(19, train_snr=False))
    names = {id(p): n for n, p in model.named_parameters()}
    ref = read_optim_groups("optim_groups_snr_deeplabv2_multi_snr.txt")
    groups = model.optim_groups(2.5e-4)
    for i, group in enumerate(groups):
        assert {names[id(p)] for p in group["params"]} == ref[i]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}  # the stem bn1
    assert ref[-1] == {n for n in names.values() if n.startswith(SNR_KEY_PREFIXES)} | frozen  # never updated there


def test_a_step_moves_snr_parameters_in_paper_mode_only():
    g = torch.Generator().manual_seed(0)
    src = SourceBatch(torch.randn(2, 3, 32, 64, generator=g), torch.randint(0, 19, (2, 32, 64), generator=g))
    tgt = TargetBatch(torch.randn(2, 3, 32, 64, generator=g), torch.tensor([0, 1]))
    for mode, moves in (("paper", True), ("reference", False)):
        torch.manual_seed(0)
        method = build_method("snr_maxsquare", build_model("minideeplab_snr", 19, width=8), "minicity", mode=mode)
        before = [p.detach().clone() for m in method.model.snr_modules() for p in m.parameters()]
        logs = method.step(src, tgt)
        after = [p for m in method.model.snr_modules() for p in m.parameters()]
        assert any(not torch.equal(a, b) for a, b in zip(before, after)) == moves, mode
        assert ("causality" in logs) == moves


def test_snr_methods_refuse_a_model_without_snr_blocks_and_unknown_modes():
    with pytest.raises(ValueError, match="minideeplab_snr"):
        build_method("snr", build_model("minideeplab", 19, width=8))
    with pytest.raises(ValueError, match="method 'snr' parameter mode='papre' is not valid: expected one of "
                                         "'paper', 'reference'$"):
        build_method("snr", build_model("minideeplab_snr", 19, width=8), mode="papre")


def test_a_checkpoint_without_snr_keys_loads_with_the_snr_prefixes_skipped():
    # the seed's SNR-MS starts from GTA5_source.pth (no SNR keys) with a strict load, which raises
    torch.manual_seed(0)
    plain = DeepLabV2(19, multi_level=True, blocks=(1, 1, 1, 1)).state_dict()
    snr = DeepLabV2SNR(19, blocks=(1, 1, 1, 1))
    with pytest.raises(CheckpointError, match="IN1.weight"):
        load_into(snr, plain)
    gate_before = snr.style_reid_laye1.fc1.weight.clone()
    report = load_into(snr, plain, skip_prefixes=SNR_KEY_PREFIXES)
    assert report.ok
    assert torch.equal(snr.layer4[0].conv1.weight, plain["layer4.0.conv1.weight"])
    assert torch.equal(snr.style_reid_laye1.fc1.weight, gate_before)  # kept at init
