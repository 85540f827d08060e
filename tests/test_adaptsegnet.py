"""AdaptSegNet: the discriminator against the seed's key list, the GAN losses at hand-computed values, the update
order (each phase leaves the other player untouched), single- vs multi-level discriminators, the paper defaults."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from udalib.data.batch import SourceBatch, TargetBatch
from udalib.losses import SOURCE, TARGET, adversarial_loss, discriminator_loss, gan_loss
from udalib.methods import build_method, method_config
from udalib.models import build_model
from udalib.models.discriminator import FCDiscriminator
from udalib.train import set_lr

REF = Path(__file__).parent / "reference"


def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = SourceBatch(torch.randn(2, 3, 32, 64, generator=g), torch.randint(0, 19, (2, 32, 64), generator=g))
    tgt = TargetBatch(torch.randn(2, 3, 32, 64, generator=g) * 1.5 + 0.3, torch.tensor([0, 1]))
    return src, tgt


def fresh(name="adaptsegnet_multi", **overrides):
    torch.manual_seed(0)
    return build_method(name, build_model("minideeplab", 19, width=8), "minicity", **overrides)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unchanged(module, before) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


# --- the discriminator ---------------------------------------------------------------------------------------

def test_discriminator_keys_and_shapes_equal_the_seed_reference():
    lines = [ln for ln in (REF / "keys_adaptsegnet_fcdiscriminator_19cls.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    expected = [(key, shape, grad == "True") for key, shape, _, grad, _ in (ln.split("\t") for ln in lines)]
    disc = FCDiscriminator(19)
    ours = [(k, str(tuple(p.shape)), p.requires_grad) for k, p in disc.named_parameters()]
    assert [k for k in disc.state_dict()] == [k for k, _, _ in expected]
    assert ours == expected
    assert sum(p.numel() for p in disc.parameters()) == 2_781_121


@pytest.mark.parametrize("size, out", [((64, 128), (2, 4)), ((512, 1024), (16, 32)), ((720, 1280), (22, 40))])
def test_discriminator_outputs_one_logit_per_stride_32_patch(size, out):
    disc = FCDiscriminator(19).to("meta")  # shapes only: no memory, no arithmetic
    assert disc(torch.empty(2, 19, *size, device="meta")).shape == (2, 1, *out)


def test_discriminator_width_is_a_parameter():
    assert FCDiscriminator(5, ndf=8)(torch.rand(1, 5, 64, 64)).shape == (1, 1, 2, 2)
    assert FCDiscriminator(5, ndf=8).conv4.out_channels == 64


# --- the losses ------------------------------------------------------------------------------------------------

def test_vanilla_gan_loss_is_bce_with_logits_at_hand_computed_values():
    d = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    # label 0: -log(1 - sigmoid(x)) = log(1 + e^x): log 2 and log 4
    assert gan_loss(d, SOURCE).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    # label 1: -log sigmoid(x) = log(1 + e^-x): log 2 and log(4/3)
    assert gan_loss(d, TARGET).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_least_squares_gan_loss_is_mse_on_the_raw_logits():
    d = torch.tensor([0.0, 3.0, -1.0, 1.0]).view(1, 1, 2, 2)
    assert gan_loss(d, SOURCE, "ls").item() == pytest.approx((0 + 9 + 1 + 1) / 4)
    assert gan_loss(d, TARGET, "ls").item() == pytest.approx((1 + 4 + 4 + 0) / 4)


@pytest.mark.parametrize("kind", ["vanilla", "ls"])
def test_discriminator_and_generator_losses_follow_the_seed_labels(kind):
    d_s, d_t = torch.tensor([2.0, -1.0]).view(1, 1, 1, 2), torch.tensor([0.5, 1.5]).view(1, 1, 1, 2)
    if kind == "vanilla":
        ell = lambda x, z: torch.nn.functional.softplus(-x if z == 1 else x).mean().item()  # noqa: E731
    else:
        ell = lambda x, z: ((x - z) ** 2).mean().item()  # noqa: E731
    # D: source maps -> 0, target maps -> 1, each term halved; G: target maps -> the source label 0
    assert discriminator_loss(d_s, d_t, kind).item() == pytest.approx(0.5 * ell(d_s, 0) + 0.5 * ell(d_t, 1))
    assert adversarial_loss(d_t, kind).item() == pytest.approx(ell(d_t, 0))


def test_an_unknown_gan_kind_is_an_error():
    with pytest.raises(ValueError, match="vanilla"):
        gan_loss(torch.zeros(1, 1, 1, 1), SOURCE, "wgan")
    with pytest.raises(ValueError, match="vanilla"):
        fresh(gan="wgan")


def test_the_adversarial_gradient_reaches_the_segmenter_logits_through_the_softmax():
    logits = torch.randn(1, 19, 64, 64, requires_grad=True)
    adversarial_loss(FCDiscriminator(19, ndf=8)(logits.softmax(dim=1))).backward()
    assert logits.grad.abs().sum() > 0


# --- the method: update order ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, gan", [("adaptsegnet", "vanilla"), ("adaptsegnet_multi", "vanilla"),
                                       ("adaptsegnet", "ls"), ("adaptsegnet_multi", "ls")])
def test_each_phase_moves_its_own_player_and_leaves_the_other_unchanged(name, gan):
    method = fresh(name, gan=gan)
    src, tgt = batches()
    disc, model = snapshot(method.discriminators), snapshot(method.model)
    # (1) the segmenter's update: the discriminators are frozen
    out_s, out_t, logs = method.update_segmenter(src, tgt)
    assert unchanged(method.discriminators, disc)
    assert not unchanged(method.model, model)
    assert all(p.grad is None for p in method.discriminators.parameters())
    # (2) the discriminators' update: the segmenter is not run, its weights and BatchNorm statistics stay put
    model = snapshot(method.model)
    d_logs = method.update_discriminators(out_s, out_t)
    assert unchanged(method.model, model)
    assert not unchanged(method.discriminators, disc)
    assert set(logs) | set(d_logs) == {"seg"} | {f"{p}_{k}" for p in ("adv", "d") for k in method.discriminators}


def test_step_is_the_two_phases_in_order():
    a, b = fresh(), fresh()
    src, tgt = batches()
    logs = a.step(src, tgt)
    out_s, out_t, logs_b = b.update_segmenter(src, tgt)
    logs_b |= b.update_discriminators(out_s, out_t)
    assert logs == logs_b
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def test_single_level_builds_one_discriminator_and_multi_level_two():
    single, multi = fresh("adaptsegnet"), fresh("adaptsegnet_multi")
    assert list(single.discriminators) == ["out"]
    assert list(multi.discriminators) == ["aux", "out"]
    assert set(multi.optimizers) == {"model", "disc"}
    assert any(k.startswith("discriminators.aux.conv1") for k in multi.state_dict())  # checkpointed with the method
    # the seed's single-level run, which trains D1 with weight 0, is one override away
    assert list(fresh("adaptsegnet", levels=("aux", "out")).discriminators) == ["aux", "out"]


def test_configurations_that_cannot_run_are_errors():
    with pytest.raises(ValueError, match="levels"):
        fresh("adaptsegnet", lambda_adv_target1=1e-3)
    with pytest.raises(ValueError, match="auxiliary output"):
        build_method("adaptsegnet_multi", build_model("minideeplab", 19, width=8, multi_level=False))


def test_the_discriminators_use_adam_on_their_own_poly_schedule():
    method = fresh(lr_d=1e-4)
    opt = method.optimizers["disc"]
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.9, 0.99)
    assert opt.defaults["weight_decay"] == 0
    set_lr(method, 50, 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5**0.9)


def test_paper_defaults_are_the_seed_readme_values():
    single, multi = method_config("adaptsegnet"), method_config("adaptsegnet_multi")
    for c in (single, multi):
        assert (c.lr, c.momentum, c.weight_decay, c.lr_d, c.betas, c.gan, c.ndf) == \
            (2.5e-4, 0.9, 5e-4, 1e-4, (0.9, 0.99), "vanilla", 64)
    assert (single.lambda_seg, single.lambda_adv_target1, single.lambda_adv_target2) == (0.0, 0.0, 1e-3)
    assert (multi.lambda_seg, multi.lambda_adv_target1, multi.lambda_adv_target2) == (0.1, 2e-4, 1e-3)


# --- the notebook's view of the discriminator --------------------------------------------------------------

@pytest.mark.parametrize("gan", ["vanilla", "ls"])
def test_domain_probability_is_one_value_in_0_1_per_patch_and_restores_train_mode(gan):
    from udalib.viz.plots import domain_probability, show_domain_confidence

    method = fresh(gan=gan)
    images = torch.randn(3, 3, 64, 128)
    prob = domain_probability(method.model, method.discriminators["out"], images, gan=gan)
    assert prob.shape == (3, 2, 4) and prob.min() >= 0 and prob.max() <= 1
    assert method.model.training and method.discriminators.training
    dataset = [(images[i], None, i) for i in range(3)]
    fig = show_domain_confidence({"D": (method.model, method.discriminators["out"])}, dataset, [0, 1], gan=gan)
    assert len(fig.axes) == 2 * 2 + 1  # two rows of (image, map) and the colour bar
