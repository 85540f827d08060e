"""DeepLab-v2 (ResNet-101 and VGG-16) against the reference key lists, shapes and optimizer groups.

Structural checks build the models on the meta device (no memory, no arithmetic); numerical checks
run on the CPU at 33x41 or on small stand-in modules, so the whole file takes well under a minute.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from udalib.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_imagenet_init,
    load_into,
    load_state_dict_file,
)
from udalib.models.deeplabv2 import ClassifierModule, DeepLabV2, param_groups, upsample_to
from udalib.models.snr import DeepLabV2SNR
from udalib.models.vgg import DeepLabV2VGG, load_torchvision_vgg16

REF = Path(__file__).parent / "reference"
SMALL = (1, 1, 1, 1)  # one bottleneck per stage: same key pattern per stage, ~10 M params

BUILDERS = {
    "keys_adaptsegnet_deeplab_single_19cls.txt":
        lambda: DeepLabV2(19, multi_level=False, freeze_bn_affine=True),
    "keys_adaptsegnet_deeplab_multi_19cls.txt":
        lambda: DeepLabV2(19, multi_level=True, freeze_bn_affine=True),
    "keys_maxsquare_deeplabv2_multi_19cls.txt": lambda: DeepLabV2(19, multi_level=True),
    "keys_udaclustering_deeplabv2_resnet101_19cls.txt": lambda: DeepLabV2(19, multi_level=True),
    "keys_udaclustering_deeplabv2_vgg16_19cls.txt": lambda: DeepLabV2VGG(19),
    "keys_snr_deeplabv2_multi_snr_19cls.txt": lambda: DeepLabV2SNR(19),
}


def on_meta(build):
    with torch.device("meta"):
        return build()


def read_keys(name: str) -> list[tuple[str, tuple, str, bool | None]]:
    """(key, shape, 'param'|'buffer', requires_grad or None for buffers) per reference line."""
    rows = []
    for line in (REF / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, kind, grad, _ = line.split("\t")
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        rows.append((key, dims, kind, None if grad == "-" else grad == "True"))
    return rows


def model_keys(model: nn.Module) -> list[tuple[str, tuple, str, bool | None]]:
    params = dict(model.named_parameters())
    return [(k, tuple(v.shape), "param" if k in params else "buffer",
             params[k].requires_grad if k in params else None)
            for k, v in model.state_dict().items()]


def read_optim_groups(name: str) -> dict[int, set[str]]:
    groups: dict[int, set[str]] = {}
    for line in (REF / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        group, key, _ = line.split("\t")
        groups.setdefault(int(group), set()).add(key)
    return groups


def read_feature_shapes(model_name: str) -> dict[str, dict[str, tuple]]:
    """{input 'HxW': {module: shape}} for one reference model."""
    out: dict[str, dict[str, tuple]] = {}
    for line in (REF / "feature_shapes.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        model, size, module, shape = line.split("\t")
        if model == model_name:
            out.setdefault(size, {})[module] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return out


def stride8(h: int) -> int:
    """The reference DeepLab-v2 ResNet-101: conv1 ceil(H/2), ceil-mode max-pool ceil((h-1)/2)+1, layer2 ceil(h/2)."""
    h = math.ceil(h / 2)
    h = math.ceil((h - 1) / 2) + 1
    return math.ceil(h / 2)


@pytest.fixture(scope="module")
def multi_cpu() -> DeepLabV2:
    torch.manual_seed(0)
    return DeepLabV2(19, multi_level=True)


# --------------------------------------------------------------------------- state_dict layout


@pytest.mark.parametrize("ref_name", sorted(BUILDERS))
def test_state_dict_matches_reference(ref_name):
    assert model_keys(on_meta(BUILDERS[ref_name])) == read_keys(ref_name)


def test_adaptsegnet_and_maxsquare_differ_only_in_bn_requires_grad():
    ada = read_keys("keys_adaptsegnet_deeplab_multi_19cls.txt")
    mxs = read_keys("keys_maxsquare_deeplabv2_multi_19cls.txt")
    diff = {a[0] for a, m in zip(ada, mxs, strict=True) if a != m}
    assert [r[:3] for r in ada] == [r[:3] for r in mxs]
    bn_affine = {k for k, *_ in mxs if re.search(r"(bn\d|downsample\.1)\.(weight|bias)$", k)}
    assert diff == bn_affine - {"bn1.weight", "bn1.bias"}  # stem bn1 frozen in both


def test_snr_keys_start_with_the_plain_multi_model():
    # models/snr.py adds its modules after layer6; the DeepLab part must be key-identical.
    snr = read_keys("keys_snr_deeplabv2_multi_snr_19cls.txt")
    assert model_keys(on_meta(lambda: DeepLabV2(19, multi_level=True))) == snr[:640]


def test_init_values(multi_cpu):
    sd = multi_cpu.state_dict()
    assert torch.equal(sd["bn1.weight"], torch.ones(64)) and torch.equal(sd["bn1.bias"], torch.zeros(64))
    for key in ("layer6.conv2d_list.0.weight", "layer3.5.conv2.weight"):
        assert sd[key].mean().abs() < 1e-3 and abs(sd[key].std().item() - 0.01) < 5e-4


# --------------------------------------------------------------------------- shapes and outputs


def _hooked_shapes(model: nn.Module, names: list[str], size: str) -> tuple[dict, dict]:
    shapes: dict[str, tuple] = {}
    handles = [getattr(model, n).register_forward_hook(
        lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape))) for n in names]
    h, w = (int(s) for s in size.split("x"))
    out = model(torch.empty(1, 3, h, w, device="meta"))
    for handle in handles:
        handle.remove()
    return shapes, {k: tuple(v.shape) for k, v in out.items()}


def test_resnet_feature_shapes_match_reference():
    model = on_meta(lambda: DeepLabV2(19, multi_level=True))
    reference = read_feature_shapes("maxsquare_deeplab_multi")
    for size, ref in reference.items():
        modules = [m for m in ref if not m.startswith("output")]
        shapes, out = _hooked_shapes(model, modules, size)
        assert shapes == {m: ref[m] for m in modules}, size
        h, w = (int(s) for s in size.split("x"))
        assert out == {"out": (1, 19, h, w), "aux": (1, 19, h, w), "feat": ref["layer4"]}
        assert ref["layer4"][2:] == (stride8(h), stride8(w))
    # AdaptSegNet's copy has the same trunk; only its outputs stay at stride 8 (udalib upsamples).
    for size, ref in read_feature_shapes("adaptsegnet_deeplab_multi").items():
        assert {m: ref[m] for m in ref if m.startswith("layer")} == {
            m: reference[size][m] for m in ref if m.startswith("layer")}
        assert ref["output[0]"] == ref["layer5"] and ref["output[1]"] == ref["layer6"]


def test_vgg_feature_shapes_match_reference():
    model = on_meta(lambda: DeepLabV2VGG(19))
    for size, ref in read_feature_shapes("udaclustering_deeplab_vgg16").items():
        shapes, out = _hooked_shapes(model, ["features", "classifier"], size)
        assert shapes == {"features": ref["features"], "classifier": ref["classifier"]}
        h, w = (int(s) for s in size.split("x"))
        # udalib upsamples inside the model; the reference VGG returned stride-8 logits.
        assert out == {"out": (1, 19, h, w), "feat": ref["features"]}


def test_multi_forward_values(multi_cpu):
    captured = {}
    handle = multi_cpu.layer3.register_forward_hook(lambda _m, _i, o: captured.__setitem__("x3", o))
    torch.manual_seed(1)
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        out = multi_cpu(x)
        handle.remove()
        assert set(out) == {"out", "aux", "feat"}
        assert out["feat"].shape == (1, 2048, stride8(33), stride8(41)) == (1, 2048, 5, 6)
        assert out["feat"].min() >= 0  # layer4 ends in a ReLU
        main = multi_cpu.layer6(out["feat"])
        aux = multi_cpu.layer5(captured["x3"])
    assert torch.equal(out["out"], upsample_to(main, (33, 41)))
    assert torch.equal(out["aux"], upsample_to(aux, (33, 41)))
    # align_corners=True: the four corners of the upsampled map are the low-resolution corners.
    for logits, low in ((out["out"], main), (out["aux"], aux)):
        assert logits.shape == (1, 19, 33, 41)
        torch.testing.assert_close(logits[..., [0, 0, -1, -1], [0, -1, 0, -1]],
                                   low[..., [0, 0, -1, -1], [0, -1, 0, -1]])


def test_single_level_and_vgg_forward_values():
    torch.manual_seed(0)
    single = DeepLabV2(5, multi_level=False, blocks=SMALL).eval()
    vgg = DeepLabV2VGG(5).eval()
    x = torch.randn(2, 3, 33, 41)
    with torch.no_grad():
        s, v = single(x), vgg(x)
        assert set(s) == {"out", "feat"} and set(v) == {"out", "feat"}
        assert s["feat"].shape == (2, 2048, 5, 6) and v["feat"].shape == (2, 1024, 4, 5)
        assert torch.equal(s["out"], upsample_to(single.layer5(s["feat"]), (33, 41)))
        assert torch.equal(v["out"], upsample_to(vgg.classifier(v["feat"]), (33, 41)))
        assert torch.equal(v["feat"], vgg.features(x))
    # batch elements are independent in eval mode
    with torch.no_grad():
        torch.testing.assert_close(single(x[1:])["out"], s["out"][1:])


# --------------------------------------------------------------------------- ASPP legacy flag


@pytest.mark.parametrize("legacy", [True, False])
def test_aspp_branches(legacy):
    torch.manual_seed(0)
    head = ClassifierModule(8, 3, legacy_aspp=legacy)
    x = torch.randn(2, 8, 13, 11)
    branches = [conv(x) for conv in head.conv2d_list]
    out = head(x)
    expected = branches[0] + branches[1]
    if not legacy:
        expected = expected + branches[2] + branches[3]
    assert torch.equal(out, expected)
    if legacy:  # the dropped branches are not zero, so the bug changes the output
        assert not torch.allclose(out, expected + branches[2] + branches[3])
    head.zero_grad()
    head(x).square().sum().backward()
    grads = [conv.weight.grad for conv in head.conv2d_list]
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:2])
    if legacy:  # rates 18 and 24 never see data: the reference's early-return bug
        assert grads[2] is None and grads[3] is None
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in grads[2:])


def test_legacy_flag_reaches_every_head():
    for flag in (True, False):
        resnet = on_meta(lambda flag=flag: DeepLabV2(19, True, legacy_aspp=flag))
        vgg = on_meta(lambda flag=flag: DeepLabV2VGG(19, legacy_aspp=flag))
        assert resnet.layer5.legacy_aspp is resnet.layer6.legacy_aspp is flag
        assert vgg.classifier.legacy_aspp is flag


# --------------------------------------------------------------------------- optimizer groups


@pytest.mark.parametrize("ref_name, build", [
    ("optim_groups_maxsquare_deeplabv2_multi.txt", lambda: DeepLabV2(19, True)),
    ("optim_groups_adaptsegnet_deeplab_multi.txt", lambda: DeepLabV2(19, True, freeze_bn_affine=True)),
    ("optim_groups_udaclustering_vgg16.txt", lambda: DeepLabV2VGG(19)),
])
def test_optim_groups_match_reference_once_each(ref_name, build):
    model = on_meta(build)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = model.optim_groups(2.5e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # every tensor exactly once, across and within groups
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    ref = read_optim_groups(ref_name)
    for i, group in enumerate(groups):
        assert {names[id(p)] for p in group["params"]} == ref[i]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert groups[0]["lr"] == pytest.approx(2.5e-4) and groups[1]["lr"] == pytest.approx(2.5e-3)


def test_legacy_param_multiplicity_counts_the_reference_listings():
    model = on_meta(lambda: DeepLabV2(19, True))
    groups = model.optim_groups(1e-3, legacy_param_multiplicity=True)
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]  # the lr is not rescaled: the listings are counted
    names = {id(p): n for n, p in model.named_parameters()}
    listed = {names[id(p)]: k for p, k in zip(groups[0]["params"], groups[0]["multiplicity"])}
    ref = {}
    for line in (REF / "optim_groups_maxsquare_deeplabv2_multi.txt").read_text().splitlines():
        if line.startswith("0\t"):
            _, name, k = line.split("\t")
            ref[name] = int(k)
    assert listed == ref  # 940 listings of 310 tensors: conv1 once, block tensors 3x, downsample 4x
    assert sum(listed.values()) == 940 and groups[1]["multiplicity"] == [1] * 16
    vgg = on_meta(lambda: DeepLabV2VGG(19)).optim_groups(1e-3, legacy_param_multiplicity=True)
    assert set(vgg[0]["multiplicity"]) == {2} and len(vgg[0]["params"]) == 30  # features tensors twice


def test_sgd_step_applies_each_update_once():
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    head = ClassifierModule(4, 2)
    # the same tensors reachable through two modules are still listed once (the reference's bug)
    groups = param_groups([stem, stem[0]], [head], lr=0.1)
    opt = torch.optim.SGD(groups, lr=0.1)
    before = [p.detach().clone() for p in (stem[0].weight, head.conv2d_list[0].weight)]
    head(stem(torch.randn(1, 3, 9, 9))).sum().backward()
    grads = [stem[0].weight.grad.clone(), head.conv2d_list[0].weight.grad.clone()]
    opt.step()
    torch.testing.assert_close(stem[0].weight, before[0] - 0.1 * grads[0])
    torch.testing.assert_close(head.conv2d_list[0].weight, before[1] - 1.0 * grads[1])
    assert [g["name"] for g in opt.param_groups] == ["backbone", "heads"]


# --------------------------------------------------------------------------- checkpoints


def random_state_dict(rows, drop_suffix: str | None = None) -> dict[str, torch.Tensor]:
    sd = {}
    for key, shape, _, _ in rows:
        if drop_suffix and key.endswith(drop_suffix):
            continue
        sd[key] = (torch.tensor(7) if key.endswith("num_batches_tracked")
                   else torch.randn(shape) * 0.01)
    return sd


def test_reference_key_list_checkpoint_loads():
    # An AdaptSegNet-style raw state_dict, saved before num_batches_tracked existed.
    torch.manual_seed(0)
    ckpt = random_state_dict(read_keys("keys_adaptsegnet_deeplab_multi_19cls.txt"),
                             drop_suffix="num_batches_tracked")
    model = DeepLabV2(19, True, freeze_bn_affine=True)
    report = load_into(model, ckpt)
    assert report.ok
    sd = model.state_dict()
    for key in ("conv1.weight", "layer3.22.bn2.running_var", "layer5.conv2d_list.3.bias"):
        assert torch.equal(sd[key], ckpt[key])


@pytest.fixture(scope="module")
def small_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {k: v + 0.5 if v.is_floating_point() else v + 3
            for k, v in DeepLabV2(19, True, blocks=SMALL).state_dict().items()}


@pytest.mark.parametrize("wrap", ["raw", "module", "state_dict", "model_key"])
def test_round_trip_containers(tmp_path, small_sd, wrap):
    prefixed = {f"module.{k}": v for k, v in small_sd.items()}
    obj = {"raw": small_sd, "module": prefixed,
           "state_dict": {"state_dict": prefixed, "epoch": 3, "best_MIou": np.float64(0.41),
                          "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
           "model_key": {"model": small_sd}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert list(load_state_dict_file(path)) == list(small_sd)
    model = DeepLabV2(19, True, blocks=SMALL)
    assert load_checkpoint(model, path).ok
    for key, value in model.state_dict().items():
        assert torch.equal(value, small_sd[key]), key


def test_wrong_class_count_names_both_counts_and_loads_nothing(small_sd):
    torch.manual_seed(0)
    ckpt13 = DeepLabV2(13, True, blocks=SMALL).state_dict()
    model = DeepLabV2(19, True, blocks=SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_into(model, ckpt13)
    message = str(err.value)
    assert "trained for 13 classes, model has 19 classes: pass num_classes=13" in message
    assert "16 shape-mismatched" in message  # 4 weights + 4 biases in each of layer5, layer6
    assert "layer6.conv2d_list.0.weight: checkpoint (13, 2048, 3, 3), model (19, 2048, 3, 3)" in message
    for key, value in model.state_dict().items():  # never a partial load
        assert torch.equal(value, before[key]), key


def test_missing_and_unexpected_keys_listed_and_strict_false_loads_the_rest(small_sd):
    ckpt = dict(small_sd)
    ckpt["layer6.extra.weight"] = ckpt.pop("layer6.conv2d_list.3.weight")
    model = DeepLabV2(19, True, blocks=SMALL)
    with pytest.raises(CheckpointError) as err:
        load_into(model, ckpt)
    message = str(err.value)
    assert "missing (1): layer6.conv2d_list.3.weight" in message
    assert "unexpected (1): layer6.extra.weight" in message and "classes" not in message
    report = load_into(model, ckpt, strict=False)
    assert report.missing == ["layer6.conv2d_list.3.weight"]
    assert report.unexpected == ["layer6.extra.weight"]
    assert torch.equal(model.layer6.conv2d_list[2].weight, small_sd["layer6.conv2d_list.2.weight"])
    assert not torch.equal(model.layer6.conv2d_list[3].weight, small_sd["layer6.conv2d_list.3.weight"])


def test_skip_prefixes_keeps_the_models_heads(small_sd):
    ckpt = {k: v for k, v in small_sd.items() if not k.startswith("layer6.")}
    model = DeepLabV2(19, True, blocks=SMALL)
    head_before = model.layer6.conv2d_list[0].weight.detach().clone()
    assert load_into(model, ckpt, skip_prefixes=("layer6.",)).ok
    assert torch.equal(model.layer6.conv2d_list[0].weight, head_before)
    assert torch.equal(model.conv1.weight, small_sd["conv1.weight"])


def test_truncated_missing_and_foreign_files(tmp_path, small_sd):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": small_sd}, good)
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: file is truncated or corrupt.*re-download"):
        load_state_dict_file(cut)
    with pytest.raises(CheckpointError, match="looked for .*nowhere.pth"):
        load_state_dict_file(tmp_path / "nowhere.pth")
    listy = tmp_path / "list.pth"
    torch.save([1, 2, 3], listy)
    with pytest.raises(CheckpointError, match="no state_dict found"):
        load_state_dict_file(listy)
    assert issubclass(CheckpointError, ValueError)


def _fake_imagenet_init(model: nn.Module) -> dict[str, torch.Tensor]:
    fake = {f"Scale.{k}": torch.randn(v.shape) for k, v in model.state_dict().items()
            if not k.startswith(("layer5.", "layer6.")) and not k.endswith("num_batches_tracked")}
    for i in range(4):  # the file's 21-class PASCAL head on layer4
        fake[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, 2048, 3, 3)
        fake[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.randn(21)
    return fake


@pytest.mark.parametrize("multi", [True, False])
def test_imagenet_init_copies_backbone_and_keeps_heads(tmp_path, multi):
    torch.manual_seed(0)
    model = DeepLabV2(19, multi, blocks=SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fake = _fake_imagenet_init(model)
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(fake, path)
    report = load_imagenet_init(model, path)
    after = model.state_dict()
    for key, value in after.items():
        if key.startswith(("layer5.", "layer6.")) or key.endswith("num_batches_tracked"):
            assert torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, fake[f"Scale.{key}"]), key
    assert sorted(report.unexpected) == sorted(k for k in (f"layer5.conv2d_list.{i}.{p}"
                                                           for i in range(4) for p in ("weight", "bias")))


def test_imagenet_init_rejects_an_unrelated_file(tmp_path):
    model = DeepLabV2(19, True, blocks=SMALL)
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3), "conv1.weight": torch.randn(64, 3, 7, 7)},
               path)
    with pytest.raises(CheckpointError, match="backbone tensors found"):
        load_imagenet_init(model, path)


def test_torchvision_vgg16_init_reindexes_conv5(tmp_path):
    torch.manual_seed(0)
    model = DeepLabV2VGG(19)
    fc6_before = model.features[29].weight.detach().clone()
    channels = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    tv_conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    fake = {}
    for idx, (cin, cout) in zip(tv_conv_idx, channels, strict=True):
        fake[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3)
        fake[f"features.{idx}.bias"] = torch.randn(cout)
    fake["classifier.0.weight"] = torch.randn(8, 8)
    path = tmp_path / "vgg16.pth"
    torch.save(fake, path)
    report = load_torchvision_vgg16(model, path)
    assert torch.equal(model.features[21].weight, fake["features.21.weight"])
    assert torch.equal(model.features[23].weight, fake["features.24.weight"])
    assert torch.equal(model.features[27].bias, fake["features.28.bias"])
    assert torch.equal(model.features[29].weight, fc6_before)
    assert report.unexpected == ["classifier.0.weight"]
    assert "features.29.weight" in report.missing and "classifier.conv2d_list.0.weight" in report.missing


# --------------------------------------------------------------------------- the reference's SGD over its listings
def reference_1x_params(model):
    """``get_1x_lr_params_NOscale`` as the reference writes it: every tensor once per ancestor in the walk."""
    for module in [model.conv1, model.bn1, model.layer1, model.layer2, model.layer3, model.layer4]:
        for sub in module.modules():
            for p in sub.parameters():
                if p.requires_grad:
                    yield p


def reference_10x_params(model):
    """``get_10x_lr_params``: the heads, each tensor once."""
    for module in [model.layer5, model.layer6]:
        yield from module.parameters()


def torch_1_0_sgd_step(groups, state, momentum, weight_decay):
    """``torch.optim.SGD.step`` of PyTorch 1.0 (dampening 0, no Nesterov): one pass over each group's list."""
    for group in groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            d_p = p.grad.data
            d_p.add_(p.data, alpha=weight_decay)  # in place, on the gradient
            param_state = state.setdefault(p, {})
            if "momentum_buffer" not in param_state:
                buf = param_state["momentum_buffer"] = torch.zeros_like(p.data)
                buf.mul_(momentum).add_(d_p)
            else:
                buf = param_state["momentum_buffer"]
                buf.mul_(momentum).add_(d_p)
            p.data.add_(buf, alpha=-group["lr"])


