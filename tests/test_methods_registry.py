"""The method and model registries (presets, errors that list the valid names) and AdaBN, hand-computed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from udalib.methods import METHODS, PRESETS, adapt_batchnorm, build_method, method_config
from udalib.methods.minent import MinEnt, MinEntConfig
from udalib.models import MODELS, build_model


def small_model():
    torch.manual_seed(0)
    return build_model("minideeplab", 19, width=8)


# ------------------------------------------------------------------------------------------- registry
def test_an_unknown_method_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown method 'dann'") as info:
        build_method("dann", small_model())
    assert str(info.value).endswith("registered methods: " + ", ".join(sorted(METHODS)))
    assert {"source_only", "minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi"} <= set(METHODS)


def test_an_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(TypeError) as info:
        build_method("minent", small_model(), learning_rate=0.1, lamda_target=1.0)
    msg = str(info.value)
    assert "method 'minent' has no parameter 'lamda_target', 'learning_rate'" in msg
    assert "its parameters are: " in msg
    for name in ("lambda_seg", "lambda_target", "lr", "momentum", "weight_decay"):
        assert name in msg.split("its parameters are: ")[1]


def test_a_preset_that_names_an_unknown_parameter_is_also_refused(monkeypatch):
    monkeypatch.setitem(PRESETS, "source_only", {"broken": {"lr": 0.1, "lambda_targte": 1.0}})
    with pytest.raises(TypeError, match="has no parameter 'lambda_targte'"):
        method_config("source_only", "broken")


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="method 'minent' has no preset 'gpu'; presets: minicity"):
        build_method("minent", small_model(), preset="gpu")


def test_maxsquare_target_losses_are_checked():
    with pytest.raises(ValueError, match="method 'maxsquare' parameter target_loss='IW_entropy' is not valid: "
                                         "expected one of 'maxsquare', 'entropy', 'hard'$"):
        build_method("maxsquare", small_model(), target_loss="IW_entropy")
    with pytest.raises(ValueError, match="target_loss 'hard' has no image-wise weights: set iw_ratio to None"):
        build_method("maxsquare_iw", small_model(), target_loss="hard")


def test_a_method_field_added_later_enters_the_run_key_only_off_its_default():
    from udalib.experiment import Experiment
    from udalib.methods.base import OFF_DEFAULT, run_key_rule

    assert run_key_rule(METHODS["maxsquare"][1], "target_loss") == OFF_DEFAULT
    for method in ("maxsquare", "maxsquare_iw", "snr_maxsquare"):
        base = Experiment(method=method, target="minicity:target")
        named = Experiment(method=method, target="minicity:target", method_args={"target_loss": "maxsquare"})
        assert named.key() == base.key()
        assert Experiment(method=method, target="minicity:target",
                          method_args={"target_loss": "entropy"}).key() != base.key()
    # the key of a run before the field existed: the resolved config without it
    exp = Experiment(method="maxsquare", target="minicity:target", method_args={"lambda_target": 0.3})
    assert exp.key() == _key_without(exp, "target_loss", "legacy_param_multiplicity")
    # the same for OptimConfig's legacy_param_multiplicity, in every method that has it
    for method in ("source_only", "maxsquare", "adaptsegnet", "clustered_embeddings", "snr_maxsquare"):
        base = Experiment(method=method, target="minicity:target")
        assert Experiment(method=method, target="minicity:target",
                          method_args={"legacy_param_multiplicity": False}).key() == base.key()
        assert Experiment(method=method, target="minicity:target",
                          method_args={"legacy_param_multiplicity": True}).key() != base.key()
        assert base.key() == _key_without(base, "target_loss", "legacy_param_multiplicity")


def test_the_run_key_rule_beside_a_field_is_the_one_the_key_uses(monkeypatch):
    """A field added to a config with ``keyed_off_default`` leaves every key as it was at its default and moves it
    off the default; the same field without the rule moves every key; a subclass that changes its default with a
    one-line field keeps the rule, and the default it compares with is the subclass's."""
    from dataclasses import dataclass, field

    from udalib.experiment import Experiment, identity
    from udalib.methods.base import keyed_off_default
    from udalib.methods.maxsquare import MaxSquare, MaxSquareConfig

    exps = [Experiment(method="maxsquare", target="minicity:target"),
            Experiment(method="maxsquare", preset=None, method_args={"lambda_target": 0.3})]
    keys = [e.key() for e in exps]

    @dataclass
    class WithRule(MaxSquareConfig):
        extra: float = keyed_off_default(0.5)

    @dataclass
    class Moved(WithRule):
        extra: float = 0.7  # a one-line field that changes the default: the parent's rule holds

    @dataclass
    class WithoutRule(MaxSquareConfig):
        extra: float = field(default=0.5)

    for config, default in ((WithRule, 0.5), (Moved, 0.7)):
        monkeypatch.setitem(METHODS, "maxsquare", (MaxSquare, config))
        assert [e.key() for e in exps] == keys
        assert Experiment(method="maxsquare", target="minicity:target", method_args={"extra": default}).key() == keys[0]
        assert Experiment(method="maxsquare", target="minicity:target", method_args={"extra": 0.1}).key() != keys[0]
        assert identity(exps[0])["method_config.extra"] == default  # the identity keeps it (differences name it)
    monkeypatch.setitem(METHODS, "maxsquare", (MaxSquare, WithoutRule))
    assert all(e.key() != k for e, k in zip(exps, keys, strict=True))


