"""TENT and BN-alpha: TENT's step against an independent SGD step on the target entropy, BN-alpha's running
statistics against the alpha-mix worked out by hand, and both as runs of the shared loop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from udalib.data.batch import SourceBatch, TargetBatch
from udalib.methods import adapt_batchnorm, build_method, method_config
from udalib.methods.tent import BNAlpha, BNAlphaConfig, Tent, TentConfig


class ConvBN(nn.Module):
    """conv -> BN -> ReLU -> conv: one BatchNorm layer with affine parameters between two trained convolutions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return {"out": self.conv2(torch.relu(self.bn(self.conv1(x))))}


def target_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return TargetBatch(torch.randn(2, 3, 5, 6, generator=g) * 2 + 1, torch.tensor([0, 1]))


def source_batch():
    return SourceBatch(torch.full((2, 3, 5, 6), float("nan")), torch.zeros(2, 5, 5, dtype=torch.long))  # never read


def entropy_grads(model, image):
    """Gradient of the mean pixel entropy -sum_c p log p (natural log) w.r.t. the BN weight and bias, written out
    independently of udalib's losses."""
    logits = model(image)["out"]
    p = torch.softmax(logits, dim=1)
    ent = -(p * torch.log(p)).sum(dim=1).mean()
    return torch.autograd.grad(ent, [model.bn.weight, model.bn.bias])


# ------------------------------------------------------------------------------------------------------- TENT
def test_tent_steps_are_sgd_with_momentum_on_the_bn_affine_parameters_only():
    cfg = TentConfig(lr=0.05, momentum=0.9)
    model = ConvBN()
    reference = copy.deepcopy(model).train()
    method = Tent(model, cfg).train()
    frozen = {k: p.detach().clone() for k, p in model.named_parameters() if not k.startswith("bn.")}
    w0, b0 = reference.bn.weight.detach().clone(), reference.bn.bias.detach().clone()

    t1, t2 = target_batch(1), target_batch(2)
    gw1, gb1 = entropy_grads(reference, t1.image)  # train mode: normalised with the batch's own statistics
    method.step(source_batch(), t1)
    # first SGD step: the momentum buffer is the gradient, p1 = p0 - lr g1
    w1, b1 = w0 - cfg.lr * gw1, b0 - cfg.lr * gb1
    assert torch.allclose(model.bn.weight, w1, atol=1e-6) and torch.allclose(model.bn.bias, b1, atol=1e-6)

    with torch.no_grad():
        reference.bn.weight.copy_(w1), reference.bn.bias.copy_(b1)
    gw2, gb2 = entropy_grads(reference, t2.image)
    method.step(source_batch(), t2)
    # second: buffer 0.9 g1 + g2
    w2, b2 = w1 - cfg.lr * (0.9 * gw1 + gw2), b1 - cfg.lr * (0.9 * gb1 + gb2)
    assert torch.allclose(model.bn.weight, w2, atol=1e-6) and torch.allclose(model.bn.bias, b2, atol=1e-6)
    assert not torch.allclose(w2, w0)
    for k, p in model.named_parameters():  # every other weight untouched
        if not k.startswith("bn."):
            assert torch.equal(p, frozen[k]), k
    # the target batches moved the running statistics (momentum 0.1), as the reference's two forward passes did
    assert torch.allclose(model.bn.running_mean, reference.bn.running_mean, atol=1e-6)


def test_tent_minimises_the_unnormalised_mean_entropy():
    model = ConvBN()
    method = Tent(model, TentConfig(lr=0.5, momentum=0.0)).train()
    logs = [method.step(source_batch(), target_batch(0))["ent"] for _ in range(5)]
    with torch.no_grad():
        p = torch.softmax(ConvBN().train()(target_batch(0).image)["out"], dim=1)
    assert logs[0] == pytest.approx(float(-(p * p.log()).sum(1).mean()), abs=1e-6)  # not divided by C
    assert logs[-1] < logs[0]


def test_tent_needs_a_target_and_a_batchnorm_model():
    with pytest.raises(ValueError, match="give a target set"):
        Tent(ConvBN()).step(source_batch(), None)
    with pytest.raises(ValueError, match="has none: use a model with BatchNorm"):
        Tent(nn.Conv2d(3, 3, 1))


# --------------------------------------------------------------------------------------------------- BN-alpha
class OneBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)
        self.bn.running_mean.copy_(torch.tensor([1.0, -1.0]))  # "source" statistics
        self.bn.running_var.copy_(torch.tensor([4.0, 0.25]))

    def forward(self, x):
        return {"out": self.bn(x)}


