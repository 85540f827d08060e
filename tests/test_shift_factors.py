"""MiniCity's named shift factors (``target-<factor>+...`` domains) and the BatchNorm-statistics policy of the
adaptation methods (``Experiment.bn_stats``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from udalib.data import minicity
from udalib.data.batch import SourceBatch, TargetBatch
from udalib.data.minicity import (
    BODY,
    BUILDING,
    CAR,
    PERSON,
    SHIFT_FACTORS,
    SOURCE_LOOK,
    TARGET_PALETTE,
    compose,
    domain_definition,
    make_sample,
    render,
    sample_layout,
)
from udalib.experiment import Experiment
from udalib.methods import build_method
from udalib.methods.base import frozen_running_stats
from udalib.models.tiny import MiniDeepLab

H, W = 32, 64


# ------------------------------------------------------------------------------------------ factors
def test_the_composite_target_is_its_factors_applied_to_the_source():
    look, scene = compose("target", minicity.TARGET_FACTORS)
    assert look == minicity.TARGET_LOOK and scene == minicity.TARGET_SCENE
    # one factor alone changes only its own fields
    palette_only, scene_only = domain_definition("target-palette")
    assert palette_only.palette == TARGET_PALETTE
    assert palette_only.saturation == SOURCE_LOOK.saturation == 1.0 and palette_only.texture == 0.0
    assert scene_only == minicity.SOURCE_SCENE
    prior_look, prior_scene = domain_definition("target-prior")
    assert prior_look.palette == SOURCE_LOOK.palette
    assert prior_scene.cars == SHIFT_FACTORS["prior"].scene["cars"] != minicity.SOURCE_SCENE.cars
    assert minicity.factor_domain(("palette", "graded")) == "target-palette+graded"


@pytest.mark.parametrize("name", ["target-sepia", "target-", "moon", "target-palette+"])
def test_unknown_domains_and_factors_are_one_line_errors_that_list_the_choices(name):
    with pytest.raises(ValueError, match="palette") as err:
        domain_definition(name)
    assert "\n" not in str(err.value)


def _object_colours(look, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rendered colours of the flat body pixels of buildings, cars and people, with their labels."""
    layout = sample_layout(np.random.default_rng(seed), H, W)
    image = render(layout, look, np.random.default_rng(seed + 100)).reshape(-1, 3) / 255
    body = ((layout.part == BODY) & np.isin(layout.label, (BUILDING, CAR, PERSON))).reshape(-1)
    return image[body], layout.label.reshape(-1)[body]


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_graded_strength_blends_each_object_between_a_source_and_a_target_colour(strength):
    # no jitter, exposure or photometry: every body pixel is exactly a blend source + t (target - source)
    look, _ = compose("probe", ("palette", "graded"))
    look = minicity.Look(**{**look.__dict__, "strength": (strength, strength), "color_jitter": 0.0,
                            "brightness": (1.0, 1.0)})
    colours, labels = _object_colours(look)
    assert len(colours) > 50
    for cls in np.unique(labels):
        allowed = np.array([np.array(s) + strength * (np.array(t) - np.array(s))
                            for s in SOURCE_LOOK.palette[cls] for t in TARGET_PALETTE[cls]])
        got = colours[labels == cls]
        dist = np.abs(got[:, None, :] - allowed[None]).max(axis=2).min(axis=1)
        assert dist.max() <= 0.6 / 255, (cls, strength)  # uint8 rounding only


def test_factor_domains_share_the_targets_streets_unless_they_change_the_scene():
    _, target = make_sample("target", "val", 3, height=H, width=W)
    _, palette = make_sample("target-palette+texture", "val", 3, height=H, width=W)
    _, busier = make_sample("target-prior", "val", 3, height=H, width=W)
    assert (palette == target).all()
    assert (busier != target).any()


def test_a_factor_domain_is_a_build_of_its_own_with_the_targets_splits():
    spec = minicity.spec_for("target-palette")
    assert spec.splits == {"target-palette": minicity.FACTOR_SPLITS}
    assert spec.name.endswith("-target-palette") and spec.name != minicity.MiniCitySpec().name
    assert minicity.spec_for("target") == minicity.MiniCitySpec()


