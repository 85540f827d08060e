"""The two named evaluation protocols on a hand-made case where they disagree (MaxSquare tools/evaluate.py against
AdaptSegNet compute_iou.py).

Labels at 2048x1024: class 1 on odd columns, class 0 on even ones; the model predicts class 1 everywhere.
* AdaptSegNet's protocol scores at 2048x1024: class 1 has IoU 1/2, class 0 has IoU 0, mIoU 25 %.
* MaxSquare's protocol first resizes the labels to 1024x512 with PIL's nearest, which takes source column
  2j+1 for output column j (the centre of each pair): every kept label is 1, class 0 is absent from labels and
  predictions (skipped), mIoU 100 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from udalib.eval.evaluate import PROTOCOLS, evaluate_protocol

H, W = 1024, 2048


class Constant(nn.Module):
    """Predicts ``cls`` everywhere, at the resolution it is fed; remembers that resolution."""

    def __init__(self, num_classes: int, cls: int):
        super().__init__()
        self.num_classes, self.cls, self.seen = num_classes, cls, set()

    def forward(self, x):
        self.seen.add(tuple(x.shape[-2:]))
        out = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        out[:, self.cls] = 1.0
        return {"out": out}


def odd_columns(on: int, off: int) -> torch.Tensor:
    label = torch.full((1, H, W), off, dtype=torch.long)
    label[..., 1::2] = on
    return label


def loader(label: torch.Tensor) -> list:
    return [(torch.zeros(1, 3, *label.shape[-2:]), label, torch.arange(1))]


def test_the_maxsquare_nearest_keeps_the_odd_columns_as_pil_does():
    label = odd_columns(1, 0)[0].numpy().astype(np.uint8)
    small = np.asarray(Image.fromarray(label).resize((1024, 512), Image.NEAREST))
    assert (small == 1).all()


def test_maxsquare_protocol():
    model = Constant(2, 1)
    s = evaluate_protocol(model, loader(odd_columns(1, 0)), 2, "maxsquare", model_selection="last checkpoint")
    assert model.seen == {(512, 1024)}
    assert math.isnan(s.iou[0]) and s.iou[1] == pytest.approx(100.0) and s.miou == pytest.approx(100.0)
    assert s.protocol["name"] == "maxsquare" and s.protocol["flip"] is True
    assert s.protocol["label_resolution"] == "input"  # labels scored at the 1024x512 input size
    assert s.protocol["model_selection"] == "last checkpoint" and "1024x512" in s.protocol["description"]
    assert "model_selection=last checkpoint" in str(s)


def test_adaptsegnet_protocol():
    model = Constant(2, 1)
    s = evaluate_protocol(model, loader(odd_columns(1, 0)), 2, "adaptsegnet",
                          model_selection="best on target val (as MaxSquare)")
    assert model.seen == {(512, 1024)}  # fed at 1024x512, scored at 2048x1024
    assert s.iou == pytest.approx([0.0, 50.0]) and s.miou == pytest.approx(25.0)
    assert s.protocol["name"] == "adaptsegnet" and s.protocol["flip"] is False
    assert s.protocol["label_resolution"] == "1024x2048"
    assert s.protocol["model_selection"] == "best on target val (as MaxSquare)"


def test_protocols_with_a_class_subset_of_a_19_class_model():
    # car (train id 13) on odd columns, road (0) on even ones; the model says car everywhere
    model = Constant(19, 13)
    label = odd_columns(13, 0)
    full = evaluate_protocol(model, loader(label), 19, "adaptsegnet", model_selection="last checkpoint",
                             class_set="13")
    assert len(full.iou) == 13 and full.iou[0] == pytest.approx(0.0) and full.iou[9] == pytest.approx(50.0)
    assert full.miou == pytest.approx(25.0) and full.protocol["class_set"].startswith("13")
    small = evaluate_protocol(model, loader(label), 19, "maxsquare", model_selection="last checkpoint",
                              class_set="13")
    assert small.miou == pytest.approx(100.0)  # road never appears in the 1024x512 labels


def test_protocol_errors():
    assert set(PROTOCOLS) == {"maxsquare", "adaptsegnet"}
    model = Constant(2, 1)
    with pytest.raises(ValueError, match="unknown protocol 'mlsl'; choose one of maxsquare, adaptsegnet"):
        evaluate_protocol(model, loader(odd_columns(1, 0)), 2, "mlsl", model_selection="last checkpoint")
    with pytest.raises(ValueError, match="state how the checkpoint was chosen"):
        evaluate_protocol(model, loader(odd_columns(1, 0)), 2, "maxsquare", model_selection=" ")
    with pytest.raises(TypeError):  # no default: every number states its model-selection rule
        evaluate_protocol(model, loader(odd_columns(1, 0)), 2, "maxsquare")
    low = torch.zeros(1, 512, 1024, dtype=torch.long)
    with pytest.raises(ValueError, match="this loader's are 1024x512: evaluate on cityscapes/valfull"):
        evaluate_protocol(model, loader(low), 2, "adaptsegnet", model_selection="last checkpoint")
