"""Confusion matrix, IoU/mIoU under both absent-class policies, subset mIoU, flip TTA, evaluate()."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from udalib.data.labels import CLASS13_TRAINIDS, SYNTHIA16_TRAINIDS
from udalib.eval.evaluate import evaluate, predict
from udalib.eval.metrics import (
    ConfusionMatrix,
    Scores,
    class_iou,
    confusion_matrix,
    scores_from_matrix,
    subset_scores,
)

# Hand-worked 3-class example (255 = ignore):
#   gt   = 0 0 0 1 1 2 2 2 255
#   pred = 0 0 1 1 2 2 2 0 1
# Confusion matrix (rows = gt, cols = pred):      IoU_c = M_cc / (row_c + col_c - M_cc)
#   gt0: [2, 1, 0]  row 3, col0 = 2+0+1 = 3   ->  IoU0 = 2 / (3 + 3 - 2) = 1/2
#   gt1: [0, 1, 1]  row 2, col1 = 1+1+0 = 2   ->  IoU1 = 1 / (2 + 2 - 1) = 1/3
#   gt2: [1, 0, 2]  row 3, col2 = 0+1+2 = 3   ->  IoU2 = 2 / (3 + 3 - 2) = 1/2
# mIoU = (1/2 + 1/3 + 1/2) / 3 = 4/9;  pixel acc = 5/8;  mean acc = (2/3 + 1/2 + 2/3) / 3 = 11/18
GT = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 255])
PRED = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 1])
CM = [[2, 1, 0], [0, 1, 1], [1, 0, 2]]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, GT, 3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == CM


def test_confusion_matrix_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 5, (2, 7, 9), generator=g)
    gt[0, :2] = 255
    pred = torch.randint(0, 5, (2, 7, 9), generator=g)
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(gt.flatten().tolist(), pred.flatten().tolist()):
        if t < 5:
            expected[t, p] += 1
    assert torch.equal(confusion_matrix(pred, gt, 5), expected)


def test_confusion_matrix_ignores_out_of_range():
    # label 255 / -1 ignored; prediction 255 / -1 neither crashes nor lands in a wrong cell
    gt = torch.tensor([0, 1, 255, -1, 1, 0])
    pred = torch.tensor([0, 255, 1, 1, -1, 1])
    assert confusion_matrix(pred, gt, 2).tolist() == [[1, 1], [0, 0]]


def test_iou_miou_and_accuracy_by_hand():
    cm = torch.tensor(CM)
    iou = class_iou(cm)
    assert torch.allclose(iou, torch.tensor([1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    s = scores_from_matrix(cm, ["a", "b", "c"])
    assert s.miou == pytest.approx(100 * 4 / 9)
    assert s.pixel_acc == pytest.approx(100 * 5 / 8)
    assert s.mean_acc == pytest.approx(100 * 11 / 18)
    assert s.iou == pytest.approx([50.0, 100 / 3, 50.0])


def test_absent_class_nan_vs_zero():
    # add a 4th class that appears in neither labels nor predictions
    cm = confusion_matrix(PRED, GT, 4)
    iou = class_iou(cm, absent="nan")
    assert math.isnan(iou[3])
    assert class_iou(cm, absent="zero")[3] == 0
    skipped = scores_from_matrix(cm, absent="nan")
    assert skipped.miou == pytest.approx(100 * 4 / 9)  # MaxSquare/AdaptSegNet: nanmean skips it
    zero = scores_from_matrix(cm, absent="zero")
    assert zero.miou == pytest.approx(100 * (4 / 3) / 4)  # CBST/MLSL: averaged in as 0
    assert skipped.protocol["absent"] == "nan" and zero.protocol["absent"] == "zero"
    # present in labels but never predicted (or predicted but absent): IoU 0 under both policies
    cm2 = confusion_matrix(torch.tensor([0, 0, 2]), torch.tensor([0, 1, 0]), 3)
    assert class_iou(cm2).tolist() == [1 / 3, 0.0, 0.0]
    with pytest.raises(ValueError):
        class_iou(cm2, absent="skip")


def test_ignore_pixels_do_not_change_scores():
    gt = torch.cat([GT, torch.full((50,), 255)])
    pred = torch.cat([PRED, torch.zeros(50, dtype=torch.long)])
    s = scores_from_matrix(confusion_matrix(pred, gt, 3))
    assert s.miou == pytest.approx(100 * 4 / 9) and s.pixel_acc == pytest.approx(62.5)


def test_accumulator_equals_one_shot():
    acc = ConfusionMatrix(3)
    acc.update(PRED[:4], GT[:4])
    acc.update(PRED[4:], GT[4:])
    assert acc.matrix.tolist() == CM
    s = acc.scores(["a", "b", "c"], {"flip": False})
    assert s.miou == pytest.approx(100 * 4 / 9)
    assert s.protocol["flip"] is False and s.protocol["class_set"] == "3"
    acc.reset()
    assert acc.matrix.sum() == 0


def test_scores_helpers():
    s = scores_from_matrix(torch.tensor(CM), ["a", "b", "c"], {"label_resolution": "input"})
    table = s.table()
    assert list(table.index) == ["a", "b", "c"] and table.iloc[1, 0] == pytest.approx(100 / 3)
    text = str(s)
    assert "mIoU 44.44%" in text and "label_resolution=input" in text and "absent=nan" in text
    d = s.as_dict()
    assert d["miou"] == pytest.approx(44.444, abs=1e-3) and d["class_names"] == ["a", "b", "c"]
    assert isinstance(s, Scores) and scores_from_matrix(torch.zeros(19, 19)).class_names[10] == "sky"


def _random_cm19(seed=0):
    g = torch.Generator().manual_seed(seed)
    cm = torch.randint(0, 50, (19, 19), generator=g) + 200 * torch.eye(19, dtype=torch.long)
    cm[16] = 0  # train: absent from the labels ...
    cm[:, 16] = 0  # ... and never predicted -> NaN IoU
    return cm


def test_subset_scores_average_the_19_class_ious():
    cm = _random_cm19()
    iou19 = class_iou(cm) * 100
    s13 = subset_scores(cm, "13")
    assert s13.iou == pytest.approx(iou19[list(CLASS13_TRAINIDS)].tolist())
    assert s13.miou == pytest.approx(float(iou19[list(CLASS13_TRAINIDS)].mean()))
    s16 = subset_scores(cm, 16)
    assert s16.miou == pytest.approx(float(iou19[list(SYNTHIA16_TRAINIDS)].mean()))
    assert s16.extra["miou13"] == pytest.approx(s13.miou)  # mIoU13 from the 16 positions
    assert s16.class_names[9] == "sky" and len(s16.iou) == 16
    assert s16.pixel_acc == pytest.approx(100 * float(cm.trace()) / float(cm.sum()))


def test_subset_scores_count_other_classes_as_errors():
    # vegetation (8) pixels: 3 correct, 1 predicted as terrain (9, not in the 13 set);
    # terrain pixels: 2 predicted as vegetation -> false positives of vegetation.
    cm = torch.zeros(19, 19, dtype=torch.long)
    cm[8, 8], cm[8, 9], cm[9, 8] = 3, 1, 2
    s = subset_scores(cm, "13")
    veg = s.class_names.index("vegetation")
    assert s.iou[veg] == pytest.approx(100 * 3 / (3 + 1 + 2))
    assert s.miou == pytest.approx(50.0)  # only vegetation is non-NaN
    assert subset_scores(cm, "13", absent="zero").miou == pytest.approx(50.0 / 13)


def test_scores_16_classes_report_miou13():
    cm = torch.eye(16, dtype=torch.long) * 10
    cm[3, 3] = cm[4, 4] = cm[5, 5] = 0  # wall, fence, pole absent
    cm[0, 1] = 10  # road predicted as sidewalk
    s = scores_from_matrix(cm)
    # road IoU 1/2, sidewalk 1/2, 11 more classes at 1 -> mIoU13 = (0.5 + 0.5 + 11) / 13
    assert s.extra["miou13"] == pytest.approx(100 * 12 / 13)


# ------------------------------------------------------------------------------------------------
# predict / evaluate with toy models
# ------------------------------------------------------------------------------------------------

class RampModel(nn.Module):
    """logits[:, 0] = x[:, 0] + column index (a ramp in x, not flip-symmetric); logits[:, 1] = 0."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)  # a submodule whose mode predict() must restore
        self.seen_training = None

    def forward(self, x):
        self.seen_training = self.training
        ramp = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x[:, 0])
        return {"out": torch.stack([x[:, 0] + ramp, torch.zeros_like(x[:, 0])], dim=1), "aux": None}