def test_over_a_thousand_images_the_prior_factor_doubles_cars_and_people():
    def share(domain):
        labels = np.stack([make_sample(domain, "train", i, height=H, width=W)[1] for i in range(60)])
        return np.isin(labels, (CAR, PERSON)).mean()

    assert share("target-prior") > 1.5 * share("target-palette")


# ------------------------------------------------------------------------------------ BatchNorm policy
def _bn_input_mean(model: MiniDeepLab, image: torch.Tensor) -> torch.Tensor:
    """The batch mean of the first BatchNorm's input (the stem convolution), per channel."""
    with torch.no_grad():
        return model.stem[0](image).mean(dim=(0, 2, 3))


def test_frozen_running_stats_normalise_with_the_batch_but_keep_the_running_statistics():
    torch.manual_seed(0)
    model = MiniDeepLab(19, width=4).train()
    x = torch.randn(2, 3, 16, 32) * 3 + 1
    before = model.stem[1].running_mean.clone(), model.stem[1].running_var.clone()
    tracked = model.stem[1].num_batches_tracked.clone()
    with frozen_running_stats(model):
        frozen_out = model(x)["out"]
    assert torch.equal(model.stem[1].running_mean, before[0]) and torch.equal(model.stem[1].running_var, before[1])
    assert torch.equal(model.stem[1].num_batches_tracked, tracked) and model.stem[1].momentum == 0.1
    plain_out = model(x)["out"]  # train mode: the same batch statistics normalise it
    assert torch.allclose(frozen_out, plain_out, atol=1e-6)
    assert torch.allclose(model.stem[1].running_mean, 0.9 * before[0] + 0.1 * _bn_input_mean(model, x), atol=1e-6)


@pytest.mark.parametrize("bn_stats", ["target", "both"])
def test_with_target_statistics_only_the_target_batch_moves_the_running_mean(bn_stats):
    torch.manual_seed(0)
    model = MiniDeepLab(19, width=4)
    method = build_method("minent", model, "minicity")
    method.bn_stats = bn_stats
    src = SourceBatch(torch.randn(2, 3, 16, 32) * 2 - 1, torch.randint(0, 19, (2, 16, 32)))
    tgt = TargetBatch(torch.randn(2, 3, 16, 32) + 2, torch.arange(2), None)
    m0 = model.stem[1].running_mean.clone()
    mean_s, mean_t = _bn_input_mean(model, src.image), _bn_input_mean(model, tgt.image)  # weights before the step
    method.train()
    method.step(src, tgt)
    if bn_stats == "target":
        expected = 0.9 * m0 + 0.1 * mean_t
    else:  # source then target, each an EMA update
        expected = 0.9 * (0.9 * m0 + 0.1 * mean_s) + 0.1 * mean_t
    assert not torch.allclose(mean_s, mean_t, atol=1e-2)  # the two batches differ, so the check tells them apart
    assert torch.allclose(model.stem[1].running_mean, expected, atol=1e-5)


def test_bn_stats_enters_the_run_key_only_when_it_departs_from_the_seeds():
    base = Experiment(method="minent", target="minicity:target")
    assert Experiment(method="minent", target="minicity:target", bn_stats="both").key() == base.key()
    assert Experiment(method="minent", target="minicity:target", bn_stats="target").key() != base.key()
    with pytest.raises(ValueError, match="bn_stats"):
        method = build_method("minent", MiniDeepLab(19, width=4), "minicity")
        method.bn_stats = "source"
        method.source_forward(torch.zeros(1, 3, 16, 32))


def test_every_adaptation_method_normalises_its_source_batch_through_source_forward():
    # an adaptation method that called self.model on the source batch would move target statistics with it
    import inspect

    from udalib.methods import METHODS

    for name, (cls, _) in METHODS.items():
        code = "".join(inspect.getsource(c) for c in cls.__mro__ if c.__module__.startswith("udalib.methods"))
        if not cls.uses_source:  # test-time methods never forward a source batch
            assert "src.image" not in code, name
        if not cls.uses_target or not cls.uses_source:
            continue
        assert "self.model(src.image)" not in code, name
        assert "source_forward(src.image)" in code, name


def test_discriminator_free_models_without_batchnorm_are_unaffected():
    model = nn.Sequential(nn.Conv2d(3, 2, 1))
    with frozen_running_stats(model):
        assert model(torch.ones(1, 3, 2, 2)).shape == (1, 2, 2, 2)