def batch(ch0, ch1):
    """A (2, 2, 1, 2) batch whose channel 0 holds the values ``ch0`` and channel 1 ``ch1`` (4 each)."""
    x = torch.stack([torch.tensor(ch0).view(2, 1, 2), torch.tensor(ch1).view(2, 1, 2)], dim=1)
    return TargetBatch(x, torch.tensor([0, 1]))


def test_bn_alpha_mixes_source_and_target_statistics_by_hand():
    model = OneBN()
    method = BNAlpha(model, BNAlphaConfig(alpha=0.25)).train()
    # batch 1: channel 0 = 0, 2, 4, 6: mean 3, unbiased var (9 + 1 + 1 + 9) / 3 = 20/3;
    #          channel 1 = 1, 1, 1, 5: mean 2, var (1 + 1 + 1 + 9) / 3 = 4
    method.step(source_batch(), batch([0.0, 2.0, 4.0, 6.0], [1.0, 1.0, 1.0, 5.0]))
    # 0.75 * source + 0.25 * target: means 0.75 + 0.75 = 1.5 and -0.75 + 0.5 = -0.25;
    # variances 3 + 5/3 = 14/3 and 0.1875 + 1 = 1.1875
    assert torch.allclose(model.bn.running_mean, torch.tensor([1.5, -0.25]))
    assert torch.allclose(model.bn.running_var, torch.tensor([14 / 3, 1.1875]))
    # batch 2: channel 0 all 7 (mean 7, var 0), channel 1 all 0: the target estimate is the average of the two
    # batches: means 5 and 1, variances 10/3 and 2; mixed: 0.75 + 1.25 = 2, -0.75 + 0.25 = -0.5;
    # 3 + 10/12 = 23/6, 0.1875 + 0.5 = 0.6875
    method.step(source_batch(), batch([7.0] * 4, [0.0] * 4))
    assert torch.allclose(model.bn.running_mean, torch.tensor([2.0, -0.5]))
    assert torch.allclose(model.bn.running_var, torch.tensor([23 / 6, 0.6875]))
    assert model.bn.momentum == 0.1 and model.bn.training  # the layer's own settings are restored
    assert not any(p.grad is not None for p in model.parameters())


def test_bn_alpha_with_a_prior_strength_weighs_the_target_by_n_over_n_plus_N():
    """The paper's weight: alpha = n / (N + n) after n target images (the batches hold 2 images each)."""
    model = OneBN()
    method = BNAlpha(model, BNAlphaConfig(alpha=0.9, prior_strength=2.0)).train()  # alpha is then unused
    assert method.weight(2) == 0.5 and method.weight(4) == 4 / 6
    # batch 1: n = 2, alpha 1/2; target means 3 and 2, variances 20/3 and 4 (as above)
    logs = method.step(source_batch(), batch([0.0, 2.0, 4.0, 6.0], [1.0, 1.0, 1.0, 5.0]))
    assert logs["alpha"] == 0.5
    assert torch.allclose(model.bn.running_mean, torch.tensor([2.0, 0.5]))
    assert torch.allclose(model.bn.running_var, torch.tensor([16 / 3, 2.125]))
    # batch 2: n = 4, alpha 2/3; the target estimate: means 5 and 1, variances 10/3 and 2
    logs = method.step(source_batch(), batch([7.0] * 4, [0.0] * 4))
    assert logs["alpha"] == 4 / 6
    assert torch.allclose(model.bn.running_mean, torch.tensor([11 / 3, 1 / 3]))
    assert torch.allclose(model.bn.running_var, torch.tensor([32 / 9, 17 / 12]))
    # the count of images is a buffer: a resumed run goes on with the same n
    resumed = BNAlpha(OneBN(), BNAlphaConfig(prior_strength=2.0)).train()
    resumed.load_state_dict(method.state_dict())
    assert int(resumed.target_images) == 4 and resumed.weight(int(resumed.target_images)) == 4 / 6
    with pytest.raises(ValueError, match=r"prior_strength=-1.0 must be a number of images >= 0"):
        BNAlpha(OneBN(), BNAlphaConfig(prior_strength=-1.0))