def _backward(model, seed):
    torch.manual_seed(seed)
    out = model(torch.randn(1, 3, 21, 27))
    (((out["out"] - 0.3) ** 2).mean() + (out["aux"] ** 2).mean()).backward()


@pytest.mark.parametrize("decay", [5e-4, 0.1])  # the references' weight decay, and one that dominates small grads
def test_listing_sgd_takes_the_reference_step_exactly(decay):
    from udalib.methods.base import ListingSGD, sgd

    torch.manual_seed(0)
    ref = DeepLabV2(5, True, legacy_aspp=False, blocks=(1, 2, 1, 1))  # all four ASPP branches get gradients
    for bn in (m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)):  # BN affines away from 1 and 0
        nn.init.normal_(bn.weight, 1.0, 0.2), nn.init.normal_(bn.bias, 0.0, 0.2)
    ours = copy.deepcopy(ref)
    lr, momentum = 0.05, 0.9
    groups = [{"params": list(reference_1x_params(ref)), "lr": lr},
              {"params": list(reference_10x_params(ref)), "lr": 10 * lr}]
    listed = groups[0]["params"]
    assert sorted({sum(q is p for q in listed) for p in listed}) == [1, 3, 4]  # conv1, blocks, downsample
    opt = sgd(ours, lr, momentum, decay, legacy_param_multiplicity=True)
    assert isinstance(opt, ListingSGD)
    start = {k: v.clone() for k, v in ref.state_dict().items()}
    state = {}
    for step in range(2):  # the first step, then one with the momentum buffers of the first
        _backward(ref, step), _backward(ours, step)
        for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
            if a.requires_grad:
                assert a.grad is not None and a.grad.abs().sum() > 0, name
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
        torch_1_0_sgd_step(groups, state, momentum, decay)
        opt.step()
        ref.zero_grad(), opt.zero_grad()
        for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=name)

    # not a rescaled lr: plain SGD over each tensor once, even at 3x the backbone lr, ends elsewhere
    plain = copy.deepcopy(ours)
    plain.load_state_dict(start)
    opt = torch.optim.SGD([{"params": [p for p in plain.optim_groups(lr)[0]["params"]], "lr": 3 * lr},
                           {"params": plain.optim_groups(lr)[1]["params"], "lr": 10 * lr}], lr=lr,
                          momentum=momentum, weight_decay=decay)
    for step in range(2):
        _backward(plain, step)
        opt.step()
        opt.zero_grad()
    w = ref.layer1[0].conv2.weight
    assert (plain.layer1[0].conv2.weight - w).abs().max() > 1e-3 * (w - start["layer1.0.conv2.weight"]).abs().max()