def test_predict_flip_averages_the_flipped_back_branch():
    model = RampModel()
    x = torch.zeros(1, 3, 1, 2)
    x[0, 0, 0] = torch.tensor([0.0, 2.0])
    # f(x)[ch0] = x + ramp = [0, 3]; f(flip x)[ch0] = [2, 0] + [0, 1] = [2, 1], flipped back = [1, 2]
    p0 = torch.sigmoid(torch.tensor([0.0, 3.0]))  # softmax over (l, 0) = sigmoid(l)
    p0_flip = torch.sigmoid(torch.tensor([1.0, 2.0]))
    probs = predict(model, x, flip=True)
    assert torch.allclose(probs[0, 0, 0], (p0 + p0_flip) / 2)
    assert torch.allclose(probs.sum(1), torch.ones(1, 1, 2))
    assert torch.allclose(predict(model, x)[0, 0, 0], p0)


def test_predict_flip_is_identity_for_an_equivariant_model():
    class Pointwise(nn.Module):
        def forward(self, x):
            return {"out": x[:, :2] * 3}

    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(predict(Pointwise(), x, flip=True), predict(Pointwise(), x), atol=1e-6)


def test_predict_restores_modes():
    model = RampModel()
    model.train()
    model.bn.eval()  # deliberately frozen BN stays frozen
    predict(model, torch.zeros(1, 3, 2, 2))
    assert model.seen_training is False
    assert model.training is True and model.bn.training is False
    model.eval()
    predict(model, torch.zeros(1, 3, 2, 2), flip=True)
    assert model.training is False


