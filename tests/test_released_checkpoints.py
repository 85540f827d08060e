"""The authors' released checkpoints, rebuilt from the reference key lists, load into the matching udalib models.

Each checkpoint has the reference's names and shapes (``tests/reference/keys_*.txt``) and a distinct constant in
every tensor, so a load that put a tensor under the wrong name would show. It is saved in its family's container
(their training scripts' torch.save calls): MaxSquare, SNR and UDAclustering save ``{"state_dict": {"module.<key>":
...}, "optimizer",
"epoch", "iteration", "best_MIou"}``; AdaptSegNet saves a raw state_dict from before PyTorch 0.4 (no
``num_batches_tracked``). The models are built through ``build_model`` by their registry names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from udalib.models import build_model
from udalib.models.checkpoint import CheckpointError, load_checkpoint, load_imagenet_init, load_into

REF = Path(__file__).parent / "reference"
HEADS = ("layer5.", "layer6.", "classifier.")

# (reference key list, udalib model, container)
FAMILIES = [
    ("keys_maxsquare_deeplabv2_multi_19cls.txt", "deeplabv2_multi", "maxsquare"),
    ("keys_adaptsegnet_deeplab_multi_19cls.txt", "deeplabv2_multi", "adaptsegnet"),
    ("keys_adaptsegnet_deeplab_single_19cls.txt", "deeplabv2", "adaptsegnet"),
    ("keys_snr_deeplabv2_multi_snr_19cls.txt", "deeplabv2_multi_snr", "maxsquare"),
    ("keys_udaclustering_deeplabv2_resnet101_19cls.txt", "deeplabv2_multi", "maxsquare"),
    ("keys_udaclustering_deeplabv2_vgg16_19cls.txt", "deeplabv2_vgg16", "maxsquare"),
]


def reference_rows(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (REF / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            rows.append((key, tuple(int(d) for d in re.findall(r"\d+", shape))))
    return rows


def reference_state_dict(name: str, num_classes: int = 19, drop_counters: bool = False) -> dict[str, torch.Tensor]:
    """Tensor ``i`` of the key list filled with ``i``; head outputs resized to ``num_classes``."""
    sd = {}
    for i, (key, shape) in enumerate(reference_rows(name)):
        if key.endswith("num_batches_tracked"):
            if not drop_counters:
                sd[key] = torch.tensor(i)
            continue
        if key.startswith(HEADS) and shape[0] == 19:
            shape = (num_classes, *shape[1:])
        sd[key] = torch.full(shape, float(i))
    return sd


def save_released(sd: dict[str, torch.Tensor], container: str, path: Path) -> None:
    if container == "maxsquare":
        torch.save({"epoch": 9, "iteration": 29760, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-4, "params": [0, 1, 1]}]},
                    "best_MIou": np.float64(0.464)}, path)
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("ref_name,model_name,container", FAMILIES,
                         ids=[f[0].removeprefix("keys_").removesuffix("_19cls.txt") for f in FAMILIES])
def test_released_checkpoint_loads_and_wrong_class_count_is_refused(tmp_path, ref_name, model_name, container):
    ckpt = reference_state_dict(ref_name, drop_counters=container == "adaptsegnet")
    path = tmp_path / "released.pth"
    save_released(ckpt, container, path)
    model = build_model(model_name, 19)
    assert load_checkpoint(model, path).ok
    for key, value in model.state_dict().items():
        if key in ckpt:
            assert torch.equal(value, ckpt[key]), key
        else:  # only the counters AdaptSegNet's old PyTorch did not save
            assert container == "adaptsegnet" and key.endswith("num_batches_tracked"), key

    # a 13-class release (e.g. MaxSquare's Cityscapes_source_class13.pth) is refused by a 19-class model ...
    ckpt13 = reference_state_dict(ref_name, num_classes=13)
    fresh = build_model(model_name, 19)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="trained for 13 classes, model has 19 classes: pass num_classes=13"):
        load_into(fresh, ckpt13)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())  # nothing half-loaded
    # ... and loads into the 13-class one
    assert load_into(build_model(model_name, 13), ckpt13).ok

    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CheckpointError, match=r"cut\.pth: file is truncated or corrupt"):
        load_checkpoint(model, cut)


@pytest.mark.parametrize("model_name,num_classes", [("deeplabv2_multi", 19), ("deeplabv2", 16),
                                                    ("deeplabv2_multi_snr", 19)])
def test_imagenet_init_starts_source_pretraining(tmp_path, model_name, num_classes):
    """``DeepLab_resnet_pretrained_init-f81d91e8.pth``: ``Scale.``-prefixed backbone, a 21-class layer5 on layer4,
    no counters; the backbone is copied, every head (and SNR's blocks) keeps its own initialisation."""
    backbone = {k: v for k, v in reference_state_dict("keys_maxsquare_deeplabv2_multi_19cls.txt",
                                                      drop_counters=True).items() if not k.startswith(HEADS)}
    init = {f"Scale.{k}": v for k, v in backbone.items()}
    for i in range(4):
        init[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.full((21, 2048, 3, 3), -1.0)
        init[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.full((21,), -1.0)
    path = tmp_path / "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    torch.save(init, path)
    model = build_model(model_name, num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_imagenet_init(model, path)
    assert len(report.unexpected) == 8 and all(k.startswith("layer5.") for k in report.unexpected)
    for key, value in model.state_dict().items():
        if key in backbone:
            assert torch.equal(value, backbone[key]), key
        else:  # heads, SNR blocks and counters keep the model's own values
            assert key.startswith((*HEADS, "IN", "style_reid")) or key.endswith("num_batches_tracked"), key
            assert torch.equal(value, before[key]), key
