"""Every full-scale recipe runs: two training steps and its final evaluation, at its own source and target sizes
(and training crop) scaled by 1/16 (the aspect ratios and the source/target size difference kept), with ResNet
stages of one block, on datasets written in the real download layouts and converted by ``data_scripts/`` (the
fixture writers of ``test_data_scripts.py``), from checkpoint files in the released formats.

The recipes are read from the folder, so a new recipe is covered without touching this file.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import udalib.experiment
import udalib.methods
from udalib.eval import evaluate
from udalib.experiment import open_data, run, score_set
from udalib.methods.base import ListingSGD
from udalib.models.deeplabv2 import upsample_to
from udalib.recipes import available, load_recipe

SCALE = 16
SLIM = [1, 1, 1, 1]  # bottlenecks per ResNet stage: ResNet-101's key pattern and widths, one block each
_DATA: dict = {}


def scaled(spec: str) -> str:
    """``"gta5/train@720x1280"`` -> ``"gta5/train@45x80"``."""
    return re.sub(r"@(\d+)x(\d+)", lambda m: f"@{round(int(m[1]) / SCALE)}x{round(int(m[2]) / SCALE)}", spec)


def size_of(spec: str) -> tuple[int, int]:
    h, w = re.search(r"@(\d+)x(\d+)", spec).groups()
    return int(h), int(w)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """GTA5, SYNTHIA, Cityscapes (2048x1024 / 16 downloads) and NTHU Rome, each prepared by its data script at the
    recipes' size / 16; written once per pytest run."""
    if "root" not in _DATA:
        import importlib
        import sys

        from test_data_scripts import SCRIPTS, make_cityscapes, make_gta5, make_nthu, make_synthia

        raw = tmp_path_factory.mktemp("raw")
        out = tmp_path_factory.mktemp("prepared")
        sys.path.insert(0, str(SCRIPTS))
        try:
            for script, raw_dir, size in (("prepare_gta5", make_gta5(raw / "GTA5", (1, 2, 3)), "80x45"),
                                          ("prepare_synthia", make_synthia(raw / "SYNTHIA"), "80x48"),
                                          ("prepare_cityscapes", make_cityscapes(raw / "cityscapes", block=16),
                                           "64x32")):
                args = ["--raw", str(raw_dir), "--out", str(out), "--partial", "--size", size]
                if script == "prepare_gta5":
                    (raw / "split").mkdir()
                    (raw / "split" / "train.txt").write_text("1\n2\n")
                    (raw / "split" / "val.txt").write_text("3\n")
                    args += ["--split", str(raw / "split")]
                assert importlib.import_module(script).main(args) == 0
            make_nthu(raw / "NTHU", "Rome")
            assert importlib.import_module("prepare_nthu").main(
                ["--raw", str(raw / "NTHU"), "--out", str(out), "--cities", "rome", "--partial", "--size",
                 "64x32"]) == 0
        finally:
            sys.path.remove(str(SCRIPTS))
        _DATA["root"] = out
    return _DATA["root"]


def _scaled_protocol(p):
    return replace(p, input_size=tuple(round(v / SCALE) for v in p.input_size),
                   label_size=None if p.label_size is None else tuple(round(v / SCALE) for v in p.label_size))


SCALED_PROTOCOLS = {name: _scaled_protocol(p) for name, p in evaluate.PROTOCOLS.items()}