class HalvesModel(nn.Module):
    """4x4 input -> logits whose argmax is class 0 on the left half and class 1 on the right half."""

    def forward(self, x):
        diff = torch.tensor([-3.0, -1.0, 1.0, 3.0]).expand(x.shape[0], x.shape[-2], 4)
        return {"out": torch.stack([-diff, diff], dim=1)}


def _loader(label, n_batches=2):
    return [(torch.zeros(2, 3, 4, 4), label.expand(2, *label.shape).clone(), torch.arange(2))
            for _ in range(n_batches)]


def test_evaluate_upsamples_predictions_to_label_resolution():
    halves = torch.zeros(8, 8, dtype=torch.long)
    halves[:, 4:] = 1
    s = evaluate(HalvesModel(), _loader(halves), 2, class_names=["l", "r"])
    assert s.miou == pytest.approx(100.0) and s.pixel_acc == pytest.approx(100.0)
    assert s.protocol["label_resolution"] == "8x8" and s.protocol["flip"] is False
    assert s.protocol["num_images"] == 4

    all_left = torch.zeros(8, 8, dtype=torch.long)  # the right half is now wrong
    s = evaluate(HalvesModel(), _loader(all_left), 2)
    assert s.iou == pytest.approx([50.0, 0.0]) and s.miou == pytest.approx(25.0)


def test_evaluate_label_size_resizes_labels():
    halves = torch.zeros(8, 8, dtype=torch.long)
    halves[:, 4:] = 1
    halves[0, 0] = 255
    s = evaluate(HalvesModel(), _loader(halves), 2, label_size=(2, 2), max_batches=1,
                 protocol={"model_selection": "last checkpoint"})
    assert s.miou == pytest.approx(100.0)
    assert s.protocol["label_resolution"] == "2x2" and s.protocol["num_images"] == 2
    assert s.protocol["model_selection"] == "last checkpoint"
    s = evaluate(HalvesModel(), _loader(halves), 2, label_size=(4, 4), progress=True)
    assert s.protocol["label_resolution"] == "input" and s.pixel_acc == pytest.approx(100.0)


def test_evaluate_with_flip_reads_the_image():
    class FromImage(nn.Module):  # flip-equivariant: class 1 where channel 0 is positive
        def forward(self, x):
            return {"out": torch.stack([-x[:, 0], x[:, 0]], dim=1)}

    image = torch.zeros(1, 3, 4, 4)
    image[:, 0, :, :2], image[:, 0, :, 2:] = -1.0, 1.0
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[:, :, 4:] = 1
    s = evaluate(FromImage(), [(image, label, torch.arange(1))], 2, flip=True)
    # had the flipped branch not been flipped back, the two branches would cancel (ties everywhere)
    assert s.protocol["flip"] is True and s.miou == pytest.approx(100.0)


def test_evaluate_subset_of_a_19_class_model():
    class Constant(nn.Module):  # predicts vegetation (8) everywhere
        def forward(self, x):
            out = torch.zeros(x.shape[0], 19, *x.shape[-2:])
            out[:, 8] = 1.0
            return {"out": out}

    label = torch.full((4, 4), 8, dtype=torch.long)
    label[:, :2] = 9  # terrain pixels predicted as vegetation count against vegetation
    s = evaluate(Constant(), _loader(label, 1), 19, class_set="13")
    assert len(s.iou) == 13 and s.miou == pytest.approx(50.0)
    assert s.protocol["class_set"].startswith("13")
    full = evaluate(Constant(), _loader(label, 1), 19, absent="zero")
    assert full.miou == pytest.approx(50.0 / 19)  # vegetation 1/2, terrain 0, 17 absent classes 0
    with pytest.raises(ValueError):
        evaluate(Constant(), _loader(label, 1), 10, class_set="13")


def test_13_and_16_class_matrices_are_named_after_their_class_set():
    s13 = scores_from_matrix(torch.eye(13))
    assert s13.class_names[3] == "traffic light" and s13.class_names[9] == "car" and len(s13.class_names) == 13
    assert scores_from_matrix(torch.eye(16)).class_names[9] == "sky"
    assert scores_from_matrix(torch.eye(5)).class_names[4] == "class 4"