def test_key_and_identity_leave_out_the_same_experiment_fields():
    """The device and the label change neither; a preset value named in ``method_args`` changes neither; any
    other field changes both."""
    from dataclasses import replace

    from udalib.experiment import Experiment, identity

    base = Experiment(method="maxsquare", target="minicity:target")
    same = [replace(base, device="cuda", label="x"),
            replace(base, method_args={"lambda_target": PRESETS["maxsquare"]["minicity"]["lambda_target"]})]
    for exp in same:
        assert (exp.key(), identity(exp)) == (base.key(), identity(base))
    for changed in (replace(base, steps=5), replace(base, select_every=10), replace(base, bn_stats="target"),
                    replace(base, preset=None)):
        assert changed.key() != base.key() and identity(changed) != identity(base)


def _key_without(exp, *fields):
    import hashlib
    import json
    from dataclasses import asdict

    from udalib.data.minicity import GENERATOR_VERSION

    d = {k: v for k, v in asdict(exp).items()
         if k not in ("device", "label", "preset", "method_args", "bn_stats", "blur", "eval_protocol",
                     "select_every", "rcs_temperature")}
    d["method_config"] = {k: v for k, v in asdict(method_config(exp.method, exp.preset, **exp.method_args)).items()
                          if k not in fields}
    if GENERATOR_VERSION > 1:
        d["minicity_generator"] = GENERATOR_VERSION
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:10]


def test_preset_values_apply_and_explicit_arguments_override_them():
    defaults = method_config("minent")
    assert (defaults.lr, defaults.lambda_target, defaults.lambda_seg) == (2.5e-4, 0.1, 0.0)

    preset = method_config("minent", "minicity")
    assert isinstance(preset, MinEntConfig)
    assert (preset.lr, preset.lambda_seg, preset.lambda_target) == (0.01, 0.1, 2.0)  # PRESETS["minent"]["minicity"]
    assert (preset.momentum, preset.weight_decay) == (0.9, 5e-4)  # untouched by the preset

    override = method_config("minent", "minicity", lr=0.5)
    assert (override.lr, override.lambda_seg, override.lambda_target) == (0.5, 0.1, 2.0)
    assert PRESETS["minent"]["minicity"]["lr"] == 0.01  # the preset itself is not modified

    method = build_method("minent", small_model(), "minicity", lambda_target=0.0)
    assert isinstance(method, MinEnt)
    assert (method.cfg.lr, method.cfg.lambda_target) == (0.01, 0.0)
    opt = method.optimizers["model"]
    assert opt.param_groups[0]["lr"] == 0.01  # the optimizer was built from the resolved config


def test_an_unknown_model_lists_the_models():
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as info:
        build_model("resnet50", 19)
    names = ["minideeplab", "deeplabv2", "deeplabv2_multi", "deeplabv2_vgg16", "minideeplab_snr", "deeplabv2_multi_snr"]
    assert "available models: " + ", ".join(names) in str(info.value)
    assert list(MODELS) == names