def write_released(path, model_name: str, num_classes: int) -> None:
    """A checkpoint in the format of the file the recipe names: ImageNet init (``Scale.`` prefix, a 21-class
    ``layer5`` on layer4) or a MaxSquare-family training checkpoint (``{"state_dict": {"module.<key>": ...}}``;
    SNR-MS starts from a plain DeepLab-v2 one)."""
    from udalib.models import build_model

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    if path.parent.name == "pretrained":
        sd = build_model("deeplabv2", 21, blocks=SLIM).state_dict()
        torch.save({f"Scale.{k}": v for k, v in sd.items()}, path)
        return
    name = model_name.removesuffix("_snr")
    sd = build_model(name, num_classes, **({} if name == "deeplabv2_vgg16" else {"blocks": SLIM})).state_dict()
    torch.save({"epoch": 1, "iteration": 2, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)


def scaled_geometry(method_args: dict) -> dict:
    """The recipe's pixel sizes (SI patches; self-training's inference, crop, origin and raw sizes) / SCALE, as its
    images: pseudo-labelling then predicts the fixture's images at the recipe's ratio, not at 2048 wide."""
    out = {}
    for key in ("patch_size", "raw_size"):
        if key in method_args:
            out[key] = [round(v / SCALE) for v in method_args[key]]
    for key in ("infer_size", "crop_size", "origin_size"):
        if method_args.get(key):
            out[key] = round(method_args[key] / SCALE)
    return out


@pytest.mark.parametrize("name", available())
def test_recipe_runs_two_steps_at_its_sizes(name, data_root, tmp_path, monkeypatch):
    full = load_recipe(name, data_root=str(data_root))
    exp = load_recipe(name, data_root=str(data_root), device="cpu", steps=2,
                      source=scaled(full.source), target=scaled(full.target) if full.target else None,
                      evaluate_on=[scaled(s) for s in full.evaluate_on],
                      crop=None if full.crop is None else [round(v / SCALE) for v in full.crop],
                      model_args=full.model_args | ({} if full.model == "deeplabv2_vgg16" else {"blocks": SLIM}),
                      method_args=full.method_args | scaled_geometry(full.method_args))
    for path in (exp.pretrained, exp.init):
        if path and not Path(path).exists():
            write_released(Path(path), exp.model, exp.num_classes)

    seen, optimizers, opened, draws = [], [], [], []
    build, open_data = udalib.experiment.Experiment.build_method, udalib.experiment.open_data

    def spying_open(spec, **kwargs):
        dataset = open_data(spec, **kwargs)
        opened.append((kwargs["train"], dataset.blur))
        return dataset

    def spying_build(*args, **kwargs):
        method = build(*args, **kwargs)
        optimizers.append(method.optimizers["model"])
        draws.append(method.draws_source_batches)
        step = method.step

        def recording_step(src, tgt):
            seen.append((None if src is None else tuple(src.image.shape[-2:]),
                         None if tgt is None else tuple(tgt.image.shape[-2:])))
            return step(src, tgt)

        method.step = recording_step
        return method

    monkeypatch.setattr(udalib.experiment.Experiment, "build_method", spying_build)
    monkeypatch.setattr(udalib.experiment, "open_data", spying_open)
    monkeypatch.setattr(evaluate, "PROTOCOLS", SCALED_PROTOCOLS)
    done = run(exp, tmp_path / "run", progress=False, checkpoint_seconds=None)
    if full.select_every:  # the checkpoint the original code reports (target labels), with last and IM beside it
        from udalib.train.select import RULE_LABELS

        assert set(done.selections) == set(RULE_LABELS) and (done.dir / "best_model.pt").is_file(), name

    # the recipe's source and target sizes, each / 16: the difference between them is kept (its crop, if any)
    source_size = exp.crop or size_of(exp.source)
    target_size = (exp.crop or size_of(exp.target)) if exp.target else None
    # self-training with a source portion reads its source images inside its own step: the loop draws none
    assert seen == [(source_size if draws[0] else None, target_size)] * 2
    assert abs(size_of(exp.source)[1] / size_of(exp.source)[0] - size_of(full.source)[1] / size_of(full.source)[0]) \
        < 0.05
    # the recipe's augmentation on its training sets only, and its optimiser
    assert {blur for train, blur in opened if train} == {exp.blur} and not any(b for t, b in opened if not t)
    legacy = udalib.methods.method_config(exp.method, exp.preset, **exp.method_args).legacy_param_multiplicity
    assert isinstance(optimizers[0], ListingSGD) is legacy
    assert set(exp.evaluate_on) <= set(done.scores)
    for spec in exp.evaluate_on:
        assert done.scores[spec].protocol["num_images"] >= 1
        assert done.scores[spec].protocol.get("name") == exp.eval_protocol  # the recipe's named protocol, if any
    assert (tmp_path / "run" / "model.pt").is_file()



class Stride8(torch.nn.Module):
    """A DeepLab-shaped stand-in: logits at stride 8, upsampled inside the model to the input size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.head = torch.nn.Conv2d(3, 19, 1)

    def forward(self, x):
        return {"out": upsample_to(self.head(torch.nn.functional.avg_pool2d(x, 8)), x.shape[-2:])}


def test_adaptsegnet_recipes_score_the_full_resolution_labels_as_compute_iou(data_root, monkeypatch):
    """evaluate_cityscapes.py: the image at 1024x512, the main output upsampled (bilinear, align_corners) to
    2048x1024; compute_iou.py: fast_hist against the full-resolution labels (gt in [0, 19)), IoU = diag / (row + col
    - diag), mIoU = nanmean. Here at 1/16 of those sizes."""
    monkeypatch.setattr(evaluate, "PROTOCOLS", SCALED_PROTOCOLS)
    model = Stride8()
    for name in ("gta5_adaptsegnet", "gta5_adaptsegnet_multi", "gta5_adaptsegnet_lsgan"):
        exp = load_recipe(name, data_root=str(data_root))
        dataset = open_data(exp.evaluate_on[0], default_split="val", train=False, exp=exp)
        scores = score_set(model, dataset, exp, "last checkpoint")

        hist = np.zeros((19, 19))
        for i in range(len(dataset)):
            image, label = dataset[i][:2]
            assert tuple(label.shape) == (64, 128)  # 2048x1024 / 16: the labels as prepared, not resized
            small = torch.nn.functional.interpolate(image[None], size=(32, 64), mode="bilinear", antialias=True)
            with torch.no_grad():
                pred = upsample_to(model(small)["out"], (64, 128)).argmax(1)[0].numpy().ravel()
            gt = label.numpy().ravel()
            keep = (gt >= 0) & (gt < 19)
            hist += np.bincount(19 * gt[keep] + pred[keep], minlength=19 ** 2).reshape(19, 19)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        assert scores.miou == pytest.approx(100 * np.nanmean(iou), abs=1e-9)
        assert scores.protocol["name"] == "adaptsegnet" and scores.protocol["label_resolution"] == "64x128"
        # the MaxSquare family's way (labels nearest-resized to the input size) is another number
        low = open_data("cityscapes/val@32x64", default_split="val", train=False, exp=exp)
        plain = score_set(model, low, replace(exp, eval_protocol=None), "last checkpoint")
        assert plain.protocol["label_resolution"] == "input" and plain.miou != pytest.approx(scores.miou)
