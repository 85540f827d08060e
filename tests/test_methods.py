"""Every registered method: one CPU step on tiny batches, the update order, and the lambda = 0 control."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest
import torch

from udalib.data.batch import SourceBatch, TargetBatch
from udalib.methods import METHODS, PRESETS, build_method, control_args, method_config, target_weights
from udalib.models import build_model


def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = SourceBatch(torch.randn(2, 3, 32, 64, generator=g), torch.randint(0, 19, (2, 32, 64), generator=g))
    tgt = TargetBatch(torch.randn(2, 3, 32, 64, generator=g) * 1.5 + 0.3, torch.tensor([0, 1]))
    return src, tgt


def fresh(name, **overrides):
    torch.manual_seed(0)
    model = "minideeplab_snr" if name.startswith("snr") else "minideeplab"  # SNR methods need SNR blocks
    return build_method(name, build_model(model, 19, width=8), "minicity", **overrides)


def prepare(method, src, tgt):
    """Self-training methods label their target set at the start of a round (fit does it; here by hand)."""
    if hasattr(method, "rounds"):
        method.on_round_start(0, [(image, None, i, False) for i, image in enumerate(tgt.image)],
                              [(image, label, i, False) for i, (image, label) in enumerate(zip(src.image, src.label))])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_moves_the_segmenter_and_logs_finite_losses(name):
    method = fresh(name)
    src, tgt = batches()
    prepare(method, src, tgt)
    before = {k: p.detach().clone() for k, p in method.model.named_parameters()}
    buffers = {k: b.detach().clone() for k, b in method.model.named_buffers()}
    logs = method.step(src, tgt)
    assert logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    if name == "bn_alpha":  # trains no weight: only the BatchNorm statistics move
        assert all(torch.equal(before[k], p) for k, p in method.model.named_parameters())
        assert any(not torch.equal(buffers[k], b) for k, b in method.model.named_buffers())
        return
    assert any(not torch.equal(before[k], p) for k, p in method.model.named_parameters())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_a_minicity_preset_made_of_real_parameters(name):
    assert "minicity" in PRESETS[name]
    method_config(name, "minicity")  # raises if the preset names an unknown parameter


# methods that train on source labels and target images (the test-time methods, TENT and BN-alpha, read no source
# batch: their control is AdaBN itself)
ADAPTING = sorted(n for n, (cls, _) in METHODS.items() if cls.uses_target and cls.uses_source)
# beyond its target weights, what makes a method's source loss source-only's: MLSL's OHEM is on the source main
# head too (its MiniCity preset uses CE)
SAME_SOURCE_LOSS = {"mlsl": {"loss": "ce"}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_control_of_every_method_zeroes_exactly_its_declared_target_weights(name):
    cls, config_cls = METHODS[name]
    declared = target_weights(name)
    assert len(set(declared)) == len(declared) and set(declared) <= {f.name for f in fields(config_cls)}
    assert bool(declared) == (name in ADAPTING)  # a method that adds target terms to a source loss weighs them
    args = control_args(name)
    assert args == dict.fromkeys(declared, 0.0)
    for preset in [None, *PRESETS[name]]:
        cfg, control = asdict(method_config(name, preset)), asdict(method_config(name, preset, **args))
        assert {k for k in cfg if cfg[k] != control[k]} <= set(declared), (name, preset)
        assert all(control[k] == 0 for k in declared), (name, preset)


@pytest.mark.parametrize("name", ADAPTING)
def test_the_lambda_zero_control_differs_from_source_only_only_in_batchnorm_statistics(name):
    # With the target weights at 0 (control_args), the weights get exactly the source-only update (same lr and
    # auxiliary CE, the MiniCity presets); only the BatchNorm running statistics move further, because the target
    # batch went through the network in train mode.
    src, tgt = batches()
    control = fresh(name, **control_args(name), **SAME_SOURCE_LOSS.get(name, {}))
    prepare(control, src, tgt)
    c = control.cfg
    if name.startswith("snr"):  # source-only training of the same SNR model, same mode and causality weight
        baseline = fresh("snr", lambda_seg=c.lambda_seg, lr=c.lr, mode=c.mode, lambda_causality=c.lambda_causality)
    else:
        baseline = fresh("source_only", lambda_seg=c.lambda_seg, lr=c.lr)
    assert c.lambda_seg > 0 and (c.momentum, c.weight_decay) == (baseline.cfg.momentum, baseline.cfg.weight_decay)
    control.step(src, tgt)
    baseline.step(src, None)
    for (k, a), b in zip(control.model.named_parameters(), baseline.model.parameters(), strict=True):
        assert torch.equal(a, b), k
    means = [(k, b) for k, b in control.model.named_buffers() if k.endswith("running_mean")]
    base_means = dict(baseline.model.named_buffers())
    assert any(not torch.allclose(b, base_means[k]) for k, b in means)


def test_paper_defaults_are_the_seed_readme_values():
    assert method_config("maxsquare").lambda_target == 0.1
    assert method_config("maxsquare").iw_ratio is None
    assert method_config("maxsquare_iw").iw_ratio == 0.2
    multi = method_config("maxsquare_iw_multi")
    assert (multi.lambda_target, multi.lambda_seg, multi.threshold, multi.iw_ratio, multi.guidance) == \
        (0.09, 0.1, 0.95, 0.2, True)
    for name in ("minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi"):
        cfg = method_config(name)
        assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (2.5e-4, 0.9, 5e-4)


def test_guidance_adds_a_loss_on_the_auxiliary_head_only_when_enabled():
    src, tgt = batches()
    assert "guidance" in fresh("maxsquare_iw_multi").step(src, tgt)
    assert "guidance" not in fresh("maxsquare_iw").step(src, tgt)