def test_an_unknown_model_argument_names_the_model():
    with pytest.raises(TypeError, match="model 'minideeplab': .*depth"):
        build_model("minideeplab", 19, depth=3)


# ---------------------------------------------------------------------------------------------- AdaBN
class Loader(list):
    """A list of ``(image, label)`` batches is all adapt_batchnorm needs."""


def batches():
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 4, 5), (3, 3, 2, 6), (1, 3, 5, 5)]  # different sizes: each batch counts once
    return Loader((torch.randn(*s, generator=g) * (k + 1) + 2 * k - 1, torch.zeros(s[0], s[2], s[3]))
                  for k, s in enumerate(shapes))


def bn_model(momentum=0.3):
    bn = nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_mean.fill_(7.0)
        bn.running_var.fill_(9.0)
        bn.num_batches_tracked.fill_(50)  # a trained model's statistics: AdaBN must start afresh
    # a Dropout in front: if AdaBN left the rest of the model in train mode, it would change the statistics
    return nn.Sequential(nn.Dropout(p=0.5), bn)


def test_adabn_sets_running_stats_to_the_average_of_per_batch_statistics():
    model = bn_model()
    model.train()
    data = batches()
    adapt_batchnorm(model, data)
    bn = model[1]
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x, _ in data]).mean(0)
    # PyTorch stores the unbiased (n - 1) batch variance in running_var
    variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x, _ in data]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-5)
    assert torch.allclose(bn.running_var, variances, atol=1e-5)
    assert bn.num_batches_tracked.item() == 3
    # the pooled statistics would be a different (wrong) answer: each batch has equal weight
    pooled = torch.cat([x.permute(1, 0, 2, 3).reshape(3, -1) for x, _ in data], 1).mean(1)
    assert not torch.allclose(pooled, means, atol=1e-3)


def test_adabn_stops_after_max_batches():
    model = bn_model()
    data = batches()
    adapt_batchnorm(model, data, max_batches=2)
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x, _ in data[:2]]).mean(0)
    assert torch.allclose(model[1].running_mean, means, atol=1e-5)
    assert model[1].num_batches_tracked.item() == 2


@pytest.mark.parametrize("train_mode", [True, False])
def test_adabn_leaves_weights_momentum_and_modes_as_they_were(train_mode):
    model = bn_model(momentum=0.3)
    model.train(train_mode)
    weight, bias = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    out = adapt_batchnorm(model, batches())
    assert out is model
    bn = model[1]
    assert torch.equal(bn.weight, weight) and torch.equal(bn.bias, bias)
    assert bn.momentum == 0.3
    assert model.training is train_mode and bn.training is train_mode and model[0].training is train_mode


def test_adabn_on_a_real_model_changes_only_the_batchnorm_buffers():
    model = small_model().eval()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    g = torch.Generator().manual_seed(1)
    stem_bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    stem_bn.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().clone()))
    adapt_batchnorm(model, [(torch.randn(2, 3, 32, 64, generator=g) + 1,)])
    assert all(torch.equal(params[k], p) for k, p in model.named_parameters())
    changed = [k for k, b in model.named_buffers() if not torch.equal(buffers[k], b)]
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert not model.training
    # one batch: the first BatchNorm's running statistics are exactly those of the input it saw
    assert len(seen) == 1
    assert torch.allclose(stem_bn.running_mean, seen[0].mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(stem_bn.running_var, seen[0].var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert stem_bn.momentum == 0.1 and stem_bn.num_batches_tracked.item() == 1


def test_adabn_needs_a_batchnorm_layer():
    with pytest.raises(ValueError, match="the model has no BatchNorm layer to adapt"):
        adapt_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()), batches())