def test_listing_sgd_state_resumes_exactly_and_other_models_are_refused():
    from udalib.methods.base import ListingSGD, sgd
    from udalib.models.tiny import MiniDeepLab

    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    head = ClassifierModule(4, 2)
    model = nn.Sequential(stem, head)

    def opt_for(m):
        return ListingSGD(param_groups([m[0]], [m[1]], 0.1, legacy_param_multiplicity=True), lr=0.1,
                          momentum=0.9, weight_decay=0.01)

    def step(m, opt, seed):
        torch.manual_seed(seed)
        opt.zero_grad()
        m(torch.randn(2, 3, 9, 9)).square().mean().backward()
        opt.step()

    opt = opt_for(model)
    assert opt.param_groups[0]["multiplicity"] == [2, 2, 2, 2]  # the Sequential and the layer itself
    step(model, opt, 0)
    again = copy.deepcopy(model)
    resumed = opt_for(again)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    step(model, opt, 1), step(again, resumed, 1)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="legacy_param_multiplicity reproduces the DeepLab-v2 code bases'"):
        sgd(MiniDeepLab(19, width=4), 0.1, legacy_param_multiplicity=True)


def test_listing_sgd_by_hand_and_what_todays_torch_sgd_makes_of_a_duplicated_list():
    """w = 1, g = 1, lr 0.1, momentum 0.9, decay 0.1, one tensor listed 3 times, first step. PyTorch 1.0 (decay added
    to the gradient in place, one momentum buffer): d = 1.1, b = 1.1, w = 0.89; d = 1.189, b = 0.99 + 1.189 = 2.179,
    w = 0.6721; d = 1.25621, b = 1.9611 + 1.25621 = 3.21731, w = 0.350369."""
    from udalib.methods.base import ListingSGD

    def first_step(make):
        w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        opt = make(w)
        w.grad = torch.tensor([1.0], dtype=torch.float64)
        opt.step()
        return w.item()

    assert first_step(lambda w: ListingSGD([{"params": [w], "multiplicity": [3]}], lr=0.1, momentum=0.9,
                                           weight_decay=0.1)) == pytest.approx(0.350369, abs=1e-12)
    # today's SGD over the list [w, w, w]: the multi-tensor path steps 3x with the pre-step decay, the single-tensor
    # path with a fresh buffer per listing; neither is the reference's step
    for foreach, expected in ((True, 1 - 3 * 0.1 * 1.1), (False, 0.673289)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimizer contains a parameter group with duplicate parameters"
            got = first_step(lambda w, f=foreach: torch.optim.SGD([w, w, w], lr=0.1, momentum=0.9, weight_decay=0.1,
                                                                 foreach=f))
        assert got == pytest.approx(expected, abs=1e-12)