def test_bn_alpha_at_one_is_adabn_and_at_zero_the_source_model():
    batches = [target_batch(s) for s in range(3)]
    adabn = adapt_batchnorm(ConvBN(), [(b.image,) for b in batches])
    full = BNAlpha(ConvBN(), BNAlphaConfig(alpha=1.0)).train()
    none = BNAlpha(ConvBN(), BNAlphaConfig(alpha=0.0)).train()
    for b in batches:
        full.step(source_batch(), b), none.step(source_batch(), b)
    assert torch.allclose(full.model.bn.running_mean, adabn.bn.running_mean, atol=1e-6)
    assert torch.allclose(full.model.bn.running_var, adabn.bn.running_var, atol=1e-6)
    assert torch.equal(none.model.bn.running_mean, ConvBN().bn.running_mean)
    assert torch.equal(none.model.bn.running_var, ConvBN().bn.running_var)


def test_bn_alpha_resumes_from_its_state_dict():
    # the source statistics and the running target estimate are buffers, so a checkpoint carries them
    a = BNAlpha(OneBN(), BNAlphaConfig(alpha=0.25)).train()
    a.step(source_batch(), batch([0.0, 2.0, 4.0, 6.0], [1.0, 1.0, 1.0, 5.0]))
    b = BNAlpha(OneBN(), BNAlphaConfig(alpha=0.25)).train()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.step(source_batch(), batch([7.0] * 4, [0.0] * 4))
    assert torch.equal(a.model.bn.running_mean, b.model.bn.running_mean)
    assert torch.equal(a.model.bn.running_var, b.model.bn.running_var)


def test_bn_alpha_refuses_alpha_outside_zero_one():
    with pytest.raises(ValueError, match=r"alpha=1.5 must lie in \[0, 1\]"):
        build_method("bn_alpha", OneBN(), alpha=1.5)
    assert method_config("bn_alpha", "minicity").alpha == 0.5
    assert method_config("tent", "minicity").lr == 0.01


# ----------------------------------------------------------------------------------------- on the shared loop
@pytest.mark.parametrize("method", ["tent", "bn_alpha"])
def test_a_test_time_run_from_a_source_run(tiny_minicity, tmp_path, monkeypatch, method):
    from udalib.experiment import Experiment, run

    monkeypatch.setenv("UDALIB_DATA", str(tiny_minicity.parent))
    monkeypatch.setenv("UDALIB_RUNS", str(tmp_path))
    common = dict(model_args={"width": 4}, batch_size=4, evaluate_on=("minicity:target/val",))
    source = run(Experiment(steps=2, **common), progress=False)
    adapted = run(Experiment(method=method, target="minicity:target", init=str(source.dir), steps=2, **common),
                  progress=False)
    assert adapted.miou("minicity:target/val") >= 0
    from udalib.models import build_model

    weights, before = torch.load(adapted.dir / "model.pt"), torch.load(source.dir / "model.pt")
    changed = {k for k in weights if not torch.equal(weights[k], before[k])}
    bn = {n for n, m in build_model("minideeplab", 19, width=4).named_modules()
          if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    statistics = {f"{n}.{b}" for n in bn for b in ("running_mean", "running_var", "num_batches_tracked")}
    affine = {f"{n}.{p}" for n in bn for p in ("weight", "bias")}
    assert changed & statistics
    assert changed <= (statistics | affine if method == "tent" else statistics), sorted(changed - statistics)[:5]
    assert (method == "tent") == bool(changed & affine)


def test_the_tta_table_asks_for_the_standard_runs_and_the_test_time_rows_on_each_domain():
    import importlib.util
    from pathlib import Path

    from udalib import zoo

    path = Path(__file__).parents[1] / "benchmarks" / "tta_table.py"
    spec = importlib.util.spec_from_file_location("tta_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    assert table.experiment("adabn", "prior", 3) == zoo.factor_experiment("adabn", "prior", 3)  # the atlas's run
    assert table.experiment("maxsquare", "composite", 1) == zoo.MINICITY_ROWS["maxsquare"](1)
    tent = table.experiment("tent", "prior", 2)
    assert (tent.method, tent.init, tent.target) == ("tent", zoo.source_experiment(2).name, "minicity:target-prior")
    assert tent.evaluate_on == ("minicity:source/val", "minicity:target-prior/val")
    one = table.experiment("bn_alpha_1", "composite", 0)
    assert (one.method, one.method_args, one.target) == ("bn_alpha", {"alpha": 1.0}, "minicity:target")
    assert table.experiment("bn_alpha", "composite", 0).method_args == {}  # the preset's alpha