@pytest.mark.parametrize("method, field, bad, choices", [
    ("adaptsegnet", "gan", "lsgan", "'vanilla', 'ls'"),
    ("minent", "normalization", "advent", "'original', 'log_c'"),
    ("mlsl", "loss", "focal", "'ce', 'ohem'"),
    ("snr_maxsquare", "mode", "released", "'paper', 'reference'"),
    ("maxsquare_iw", "target_loss", "IW_maxsquare", "'maxsquare', 'entropy', 'hard'"),
])
def test_a_string_switch_out_of_its_choices_is_one_line_listing_them(method, field, bad, choices):
    from udalib.experiment import Experiment
    from udalib.validation import check_experiment

    message = f"method '{method}' parameter {field}='{bad}' is not valid: expected one of {choices}$"
    with pytest.raises(ValueError, match=message):
        method_config(method, **{field: bad})
    with pytest.raises(ValueError, match=message):  # the check before any data is read says the same
        check_experiment(Experiment(method=method, target="minicity:target", method_args={field: bad}), device=False)


def test_string_switches_are_members_stored_and_hashed_as_their_strings():
    import json
    from dataclasses import asdict

    from udalib.experiment import Experiment
    from udalib.methods.adaptsegnet import GAN
    from udalib.methods.base import BNStats

    cfg = method_config("adaptsegnet", gan="ls")
    assert cfg.gan is GAN.LS and cfg.gan == "ls" and method_config("adaptsegnet").gan is GAN.VANILLA
    assert json.loads(json.dumps(asdict(cfg)))["gan"] == "ls"
    as_member = Experiment(method="adaptsegnet", target="minicity:target", method_args={"gan": GAN.LS})
    as_string = Experiment(method="adaptsegnet", target="minicity:target", method_args={"gan": "ls"})
    assert as_member.key() == as_string.key() != Experiment(method="adaptsegnet", target="minicity:target").key()
    assert Experiment(bn_stats=BNStats.TARGET).key() == Experiment(bn_stats="target").key()
    assert json.loads(json.dumps(asdict(Experiment())))["bn_stats"] == "both"
    # a printed config shows the strings it was written with, not the members
    assert repr(GAN.LS) == "'ls'" and "gan='ls'" in repr(cfg) and "<" not in repr(cfg)
    assert "bn_stats='target'" in repr(Experiment(bn_stats=BNStats.TARGET))


def test_experiment_bn_stats_out_of_its_choices_is_one_line_listing_them():
    from udalib.experiment import Experiment
    from udalib.validation import check_experiment

    with pytest.raises(ValueError, match="^Experiment field bn_stats='source' is not valid: expected one of 'both', "
                                         "'target'$"):
        check_experiment(Experiment(bn_stats="source"), device=False)
    check_experiment(Experiment(bn_stats="target", target="minicity:target"), device=False)


def test_presets_are_written_beside_their_configs():
    from udalib.methods.base import MINICITY_LR

    for name, (_, config) in METHODS.items():
        assert PRESETS[name] == config.PRESETS, name  # the registry gathers, it does not add
    # every MiniCity adaptation trains at one learning rate (source-only and SNR train from scratch at theirs)
    lrs = {name: method_config(name, "minicity").__dict__.get("lr") for name in METHODS}
    assert {n for n, lr in lrs.items() if lr not in (MINICITY_LR, None)} == {"source_only", "snr"}
    assert method_config("snr_maxsquare", "minicity").lambda_target == 5.0  # inherited from MaxSquare's presets


def test_minent_normalisation_original_also_reads_seed_and_hashes_as_seed():
    """``"original"`` is the value students write; ``"seed"``, the spelling stored configs hold, names the same
    member, and the run key hashes it as ``"seed"``, so the stored MinEnt runs keep their folders."""
    from udalib.experiment import Experiment
    from udalib.methods.minent import EntropyNormalization

    assert method_config("minent", normalization="seed").normalization is EntropyNormalization.ORIGINAL
    assert method_config("minent").normalization == "original"
    assert EntropyNormalization.choices() == "'original', 'log_c'"
    keys = {Experiment(method="minent", target="minicity:target", method_args=args).key()
            for args in ({}, {"normalization": "seed"}, {"normalization": "original"},
                         {"normalization": EntropyNormalization.ORIGINAL})}
    assert len(keys) == 1
    advent = Experiment(method="minent", target="minicity:target", method_args={"normalization": "log_c"})
    assert advent.key() not in keys
